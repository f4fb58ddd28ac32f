//! Analyse: a tracker and zone rules turn each camera's detections into incident events (opened /
//! updated / closed). Rules are state machines over frame time, so they are tested on timelines without
//! sleeping; the public entry is [`CameraAnalyser`], which the pool hands one frame at a time.

mod crowding;
mod geometry;
mod rules;
mod schedule;
mod snapshot;
mod tracker;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam::channel::{Sender, TrySendError};

pub use geometry::{Crossing, Line, Polygon};
pub use rules::Transition;
pub use schedule::Schedule;
pub use snapshot::{SnapshotBox, SnapshotRequest, render as render_snapshot};
pub use tracker::{Track, Tracker, TrackerParams};

use crate::config::{CameraConfig, CrossingAlert, RuleConfig};
use crate::frame::Frame;
use crate::infer::Detection;
use crate::pool::Analyser;
use crate::types::{
    CameraId, IncidentEvent, IncidentKey, IncidentPhase, RuleKind, Severity, Timestamp,
};
use rules::{Condition, Crossings, Episodes, Objects, ZoneCount};

/// An incident event and, when it opens, the picture that goes with it.
pub struct AnalysisEvent {
    pub event: IncidentEvent,
    pub snapshot: Option<SnapshotRequest>,
}

enum Logic {
    /// crowding, intrusion: qualifying objects in the zone.
    Zone(ZoneCount),
    /// loitering, parking, wrong way: one incident per object.
    Objects(Objects),
    /// encroachment: stationary objects, one incident per zone episode.
    Stationary(Objects, ZoneCount),
    Line(Crossings),
}

struct Rule {
    id: String,
    kind: RuleKind,
    /// Index into the zones (every kind but line crossing).
    zone: Option<usize>,
    target: String,
    severity: Severity,
    /// Per class index of the detector: does the rule look at it.
    classes: Vec<bool>,
    schedule: Option<Schedule>,
    logic: Logic,
    episodes: Episodes,
}

struct Zone {
    id: String,
    polygon: Polygon,
}

/// One camera's tracker, rules and their state. Lives inside the pool, owned by whichever worker holds
/// the camera, so nothing here is shared or locked.
pub struct CameraAnalyser {
    camera: CameraId,
    name: String,
    ward: String,
    labels: Vec<String>,
    tracker: Tracker,
    zones: Vec<Zone>,
    rules: Vec<Rule>,
    events: Sender<AnalysisEvent>,
    /// `updated` events dropped because the events queue was full.
    dropped_updates: Arc<AtomicU64>,
    /// Transitions of the current frame (reused, no allocation per frame in steady state).
    transitions: Vec<Transition>,
}

fn ms(seconds: f32) -> i64 {
    (seconds * 1000.0).round() as i64
}

impl CameraAnalyser {
    /// `labels` are the detector's class names (index = class id). The configuration is validated, so
    /// zone, line and class names resolve.
    pub fn new(cam: &CameraConfig, labels: &[String], events: Sender<AnalysisEvent>) -> Self {
        let zones: Vec<Zone> = cam
            .zones
            .iter()
            .map(|z| Zone {
                id: z.id.get_ref().clone(),
                polygon: Polygon::new(z.polygon.get_ref()),
            })
            .collect();
        let rules = cam
            .rules
            .iter()
            .map(|r| build_rule(r, cam, &zones, labels))
            .collect();
        Self {
            camera: CameraId::new(cam.id.get_ref()),
            name: if cam.name.is_empty() {
                cam.id.get_ref().clone()
            } else {
                cam.name.clone()
            },
            ward: cam.ward.clone(),
            labels: labels.to_vec(),
            tracker: Tracker::new(TrackerParams::default(), labels),
            zones,
            rules,
            events,
            dropped_updates: Arc::default(),
            transitions: Vec::with_capacity(16),
        }
    }

    /// Counts `updated` events dropped on a full events queue in `counter` (shared across cameras).
    pub fn counting_drops(mut self, counter: Arc<AtomicU64>) -> Self {
        self.dropped_updates = counter;
        self
    }

