//! Alert router: turns incident events into notices for police command, and delivers them.
//!
//! ```text
//! IncidentEvent ─▶ dedup ─▶ route ─▶ group ══(group_wait / group_interval)══▶ inhibit ─▶ silence
//!                                                 ─▶ notification-log dedup ─▶ flood ─▶ outbox (SQLite)
//! outbox ─▶ notifier (per-receiver concurrency, rate, retries) ─▶ SMS gateway │ SMTP │ webhook
//! SMS gateway ─▶ delivery reports ─▶ outbox
//! ```
//! Alertmanager is the model for routing, grouping, inhibition and silences. Beyond it: the decision and its
//! deliveries commit together, so a crash loses no notice and duplicates at most one delivery (counted);
//! permanent failures are dead-lettered with the gateway's reason; SMS know their segment cost.
//!
//! Durability starts when the router thread commits an event (it batches what is queued, one transaction
//! per batch): events still in the in-memory queue when the process dies are not in the alert tables. The
//! incidents table, which the incident sink writes before it hands an event over, is the durable record of
//! what the router should know, and every start reconciles the two (`app::hand_over_left_state`): alerts
//! still firing whose incident closed get that close, dated when the incident closed, and incidents still
//! open are submitted again (dedup drops what is already known). A crash between the two commits so delays a
//! notice until the next start; it never loses one or leaves an alert firing for good. (An outbox of
//! incident events read by the router would make the hand-off exact, at the cost of a second queue to keep;
//! the table already holds each incident's last state, which is all the router needs.)
//!
//! The queue to the router thread is bounded ([`QUEUE`] events), so a stalled database cannot make it grow
//! without end. When it is full, an `updated` event is dropped and counted ([`QueueStats::dropped_updates`]):
//! it only refreshes a count or a summary, and the next one or the close carries the newer state. An
//! `opened` or `closed` event is never dropped: [`AlertHandle::submit`] waits for room; a caller that has the
//! event committed elsewhere (the incident sink: it is a row in `incidents`) may use [`AlertHandle::offer`],
//! which waits a little, then hands it back as spilled so the caller replays it from its table later.
//!
//! With no receivers configured the router still decides: notices are recorded as `unrouted` (see
//! `streetwatch outbox list`) and logged, and nothing is sent.
//!
//! [`Router`] is the synchronous core (time is a parameter) for timeline tests and benchmarks;
//! [`AlertService`] runs it on a thread, with the notifier and the delivery-report listener on a tokio
//! runtime of its own, so callers need no runtime.

pub mod claims;
pub mod cli;
mod config;
mod decide;
mod deliver;
mod error;
mod keys;
mod model;
mod router;
mod store;
mod wording;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam::channel::{
    self, Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError,
};
use tokio::sync::{Notify, oneshot, watch};

use crate::types::{CameraId, Clock, IncidentEvent, IncidentPhase, Timestamp};

pub use claims::{ClaimError, ClaimFuture, Claimed, Claims, LocalClaims};
pub use config::normalize_phone;
pub use config::{
    AlertConfig, ConfigError, DlrConfig, Dur, EmailConfig, FloodConfig, HttpMethod, InhibitConfig,
    InhibitRule, Matchers, ReceiverConfig, RetryConfig, RouteConfig, SmsCoding, SmsConfig,
    WebhookConfig,
};
pub use decide::dedup::Admission;
pub use decide::inhibit::CameraHealth;
pub use decide::silence::Silence;
pub use deliver::notify::DeliveryStats;
pub use error::AlertError;
pub use model::{Alert, NoticeKind, NoticePayload};
pub use router::{Router, RouterStats};
pub use store::{
    AlertAction, AlertDelivery, AlertFilter, AlertPosition, AlertRow, AlertView, DeliveryEvent,
    DeliveryRow, FeedRow, HANDLING_STATES, Handled, Handling, HandlingRow, NoticeRow, Prunable,
    PruneBatch, Store,
};
pub use wording::gsm;

