//! Camera health across the cluster: each node publishes its cameras' health to the health bucket, and a
//! router follows that bucket and the nodes bucket so its operations-centre page and `/metrics` show the
//! whole city, and show a node that disappears.
//!
//! ```text
//! node:   CameraHealth atomics ──HealthPublisher (put on change, refresh every lease)──▶ KV {P}_health
//! router: KV {P}_health + KV {P}_nodes ──HealthFollower──▶ the router's CameraHealth values + ClusterView
//!                                                  └──▶ alert router: camera Down / Up (once per change)
//! ```
//!
//! NATS 2.9 removes expired keys without telling watchers, so the follower never waits for a removal: it
//! judges freshness itself. A heartbeat older than `lease_seconds` (the nodes bucket's own max age) means
//! its node is lost; a health record older than twice that means its node stopped reporting the camera.
//! Times come from the server's stamp on each entry (one clock for every writer), capped by the router's
//! clock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_nats::jetstream::kv;
use futures_util::StreamExt as _;
use serde::Serialize;
use tokio::sync::watch;

use super::{HealthRecord, NodeRecord, Resources, subject_token};
use crate::alert::{self, AlertHandle};
use crate::health::{CameraHealth, HealthSnapshot, StreamState};
use crate::serve::{CameraInfo, CameraList};
use crate::types::{CameraId, Clock, Timestamp};

/// How often the publisher looks at its cameras: a change of state reaches the bucket within this, and
/// no camera is put more than once in it.
pub const PUBLISH_SCAN: Duration = Duration::from_secs(1);
/// How often the follower re-judges every camera and node (freshness, down/up).
const FOLLOW_TICK: Duration = Duration::from_millis(500);
/// Puts (or deletes) awaiting their acknowledgement at once: 1,100 cameras refresh in a few round trips.
const IN_FLIGHT: usize = 64;
/// How long a follower waits before watching a bucket again after its watch failed.
const REWATCH: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------------
// Node side.

/// Publishes a node's camera health to the health bucket until stopped. Dropping it without
/// [`stop`](Self::stop) ends it as a crash would: its records stay until they expire.
pub struct HealthPublisher {
    task: Background,
    stats: Arc<PublishStats>,
}

/// What a publisher did since it started.
#[derive(Debug, Default)]
pub struct PublishStats {
    pub puts: std::sync::atomic::AtomicU64,
    pub put_failures: std::sync::atomic::AtomicU64,
    /// Records of stopped cameras deleted (this node was still their writer).
    pub deleted: std::sync::atomic::AtomicU64,
    /// Records of stopped cameras left alone: another node had written them since (the camera moved).
    pub kept_moved: std::sync::atomic::AtomicU64,
}

/// The last record this node wrote for a camera.
#[derive(Clone, Debug)]
struct Written {
    key: String,
    revision: u64,
    at: Timestamp,
    state: StreamState,
    error: Option<String>,
}

/// Whether a camera's record is due: it has none, its state or error changed since, or it is `refresh`
/// old (so it never nears the bucket's max age while the node runs it).
fn due(last: Option<&Written>, now: &HealthSnapshot, at: Timestamp, refresh: Duration) -> bool {
    match last {
        None => true,
        Some(w) => {
            w.state != now.state
                || w.error != now.last_error
                || at.since(w.at) >= refresh.as_millis() as i64
        }
    }
}

impl HealthPublisher {
    /// Starts publishing the health of `cameras` (the node's running cameras, which leases and reloads
    /// change) as node `node`, on `runtime`. Each camera's record is put when its state or error changes
    /// (seen within [`PUBLISH_SCAN`]) and at least every `lease_ttl`; the health bucket keeps a record
    /// three times that, so a dead node's records expire. A camera that leaves the list has its record
    /// deleted if this node is still the one that wrote it.
    pub fn start(
        res: &Resources,
        node: &str,
        cameras: CameraList,
        lease_ttl: Duration,
        clock: Arc<dyn Clock>,
        runtime: &tokio::runtime::Handle,
    ) -> HealthPublisher {
        let stats = Arc::new(PublishStats::default());
        let publisher = Publisher {
            kv: res.health.clone(),
            node: node.to_string(),
            cameras,
            // Rewritten at the first scan past `refresh`: never more than `lease_ttl` apart.
            refresh: lease_ttl.saturating_sub(PUBLISH_SCAN).max(PUBLISH_SCAN),
            clock,
            stats: stats.clone(),
            written: HashMap::new(),
        };
        HealthPublisher {
            task: Background::spawn(runtime, |stopping| publisher.run(stopping)),
            stats,
        }
    }

    pub fn stats(&self) -> &PublishStats {
        &self.stats
    }

    /// Stops publishing and deletes the records this node still holds (its cameras stop with it).
    pub async fn stop(self) {
        self.task.stop().await;
    }
}

