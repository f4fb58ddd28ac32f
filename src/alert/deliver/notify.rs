//! Notifier: takes due deliveries from the outbox and sends them, each receiver with its own concurrency
//! and rate limit, retrying transient failures with backoff and dead-lettering permanent ones. Each
//! receiver's due deliveries are fetched on their own, so one receiver's backlog delays no other; the
//! SQLite work runs on blocking threads, so a lock held elsewhere delays no send in flight.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::types::Clock;

use super::email::Mailer;
use super::{Outcome, dlr, log, outbox, sms, webhook};
use crate::alert::claims::{self, Claimed, Claims, Verdict};
use crate::alert::config::AlertConfig;
use crate::alert::error::AlertError;
use crate::alert::store::DeliveryRow;
use crate::alert::wording::template::Ctx;

/// How the attempts of one receiver's channel ended, since the start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryStats {
    pub receiver: String,
    /// `sms`, `email` or `webhook`.
    pub channel: &'static str,
    /// The peer took the notice (accepted, or queued by the gateway).
    pub sent: u64,
    /// A transient failure: the delivery is tried again.
    pub failed: u64,
    /// A permanent failure: the delivery is dead-lettered.
    pub dead_lettered: u64,
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
}

/// Attempt outcomes per configured receiver and channel, counted by the notifier with atomics: the set is
/// fixed by the configuration, so it needs no lock and stays bounded.
pub(crate) struct DeliveryCounters {
    by_receiver: Vec<(String, Vec<(&'static str, Counts)>)>,
}

impl DeliveryCounters {
    fn new(cfg: &AlertConfig) -> Self {
        let by_receiver = cfg
            .receivers
            .iter()
            .map(|r| {
                let channels = [
                    ("sms", r.sms.is_some()),
                    ("email", r.email.is_some()),
                    ("webhook", r.webhook.is_some()),
                ];
                let counts = channels
                    .into_iter()
                    .filter(|&(_, on)| on)
                    .map(|(c, _)| (c, Counts::default()))
                    .collect();
                (r.name.clone(), counts)
            })
            .collect();
        Self { by_receiver }
    }

    /// Counts one attempt; one for a receiver or channel no longer configured is not counted.
    fn count(&self, receiver: &str, channel: &str, outcome: &Outcome) {
        let counts = self
            .by_receiver
            .iter()
            .find(|(r, _)| r == receiver)
            .and_then(|(_, cs)| cs.iter().find(|(c, _)| *c == channel));
        let Some((_, c)) = counts else { return };
        let counter = match outcome {
            Outcome::Accepted { .. } => &c.sent,
            Outcome::Transient { .. } => &c.failed,
            Outcome::Permanent(_) => &c.dead_lettered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> Vec<DeliveryStats> {
        self.by_receiver
            .iter()
            .flat_map(|(receiver, cs)| {
                cs.iter().map(|(channel, c)| DeliveryStats {
                    receiver: receiver.clone(),
                    channel,
                    sent: c.sent.load(Ordering::Relaxed),
                    failed: c.failed.load(Ordering::Relaxed),
                    dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
                })
            })
            .collect()
    }
}

/// Token bucket: `rate` starts per second, bursts of up to `max(rate, 1)`.
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// Takes a token, or says how long until one is free.
    fn take(&mut self) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let cap = self.rate.max(1.0);
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(cap);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            // Validation keeps the rate at one a day or more; saturate rather than panic regardless.
            Err(Duration::try_from_secs_f64((1.0 - self.tokens) / self.rate)
                .unwrap_or(Duration::MAX))
        }
    }
}

struct Limit {
    slots: Arc<Semaphore>,
    bucket: Mutex<Bucket>,
}

pub(crate) struct Notifier {
    db: Arc<Mutex<Connection>>,
    cfg: Arc<AlertConfig>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    mailers: HashMap<String, Mailer>,
    limits: HashMap<String, Limit>,
    wake: Arc<Notify>,
    dlr: Option<dlr::Links>,
    counters: Arc<DeliveryCounters>,
    /// Asked before each send: which of the delivery's incidents this router may tell.
    claims: Arc<dyn Claims>,
}

/// Without news, look for due retries this often.
const POLL: Duration = Duration::from_millis(200);
/// On shutdown, wait this long for attempts in flight before leaving them to crash recovery.
const DRAIN: Duration = Duration::from_secs(5);
/// How often to look for deliveries of receivers no longer configured (at start, then this often): the
/// query reads every pending delivery, too much for each round during a backlog.
const SWEEP: Duration = Duration::from_secs(30);

impl Notifier {
    pub(crate) fn new(
        db: Connection,
        cfg: Arc<AlertConfig>,
        clock: Arc<dyn Clock>,
        wake: Arc<Notify>,
        dlr: Option<dlr::Links>,
        claims: Arc<dyn Claims>,
    ) -> Result<Self, AlertError> {
        let mut mailers = HashMap::new();
        let mut limits = HashMap::new();
        for r in &cfg.receivers {
            if let Some(e) = &r.email {
                mailers.insert(r.name.clone(), Mailer::new(&r.name, e)?);
            }
            limits.insert(
                r.name.clone(),
                Limit {
                    slots: Arc::new(Semaphore::new(r.max_concurrency)),
                    bucket: Mutex::new(Bucket {
                        rate: r.rate_per_second,
                        tokens: r.rate_per_second.max(1.0),
                        last: Instant::now(),
                    }),
                },
            );
        }
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| AlertError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            db: Arc::new(Mutex::new(db)),
            counters: Arc::new(DeliveryCounters::new(&cfg)),
            cfg,
            clock,
            http,
            mailers,
            limits,
            wake,
            dlr,
            claims,
        })
    }

    /// The attempt outcomes counted so far, shared.
    pub(crate) fn counters(&self) -> Arc<DeliveryCounters> {
        self.counters.clone()
    }

    /// Runs `f` on the notifier's connection on a blocking thread. Another connection's write transaction
    /// (the CLI, the incident store, a backup) makes a write here wait up to busy_timeout; on one of the
    /// runtime's two threads that wait would stall every send in flight and the delivery-report listener.
    async fn on_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, AlertError> + Send + 'static,
    ) -> Result<T, AlertError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection usable (every write is one transaction).
            f(&mut db.lock().unwrap_or_else(|p| p.into_inner()))
        })
        .await
        .map_err(|e| AlertError::Service(format!("alert outbox task: {e}")))?
    }

    pub(crate) async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let now = self.clock.now();
        match self
            .on_db(move |db| outbox::recover_interrupted(db, now))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                deliveries = n,
                "resuming deliveries interrupted by a crash; each may duplicate"
            ),
            Err(e) => tracing::error!(error = %e, "alert outbox: crash recovery failed"),
        }
        let mut tasks = JoinSet::new();
        let mut next_sweep = Instant::now();
        while !*stop.borrow() {
            while tasks.try_join_next().is_some() {}
            if Instant::now() >= next_sweep {
                self.sweep_unconfigured().await;
                next_sweep = Instant::now() + SWEEP;
            }
            let wait = self.dispatch(&mut tasks).await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "alert outbox: dispatch failed");
                POLL
            });
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
        let _ =
            tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
    }

    /// Dead-letters what waits for a receiver that left the config: nothing could ever send it.
    async fn sweep_unconfigured(&self) {
        let names: Vec<String> = self.limits.keys().cloned().collect();
        let now = self.clock.now();
        match self
            .on_db(move |db| outbox::dead_letter_unconfigured(db, &names, now))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                deliveries = n,
                "dead-lettered deliveries for receivers no longer configured"
            ),
            Err(e) => {
                tracing::error!(error = %e, "alert outbox: cannot dead-letter deliveries of removed receivers")
            }
        }
    }

    /// Starts every due delivery its receiver has room for; returns how long to wait before looking again.
    async fn dispatch(self: &Arc<Self>, tasks: &mut JoinSet<()>) -> Result<Duration, AlertError> {
        let now = self.clock.now();
        // Each receiver's own oldest due deliveries, as many as it has free slots: an SMS gateway down
        // for an hour must not hold back the e-mail and webhooks decided since.
        let room: Vec<(String, usize)> = self
            .limits
            .iter()
            .map(|(name, l)| (name.clone(), l.slots.available_permits()))
            .filter(|&(_, free)| free > 0)
            .collect();
        let (due, next) = self
            .on_db(move |db| {
                let mut due = Vec::new();
                for (receiver, free) in &room {
                    due.extend(outbox::due_for(db, receiver, now, *free)?);
                }
                Ok((due, outbox::next_due(db, now)?))
            })
            .await?;
        let mut wait = POLL;
        if let Some(next) = next {
            let ms = next.since(self.clock.now()).max(0) as u64;
            wait = wait.min(Duration::from_millis(ms));
        }
        let mut ready = Vec::new();
        for d in due {
            let limit = &self.limits[&d.receiver];
            let Ok(permit) = limit.slots.clone().try_acquire_owned() else {
                continue;
            };
            if let Err(until) = limit
                .bucket
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                wait = wait.min(until);
                continue;
            }
            ready.push((d, permit));
        }
        if !ready.is_empty() {
            let ids: Vec<i64> = ready.iter().map(|(d, _)| d.id).collect();
            let claimed = self.on_db(move |db| outbox::claim(db, &ids, now)).await?;
            for ((d, permit), ok) in ready.into_iter().zip(claimed) {
                if ok {
                    tasks.spawn(self.clone().deliver(d, permit));
                }
            }
        }
        Ok(wait.max(Duration::from_millis(1)))
    }

    /// Claims the delivery's incidents. `Ok(true)`: send `d` (its text narrowed to the incidents won, if
    /// another router told some); `Ok(false)`: another router told them all, recorded as suppressed;
    /// `Err`: the claims could not be made, so it is not sent now.
    async fn claim(&self, d: &mut DeliveryRow) -> Result<bool, Outcome> {
        let db_error = |e: AlertError| Outcome::Transient {
            error: format!("reading the notice to claim it: {e}"),
            maybe_sent: false,
        };
        let notice = d.notice_id;
        let Some((decided_at, payload)) = self
            .on_db(move |db| outbox::notice_payload(db, notice))
            .await
            .map_err(db_error)?
        else {
            return Ok(true);
        };
        let to = claims::Target {
            receiver: &d.receiver,
            channel: &d.channel,
            target: &d.target,
        };
        let wanted = claims::claims_for(&payload, &to);
        let (mut won, mut holders) = (BTreeSet::new(), BTreeSet::new());
        for c in &wanted {
            match self.claims.claim(&c.key).await {
                Ok(Claimed::Won) => {
                    won.insert(c.incident.clone());
                }
                Ok(Claimed::Held(by)) => {
                    holders.insert(by);
                }
                Err(e) => {
                    return Err(Outcome::Transient {
                        error: e.to_string(),
                        maybe_sent: false,
                    });
                }
            }
        }
        let now = self.clock.now();
        match claims::verdict(&payload, &wanted, &won, &holders) {
            Verdict::Send => Ok(true),
            Verdict::Suppressed(reason) => {
                tracing::info!(delivery = d.id, notice = d.notice_id, receiver = %d.receiver, channel = %d.channel, %reason, "notice not sent: another router told it");
                let id = d.id;
                self.on_db(move |db| outbox::suppress(db, id, &reason, now))
                    .await
                    .map_err(db_error)?;
                Ok(false)
            }
            Verdict::Narrowed(narrow) => {
                let ctx = Ctx {
                    notice_id: d.notice_id,
                    offset_minutes: self.cfg.utc_offset_minutes,
                    link_base: self.cfg.snapshot_base_url.as_deref(),
                    created_at: decided_at,
                };
                let Some(rendered) = self.cfg.receiver(&d.receiver).and_then(|r| {
                    outbox::deliveries_for(r, &narrow, &ctx)
                        .into_iter()
                        .find(|n| n.channel == d.channel && n.target == d.target)
                }) else {
                    // The receiver or channel left the config: sending fails below as it would have.
                    return Ok(true);
                };
                let left = narrow.firing.len() + narrow.resolved.len();
                let by: Vec<&str> = holders.iter().map(String::as_str).collect();
                let detail = format!(
                    "narrowed to the {left} incident(s) not already told by {}",
                    by.join(", ")
                );
                let (id, body, segments) = (d.id, rendered.body.clone(), rendered.segments);
                self.on_db(move |db| outbox::narrow(db, id, &body, segments, &detail, now))
                    .await
                    .map_err(db_error)?;
                d.body = rendered.body;
                d.segments = rendered.segments;
                Ok(true)
            }
        }
    }

    async fn deliver(self: Arc<Self>, mut d: DeliveryRow, _slot: OwnedSemaphorePermit) {
        let outcome = match self.claim(&mut d).await {
            Ok(true) => self.send(&d).await,
            Ok(false) => {
                self.wake.notify_one();
                return;
            }
            Err(outcome) => outcome,
        };
        self.record(d, outcome).await;
    }

    async fn send(&self, d: &DeliveryRow) -> Outcome {
        let receiver = self.cfg.receiver(&d.receiver);
        match (d.channel.as_str(), receiver) {
            ("sms", Some(r)) if r.sms.is_some() => {
                let cfg = r.sms.as_ref().expect("checked by the guard");
                let dlr = self.dlr.as_ref().map(|l| l.url(d.id));
                sms::send(&self.http, cfg, &d.target, &d.body, dlr.as_deref()).await
            }
            ("email", Some(_)) if self.mailers.contains_key(&d.receiver) => {
                self.mailers[&d.receiver]
                    .send(&d.body, &d.idempotency_key)
                    .await
            }
            ("webhook", Some(r)) if r.webhook.is_some() => {
                let cfg = r.webhook.as_ref().expect("checked by the guard");
                webhook::send(
                    &self.http,
                    cfg,
                    &d.body,
                    &d.idempotency_key,
                    self.clock.now(),
                )
                .await
            }
            ("log", Some(r)) if r.log.is_some() => {
                let cfg = r.log.as_ref().expect("checked by the guard");
                log::send(cfg, d.id, d.notice_id, &d.body).await
            }
            (channel, _) => Outcome::Permanent(format!(
                "receiver {:?} has no {channel} channel any more",
                d.receiver
            )),
        }
    }

    /// Counts, logs and records how an attempt ended.
    async fn record(self: Arc<Self>, d: DeliveryRow, outcome: Outcome) {
        self.counters.count(&d.receiver, &d.channel, &outcome);
        match &outcome {
            Outcome::Accepted { state, .. } => {
                tracing::info!(delivery = d.id, notice = d.notice_id, receiver = %d.receiver, channel = %d.channel, state, "notice sent")
            }
            Outcome::Transient { error, .. } => {
                tracing::warn!(delivery = d.id, receiver = %d.receiver, channel = %d.channel, %error, "delivery failed; will retry")
            }
            Outcome::Permanent(reason) => {
                tracing::error!(delivery = d.id, receiver = %d.receiver, channel = %d.channel, %reason, "delivery dead-lettered")
            }
        }
        let id = d.id;
        let attempt = Arc::new((d, outcome));
        for tries in 1..=5u64 {
            let (me, attempt) = (self.clone(), attempt.clone());
            let now = self.clock.now();
            let recorded = self
                .on_db(move |db| outbox::finish(db, &attempt.0, &attempt.1, &me.cfg.retry, now))
                .await;
            let Err(e) = recorded else { break };
            tracing::error!(delivery = id, error = %e, "alert outbox: cannot record a delivery outcome");
            // After the last try the row stays `sending`: crash recovery resends it at the next start.
            if tries < 5 {
                tokio::time::sleep(Duration::from_millis(200 * tries)).await;
            }
        }
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_rate_waits_long_instead_of_panicking() {
        let mut b = Bucket {
            rate: 1e-20,
            tokens: 1.0,
            last: Instant::now(),
        };
        assert!(b.take().is_ok());
        let wait = b.take().unwrap_err();
        assert!(wait >= Duration::from_secs(365 * 86_400), "{wait:?}");
    }
}
