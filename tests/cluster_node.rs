//! `streetwatch node` against a real nats-server and real RTSP cameras (`streetwatch serve-footage` in
//! another process): three nodes share twelve cameras of unequal cost through the leases bucket, each
//! camera leased once and streaming on its holder, loads within the placement's bound; a SIGKILLed
//! node's cameras stream on the others within 15 s; it returns to a fair share without a camera moving
//! twice. A node publishes its incidents to the stream once each through a nats-server restart, with
//! their snapshots in the object store; the publisher keeps a burst of incidents whole across a restart.

#[path = "support/nats.rs"]
mod nats;
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nats::NatsServer;
use streetwatch::app::{Forwarder, IncidentOutlet as _};
use streetwatch::cluster::placement::{camera_cost, load_bound};
use streetwatch::cluster::{Bus, ClusterConfig, Publisher, Resources, message_id, snapshot_object};
use streetwatch::config::Config;
use streetwatch::secret::SecretUrl;
use streetwatch::store::Store;
use streetwatch::types::{
    CameraId, Clock as _, IncidentEvent, IncidentKey, IncidentPhase, RuleKind, Severity,
    SystemClock, Timestamp,
};
use support::cluster::{Node, config_head, holders};
use support::wait_until;

const TOKEN: &str = "cluster-viewer-token-0001";
/// Start-up of three nodes, their cameras and the model on a loaded two-core machine: generous.
const START: Duration = Duration::from_secs(180);
const LEASE_SECONDS: u64 = 4;

fn cluster_config(server: &NatsServer, prefix: &str) -> ClusterConfig {
    ClusterConfig {
        nats: SecretUrl::new(server.url()),
        prefix: prefix.into(),
        lease_seconds: LEASE_SECONDS,
        ..ClusterConfig::default()
    }
}

fn head(dir: &Path, server: &NatsServer, prefix: &str) -> String {
    config_head(
        &dir.join("data"),
        &server.url(),
        prefix,
        LEASE_SECONDS,
        TOKEN,
    )
}

/// The whole cluster as seen from outside: who holds what, and what each node streams.
struct View {
    holders: BTreeMap<String, String>,
    streaming: BTreeMap<String, BTreeSet<String>>,
}

impl View {
    async fn read(res: &Resources, nodes: &[&Node], cameras: &[String]) -> View {
        let http = reqwest::Client::new();
        let mut streaming = BTreeMap::new();
        for n in nodes {
            let running = n.cameras(&http).await;
            streaming.insert(
                n.name.clone(),
                running
                    .into_iter()
                    .filter(|(_, s)| s == "streaming")
                    .map(|(id, _)| id)
                    .collect(),
            );
        }
        View {
            holders: holders(res, cameras).await,
            streaming,
        }
    }

    /// Every camera leased to one of the live nodes and streaming there, and nowhere else.
    fn each_once(&self, cameras: &[String]) -> bool {
        cameras.iter().all(|id| {
            let runs: Vec<&String> = self
                .streaming
                .iter()
                .filter(|(_, s)| s.contains(id))
                .map(|(n, _)| n)
                .collect();
            self.holders.get(id).is_some_and(|h| runs == [h])
        })
    }

    fn loads(&self, costs: &HashMap<String, f64>) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (id, node) in &self.holders {
            *out.entry(node.clone()).or_insert(0.0) += costs[id];
        }
        out
    }
}

