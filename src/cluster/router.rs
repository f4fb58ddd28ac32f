//! The router's side of the cluster: incident events from the shared durable consumer into the alert
//! router, acknowledged only once committed; notices claimed in the claims bucket before they are sent;
//! incident closes shared between routers.
//!
//! Every router of a deployment pulls from one durable consumer, so each event goes to one of them and
//! the events of one incident may go to different routers. Two things make that safe:
//! - **claims** ([`JetStreamClaims`]): before a delivery is sent, each incident it tells is claimed per
//!   receiver, channel and target with `create` (compare-and-set on "no such key"); only the creator tells
//!   it (see `alert::claims`);
//! - **shared closes**: a router that commits a `closed` event also writes it to the claims bucket under
//!   `closed.<incident>`, and every router follows those keys and submits them to its own router, so the
//!   router that told the incident firing ends it and tells it resolved, whichever router got the close.
//!   (A router records a close of an incident it never saw open, so a late update of it is not news.)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::kv;
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, object_store};
use futures_util::StreamExt as _;
use tokio::io::AsyncReadExt as _;
use tokio::sync::watch;

use super::{Bus, ClusterError, Resources, snapshot_object, subject_token};
use crate::alert::{AlertHandle, ClaimError, ClaimFuture, Claimed, Claims};
use crate::types::{IncidentEvent, IncidentPhase};

/// The durable consumer every router of a deployment shares.
pub const DURABLE: &str = "routers";
/// How long a delivered event may go unacknowledged before the server gives it to another router: a
/// router that crashed holds its unacknowledged events this long at most.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// Events delivered and not yet acknowledged, across routers: a few of the router's batches.
pub const MAX_ACK_PENDING: i64 = 2048;
/// Events pulled at a time: they are committed together (the router batches what is queued).
const FETCH: usize = 256;
/// How long one pull waits for events when there are none.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// Waiting for a commit this long, the events' ack deadline is pushed back (in-progress acks).
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// Pause before trying NATS again after an error.
const RETRY: Duration = Duration::from_millis(500);

/// The key under which a committed close is shared with the other routers.
pub fn closed_key(incident: &str) -> String {
    format!("closed.{}", subject_token(incident))
}

/// The claims bucket as [`Claims`]: a key is won by creating it with this router's name; a key already
/// holding this router's name (a resend after a crash) is won again.
pub struct JetStreamClaims {
    store: kv::Store,
    name: String,
}

impl JetStreamClaims {
    pub fn new(store: kv::Store, name: impl Into<String>) -> Self {
        Self {
            store,
            name: name.into(),
        }
    }

    async fn claim_key(&self, key: &str) -> Result<Claimed, ClaimError> {
        let err = |e: &dyn std::fmt::Display| ClaimError(format!("claims bucket: {e}"));
        match self.store.create(key, self.name.clone().into()).await {
            Ok(_) => return Ok(Claimed::Won),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(&e)),
        }
        let holder = self.store.get(key).await.map_err(|e| err(&e))?;
        let holder = holder.map(|v| String::from_utf8_lossy(&v).into_owned());
        match holder {
            Some(h) if h == self.name => Ok(Claimed::Won),
            Some(h) => Ok(Claimed::Held(h)),
            // Expired between the two calls (after days): no holder to defer to, so try again later.
            None => Err(ClaimError(format!("claim {key} vanished while read"))),
        }
    }
}

impl Claims for JetStreamClaims {
    fn claim<'a>(&'a self, key: &'a str) -> ClaimFuture<'a> {
        Box::pin(self.claim_key(key))
    }
}

/// What the consumer did since it started, for logs, `/metrics` and benchmarks.
#[derive(Debug, Default)]
pub struct ConsumerCounts {
    /// Events committed by the router and acknowledged.
    pub committed: AtomicU64,
    /// Messages that were not incident events: terminated, never redelivered.
    pub malformed: AtomicU64,
    /// Events whose snapshot was not in the object store: routed without one.
    pub snapshots_missing: AtomicU64,
    /// Closes shared through the claims bucket by any router (this one too), submitted here.
    pub shared_closes: AtomicU64,
}

/// Where the consumer takes events from and puts them.
#[derive(Clone)]
pub struct Consumer {
    pub bus: Bus,
    pub resources: Resources,
    pub alerts: Arc<AlertHandle>,
    /// This router's snapshot folder: referenced pictures are fetched into it, so `/s/{token}` serves them.
    pub snapshots_dir: PathBuf,
    pub counts: Arc<ConsumerCounts>,
}