enum Msg {
    /// An event, and who waits for its commit.
    Event(Box<IncidentEvent>, Option<oneshot::Sender<()>>),
    Health(CameraId, CameraHealth),
    /// The camera's alerts that started before this are closed: their node was lost (cluster).
    Orphaned(CameraId, Timestamp),
    Stop,
}

/// Events the router's queue holds. The router takes up to [`BATCH`] at a time into one transaction, so
/// this is several transactions of slack: room for a burst, small enough to be a few MB at most.
pub const QUEUE: usize = 4096;

/// Starts the alert router.
pub struct AlertService;

/// How [`AlertService::start_with`] runs the router beyond its configuration.
pub struct ServiceOptions {
    /// Events the queue in front of the router holds (at least 1).
    pub queue: usize,
    /// Where a delivery's incidents are claimed before it is sent ([`LocalClaims`]: one router alone).
    pub claims: Arc<dyn Claims>,
    /// For a router that sees only some events of each incident (several routers sharing a stream): the
    /// close of an incident never seen open is recorded, so a late event of it is not taken as new.
    pub remember_unknown_closes: bool,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            queue: QUEUE,
            claims: Arc::new(LocalClaims),
            remember_unknown_closes: false,
        }
    }
}

impl AlertService {
    /// Validates `config`, opens `db_path` (creating the alert tables), restores state left by a previous run,
    /// and starts the router thread, the notifier and (if configured) the delivery-report listener.
    pub fn start(
        config: AlertConfig,
        db_path: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<AlertHandle, AlertError> {
        Self::start_with(config, db_path, clock, ServiceOptions::default())
    }

    /// [`start`](Self::start) with `options`.
    pub fn start_with(
        config: AlertConfig,
        db_path: &Path,
        clock: Arc<dyn Clock>,
        options: ServiceOptions,
    ) -> Result<AlertHandle, AlertError> {
        let queue = options.queue;
        let mut config = config;
        config.resolve_files(db_path.parent().unwrap_or(Path::new(".")));
        let mut router = Router::open(&config, db_path, clock.now())?;
        router.remember_unknown_closes(options.remember_unknown_closes);
        let cfg = Arc::new(config);
        let wake = Arc::new(Notify::new());
        let (dlr_listener, dlr_base) = match &cfg.dlr {
            Some(d) => {
                let l = std::net::TcpListener::bind(d.listen)
                    .map_err(|e| AlertError::Config(format!("dlr.listen {}: {e}", d.listen)))?;
                l.set_nonblocking(true)
                    .map_err(|e| AlertError::Service(e.to_string()))?;
                let addr = l
                    .local_addr()
                    .map_err(|e| AlertError::Service(e.to_string()))?;
                let base = d
                    .public_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{addr}"));
                (
                    Some((l, addr)),
                    Some(base.trim_end_matches('/').to_string()),
                )
            }
            None => (None, None),
        };
        let notify_db = store::open_with(db_path, store::Sync::Normal)?;
        let keys = store::keys(&notify_db)?;
        let dlr_links = dlr_base.map(|b| deliver::dlr::Links::new(b, keys.clone()));
        let notifier = Arc::new(deliver::notify::Notifier::new(
            notify_db,
            cfg.clone(),
            clock.clone(),
            wake.clone(),
            dlr_links,
            options.claims,
        )?);
        let deliveries = notifier.counters();
        let dlr_db = match dlr_listener {
            Some(_) => Some(store::open_with(db_path, store::Sync::Normal)?),
            None => None,
        };
        let dlr_limits = cfg.dlr.as_ref().map(|d| deliver::dlr::Limits {
            header_timeout: d.header_timeout.std(),
            max_connections: d.max_connections,
        });
        let dlr_addr = dlr_listener.as_ref().map(|(_, a)| *a);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("alert-notify")
            .enable_all()
            .build()
            .map_err(|e| AlertError::Service(format!("tokio runtime: {e}")))?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let runtime_handle = runtime.handle().clone();
        let dlr_clock = clock.clone();
        // Not started yet: an async fn runs when the runtime first polls it.
        let dlr_server = dlr_listener
            .zip(dlr_db)
            .zip(dlr_limits)
            .map(|(((l, _), db), limits)| {
                deliver::dlr::serve(l, db, keys, dlr_clock, limits, stop_rx.clone())
            });
        let notify_thread = std::thread::Builder::new()
            .name("alert-notify".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let dlr = dlr_server.map(tokio::spawn);
                    notifier.run(stop_rx).await;
                    if let Some(h) = dlr {
                        let _ = h.await;
                    }
                });
                // A delivery report's SQLite write still waiting on a lock must not hold shutdown: it
                // commits or not on its own, and one not recorded leaves the SMS `accepted`, as if the
                // report had never come.
                runtime.shutdown_timeout(SHUTDOWN_GRACE);
            })
            .map_err(|e| AlertError::Service(e.to_string()))?;
        let (tx, rx) = channel::bounded(queue.max(1));
        let shutdown_timeout = cfg.shutdown_timeout.std();
        let stopping = Arc::new(AtomicBool::new(false));
        let router_stopping = stopping.clone();
        let router_thread = std::thread::Builder::new()
            .name("alert-router".into())
            .spawn(move || run_router(router, rx, clock, wake, shutdown_timeout, &router_stopping))
            .map_err(|e| AlertError::Service(e.to_string()))?;
        Ok(AlertHandle {
            tx,
            stopping,
            stats: QueueCounters::default(),
            deliveries,
            stop: stop_tx,
            threads: vec![router_thread, notify_thread],
            dlr_addr,
            runtime: runtime_handle,
        })
    }
}

