//! The rules: small state machines over tracks and frame time that say when an incident opens, is
//! updated and closes. Hysteresis lives here: a condition must hold for `min` before an incident opens
//! and be gone for `clear` before it closes, so flicker, a missed detection or a bus passing in front of a
//! parked car neither splits, closes nor re-opens an incident.
//!
//! Three shapes cover the seven rule kinds:
//! - [`ZoneCount`] (crowding, intrusion, encroachment): how many qualifying objects a zone holds;
//!   one incident per zone episode.
//! - [`Objects`] (loitering, parking, wrong way; encroachment's stationary objects): one candidate per
//!   object, one incident per object. A candidate whose track is lost is re-bound to a new track in the
//!   same place, so an id switch does not split an incident.
//! - [`Crossings`] (line crossing): per-track committed side of a line, counted per direction and class.

use crate::infer::BBox;
use crate::types::{IncidentPhase, Timestamp};

use super::crowding::{Crowding, CrowdingParams};
use super::geometry::{Crossing, Line};
use super::tracker::Track;

/// A change worth telling the rest of the system about.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub phase: IncidentPhase,
    pub episode: Timestamp,
    /// People/objects counted (zone rules; the peak for updates and closes), 1 for per-object rules.
    pub count: u32,
    /// How long the condition has held (ms).
    pub duration_ms: i64,
    /// The object concerned (per-object rules and crossings).
    pub track: Option<u64>,
    pub class: Option<u16>,
    pub crossing: Option<Crossing>,
}

impl Transition {
    fn zone(t: super::crowding::Transition) -> Self {
        Self {
            phase: t.phase,
            episode: t.episode,
            count: t.count,
            duration_ms: t.duration_ms,
            track: None,
            class: None,
            crossing: None,
        }
    }
}

/// Episodes handed out by one rule, so two incidents that start on the same frame still get distinct
/// keys (the key is camera, rule, zone, episode).
#[derive(Debug, Default)]
pub struct Episodes {
    recent: Vec<i64>,
}

impl Episodes {
    const KEEP: usize = 256;

    pub fn unique(&mut self, since: Timestamp) -> Timestamp {
        let mut t = since.0;
        while self.recent.contains(&t) {
            t += 1;
        }
        if self.recent.len() == Self::KEEP {
            self.recent.remove(0);
        }
        self.recent.push(t);
        Timestamp(t)
    }
}

/// Counts objects in a zone and runs the crowding state machine over the count.
pub struct ZoneCount {
    machine: Crowding,
}

impl ZoneCount {
    pub fn new(min_count: u32, min_ms: i64, clear_ms: i64) -> Self {
        Self {
            machine: Crowding::new(CrowdingParams {
                min_people: min_count,
                min_ms,
                clear_ms,
                update_every_ms: 30_000,
            }),
        }
    }

    pub fn observe(&mut self, t: Timestamp, count: u32, out: &mut Vec<Transition>) {
        if let Some(tr) = self.machine.observe(t, count) {
            out.push(Transition::zone(tr));
        }
    }

    /// Outside the rule's schedule: an open incident closes now and nothing is pending.
    pub fn end(&mut self, t: Timestamp, out: &mut Vec<Transition>) {
        if let Some(tr) = self.machine.end(t) {
            out.push(Transition::zone(tr));
        }
    }
}

/// What must hold for an object to count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    /// Present in the zone (loitering).
    Present,
    /// Standing still within `radius` box heights of one point (parking, encroachment).
    Stationary { radius: f32 },
    /// Travelling against the allowed direction (a unit vector) for a clear distance (wrong way).
    Against { allowed: (f32, f32) },
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    track: u64,
    class: u16,
    /// When the condition last started to hold.
    since: Timestamp,
    last_seen: Timestamp,
    last_true: Timestamp,
    holds: bool,
    seen: bool,
    /// Its own track was seen on the latest frame without the condition (it left the zone, or the
    /// vehicle drove off): no other track may take this candidate over.
    departed: bool,
    bbox: BBox,
    pos: (f32, f32),
    /// Stationary: where the object stands, and its box there. Against: where it entered the zone.
    anchor: (f32, f32),
    anchor_box: BBox,
    open: Option<Timestamp>,
}