/// A task on a runtime that ends when told to, or is aborted when dropped untold.
struct Background {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Background {
    fn spawn<F>(
        runtime: &tokio::runtime::Handle,
        run: impl FnOnce(watch::Receiver<bool>) -> F,
    ) -> Background
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (stop, stopping) = watch::channel(false);
        Background {
            stop,
            task: Some(runtime.spawn(run(stopping))),
        }
    }

    /// Tells the task to stop and waits for it to finish.
    async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct Publisher {
    kv: kv::Store,
    node: String,
    cameras: CameraList,
    refresh: Duration,
    clock: Arc<dyn Clock>,
    stats: Arc<PublishStats>,
    written: HashMap<CameraId, Written>,
}

impl Publisher {
    async fn run(mut self, mut stopping: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(PUBLISH_SCAN);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopping.wait_for(|s| *s) => break,
                _ = tick.tick() => {}
            }
            self.scan().await;
        }
        let all: Vec<CameraId> = self.written.keys().cloned().collect();
        self.delete(all).await;
    }

    async fn scan(&mut self) {
        let list = self.cameras.load();
        let running: HashSet<&CameraId> = list.iter().map(|c| &c.id).collect();
        let gone: Vec<CameraId> = self
            .written
            .keys()
            .filter(|id| !running.contains(id))
            .cloned()
            .collect();
        self.delete(gone).await;

        let at = self.clock.now();
        let due: Vec<(CameraId, String, HealthSnapshot)> = list
            .iter()
            .filter_map(|c| {
                let snapshot = c.health.snapshot(at);
                due(self.written.get(&c.id), &snapshot, at, self.refresh).then(|| {
                    let key = match self.written.get(&c.id) {
                        Some(w) => w.key.clone(),
                        None => subject_token(c.id.as_str()),
                    };
                    (c.id.clone(), key, snapshot)
                })
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let kv = &self.kv;
        let node = &self.node;
        let mut puts = futures_util::stream::iter(due)
            .map(|(id, key, health)| async move {
                let (state, error) = (health.state, health.last_error.clone());
                let record = HealthRecord {
                    node: node.clone(),
                    at,
                    health,
                };
                let value = serde_json::to_vec(&record).expect("a health record serialises");
                let put = kv.put(&key, value.into()).await;
                (id, key, state, error, put)
            })
            .buffer_unordered(IN_FLIGHT);
        let mut failed = None;
        while let Some((id, key, state, error, put)) = puts.next().await {
            match put {
                Ok(revision) => {
                    self.stats.puts.fetch_add(1, RELAXED);
                    self.written.insert(
                        id,
                        Written {
                            key,
                            revision,
                            at,
                            state,
                            error,
                        },
                    );
                }
                // Due again at the next scan: the record of before stays, and so does what we knew of it.
                Err(e) => {
                    self.stats.put_failures.fetch_add(1, RELAXED);
                    failed.get_or_insert((id, e.to_string()));
                }
            }
        }
        if let Some((camera, error)) = failed {
            tracing::warn!(%camera, %error, "camera health not published to NATS; retrying");
        }
    }

    /// Deletes the records of `cameras` that this node wrote last. A record another node has written
    /// since (its camera moved there) fails the revision check and stays.
    async fn delete(&mut self, cameras: Vec<CameraId>) {
        let kv = &self.kv;
        let gone: Vec<Written> = cameras
            .iter()
            .filter_map(|id| self.written.remove(id))
            .collect();
        let mut deletes = futures_util::stream::iter(gone)
            .map(|w| async move {
                let done = kv.delete_expect_revision(&w.key, Some(w.revision)).await;
                (w.key, done)
            })
            .buffer_unordered(IN_FLIGHT);
        while let Some((key, done)) = deletes.next().await {
            match done {
                Ok(()) => {
                    self.stats.deleted.fetch_add(1, RELAXED);
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    self.stats.kept_moved.fetch_add(1, RELAXED);
                    tracing::debug!(%key, "camera health record rewritten by another node: left");
                }
                // It expires on its own; the follower sees it stale before that.
                Err(e) => {
                    tracing::warn!(%key, error = %e, "stopped camera's health record not deleted")
                }
            }
        }
    }
}

const RELAXED: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Relaxed;

// ---------------------------------------------------------------------------------------------------
// Router side.

/// How a camera's health reaches the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// A node reports it and is alive.
    Live,
    /// The node that ran it stopped its heartbeat: the camera shows stopped until another node takes it.
    NodeLost,
    /// Its node is alive but has not reported it for twice `lease_seconds`.
    Stale,
    /// No node reports it: never did, or its node stopped it (a reload, a lease given up).
    None,
}

impl Report {
    pub fn as_str(self) -> &'static str {
        match self {
            Report::Live => "live",
            Report::NodeLost => "node_lost",
            Report::Stale => "stale",
            Report::None => "none",
        }
    }
}

/// Where a camera runs, as the router last judged it.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    /// The node that runs it, or ran it last.
    pub node: Option<String>,
    pub report: Report,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Live,
    Lost,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Live => "live",
            NodeState::Lost => "lost",
        }
    }
}