#[test]
fn three_nodes_share_cameras_by_cost_fail_over_within_15_s_and_take_a_share_back_without_flapping()
{
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut footage, main_url) = support::serve_cameras(12);

    // Four costs: sub- or main stream, half a frame or one a second.
    let mut text = head(dir.path(), &server, "failover");
    for i in 0..12 {
        let url = main_url.replace("{n}", &i.to_string());
        let sub = if i % 2 == 0 {
            format!("analysis_url = \"{url}/sub\"\n")
        } else {
            String::new()
        };
        let fps = if i % 4 < 2 { 0.5 } else { 1.0 };
        text.push_str(&format!(
            "\n[[cameras]]\nid = \"cam-{i:02}\"\nurl = \"{url}\"\n{sub}keyframe_only = true\nfps = {fps}\n"
        ));
    }
    let cfg = dir.path().join("cluster.toml");
    std::fs::write(&cfg, &text).unwrap();
    let config = Config::load(&cfg).unwrap();
    let costs: HashMap<String, f64> = config
        .cameras
        .iter()
        .map(|c| (c.id.get_ref().clone(), camera_cost(c)))
        .collect();
    let ids: Vec<String> = config
        .cameras
        .iter()
        .map(|c| c.id.get_ref().clone())
        .collect();
    let distinct: BTreeSet<String> = costs.values().map(|c| format!("{c:.2}")).collect();
    assert_eq!(distinct.len(), 4, "unequal costs: {distinct:?}");
    let total: f64 = costs.values().sum();
    let largest = costs.values().cloned().fold(0.0, f64::max);
    // Equal capacities: a third of the cost each.
    let bound = load_bound(total / 3.0, largest);
    let balanced = |view: &View| {
        let loads = view.loads(&costs);
        loads.len() == 3 && loads.values().all(|l| *l <= bound + 1e-9)
    };

    let rt = tokio::runtime::Runtime::new().unwrap();
    let res = rt.block_on(async {
        let bus = Bus::connect(&cluster_config(&server, "failover"), "test")
            .await
            .unwrap();
        bus.ensure().await.unwrap()
    });
    let mut nodes: Vec<Node> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| Node::start(&cfg, n, dir.path(), TOKEN))
        .collect();
    let view = || rt.block_on(View::read(&res, &nodes.iter().collect::<Vec<_>>(), &ids));
    let diagnose = |nodes: &[Node]| {
        nodes
            .iter()
            .map(|n| {
                let log = n.log();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "--- {}\n{}",
                    n.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut last = None;
    let settled = wait_until(START, || {
        let v = view();
        let ok = v.each_once(&ids) && balanced(&v);
        last = Some((v.holders, v.streaming));
        ok
    });
    assert!(
        settled,
        "not each camera once, streaming, balanced within {bound:.2}: {last:?}\n{}",
        diagnose(&nodes)
    );
    let v = view();
    println!(
        "placement: loads {:?} (total {total:.2}, bound {bound:.2})",
        v.loads(&costs)
    );

    // SIGKILL the node with the most cameras: its leases expire, the others take and stream them.
    let victim_name = v
        .loads(&costs)
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap()
        .0;
    let victim = nodes.iter().position(|n| n.name == victim_name).unwrap();
    let orphans: Vec<String> = v
        .holders
        .iter()
        .filter(|(_, h)| **h == victim_name)
        .map(|(c, _)| c.clone())
        .collect();
    assert!(!orphans.is_empty());
    let killed = Instant::now();
    nodes[victim].kill();
    let mut gone = nodes.remove(victim);
    let failed_over = wait_until(Duration::from_secs(30), || {
        let v = rt.block_on(View::read(&res, &nodes.iter().collect::<Vec<_>>(), &ids));
        orphans.iter().all(|c| {
            v.holders
                .get(c)
                .is_some_and(|h| *h != victim_name && v.streaming[h].contains(c))
        })
    });
    let failover = killed.elapsed();
    println!(
        "failover: {} cameras of {victim_name} streaming on the others {:.1} s after SIGKILL",
        orphans.len(),
        failover.as_secs_f64()
    );
    assert!(failed_over, "not failed over: {}", diagnose(&nodes));
    assert!(
        failover <= Duration::from_secs(15),
        "failover took {failover:?}"
    );

    // The node returns under the same name: a fair share comes back, nothing moves twice.
    gone.kill();
    nodes.push(Node::start(&cfg, &victim_name, dir.path(), TOKEN));
    let mut previous = rt.block_on(holders(&res, &ids));
    let mut moves: HashMap<String, usize> = HashMap::new();
    let mut observe = |moves: &mut HashMap<String, usize>| {
        let now = rt.block_on(holders(&res, &ids));
        for (c, h) in &now {
            if previous.get(c).is_some_and(|p| p != h) {
                *moves.entry(c.clone()).or_default() += 1;
            }
        }
        // A camera between holders (handed over, not yet adopted) keeps its last holder.
        for (c, h) in now {
            previous.insert(c, h);
        }
    };
    let back = wait_until(START, || {
        observe(&mut moves);
        let v = rt.block_on(View::read(&res, &nodes.iter().collect::<Vec<_>>(), &ids));
        v.each_once(&ids) && balanced(&v)
    });
    assert!(
        back,
        "{victim_name} got no fair share back: {}",
        diagnose(&nodes)
    );
    let returned = moves.values().sum::<usize>();
    let watch_until = Instant::now() + Duration::from_secs(3 * LEASE_SECONDS);
    while Instant::now() < watch_until {
        observe(&mut moves);
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "return: {returned} cameras handed back to {victim_name}; over the next {} s: {} more moves",
        3 * LEASE_SECONDS,
        moves.values().sum::<usize>() - returned
    );
    assert!(
        moves.values().all(|&m| m <= 1),
        "a camera changed hands twice: {moves:?}"
    );
    assert!(returned > 0, "nothing came back");
    footage.0.kill().ok();
}

/// Every message of the incident stream: its message id and event.
async fn stream_events(res: &Resources) -> Vec<(String, IncidentEvent)> {
    let mut stream = res.incidents.clone();
    let state = stream.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for seq in state.first_sequence..=state.last_sequence {
        let Ok(raw) = stream.get_raw_message(seq).await else {
            continue;
        };
        let id = raw
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.to_string())
            .unwrap_or_default();
        out.push((id, serde_json::from_slice(&raw.payload).unwrap()));
    }
    out
}

async fn object(res: &Resources, name: &str) -> Vec<u8> {
    let mut o = res.snapshots.get(name).await.unwrap();
    let mut body = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut o, &mut body)
        .await
        .unwrap();
    body
}