impl Consumer {
    /// Pulls events until `stop` turns true, then finishes the batch in hand (committed, acknowledged).
    /// Rides out NATS going away: nothing is acknowledged before its commit, so what is in flight is
    /// delivered again after [`ACK_WAIT`] and dropped by the router as a duplicate if it had committed.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut consumer = None;
        while !*stop.borrow() {
            let c = match &consumer {
                Some(c) => c,
                None => match self.consumer().await {
                    Ok(c) => consumer.insert(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "router: cannot open the incident consumer; retrying");
                        pause(&mut stop).await;
                        continue;
                    }
                },
            };
            let batch = tokio::select! {
                b = fetch(c) => b,
                _ = stop.changed() => continue,
            };
            match batch {
                Ok(messages) if messages.is_empty() => {}
                Ok(messages) => self.handle(messages).await,
                Err(e) => {
                    tracing::warn!(error = %e, "router: pulling incident events failed; retrying");
                    pause(&mut stop).await;
                }
            }
        }
    }

    async fn consumer(&self) -> Result<PullConsumer, ClusterError> {
        self.resources
            .incidents
            .create_consumer(pull::Config {
                durable_name: Some(DURABLE.into()),
                description: Some("streetwatch routers (shared)".into()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: MAX_ACK_PENDING,
                filter_subject: self.bus.names.incident_subjects(),
                ..Default::default()
            })
            .await
            .map_err(|e| ClusterError::jetstream(format!("consumer {DURABLE}"), e))
    }

    /// One pulled batch: decoded, snapshots fetched, submitted, committed, closes shared, acknowledged.
    async fn handle(&self, messages: Vec<jetstream::Message>) {
        let mut taken = Vec::with_capacity(messages.len());
        for msg in messages {
            let Some(mut event) = decode(&msg) else {
                self.counts.malformed.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = msg.ack_with(AckKind::Term).await {
                    tracing::warn!(error = %e, "router: cannot terminate a malformed message");
                }
                continue;
            };
            match self.fetch_snapshot(&mut event).await {
                Ok(()) => taken.push((msg, event)),
                Err(e) => {
                    // Not "missing": the store did not answer. Later, from this or another router.
                    tracing::warn!(incident = %event.key, error = %e, "router: cannot fetch a snapshot; event delivered again later");
                    let _ = msg.ack_with(AckKind::Nak(Some(RETRY * 4))).await;
                }
            }
        }
        if taken.is_empty() {
            return;
        }
        let events: Vec<IncidentEvent> = taken.iter().map(|(_, e)| e.clone()).collect();
        let alerts = self.alerts.clone();
        // Blocks while the router's queue is full.
        let submitted =
            tokio::task::spawn_blocking(move || -> Result<Vec<_>, crate::alert::AlertError> {
                events
                    .into_iter()
                    .map(|e| alerts.submit_committed(e))
                    .collect()
            })
            .await;
        let waits = match submitted {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "router: the alert router stopped; events left for another router");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "router: submitting events failed");
                return;
            }
        };
        let committed = futures_util::future::join_all(waits);
        tokio::pin!(committed);
        let results = loop {
            tokio::select! {
                r = &mut committed => break r,
                _ = tokio::time::sleep(PROGRESS_EVERY) => {
                    for (msg, _) in &taken {
                        let _ = msg.ack_with(AckKind::Progress).await;
                    }
                }
            }
        };
        for ((msg, event), result) in taken.iter().zip(results) {
            if result.is_err() {
                // The router stopped before recording it: not acknowledged, so another router takes it.
                continue;
            }
            if event.phase == IncidentPhase::Closed
                && let Err(e) = self.share_close(event).await
            {
                tracing::warn!(incident = %event.key, error = %e, "router: cannot share a close; event delivered again later");
                let _ = msg.ack_with(AckKind::Nak(Some(RETRY * 4))).await;
                continue;
            }
            match msg.ack().await {
                Ok(()) => {
                    self.counts.committed.fetch_add(1, Ordering::Relaxed);
                }
                // Committed already: a redelivery is dropped by the router as a duplicate.
                Err(e) => tracing::warn!(error = %e, "router: cannot acknowledge an event"),
            }
        }
    }

    /// Puts a referenced snapshot into this router's folder and points the event at it; an object not in
    /// the store is logged and the event goes on without a picture.
    async fn fetch_snapshot(&self, event: &mut IncidentEvent) -> Result<(), ClusterError> {
        let Some(name) = event.snapshot.as_deref().and_then(snapshot_object) else {
            return Ok(());
        };
        let name = name.to_string();
        if !is_plain_file_name(&name) {
            tracing::warn!(incident = %event.key, object = %name, "router: snapshot name is not a plain file name; routed without it");
            event.snapshot = None;
            return Ok(());
        }
        let path = self.snapshots_dir.join(&name);
        if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            let err =
                |e: &dyn std::fmt::Display| ClusterError::jetstream(format!("snapshot {name}"), e);
            let mut object = match self.resources.snapshots.get(&name).await {
                Ok(o) => o,
                Err(e) if e.kind() == object_store::GetErrorKind::NotFound => {
                    self.counts
                        .snapshots_missing
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(incident = %event.key, object = %name, "router: snapshot not in the object store; routed without it");
                    event.snapshot = None;
                    return Ok(());
                }
                Err(e) => return Err(err(&e)),
            };
            let mut bytes = Vec::new();
            object.read_to_end(&mut bytes).await.map_err(|e| err(&e))?;
            write_atomically(&path, &bytes).await.map_err(|e| err(&e))?;
        }
        event.snapshot = Some(path.display().to_string());
        Ok(())
    }

    async fn share_close(&self, event: &IncidentEvent) -> Result<(), ClusterError> {
        let value = serde_json::to_vec(event)
            .map_err(|e| ClusterError::jetstream("encoding a close", e))?;
        self.resources
            .claims
            .put(closed_key(&event.key.to_string()), value.into())
            .await
            .map_err(|e| ClusterError::jetstream("sharing a close", e))?;
        Ok(())
    }

    /// Submits every router's shared closes to this router, from the oldest kept, then as they come;
    /// after an interruption it resumes where it was. Ones it already knew, or never saw, change nothing.
    pub async fn follow_closes(self, mut stop: watch::Receiver<bool>) {
        let mut next_revision: Option<u64> = None;
        while !*stop.borrow() {
            let watched = match next_revision {
                None => self.resources.claims.watch_with_history("closed.>").await,
                Some(r) => {
                    self.resources
                        .claims
                        .watch_from_revision("closed.>", r)
                        .await
                }
            };
            let mut entries = match watched {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "router: cannot follow shared closes; retrying");
                    pause(&mut stop).await;
                    continue;
                }
            };
            loop {
                let entry = tokio::select! {
                    e = entries.next() => e,
                    _ = stop.changed() => return,
                };
                let entry = match entry {
                    Some(Ok(e)) => e,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "router: following shared closes failed; resuming");
                        break;
                    }
                    None => break,
                };
                next_revision = Some(entry.revision + 1);
                if entry.operation != kv::Operation::Put {
                    continue;
                }
                let Ok(event) = serde_json::from_slice::<IncidentEvent>(&entry.value) else {
                    tracing::warn!(key = %entry.key, "router: a shared close is not an incident event; ignored");
                    continue;
                };
                self.counts.shared_closes.fetch_add(1, Ordering::Relaxed);
                let alerts = self.alerts.clone();
                // A close waits for room in the router's queue rather than being lost.
                tokio::task::block_in_place(move || alerts.submit(event));
            }
            pause(&mut stop).await;
        }
    }
}

