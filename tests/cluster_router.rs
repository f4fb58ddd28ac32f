//! `streetwatch router` processes against a real nats-server and a real Kannel: incident events published
//! as a node publishes them (JSON on the camera's subject, `Nats-Msg-Id` set) are routed by two routers
//! sharing one durable consumer, and every SMS the configuration's routes call for reaches the phone
//! exactly once — with both routers working, with one SIGKILLed mid-burst, and with NATS restarted.

#[path = "support/http.rs"]
mod http;
#[path = "support/nats.rs"]
mod nats;
#[path = "support/alert_peers.rs"]
mod peers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nats::NatsServer;
use peers::{KANNEL_PASS, KANNEL_USER, Kannel, wait_for};
use streetwatch::cluster::router::DURABLE;
use streetwatch::cluster::{Bus, ClusterConfig, message_id};
use streetwatch::secret::SecretUrl;
use streetwatch::types::{
    CameraId, IncidentEvent, IncidentKey, IncidentPhase, RuleKind, Severity, Timestamp,
};
use tempfile::TempDir;

/// Routers start, reconnect and take over redelivered events within this on a loaded machine.
const SETTLE: Duration = Duration::from_secs(120);
const INCIDENTS: usize = 30;
/// The routers' page token, for `/metrics`.
const VIEWER: &str = "cluster-router-test-viewer";
const WARDS: [&str; 2] = ["Ben Nghe", "Da Kao"];

/// The phones of each receiver, and whether it is told of closes; the routes in [`config`] say who
/// gets what. Critical incidents also go to `command`.
const BEN_NGHE: &[&str] = &["+84901000001"];
const DA_KAO: &[&str] = &["+84901000002", "+84901000003"];
const COMMAND: &[&str] = &["+84901000009"];

/// Incident `i`: camera `cam-{i % 10}`, ward by camera, every fifth critical. Its camera name is its
/// label in the SMS (`I07`), so each SMS names exactly one incident.
struct Inc {
    i: usize,
}

impl Inc {
    fn camera(&self) -> String {
        format!("cam-{}", self.i % 10)
    }
    fn ward(&self) -> &'static str {
        WARDS[(self.i % 10) / 5]
    }
    fn critical(&self) -> bool {
        self.i.is_multiple_of(5)
    }
    fn label(&self) -> String {
        format!("I{:02}", self.i)
    }
    fn event(&self, phase: IncidentPhase, at: i64, count: u32) -> IncidentEvent {
        IncidentEvent {
            key: IncidentKey {
                camera: CameraId::new(&self.camera()),
                rule: format!("crowd-{}", self.i / 10),
                zone: "plaza".into(),
                episode: Timestamp(t0() + self.i as i64),
            },
            phase,
            at: Timestamp(at),
            kind: RuleKind::Crowding,
            severity: if self.critical() {
                Severity::Critical
            } else {
                Severity::Warning
            },
            camera_name: self.label(),
            ward: self.ward().into(),
            summary: format!("{count} people"),
            count,
            snapshot: None,
        }
    }
}

/// The test's time zero: now, as the routers' clock is the system's (an incident closed long ago is
/// past the router's memory of resolved alerts).
fn t0() -> i64 {
    static T0: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *T0.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    })
}

fn incidents() -> Vec<Inc> {
    (0..INCIDENTS).map(|i| Inc { i }).collect()
}

/// What the routes promise, written from the configuration: (phone, incident label, firing?) → 1.
/// Ben Nghe and command are told of closes; Da Kao is not.
fn expected(phase_closed: bool) -> BTreeMap<(String, String, bool), usize> {
    let mut want = BTreeMap::new();
    for inc in incidents() {
        let (ward_phones, ward_resolved) = match inc.ward() {
            "Ben Nghe" => (BEN_NGHE, true),
            _ => (DA_KAO, false),
        };
        let mut tell = |phones: &[&str], resolved: bool| {
            for p in phones {
                want.insert((p.to_string(), inc.label(), true), 1);
                if phase_closed && resolved {
                    want.insert((p.to_string(), inc.label(), false), 1);
                }
            }
        };
        tell(ward_phones, ward_resolved);
        if inc.critical() {
            tell(COMMAND, true);
        }
    }
    want
}

