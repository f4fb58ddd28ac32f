//! Camera leases: which node runs which camera, arbitrated by the leases bucket.
//!
//! Each camera has a key there (`subject_token(camera id)`) whose value is the name of the node running
//! it. Every round (a third of the lease time) a node reads the leases and the nodes bucket, and then:
//!
//! - **renews** each lease it holds by compare-and-set on the revision it last wrote: one that fails
//!   because the key changed (another node's write) is lost at once; one it cannot write at all (NATS
//!   away) is kept until a lease time after its last renewal, when the server has surely dropped it, and
//!   then stopped;
//! - **takes** a free camera (no key: never held, expired or released) with `create` at once when the
//!   placement ([`super::placement::assign`]) names it, or when it has been free a whole round (its target
//!   is slow or sees other nodes): failover is fast;
//! - **adopts** a key that names it which it does not hold: handed over to it, or held by its previous
//!   run under the same name;
//! - **hands over** a camera whose target is another node by writing that node's name (compare-and-set),
//!   only when the target has been live for the settle time (two lease times) and at most
//!   [`MAX_HANDOVERS`] per round: no flapping while the nodes bucket is changing.
//!
//! Nodes announce themselves in the nodes bucket ([`NodeRecord`]), rewritten every round; a node whose
//! record expired (bucket max age = the lease time) is not live. The decisions are in [`Holder`], pure
//! and tested on timelines; [`run`] carries them out against NATS.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt as _;

use super::placement;
use super::{Bus, ClusterError, NodeRecord, Resources, subject_token};
use crate::types::{Clock, Timestamp};

/// Most cameras a node hands over per round, so a returning node's share comes back in steps.
pub const MAX_HANDOVERS: usize = 3;

/// A lease as read from the bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub revision: u64,
}

/// A live node as read from the nodes bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct Live {
    pub name: String,
    pub started_at: Timestamp,
    pub capacity: f64,
}

/// What a round asks of the bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create the free camera's lease.
    Take { camera: String },
    /// The lease names this node, which does not hold it: write it again at `revision`.
    Adopt { camera: String, revision: u64 },
    /// Rewrite a held lease at `revision`.
    Renew { camera: String, revision: u64 },
    /// Write `to` into a held lease at `revision`.
    HandOver {
        camera: String,
        revision: u64,
        to: String,
    },
}

#[derive(Clone, Copy, Debug)]
struct Held {
    /// When a write of it last succeeded.
    renewed: Timestamp,
}

/// One node's leases and what it knows of the others (see the module notes).
pub struct Holder {
    me: String,
    ttl_ms: i64,
    /// Each live node's start (as it announced it) and when this node first saw that start.
    seen: HashMap<String, (Timestamp, Timestamp)>,
    /// Cameras seen without a lease, and since when.
    free_since: HashMap<String, Timestamp>,
    held: BTreeMap<String, Held>,
}

impl Holder {
    pub fn new(me: &str, ttl: Duration) -> Self {
        Self {
            me: me.to_string(),
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            seen: HashMap::new(),
            free_since: HashMap::new(),
            held: BTreeMap::new(),
        }
    }

    fn round_ms(&self) -> i64 {
        self.ttl_ms / 3
    }

    /// How long a node must have been live before cameras are handed to it.
    fn settle_ms(&self) -> i64 {
        2 * self.ttl_ms
    }

    /// The cameras this node holds.
    pub fn held(&self) -> BTreeSet<String> {
        self.held.keys().cloned().collect()
    }