/// How long an object seen leaving (its track in view, the condition gone) keeps its incident open.
const DEPARTURE_GRACE_MS: i64 = 5_000;

/// Per-object episodes for one rule.
pub struct Objects {
    condition: Condition,
    min_ms: i64,
    clear_ms: i64,
    /// Whether each object's incident is reported (false for encroachment, which reports per zone).
    report: bool,
    candidates: Vec<Candidate>,
}

impl Objects {
    pub fn new(condition: Condition, min_ms: i64, clear_ms: i64, report: bool) -> Self {
        Self {
            condition,
            min_ms,
            clear_ms,
            report,
            candidates: Vec::with_capacity(32),
        }
    }

    /// Objects whose condition has held for `min` and are in view now (encroachment's count).
    pub fn qualified(&self, t: Timestamp) -> u32 {
        self.candidates
            .iter()
            .filter(|c| c.seen && c.holds && t.since(c.since) >= self.min_ms)
            .count() as u32
    }

    /// `eligible` says which tracks the rule looks at (confirmed, matched now, class and zone fit).
    /// `active` is false outside the rule's schedule: nothing opens then, and open incidents close.
    pub fn observe(
        &mut self,
        t: Timestamp,
        tracks: &[Track],
        eligible: impl Fn(&Track) -> bool,
        active: bool,
        episodes: &mut Episodes,
        out: &mut Vec<Transition>,
    ) {
        for c in &mut self.candidates {
            c.seen = false;
        }
        for tr in tracks.iter().filter(|tr| eligible(tr)) {
            let i = match self.bind(tr, tracks) {
                Some(i) => i,
                None => {
                    self.candidates.push(Candidate {
                        track: tr.id,
                        class: tr.class,
                        since: t,
                        last_seen: t,
                        last_true: t,
                        holds: false,
                        seen: false,
                        departed: false,
                        bbox: tr.bbox,
                        pos: tr.pos,
                        anchor: tr.pos,
                        anchor_box: tr.bbox,
                        open: None,
                    });
                    self.candidates.len() - 1
                }
            };
            let c = &mut self.candidates[i];
            c.track = tr.id;
            c.class = tr.class;
            c.seen = true;
            c.last_seen = t;
            c.bbox = tr.bbox;
            c.pos = tr.pos;
            let holds = match self.condition {
                Condition::Present => true,
                Condition::Stationary { radius } => {
                    let h = (tr.bbox.y2 - tr.bbox.y1).max(c.anchor_box.y2 - c.anchor_box.y1);
                    let still = dist(tr.pos, c.anchor) <= radius * h;
                    if !still {
                        c.anchor = tr.pos;
                        c.anchor_box = tr.bbox;
                    }
                    still
                }
                // Once open, staying in the zone keeps the incident; the direction decided it.
                Condition::Against { .. } if c.open.is_some() => true,
                Condition::Against { allowed } => against(tr, c.anchor, allowed),
            };
            if holds && !c.holds {
                // A stationary stretch starts at the anchor; other conditions start now.
                c.since = if c.open.is_some() { c.since } else { t };
            }
            c.holds = holds;
            c.departed = !holds;
            if holds {
                c.last_true = t;
            }
            if self.report && active && holds && c.open.is_none() && t.since(c.since) >= self.min_ms
            {
                let episode = episodes.unique(c.since);
                c.open = Some(episode);
                out.push(Transition {
                    phase: IncidentPhase::Opened,
                    episode,
                    count: 1,
                    duration_ms: t.since(c.since),
                    track: Some(tr.id),
                    class: Some(tr.class),
                    crossing: None,
                });
            }
        }
        // A candidate whose track is in view but no longer eligible has left the zone.
        for c in self.candidates.iter_mut().filter(|c| !c.seen) {
            if tracks.iter().any(|o| o.id == c.track && o.matched) {
                c.departed = true;
            }
        }
        let clear_ms = self.clear_ms;
        self.candidates.retain(|c| {
            let gone = if c.open.is_some() {
                // Seen leaving is evidence, not a missed detection: a short grace then, the full
                // clear time only while the object is out of sight.
                let wait = if c.departed {
                    clear_ms.min(DEPARTURE_GRACE_MS)
                } else {
                    clear_ms
                };
                !active || t.since(c.last_true) >= wait.max(1)
            } else {
                // A pending object out of sight for the clear time starts over when it comes back.
                t.since(c.last_seen) > clear_ms
            };
            if gone && let Some(episode) = c.open {
                out.push(Transition {
                    phase: IncidentPhase::Closed,
                    episode,
                    count: 1,
                    duration_ms: c.last_true.since(episode),
                    track: Some(c.track),
                    class: Some(c.class),
                    crossing: None,
                });
            }
            !gone
        });
    }

