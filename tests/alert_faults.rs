//! Faults with a real Kannel: the gateway down for a while, the SMSC link down, and the router process
//! SIGKILLed between the decision and the delivery. Nothing may be lost; duplicates are counted and at most
//! one per notice.

#[path = "support/alert_peers.rs"]
mod peers;
#[path = "support/alert_util.rs"]
mod util;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use peers::{KANNEL_PASS, KANNEL_USER, Kannel};
use streetwatch::alert::{AlertConfig, AlertService, Store};
use streetwatch::types::SystemClock;
use tempfile::TempDir;
use util::{Gate, opened, serve_each, wait_deliveries};

/// One notice per incident, at once; quick retries; stripped text so each notice is one SMS part. `extra`
/// goes into the receiver's table, `sms_extra` into its `sms` table.
fn config(url: &str, extra: &str, sms_extra: &str) -> String {
    format!(
        r#"
[dlr]
listen = "127.0.0.1:0"
[flood]
max_notices = 0
[retry]
initial_backoff = "100ms"
max_backoff = "500ms"
[[receivers]]
name = "post"
max_concurrency = 4
{extra}
[receivers.sms]
url = "{url}"
username = "{KANNEL_USER}"
password = "{KANNEL_PASS}"
numbers = ["0901234567"]
strip_diacritics = true
{sms_extra}
[route]
receiver = "post"
group_by = ["..."]
group_wait = "0s"
"#
    )
}

/// Notice id → how many times the phone got it (the `#id` every SMS ends with).
fn received_per_notice(kannel: &Kannel) -> BTreeMap<i64, usize> {
    let mut out = BTreeMap::new();
    for sms in kannel.received() {
        let text = sms.text();
        let id: i64 = text
            .rsplit('#')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no #ref in {text:?}"));
        *out.entry(id).or_default() += 1;
    }
    out
}

fn delivered(state: &str) -> bool {
    matches!(state, "accepted" | "delivered")
}

#[test]
fn gateway_down_for_a_while_then_every_notice_is_delivered_once() {
    let mut kannel = Kannel::start();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let alert = AlertService::start(
        AlertConfig::from_toml(&config(&kannel.sendsms_url(), "", "")).unwrap(),
        &db,
        Arc::new(SystemClock),
    )
    .unwrap();

    // Deadlines are generous: on a loaded machine Kannel's restart alone can take many seconds; polling
    // returns as soon as the condition holds.
    // The gateway's HTTP side goes away: connections are refused and deliveries wait, retrying.
    kannel.kill_smsbox();
    for i in 0..8 {
        alert.submit(opened(&format!("cam-{i}"), "Bến Nghé", None));
    }
    wait_deliveries(
        &db,
        Duration::from_secs(60),
        "8 deliveries failing and retrying",
        |r| r.len() == 8 && r.iter().all(|d| d.state == "pending" && d.attempts >= 2),
    );
    // Then bearerbox crashes too, and the whole gateway comes back some time later.
    kannel.kill_bearerbox();
    std::thread::sleep(Duration::from_millis(500));
    kannel.start_bearerbox();
    kannel.start_fakesmsc();
    kannel.start_smsbox();
    let rows = wait_deliveries(&db, Duration::from_secs(60), "all delivered", |r| {
        r.iter().all(|d| delivered(&d.state))
    });
    let got = kannel.wait_received(8, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let per = received_per_notice(&kannel);
    assert_eq!(per.len(), 8, "{got:?}");
    assert!(
        per.values().all(|&n| n == 1),
        "each notice exactly once: {per:?}"
    );
    assert!(rows.iter().all(|d| d.possible_duplicates == 0));
    let events = Store::open(&db)
        .unwrap()
        .delivery_events(rows[0].id)
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.detail.as_deref().unwrap_or("").contains("retry at")),
        "{events:?}"
    );
    alert.shutdown();
}

#[test]
fn smsc_link_down_gateway_queues_then_delivery_reports_confirm() {
    let mut kannel = Kannel::start();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let alert = AlertService::start(
        AlertConfig::from_toml(&config(&kannel.sendsms_url(), "", "")).unwrap(),
        &db,
        Arc::new(SystemClock),
    )
    .unwrap();
    kannel.kill_fakesmsc();
    for i in 0..5 {
        alert.submit(opened(&format!("cam-{i}"), "Đa Kao", None));
    }
    // Kannel takes them with "3: Queued for later delivery".
    let rows = wait_deliveries(
        &db,
        Duration::from_secs(20),
        "5 queued at the gateway",
        |r| r.len() == 5 && r.iter().all(|d| d.state == "queued"),
    );
    assert!(rows.iter().all(|d| {
        d.gateway_reply
            .as_deref()
            .unwrap()
            .contains("3: Queued for later delivery")
    }));
    kannel.start_fakesmsc();
    wait_deliveries(
        &db,
        Duration::from_secs(30),
        "delivery reports for all 5",
        |r| r.iter().all(|d| d.state == "delivered"),
    );
    let per = received_per_notice(&kannel);
    assert_eq!(per.len(), 5);
    assert!(per.values().all(|&n| n == 1), "{per:?}");
    alert.shutdown();
}