    /// Decides a round from the buckets as read at `now`: `nodes` live (this one is added if its record is
    /// not there yet), `leases` by camera id, `cameras` the configuration's with their costs. Forgets,
    /// before planning, held leases the bucket shows gone or taken.
    pub fn plan(
        &mut self,
        now: Timestamp,
        me: &Live,
        nodes: &[Live],
        leases: &HashMap<String, Lease>,
        cameras: &[(String, f64)],
    ) -> Vec<Step> {
        let mut live: Vec<&Live> = nodes.iter().filter(|n| n.name != self.me).collect();
        live.push(me);
        self.seen
            .retain(|name, _| live.iter().any(|n| &n.name == name));
        for n in &live {
            let entry = self
                .seen
                .entry(n.name.clone())
                .or_insert((n.started_at, now));
            if entry.0 != n.started_at {
                // Restarted under the same name: live again from now.
                *entry = (n.started_at, now);
            }
        }
        let capacities: Vec<(String, f64)> =
            live.iter().map(|n| (n.name.clone(), n.capacity)).collect();
        let target = placement::assign(&capacities, cameras);
        let settle_ms = self.settle_ms();
        let settled: BTreeSet<String> = self
            .seen
            .iter()
            .filter(|(name, (_, first))| **name == self.me || now.0 - first.0 >= settle_ms)
            .map(|(name, _)| name.clone())
            .collect();
        let mut steps = Vec::new();
        let mut handovers = 0;
        let mut lost = Vec::new();
        for (camera, _) in cameras {
            let lease = leases.get(camera);
            if lease.is_some() {
                self.free_since.remove(camera);
            }
            match (lease, self.held.get(camera)) {
                // Written at the revision read: the key names this node, so only this node wrote it.
                (Some(l), Some(_)) if l.holder == self.me => {
                    let to = &target[camera];
                    if *to != self.me && handovers < MAX_HANDOVERS && settled.contains(to) {
                        handovers += 1;
                        steps.push(Step::HandOver {
                            camera: camera.clone(),
                            revision: l.revision,
                            to: to.clone(),
                        });
                    } else {
                        steps.push(Step::Renew {
                            camera: camera.clone(),
                            revision: l.revision,
                        });
                    }
                }
                (Some(l), None) if l.holder == self.me => steps.push(Step::Adopt {
                    camera: camera.clone(),
                    revision: l.revision,
                }),
                (Some(_), held) => {
                    if held.is_some() {
                        lost.push(camera.clone());
                    }
                }
                (None, held) => {
                    if held.is_some() {
                        lost.push(camera.clone());
                    }
                    let since = *self.free_since.entry(camera.clone()).or_insert(now);
                    if target[camera] == self.me || now.0 - since.0 >= self.round_ms() {
                        steps.push(Step::Take {
                            camera: camera.clone(),
                        });
                    }
                }
            }
        }
        // Cameras no longer configured are given up with the rest of what is lost.
        lost.extend(
            self.held
                .keys()
                .filter(|c| !cameras.iter().any(|(id, _)| id == *c))
                .cloned(),
        );
        for camera in lost {
            self.held.remove(&camera);
        }
        self.free_since
            .retain(|c, _| cameras.iter().any(|(id, _)| id == c));
        steps
    }

    /// A take, adoption or renewal of `camera` was written at `now`.
    pub fn wrote(&mut self, camera: &str, now: Timestamp) {
        self.held.insert(camera.to_string(), Held { renewed: now });
        self.free_since.remove(camera);
    }

    /// A write of `camera`'s lease failed: `conflict` when the key changed (someone else has it now),
    /// which loses it at once; otherwise it is kept until [`expire`](Self::expire) drops it.
    pub fn failed(&mut self, camera: &str, conflict: bool) {
        if conflict {
            self.held.remove(camera);
        }
    }

    /// `camera` was handed over.
    pub fn handed_over(&mut self, camera: &str) {
        self.held.remove(camera);
    }

    /// Drops the leases not renewed for a lease time: the server has removed them by now, and another
    /// node may run the camera.
    pub fn expire(&mut self, now: Timestamp) {
        let ttl = self.ttl_ms;
        self.held.retain(|_, h| now.0 - h.renewed.0 < ttl);
    }

    /// Forgets every lease (they were deleted at shutdown).
    pub fn release_all(&mut self) -> Vec<String> {
        std::mem::take(&mut self.held).into_keys().collect()
    }
}