fn config(nats: &NatsServer, kannel: &Kannel) -> String {
    let receiver = |name: &str, phones: &[&str], resolved: bool| {
        format!(
            r#"
[[alert.receivers]]
name = "{name}"
send_resolved = {resolved}
max_concurrency = 4
[alert.receivers.sms]
url = "{url}"
username = "{KANNEL_USER}"
password = "{KANNEL_PASS}"
numbers = {phones:?}
strip_diacritics = true
template = "{{title}} {{camera}} #{{ref}}"
"#,
            url = kannel.sendsms_url()
        )
    };
    format!(
        r#"
[cluster]
nats = "{nats}"
prefix = "swtest"

[serve]
listen = "127.0.0.1:0"
[[serve.tokens]]
name = "wall"
role = "viewer"
token = "{VIEWER}"

[alert]
[alert.flood]
max_notices = 0
[alert.retry]
initial_backoff = "200ms"
max_backoff = "1s"
[alert.route]
group_by = ["..."]
group_wait = "1s"
group_interval = "1s"
repeat_interval = "24h"
[[alert.route.routes]]
receiver = "command"
continue = true
[alert.route.routes.match]
min_severity = "critical"
[[alert.route.routes]]
receiver = "ben-nghe"
[alert.route.routes.match]
ward = ["Ben Nghe"]
[[alert.route.routes]]
receiver = "da-kao"
[alert.route.routes.match]
ward = ["Da Kao"]
{}{}{}"#,
        receiver("ben-nghe", BEN_NGHE, true),
        receiver("da-kao", DA_KAO, false),
        receiver("command", COMMAND, true),
        nats = nats.url(),
    )
}

/// A `streetwatch router` child process, SIGKILLed on drop.
struct RouterProc {
    name: &'static str,
    data: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

impl RouterProc {
    fn start(name: &'static str, config: &Path, root: &Path) -> RouterProc {
        let mut r = RouterProc {
            name,
            data: root.join(name),
            config: config.to_path_buf(),
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.data).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.join("router.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_streetwatch"))
            .args(["router", "--config"])
            .arg(&self.config)
            .args(["--name", self.name, "--data-dir"])
            .arg(&self.data)
            .env("STREETWATCH_LOG", "info")
            // Its page's address is on stdout.
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.data.join("streetwatch.db")).unwrap()
    }

    /// (alerts known, deliveries not in a final state); `None` before the router made its tables.
    fn progress(&self) -> Option<(i64, i64)> {
        let db = self.db();
        let alerts = db
            .query_row("SELECT COUNT(*) FROM alert_alerts", [], |r| r.get(0))
            .ok()?;
        let open = db
            .query_row(
                "SELECT COUNT(*) FROM alert_deliveries WHERE state IN ('pending', 'sending')",
                [],
                |r| r.get(0),
            )
            .ok()?;
        Some((alerts, open))
    }

    fn suppressed(&self) -> i64 {
        self.db()
            .query_row(
                "SELECT COUNT(*) FROM alert_deliveries WHERE state = 'suppressed' AND last_error LIKE 'duplicate: claimed by router-%'",
                [],
                |r| r.get(0),
            )
            .unwrap_or(0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("router.log")).unwrap_or_default()
    }

    /// A sample of the router's `/metrics`, 0 if absent.
    fn metric(&self, series: &str) -> f64 {
        let log = self.log();
        let addr = log
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("streetwatch: page at http://"))
            .and_then(|a| a.strip_suffix('/'))
            .unwrap_or_else(|| panic!("{}: no page address in its log", self.name));
        http::get_ok(addr, "/metrics", VIEWER)
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for RouterProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The test's side of NATS: publishes as a node does, and reads the shared consumer's backlog.
struct Publisher {
    rt: tokio::runtime::Runtime,
    bus: Bus,
}

