//! Multi-object tracking in the ByteTrack manner: confident detections are matched first against every
//! live track (including ones lost for a moment), the leftover weak detections then keep already-tracked
//! objects alive, and leftovers above the start score begin new tracks, confirmed on their second hit. Prediction is constant velocity, which is
//! what low analysis rates (0.5–2 frames/s) allow; matching scores IoU of the predicted box plus a bonus
//! for nearby centres, because at those rates a walking person's boxes often no longer overlap.
//!
//! A track's position is its bottom-centre (where it touches the ground). The tracker owns no lock and,
//! once its vectors have grown to the scene's size, allocates nothing per frame.

use crate::infer::{BBox, Detection};
use crate::types::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerParams {
    /// Detections at or above this score are matched first.
    pub high_score: f32,
    /// Least score for an unmatched detection to start a track. NanoDet's int8 scores for real people
    /// in street views often sit between 0.35 and 0.5, so tracks start from what the detector reports
    /// at its default threshold; confirmation on a second hit keeps one-frame false alarms out.
    pub new_track_score: f32,
    /// Least match score (IoU of the predicted box plus the centre bonus) for a first-pass match.
    pub match_score: f32,
    /// Least IoU for the second pass (weak detections onto tracked objects).
    pub low_match_iou: f32,
    /// Hits before a track is confirmed (rules see only confirmed tracks).
    pub confirm_hits: u32,
    /// A track not matched for this long is dropped.
    pub max_age_ms: i64,
    /// Movement within this many box heights of the anchor counts as standing still.
    pub stationary_radius: f32,
}

impl Default for TrackerParams {
    fn default() -> Self {
        Self {
            high_score: 0.5,
            new_track_score: 0.35,
            match_score: 0.25,
            low_match_iou: 0.4,
            confirm_hits: 2,
            max_age_ms: 6_000,
            stationary_radius: 0.3,
        }
    }
}

/// One tracked object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Track {
    pub id: u64,
    pub class: u16,
    /// The last matched box.
    pub bbox: BBox,
    pub score: f32,
    /// Smoothed bottom-centre, frame fractions.
    pub pos: (f32, f32),
    /// Bottom-centre at the previous match: a line is crossed between the two.
    pub prev_pos: (f32, f32),
    /// Frame fractions per second, smoothed.
    pub velocity: (f32, f32),
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub hits: u32,
    /// Matched on the latest frame.
    pub matched: bool,
    /// Where the current stationary stretch began, and when.
    anchor: (f32, f32),
    anchor_since: Timestamp,
}

impl Track {
    pub fn confirmed(&self, p: &TrackerParams) -> bool {
        self.hits >= p.confirm_hits
    }

    /// Direction of travel in radians (0 = right, π/2 = down the frame), if it moves at all.
    pub fn heading(&self) -> Option<f32> {
        let (vx, vy) = self.velocity;
        (vx.hypot(vy) > 1e-4).then(|| vy.atan2(vx))
    }

    /// How long the track has stayed within the stationary radius of one point.
    pub fn stationary_ms(&self, now: Timestamp) -> i64 {
        now.since(self.anchor_since)
    }

    pub fn height(&self) -> f32 {
        (self.bbox.y2 - self.bbox.y1).max(1e-3)
    }

    fn predicted(&self, t: Timestamp) -> BBox {
        let dt = t.since(self.last_seen) as f32 / 1000.0;
        // Velocity is of the bottom-centre; the whole box moves with it.
        let (dx, dy) = (self.velocity.0 * dt, self.velocity.1 * dt);
        BBox {
            x1: self.bbox.x1 + dx,
            y1: self.bbox.y1 + dy,
            x2: self.bbox.x2 + dx,
            y2: self.bbox.y2 + dy,
        }
    }
}

/// Classes that the detector confuses for one object (a van is a car in one frame and a truck in the
/// next; a motorbike and a bicycle likewise) may continue one track.
fn class_group(label: &str) -> u8 {
    match label {
        "car" | "truck" | "bus" => 1,
        "bicycle" | "motorcycle" => 2,
        "person" => 3,
        _ => 0,
    }
}

pub struct Tracker {
    params: TrackerParams,
    tracks: Vec<Track>,
    next_id: u64,
    /// Per class index: the group id (0 = only the same class matches).
    groups: Vec<u8>,
    // Scratch space reused every frame.
    pairs: Vec<(f32, u32, u32)>,
    det_taken: Vec<bool>,
    track_taken: Vec<bool>,
}

impl Tracker {
    /// `labels` are the detector's class names, to know which classes may continue one track.
    pub fn new(params: TrackerParams, labels: &[String]) -> Self {
        Self {
            params,
            tracks: Vec::with_capacity(64),
            next_id: 1,
            groups: labels.iter().map(|l| class_group(l)).collect(),
            pairs: Vec::with_capacity(1024),
            det_taken: Vec::with_capacity(128),
            track_taken: Vec::with_capacity(64),
        }
    }