/// What the lease loop needs to know of this node and the cameras.
pub struct LeaseConfig {
    pub me: String,
    pub started_at: Timestamp,
    pub capacity: f64,
    /// The configuration's cameras with their costs.
    pub cameras: Vec<(String, f64)>,
}

/// Reads a bucket's keys with their last value and revision (deletions as `None`), in one pass of an
/// ordered consumer: one request per round, however many cameras. Gives up after `limit`.
async fn read_bucket(
    client: &async_nats::Client,
    store: &kv::Store,
    limit: Duration,
) -> Result<HashMap<String, Option<(Bytes, u64)>>, ClusterError> {
    let what = || format!("reading bucket {}", store.name);
    let consumer = store
        .stream
        .create_consumer(async_nats::jetstream::consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: format!("{}>", store.prefix),
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::LastPerSubject,
            replay_policy: async_nats::jetstream::consumer::ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|e| ClusterError::jetstream(what(), e))?;
    let mut out = HashMap::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| ClusterError::jetstream(what(), e))?;
    let read = async {
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| ClusterError::jetstream(what(), e))?;
            let info = message
                .info()
                .map_err(|e| ClusterError::jetstream(what(), e))?;
            let (revision, pending) = (info.stream_sequence, info.pending);
            let Some(key) = message.subject.strip_prefix(store.prefix.as_str()) else {
                continue;
            };
            let deleted = message
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|op| op.as_str() != "PUT");
            let value = (!deleted).then(|| (message.payload.clone(), revision));
            out.insert(key.to_string(), value);
            if pending == 0 {
                break;
            }
        }
        Ok::<_, ClusterError>(())
    };
    tokio::time::timeout(limit, read)
        .await
        .map_err(|_| ClusterError::jetstream(what(), "timed out"))??;
    Ok(out)
}

/// Runs the lease loop until `stop` turns true, publishing the cameras held in `held`; then deletes its
/// leases and its node record, so others take the cameras at once.
pub async fn run(
    bus: Bus,
    resources: Resources,
    config: LeaseConfig,
    clock: std::sync::Arc<dyn Clock>,
    held: tokio::sync::watch::Sender<BTreeSet<String>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let ttl = bus.lease_ttl;
    let round = ttl / 3;
    let me_key = subject_token(&config.me);
    let me = Live {
        name: config.me.clone(),
        started_at: config.started_at,
        capacity: config.capacity,
    };
    let record = serde_json::to_vec(&NodeRecord {
        node: config.me.clone(),
        started_at: config.started_at,
        capacity: config.capacity,
    })
    .expect("a node record serialises");
    let by_key: HashMap<String, String> = config
        .cameras
        .iter()
        .map(|(id, _)| (subject_token(id), id.clone()))
        .collect();
    let mut holder = Holder::new(&config.me, ttl);
    let mut every = tokio::time::interval(round);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => break,
        }
        if let Err(e) = resources.nodes.put(&me_key, record.clone().into()).await {
            tracing::warn!(error = %e, "node record not written");
        }
        let read = async {
            let nodes = read_bucket(&bus.client, &resources.nodes, round).await?;
            let leases = read_bucket(&bus.client, &resources.leases, round).await?;
            Ok::<_, ClusterError>((nodes, leases))
        };
        match read.await {
            Ok((nodes, leases)) => {
                let nodes: Vec<Live> = nodes
                    .into_values()
                    .flatten()
                    .filter_map(|(v, _)| serde_json::from_slice::<NodeRecord>(&v).ok())
                    .map(|r| Live {
                        name: r.node,
                        started_at: r.started_at,
                        capacity: r.capacity,
                    })
                    .collect();
                let leases: HashMap<String, Lease> = leases
                    .into_iter()
                    .filter_map(|(key, v)| {
                        let (value, revision) = v?;
                        let camera = by_key.get(&key)?.clone();
                        let holder = String::from_utf8_lossy(&value).into_owned();
                        Some((camera, Lease { holder, revision }))
                    })
                    .collect();
                let steps = holder.plan(clock.now(), &me, &nodes, &leases, &config.cameras);
                for step in steps {
                    carry_out(&resources.leases, &config.me, &mut holder, step, &*clock).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "leases not read this round"),
        }
        let before = held.borrow().clone();
        holder.expire(clock.now());
        let now_held = holder.held();
        for camera in before.difference(&now_held) {
            tracing::warn!(%camera, "camera lease lost: stopping it here");
        }
        held.send_if_modified(|h| {
            let changed = *h != now_held;
            *h = now_held;
            changed
        });
    }
    for camera in holder.release_all() {
        if let Err(e) = resources.leases.delete(subject_token(&camera)).await {
            tracing::warn!(%camera, error = %e, "lease not released: it expires instead");
        }
    }
    if let Err(e) = resources.nodes.delete(&me_key).await {
        tracing::warn!(error = %e, "node record not deleted: it expires instead");
    }
    held.send_replace(BTreeSet::new());
    tracing::info!("leases released");
}