/// A node as the operations centre lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeView {
    pub node: String,
    pub state: NodeState,
    /// Live: when the node started (as its heartbeat says) or was first heard of. Lost: when its last
    /// heartbeat (or report) ran out, or it said goodbye. Milliseconds since the epoch.
    pub since: Timestamp,
    /// Cameras it reports, or reported last.
    pub cameras: usize,
    /// The camera cost it can carry, from its heartbeat.
    pub capacity: Option<f64>,
}

/// The cluster as the router sees it at one moment.
#[derive(Clone, Debug, Default)]
pub struct ClusterSnapshot {
    pub cameras: HashMap<CameraId, Placement>,
    /// By name.
    pub nodes: Vec<NodeView>,
    /// Camera Down reports sent to the alert router since the follower started, and Up reports.
    pub reported_down: u64,
    pub reported_up: u64,
}

/// What the router's server reads: the latest [`ClusterSnapshot`]. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct ClusterView(Arc<ArcSwap<ClusterSnapshot>>);

impl ClusterView {
    pub fn load(&self) -> Arc<ClusterSnapshot> {
        self.0.load_full()
    }
}

/// What the follower needs besides the buckets.
#[derive(Clone, Debug)]
pub struct FollowOptions {
    /// The deployment's `lease_seconds`: a heartbeat older than this means its node is lost.
    pub lease_ttl: Duration,
    /// A camera not streaming for this long (or reported by no node) is reported down to the alert
    /// router, as `run` does for its own cameras.
    pub camera_down_after: Duration,
}

/// Follows the health and nodes buckets for a router until stopped.
pub struct HealthFollower {
    view: ClusterView,
    task: Background,
}

impl HealthFollower {
    /// Starts following on `runtime`. `cameras` is every camera of the city (the router's configuration),
    /// each with a `CameraHealth` of its own that the follower keeps current from the nodes' records;
    /// `alerts`, when given, is told when a camera goes down and comes back, once per change.
    pub fn start(
        res: &Resources,
        cameras: CameraList,
        alerts: Option<Arc<AlertHandle>>,
        opts: FollowOptions,
        clock: Arc<dyn Clock>,
        runtime: &tokio::runtime::Handle,
    ) -> HealthFollower {
        let view = ClusterView::default();
        let follower = Follower {
            health: res.health.clone(),
            nodes: res.nodes.clone(),
            city: City::new(&opts, clock.now()),
            cameras,
            alerts,
            clock,
            view: view.clone(),
        };
        HealthFollower {
            view,
            task: Background::spawn(runtime, |stopping| follower.run(stopping)),
        }
    }

    /// What the router's server shows (see [`crate::serve::PipelineStats::cluster`]).
    pub fn view(&self) -> ClusterView {
        self.view.clone()
    }

    pub async fn stop(self) {
        self.task.stop().await;
    }
}

struct Follower {
    health: kv::Store,
    nodes: kv::Store,
    city: City,
    cameras: CameraList,
    alerts: Option<Arc<AlertHandle>>,
    clock: Arc<dyn Clock>,
    view: ClusterView,
}

/// A bucket being watched, or to be watched again (after a failure) once `retry_at` passes.
struct Watching {
    store: kv::Store,
    watch: Option<kv::Watch>,
    retry_at: tokio::time::Instant,
}

impl Watching {
    fn new(store: kv::Store) -> Self {
        Watching {
            store,
            watch: None,
            retry_at: tokio::time::Instant::now(),
        }
    }

    /// Watches the bucket from each key's latest value (2.9 serves this: a last-per-subject consumer),
    /// if it is not watched and its retry is due.
    async fn ensure(&mut self) {
        if self.watch.is_some() || tokio::time::Instant::now() < self.retry_at {
            return;
        }
        match self.store.watch_with_history(">").await {
            Ok(w) => self.watch = Some(w),
            Err(e) => self.failed(&e),
        }
    }

    fn failed(&mut self, e: &dyn std::fmt::Display) {
        tracing::warn!(bucket = %self.store.name, error = %e, "watching a NATS bucket; trying again");
        self.watch = None;
        self.retry_at = tokio::time::Instant::now() + REWATCH;
    }

    async fn next(&mut self) -> Option<kv::Entry> {
        let Some(w) = self.watch.as_mut() else {
            return std::future::pending().await;
        };
        match w.next().await {
            Some(Ok(entry)) => Some(entry),
            Some(Err(e)) => {
                self.failed(&e);
                None
            }
            None => {
                self.failed(&"the watch ended");
                None
            }
        }
    }
}

/// The server's stamp on an entry, on the router's timeline: never later than `now`.
fn seen_at(entry: &kv::Entry, now: Timestamp) -> Timestamp {
    let ms = (entry.created.unix_timestamp_nanos() / 1_000_000) as i64;
    Timestamp(ms.min(now.0))
}