/// How long shutdown waits for blocking database work still running on the notifier's runtime.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Longest the router thread sleeps without looking at the clock (a ManualClock may jump).
const ROUTER_POLL: Duration = Duration::from_millis(100);
/// Events taken into one transaction at most.
const BATCH: usize = 512;
/// Wait between attempts when the database refuses a write.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

fn run_router(
    mut router: Router,
    rx: Receiver<Msg>,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    shutdown_timeout: Duration,
    stopping: &AtomicBool,
) {
    let mut pending: Vec<IncidentEvent> = Vec::new();
    // Told once `pending` has committed.
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    // Set when asked to stop: the router then records what is queued, but not past this instant.
    let mut stop_by: Option<Instant> = None;
    loop {
        let now = clock.now();
        let wait = router
            .next_deadline()
            .map(|d| Duration::from_millis(d.since(now).max(0) as u64))
            .unwrap_or(ROUTER_POLL)
            .min(ROUTER_POLL);
        let mut stop = false;
        let first = if pending.is_empty() && stop_by.is_none() {
            rx.recv_timeout(wait)
        } else {
            Err(RecvTimeoutError::Timeout)
        };
        match first {
            Ok(m) => {
                let mut next = Some(m);
                while let Some(m) = next.take() {
                    match m {
                        Msg::Event(ev, done) => {
                            pending.push(*ev);
                            waiting.extend(done);
                        }
                        Msg::Health(cam, h) => router.set_camera_health(&cam, h),
                        Msg::Orphaned(cam, before) => {
                            pending.extend(router.orphan_closes(&cam, before, clock.now()));
                        }
                        Msg::Stop => stop = true,
                    }
                    if !stop && pending.len() < BATCH {
                        next = rx.try_recv().ok();
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => stop = true,
            Err(RecvTimeoutError::Timeout) => {}
        }
        stop |= stopping.load(Ordering::Acquire);
        if stop && stop_by.is_none() {
            stop_by = Some(Instant::now() + shutdown_timeout);
            // A database locked by another writer must not hold a statement past the deadline either.
            router.limit_busy_wait(shutdown_timeout);
        }
        let pause = || {
            let left = stop_by.map_or(RETRY_PAUSE, |by| {
                by.saturating_duration_since(Instant::now())
            });
            std::thread::sleep(RETRY_PAUSE.min(left));
        };
        if !pending.is_empty() {
            match router.submit_batch(&pending, clock.now()) {
                Ok(_) => {
                    pending.clear();
                    for done in waiting.drain(..) {
                        let _ = done.send(());
                    }
                }
                Err(e) => {
                    // Nothing of the batch took effect, in the database or in memory: keep it and retry.
                    tracing::error!(error = %e, events = pending.len(), "alert router: cannot record events; retrying");
                    pause();
                }
            }
        }
        match router.tick(clock.now()) {
            Ok(ids) if !ids.is_empty() => wake.notify_one(),
            Ok(_) => {}
            Err(e) => {
                // The groups stay due (memory follows commits only): the next tick retries.
                tracing::error!(error = %e, "alert router: cannot record notices; retrying");
                pause();
            }
        }
        let Some(by) = stop_by else { continue };
        if pending.is_empty() {
            return;
        }
        if Instant::now() >= by {
            let incidents: Vec<String> =
                pending.iter().take(20).map(|e| e.key.to_string()).collect();
            tracing::error!(
                events = pending.len(),
                ?incidents,
                "alert router: stopped after {shutdown_timeout:?} with events it could not record; \
                 the next start hands their incidents over again from the incidents table"
            );
            return;
        }
    }
}

/// What the bounded queue in front of the router did with events it had no room for, since the start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// `updated` events dropped because the queue was full.
    pub dropped_updates: u64,
    /// `opened` / `closed` events handed back by [`AlertHandle::offer`] for the caller to replay.
    pub spilled: u64,
}

#[derive(Default)]
struct QueueCounters {
    dropped_updates: AtomicU64,
    spilled: AtomicU64,
}

/// What [`AlertHandle::offer`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handed {
    Queued,
    /// An `updated` event met a full queue and was dropped (counted).
    DroppedUpdate,
    /// An `opened` or `closed` event found no room within the wait: the caller must replay it.
    Spilled,
    /// The router is not running.
    Stopped,
}

/// The running alert service. Dropping it shuts it down.
pub struct AlertHandle {
    tx: Sender<Msg>,
    /// Set before `Msg::Stop` is queued: a router retrying a failed batch reads no messages, so the flag is
    /// what it sees.
    stopping: Arc<AtomicBool>,
    stats: QueueCounters,
    deliveries: Arc<deliver::notify::DeliveryCounters>,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
    dlr_addr: Option<SocketAddr>,
    runtime: tokio::runtime::Handle,
}

impl AlertHandle {
    /// Queues an incident event. An `updated` event that finds the queue full is dropped and counted; an
    /// `opened` or `closed` one waits for room, so it is never lost.
    pub fn submit(&self, event: IncidentEvent) {
        if self.hand(event, None) == Handed::Stopped {
            tracing::error!("alert router is not running; incident event dropped");
        }
    }

    /// Queues an event that the caller has committed elsewhere: as [`submit`](Self::submit), but an `opened` or
    /// `closed` event that finds no room within `wait` is handed back ([`Handed::Spilled`], counted) rather than
    /// blocking the caller longer; the caller replays it when [`has_room`](Self::has_room).
    pub fn offer(&self, event: IncidentEvent, wait: Duration) -> Handed {
        self.hand(event, Some(wait))
    }

    /// Queues an event whatever its phase (waiting for room, so it blocks while the queue is full) and
    /// returns what resolves once the transaction recording it has committed: with it, the alert's new
    /// state, from which its notices are decided and restored after a crash. An event judged a duplicate
    /// resolves too. If the router stops before recording it, the receiver ends without a value.
    pub fn submit_committed(
        &self,
        event: IncidentEvent,
    ) -> Result<oneshot::Receiver<()>, AlertError> {
        let (done, committed) = oneshot::channel();
        self.tx
            .send(Msg::Event(Box::new(event), Some(done)))
            .map_err(|_| AlertError::Service("alert router is not running".into()))?;
        Ok(committed)
    }

    fn hand(&self, event: IncidentEvent, wait: Option<Duration>) -> Handed {
        let update = event.phase == IncidentPhase::Updated;
        let msg = Msg::Event(Box::new(event), None);
        let sent = match (update, wait) {
            (true, _) => self.tx.try_send(msg).map_err(|e| match e {
                TrySendError::Full(_) => Handed::DroppedUpdate,
                TrySendError::Disconnected(_) => Handed::Stopped,
            }),
            (false, Some(wait)) => self.tx.send_timeout(msg, wait).map_err(|e| match e {
                SendTimeoutError::Timeout(_) => Handed::Spilled,
                SendTimeoutError::Disconnected(_) => Handed::Stopped,
            }),
            (false, None) => self.tx.send(msg).map_err(|_| Handed::Stopped),
        };
        let handed = sent.err().unwrap_or(Handed::Queued);
        let counter = match handed {
            Handed::DroppedUpdate => &self.stats.dropped_updates,
            Handed::Spilled => &self.stats.spilled,
            _ => return handed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        handed
    }

    /// True while the queue is at most half full: a good time to replay spilled events.
    pub fn has_room(&self) -> bool {
        self.tx.len() * 2 <= self.tx.capacity().unwrap_or(usize::MAX)
    }

    pub fn queue_stats(&self) -> QueueStats {
        QueueStats {
            dropped_updates: self.stats.dropped_updates.load(Ordering::Relaxed),
            spilled: self.stats.spilled.load(Ordering::Relaxed),
        }
    }

    /// Events and health changes waiting in the queue in front of the router, and the queue's capacity.
    pub fn queue_depth(&self) -> (usize, usize) {
        (self.tx.len(), self.tx.capacity().unwrap_or(usize::MAX))
    }

    /// How delivery attempts ended since the start, per configured receiver and channel.
    pub fn delivery_stats(&self) -> Vec<DeliveryStats> {
        self.deliveries.read()
    }

    /// Reports a camera's health: while `Down` or `Maintenance`, its rule alerts are muted. Waits for room
    /// in the queue: a change of health is rare and must not be lost.
    pub fn camera_health(&self, camera: &CameraId, health: CameraHealth) {
        let _ = self.tx.send(Msg::Health(camera.clone(), health));
    }

    /// Closes the alerts of `camera` that started before `before`, as their incidents' closes would: in a
    /// cluster, the node that ran the camera then was lost and another node runs it now, which starts its
    /// rules afresh, so nothing else would ever close them (they would fire, repeat and inhibit for good).
    /// Waits for room in the queue, like a change of health.
    pub fn close_orphaned(&self, camera: &CameraId, before: Timestamp) {
        let _ = self.tx.send(Msg::Orphaned(camera.clone(), before));
    }

    /// The service's tokio runtime, for other network work of the process (the operations-centre server).
    /// It runs until the service shuts down.
    pub fn runtime(&self) -> tokio::runtime::Handle {
        self.runtime.clone()
    }

    /// Where the delivery-report listener listens, if configured.
    pub fn dlr_addr(&self) -> Option<SocketAddr> {
        self.dlr_addr
    }

    /// Records the events already submitted (trying for at most `shutdown_timeout`), stops the router, and
    /// gives attempts in flight a few seconds to finish (any still running are resumed at the next start).
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.tx.send(Msg::Stop);
        let mut threads = std::mem::take(&mut self.threads).into_iter();
        if let Some(router) = threads.next() {
            let _ = router.join();
        }
        let _ = self.stop.send(true);
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for AlertHandle {
    fn drop(&mut self) {
        self.stop_all();
    }
}
