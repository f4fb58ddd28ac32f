//! The whole cluster on one machine, every part real: a nats-server with JetStream, six RTSP cameras
//! (`streetwatch serve-footage --cameras 6` in its own process, people walking), three `streetwatch node`
//! processes and one `streetwatch router` process sharing one configuration, and Kannel with fakesmsc as
//! the router's SMS gateway.
//!
//! - Each camera is owned exactly once: the router's `/api/cameras` (what the operations centre sees)
//!   names its node and shows it streaming, the leases bucket names the same node, and only that node
//!   runs it.
//! - The busiest node is SIGKILLed: its cameras stream again on the others, as the router shows it,
//!   within 15 s.
//! - The other nodes stop cleanly (SIGTERM), which closes what their cameras left open. Then, from the
//!   three nodes' own `incidents` tables (the killed node's file survives it) and the route: every
//!   incident was told firing by exactly one SMS to each phone and resolved by exactly one (those the
//!   killed node left open closed by the router once their cameras run elsewhere); no SMS twice, none
//!   about an incident no node recorded.

#[path = "support/nats.rs"]
mod nats;
#[path = "support/alert_peers.rs"]
mod peers;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nats::NatsServer;
use peers::{KANNEL_PASS, KANNEL_USER, Kannel};
use streetwatch::cluster::router::DURABLE;
use streetwatch::cluster::{Bus, ClusterConfig};
use streetwatch::secret::SecretUrl;
use streetwatch::store::{IncidentRow, Store};
use support::cluster::{Node, config_head, holders};
use support::{ChildGuard, wait_until};

const TOKEN: &str = "cluster-e2e-viewer-7d41c0";
const PREFIX: &str = "e2e";
const CAMERAS: usize = 6;
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// The route's phones: every notice goes to both.
const PHONES: [&str; 2] = ["+84901000101", "+84901000102"];
const LEASE_SECONDS: u64 = 4;
/// Start-up of three nodes, their cameras and the model, and the router's catching up, on a loaded
/// two-core machine: generous.
const START: Duration = Duration::from_secs(180);
/// What the issue asks of a failover.
const FAILOVER: Duration = Duration::from_secs(15);

/// One configuration for the nodes and the router. The cameras are the 40 s walkway loop (people come
/// and go): intrusion in the lower right quarter and the top third, and a crowd of seven in the whole
/// picture, each closing after 6 s without them, so incidents open and close every few seconds on every
/// camera. Every notice is an SMS to both phones naming its incident, at once (no grouping delay, no
/// flood limit); closes are told too.
fn config(dir: &Path, nats: &NatsServer, kannel: &Kannel, camera_url: &str) -> String {
    let mut text = config_head(&dir.join("data"), &nats.url(), PREFIX, LEASE_SECONDS, TOKEN);
    text.push_str(&format!(
        r#"
[alert]
[alert.flood]
max_notices = 0
[alert.retry]
initial_backoff = "200ms"
max_backoff = "1s"
[alert.route]
receiver = "post"
group_by = ["..."]
group_wait = "0s"
group_interval = "1s"
repeat_interval = "24h"
[[alert.receivers]]
name = "post"
send_resolved = true
[alert.receivers.sms]
url = "{sms}"
username = "{KANNEL_USER}"
password = "{KANNEL_PASS}"
numbers = {PHONES:?}
strip_diacritics = true
template = "{{title}} {{incident}}"
"#,
        sms = kannel.sendsms_url(),
    ));
    for i in 0..CAMERAS {
        text.push_str(&format!(
            r#"
[[cameras]]
id = "cam-{i}"
name = "Camera {i}"
ward = "Bến Nghé"
url = "{url}"
keyframe_only = true
fps = 0.5
[[cameras.zones]]
id = "all"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
[[cameras.zones]]
id = "lower-right"
polygon = [[0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.5, 1.0]]
[[cameras.zones]]
id = "top"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 0.33], [0.0, 0.33]]
[[cameras.rules]]
kind = "intrusion"
id = "enter-lower-right"
zone = "lower-right"
severity = "warning"
min_seconds = 1
clear_seconds = 6
[[cameras.rules]]
kind = "intrusion"
id = "enter-top"
zone = "top"
severity = "warning"
min_seconds = 1
clear_seconds = 6
[[cameras.rules]]
kind = "crowding"
id = "crowd"
zone = "all"
min_people = 7
min_seconds = 2
clear_seconds = 6
"#,
            url = camera_url.replace("{n}", &i.to_string()),
        ));
    }
    text
}

/// A `streetwatch router` process with its own data folder.
struct Router {
    _child: ChildGuard,
    page: String,
    data: PathBuf,
}