/// The next events: waits (up to [`FETCH_WAIT`]) for one, then takes what else is there without waiting,
/// so a lone event is not held back to fill a batch and a burst is still committed in batches.
async fn fetch(c: &PullConsumer) -> Result<Vec<jetstream::Message>, ClusterError> {
    let first = c.batch().max_messages(1).expires(FETCH_WAIT);
    let mut out = collect(first.messages().await, Vec::new()).await?;
    if !out.is_empty() {
        out = collect(c.fetch().max_messages(FETCH - 1).messages().await, out).await?;
    }
    Ok(out)
}

/// Appends a pull's messages to `out`; an error after some arrived ends the pull (the rest comes again).
async fn collect<E: std::fmt::Display, F: std::fmt::Display>(
    pulled: Result<pull::Batch, E>,
    mut out: Vec<jetstream::Message>,
) -> Result<Vec<jetstream::Message>, ClusterError>
where
    pull::Batch: futures_util::Stream<Item = Result<jetstream::Message, F>>,
{
    let err = |e: &dyn std::fmt::Display| ClusterError::jetstream("pulling incident events", e);
    let mut batch = match pulled {
        Ok(b) => b,
        Err(e) if out.is_empty() => return Err(err(&e)),
        Err(_) => return Ok(out),
    };
    while let Some(m) = batch.next().await {
        match m {
            Ok(m) => out.push(m),
            Err(e) if out.is_empty() => return Err(err(&e)),
            Err(_) => break,
        }
    }
    Ok(out)
}

