//! Cameras added, removed and changed by a configuration reload, without a restart.
//!
//! The pool has a fixed number of slots, and each running camera holds one. A reload diffs the new
//! configuration's cameras with the running ones by id: a removed camera is stopped (ingest first, then its
//! pool slot, whose analyser goes with it) and the incident sink closes what it left open; an added one
//! takes the lowest free slot; a changed one (any setting: url, fps, zones, rules …) is stopped and started
//! again, losing its tracks; an unchanged one is not touched. The other sections are read only at start:
//! a change there is logged as needing a restart.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crossbeam::channel::Sender;

use crate::analyse::{AnalysisEvent, CameraAnalyser};
use crate::config::{self, CameraConfig, Config, ConfigError};
use crate::health::{CameraHealth, StreamState};
use crate::infer::RegionTable;
use crate::ingest::{CameraStream, Ingest};
use crate::pool::{Analyser, Pool};
use crate::serve::{CameraInfo, CameraList};
use crate::types::{CameraId, Timestamp};

use super::{Pipeline, camera_regions};

/// What a reload did, by camera id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Stopped and started again with their new settings.
    pub restarted: Vec<String>,
    pub unchanged: usize,
    /// Cameras that could not be started (their pipeline could not be built), with why.
    pub failed: Vec<(String, String)>,
    /// Sections other than `cameras` that differ from the running configuration: applied at the next
    /// restart.
    pub needs_restart: Vec<String>,
}

/// A camera that holds a pool slot.
struct Running {
    config: CameraConfig,
    health: Arc<CameraHealth>,
}

/// The running cameras by pool slot, and what starting one needs.
pub(super) struct Cameras {
    slots: Vec<Option<Running>>,
    /// What serve, metrics and the health watcher read, in configuration order.
    pub(super) list: CameraList,
    labels: Vec<String>,
    events: Sender<AnalysisEvent>,
    dropped_updates: Arc<AtomicU64>,
    regions: RegionTable,
    /// Tells the incident sink a camera stopped, and when: it closes the incidents the camera left open.
    retired: Sender<(CameraId, Timestamp)>,
}

impl Cameras {
    pub(super) fn new(
        capacity: usize,
        labels: Vec<String>,
        events: Sender<AnalysisEvent>,
        dropped_updates: Arc<AtomicU64>,
        regions: RegionTable,
        retired: Sender<(CameraId, Timestamp)>,
    ) -> Self {
        Self {
            slots: (0..capacity).map(|_| None).collect(),
            list: CameraList::default(),
            labels,
            events,
            dropped_updates,
            regions,
            retired,
        }
    }

    /// A sender of the analysers' channel to the incident sink.
    pub(super) fn events(&self) -> Sender<AnalysisEvent> {
        self.events.clone()
    }

    /// Brings the running cameras to `config`'s (see the module's comment). `now` dates the stops.
    pub(super) fn apply(
        &mut self,
        config: &Config,
        pool: &Pool,
        ingest: &mut Ingest,
        now: Timestamp,
    ) -> Reloaded {
        let wanted: HashMap<&str, &CameraConfig> = config
            .cameras
            .iter()
            .map(|c| (c.id.get_ref().as_str(), c))
            .collect();
        let mut done = Reloaded::default();
        let mut restarting = HashSet::new();
        for index in 0..self.slots.len() {
            let Some(running) = &self.slots[index] else {
                continue;
            };
            let id = running.config.id.get_ref().clone();
            match wanted.get(id.as_str()) {
                Some(&c) if *c == running.config => done.unchanged += 1,
                found => {
                    self.stop(index, pool, ingest, now);
                    if found.is_some() {
                        restarting.insert(id);
                    } else {
                        done.removed.push(id);
                    }
                }
            }
        }
        let running: HashSet<String> = self
            .slots
            .iter()
            .flatten()
            .map(|r| r.config.id.get_ref().clone())
            .collect();
        for camera in &config.cameras {
            let id = camera.id.get_ref();
            if running.contains(id) {
                continue;
            }
            let Some(index) = self.slots.iter().position(Option::is_none) else {
                // Checked before: a configuration never names more cameras than there are slots.
                done.failed.push((id.clone(), "no free camera slot".into()));
                continue;
            };
            match self.start(config, camera, index, pool, ingest) {
                Ok(()) if restarting.contains(id) => done.restarted.push(id.clone()),
                Ok(()) => done.added.push(id.clone()),
                Err(e) => {
                    tracing::error!(camera = %id, error = %e, "camera not started");
                    done.failed.push((id.clone(), e));
                }
            }
        }
        self.publish(config);
        done
    }

