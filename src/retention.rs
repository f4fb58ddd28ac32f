//! Retention: old incidents, the alert router's records and snapshot files are pruned on a schedule (once at
//! start, then every `[retention] every_minutes`), so the database and the data folder stop growing.
//!
//! What is live is never pruned: open incidents and their snapshots, firing alerts, deliveries not in a final
//! state (pending, sending, queued at the gateway), notices that still have a delivery. Rows go in batches of
//! `batch_rows`, one short transaction each, with `batch_pause_ms` between them, so the router and the
//! notifier never wait long for the write lock. Snapshot files are removed after the rows naming them are
//! committed; a sweep of the snapshot folder catches files a crash left behind.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};

use crate::alert::{self, AlertError, Prunable};
use crate::config::RetentionConfig;
use crate::store::{Store, StoreError};
use crate::types::{Clock, IncidentKey, Timestamp};

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Incidents(#[from] StoreError),
    #[error(transparent)]
    Alerts(#[from] AlertError),
}

/// Ages (`None` keeps for good) and pacing, from a validated `[retention]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub incidents: Option<Duration>,
    pub alerts: Option<Duration>,
    pub notices: Option<Duration>,
    pub deliveries: Option<Duration>,
    pub delivery_events: Option<Duration>,
    pub snapshots: Option<Duration>,
    /// The live feed's change log: [`FEED_AGE`], or the alerts' age when that is shorter.
    pub feed: Option<Duration>,
    pub batch_rows: usize,
    pub batch_pause: Duration,
    pub every: Duration,
}

/// How long the live feed's change log is kept. It only serves a stream that dropped and comes back
/// (`Last-Event-ID`): the page loads the alert list itself when it opens, and a browser retries a dropped
/// stream within seconds. A week covers a laptop closed over a long weekend or an operations-centre PC
/// left off for days, while the log — one row per alert update and per delivery state change, several per
/// alert — stays a small fraction of the alert tables.
pub const FEED_AGE: Duration = Duration::from_secs(7 * 86_400);

impl From<&RetentionConfig> for Policy {
    fn from(c: &RetentionConfig) -> Self {
        let days = |d: &toml::Spanned<i64>| {
            let d = (*d.get_ref()).max(0) as u64;
            (d > 0).then(|| Duration::from_secs(d * 86_400))
        };
        Self {
            incidents: days(&c.incidents_days),
            alerts: days(&c.alerts_days),
            notices: days(&c.notices_days),
            deliveries: days(&c.deliveries_days),
            delivery_events: days(&c.delivery_events_days),
            snapshots: days(&c.snapshots_days),
            // Rows about pruned alerts could no longer be shown anyway.
            feed: Some(days(&c.alerts_days).map_or(FEED_AGE, |a| a.min(FEED_AGE))),
            batch_rows: (*c.batch_rows.get_ref()).max(1) as usize,
            batch_pause: Duration::from_millis((*c.batch_pause_ms.get_ref()).max(0) as u64),
            every: Duration::from_secs((*c.every_minutes.get_ref()).max(1) as u64 * 60),
        }
    }
}

/// What one pruning run removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub incidents: u64,
    pub alerts: u64,
    pub feed: u64,
    pub notices: u64,
    pub notification_log: u64,
    pub deliveries: u64,
    pub delivery_events: u64,
    /// Incidents whose snapshot was cleared (the row stays).
    pub snapshots_cleared: u64,
    pub snapshot_files: u64,
    /// Write transactions that deleted or cleared something.
    pub batches: u64,
}

impl Pruned {
    fn any(&self) -> bool {
        *self != Pruned::default()
    }
}

fn cutoff(now: Timestamp, age: Option<Duration>) -> Option<Timestamp> {
    age.map(|a| now.plus_ms(-(a.as_millis() as i64)))
}