    /// The candidate this track continues: its own, or one left by a lost track in the same place
    /// (an id switch, or the object reappearing after an occlusion).
    fn bind(&self, tr: &Track, tracks: &[Track]) -> Option<usize> {
        if let Some(i) = self.candidates.iter().position(|c| c.track == tr.id) {
            return Some(i);
        }
        let h = tr.bbox.y2 - tr.bbox.y1;
        self.candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.seen && !c.departed)
            .filter(|(_, c)| match self.condition {
                // Where a parked object stood, whatever track it had.
                Condition::Stationary { .. } => c.anchor_box.iou(&tr.bbox) >= 0.3,
                _ => {
                    let old_track_lost = !tracks.iter().any(|o| o.id == c.track && o.matched);
                    old_track_lost && dist(c.pos, tr.pos) <= h.max(c.bbox.y2 - c.bbox.y1)
                }
            })
            .min_by(|(_, a), (_, b)| dist(a.pos, tr.pos).total_cmp(&dist(b.pos, tr.pos)))
            .map(|(i, _)| i)
    }

    /// Tracks behind the open incidents (for the snapshot).
    pub fn open_tracks(&self) -> impl Iterator<Item = u64> + '_ {
        self.candidates
            .iter()
            .filter(|c| c.open.is_some() || c.holds)
            .map(|c| c.track)
    }
}

/// Moving against `allowed` for a clear distance: at least one and a half of its own box heights (or a
/// tenth of the frame, for large boxes) from where it entered, within 60° of straight against.
fn against(tr: &Track, entered: (f32, f32), allowed: (f32, f32)) -> bool {
    let (dx, dy) = (tr.pos.0 - entered.0, tr.pos.1 - entered.1);
    let travelled = dx.hypot(dy);
    let along = dx * allowed.0 + dy * allowed.1;
    let h = tr.bbox.y2 - tr.bbox.y1;
    let moving_against = tr.velocity.0 * allowed.0 + tr.velocity.1 * allowed.1 < 0.0;
    moving_against && -along >= (1.5 * h).min(0.1) && -along >= 0.5 * travelled
}

fn dist(a: (f32, f32), b: (f32, f32)) -> f32 {
    (a.0 - b.0).hypot(a.1 - b.1)
}

#[derive(Debug, Clone, Copy)]
struct Side {
    track: u64,
    /// +1 on the "in" side, -1 on the "out" side.
    side: i8,
    /// The last position on that side.
    pos: (f32, f32),
    seen: bool,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    episode: Timestamp,
    at: Timestamp,
    track: u64,
    class: u16,
    crossing: Crossing,
}