    /// Tracks one frame's detections and runs every rule on the tracks; `emit` receives each rule
    /// transition with the index of its rule.
    fn step(
        &mut self,
        t: Timestamp,
        detections: &[Detection],
        mut emit: impl FnMut(&Self, usize, &Transition),
    ) {
        self.tracker.update(t, detections);
        let tracker_params = *self.tracker.params();
        for ri in 0..self.rules.len() {
            self.transitions.clear();
            let tracks = self.tracker.tracks();
            let rule = &mut self.rules[ri];
            let active = rule.schedule.as_ref().is_none_or(|s| s.active(t));
            let zone = rule.zone.map(|z| &self.zones[z].polygon);
            let classes = &rule.classes;
            let eligible = |tr: &Track| {
                tr.matched
                    && tr.confirmed(&tracker_params)
                    && classes.get(tr.class as usize).copied().unwrap_or(false)
                    && zone.is_none_or(|z| z.contains(tr.pos))
            };
            let out = &mut self.transitions;
            match &mut rule.logic {
                Logic::Zone(zc) => {
                    if active {
                        let n = tracks.iter().filter(|tr| eligible(tr)).count() as u32;
                        zc.observe(t, n, out);
                    } else {
                        zc.end(t, out);
                    }
                }
                Logic::Objects(objects) => {
                    objects.observe(t, tracks, eligible, active, &mut rule.episodes, out)
                }
                Logic::Stationary(objects, zc) => {
                    objects.observe(t, tracks, eligible, active, &mut rule.episodes, out);
                    if active {
                        zc.observe(t, objects.qualified(t), out);
                    } else {
                        zc.end(t, out);
                    }
                }
                Logic::Line(crossings) => {
                    crossings.observe(t, tracks, eligible, active, &mut rule.episodes, out)
                }
            }
            for k in 0..self.transitions.len() {
                let tr = self.transitions[k];
                emit(self, ri, &tr);
            }
        }
    }

    /// The tracks that make rule `ri`'s case right now: drawn in red on its snapshot.
    fn involved(&self, ri: usize, tr: &Transition, track: &Track) -> bool {
        let rule = &self.rules[ri];
        if tr.track.is_some() {
            return tr.track == Some(track.id);
        }
        let in_zone = rule
            .zone
            .is_none_or(|z| self.zones[z].polygon.contains(track.pos));
        let class = rule
            .classes
            .get(track.class as usize)
            .copied()
            .unwrap_or(false);
        let objects_ok = match &rule.logic {
            Logic::Stationary(objects, _) => objects.open_tracks().any(|id| id == track.id),
            Logic::Line(c) => c.open_tracks().any(|id| id == track.id),
            Logic::Objects(_) | Logic::Zone(_) => true,
        };
        in_zone && class && objects_ok
    }

    fn event(&self, ri: usize, tr: &Transition, frame: &Frame) -> AnalysisEvent {
        let rule = &self.rules[ri];
        let summary = self.summary(rule, tr);
        let snapshot = (tr.phase == IncidentPhase::Opened).then(|| {
            let (outline, closed) = match (&rule.logic, rule.zone) {
                (Logic::Line(c), _) => (vec![c.line().a, c.line().b], false),
                (_, Some(z)) => (self.zones[z].polygon.points.clone(), true),
                (_, None) => (Vec::new(), true),
            };
            SnapshotRequest {
                camera: frame.camera,
                image: frame.to_rgb_image(),
                boxes: self
                    .tracker
                    .tracks()
                    .iter()
                    .filter(|t| t.matched)
                    .map(|t| SnapshotBox {
                        bbox: t.bbox,
                        highlight: self.involved(ri, tr, t),
                        track: Some(t.id),
                    })
                    .collect(),
                outline,
                outline_closed: closed,
            }
        });
        let count = match rule.logic {
            Logic::Zone(_) | Logic::Stationary(..) => tr.count,
            Logic::Line(ref c) => {
                let (i, o) = c.totals();
                (if tr.crossing == Some(Crossing::Out) {
                    o
                } else {
                    i
                }) as u32
            }
            Logic::Objects(_) => (tr.duration_ms / 1000) as u32,
        };
        AnalysisEvent {
            event: IncidentEvent {
                key: IncidentKey {
                    camera: self.camera.clone(),
                    rule: rule.id.clone(),
                    zone: rule.target.clone(),
                    episode: tr.episode,
                },
                phase: tr.phase,
                at: frame.captured_at,
                kind: rule.kind,
                severity: rule.severity,
                camera_name: self.name.clone(),
                ward: self.ward.clone(),
                summary,
                count,
                snapshot: None,
            },
            snapshot,
        }
    }