/// Prunes everything older than the policy's ages at `now`. Between batches it waits `batch_pause` on
/// `stop`, and returns early (with what it did) when `stop` fires or is dropped.
pub fn prune(
    policy: &Policy,
    db: &Path,
    snapshots: &Path,
    now: Timestamp,
    stop: &Receiver<()>,
) -> Result<Pruned, RetentionError> {
    let mut out = Pruned::default();
    let rows = policy.batch_rows.max(1);
    let go_on = || {
        matches!(
            stop.recv_timeout(policy.batch_pause),
            Err(RecvTimeoutError::Timeout)
        )
    };
    // Children before parents: a notice goes once its deliveries are gone.
    let mut alerts = alert::Store::open(db)?;
    for (what, age) in [
        (Prunable::DeliveryEvents, policy.delivery_events),
        (Prunable::Deliveries, policy.deliveries),
        (Prunable::Notices, policy.notices),
        (Prunable::NotificationLog, policy.notices),
        (Prunable::Alerts, policy.alerts),
        (Prunable::Feed, policy.feed),
    ] {
        let Some(before) = cutoff(now, age) else {
            continue;
        };
        let mut from = 0;
        loop {
            let batch = alerts.prune_batch(what, before, from, rows)?;
            let n = batch.deleted as u64;
            *match what {
                Prunable::DeliveryEvents => &mut out.delivery_events,
                Prunable::Deliveries => &mut out.deliveries,
                Prunable::Notices => &mut out.notices,
                Prunable::NotificationLog => &mut out.notification_log,
                Prunable::Alerts => &mut out.alerts,
                Prunable::Feed => &mut out.feed,
            } += n;
            out.batches += u64::from(n > 0);
            let Some(next) = batch.next else { break };
            from = next;
            if !go_on() {
                return Ok(out);
            }
        }
    }
    let mut incidents = Store::open(db)?;
    if let Some(before) = cutoff(now, policy.incidents) {
        loop {
            let gone = incidents.prune_closed(before, rows)?;
            out.incidents += gone.len() as u64;
            out.batches += u64::from(!gone.is_empty());
            for s in gone.iter().flatten() {
                out.snapshot_files += u64::from(remove_snapshot(snapshots, s));
            }
            if gone.len() < rows || !go_on() {
                break;
            }
        }
    }
    if let Some(before) = cutoff(now, policy.snapshots) {
        loop {
            let n = incidents.forget_snapshots(before, rows)?;
            out.snapshots_cleared += n as u64;
            out.batches += u64::from(n > 0);
            if n < rows || !go_on() {
                break;
            }
        }
        let keep: HashSet<String> = incidents
            .snapshots_begun_before(before)?
            .iter()
            .filter_map(|s| file_name(s))
            .collect();
        out.snapshot_files += sweep(snapshots, before, &keep);
    }
    Ok(out)
}

fn file_name(path: &str) -> Option<String> {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

/// Removes a snapshot named by a pruned row. Only a file of that name in the snapshot folder is touched,
/// whatever path the row held.
fn remove_snapshot(dir: &Path, stored: &str) -> bool {
    file_name(stored).is_some_and(|name| remove(&dir.join(name)))
}

fn remove(path: &Path) -> bool {
    match std::fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "retention: cannot remove a snapshot");
            false
        }
    }
}

/// The file name of an incident's snapshot: `CAMERA_RULE_EPISODE.jpg`. The episode (when the incident's
/// condition began) is last, so the sweep can read it back whatever the ids contain.
pub fn snapshot_name(key: &IncidentKey) -> String {
    format!("{}_{}_{}.jpg", key.camera, key.rule, key.episode.0)
}

/// The episode a [`snapshot_name`] carries.
fn episode_of(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".jpg")?;
    stem.rsplit_once('_')?.1.parse().ok()
}

/// Removes snapshot files whose episode began before `before`, unless a row still names them (`keep`).
/// Files not named by [`snapshot_name`] are left alone. The episode is on the clock the incidents use,
/// unlike the file's modification time.
fn sweep(dir: &Path, before: Timestamp, keep: &HashSet<String>) -> u64 {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "retention: cannot list snapshots");
            return 0;
        }
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if episode_of(&name).is_some_and(|t| t < before.0) && !keep.contains(&name) {
            removed += u64::from(remove(&entry.path()));
        }
    }
    removed
}

/// The pruning thread: runs at start, then every `policy.every`, until stopped.
pub struct RetentionTask {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl RetentionTask {
    pub fn start(
        policy: Policy,
        db: PathBuf,
        snapshots: PathBuf,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = crossbeam::channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("sw-retention".into())
            .spawn(move || {
                loop {
                    match prune(&policy, &db, &snapshots, clock.now(), &stopped) {
                        Ok(p) if p.any() => tracing::info!(?p, "retention: pruned old records"),
                        Ok(_) => {}
                        // Nothing is lost by waiting: the next run prunes what this one could not.
                        Err(e) => tracing::error!(error = %e, "retention: pruning failed"),
                    }
                    if !matches!(
                        stopped.recv_timeout(policy.every),
                        Err(RecvTimeoutError::Timeout)
                    ) {
                        return;
                    }
                }
            })?;
        Ok(Self { stop, thread })
    }

    /// Stops the thread after its current batch.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}