    pub fn params(&self) -> &TrackerParams {
        &self.params
    }

    /// Every live track, confirmed or not, matched on the latest frame or not.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    fn compatible(&self, a: u16, b: u16) -> bool {
        if a == b {
            return true;
        }
        let g = |c: u16| self.groups.get(c as usize).copied().unwrap_or(0);
        g(a) != 0 && g(a) == g(b)
    }

    /// Folds one frame's detections (taken at `t`; frames arrive in time order) into the tracks.
    pub fn update(&mut self, t: Timestamp, detections: &[Detection]) {
        let p = self.params;
        self.det_taken.clear();
        self.det_taken.resize(detections.len(), false);
        self.track_taken.clear();
        self.track_taken.resize(self.tracks.len(), false);

        // Pass 1: confident detections against every track.
        self.pairs.clear();
        for (ti, tr) in self.tracks.iter().enumerate() {
            let pred = tr.predicted(t);
            let (pcx, pcy) = centre(&pred);
            let h = tr.height();
            for (di, d) in detections.iter().enumerate() {
                if d.score < p.high_score || !self.compatible(tr.class, d.class) {
                    continue;
                }
                let ratio = d.bbox.area() / pred.area().max(1e-6);
                if !(0.4..=2.5).contains(&ratio) {
                    continue;
                }
                let (dcx, dcy) = centre(&d.bbox);
                let dist = (dcx - pcx).hypot(dcy - pcy) / h.max(d.bbox.y2 - d.bbox.y1);
                // Until a track has a velocity, its next box may be a body length away (a car at
                // 2 frames/s in town); after that the prediction should land close.
                let gate = if tr.hits >= 2 { 1.5 } else { 2.5 };
                let score = pred.iou(&d.bbox) + 0.5 * (1.0 - dist / gate).max(0.0);
                if score >= p.match_score {
                    self.pairs.push((score, ti as u32, di as u32));
                }
            }
        }
        self.assign(t, detections);

        // Pass 2: weak detections keep objects that were tracked on the previous frame.
        self.pairs.clear();
        for (ti, tr) in self.tracks.iter().enumerate() {
            if self.track_taken[ti] || !tr.matched {
                continue;
            }
            let pred = tr.predicted(t);
            for (di, d) in detections.iter().enumerate() {
                if d.score >= p.high_score || !self.compatible(tr.class, d.class) {
                    continue;
                }
                let iou = pred.iou(&d.bbox);
                if iou >= p.low_match_iou {
                    self.pairs.push((iou, ti as u32, di as u32));
                }
            }
        }
        self.assign(t, detections);

        // Unmatched tracks age; tentative ones that miss once, and old ones, go.
        for (ti, tr) in self.tracks.iter_mut().enumerate() {
            if !self.track_taken[ti] {
                tr.matched = false;
            }
        }
        let confirm = p.confirm_hits;
        self.tracks.retain(|tr| {
            tr.matched || (tr.hits >= confirm && t.since(tr.last_seen) <= p.max_age_ms)
        });

        // Leftovers start tracks.
        for (di, d) in detections.iter().enumerate() {
            if self.det_taken[di] || d.score < p.new_track_score {
                continue;
            }
            // Class-aware NMS lets one van through as "car" and again as "truck": a leftover lying on
            // an object tracked this frame is that object under another label, not a new one.
            let duplicate = self.tracks.iter().any(|tr| {
                tr.matched && self.compatible(tr.class, d.class) && tr.bbox.iou(&d.bbox) >= 0.5
            });
            if duplicate {
                continue;
            }
            let pos = d.bbox.bottom_centre();
            self.tracks.push(Track {
                id: self.next_id,
                class: d.class,
                bbox: d.bbox,
                score: d.score,
                pos,
                prev_pos: pos,
                velocity: (0.0, 0.0),
                first_seen: t,
                last_seen: t,
                hits: 1,
                matched: true,
                anchor: pos,
                anchor_since: t,
            });
            self.next_id += 1;
        }
    }

    /// Greedy assignment, best score first, of the candidate pairs in `self.pairs`.
    fn assign(&mut self, t: Timestamp, detections: &[Detection]) {
        self.pairs
            .sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let radius = self.params.stationary_radius;
        for &(_, ti, di) in &self.pairs {
            let (ti, di) = (ti as usize, di as usize);
            if self.track_taken[ti] || self.det_taken[di] {
                continue;
            }
            self.track_taken[ti] = true;
            self.det_taken[di] = true;
            let d = &detections[di];
            let tr = &mut self.tracks[ti];
            let dt = (t.since(tr.last_seen) as f32 / 1000.0).max(1e-3);
            let measured = d.bbox.bottom_centre();
            // Light smoothing of the position absorbs box jitter; velocity follows the smoothed path.
            let pos = (
                0.5 * (tr.pos.0 + tr.velocity.0 * dt) + 0.5 * measured.0,
                0.5 * (tr.pos.1 + tr.velocity.1 * dt) + 0.5 * measured.1,
            );
            let v = ((pos.0 - tr.pos.0) / dt, (pos.1 - tr.pos.1) / dt);
            tr.velocity = if tr.hits == 1 {
                v
            } else {
                (
                    0.6 * tr.velocity.0 + 0.4 * v.0,
                    0.6 * tr.velocity.1 + 0.4 * v.1,
                )
            };
            tr.prev_pos = tr.pos;
            tr.pos = pos;
            tr.bbox = d.bbox;
            tr.score = d.score;
            // Confusable classes: the latest confident label wins.
            if d.score >= self.params.high_score {
                tr.class = d.class;
            }
            tr.last_seen = t;
            tr.hits += 1;
            tr.matched = true;
            let h = tr.height();
            if (pos.0 - tr.anchor.0).hypot(pos.1 - tr.anchor.1) > radius * h {
                tr.anchor = pos;
                tr.anchor_since = t;
            }
        }
    }
}