    fn class_name(&self, class: Option<u16>) -> String {
        let label = class
            .and_then(|c| self.labels.get(c as usize))
            .map_or("", String::as_str);
        class_vi(label).to_string()
    }

    /// The incident's one-line account, in Vietnamese: it is what the police read in the SMS.
    fn summary(&self, rule: &Rule, tr: &Transition) -> String {
        let zone = &rule.target;
        let dur = duration_vi(tr.duration_ms);
        let who = self.class_name(tr.class);
        let track = tr.track.map_or(String::new(), |id| format!(" (#{id})"));
        use IncidentPhase::*;
        match (rule.kind, tr.phase) {
            (RuleKind::Crowding, Opened) => format!("{} người tại vùng {zone} đã {dur}", tr.count),
            (RuleKind::Crowding, Updated) => {
                format!("đông lên {} người tại vùng {zone} ({dur})", tr.count)
            }
            (RuleKind::Crowding, Closed) => {
                format!("đã giải tán sau {dur} (đông nhất {} người)", tr.count)
            }
            (RuleKind::Intrusion, Opened) => {
                format!("{} đối tượng trong khu vực cấm {zone}", tr.count)
            }
            (RuleKind::Encroachment, Opened) => {
                format!("{} người/vật chiếm vỉa hè vùng {zone} đã {dur}", tr.count)
            }
            (RuleKind::Intrusion | RuleKind::Encroachment, Updated) => {
                format!("tăng lên {} đối tượng tại vùng {zone} ({dur})", tr.count)
            }
            (RuleKind::Intrusion | RuleKind::Encroachment, Closed) => {
                format!("vùng {zone} đã trống, kéo dài {dur}")
            }
            (RuleKind::Loitering, Opened) => format!("{who} ở vùng {zone} đã {dur}{track}"),
            (RuleKind::Parking, Opened) => format!("{who} đỗ tại vùng {zone} đã {dur}{track}"),
            (RuleKind::WrongWay, Opened) => format!("{who} đi ngược chiều tại vùng {zone}{track}"),
            (RuleKind::Loitering | RuleKind::Parking | RuleKind::WrongWay, _) => {
                format!("{who} đã rời vùng {zone} sau {dur}{track}")
            }
            (RuleKind::CitizenReport, _) => unreachable!("validated by config: not a camera rule"),
            (RuleKind::LineCrossing, _) => {
                let ((i, o), (ci, co)) = match &rule.logic {
                    Logic::Line(c) => (c.totals(), tr.class.map_or((0, 0), |k| c.count(k))),
                    _ => ((0, 0), (0, 0)),
                };
                let dir = match tr.crossing {
                    Some(Crossing::Out) => "chiều ra",
                    _ => "chiều vào",
                };
                format!(
                    "{who} vượt vạch {zone} {dir}{track}; {who}: vào {ci}, ra {co}; tổng: vào {i}, ra {o}"
                )
            }
        }
    }
}

fn duration_vi(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s < 120 {
        format!("{s} giây")
    } else {
        format!("{} phút", s / 60)
    }
}

fn class_vi(label: &str) -> &str {
    match label {
        "person" => "người",
        "bicycle" => "xe đạp",
        "car" => "ô tô",
        "motorcycle" => "xe máy",
        "bus" => "xe buýt",
        "truck" => "xe tải",
        "" => "đối tượng",
        other => other,
    }
}