impl Router {
    fn start(config: &Path, data: &Path) -> Router {
        std::fs::create_dir_all(data).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_streetwatch"))
            .args(["router", "--config"])
            .arg(config)
            .args(["--name", "router-1", "--data-dir"])
            .arg(data)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(data.join("router.log")).unwrap())
            .spawn()
            .expect("spawn streetwatch router");
        let stdout = child.stdout.take().unwrap();
        let page = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| {
                l.strip_prefix("streetwatch: page at ")
                    .map(|u| u.trim_end_matches('/').to_string())
            });
        let router = Router {
            _child: ChildGuard(child),
            page: page.unwrap_or_default(),
            data: data.to_path_buf(),
        };
        assert!(!router.page.is_empty(), "router: {}", router.log());
        router
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("router.log")).unwrap_or_default()
    }

    /// The router's `/api/cameras`: the whole city as its page shows it.
    async fn city(&self, http: &reqwest::Client) -> Option<City> {
        let doc: serde_json::Value = http
            .get(format!("{}/api/cameras", self.page))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let cameras = doc["cameras"]
            .as_array()?
            .iter()
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
                (
                    s("id"),
                    Seen {
                        node: s("node"),
                        state: s("state"),
                        report: s("report"),
                    },
                )
            })
            .collect();
        Some(City { cameras })
    }

    /// Deliveries not yet in a final state in the router's outbox (`None` before it made its tables).
    fn unsettled(&self) -> Option<i64> {
        let db = rusqlite::Connection::open(self.data.join("streetwatch.db")).ok()?;
        db.query_row(
            "SELECT COUNT(*) FROM alert_deliveries WHERE state IN ('pending', 'sending')",
            [],
            |r| r.get(0),
        )
        .ok()
    }
}

/// One camera on the router's page.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    node: String,
    state: String,
    report: String,
}

#[derive(Debug)]
struct City {
    cameras: BTreeMap<String, Seen>,
}

impl City {
    /// The camera streams on `node` as far as the router knows: that node's fresh report says so.
    fn streams_on(&self, camera: &str, node: &str) -> bool {
        self.cameras
            .get(camera)
            .is_some_and(|s| s.node == node && s.state == "streaming" && s.report == "live")
    }

    fn per_node(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for s in self.cameras.values() {
            *out.entry(s.node.clone()).or_default() += 1;
        }
        out
    }
}

/// Every camera owned exactly once: the router shows it streaming on a live node's fresh report, the
/// leases bucket names that node, that node runs it streaming and no other node runs it.
fn owned_once(
    city: &City,
    leases: &BTreeMap<String, String>,
    running: &BTreeMap<String, BTreeMap<String, String>>,
    cameras: &[String],
) -> bool {
    cameras.iter().all(|id| {
        let Some(holder) = leases.get(id) else {
            return false;
        };
        let runners: Vec<&String> = running
            .iter()
            .filter(|(_, cams)| cams.contains_key(id))
            .map(|(n, _)| n)
            .collect();
        city.streams_on(id, holder)
            && runners == [holder]
            && running[holder].get(id).is_some_and(|s| s == "streaming")
    })
}

/// The incidents a node recorded, from its own database.
fn rows(dir: &Path, node: &str) -> Vec<IncidentRow> {
    Store::open(&dir.join("data").join(node).join("streetwatch.db"))
        .and_then(|s| s.incidents())
        .unwrap_or_default()
}

/// Every SMS the fake SMSC got, as (phone, incident, firing?) → how many; the incident is the last word
/// of the text (the template's `{incident}`).
fn sms_counts(kannel: &Kannel) -> BTreeMap<(String, String, bool), usize> {
    let mut got = BTreeMap::new();
    for sms in kannel.received() {
        let text = sms.text();
        let incident = text.split_whitespace().last().unwrap_or("?").to_string();
        let firing = !text.starts_with("[DA KET THUC]");
        *got.entry((sms.to.clone(), incident, firing)).or_insert(0) += 1;
    }
    got
}

/// Events of the routers' consumer not yet delivered plus delivered and not yet acknowledged.
async fn backlog(bus: &Bus) -> Option<u64> {
    let stream = bus.js.get_stream(bus.names.incidents_stream()).await.ok()?;
    let info = stream.consumer_info(DURABLE).await.ok()?;
    Some(info.num_pending + info.num_ack_pending as u64)
}

