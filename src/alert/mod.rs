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
//! With no receivers configured the router still decides: notices are recorded as `unrouted` (see
//! `streetwatch outbox list`) and logged, and nothing is sent.
//!
//! [`Router`] is the synchronous core (time is a parameter) for timeline tests and benchmarks;
//! [`AlertService`] runs it on a thread, with the notifier and the delivery-report listener on a tokio
//! runtime of its own, so callers need no runtime.

pub mod cli;
mod config;
mod decide;
mod deliver;
mod error;
mod model;
mod router;
mod store;
mod wording;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender};
use tokio::sync::{Notify, watch};

use crate::types::{CameraId, Clock, IncidentEvent};

pub use config::normalize_phone;
pub use config::{
    AlertConfig, ConfigError, DlrConfig, Dur, EmailConfig, FloodConfig, HttpMethod, InhibitConfig,
    InhibitRule, Matchers, ReceiverConfig, RetryConfig, RouteConfig, SmsCoding, SmsConfig,
    WebhookConfig,
};
pub use decide::dedup::Admission;
pub use decide::inhibit::CameraHealth;
pub use decide::silence::Silence;
pub use error::AlertError;
pub use model::{Alert, NoticeKind, NoticePayload};
pub use router::{Router, RouterStats};
pub use store::{AlertRow, DeliveryEvent, DeliveryRow, NoticeRow, Store};
pub use wording::gsm;

enum Msg {
    Event(Box<IncidentEvent>),
    Health(CameraId, CameraHealth),
    Stop,
}

/// Starts the alert router.
pub struct AlertService;

impl AlertService {
    /// Validates `config`, opens `db_path` (creating the alert tables), restores state left by a previous run,
    /// and starts the router thread, the notifier and (if configured) the delivery-report listener.
    pub fn start(
        config: AlertConfig,
        db_path: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<AlertHandle, AlertError> {
        let router = Router::open(&config, db_path, clock.now())?;
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
        let notifier = Arc::new(deliver::notify::Notifier::new(
            store::open_with(db_path, store::Sync::Normal)?,
            cfg.clone(),
            clock.clone(),
            wake.clone(),
            dlr_base,
        )?);
        let dlr_db = match dlr_listener {
            Some(_) => Some(store::open_with(db_path, store::Sync::Normal)?),
            None => None,
        };
        let dlr_addr = dlr_listener.as_ref().map(|(_, a)| *a);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("alert-notify")
            .enable_all()
            .build()
            .map_err(|e| AlertError::Service(format!("tokio runtime: {e}")))?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let dlr_clock = clock.clone();
        let notify_thread = std::thread::Builder::new()
            .name("alert-notify".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let dlr = dlr_listener.zip(dlr_db).map(|((l, _), db)| {
                        tokio::spawn(deliver::dlr::serve(l, db, dlr_clock, stop_rx.clone()))
                    });
                    notifier.run(stop_rx).await;
                    if let Some(h) = dlr {
                        let _ = h.await;
                    }
                });
            })
            .map_err(|e| AlertError::Service(e.to_string()))?;
        let (tx, rx) = channel::unbounded();
        let shutdown_timeout = cfg.shutdown_timeout.std();
        let router_thread = std::thread::Builder::new()
            .name("alert-router".into())
            .spawn(move || run_router(router, rx, clock, wake, shutdown_timeout))
            .map_err(|e| AlertError::Service(e.to_string()))?;
        Ok(AlertHandle {
            tx,
            stop: stop_tx,
            threads: vec![router_thread, notify_thread],
            dlr_addr,
        })
    }
}

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
) {
    let mut pending: Vec<IncidentEvent> = Vec::new();
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
                        Msg::Event(ev) => pending.push(*ev),
                        Msg::Health(cam, h) => router.set_camera_health(&cam, h),
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
                Ok(_) => pending.clear(),
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

/// The running alert service. Dropping it shuts it down.
pub struct AlertHandle {
    tx: Sender<Msg>,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
    dlr_addr: Option<SocketAddr>,
}

impl AlertHandle {
    /// Queues an incident event; never blocks.
    pub fn submit(&self, event: IncidentEvent) {
        if self.tx.send(Msg::Event(Box::new(event))).is_err() {
            tracing::error!("alert router is not running; incident event dropped");
        }
    }

    /// Reports a camera's health: while `Down` or `Maintenance`, its rule alerts are muted.
    pub fn camera_health(&self, camera: &CameraId, health: CameraHealth) {
        let _ = self.tx.send(Msg::Health(camera.clone(), health));
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