/// Checks the stream against the incidents of a table: each incident's opening there once, each close
/// once; no message id twice. Returns a description of what is missing, if anything.
fn missing(
    rows: &[streetwatch::store::IncidentRow],
    events: &[(String, IncidentEvent)],
) -> Vec<String> {
    let mut per: HashMap<(String, &str), usize> = HashMap::new();
    for (_, e) in events {
        *per.entry((e.key.to_string(), e.phase.as_str()))
            .or_default() += 1;
    }
    let mut out = Vec::new();
    for r in rows {
        if per.get(&(r.id.clone(), "opened")) != Some(&1) {
            out.push(format!(
                "{} opened ×{:?}",
                r.id,
                per.get(&(r.id.clone(), "opened"))
            ));
        }
        if r.closed_at.is_some() && per.get(&(r.id.clone(), "closed")) != Some(&1) {
            out.push(format!(
                "{} closed ×{:?}",
                r.id,
                per.get(&(r.id.clone(), "closed"))
            ));
        }
    }
    out
}

#[test]
fn a_node_publishes_each_incident_once_through_a_nats_restart_with_its_snapshot() {
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let walkway = support::footage("vtest_h264.mp4");
    let mounts = [("w0", walkway.as_path()), ("w1", walkway.as_path())];
    let (_footage, port) = support::serve_footage_with(0, &mounts, true);
    let mut text = head(dir.path(), &server, "publish");
    for m in ["w0", "w1"] {
        text.push_str(&support::intrusion_camera(
            m,
            &format!("rtsp://127.0.0.1:{port}/{m}"),
        ));
    }
    let cfg = dir.path().join("node.toml");
    std::fs::write(&cfg, text).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let connect = |server: &NatsServer| {
        rt.block_on(async {
            let bus = Bus::connect(&cluster_config(server, "publish"), "test")
                .await
                .unwrap();
            bus.ensure().await.unwrap()
        })
    };
    let mut node = Node::start(&cfg, "solo", dir.path(), TOKEN);
    let db = dir.path().join("data/solo/streetwatch.db");
    let rows = || {
        Store::open(&db)
            .and_then(|s| s.incidents())
            .unwrap_or_default()
    };
    let http = reqwest::Client::new();
    assert!(
        wait_until(START, || {
            let running = rt.block_on(node.cameras(&http));
            running.len() == 2 && running.values().all(|s| s == "streaming")
        }),
        "cameras not streaming: {}",
        node.log()
    );
    // NATS goes away as the cameras' first people open incidents (the rule needs a second or two of
    // them), for less than a lease, and comes back.
    let down_from = SystemClock.now();
    server.restart(Duration::from_secs(3));
    let down_until = SystemClock.now();
    let res = connect(&server);
    let caught_up = wait_until(Duration::from_secs(90), || {
        let r = rows();
        !r.is_empty() && missing(&r, &rt.block_on(stream_events(&res))).is_empty()
    });
    assert!(
        caught_up,
        "missing after the restart: {:?}\n{}",
        missing(&rows(), &rt.block_on(stream_events(&res))),
        node.log()
    );
    node.terminate();

    let rows = rows();
    let events = rt.block_on(stream_events(&res));
    assert_eq!(missing(&rows, &events), Vec::<String>::new());
    let ids: BTreeSet<&String> = events.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), events.len(), "a message id twice");
    for (id, e) in &events {
        assert_eq!(*id, message_id(e));
        assert!(
            rows.iter().any(|r| r.id == e.key.to_string()),
            "{id} not in the table"
        );
    }
    let opened: Vec<&IncidentEvent> = events
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e.phase == IncidentPhase::Opened)
        .collect();
    let name = opened
        .iter()
        .find_map(|e| e.snapshot.as_deref().and_then(snapshot_object))
        .unwrap_or_else(|| panic!("no opened event references a snapshot: {opened:?}"));
    assert!(
        rt.block_on(object(&res, name)).starts_with(&[0xff, 0xd8]),
        "a JPEG"
    );
    let while_down = rows
        .iter()
        .filter(|r| (down_from.0..=down_until.0).contains(&r.opened_at))
        .count();
    println!(
        "node: {} incidents ({while_down} opened while NATS was down), {} events in the stream, none missing, no duplicate",
        rows.len(),
        events.len()
    );
    // A clean stop deleted its leases: the cameras are free at once.
    let left = rt.block_on(holders(&res, &["w0".to_string(), "w1".to_string()]));
    assert!(left.is_empty(), "leases left: {left:?}");
}