fn build_rule(r: &RuleConfig, cam: &CameraConfig, zones: &[Zone], labels: &[String]) -> Rule {
    let kind = r.kind();
    let wanted = r.classes();
    let classes = labels.iter().map(|l| wanted.contains(l)).collect();
    let (min_ms, clear_ms) = (ms(r.min_seconds()), ms(r.clear_seconds()));
    let zone = r.zone.as_ref().map(|z| {
        zones
            .iter()
            .position(|x| &x.id == z.get_ref())
            .expect("validated by config")
    });
    let stationary = Condition::Stationary {
        radius: r.stationary_radius(),
    };
    let logic = match kind {
        RuleKind::Crowding => Logic::Zone(ZoneCount::new(
            *r.min_people
                .as_ref()
                .expect("validated by config")
                .get_ref(),
            min_ms,
            clear_ms,
        )),
        RuleKind::Intrusion => Logic::Zone(ZoneCount::new(1, min_ms, clear_ms)),
        RuleKind::Loitering => {
            Logic::Objects(Objects::new(Condition::Present, min_ms, clear_ms, true))
        }
        RuleKind::Parking => Logic::Objects(Objects::new(stationary, min_ms, clear_ms, true)),
        RuleKind::WrongWay => {
            let [dx, dy] = *r.direction.as_ref().expect("validated by config").get_ref();
            let n = dx.hypot(dy);
            Logic::Objects(Objects::new(
                Condition::Against {
                    allowed: (dx / n, dy / n),
                },
                min_ms,
                clear_ms,
                true,
            ))
        }
        RuleKind::CitizenReport => unreachable!("validated by config: not a camera rule"),
        RuleKind::Encroachment => Logic::Stationary(
            Objects::new(stationary, min_ms, clear_ms, false),
            ZoneCount::new(1, 0, clear_ms),
        ),
        RuleKind::LineCrossing => {
            let id = r.line.as_ref().expect("validated by config").get_ref();
            let l = cam
                .lines
                .iter()
                .find(|l| l.id.get_ref() == id)
                .expect("validated by config");
            let alert = r.alert_on.unwrap_or(CrossingAlert::Both);
            Logic::Line(Crossings::new(
                Line::new(*l.points.get_ref(), *l.in_direction.get_ref()),
                alert != CrossingAlert::Out,
                alert != CrossingAlert::In,
                clear_ms,
                labels.len(),
            ))
        }
    };
    Rule {
        id: r.id.get_ref().clone(),
        kind,
        zone,
        target: r.target().to_string(),
        severity: r.severity(),
        classes,
        schedule: r
            .schedule
            .as_ref()
            .map(|s| Schedule::from_config(s.get_ref())),
        logic,
        episodes: Episodes::default(),
    }
}