impl Follower {
    async fn run(mut self, mut stopping: watch::Receiver<bool>) {
        let mut health = Watching::new(self.health.clone());
        let mut nodes = Watching::new(self.nodes.clone());
        let mut tick = tokio::time::interval(FOLLOW_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            health.ensure().await;
            nodes.ensure().await;
            tokio::select! {
                _ = stopping.wait_for(|s| *s) => return,
                Some(entry) = health.next() => {
                    let now = self.clock.now();
                    self.city.health_entry(&entry.key, entry_value(&entry), seen_at(&entry, now));
                }
                Some(entry) = nodes.next() => {
                    let now = self.clock.now();
                    self.city.node_entry(&entry.key, entry_value(&entry), seen_at(&entry, now));
                }
                _ = tick.tick() => self.judge(),
            }
        }
    }

    fn judge(&mut self) {
        let list = self.cameras.load();
        let now = self.clock.now();
        let (snapshot, reports) = self.city.judge(&list, now);
        self.view.0.store(Arc::new(snapshot));
        let orphaned = self.city.orphaned(&list, now);
        let Some(alerts) = &self.alerts else { return };
        for (camera, health) in reports {
            tracing::info!(%camera, ?health, "camera health reported to the alert router");
            alerts.camera_health(&camera, health);
        }
        for (camera, before) in orphaned {
            tracing::warn!(%camera, "camera taken over from a lost node: the alerts it opened there are closed");
            alerts.close_orphaned(&camera, before);
        }
    }
}

/// A put's value, or `None` for a delete or purge.
fn entry_value(entry: &kv::Entry) -> Option<&[u8]> {
    (entry.operation == kv::Operation::Put).then_some(&entry.value[..])
}

/// A record a node put, and when.
#[derive(Clone, Debug)]
struct Reported {
    record: HealthRecord,
    seen: Timestamp,
}

/// What the router knows of a node.
#[derive(Clone, Debug, Default)]
struct NodeSeen {
    /// Its last heartbeat.
    heartbeat: Option<Timestamp>,
    /// Its last health record (a node seen only through those is live while they are fresh).
    reported: Option<Timestamp>,
    /// Its heartbeat was deleted: it stopped on purpose.
    left: Option<Timestamp>,
    first_seen: Option<Timestamp>,
    record: Option<NodeRecord>,
}

/// A camera whose record another node wrote than the one before: moved, or taken from a node that died.
#[derive(Clone, Debug)]
struct Moved {
    from: String,
    /// The new node's record time: its incidents on the camera started after this.
    before: Timestamp,
    noticed: Timestamp,
}

/// A camera's down/up bookkeeping for the alert router.
#[derive(Clone, Copy, Debug, Default)]
struct Watched {
    not_up_since: Option<Timestamp>,
    reported_down: bool,
}

/// The router's judgement of the city, kept apart from NATS so it can be tested on a timeline.
struct City {
    lease_ms: i64,
    down_after_ms: i64,
    /// Cameras with no record count as not up from here.
    started: Timestamp,
    /// By key (the camera id as a token).
    records: HashMap<String, Reported>,
    /// By node name.
    nodes: BTreeMap<String, NodeSeen>,
    /// Node name by key in the nodes bucket: a delete names only the key.
    node_keys: HashMap<String, String>,
    watched: HashMap<CameraId, Watched>,
    /// By key: cameras whose writer changed, until the node they left is judged (see [`City::orphaned`]).
    moved: HashMap<String, Moved>,
    reported_down: u64,
    reported_up: u64,
}

impl City {
    fn new(opts: &FollowOptions, started: Timestamp) -> City {
        City {
            lease_ms: opts.lease_ttl.as_millis() as i64,
            down_after_ms: opts.camera_down_after.as_millis() as i64,
            started,
            records: HashMap::new(),
            nodes: BTreeMap::new(),
            node_keys: HashMap::new(),
            watched: HashMap::new(),
            moved: HashMap::new(),
            reported_down: 0,
            reported_up: 0,
        }
    }

    /// A health bucket entry: a put's record, or the key's removal (`None`).
    fn health_entry(&mut self, key: &str, value: Option<&[u8]>, seen: Timestamp) {
        let Some(value) = value else {
            self.records.remove(key);
            return;
        };
        match serde_json::from_slice::<HealthRecord>(value) {
            Ok(record) => {
                let node = self.nodes.entry(record.node.clone()).or_default();
                node.reported = node.reported.max(Some(seen));
                node.first_seen.get_or_insert(seen);
                if let Some(previous) = self.records.get(key)
                    && previous.record.node != record.node
                {
                    self.moved.insert(
                        key.to_string(),
                        Moved {
                            from: previous.record.node.clone(),
                            before: record.at,
                            noticed: seen,
                        },
                    );
                }
                self.records
                    .insert(key.to_string(), Reported { record, seen });
            }
            Err(e) => tracing::warn!(%key, error = %e, "unreadable camera health record: ignored"),
        }
    }