    fn start(
        &mut self,
        config: &Config,
        camera: &CameraConfig,
        index: usize,
        pool: &Pool,
        ingest: &mut Ingest,
    ) -> Result<(), String> {
        let health = Arc::new(CameraHealth::new(CameraId::new(camera.id.get_ref())));
        // Before the slot is attached, so the camera's first frame is detected on its regions.
        self.regions.rcu(|table| {
            let mut table = Vec::clone(table);
            table.resize(self.slots.len(), Default::default());
            table[index] = camera_regions(camera);
            table
        });
        let analyser = CameraAnalyser::new(camera, &self.labels, self.events.clone())
            .counting_drops(self.dropped_updates.clone());
        let sink = pool
            .attach(
                index,
                health.clone(),
                Box::new(analyser) as Box<dyn Analyser>,
            )
            .map_err(|e| e.to_string())?;
        let stream = CameraStream::new(config, camera, index, health.clone(), sink);
        if let Err(e) = ingest.add(stream) {
            let _ = pool.detach(index);
            return Err(e.to_string());
        }
        self.slots[index] = Some(Running {
            config: camera.clone(),
            health,
        });
        Ok(())
    }

    /// Stops the camera in slot `index`: its supervisor, then its pool slot (the analyser is dropped once
    /// no worker holds it); the incident sink then closes what it left open.
    fn stop(&mut self, index: usize, pool: &Pool, ingest: &mut Ingest, now: Timestamp) {
        let Some(running) = self.slots[index].take() else {
            return;
        };
        ingest.remove(index);
        if let Err(e) = pool.detach(index) {
            tracing::error!(slot = index, error = %e, "camera slot not freed");
        }
        running.health.set_state(StreamState::Stopped);
        let _ = self.retired.send((running.health.camera.clone(), now));
    }

    /// Publishes the running cameras in `config`'s order.
    fn publish(&self, config: &Config) {
        let by_id: HashMap<&str, &Running> = self
            .slots
            .iter()
            .flatten()
            .map(|r| (r.config.id.get_ref().as_str(), r))
            .collect();
        let list = config
            .cameras
            .iter()
            .filter_map(|c| by_id.get(c.id.get_ref().as_str()))
            .map(|r| CameraInfo {
                id: r.health.camera.clone(),
                name: r.config.name.clone(),
                ward: r.config.ward.clone(),
                health: r.health.clone(),
            })
            .collect();
        self.list.store(list);
    }
}

/// The configuration file `run` reads, and re-reads on SIGHUP.
pub struct ConfigFile {
    path: PathBuf,
    /// The tables as written when the pipeline started: a reload compares its sections with them.
    started: toml::Table,
}

impl ConfigFile {
    /// Reads and validates `path`, for starting the pipeline.
    pub fn load(path: &Path) -> Result<(Config, ConfigFile), ConfigError> {
        let (config, text) = Config::load_with_text(path)?;
        let file = ConfigFile {
            path: path.to_path_buf(),
            started: tables(&text),
        };
        Ok((config, file))
    }

    /// Reads the file again and applies its cameras to `pipeline`. A file that fails validation changes
    /// nothing: the error names the file, line and key.
    pub fn reload(&self, pipeline: &mut Pipeline) -> Result<Reloaded, ConfigError> {
        let (config, text) = Config::load_with_text(&self.path)?;
        let capacity = pipeline.pool.capacity();
        if let Some(over) = config.cameras.get(capacity) {
            return Err(config::invalid(
                &text,
                &self.path.display().to_string(),
                over.id.span(),
                format!("cameras[{capacity}]"),
                format!(
                    "{} cameras, but this process has room for {capacity} \
                     (runtime.camera_capacity, fixed at start): restart to raise it",
                    config.cameras.len()
                ),
            ));
        }
        let new = tables(&text);
        let needs_restart: Vec<String> = self
            .started
            .keys()
            .chain(new.keys())
            .filter(|k| *k != "cameras" && self.started.get(*k) != new.get(*k))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .cloned()
            .collect();
        for section in &needs_restart {
            tracing::warn!(file = %self.path.display(), section = %section, "[{section}] changed: it takes effect at the next restart");
        }
        let mut done = pipeline.apply_cameras(&config);
        done.needs_restart = needs_restart;
        tracing::info!(file = %self.path.display(), added = ?done.added, removed = ?done.removed, restarted = ?done.restarted, unchanged = done.unchanged, failed = done.failed.len(), "configuration reloaded");
        Ok(done)
    }
}

/// The file's top-level tables as written (values, not positions), for comparing two versions.
fn tables(text: &str) -> toml::Table {
    // The text passed validation, so it parses.
    text.parse().unwrap_or_default()
}