fn centre(b: &BBox) -> (f32, f32) {
    ((b.x1 + b.x2) / 2.0, (b.y1 + b.y2) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["person", "bicycle", "car", "motorcycle", "bus", "truck"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
    const PERSON: u16 = 0;
    const CAR: u16 = 2;
    const BUS: u16 = 4;
    const TRUCK: u16 = 5;

    fn det(class: u16, score: f32, cx: f32, bottom: f32, w: f32, h: f32) -> Detection {
        Detection {
            class,
            score,
            bbox: BBox {
                x1: cx - w / 2.0,
                y1: bottom - h,
                x2: cx + w / 2.0,
                y2: bottom,
            },
        }
    }

    /// Runs frames at `fps`; returns, per frame, the confirmed (matched) track ids nearest each given
    /// detection, in detection order.
    fn run(tracker: &mut Tracker, fps: f32, frames: &[Vec<Detection>]) -> Vec<Vec<u64>> {
        frames
            .iter()
            .enumerate()
            .map(|(i, dets)| {
                let t = Timestamp((i as f32 * 1000.0 / fps) as i64);
                tracker.update(t, dets);
                dets.iter()
                    .map(|d| {
                        tracker
                            .tracks()
                            .iter()
                            .find(|tr| tr.matched && tr.bbox == d.bbox)
                            .map_or(0, |tr| tr.id)
                    })
                    .collect()
            })
            .collect()
    }

    /// Id switches: times an object's track id differs from the one it had on its previous frame.
    fn switches(ids: &[Vec<u64>], object: usize) -> usize {
        let seq: Vec<u64> = ids.iter().filter_map(|f| f.get(object).copied()).collect();
        seq.windows(2).filter(|w| w[0] != w[1]).count()
    }

    #[test]
    fn two_people_crossing_paths_keep_their_ids() {
        // A walks right, B walks left, along nearly the same line, at 2 frames/s; they pass at frame 10.
        let frames: Vec<Vec<Detection>> = (0..20)
            .map(|i| {
                let x = 0.1 + 0.04 * i as f32;
                vec![
                    det(PERSON, 0.8, x, 0.60, 0.04, 0.12),
                    det(PERSON, 0.8, 1.0 - x + 0.02, 0.62, 0.04, 0.12),
                ]
            })
            .collect();
        let mut t = Tracker::new(TrackerParams::default(), &labels());
        let ids = run(&mut t, 2.0, &frames);
        assert_eq!(switches(&ids, 0), 0, "{ids:?}");
        assert_eq!(switches(&ids, 1), 0, "{ids:?}");
        assert_ne!(ids[19][0], ids[19][1]);
        // The walker going right has a heading near 0 rad and a speed near 0.08 of the frame per second.
        let a = t.tracks().iter().find(|tr| tr.id == ids[19][0]).unwrap();
        assert!(a.heading().unwrap().abs() < 0.2, "{:?}", a.velocity);
        assert!((a.velocity.0 - 0.08).abs() < 0.02, "{:?}", a.velocity);
    }

    #[test]
    fn an_occlusion_gap_shorter_than_max_age_keeps_the_id() {
        // A person walks; frames 8–12 (2.5 s at 2 frames/s) have no detection of them.
        let frames: Vec<Vec<Detection>> = (0..24)
            .map(|i| {
                if (8..=12).contains(&i) {
                    vec![]
                } else {
                    vec![det(PERSON, 0.8, 0.2 + 0.02 * i as f32, 0.7, 0.05, 0.15)]
                }
            })
            .collect();
        let mut t = Tracker::new(TrackerParams::default(), &labels());
        let ids = run(&mut t, 2.0, &frames);
        assert_eq!(switches(&ids, 0), 0, "{ids:?}");
    }

    #[test]
    fn jitter_and_weak_detections_neither_split_nor_move_a_parked_car() {
        // A parked car: box edges jitter by ±1 % of the frame, every third detection is weak (0.4).
        let mut rng = fastrand::Rng::with_seed(7);
        let frames: Vec<Vec<Detection>> = (0..120)
            .map(|i| {
                let mut j = || (rng.f32() - 0.5) * 0.02;
                let score = if i % 3 == 2 { 0.4 } else { 0.8 };
                let class = if i % 7 == 3 { TRUCK } else { CAR };
                vec![det(class, score, 0.5 + j(), 0.8 + j(), 0.2, 0.15)]
            })
            .collect();
        let mut t = Tracker::new(TrackerParams::default(), &labels());
        let ids = run(&mut t, 0.5, &frames);
        assert_eq!(switches(&ids, 0), 0);
        let car = &t.tracks()[0];
        // 120 frames at 0.5 frames/s: stationary for the whole 238 s.
        assert_eq!(car.stationary_ms(Timestamp(238_000)), 238_000);
    }

    #[test]
    fn a_passing_bus_does_not_steal_the_parked_cars_track() {
        // The car is hidden by a bus driving past for 10 s (frames 10–14 at 0.5 frames/s show only the bus).
        let car = det(CAR, 0.8, 0.5, 0.8, 0.2, 0.15);
        let frames: Vec<Vec<Detection>> = (0..30)
            .map(|i| {
                let bus_x = -0.3 + 0.16 * (i as f32 - 8.0);
                let bus = det(BUS, 0.9, bus_x, 0.85, 0.5, 0.35);
                match i {
                    8..=9 | 15..=16 => vec![car, bus],
                    10..=14 => vec![bus],
                    _ => vec![car],
                }
            })
            .collect();
        let mut t = Tracker::new(TrackerParams::default(), &labels());
        let ids = run(&mut t, 0.5, &frames);
        let car_ids: Vec<u64> = ids.iter().map(|f| f[0]).collect();
        let before = car_ids[0];
        // After the bus: the same id again or, if the gap outlived the track, a new one that never
        // took the bus's boxes. Rules bridge the second case (parking re-binds by place).
        assert!(car_ids[17..].iter().all(|&id| id == car_ids[17]));
        let bus_ids: Vec<u64> = ids[8..=16].iter().map(|f| *f.last().unwrap()).collect();
        assert!(
            !bus_ids.contains(&before),
            "the bus took the car's id: {ids:?}"
        );
    }

    #[test]
    fn one_object_under_two_labels_is_one_track() {
        // Class-aware NMS keeps the van as a car (0.7) and as a truck (0.4) on every frame.
        let mut t = Tracker::new(TrackerParams::default(), &labels());
        for i in 0..10 {
            let car = det(CAR, 0.7, 0.5, 0.8, 0.2, 0.15);
            let mut truck = det(TRUCK, 0.4, 0.5, 0.8, 0.22, 0.16);
            truck.bbox.x1 += 0.005;
            t.update(Timestamp(i * 500), &[car, truck]);
        }
        assert_eq!(t.tracks().len(), 1, "{:?}", t.tracks());
    }

    #[test]
    fn one_frame_false_positives_never_confirm() {
        let mut t = Tracker::new(TrackerParams::default(), &labels());
        t.update(Timestamp(0), &[det(PERSON, 0.9, 0.3, 0.5, 0.05, 0.1)]);
        t.update(Timestamp(500), &[det(PERSON, 0.9, 0.8, 0.9, 0.05, 0.1)]);
        t.update(Timestamp(1000), &[]);
        let p = *t.params();
        assert!(t.tracks().iter().all(|tr| !tr.confirmed(&p)));
        assert!(
            t.tracks().is_empty(),
            "tentative tracks that miss are dropped"
        );
    }

    #[test]
    fn steady_state_does_not_grow_the_track_list() {
        let mut t = Tracker::new(TrackerParams::default(), &labels());
        for i in 0..500 {
            let dets: Vec<Detection> = (0..10)
                .map(|k| {
                    det(
                        PERSON,
                        0.8,
                        0.05 + 0.09 * k as f32,
                        0.5 + 0.001 * (i % 10) as f32,
                        0.04,
                        0.1,
                    )
                })
                .collect();
            t.update(Timestamp(i * 500), &dets);
        }
        assert_eq!(t.tracks().len(), 10);
        assert!(t.tracks().iter().all(|tr| tr.hits == 500));
    }
}