/// The event in a message, or `None` (logged with its subject and stream sequence) when it is not one.
fn decode(msg: &jetstream::Message) -> Option<IncidentEvent> {
    match serde_json::from_slice::<IncidentEvent>(&msg.payload) {
        Ok(e) => Some(e),
        Err(e) => {
            let sequence = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
            tracing::error!(subject = %msg.subject, sequence, error = %e, "router: message is not an incident event; terminated");
            None
        }
    }
}

/// A name that stays inside the folder it is joined to.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\'])
        && Path::new(name).file_name().is_some_and(|f| f == name)
}

/// Writes `bytes` to `path` whole or not at all: a crash leaves no half picture for `/s/{token}`.
async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("part{}", std::process::id()));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, path).await
}

async fn pause(stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(RETRY) => {}
        _ = stop.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_stay_in_the_folder() {
        assert!(is_plain_file_name("cam-1_crowd_1700000000000.jpg"));
        for bad in ["", "..", ".hidden", "a/b.jpg", "../x.jpg", "a\\b.jpg"] {
            assert!(!is_plain_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn closes_are_keyed_by_incident_as_valid_kv_keys() {
        let k = closed_key("d1.cam 7/crowd/plaza/1700000000000");
        assert!(k.starts_with("closed."));
        assert!(
            k["closed.".len()..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{k}"
        );
        assert_ne!(k, closed_key("d1.cam 7/crowd/plaza/1700000000001"));
    }
}

/// How `streetwatch router` runs, beyond its configuration file.
#[derive(Clone, Debug)]
pub struct RouterOptions {
    /// This router's name in the cluster: what its claims hold. It must stay the same across restarts
    /// (a router resending after a crash knows its own claims by it) and differ between routers.
    pub name: String,
    /// Instead of the file's `[runtime] data_dir`.
    pub data_dir: Option<PathBuf>,
}

/// A running router: the alert service from `[alert]`, the operations-centre server from `[serve]` and the
/// consumer of the cluster's incident events from `[cluster]`.
pub struct RouterService {
    alerts: Arc<AlertHandle>,
    server: Option<crate::serve::Server>,
    /// Keeps the page's cameras current from the nodes' health records, and tells the alert router
    /// when a camera goes down (its rule alerts are muted) and comes back.
    health: super::health::HealthFollower,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    counts: Arc<ConsumerCounts>,
    _data_dir: crate::store::DataDirLock,
}

impl RouterService {
    /// Starts everything; `file` names the configuration in errors.
    pub fn start(
        config: &crate::config::Config,
        file: &Path,
        opts: RouterOptions,
        clock: Arc<dyn crate::types::Clock>,
    ) -> anyhow::Result<RouterService> {
        use anyhow::Context as _;
        let missing = |table: &str| {
            anyhow::anyhow!(
                "{}: `streetwatch router` needs a [{table}] table",
                file.display()
            )
        };
        let cluster = config.cluster.as_ref().ok_or_else(|| missing("cluster"))?;
        let alert = config.alert.clone().ok_or_else(|| missing("alert"))?;
        let data_dir = opts.data_dir.clone().unwrap_or_else(|| config.data_dir());
        let snapshots_dir = data_dir.join("snapshots");
        std::fs::create_dir_all(&snapshots_dir)
            .with_context(|| format!("creating {}", snapshots_dir.display()))?;
        // Before anything reads the store: a second process on the same folder fails at once.
        let lock = crate::store::DataDirLock::acquire(&data_dir)?;
        let db_path = data_dir.join("streetwatch.db");
        // The incidents tables the page and API read (a router records alerts, not incidents).
        crate::store::Store::open(&db_path)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("router-connect")
            .enable_all()
            .build()
            .context("starting a runtime to reach NATS")?;
        // The claims need the bucket before the alert service starts its notifier.
        let (bus, resources) = runtime.block_on(async {
            let bus = Bus::connect(cluster, &opts.name).await?;
            let resources = bus.ensure().await?;
            Ok::<_, ClusterError>((bus, resources))
        })?;
        let claims = Arc::new(JetStreamClaims::new(
            resources.claims.clone(),
            opts.name.clone(),
        ));
        let alerts = Arc::new(crate::alert::AlertService::start_with(
            alert,
            &db_path,
            clock.clone(),
            crate::alert::ServiceOptions {
                claims,
                remember_unknown_closes: true,
                ..Default::default()
            },
        )?);
        // The client keeps running on the runtime it was made on; hand that runtime to a thread that
        // lives as long as the process needs NATS.
        std::thread::Builder::new()
            .name("router-nats".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .context("starting the NATS thread")?;
        let cameras = camera_list(config);
        let health = super::health::HealthFollower::start(
            &resources,
            cameras.clone(),
            Some(alerts.clone()),
            super::health::FollowOptions {
                lease_ttl: bus.lease_ttl,
                camera_down_after: crate::app::RunOptions::default().camera_down_after,
            },
            clock.clone(),
            &alerts.runtime(),
        );
        let counts = Arc::new(ConsumerCounts::default());
        let server = match &config.serve {
            Some(serve) => Some(
                crate::serve::Server::start(
                    serve,
                    crate::serve::ServeContext {
                        db_path: db_path.clone(),
                        snapshots_dir: snapshots_dir.clone(),
                        cameras,
                        clock,
                        submit: None,
                        stats: crate::serve::PipelineStats {
                            alerts: Some(Arc::downgrade(&alerts)),
                            cluster: Some(health.view()),
                            consumer: Some(counts.clone()),
                            ..Default::default()
                        },
                    },
                    alerts.runtime(),
                )
                .context("starting the operations-centre server")?,
            ),
            None => None,
        };
        let consumer = Consumer {
            bus,
            resources,
            alerts: alerts.clone(),
            snapshots_dir,
            counts: counts.clone(),
        };
        let (stop, stopped) = watch::channel(false);
        let rt = alerts.runtime();
        let tasks = vec![
            rt.spawn(consumer.clone().run(stopped.clone())),
            rt.spawn(consumer.follow_closes(stopped)),
        ];
        tracing::info!(router = %opts.name, data = %data_dir.display(), "router started");
        Ok(RouterService {
            alerts,
            server,
            health,
            stop,
            tasks,
            counts,
            _data_dir: lock,
        })
    }

    /// Where the operations-centre server listens, if configured.
    pub fn server_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.as_ref().map(|s| s.addr())
    }

    pub fn counts(&self) -> &ConsumerCounts {
        &self.counts
    }

    /// Stops pulling, lets the batch in hand commit and be acknowledged, then stops the server and the
    /// alert service (which records what it was given).
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let rt = self.alerts.runtime();
        for t in self.tasks {
            let _ = rt.block_on(t);
        }
        if let Some(s) = self.server {
            s.stop();
        }
        // Before the alert service: the follower holds a handle to it.
        rt.block_on(self.health.stop());
        tracing::info!(
            committed = self.counts.committed.load(Ordering::Relaxed),
            malformed = self.counts.malformed.load(Ordering::Relaxed),
            "router stopped"
        );
        match Arc::try_unwrap(self.alerts) {
            Ok(a) => a.shutdown(),
            Err(_) => tracing::warn!("router: alert service still shared at stop"),
        }
    }
}

/// The configuration's cameras as the page lists them, each with a health of its own: the router runs no
/// camera, the health follower keeps these current from the nodes' records.
pub fn camera_list(config: &crate::config::Config) -> crate::serve::CameraList {
    config
        .cameras
        .iter()
        .map(|c| {
            let id = crate::types::CameraId::new(c.id.get_ref());
            crate::serve::CameraInfo {
                health: Arc::new(crate::health::CameraHealth::new(id.clone())),
                id,
                name: c.name.clone(),
                ward: c.ward.clone(),
            }
        })
        .collect::<Vec<_>>()
        .into()
}