#[test]
fn three_nodes_and_a_router_fail_over_within_15_s_and_tell_each_incident_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start();
    let kannel = Kannel::start();
    let (mut footage, camera_url) = support::serve_cameras(CAMERAS);
    let cfg = dir.path().join("cluster.toml");
    std::fs::write(&cfg, config(dir.path(), &server, &kannel, &camera_url)).unwrap();
    let ids: Vec<String> = (0..CAMERAS).map(|i| format!("cam-{i}")).collect();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let (bus, res) = rt.block_on(async {
        let cluster = ClusterConfig {
            nats: SecretUrl::new(server.url()),
            prefix: PREFIX.into(),
            lease_seconds: LEASE_SECONDS,
            ..ClusterConfig::default()
        };
        let bus = Bus::connect(&cluster, "test").await.unwrap();
        let res = bus.ensure().await.unwrap();
        (bus, res)
    });

    // The nodes first: the router then finds every camera streaming, none reported down (a camera down
    // mutes its alerts) while the nodes start, which is slow on a loaded machine.
    let mut nodes: Vec<Node> = NODES
        .iter()
        .map(|n| Node::start(&cfg, n, dir.path(), TOKEN))
        .collect();
    let running = |nodes: &[Node]| -> BTreeMap<String, BTreeMap<String, String>> {
        nodes
            .iter()
            .map(|n| (n.name.clone(), rt.block_on(n.cameras(&http))))
            .collect()
    };
    let diagnose = |nodes: &[Node]| {
        nodes
            .iter()
            .map(|n| format!("--- {}\n{}", n.name, n.log_tail(15)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let streaming = wait_until(START, || {
        let r = running(&nodes);
        let leases = rt.block_on(holders(&res, &ids));
        ids.iter().all(|id| {
            leases
                .get(id)
                .is_some_and(|h| r[h].get(id).is_some_and(|s| s == "streaming"))
        })
    });
    assert!(streaming, "cameras not streaming: {}", diagnose(&nodes));
    let router = Router::start(&cfg, &dir.path().join("router"));
    let city = || rt.block_on(router.city(&http));
    let mut last = None;
    let settled = wait_until(START, || {
        let (Some(c), leases, r) = (city(), rt.block_on(holders(&res, &ids)), running(&nodes))
        else {
            return false;
        };
        let ok = owned_once(&c, &leases, &r, &ids) && c.per_node().len() == NODES.len();
        last = Some((c, leases, r));
        ok
    });
    assert!(
        settled,
        "not every camera owned once on three nodes: {last:?}\n{}",
        diagnose(&nodes)
    );
    // Incidents open and close on every node before the kill.
    let recorded = wait_until(START, || {
        NODES
            .iter()
            .all(|n| rows(dir.path(), n).iter().any(|r| r.closed_at.is_some()))
    });
    assert!(
        recorded,
        "no incident closed on some node: {}",
        diagnose(&nodes)
    );

    // SIGKILL the node with the most cameras, as one look at the router's page shows them.
    let before = city().unwrap();
    println!(
        "placement before the kill (router's page): {:?}",
        before.per_node()
    );
    let victim_name = before
        .per_node()
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(name, _)| name)
        .unwrap();
    let orphans: Vec<String> = before
        .cameras
        .iter()
        .filter(|(_, s)| s.node == victim_name)
        .map(|(id, _)| id.clone())
        .collect();
    let victim = nodes.iter().position(|n| n.name == victim_name).unwrap();
    let killed = Instant::now();
    nodes[victim].kill();
    let killed_at = streetwatch::types::Clock::now(&streetwatch::types::SystemClock);
    let dead = nodes.remove(victim);
    // When the orphans' leases were all taken, when their new nodes streamed them, and when the
    // router's page showed that (the figure asserted).
    let (mut leased, mut streamed) = (None, None);
    let failed_over = wait_until(Duration::from_secs(60), || {
        let leases = rt.block_on(holders(&res, &orphans));
        let taken = orphans
            .iter()
            .all(|id| leases.get(id).is_some_and(|h| *h != victim_name));
        if taken && leased.is_none() {
            leased = Some(killed.elapsed());
        }
        if taken && streamed.is_none() {
            let r = running(&nodes);
            if orphans
                .iter()
                .all(|id| r[&leases[id]].get(id).is_some_and(|s| s == "streaming"))
            {
                streamed = Some(killed.elapsed());
            }
        }
        city().is_some_and(|c| {
            orphans.iter().all(|id| {
                c.cameras
                    .get(id)
                    .is_some_and(|s| s.node != victim_name && c.streams_on(id, &s.node))
            })
        })
    });
    let failover = killed.elapsed();
    let secs =
        |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.1}", d.as_secs_f64()));
    println!(
        "failover: {} cameras of {victim_name} streaming on the others {:.1} s after SIGKILL on the router's page (leases taken at {} s, streaming on their nodes at {} s)",
        orphans.len(),
        failover.as_secs_f64(),
        secs(leased),
        secs(streamed),
    );
    assert!(
        failed_over,
        "not failed over: {:?}\n{}",
        city(),
        diagnose(&nodes)
    );
    assert!(failover <= FAILOVER, "failover took {failover:?}");
    let mut last = None;
    let once = wait_until(Duration::from_secs(30), || {
        let (Some(c), leases, r) = (city(), rt.block_on(holders(&res, &ids)), running(&nodes))
        else {
            return false;
        };
        let ok = owned_once(&c, &leases, &r, &ids);
        last = Some((c, leases, r));
        ok
    });
    assert!(once, "not owned once after the failover: {last:?}");
    println!("placement after the kill: {:?}", city().unwrap().per_node());

    // Settle: the survivors open and close incidents on the cameras they took over.
    let survivors: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let took_over = wait_until(START, || {
        survivors.iter().any(|n| {
            rows(dir.path(), n).iter().any(|r| {
                orphans.contains(&r.camera) && r.opened_at > killed_at.0 && r.closed_at.is_some()
            })
        })
    });
    assert!(
        took_over,
        "no incident closed on a camera taken over: {}",
        diagnose(&nodes)
    );
    for n in &mut nodes {
        n.terminate();
    }

    // Everything the nodes published reaches the router and its phones.
    let drained = wait_until(START, || {
        rt.block_on(backlog(&bus)) == Some(0) && router.unsettled() == Some(0)
    });
    assert!(drained, "router did not catch up: {}", router.log());
    let mut want: BTreeMap<(String, String, bool), usize> = BTreeMap::new();
    let mut left_open = BTreeSet::new();
    let mut per_node = BTreeMap::new();
    for n in NODES {
        let rows = rows(dir.path(), n);
        per_node.insert(n, rows.len());
        for r in rows {
            match r.closed_at {
                Some(_) => {}
                None if n == victim_name => {
                    left_open.insert(r.id.clone());
                }
                None => panic!("{n} stopped cleanly and left {} open", r.id),
            }
            // Firing once, and resolved once: the killed node's open ones by the router, once
            // another node runs their camera.
            for phone in PHONES {
                want.insert((phone.to_string(), r.id.clone(), true), 1);
                want.insert((phone.to_string(), r.id.clone(), false), 1);
            }
        }
    }
    let total: usize = want.values().sum();
    wait_until(START, || {
        let got = sms_counts(&kannel);
        want.keys().all(|k| got.contains_key(k)) && router.unsettled() == Some(0)
    });
    let got = sms_counts(&kannel);
    let sent: usize = got.values().sum();
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    let unexpected: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    println!(
        "incidents: {} recorded ({per_node:?}), {} left open by the killed {victim_name} (the router closes them); SMS: {sent} sent, {total} expected, {duplicates} duplicates, {} missing, {} unexpected",
        per_node.values().sum::<usize>(),
        left_open.len(),
        missing.len(),
        unexpected.len()
    );
    if !(missing.is_empty() && twice.is_empty() && unexpected.is_empty()) {
        let log = router.log();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        eprintln!(
            "---- router log (tail)\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    assert!(missing.is_empty(), "incidents not told: {missing:?}");
    assert!(twice.is_empty(), "SMS sent twice: {twice:?}");
    assert!(
        unexpected.is_empty(),
        "SMS no incident calls for: {unexpected:?}"
    );
    drop(dead);
    footage.0.kill().ok();
}

/// The README's cluster example is a valid configuration with what `node` and `router` need.
#[test]
fn the_cluster_demo_configuration_is_valid() {
    let file = support::root().join("pipelines/cluster-demo.toml");
    let stdout = support::check_config_ok(&file);
    assert!(stdout.contains("ok — 12 cameras"), "{stdout}");
    let config = streetwatch::config::Config::load(&file).unwrap();
    let cluster = config.cluster.expect("[cluster]");
    assert_eq!(cluster.nats.redacted(), "nats://127.0.0.1:4222");
    let alert = config.alert.expect("[alert]");
    assert!(
        alert.receivers.iter().all(|r| r.log.is_some()),
        "notices on the log, no gateway needed"
    );
    assert!(config.serve.is_some(), "[serve]: the router's page");
    for (i, c) in config.cameras.iter().enumerate() {
        let main = format!("rtsp://127.0.0.1:8554/cam/{i}");
        assert_eq!(c.url.get_ref().redacted(), main, "{}", c.id.get_ref());
    }
}