/// The router process for the SIGKILL test: the parent re-runs this test binary with these variables set,
/// so the child is the real service in a process of its own. Without them (a normal test run) it returns.
#[test]
fn child_router_process() {
    let (Ok(cfg), Ok(db)) = (
        std::env::var("SW_ALERT_CHILD_CONFIG"),
        std::env::var("SW_ALERT_CHILD_DB"),
    ) else {
        return;
    };
    let submit: usize = std::env::var("SW_ALERT_CHILD_SUBMIT")
        .unwrap()
        .parse()
        .unwrap();
    let tag = std::env::var("SW_ALERT_CHILD_TAG").unwrap();
    let cfg = AlertConfig::from_toml(&std::fs::read_to_string(cfg).unwrap()).unwrap();
    let alert = AlertService::start(cfg, Path::new(&db), Arc::new(SystemClock)).unwrap();
    for i in 0..submit {
        alert.submit(opened(&format!("{tag}-{i}"), "Bến Nghé", None));
    }
    // Runs until the parent kills it.
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The child router process; SIGKILLed on drop too, so a failing test leaves no process behind.
struct ChildRouter(Option<Child>);

impl Drop for ChildRouter {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_child(cfg: &Path, db: &Path, submit: usize, tag: &str) -> ChildRouter {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_router_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SW_ALERT_CHILD_CONFIG", cfg)
        .env("SW_ALERT_CHILD_DB", db)
        .env("SW_ALERT_CHILD_SUBMIT", submit.to_string())
        .env("SW_ALERT_CHILD_TAG", tag)
        .spawn()
        .unwrap();
    ChildRouter(Some(child))
}

/// Child::kill is SIGKILL on Unix: no destructor, no flush, as in a crash.
fn sigkill(child: ChildRouter) {
    drop(child);
}

#[test]
fn sigkill_between_decision_and_delivery_loses_nothing_and_duplicates_at_most_once() {
    let mut kannel = Kannel::start_without_smsbox();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let cfg = dir.path().join("alert.toml");
    // 20 starts per second: phase 2's deliveries take long enough to be caught mid-way.
    std::fs::write(
        &cfg,
        config(&kannel.sendsms_url(), "rate_per_second = 20.0", ""),
    )
    .unwrap();

    // Phase 1: decided and written to the outbox while the gateway is unreachable, then killed.
    let child = spawn_child(&cfg, &db, 10, "a");
    wait_deliveries(
        &db,
        Duration::from_secs(30),
        "10 deliveries decided and tried",
        |r| r.len() == 10 && r.iter().all(|d| d.attempts >= 1 && d.state == "pending"),
    );
    sigkill(child);
    kannel.start_smsbox();
    let child = spawn_child(&cfg, &db, 0, "a");
    wait_deliveries(
        &db,
        Duration::from_secs(30),
        "phase 1 delivered after restart",
        |r| r.iter().all(|d| delivered(&d.state)),
    );
    sigkill(child);
    kannel.wait_received(10, Duration::from_secs(20));
    let per = received_per_notice(&kannel);
    assert_eq!(per.len(), 10);
    assert!(
        per.values().all(|&n| n == 1),
        "nothing was in flight, so no duplicate: {per:?}"
    );

    // Phase 2: killed while delivering.
    let child = spawn_child(&cfg, &db, 30, "b");
    wait_deliveries(
        &db,
        Duration::from_secs(30),
        "phase 2 decided and partly delivered",
        |r| r.len() == 40 && r.iter().filter(|d| delivered(&d.state)).count() >= 16,
    );
    sigkill(child);
    let child = spawn_child(&cfg, &db, 0, "b");
    let rows = wait_deliveries(
        &db,
        Duration::from_secs(30),
        "everything delivered after the second restart",
        |r| r.len() == 40 && r.iter().all(|d| delivered(&d.state)),
    );
    sigkill(child);
    let counted: i64 = rows.iter().map(|d| d.possible_duplicates).sum();
    // Kannel delivers what it accepted; give the last ones a moment to reach the fake SMSC.
    let per = util_wait_per_notice(&kannel, 40);
    let notices: Vec<i64> = rows.iter().map(|d| d.notice_id).collect();
    for id in &notices {
        let n = per.get(id).copied().unwrap_or(0);
        assert!(
            (1..=2).contains(&n),
            "notice {id} received {n} times: {per:?}"
        );
    }
    let duplicated = per.values().filter(|&&n| n == 2).count() as i64;
    assert!(
        duplicated <= counted,
        "{duplicated} duplicates on the phone but only {counted} counted"
    );
    assert!(rows.iter().all(|d| d.possible_duplicates <= 1));
    eprintln!(
        "SIGKILL mid-delivery: {duplicated} duplicate SMS, {counted} deliveries flagged as possible duplicates"
    );
}

fn util_wait_per_notice(kannel: &Kannel, notices: usize) -> BTreeMap<i64, usize> {
    peers::wait_for(
        "every notice at the fake SMSC",
        Duration::from_secs(20),
        || {
            let per = received_per_notice(kannel);
            (per.len() >= notices).then_some(per)
        },
    )
}

/// An HTTP gateway in front of Kannel's sendsms that holds the first request it gets until released, then
/// passes it on; later requests pass straight through. One request per connection.
struct HoldingGateway {
    port: u16,
    gate: Arc<Gate>,
}

impl HoldingGateway {
    fn start(upstream: u16) -> Self {
        let gate = Arc::new(Gate::default());
        let g = gate.clone();
        let port = serve_each(move |s| {
            let _ = hold_then_forward(s, upstream, &g);
        });
        Self { port, gate }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/cgi-bin/sendsms", self.port)
    }
}

fn hold_then_forward(mut client: TcpStream, upstream: u16, gate: &Gate) -> std::io::Result<()> {
    let mut r = BufReader::new(client.try_clone()?);
    let mut first = String::new();
    r.read_line(&mut first)?;
    // HTTP/1.0 to Kannel, so it closes the connection after its answer.
    let mut request = first.replacen("HTTP/1.1", "HTTP/1.0", 1);
    let mut len = 0;
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            return Ok(());
        }
        if l.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("connection") {
                continue;
            }
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        request.push_str(&l);
    }
    request.push_str("\r\n");
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    gate.arrive(|n| n == 1);
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(request.as_bytes())?;
    up.write_all(&body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    // For the held request the caller is gone by now; the gateway has done its work all the same.
    client.write_all(&answer)
}

/// SIGKILL while the gateway holds the request: the delivery is `sending` when the process dies, and the
/// gateway then sends the SMS anyway. After the restart it is sent exactly once more: the phone gets two
/// copies, and the delivery says one possible duplicate.
#[test]
fn sigkill_while_the_gateway_holds_the_request_resends_once_and_counts_the_duplicate() {
    let kannel = Kannel::start();
    let gateway = HoldingGateway::start(kannel.sendsms_port);
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let cfg = dir.path().join("alert.toml");
    // A long request timeout: the child must still be waiting for the gateway when it is killed.
    std::fs::write(&cfg, config(&gateway.url(), "", "timeout = \"10m\"")).unwrap();

    let child = spawn_child(&cfg, &db, 1, "held");
    peers::wait_for(
        "the SMS request at the gateway",
        Duration::from_secs(60),
        || (gateway.gate.arrived() == 1).then_some(()),
    );
    let rows = Store::open(&db).unwrap().deliveries(None).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].state, "sending",
        "killed mid-delivery: {:?}",
        rows[0]
    );
    sigkill(child);
    gateway.gate.release();
    kannel.wait_received(1, Duration::from_secs(60));

    let child = spawn_child(&cfg, &db, 0, "held");
    let rows = wait_deliveries(
        &db,
        Duration::from_secs(60),
        "the delivery sent again after the restart",
        |r| r.len() == 1 && delivered(&r[0].state),
    );
    let d = &rows[0];
    assert_eq!(d.attempts, 2, "{d:?}");
    assert_eq!(d.possible_duplicates, 1, "{d:?}");
    let per = wait_copies(&kannel, d.notice_id, 2);
    sigkill(child);
    assert_eq!(
        per.get(&d.notice_id),
        Some(&2),
        "the held copy and one resend, no more: {per:?}"
    );
    assert_eq!(gateway.gate.arrived(), 2);
}

/// Waits until notice `id` reached the fake SMSC `copies` times, then a moment more for any extra copy.
fn wait_copies(kannel: &Kannel, id: i64, copies: usize) -> BTreeMap<i64, usize> {
    peers::wait_for(
        &format!("{copies} copies of notice {id} at the fake SMSC"),
        Duration::from_secs(60),
        || (received_per_notice(kannel).get(&id) >= Some(&copies)).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(1));
    received_per_notice(kannel)
}
