//! Analyse: zone rules over detections turn frames into incident events (opened / updated / closed).
//! Rules are pure state machines over frame time, so they are tested on timelines without sleeping.

mod crowding;
mod geometry;
mod snapshot;

use crossbeam::channel::Sender;

pub use crowding::{Crowding, CrowdingParams, Transition};
pub use geometry::Polygon;
pub use snapshot::{SnapshotRequest, render as render_snapshot};

use crate::config::CameraConfig;
use crate::frame::Frame;
use crate::infer::Detection;
use crate::pool::Analyser;
use crate::types::{CameraId, IncidentEvent, IncidentKey, IncidentPhase, RuleKind, Severity};

/// An incident event and, when it opens, the picture that goes with it.
pub struct AnalysisEvent {
    pub event: IncidentEvent,
    pub snapshot: Option<SnapshotRequest>,
}

struct Rule {
    id: String,
    zone: usize,
    severity: Severity,
    min_people: u32,
    state: Crowding,
}

struct Zone {
    id: String,
    polygon: Polygon,
}

/// One camera's rules and their state. Lives inside the pool, owned by whichever worker holds the camera.
pub struct CameraAnalyser {
    camera: CameraId,
    name: String,
    ward: String,
    zones: Vec<Zone>,
    rules: Vec<Rule>,
    person_class: u16,
    events: Sender<AnalysisEvent>,
    /// People counted per zone on the current frame (reused, no allocation per frame).
    counts: Vec<u32>,
}

impl CameraAnalyser {
    /// `person_class` is the detector's class index for people.
    pub fn new(cam: &CameraConfig, person_class: u16, events: Sender<AnalysisEvent>) -> Self {
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
            .map(|r| {
                let min_people = r.min_people.expect("validated by config");
                Rule {
                    id: r.id.get_ref().clone(),
                    zone: zones
                        .iter()
                        .position(|z| &z.id == r.zone.get_ref())
                        .expect("validated by config"),
                    severity: r.severity,
                    min_people,
                    state: Crowding::new(CrowdingParams {
                        min_people,
                        min_ms: (r.min_seconds * 1000.0) as i64,
                        clear_ms: (r.clear_seconds * 1000.0) as i64,
                        update_every_ms: 30_000,
                    }),
                }
            })
            .collect();
        Self {
            camera: CameraId::new(cam.id.get_ref()),
            name: if cam.name.is_empty() {
                cam.id.get_ref().clone()
            } else {
                cam.name.clone()
            },
            ward: cam.ward.clone(),
            counts: vec![0; zones.len()],
            zones,
            rules,
            person_class,
            events,
        }
    }

    fn in_zone(&self, zone: usize, d: &Detection) -> bool {
        d.class == self.person_class && self.zones[zone].polygon.contains(d.bbox.bottom_centre())
    }
}

fn people(n: u32) -> String {
    if n == 1 {
        "1 person".into()
    } else {
        format!("{n} people")
    }
}

impl Analyser for CameraAnalyser {
    fn analyse(&mut self, frame: &Frame, detections: &[Detection]) {
        for z in 0..self.zones.len() {
            self.counts[z] = detections.iter().filter(|d| self.in_zone(z, d)).count() as u32;
        }
        for r in 0..self.rules.len() {
            let zone = self.rules[r].zone;
            let Some(tr) = self.rules[r]
                .state
                .observe(frame.captured_at, self.counts[zone])
            else {
                continue;
            };
            let rule = &self.rules[r];
            let zone_id = &self.zones[zone].id;
            let secs = tr.duration_ms / 1000;
            let summary = match tr.phase {
                IncidentPhase::Opened => format!(
                    "{} in zone {zone_id} for {secs} s (threshold {})",
                    people(tr.count),
                    rule.min_people
                ),
                IncidentPhase::Updated => format!(
                    "crowd grew to {} in zone {zone_id} ({secs} s)",
                    people(tr.count)
                ),
                IncidentPhase::Closed => format!(
                    "crowd in zone {zone_id} dispersed after {secs} s (peak {})",
                    tr.count
                ),
            };
            let snapshot = (tr.phase == IncidentPhase::Opened).then(|| SnapshotRequest {
                image: frame.to_rgb_image(),
                boxes: detections
                    .iter()
                    .map(|d| (d.bbox, self.in_zone(zone, d)))
                    .collect(),
                zone: self.zones[zone].polygon.points.clone(),
            });
            let event = IncidentEvent {
                key: IncidentKey {
                    camera: self.camera.clone(),
                    rule: rule.id.clone(),
                    zone: zone_id.clone(),
                    episode: tr.episode,
                },
                phase: tr.phase,
                at: frame.captured_at,
                kind: RuleKind::Crowding,
                severity: rule.severity,
                camera_name: self.name.clone(),
                ward: self.ward.clone(),
                summary,
                count: tr.count,
                snapshot: None,
            };
            // The receiver lives as long as the process; a send fails only during shutdown.
            let _ = self.events.send(AnalysisEvent { event, snapshot });
        }
    }
}