impl Analyser for CameraAnalyser {
    fn analyse(&mut self, frame: &Frame, detections: &[Detection]) {
        self.step(frame.captured_at, detections, |me, ri, tr| {
            // On a bounded queue that is full (the incident sink is stalled), an update is dropped and
            // counted: the next one or the close carries the newer state, and analysis goes on. An open or a
            // close waits for room: it must never be lost. A send fails only during shutdown.
            if tr.phase == IncidentPhase::Updated {
                if let Err(TrySendError::Full(_)) = me.events.try_send(me.event(ri, tr, frame)) {
                    me.dropped_updates.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                let _ = me.events.send(me.event(ri, tr, frame));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    //! Timelines for every rule on synthetic tracks, driven by frame time (no sleeping). Expected
    //! timelines follow from each rule's definition and the parameters in the test, worked out by hand.
    use super::*;
    use crate::config::{Config, DEFAULT_MODEL, installed};
    use crate::infer::{BBox, ModelManifest};
    use IncidentPhase::*;

    fn labels() -> Vec<String> {
        ModelManifest::load(&installed(DEFAULT_MODEL))
            .unwrap()
            .output
            .labels
    }

    fn class(label: &str) -> u16 {
        labels().iter().position(|l| l == label).unwrap() as u16
    }

    fn analyser(camera: &str) -> CameraAnalyser {
        let text = format!("[[cameras]]\nid = \"cam\"\nurl = \"rtsp://h/s\"\n{camera}");
        let config = Config::parse(&text, "test.toml", Path::new(env!("CARGO_MANIFEST_DIR")))
            .unwrap_or_else(|e| panic!("{e}"));
        let (tx, _rx) = crossbeam::channel::unbounded();
        CameraAnalyser::new(&config.cameras[0], &labels(), tx)
    }

    use std::path::Path;

    fn det(label: &str, cx: f32, bottom: f32, w: f32, h: f32) -> Detection {
        Detection {
            class: class(label),
            score: 0.8,
            bbox: BBox {
                x1: cx - w / 2.0,
                y1: bottom - h,
                x2: cx + w / 2.0,
                y2: bottom,
            },
        }
    }

    /// (second, phase, rule id, episode ms, track) per event.
    type Events = Vec<(f64, IncidentPhase, String, i64)>;

    /// Feeds frames every `step_ms` from 0 to `until_s`; `scene(t_seconds)` gives the detections.
    fn run(
        a: &mut CameraAnalyser,
        step_ms: i64,
        until_s: i64,
        scene: impl Fn(f64) -> Vec<Detection>,
    ) -> Events {
        let mut out = Vec::new();
        let mut t = 0;
        while t <= until_s * 1000 {
            let dets = scene(t as f64 / 1000.0);
            a.step(Timestamp(t), &dets, |me, ri, tr| {
                out.push((
                    t as f64 / 1000.0,
                    tr.phase,
                    me.rules[ri].id.clone(),
                    tr.episode.0,
                ));
            });
            t += step_ms;
        }
        out
    }

    fn phases(ev: &Events) -> Vec<(f64, IncidentPhase)> {
        ev.iter().map(|e| (e.0, e.1)).collect()
    }

    const PARKING: &str = r#"
[[cameras.zones]]
id = "kerb"
polygon = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]
[[cameras.rules]]
kind = "parking"
id = "park"
zone = "kerb"
min_seconds = 60
clear_seconds = 30
"#;

    #[test]
    fn a_car_parked_for_an_hour_with_jitter_is_one_incident() {
        let mut a = analyser(PARKING);
        let mut rng = fastrand::Rng::with_seed(3);
        let jitter: Vec<f32> = (0..4000).map(|_| (rng.f32() - 0.5) * 0.02).collect();
        // Parked from 10 s to 3,610 s at one frame every 2 s, boxes jittering ±1 % of the frame.
        let ev = run(&mut a, 2000, 3700, |s| {
            let k = (s as usize) % 3000;
            if (10.0..3610.0).contains(&s) {
                vec![det("car", 0.5 + jitter[k], 0.8 + jitter[k + 1], 0.2, 0.15)]
            } else {
                vec![]
            }
        });
        // Confirmed on its second frame (12 s), stationary since then: opens at 72 s; gone after the
        // last frame at 3,608 s, closes when 30 s have passed without it (3,638 s).
        assert_eq!(
            phases(&ev),
            vec![(72.0, Opened), (3638.0, Closed)],
            "{ev:?}"
        );
        assert_eq!(ev[0].3, ev[1].3, "one episode");
    }

    #[test]
    fn a_parked_car_hidden_by_a_passing_bus_for_10_s_stays_one_incident() {
        let mut a = analyser(PARKING);
        // Parked from 0 s; from 100 s to 110 s a bus drives past in front of it and only the bus is
        // detected (moving left to right across the kerb).
        let ev = run(&mut a, 1000, 200, |s| {
            let car = det("car", 0.5, 0.8, 0.2, 0.15);
            let bus = det("bus", (s as f32 - 100.0) * 0.1, 0.85, 0.45, 0.35);
            match s {
                s if (95.0..100.0).contains(&s) || (110.0..115.0).contains(&s) => vec![car, bus],
                s if (100.0..110.0).contains(&s) => vec![bus],
                _ => vec![car],
            }
        });
        // Opens 60 s after it was confirmed at 1 s, and nothing else happens while it stays.
        assert_eq!(phases(&ev), vec![(61.0, Opened)], "{ev:?}");
    }

    #[test]
    fn a_car_that_leaves_and_another_that_arrives_make_two_incidents() {
        let mut a = analyser(PARKING);
        // Car A parked 0–100 s, drives away (right) 100–104 s; car B arrives at 140 s at the same place.
        let ev = run(&mut a, 1000, 260, |s| match s {
            s if s < 100.0 => vec![det("car", 0.5, 0.8, 0.2, 0.15)],
            s if s < 105.0 => vec![det("car", 0.5 + (s as f32 - 99.0) * 0.08, 0.8, 0.2, 0.15)],
            s if s >= 140.0 => vec![det("car", 0.52, 0.8, 0.2, 0.15)],
            _ => vec![],
        });
        // A: opens at 61 s; last stationary at 100 s (the 101 s step is beyond the radius); seen
        // driving off, it closes after the 5 s departure grace, at 105 s. B: confirmed at 141 s, opens
        // at 201 s.
        assert_eq!(
            phases(&ev),
            vec![(61.0, Opened), (105.0, Closed), (201.0, Opened)],
            "{ev:?}"
        );
        assert_ne!(ev[0].3, ev[2].3);
    }

    #[test]
    fn a_car_arriving_where_another_just_left_is_its_own_incident() {
        let mut a = analyser(PARKING);
        // A parked 0–100 s and drives off right; B pulls into the same place at 110 s, while A's
        // clear time (30 s) would still be running.
        let ev = run(&mut a, 1000, 200, |s| match s {
            s if s < 100.0 => vec![det("car", 0.5, 0.8, 0.2, 0.15)],
            s if s < 105.0 => vec![det("car", 0.5 + (s as f32 - 99.0) * 0.08, 0.8, 0.2, 0.15)],
            s if s >= 110.0 => vec![det("car", 0.5, 0.8, 0.2, 0.15)],
            _ => vec![],
        });
        // A closes at 105 s (seen leaving); B, confirmed at 111 s, opens at 171 s.
        assert_eq!(
            phases(&ev),
            vec![(61.0, Opened), (105.0, Closed), (171.0, Opened)],
            "{ev:?}"
        );
    }

    #[test]
    fn a_person_seen_leaving_and_the_next_arriving_make_two_incidents() {
        let mut a = analyser(
            r#"
[[cameras.zones]]
id = "counter"
polygon = [[0.4, 0.0], [0.8, 0.0], [0.8, 1.0], [0.4, 1.0]]
[[cameras.rules]]
kind = "loitering"
id = "linger"
zone = "counter"
min_seconds = 10
"#,
        );
        // Visitor 1 stands at the counter 0–30 s, then walks out left (0.04 per second); visitor 2
        // walks in from the right edge at 40 s and stands at the counter from 44 s to 80 s.
        let ev = run(&mut a, 1000, 120, |s| {
            let mut d = vec![];
            if s < 30.0 {
                d.push(det("person", 0.6, 0.9, 0.08, 0.4));
            } else if s < 45.0 {
                d.push(det(
                    "person",
                    0.6 - 0.04 * (s as f32 - 29.0),
                    0.9,
                    0.08,
                    0.4,
                ));
            }
            if (40.0..44.0).contains(&s) {
                d.push(det(
                    "person",
                    0.95 - 0.08 * (s as f32 - 40.0),
                    0.9,
                    0.08,
                    0.4,
                ));
            } else if (44.0..80.0).contains(&s) {
                d.push(det("person", 0.63, 0.9, 0.08, 0.4));
            }
            d
        });
        // 1: confirmed at 1 s, opens at 11 s; crosses x = 0.4 near 34 s and is seen outside, so it
        // closes 5 s after its last frame inside. 2: enters the zone near 42 s, opens 10 s later.
        let got = phases(&ev);
        assert_eq!(got.len(), 4, "{ev:?}");
        assert_eq!(got[0], (11.0, Opened), "{ev:?}");
        assert_eq!(got[1].1, Closed);
        assert!((38.0..=40.0).contains(&got[1].0), "{ev:?}");
        assert_eq!(got[2].1, Opened);
        assert!((52.0..=54.0).contains(&got[2].0), "{ev:?}");
        assert_eq!(got[3].1, Closed);
        assert_ne!(ev[0].3, ev[2].3);
    }

    #[test]
    fn a_car_stopping_briefly_is_not_parked() {
        let mut a = analyser(PARKING);
        // Drives in, stops for 40 s (less than 60 s), drives on.
        let ev = run(&mut a, 1000, 120, |s| {
            let x = match s {
                s if s < 10.0 => 0.05 * s as f32,
                s if s < 50.0 => 0.5,
                s => 0.5 + 0.05 * (s as f32 - 50.0),
            };
            if x < 1.0 {
                vec![det("car", x, 0.8, 0.2, 0.15)]
            } else {
                vec![]
            }
        });
        assert!(ev.is_empty(), "{ev:?}");
    }

    const CROWD: &str = r#"
[[cameras.zones]]
id = "plaza"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
[[cameras.rules]]
kind = "crowding"
id = "crowd"
zone = "plaza"
min_people = 5
min_seconds = 10
clear_seconds = 8
"#;

    fn people(n: usize) -> Vec<Detection> {
        (0..n)
            .map(|i| det("person", 0.1 + 0.08 * i as f32, 0.6, 0.04, 0.12))
            .collect()
    }

    #[test]
    fn a_crowd_dipping_below_k_for_less_than_the_clear_time_stays_one_incident() {
        let mut a = analyser(CROWD);
        // Six people from 0 s; from 30 s to 35 s only three are detected; all leave at 60 s.
        let ev = run(&mut a, 1000, 90, |s| match s {
            s if (30.0..35.0).contains(&s) => people(3),
            s if s < 60.0 => people(6),
            _ => vec![],
        });
        // Confirmed (second frame) at 1 s: opens at 11 s. The dip is 5 s < 8 s. Last crowded frame
        // 59 s: closes at 67 s.
        assert_eq!(phases(&ev), vec![(11.0, Opened), (67.0, Closed)], "{ev:?}");
    }

    #[test]
    fn loitering_is_per_person_and_passers_by_never_count() {
        let mut a = analyser(
            r#"
[[cameras.zones]]
id = "counter"
polygon = [[0.4, 0.0], [0.8, 0.0], [0.8, 1.0], [0.4, 1.0]]
[[cameras.rules]]
kind = "loitering"
id = "linger"
zone = "counter"
min_seconds = 30
clear_seconds = 5
"#,
        );
        // One person stands at the counter 10–70 s with a 3 s detection gap at 50 s; another walks
        // through the zone the whole time, crossing it in about 13 s, again and again.
        let ev = run(&mut a, 1000, 100, |s| {
            let mut d = vec![];
            if (10.0..70.0).contains(&s) && !(50.0..53.0).contains(&s) {
                d.push(det("person", 0.6, 0.7, 0.05, 0.2));
            }
            let x = 0.3 + 0.03 * (s as f32 % 20.0);
            d.push(det("person", x, 0.4, 0.05, 0.2));
            d
        });
        // Confirmed at 11 s, opens at 41 s; the gap neither closes nor splits it; last seen 69 s,
        // closes at 74 s.
        assert_eq!(phases(&ev), vec![(41.0, Opened), (74.0, Closed)], "{ev:?}");
    }

    #[test]
    fn intrusion_opens_at_once_and_merges_a_group_into_one_incident() {
        let mut a = analyser(
            r#"
[[cameras.zones]]
id = "site"
polygon = [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]
[[cameras.rules]]
kind = "intrusion"
id = "keep-out"
zone = "site"
clear_seconds = 10
"#,
        );
        // Two people walk right side by side from x = 0.215 at 0.03/s, crossing the site's edge
        // (x = 0.5) between 9 s and 10 s; they vanish at 20 s. A car stands in the site the whole time: not a class intrusion
        // watches.
        let ev = run(&mut a, 1000, 60, |s| {
            let mut d = vec![det("car", 0.75, 0.95, 0.2, 0.15)];
            if s < 20.0 {
                let x = 0.215 + 0.03 * s as f32;
                d.push(det("person", x, 0.5, 0.04, 0.15));
                d.push(det("person", x, 0.7, 0.04, 0.15));
            }
            d
        });
        // First frame past the edge: 10 s (x = 0.515). Last frame in the site 19 s; closes 10 s later.
        assert_eq!(phases(&ev), vec![(10.0, Opened), (29.0, Closed)], "{ev:?}");
    }

    #[test]
    fn encroachment_counts_only_stationary_objects_in_scheduled_hours() {
        // Frame time 0 is 1970-01-01 07:00 local (Thursday). Scheduled 07:00–07:05 local.
        let mut a = analyser(
            r#"
[[cameras.zones]]
id = "sidewalk"
polygon = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]
[[cameras.rules]]
kind = "encroachment"
id = "vending"
zone = "sidewalk"
min_seconds = 60
clear_seconds = 20
[cameras.rules.schedule]
hours = ["07:00-07:05"]
"#,
        );
        // A vendor's chair stands still from 0 s to the end; people walk through all the time.
        let ev = run(&mut a, 2000, 600, |s| {
            let x = (0.02 * s as f32) % 1.0;
            vec![
                det("chair", 0.3, 0.8, 0.06, 0.08),
                det("person", x, 0.7, 0.05, 0.15),
            ]
        });
        // Chair confirmed at 2 s, qualifies at 62 s; the schedule ends at 300 s, which closes it.
        assert_eq!(phases(&ev), vec![(62.0, Opened), (300.0, Closed)], "{ev:?}");
    }

    const LINE: &str = r#"
[[cameras.lines]]
id = "mid"
points = [[0.0, 0.5], [1.0, 0.5]]
in_direction = [0.0, -1.0]
[[cameras.rules]]
kind = "line_crossing"
id = "cross"
line = "mid"
clear_seconds = 5
"#;

    #[test]
    fn line_crossings_are_counted_per_direction_and_class() {
        let mut a = analyser(LINE);
        // A car drives up across the line (y 0.9 → 0.1 over 8 s); a person walks down across it at
        // x = 0.2 from 20 s; a second person stands on the line, jittering ±0.5 % around it.
        let ev = run(&mut a, 1000, 40, |s| {
            let mut d = vec![];
            if s <= 8.0 {
                d.push(det("car", 0.7, 0.9 - 0.1 * s as f32, 0.15, 0.1));
            }
            if s >= 20.0 {
                d.push(det(
                    "person",
                    0.2,
                    0.2 + 0.05 * (s as f32 - 20.0),
                    0.04,
                    0.12,
                ));
            }
            let j = if (s as i64) % 2 == 0 { 0.005 } else { -0.005 };
            d.push(det("person", 0.45, 0.5 + j, 0.04, 0.12));
            d
        });
        let opened: Vec<f64> = ev.iter().filter(|e| e.1 == Opened).map(|e| e.0).collect();
        // Car smoothed position crosses 0.5 − band between 4 s and 6 s; person between 26 s and 28 s.
        assert_eq!(opened.len(), 2, "{ev:?}");
        assert!(
            (4.0..=6.0).contains(&opened[0]) && (26.0..=28.0).contains(&opened[1]),
            "{ev:?}"
        );
        let Logic::Line(c) = &a.rules[0].logic else {
            panic!()
        };
        assert_eq!(c.count(class("car")), (1, 0));
        assert_eq!(c.count(class("person")), (0, 1));
        assert_eq!(
            ev.iter().filter(|e| e.1 == Closed).count(),
            2,
            "each closes after 5 s"
        );
    }

    #[test]
    fn wrong_way_is_one_incident_per_offending_track() {
        let mut a = analyser(
            r#"
[[cameras.zones]]
id = "lane"
polygon = [[0.0, 0.3], [1.0, 0.3], [1.0, 0.7], [0.0, 0.7]]
[[cameras.rules]]
kind = "wrong_way"
id = "one-way"
zone = "lane"
direction = [1.0, 0.0]
clear_seconds = 5
"#,
        );
        // Motorbikes going right (allowed) all the time; one going left from 10 s to 30 s.
        let ev = run(&mut a, 500, 60, |s| {
            let mut d: Vec<Detection> = (0..3)
                .map(|k| {
                    det(
                        "motorcycle",
                        (0.05 * s as f32 + 0.3 * k as f32) % 1.0,
                        0.45,
                        0.05,
                        0.08,
                    )
                })
                .collect();
            if (10.0..30.0).contains(&s) {
                d.push(det(
                    "motorcycle",
                    0.95 - 0.04 * (s as f32 - 10.0),
                    0.6,
                    0.05,
                    0.08,
                ));
            }
            d
        });
        // It must travel 0.1 of the frame against the flow: 2.5 s after entering → opens near 13 s;
        // closes 5 s after its last frame (29.5 s).
        let opened: Vec<f64> = ev.iter().filter(|e| e.1 == Opened).map(|e| e.0).collect();
        assert_eq!(opened.len(), 1, "{ev:?}");
        assert!((12.0..=14.5).contains(&opened[0]), "{ev:?}");
        assert_eq!(
            ev.last().map(|e| (e.0, e.1)),
            Some((34.5, Closed)),
            "{ev:?}"
        );
    }
}