async fn carry_out(
    leases: &kv::Store,
    me: &str,
    holder: &mut Holder,
    step: Step,
    clock: &dyn Clock,
) {
    let value = || Bytes::from(me.to_string());
    match step {
        Step::Take { camera } => match leases.create(subject_token(&camera), value()).await {
            Ok(_) => {
                tracing::info!(%camera, "camera lease taken");
                holder.wrote(&camera, clock.now());
            }
            Err(e) => tracing::debug!(%camera, error = %e, "camera lease not taken"),
        },
        Step::Adopt { camera, revision } | Step::Renew { camera, revision } => {
            let adopting = !holder.held.contains_key(&camera);
            match leases
                .update(subject_token(&camera), value(), revision)
                .await
            {
                Ok(_) => {
                    if adopting {
                        tracing::info!(%camera, "camera lease handed to this node");
                    }
                    holder.wrote(&camera, clock.now());
                }
                Err(e) => {
                    let conflict = e.kind() == kv::UpdateErrorKind::WrongLastRevision;
                    if !adopting {
                        tracing::warn!(%camera, error = %e, conflict, "camera lease not renewed");
                    }
                    holder.failed(&camera, conflict);
                }
            }
        }
        Step::HandOver {
            camera,
            revision,
            to,
        } => match leases
            .update(subject_token(&camera), Bytes::from(to.clone()), revision)
            .await
        {
            Ok(_) => {
                tracing::info!(%camera, to = %to, "camera handed over");
                holder.handed_over(&camera);
            }
            Err(e) => {
                let conflict = e.kind() == kv::UpdateErrorKind::WrongLastRevision;
                tracing::warn!(%camera, error = %e, "camera not handed over");
                holder.failed(&camera, conflict);
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3);

    fn live(name: &str, started: i64) -> Live {
        Live {
            name: name.into(),
            started_at: Timestamp(started),
            capacity: 50.0,
        }
    }

    fn cameras(n: usize) -> Vec<(String, f64)> {
        (0..n)
            .map(|i| (format!("cam-{i:02}"), 1.0 + (i % 3) as f64))
            .collect()
    }

    /// A simulated bucket and nodes: each round every node plans on what the bucket holds then, and its
    /// writes succeed in turn (compare-and-set against the bucket's revisions).
    struct World {
        leases: HashMap<String, Lease>,
        revision: u64,
        holders: BTreeMap<String, (Holder, Live)>,
        cameras: Vec<(String, f64)>,
        /// Per camera, how many times it changed hands.
        moves: HashMap<String, usize>,
    }

    impl World {
        fn new(cams: usize) -> Self {
            World {
                leases: HashMap::new(),
                revision: 0,
                holders: BTreeMap::new(),
                cameras: cameras(cams),
                moves: HashMap::new(),
            }
        }

        fn start(&mut self, name: &str, now: i64) {
            self.holders
                .insert(name.into(), (Holder::new(name, TTL), live(name, now)));
        }

        /// The node dies: its leases stay until they expire.
        fn kill(&mut self, name: &str) {
            self.holders.remove(name);
        }

        fn expire_dead(&mut self) {
            let alive: BTreeSet<String> = self.holders.keys().cloned().collect();
            self.leases.retain(|_, l| alive.contains(&l.holder));
        }

        fn write(&mut self, camera: &str, holder: &str) -> u64 {
            self.revision += 1;
            let before = self.leases.get(camera).map(|l| l.holder.clone());
            if before.as_deref().is_some_and(|b| b != holder) {
                *self.moves.entry(camera.into()).or_default() += 1;
            }
            self.leases.insert(
                camera.into(),
                Lease {
                    holder: holder.into(),
                    revision: self.revision,
                },
            );
            self.revision
        }

        fn round(&mut self, now: i64) {
            let names: Vec<String> = self.holders.keys().cloned().collect();
            let nodes: Vec<Live> = self.holders.values().map(|(_, l)| l.clone()).collect();
            for name in names {
                let (mut holder, me) = self.holders.remove(&name).unwrap();
                let steps = holder.plan(Timestamp(now), &me, &nodes, &self.leases, &self.cameras);
                for step in steps {
                    match step {
                        Step::Take { camera } => {
                            if !self.leases.contains_key(&camera) {
                                self.write(&camera, &name);
                                holder.wrote(&camera, Timestamp(now));
                            }
                        }
                        Step::Adopt { camera, revision } | Step::Renew { camera, revision } => {
                            if self.leases.get(&camera).map(|l| l.revision) == Some(revision) {
                                self.write(&camera, &name);
                                holder.wrote(&camera, Timestamp(now));
                            } else {
                                holder.failed(&camera, true);
                            }
                        }
                        Step::HandOver {
                            camera,
                            revision,
                            to,
                        } => {
                            if self.leases.get(&camera).map(|l| l.revision) == Some(revision) {
                                self.write(&camera, &to);
                                holder.handed_over(&camera);
                            }
                        }
                    }
                }
                holder.expire(Timestamp(now));
                self.holders.insert(name, (holder, me));
            }
        }

        /// Each camera's runner: the nodes that hold it.
        fn runners(&self) -> BTreeMap<String, Vec<String>> {
            let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (name, (h, _)) in &self.holders {
                for c in h.held() {
                    out.entry(c).or_default().push(name.clone());
                }
            }
            out
        }

        fn assert_each_run_once(&self) {
            let runners = self.runners();
            assert_eq!(runners.len(), self.cameras.len(), "{runners:?}");
            assert!(runners.values().all(|r| r.len() == 1), "{runners:?}");
        }

        fn loads(&self) -> BTreeMap<String, f64> {
            let mut out = BTreeMap::new();
            for (c, r) in self.runners() {
                let cost = self.cameras.iter().find(|(id, _)| *id == c).unwrap().1;
                *out.entry(r[0].clone()).or_insert(0.0) += cost;
            }
            out
        }
    }

    const ROUND: i64 = 1_000;

    #[test]
    fn three_nodes_share_the_cameras_by_cost_and_a_dead_nodes_cameras_are_taken_within_a_round() {
        let mut w = World::new(12);
        let mut now = 0;
        for n in ["a", "b", "c"] {
            w.start(n, now);
        }
        // The first node to plan takes what it targets, the rest follow within a round; hand-overs
        // wait for the settle time (6 s).
        for _ in 0..20 {
            now += ROUND;
            w.round(now);
        }
        w.assert_each_run_once();
        let total: f64 = w.cameras.iter().map(|(_, c)| c).sum();
        for (node, load) in w.loads() {
            assert!(
                load <= placement::load_bound(total / 3.0, 3.0) + 1e-9,
                "{node}: {load}"
            );
        }
        // b dies: its leases expire (as the bucket's max age drops them), and in the next round the
        // survivors take them.
        let b_had = w.holders["b"].0.held();
        assert!(!b_had.is_empty());
        w.kill("b");
        w.expire_dead();
        now += ROUND;
        w.round(now);
        w.assert_each_run_once();
        assert!(w.runners().values().all(|r| r[0] != "b"));
    }

    #[test]
    fn a_returning_node_gets_a_share_back_after_settling_in_steps_and_nothing_moves_twice() {
        let mut w = World::new(12);
        let mut now = 0;
        w.start("a", now);
        w.start("c", now);
        for _ in 0..10 {
            now += ROUND;
            w.round(now);
        }
        w.assert_each_run_once();
        w.moves.clear();
        w.start("b", now);
        // Before b has been live two lease times (6 s), nothing is handed to it.
        for _ in 0..5 {
            now += ROUND;
            w.round(now);
            assert!(
                w.holders["b"].0.held().is_empty(),
                "handed over before settling"
            );
        }
        let mut handed_per_round = Vec::new();
        for _ in 0..15 {
            let before = w.holders["b"].0.held().len();
            now += ROUND;
            w.round(now);
            handed_per_round.push(w.holders["b"].0.held().len() - before);
            // A camera handed over runs nowhere until its new holder's next round, never twice.
            assert!(w.runners().values().all(|r| r.len() == 1));
        }
        w.assert_each_run_once();
        // b's share back: every node within the bound of the placement.
        let total: f64 = w.cameras.iter().map(|(_, c)| c).sum();
        let loads = w.loads();
        assert_eq!(loads.len(), 3, "{loads:?}");
        for load in loads.values() {
            assert!(
                *load <= placement::load_bound(total / 3.0, 3.0) + 1e-9,
                "{loads:?}"
            );
        }
        // At most MAX_HANDOVERS from each of the two others per round.
        assert!(handed_per_round.iter().all(|&n| n <= 2 * MAX_HANDOVERS));
        assert!(w.moves.values().all(|&m| m == 1), "{:?}", w.moves);
        // Settled: nothing moves any more.
        w.moves.clear();
        for _ in 0..10 {
            now += ROUND;
            w.round(now);
        }
        assert!(w.moves.is_empty(), "{:?}", w.moves);
    }

    #[test]
    fn a_lease_not_renewed_for_a_lease_time_is_dropped_and_a_conflict_drops_it_at_once() {
        let mut h = Holder::new("a", TTL);
        h.wrote("cam-00", Timestamp(0));
        h.wrote("cam-01", Timestamp(0));
        // NATS away: writes fail without a conflict; kept until 3 s after the last renewal.
        h.failed("cam-00", false);
        h.expire(Timestamp(2_999));
        assert_eq!(h.held().len(), 2);
        h.failed("cam-01", true);
        assert_eq!(h.held(), BTreeSet::from(["cam-00".to_string()]));
        h.expire(Timestamp(3_000));
        assert!(h.held().is_empty());
    }

    #[test]
    fn a_held_lease_another_node_wrote_is_lost_and_one_naming_this_node_is_adopted() {
        let mut h = Holder::new("a", TTL);
        let me = live("a", 0);
        let cams = cameras(2);
        h.wrote("cam-00", Timestamp(0));
        let leases = HashMap::from([
            (
                "cam-00".to_string(),
                Lease {
                    holder: "b".into(),
                    revision: 5,
                },
            ),
            (
                "cam-01".to_string(),
                Lease {
                    holder: "a".into(),
                    revision: 6,
                },
            ),
        ]);
        let steps = h.plan(Timestamp(1_000), &me, &[live("b", 0)], &leases, &cams);
        assert!(h.held().is_empty());
        assert_eq!(
            steps,
            vec![Step::Adopt {
                camera: "cam-01".into(),
                revision: 6
            }]
        );
    }
}