impl Publisher {
    fn connect(nats: &NatsServer) -> Publisher {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let cfg = ClusterConfig {
            nats: SecretUrl::new(nats.url()),
            prefix: "swtest".into(),
            ..ClusterConfig::default()
        };
        let bus = rt.block_on(async {
            let bus = Bus::connect(&cfg, "test-node").await.unwrap();
            bus.ensure().await.unwrap();
            bus
        });
        Publisher { rt, bus }
    }

    /// Publishes each event until the stream acknowledges it (a node retries the same way while NATS
    /// is away; the message id drops a publish that had landed before its acknowledgement was lost).
    fn publish(&self, events: &[IncidentEvent]) {
        self.rt.block_on(async {
            for e in events {
                let deadline = Instant::now() + SETTLE;
                loop {
                    let sent = self
                        .bus
                        .js
                        .send_publish(
                            self.bus.names.incident_subject(e.key.camera.as_str()),
                            async_nats::jetstream::message::PublishMessage::build()
                                .payload(serde_json::to_vec(e).unwrap().into())
                                .message_id(message_id(e)),
                        )
                        .await;
                    let acked = match sent {
                        Ok(ack) => ack.await.is_ok(),
                        Err(_) => false,
                    };
                    if acked {
                        break;
                    }
                    assert!(Instant::now() < deadline, "cannot publish {}", e.key);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
    }

    /// A message on an incident subject that is no incident event.
    fn publish_malformed(&self) {
        self.rt.block_on(async {
            let subject = self.bus.names.incident_subject("cam-0");
            let ack = self
                .bus
                .js
                .publish(subject, "not an incident event".into())
                .await
                .unwrap();
            ack.await.unwrap();
        });
    }

    /// Events of the shared consumer not yet delivered plus delivered and not yet acknowledged.
    fn backlog(&self) -> Option<u64> {
        self.rt.block_on(async {
            let stream = self
                .bus
                .js
                .get_stream(self.bus.names.incidents_stream())
                .await
                .ok()?;
            let info = stream.consumer_info(DURABLE).await.ok()?;
            Some(info.num_pending + info.num_ack_pending as u64)
        })
    }

    fn wait_drained(&self, what: &str) {
        wait_for(what, SETTLE, || (self.backlog()? == 0).then_some(()));
    }
}

fn phase_events(phase: IncidentPhase, at: i64) -> Vec<IncidentEvent> {
    let mut out = Vec::new();
    for inc in incidents() {
        match phase {
            IncidentPhase::Opened => {
                out.push(inc.event(IncidentPhase::Opened, at, 5));
                out.push(inc.event(IncidentPhase::Updated, at + 1_000, 6));
            }
            _ => {
                out.push(inc.event(IncidentPhase::Updated, at, 7));
                out.push(inc.event(IncidentPhase::Closed, at + 1_000, 7));
            }
        }
    }
    out
}

/// Every SMS the fake SMSC got, as (phone, incident label, firing?) → how many.
fn sms_counts(kannel: &Kannel) -> BTreeMap<(String, String, bool), usize> {
    let mut got = BTreeMap::new();
    for sms in kannel.received() {
        let text = sms.text();
        let label = text
            .split_whitespace()
            .find(|w| w.len() == 3 && w.starts_with('I'))
            .unwrap_or("?")
            .to_string();
        let firing = !text.starts_with("[DA KET THUC]");
        *got.entry((sms.to.clone(), label, firing)).or_insert(0) += 1;
    }
    got
}

/// Waits until the phones got as many SMS as `want` holds and both routers' outboxes are settled, then
/// compares SMS by SMS.
fn assert_told_once(
    kannel: &Kannel,
    routers: &[&RouterProc],
    want: &BTreeMap<(String, String, bool), usize>,
    what: &str,
) {
    let total: usize = want.values().sum();
    // Not a panic on time-out: the comparison below says which SMS are missing.
    let deadline = Instant::now() + SETTLE;
    while kannel.received().len() < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for("outboxes settled", SETTLE, || {
        routers
            .iter()
            .all(|r| r.progress().is_some_and(|(_, open)| open == 0))
            .then_some(())
    });
    let got = sms_counts(kannel);
    if &got != want {
        for r in routers {
            eprintln!("---- {} log (tail)", r.name);
            let log = r.log();
            eprintln!("{}", &log[log.len().saturating_sub(6000)..]);
        }
    }
    let extra: Vec<_> = got
        .iter()
        .filter(|(k, n)| want.get(*k) != Some(n))
        .collect();
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what}: SMS not exactly once — wrong counts {extra:?}, missing {missing:?}"
    );
}

/// One scenario at a time: each starts Kannel and two routers, and two of them at once on a loaded
/// two-core runner can starve a Kannel box past its start-up wait.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Setup {
    _dir: TempDir,
    root: PathBuf,
    config: PathBuf,
    nats: NatsServer,
    kannel: Kannel,
    /// Last, so it is released after the peers are gone.
    _alone: std::sync::MutexGuard<'static, ()>,
}

fn setup() -> Setup {
    let alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
    let dir = TempDir::new().unwrap();
    let nats = NatsServer::start();
    let kannel = Kannel::start();
    let file = dir.path().join("router.toml");
    std::fs::write(&file, config(&nats, &kannel)).unwrap();
    Setup {
        _alone: alone,
        root: dir.path().to_path_buf(),
        _dir: dir,
        config: file,
        nats,
        kannel,
    }
}

/// Routers a and b on the setup's configuration, up, and the test's publisher.
fn start_two(s: &Setup) -> (RouterProc, RouterProc, Publisher) {
    let a = RouterProc::start("router-a", &s.config, &s.root);
    let b = RouterProc::start("router-b", &s.config, &s.root);
    let publisher = Publisher::connect(&s.nats);
    wait_for("both routers up", SETTLE, || {
        (a.progress().is_some() && b.progress().is_some() && publisher.backlog().is_some())
            .then_some(())
    });
    (a, b, publisher)
}

/// Closes every incident and checks that each SMS, firing and resolved, went out once.
fn close_all(s: &Setup, publisher: &Publisher, routers: &[&RouterProc], what: &str) {
    publisher.publish(&phase_events(IncidentPhase::Closed, t0() + 40_000));
    publisher.wait_drained("closes committed");
    assert_told_once(&s.kannel, routers, &expected(true), what);
}

#[test]
fn two_routers_share_the_events_and_each_sms_goes_out_once() {
    let s = setup();
    let (a, b, publisher) = start_two(&s);
    publisher.publish(&phase_events(IncidentPhase::Opened, t0() + 10_000));
    assert_told_once(&s.kannel, &[&a, &b], &expected(false), "opened");

    // Throughput: a burst of updates through JetStream into the routers' committed state.
    let burst: Vec<IncidentEvent> = (0..60)
        .flat_map(|n| {
            incidents().into_iter().map(move |inc| {
                inc.event(
                    IncidentPhase::Updated,
                    t0() + 20_000 + n * 100,
                    8 + n as u32,
                )
            })
        })
        .collect();
    let started = Instant::now();
    publisher.publish(&burst);
    let published = started.elapsed();
    publisher.wait_drained("the update burst committed and acknowledged");
    let took = started.elapsed();
    println!(
        "cluster router throughput: {} events published in {:.2} s, committed and acknowledged by two routers in {:.2} s: {:.0} events/s (publish → committed)",
        burst.len(),
        published.as_secs_f64(),
        took.as_secs_f64(),
        burst.len() as f64 / took.as_secs_f64()
    );

    publisher.publish_malformed();
    close_all(&s, &publisher, &[&a, &b], "closed");
    let (alerts_a, _) = a.progress().unwrap();
    let (alerts_b, _) = b.progress().unwrap();
    assert!(
        alerts_a > 0 && alerts_b > 0,
        "both routers took events: a knows {alerts_a} alerts, b {alerts_b}"
    );
    // Each event went to one router and was acknowledged once: two per incident opening, the burst,
    // two per incident closing. The one malformed message was terminated by whichever router took it.
    let outcome = |r: &RouterProc, o: &str| {
        r.metric(&format!(
            "streetwatch_router_consumer_events_total{{outcome=\"{o}\"}}"
        ))
    };
    let committed = [outcome(&a, "committed"), outcome(&b, "committed")];
    assert_eq!(
        committed.iter().sum::<f64>(),
        (INCIDENTS * 2 + burst.len() + INCIDENTS * 2) as f64,
        "events committed by a and b: {committed:?}"
    );
    assert!(committed.iter().all(|&n| n > 0.0), "{committed:?}");
    assert_eq!(outcome(&a, "malformed") + outcome(&b, "malformed"), 1.0);
    // Every close is shared through the claims bucket, and each router follows all of them.
    wait_for("both routers followed every shared close", SETTLE, || {
        [&a, &b]
            .iter()
            .all(|r| outcome(r, "shared_close") == INCIDENTS as f64)
            .then_some(())
    });
    println!(
        "deliveries suppressed as claimed by the other router: a {}, b {}",
        a.suppressed(),
        b.suppressed()
    );
}

#[test]
fn a_router_killed_mid_burst_leaves_its_events_to_the_other_and_no_sms_twice() {
    let s = setup();
    let (mut a, b, publisher) = start_two(&s);
    // One at a time until router a has committed some: then it is killed in the middle of the burst.
    let opened = phase_events(IncidentPhase::Opened, t0() + 10_000);
    let mut rest = opened.iter();
    for e in rest.by_ref() {
        publisher.publish(std::slice::from_ref(e));
        if a.progress().is_some_and(|(n, _)| n > 0) {
            break;
        }
    }
    let rest: Vec<IncidentEvent> = rest.cloned().collect();
    assert!(!rest.is_empty(), "router a took no event of the burst");
    a.kill();
    let before = b.progress().unwrap().0;
    publisher.publish(&rest);
    // a is gone: everything, its unacknowledged events too (after the ack wait), is b's to commit.
    publisher.wait_drained("router b took over");
    assert!(b.progress().unwrap().0 > before);
    // a comes back with its own database and name: what it had committed but not yet told is told now,
    // what b told meanwhile is not told twice.
    a.spawn();
    assert_told_once(
        &s.kannel,
        &[&a, &b],
        &expected(false),
        "opened, one router killed",
    );
    close_all(&s, &publisher, &[&a, &b], "closed, one router killed");
}

#[test]
fn nats_restarted_during_a_burst_every_incident_is_told_once() {
    let mut s = setup();
    let (a, b, publisher) = start_two(&s);
    let opened = phase_events(IncidentPhase::Opened, t0() + 10_000);
    let (first, rest) = opened.split_at(opened.len() / 3);
    publisher.publish(first);
    s.nats.restart(Duration::from_secs(3));
    publisher.publish(rest);
    publisher.wait_drained("the burst committed after NATS returned");
    assert_told_once(
        &s.kannel,
        &[&a, &b],
        &expected(false),
        "opened, NATS restarted",
    );
    close_all(&s, &publisher, &[&a, &b], "closed, NATS restarted");
}

#[test]
fn a_router_without_cluster_or_alert_tables_names_the_file_and_the_table() {
    let dir = TempDir::new().unwrap();
    for (text, table) in [
        ("[alert]\n", "[cluster]"),
        ("[cluster]\nnats = \"nats://127.0.0.1:4222\"\n", "[alert]"),
    ] {
        let file = dir.path().join("router.toml");
        std::fs::write(&file, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_streetwatch"))
            .args(["router", "--name", "r", "--config"])
            .arg(&file)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains(&file.display().to_string()) && err.contains(table),
            "{err}"
        );
    }
}
