//! Inhibition: what makes an alert not worth a notice right now, though it is real.
//! A camera that is down or in maintenance mutes its rule alerts (its picture cannot be trusted, and its
//! health has its own alarm); a firing higher-severity alert mutes lower ones it covers (by default: a
//! critical incident on a camera mutes that camera's warnings).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::dedup::Dedup;
use crate::alert::config::{InhibitConfig, InhibitRule};
use crate::alert::model::Alert;

/// A camera's health as the ingest supervisor reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraHealth {
    Up,
    Down,
    Maintenance,
}

pub(crate) struct Inhibitor {
    camera_health: bool,
    rules: Vec<InhibitRule>,
    unhealthy: HashMap<String, CameraHealth>,
}

impl Inhibitor {
    pub(crate) fn new(cfg: &InhibitConfig) -> Self {
        Self {
            camera_health: cfg.camera_health,
            rules: cfg.rules.clone(),
            unhealthy: HashMap::new(),
        }
    }

    pub(crate) fn set_health(&mut self, camera: &str, health: CameraHealth) {
        if health == CameraHealth::Up {
            self.unhealthy.remove(camera);
        } else {
            self.unhealthy.insert(camera.to_string(), health);
        }
    }

    /// Why `a` is muted, if it is: `camera down`, `camera in maintenance` or `inhibited by KEY`.
    pub(crate) fn muted_by(&self, a: &Alert, alerts: &Dedup) -> Option<String> {
        if self.camera_health {
            match self.unhealthy.get(&a.camera) {
                Some(CameraHealth::Down) => return Some("camera down".into()),
                Some(CameraHealth::Maintenance) => return Some("camera in maintenance".into()),
                _ => {}
            }
        }
        for rule in self.rules.iter().filter(|r| r.target.matches(a)) {
            let covers = |s: &&Alert| {
                s.key != a.key
                    && rule.source.matches(s)
                    && rule.equal.iter().all(|l| s.label(l) == a.label(l))
            };
            // Rules that compare cameras (the usual kind) look only at that camera's firing alerts.
            let src = if rule.equal.iter().any(|l| l == "camera") {
                alerts.firing_on(&a.camera).find(covers)
            } else {
                alerts.firing().find(covers)
            };
            if let Some(src) = src {
                return Some(format!("inhibited by {}", src.key));
            }
        }
        None
    }
}
