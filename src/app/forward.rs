//! The incident sink's last step: store each incident event, log it, and hand it to the alert router over
//! its bounded queue, so that no opened or closed incident is ever lost however far behind the router is.
//!
//! An event is committed to `incidents` before it is offered to the router. When the queue is full, an
//! `updated` event is dropped (counted: the next one or the close carries the newer state); an `opened` or
//! `closed` one waits [`SPILL_AFTER`], then is left in `incidents` (counted as spilled) and the sink notes
//! from when it is behind. Once the queue is half empty again the sink replays, from the table, every
//! incident changed since then: the opening and, if it closed, the close. The router drops what it already
//! knew as duplicates. A crash while behind loses nothing that is open: start-up hands open incidents over.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::alert::{self, AlertHandle, Handed, QueueStats};
use crate::store::Store;
use crate::types::{CameraId, IncidentEvent, IncidentPhase, RuleKind, Timestamp};

/// Where the incident sink hands events on: the alert router in this process (`run`), or a JetStream
/// stream read by routers elsewhere (`node`). Both may refuse an event for a while (a full queue, NATS
/// away); the [`Forwarder`] keeps what they refused in the incidents table and replays it.
pub trait IncidentOutlet: Send + Sync {
    /// Hands `event` on, waiting at most `wait` for an `opened` or `closed` one (an `updated` one is not
    /// waited for: it is dropped and counted when it cannot go at once).
    fn offer(&self, event: IncidentEvent, wait: Duration) -> Handed;
    /// Hands `event` on, waiting as long as the outlet allows: for an event that is not in the table.
    fn submit(&self, event: IncidentEvent);
    /// True when a replay of spilled events is likely to go through.
    fn has_room(&self) -> bool;
    fn queue_stats(&self) -> QueueStats;
    /// A camera went down or came back (see `app::watch_camera_health`).
    fn camera_health(&self, camera: &CameraId, health: alert::CameraHealth);
}

impl IncidentOutlet for AlertHandle {
    fn offer(&self, event: IncidentEvent, wait: Duration) -> Handed {
        AlertHandle::offer(self, event, wait)
    }
    fn submit(&self, event: IncidentEvent) {
        AlertHandle::submit(self, event)
    }
    fn has_room(&self) -> bool {
        AlertHandle::has_room(self)
    }
    fn queue_stats(&self) -> QueueStats {
        AlertHandle::queue_stats(self)
    }
    fn camera_health(&self, camera: &CameraId, health: alert::CameraHealth) {
        AlertHandle::camera_health(self, camera, health)
    }
}

/// How long an opened or closed event waits for room in the router's queue before it is left for replay:
/// long enough to ride out a burst, short enough that the sink keeps storing incidents.
pub const SPILL_AFTER: Duration = Duration::from_millis(250);
/// Incidents read per page when replaying.
const REPLAY_PAGE: usize = 256;
/// Least time between two warnings about dropped or spilled events.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Incidents opened since the start, per rule kind: counted by the incident sink, read by `/metrics`.
#[derive(Debug, Default)]
pub struct IncidentCounts {
    opened: [AtomicU64; RuleKind::ALL.len()],
}

impl IncidentCounts {
    fn count(&self, kind: RuleKind) {
        if let Some(i) = RuleKind::ALL.iter().position(|&k| k == kind) {
            self.opened[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Each rule kind with the incidents of that kind opened since the start.
    pub fn opened(&self) -> impl Iterator<Item = (RuleKind, u64)> + '_ {
        RuleKind::ALL
            .into_iter()
            .zip(&self.opened)
            .map(|(k, n)| (k, n.load(Ordering::Relaxed)))
    }
}

pub struct Forwarder {
    store: Store,
    opened: Arc<IncidentCounts>,
    alerts: Option<Arc<dyn IncidentOutlet>>,
    /// `updated` events the analysers dropped before the sink (their queue was full).
    upstream_drops: Arc<AtomicU64>,
    /// Changes since this time may not have reached the router: replay from here.
    behind_since: Option<Timestamp>,
    reported: (u64, QueueStats),
    last_report: Instant,
}

impl Forwarder {
    pub fn new(
        store: Store,
        alerts: Option<Arc<dyn IncidentOutlet>>,
        upstream_drops: Arc<AtomicU64>,
    ) -> Self {
        Self {
            store,
            opened: Arc::default(),
            alerts,
            upstream_drops,
            behind_since: None,
            reported: (0, QueueStats::default()),
            last_report: Instant::now(),
        }
    }

    /// Counts opened incidents in `counts` (shared with whoever reads them) instead of a count of its own.
    pub fn counting_opened(mut self, counts: Arc<IncidentCounts>) -> Self {
        self.opened = counts;
        self
    }

    /// Stores the event, logs it and hands it to the router.
    pub fn record(&mut self, event: IncidentEvent) {
        if event.phase == IncidentPhase::Opened {
            self.opened.count(event.kind);
        }
        let stored = match self.store.record(&event) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(incident = %event.key, error = %e, "incident not stored");
                false
            }
        };
        log_incident(&event);
        let Some(alerts) = &self.alerts else {
            return;
        };
        if !stored {
            // Not in the table, so it cannot be replayed from there: wait for room instead.
            alerts.submit(event);
            return;
        }
        let at = event.at;
        if alerts.offer(event, SPILL_AFTER) == Handed::Spilled {
            self.behind_since = Some(self.behind_since.map_or(at, |t| t.min(at)));
        }
        self.report();
    }