/// Line crossings, counted per direction and class; each crossing in an alerted direction is an
/// incident that closes `clear` later.
pub struct Crossings {
    line: Line,
    alert_in: bool,
    alert_out: bool,
    clear_ms: i64,
    sides: Vec<Side>,
    open: Vec<Pending>,
    /// Crossings per class index: [in, out].
    counts: Vec<[u64; 2]>,
}

impl Crossings {
    pub fn new(line: Line, alert_in: bool, alert_out: bool, clear_ms: i64, classes: usize) -> Self {
        Self {
            line,
            alert_in,
            alert_out,
            clear_ms,
            sides: Vec::with_capacity(32),
            open: Vec::with_capacity(8),
            counts: vec![[0; 2]; classes],
        }
    }

    pub fn line(&self) -> &Line {
        &self.line
    }

    /// Crossings so far of one class: (in, out).
    pub fn count(&self, class: u16) -> (u64, u64) {
        self.counts
            .get(class as usize)
            .map_or((0, 0), |c| (c[0], c[1]))
    }

    pub fn totals(&self) -> (u64, u64) {
        self.counts
            .iter()
            .fold((0, 0), |(i, o), c| (i + c[0], o + c[1]))
    }

    pub fn observe(
        &mut self,
        t: Timestamp,
        tracks: &[Track],
        eligible: impl Fn(&Track) -> bool,
        active: bool,
        episodes: &mut Episodes,
        out: &mut Vec<Transition>,
    ) {
        let clear_ms = self.clear_ms;
        self.open.retain(|p| {
            let done = t.since(p.at) >= clear_ms;
            if done {
                out.push(Transition {
                    phase: IncidentPhase::Closed,
                    episode: p.episode,
                    count: 1,
                    duration_ms: 0,
                    track: Some(p.track),
                    class: Some(p.class),
                    crossing: Some(p.crossing),
                });
            }
            !done
        });
        for s in &mut self.sides {
            s.seen = false;
        }
        for tr in tracks.iter().filter(|tr| eligible(tr)) {
            // A band either side of the line absorbs jitter of an object standing on it.
            let h = tr.bbox.y2 - tr.bbox.y1;
            let band = (0.1 * h).clamp(0.005, 0.03);
            let d = self.line.side(tr.pos);
            let now: i8 = if d > band {
                1
            } else if d < -band {
                -1
            } else {
                0
            };
            let i = match self.sides.iter().position(|s| s.track == tr.id) {
                Some(i) => i,
                None => {
                    self.sides.push(Side {
                        track: tr.id,
                        side: now,
                        pos: tr.pos,
                        seen: true,
                    });
                    continue;
                }
            };
            let s = &mut self.sides[i];
            s.seen = true;
            if now == 0 {
                continue;
            }
            if s.side != 0 && now != s.side && self.line.spans(s.pos, tr.pos) {
                let crossing = if now > 0 { Crossing::In } else { Crossing::Out };
                if let Some(c) = self.counts.get_mut(tr.class as usize) {
                    c[usize::from(now < 0)] += 1;
                }
                let alert = match crossing {
                    Crossing::In => self.alert_in,
                    Crossing::Out => self.alert_out,
                };
                if alert && active {
                    let episode = episodes.unique(t);
                    self.open.push(Pending {
                        episode,
                        at: t,
                        track: tr.id,
                        class: tr.class,
                        crossing,
                    });
                    out.push(Transition {
                        phase: IncidentPhase::Opened,
                        episode,
                        count: 1,
                        duration_ms: 0,
                        track: Some(tr.id),
                        class: Some(tr.class),
                        crossing: Some(crossing),
                    });
                }
            }
            s.side = now;
            s.pos = tr.pos;
        }
        // Sides of tracks the tracker has dropped are forgotten.
        self.sides
            .retain(|s| s.seen || tracks.iter().any(|tr| tr.id == s.track));
    }

    /// Tracks behind the open crossing incidents (for the snapshot).
    pub fn open_tracks(&self) -> impl Iterator<Item = u64> + '_ {
        self.open.iter().map(|p| p.track)
    }
}