    /// A nodes bucket entry: a heartbeat, or the node's goodbye (`None`).
    fn node_entry(&mut self, key: &str, value: Option<&[u8]>, seen: Timestamp) {
        let Some(value) = value else {
            let name = self
                .node_keys
                .get(key)
                .cloned()
                .unwrap_or_else(|| key.into());
            self.nodes.entry(name).or_default().left = Some(seen);
            return;
        };
        match serde_json::from_slice::<NodeRecord>(value) {
            Ok(record) => {
                self.node_keys.insert(key.to_string(), record.node.clone());
                let node = self.nodes.entry(record.node.clone()).or_default();
                node.heartbeat = node.heartbeat.max(Some(seen));
                node.left = None;
                node.first_seen.get_or_insert(seen);
                node.record = Some(record);
            }
            Err(e) => tracing::warn!(%key, error = %e, "unreadable node heartbeat: ignored"),
        }
    }

    /// Whether `node` is alive at `now`, and since when it is in that state.
    fn node_state(&self, node: &NodeSeen, now: Timestamp) -> (NodeState, Timestamp) {
        if let Some(left) = node.left {
            return (NodeState::Lost, left);
        }
        let runs_out = match (node.heartbeat, node.reported) {
            (Some(beat), _) => beat.plus_ms(self.lease_ms),
            (None, Some(report)) => report.plus_ms(2 * self.lease_ms),
            (None, None) => return (NodeState::Lost, node.first_seen.unwrap_or(now)),
        };
        if now <= runs_out {
            let since = node
                .record
                .as_ref()
                .map(|r| r.started_at)
                .or(node.first_seen)
                .unwrap_or(now);
            (NodeState::Live, since)
        } else {
            (NodeState::Lost, runs_out)
        }
    }

    /// Cameras another node took from a node that died (judged lost without a goodbye) since the last
    /// call, each with the new node's first record time: the alerts the camera's incidents opened before
    /// that belong to the dead node, which cannot close them. A node that left cleanly closed its own;
    /// one that handed a camera over stays live and closes them too, so a move is forgotten after two
    /// lease times with its old node still live (a dead one is judged lost within one).
    fn orphaned(&mut self, cameras: &[CameraInfo], now: Timestamp) -> Vec<(CameraId, Timestamp)> {
        let mut out = Vec::new();
        let mut done = Vec::new();
        for (key, m) in &self.moved {
            let died = self
                .nodes
                .get(&m.from)
                .is_some_and(|n| n.left.is_none() && self.node_state(n, now).0 == NodeState::Lost);
            if died {
                if let Some(c) = cameras
                    .iter()
                    .find(|c| subject_token(c.id.as_str()) == *key)
                {
                    out.push((c.id.clone(), m.before));
                }
                done.push(key.clone());
            } else if now.since(m.noticed) > 2 * self.lease_ms {
                done.push(key.clone());
            }
        }
        for key in done {
            self.moved.remove(&key);
        }
        out
    }

    /// Brings every camera of `cameras` up to date at `now`: its health mirrors its node's last record,
    /// or shows it stopped when no live node reports it. Returns the snapshot the server shows, and the
    /// Down/Up changes to tell the alert router.
    fn judge(
        &mut self,
        cameras: &[CameraInfo],
        now: Timestamp,
    ) -> (ClusterSnapshot, Vec<(CameraId, alert::CameraHealth)>) {
        let node_states: HashMap<&str, (NodeState, Timestamp)> = self
            .nodes
            .iter()
            .map(|(name, n)| (name.as_str(), self.node_state(n, now)))
            .collect();
        let mut per_node: HashMap<&str, usize> = HashMap::new();
        let mut placements = HashMap::with_capacity(cameras.len());
        let mut reports = Vec::new();
        self.watched
            .retain(|id, _| cameras.iter().any(|c| c.id == *id));
        for c in cameras {
            let reported = self.records.get(&subject_token(c.id.as_str()));
            let report = match reported {
                None => Report::None,
                Some(r) => match node_states.get(r.record.node.as_str()) {
                    Some((NodeState::Lost, _)) => Report::NodeLost,
                    _ if now.since(r.seen) > 2 * self.lease_ms => Report::Stale,
                    _ => Report::Live,
                },
            };
            match reported {
                Some(r) => {
                    *per_node.entry(r.record.node.as_str()).or_default() += 1;
                    mirror(&c.health, &r.record, report == Report::Live);
                }
                None => c.health.set_state(StreamState::Stopped),
            }
            placements.insert(
                c.id.clone(),
                Placement {
                    node: reported.map(|r| r.record.node.clone()),
                    report,
                },
            );
            let up = report == Report::Live && c.health.state() == StreamState::Streaming;
            let w = self.watched.entry(c.id.clone()).or_insert(Watched {
                not_up_since: Some(self.started),
                reported_down: false,
            });
            w.not_up_since = if up {
                None
            } else {
                w.not_up_since.or(Some(now))
            };
            let down = w
                .not_up_since
                .is_some_and(|t| now.since(t) >= self.down_after_ms);
            if down != w.reported_down {
                w.reported_down = down;
                if down {
                    self.reported_down += 1;
                    reports.push((c.id.clone(), alert::CameraHealth::Down));
                } else {
                    self.reported_up += 1;
                    reports.push((c.id.clone(), alert::CameraHealth::Up));
                }
            }
        }
        let nodes = self
            .nodes
            .iter()
            .map(|(name, seen)| {
                let (state, since) = node_states[name.as_str()];
                NodeView {
                    node: name.clone(),
                    state,
                    since,
                    cameras: per_node.get(name.as_str()).copied().unwrap_or(0),
                    capacity: seen.record.as_ref().map(|r| r.capacity),
                }
            })
            .collect();
        let snapshot = ClusterSnapshot {
            cameras: placements,
            nodes,
            reported_down: self.reported_down,
            reported_up: self.reported_up,
        };
        (snapshot, reports)
    }
}

