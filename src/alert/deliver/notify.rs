//! Notifier: takes due deliveries from the outbox and sends them, each receiver with its own concurrency
//! and rate limit, retrying transient failures with backoff and dead-lettering permanent ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::types::Clock;

use super::email::Mailer;
use super::{Outcome, dlr, outbox, sms, webhook};
use crate::alert::config::AlertConfig;
use crate::alert::error::AlertError;
use crate::alert::store::DeliveryRow;

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
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

struct Limit {
    slots: Arc<Semaphore>,
    bucket: Mutex<Bucket>,
}

pub(crate) struct Notifier {
    db: Mutex<Connection>,
    cfg: Arc<AlertConfig>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    mailers: HashMap<String, Mailer>,
    limits: HashMap<String, Limit>,
    wake: Arc<Notify>,
    dlr: Option<dlr::Links>,
}

/// Without news, look for due retries this often.
const POLL: Duration = Duration::from_millis(200);
/// On shutdown, wait this long for attempts in flight before leaving them to crash recovery.
const DRAIN: Duration = Duration::from_secs(5);

impl Notifier {
    pub(crate) fn new(
        db: Connection,
        cfg: Arc<AlertConfig>,
        clock: Arc<dyn Clock>,
        wake: Arc<Notify>,
        dlr: Option<dlr::Links>,
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
            db: Mutex::new(db),
            cfg,
            clock,
            http,
            mailers,
            limits,
            wake,
            dlr,
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable (every write is one transaction).
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        match outbox::recover_interrupted(&mut self.db(), self.clock.now()) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                deliveries = n,
                "resuming deliveries interrupted by a crash; each may duplicate"
            ),
            Err(e) => tracing::error!(error = %e, "alert outbox: crash recovery failed"),
        }
        let mut tasks = JoinSet::new();
        while !*stop.borrow() {
            while tasks.try_join_next().is_some() {}
            let wait = self.dispatch(&mut tasks).unwrap_or_else(|e| {
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

    /// Starts every due delivery its receiver has room for; returns how long to wait before looking again.
    fn dispatch(self: &Arc<Self>, tasks: &mut JoinSet<()>) -> Result<Duration, AlertError> {
        let now = self.clock.now();
        // Enough rows to fill every free slot; the rest wait in the table, not in memory.
        let due = outbox::due(&self.db(), now, 256)?;
        let mut wait = POLL;
        for d in due {
            let Some(limit) = self.limits.get(&d.receiver) else {
                let reason = format!("receiver {:?} is no longer configured", d.receiver);
                outbox::dead_letter(&self.db(), d.id, now, &reason)?;
                continue;
            };
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
            if outbox::mark_sending(&self.db(), d.id, now)? {
                tasks.spawn(self.clone().deliver(d, permit));
            }
        }
        if let Some(next) = outbox::next_due(&self.db(), now)? {
            let ms = next.since(self.clock.now()).max(0) as u64;
            wait = wait.min(Duration::from_millis(ms));
        }
        Ok(wait.max(Duration::from_millis(1)))
    }

    async fn deliver(self: Arc<Self>, d: DeliveryRow, _slot: OwnedSemaphorePermit) {
        let receiver = self.cfg.receiver(&d.receiver);
        let outcome = match (d.channel.as_str(), receiver) {
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
            (channel, _) => Outcome::Permanent(format!(
                "receiver {:?} has no {channel} channel any more",
                d.receiver
            )),
        };
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
        for tries in 1..=5u64 {
            let recorded = outbox::finish(
                &mut self.db(),
                &d,
                &outcome,
                &self.cfg.retry,
                self.clock.now(),
            );
            let Err(e) = recorded else { break };
            tracing::error!(delivery = d.id, error = %e, "alert outbox: cannot record a delivery outcome");
            // After the last try the row stays `sending`: crash recovery resends it at the next start.
            if tries < 5 {
                tokio::time::sleep(Duration::from_millis(200 * tries)).await;
            }
        }
        self.wake.notify_one();
    }
}