fn incident(i: usize, at: Timestamp, snapshot: Option<String>) -> IncidentEvent {
    IncidentEvent {
        key: IncidentKey {
            camera: CameraId::new(&format!("cam-{}", i % 6)),
            rule: "crowd".into(),
            zone: "plaza".into(),
            episode: Timestamp(at.0 + i as i64),
        },
        phase: IncidentPhase::Opened,
        at: Timestamp(at.0 + i as i64),
        kind: RuleKind::Crowding,
        severity: Severity::Warning,
        camera_name: "Nguyễn Huệ".into(),
        ward: "Bến Nghé".into(),
        summary: "9 people".into(),
        count: 9,
        snapshot,
    }
}

#[test]
fn a_burst_of_incidents_reaches_the_stream_once_each_across_a_nats_restart() {
    const BURST: usize = 300;
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (bus, res) = rt.block_on(async {
        let bus = Bus::connect(&cluster_config(&server, "burst"), "test")
            .await
            .unwrap();
        let res = bus.ensure().await.unwrap();
        (bus, res)
    });
    let publisher = Arc::new(Publisher::new(bus, &res, rt.handle().clone()));
    let mut forwarder = Forwarder::new(
        Store::open(&dir.path().join("incidents.db")).unwrap(),
        Some(publisher.clone()),
        Arc::default(),
    );
    let jpeg = dir.path().join("snapshot.jpg");
    std::fs::write(&jpeg, b"\xff\xd8 a picture \xff\xd9").unwrap();
    let start = SystemClock.now();
    let mut record = |range: std::ops::Range<usize>| {
        for i in range {
            let snapshot = (i % 10 == 0).then(|| jpeg.display().to_string());
            let opened = incident(i, start, snapshot);
            forwarder.record(opened.clone());
            let mut closed = opened;
            closed.phase = IncidentPhase::Closed;
            closed.at = closed.at.plus_ms(60_000);
            forwarder.record(closed);
        }
    };

    let t = Instant::now();
    record(0..BURST);
    let rate = (2 * BURST) as f64 / t.elapsed().as_secs_f64();
    println!(
        "publisher: {} events stored and published in {:.2} s: {rate:.0} events/s (one at a time, each acknowledged)",
        2 * BURST,
        t.elapsed().as_secs_f64()
    );
    // NATS down in the middle of the burst: those spill into the table.
    server.stop();
    record(BURST..BURST + BURST / 3);
    server.restart(Duration::ZERO);
    record(BURST + BURST / 3..2 * BURST);
    let res = rt.block_on(async {
        Bus::connect(&cluster_config(&server, "burst"), "test")
            .await
            .unwrap()
            .ensure()
            .await
            .unwrap()
    });
    let whole = wait_until(Duration::from_secs(90), || {
        forwarder.catch_up();
        !forwarder.behind() && rt.block_on(stream_events(&res)).len() >= 4 * BURST
    });
    let events = rt.block_on(stream_events(&res));
    assert!(
        whole,
        "{} of {} events in the stream; spilled {:?}",
        events.len(),
        4 * BURST,
        publisher.queue_stats()
    );
    assert!(
        publisher.queue_stats().spilled > 0,
        "the restart spilled nothing"
    );
    let mut per: HashMap<(String, &str), usize> = HashMap::new();
    for (id, e) in &events {
        assert_eq!(*id, message_id(e));
        *per.entry((e.key.to_string(), e.phase.as_str()))
            .or_default() += 1;
    }
    assert_eq!(events.len(), 4 * BURST, "no event twice");
    assert!(per.values().all(|&n| n == 1), "an event twice");
    for i in 0..2 * BURST {
        let key = incident(i, start, None).key.to_string();
        assert_eq!(per.get(&(key.clone(), "opened")), Some(&1), "{key}");
        assert_eq!(per.get(&(key.clone(), "closed")), Some(&1), "{key}");
    }
    let with_snapshot = events
        .iter()
        .find_map(|(_, e)| e.snapshot.as_deref().and_then(snapshot_object))
        .expect("an event references its snapshot");
    assert_eq!(
        rt.block_on(object(&res, with_snapshot)),
        b"\xff\xd8 a picture \xff\xd9"
    );
}