    /// Closes the incidents `camera` left open when a reload stopped it (removed, or restarted with new
    /// settings): the rule state that would close them is gone. Only those opened at or before `stopped`,
    /// so an incident its restarted analysers opened since is left alone.
    pub fn close_camera(&mut self, camera: &CameraId, stopped: Timestamp, now: Timestamp) {
        let open = match self.store.open_incidents() {
            Ok(open) => open,
            Err(e) => {
                tracing::error!(%camera, error = %e, "cannot read the incidents of a stopped camera");
                return;
            }
        };
        for mut event in open
            .into_iter()
            .filter(|e| e.key.camera == *camera && e.kind != RuleKind::CitizenReport)
            .filter(|e| e.at <= stopped)
        {
            event.phase = IncidentPhase::Closed;
            event.at = now.max(event.at);
            event.summary = "closed: the camera stopped here (a configuration reload, or it moved to another node)".into();
            self.record(event);
        }
    }

    /// Replays what spilled, once the router's queue has room. Cheap when nothing spilled.
    pub fn catch_up(&mut self) {
        self.replay(false);
        self.report();
    }

    /// True while events that spilled have not been replayed.
    pub fn behind(&self) -> bool {
        self.behind_since.is_some()
    }

    /// Replays, once the outlet has room, every incident changed since `since` (the outlet drops what it
    /// already has): what a previous run may have stored without handing on.
    pub fn behind_from(&mut self, since: Timestamp) {
        self.behind_since = Some(self.behind_since.map_or(since, |t| t.min(since)));
    }

    /// Hands over everything still behind, waiting for room, and lets the outlet go: the last holder
    /// of the embedded router stops it (its `Drop`).
    pub fn finish(mut self) {
        self.replay(true);
        self.report();
        drop(self.alerts.take());
    }

    fn replay(&mut self, wait: bool) {
        let (Some(alerts), Some(since)) = (self.alerts.clone(), self.behind_since) else {
            return;
        };
        if !wait && !alerts.has_room() {
            return;
        }
        self.behind_since = None;
        let mut after = None;
        loop {
            let rows = match self.store.changed_since(since, after.as_ref(), REPLAY_PAGE) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read incidents to replay to the alert router");
                    self.behind_since = Some(since);
                    return;
                }
            };
            for row in &rows {
                for event in std::iter::once(row.opened.clone()).chain(row.closed.clone()) {
                    let handed = if wait {
                        alerts.submit(event);
                        Handed::Queued
                    } else {
                        alerts.offer(event, SPILL_AFTER)
                    };
                    if handed == Handed::Spilled {
                        // Rows are in order of their last change: everything from this one on is behind.
                        self.behind_since = Some(row.resume.0);
                        return;
                    }
                }
            }
            match rows.last() {
                Some(last) if rows.len() == REPLAY_PAGE => after = Some(last.resume.clone()),
                _ => return,
            }
        }
    }

    /// Warns, at most every [`REPORT_EVERY`], when events were dropped or spilled since the last warning.
    fn report(&mut self) {
        if self.last_report.elapsed() < REPORT_EVERY {
            return;
        }
        let upstream = self.upstream_drops.load(Ordering::Relaxed);
        let queue = self
            .alerts
            .as_ref()
            .map(|a| a.queue_stats())
            .unwrap_or_default();
        if (upstream, queue) != self.reported {
            tracing::warn!(
                analysis_updates_dropped = upstream,
                router_updates_dropped = queue.dropped_updates,
                router_spilled = queue.spilled,
                behind = self.behind(),
                "incident events overflowed a full queue (totals since start; updates are dropped, \
                 opens and closes are replayed from the incidents table)"
            );
            self.reported = (upstream, queue);
        }
        self.last_report = Instant::now();
    }
}

fn log_incident(e: &IncidentEvent) {
    let what = match e.phase {
        IncidentPhase::Opened => "INCIDENT OPENED",
        IncidentPhase::Updated => "incident updated",
        IncidentPhase::Closed => "INCIDENT CLOSED",
    };
    tracing::info!(
        incident = %e.key,
        camera = %e.camera_name,
        ward = %e.ward,
        rule = e.kind.as_str(),
        severity = e.severity.as_str(),
        at = %e.at.to_rfc3339(),
        snapshot = e.snapshot.as_deref().unwrap_or("-"),
        "{what}: {} / {}: {}",
        e.kind.title_vi(),
        e.kind.title_en(),
        e.summary
    );
}