/// Makes the router's `health` show what the node's record says, the last frame dated on the node's
/// clock (`at` minus the age it gave); stopped unless the record is `live` (fresh, from a live node).
fn mirror(health: &CameraHealth, record: &HealthRecord, live: bool) {
    let last_frame = record
        .health
        .last_frame_age_s
        .map(|age| record.at.plus_ms(-((age * 1000.0) as i64)));
    let state = if live {
        record.health.state
    } else {
        StreamState::Stopped
    };
    health.mirror(&record.health, state, last_frame);
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE_MS: i64 = 6_000;
    const DOWN_MS: i64 = 30_000;

    fn snapshot(camera: &str, state: StreamState, error: Option<&str>) -> HealthSnapshot {
        let h = CameraHealth::new(CameraId::new(camera));
        h.set_state(state);
        if let Some(e) = error {
            h.set_error(e.into());
        }
        h.snapshot(Timestamp(0))
    }

    #[test]
    fn a_record_is_put_first_on_change_and_otherwise_once_a_refresh() {
        let refresh = Duration::from_secs(5);
        let streaming = snapshot("c", StreamState::Streaming, None);
        assert!(
            due(None, &streaming, Timestamp(0), refresh),
            "never written"
        );
        let written = Written {
            key: "c".into(),
            revision: 7,
            at: Timestamp(10_000),
            state: StreamState::Streaming,
            error: None,
        };
        let w = Some(&written);
        assert!(!due(w, &streaming, Timestamp(10_000), refresh));
        assert!(!due(w, &streaming, Timestamp(14_999), refresh));
        assert!(due(w, &streaming, Timestamp(15_000), refresh), "refresh");
        let stalled = snapshot("c", StreamState::Stalled, None);
        assert!(due(w, &stalled, Timestamp(10_001), refresh), "state");
        let failing = snapshot("c", StreamState::Streaming, Some("connection refused"));
        assert!(due(w, &failing, Timestamp(10_001), refresh), "error");
    }

    fn city(started: i64) -> City {
        City::new(
            &FollowOptions {
                lease_ttl: Duration::from_millis(LEASE_MS as u64),
                camera_down_after: Duration::from_millis(DOWN_MS as u64),
            },
            Timestamp(started),
        )
    }

    fn camera(id: &str) -> CameraInfo {
        CameraInfo {
            id: CameraId::new(id),
            name: id.into(),
            ward: "Bến Nghé".into(),
            health: Arc::new(CameraHealth::new(CameraId::new(id))),
        }
    }

    fn record(node: &str, camera: &str, state: StreamState, at: i64) -> Vec<u8> {
        let mut health = snapshot(camera, state, None);
        health.frames_received = 40;
        health.last_frame_age_s = Some(1.5);
        serde_json::to_vec(&HealthRecord {
            node: node.into(),
            at: Timestamp(at),
            health,
        })
        .unwrap()
    }

    fn heartbeat(node: &str, started: i64) -> Vec<u8> {
        serde_json::to_vec(&NodeRecord {
            node: node.into(),
            started_at: Timestamp(started),
            capacity: 2.0,
        })
        .unwrap()
    }

    fn beat(city: &mut City, node: &str, at: i64) {
        city.node_entry(node, Some(&heartbeat(node, 0)), Timestamp(at));
    }

    fn put(city: &mut City, node: &str, camera: &str, state: StreamState, at: i64) {
        let key = subject_token(camera);
        city.health_entry(&key, Some(&record(node, camera, state, at)), Timestamp(at));
    }

    fn node<'a>(s: &'a ClusterSnapshot, name: &str) -> &'a NodeView {
        s.nodes.iter().find(|n| n.node == name).unwrap()
    }

    /// Two nodes report their cameras; node-b's heartbeat stops: once `lease_seconds` has passed its
    /// camera shows stopped on a lost node, and after `camera_down_after` the alert router hears Down
    /// once; node-a takes the camera over and it is Up again, once.
    #[test]
    fn a_lost_node_shows_its_cameras_stopped_and_down_once_until_another_takes_them() {
        let cams = [camera("d1.a"), camera("d1.b"), camera("d1.none")];
        let mut c = city(0);
        beat(&mut c, "node-a", 0);
        beat(&mut c, "node-b", 0);
        put(&mut c, "node-a", "d1.a", StreamState::Streaming, 0);
        put(&mut c, "node-b", "d1.b", StreamState::Streaming, 0);

        let (s, reports) = c.judge(&cams, Timestamp(500));
        assert!(reports.is_empty(), "{reports:?}");
        let placed = |s: &ClusterSnapshot, id: &str| s.cameras[id].clone();
        assert_eq!(
            placed(&s, "d1.a"),
            Placement {
                node: Some("node-a".into()),
                report: Report::Live
            }
        );
        assert_eq!(placed(&s, "d1.none").report, Report::None);
        assert_eq!(placed(&s, "d1.none").node, None);
        assert_eq!(cams[0].health.state(), StreamState::Streaming);
        assert_eq!(cams[2].health.state(), StreamState::Stopped);
        let a = cams[0].health.snapshot(Timestamp(500));
        assert_eq!(a.frames_received, 40);
        assert_eq!(a.last_frame_age_s, Some(2.0), "1.5 s old when written at 0");
        assert_eq!(node(&s, "node-b").state, NodeState::Live);
        assert_eq!(node(&s, "node-b").since, Timestamp(0));
        assert_eq!(node(&s, "node-b").cameras, 1);

        // node-a beats every 2 s and refreshes its camera every 5 s; node-b is silent after 0.
        let mut reports_at = Vec::new();
        let mut t = 500;
        while t <= 37_000 {
            if t % 2_000 == 0 {
                beat(&mut c, "node-a", t);
            }
            if t % 5_000 == 0 {
                put(&mut c, "node-a", "d1.a", StreamState::Streaming, t);
            }
            let (s, reports) = c.judge(&cams, Timestamp(t));
            if t == LEASE_MS {
                assert_eq!(
                    placed(&s, "d1.b").report,
                    Report::Live,
                    "a lease is not over yet"
                );
            }
            if t == LEASE_MS + 500 {
                assert_eq!(placed(&s, "d1.b").report, Report::NodeLost);
                assert_eq!(placed(&s, "d1.b").node.as_deref(), Some("node-b"));
                assert_eq!(cams[1].health.state(), StreamState::Stopped);
                let b = node(&s, "node-b");
                assert_eq!((b.state, b.since), (NodeState::Lost, Timestamp(LEASE_MS)));
                assert_eq!(node(&s, "node-a").state, NodeState::Live);
            }
            reports_at.extend(reports.into_iter().map(|r| (t, r)));
            t += 500;
        }
        // The camera nobody runs is down `camera_down_after` after the router started; node-b's camera
        // `camera_down_after` after it stopped streaming (its node was lost); each once.
        assert_eq!(
            reports_at,
            vec![
                (
                    DOWN_MS,
                    (CameraId::new("d1.none"), alert::CameraHealth::Down)
                ),
                (
                    LEASE_MS + 500 + DOWN_MS,
                    (CameraId::new("d1.b"), alert::CameraHealth::Down)
                ),
            ]
        );
        assert_eq!(
            cams[1].health.snapshot(Timestamp(37_000)).frames_received,
            40
        );

        put(&mut c, "node-a", "d1.b", StreamState::Streaming, 37_100);
        let (s, reports) = c.judge(&cams, Timestamp(37_500));
        assert_eq!(
            reports,
            vec![(CameraId::new("d1.b"), alert::CameraHealth::Up)]
        );
        assert_eq!(placed(&s, "d1.b").node.as_deref(), Some("node-a"));
        assert_eq!(node(&s, "node-a").cameras, 2);
        assert_eq!(node(&s, "node-b").cameras, 0);
        assert_eq!((s.reported_down, s.reported_up), (2, 1));
        let (_, reports) = c.judge(&cams, Timestamp(38_000));
        assert!(reports.is_empty(), "no duplicate Up: {reports:?}");
    }

    #[test]
    fn a_record_not_refreshed_goes_stale_and_a_removed_one_shows_no_node() {
        let cams = [camera("cam-1")];
        let mut c = city(0);
        put(&mut c, "node-a", "cam-1", StreamState::Backoff, 0);
        let mut t = 0;
        // Heartbeats go on; the camera's record is not rewritten.
        while t <= 2 * LEASE_MS {
            beat(&mut c, "node-a", t);
            t += 1_000;
        }
        let (s, _) = c.judge(&cams, Timestamp(2 * LEASE_MS));
        assert_eq!(s.cameras["cam-1"].report, Report::Live);
        assert_eq!(
            cams[0].health.state(),
            StreamState::Backoff,
            "the node's state"
        );
        beat(&mut c, "node-a", 2 * LEASE_MS + 1);
        let (s, _) = c.judge(&cams, Timestamp(2 * LEASE_MS + 1));
        assert_eq!(s.cameras["cam-1"].report, Report::Stale);
        assert_eq!(cams[0].health.state(), StreamState::Stopped);
        assert_eq!(node(&s, "node-a").state, NodeState::Live);

        c.health_entry(&subject_token("cam-1"), None, Timestamp(13_000));
        let (s, _) = c.judge(&cams, Timestamp(13_000));
        assert_eq!(
            s.cameras["cam-1"],
            Placement {
                node: None,
                report: Report::None
            }
        );
        assert_eq!(node(&s, "node-a").cameras, 0);
    }

    /// Backoff on a live node is down like in one process (not streaming for `camera_down_after`), and
    /// streaming again is up, each reported once.
    #[test]
    fn a_reported_camera_not_streaming_is_down_once_and_up_once() {
        let cams = [camera("cam-1")];
        let mut c = city(0);
        let mut reports_at = Vec::new();
        let mut t = 0;
        while t <= 80_000 {
            beat(&mut c, "node-a", t);
            let state = match t {
                0..10_000 => StreamState::Streaming,
                10_000..50_000 => StreamState::Backoff,
                _ => StreamState::Streaming,
            };
            put(&mut c, "node-a", "cam-1", state, t);
            let (_, reports) = c.judge(&cams, Timestamp(t));
            reports_at.extend(reports.into_iter().map(|(_, h)| (t, h)));
            t += 1_000;
        }
        assert_eq!(
            reports_at,
            vec![
                (10_000 + DOWN_MS, alert::CameraHealth::Down),
                (50_000, alert::CameraHealth::Up)
            ]
        );
    }

    #[test]
    fn a_node_that_says_goodbye_is_lost_at_once_and_live_again_when_it_beats() {
        let mut c = city(0);
        beat(&mut c, "node-a", 1_000);
        c.node_entry("node-a", None, Timestamp(2_000));
        let (s, _) = c.judge(&[], Timestamp(2_100));
        let a = node(&s, "node-a");
        assert_eq!((a.state, a.since), (NodeState::Lost, Timestamp(2_000)));
        c.node_entry(
            "node-a",
            Some(&heartbeat("node-a", 9_000)),
            Timestamp(9_500),
        );
        let (s, _) = c.judge(&[], Timestamp(9_600));
        let a = node(&s, "node-a");
        assert_eq!((a.state, a.since), (NodeState::Live, Timestamp(9_000)));
        assert_eq!(a.capacity, Some(2.0));
    }

    /// node-a takes a camera from node-b, silent since 0, before node-b's lease runs out as the router
    /// sees it: once node-b is judged lost, the alerts the camera opened before node-a's first record of
    /// it are to be closed, once. A camera handed over between live nodes, or taken from a node that
    /// said goodbye, is not: the node it left closes its own.
    #[test]
    fn a_camera_taken_from_a_node_that_died_has_its_old_alerts_closed_once() {
        let cams = [camera("d1.died"), camera("d1.handed"), camera("d1.left")];
        let mut c = city(0);
        for n in ["node-a", "node-b", "node-c", "node-d"] {
            beat(&mut c, n, 0);
        }
        put(&mut c, "node-b", "d1.died", StreamState::Streaming, 0);
        put(&mut c, "node-a", "d1.handed", StreamState::Streaming, 0);
        put(&mut c, "node-c", "d1.left", StreamState::Streaming, 0);
        c.node_entry("node-c", None, Timestamp(1_000));
        let mut got = Vec::new();
        let mut t = 500;
        while t <= 4 * LEASE_MS {
            if t % 2_000 == 0 {
                beat(&mut c, "node-a", t);
                beat(&mut c, "node-d", t);
            }
            match t {
                2_000 => put(&mut c, "node-a", "d1.left", StreamState::Streaming, t),
                3_000 => put(&mut c, "node-d", "d1.handed", StreamState::Streaming, t),
                5_500 => put(&mut c, "node-a", "d1.died", StreamState::Streaming, t),
                _ => {}
            }
            c.judge(&cams, Timestamp(t));
            got.extend(
                c.orphaned(&cams, Timestamp(t))
                    .into_iter()
                    .map(|(id, before)| (t, id.to_string(), before)),
            );
            t += 500;
        }
        assert_eq!(
            got,
            [(LEASE_MS + 500, "d1.died".to_string(), Timestamp(5_500))],
            "node-b is lost after its lease ({LEASE_MS} ms)"
        );
        assert!(c.moved.is_empty(), "every move judged: {:?}", c.moved);
    }

    /// A node known only by its health records (no heartbeat heard) is live while they are fresh.
    #[test]
    fn a_node_without_heartbeats_lives_by_its_records() {
        let cams = [camera("cam-1")];
        let mut c = city(0);
        put(&mut c, "node-x", "cam-1", StreamState::Streaming, 1_000);
        let (s, _) = c.judge(&cams, Timestamp(1_000 + 2 * LEASE_MS));
        assert_eq!(node(&s, "node-x").state, NodeState::Live);
        assert_eq!(s.cameras["cam-1"].report, Report::Live);
        let (s, _) = c.judge(&cams, Timestamp(1_001 + 2 * LEASE_MS));
        let x = node(&s, "node-x");
        assert_eq!(
            (x.state, x.since),
            (NodeState::Lost, Timestamp(1_000 + 2 * LEASE_MS))
        );
        assert_eq!(s.cameras["cam-1"].report, Report::NodeLost);
    }
}
