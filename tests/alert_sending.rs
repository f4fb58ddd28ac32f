//! The notifier under broken peers: an SMTP server that goes silent mid-conversation, one receiver's backlog
//! beside another's fresh notice, and the SQLite file locked by another connection while sends are in flight.
//! The broken peers are real TCP servers in this process, speaking just enough SMTP or HTTP.

#[path = "support/alert_peers.rs"]
mod peers;
#[path = "support/alert_util.rs"]
mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peers::{SMTP_PASS, SMTP_USER, Smtp};
use streetwatch::alert::{AlertConfig, AlertHandle, AlertService, DeliveryRow, Store};
use streetwatch::types::SystemClock;
use tempfile::TempDir;
use util::{Gate, opened, serve_each, wait_deliveries};

/// What one connection to [`ScriptedSmtp`] does.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Smtp1 {
    /// Answers everything and takes the message.
    Healthy,
    /// Says nothing after MAIL FROM: nothing was handed over.
    SilentAtMail,
    /// Reads the whole message after DATA and never answers: it may have been delivered.
    SilentAfterBody,
}

/// A plain-text SMTP server that plays one [`Smtp1`] per connection (the last repeats). A silent
/// connection stays open until the client closes it; how long that took is recorded.
struct ScriptedSmtp {
    port: u16,
    /// Message bodies received (DATA up to the final dot), in order.
    bodies: Arc<Mutex<Vec<String>>>,
    /// How long each silent connection was held before the client gave up.
    held: Arc<Mutex<Vec<Duration>>>,
}

impl ScriptedSmtp {
    fn start(script: Vec<Smtp1>) -> Self {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (b, h) = (bodies.clone(), held.clone());
        let connections = AtomicUsize::new(0);
        let port = serve_each(move |s| {
            let n = connections.fetch_add(1, Ordering::SeqCst);
            let _ = smtp_session(s, script[n.min(script.len() - 1)], &b, &h);
        });
        Self { port, bodies, held }
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

fn smtp_session(
    mut s: TcpStream,
    mode: Smtp1,
    bodies: &Mutex<Vec<String>>,
    held: &Mutex<Vec<Duration>>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    // Silent: keep the connection open, answer nothing, and note when the client hangs up.
    let go_silent = |r: &mut BufReader<TcpStream>| {
        let t = Instant::now();
        let mut sink = Vec::new();
        let _ = r.read_to_end(&mut sink);
        held.lock().unwrap().push(t.elapsed());
    };
    s.write_all(b"220 scripted ESMTP\r\n")?;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => s.write_all(b"250-scripted\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")?,
            "MAIL" if mode == Smtp1::SilentAtMail => {
                go_silent(&mut r);
                return Ok(());
            }
            "MAIL" | "RCPT" | "RSET" | "NOOP" | "HELO" => s.write_all(b"250 OK\r\n")?,
            "DATA" => {
                s.write_all(b"354 end with <CRLF>.<CRLF>\r\n")?;
                let mut body = String::new();
                loop {
                    let mut l = String::new();
                    if r.read_line(&mut l)? == 0 {
                        return Ok(());
                    }
                    if l == ".\r\n" {
                        break;
                    }
                    body.push_str(&l);
                }
                bodies.lock().unwrap().push(body);
                if mode == Smtp1::SilentAfterBody {
                    go_silent(&mut r);
                    return Ok(());
                }
                s.write_all(b"250 2.0.0 queued\r\n")?;
            }
            "QUIT" => {
                s.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => s.write_all(b"502 not implemented\r\n")?,
        }
    }
}

fn scripted_email_config(port: u16) -> AlertConfig {
    AlertConfig::from_toml(&format!(
        r#"
[flood]
max_notices = 0
[retry]
initial_backoff = "100ms"
max_backoff = "300ms"
[[receivers]]
name = "district-command"
max_concurrency = 1
[receivers.email]
smtp_host = "127.0.0.1"
smtp_port = {port}
starttls = false
from = "streetwatch <alerts@q1.police.vn>"
to = ["truc-ban@q1.police.vn"]
send_timeout = "2s"
[route]
receiver = "district-command"
group_by = ["..."]
group_wait = "0s"
"#
    ))
    .unwrap()
}

fn message_id(body: &str) -> &str {
    body.lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .unwrap_or_else(|| panic!("no Message-ID in {body}"))
}

/// A one-slot receiver mailing through a [`ScriptedSmtp`] silent (as `silent`) on its first connection and
/// healthy after. One incident is submitted; returns once its e-mail was accepted, having checked that the
/// silent attempt was given up at the 2 s deadline.
struct SilentFirst {
    peer: ScriptedSmtp,
    db: PathBuf,
    alert: AlertHandle,
    _dir: TempDir,
}

fn silent_first(silent: Smtp1) -> (SilentFirst, DeliveryRow) {
    let peer = ScriptedSmtp::start(vec![silent, Smtp1::Healthy]);
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let alert =
        AlertService::start(scripted_email_config(peer.port), &db, Arc::new(SystemClock)).unwrap();
    alert.submit(opened("d1-nh-03", "Bến Nghé", None));
    // Without a deadline on the whole send the attempt waits for the server for ever, holding the only
    // slot; 30 s leaves room for a loaded machine and turns that hang into a failure.
    let rows = wait_deliveries(
        &db,
        Duration::from_secs(30),
        "the silent attempt given up and the resend accepted",
        |r| r.len() == 1 && r[0].state == "accepted",
    );
    let d = rows[0].clone();
    assert_eq!(d.attempts, 2, "{d:?}");
    let events = Store::open(&db).unwrap().delivery_events(d.id).unwrap();
    let failed = events
        .iter()
        .filter_map(|e| e.detail.as_deref())
        .find(|t| t.contains("failed"))
        .unwrap_or_else(|| panic!("no failed attempt: {events:?}"));
    assert!(failed.contains("2s"), "names the deadline: {failed}");
    let held = peer.held.lock().unwrap().clone();
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(
        held[0] >= Duration::from_millis(1500) && held[0] < Duration::from_secs(15),
        "the client gave up at its 2 s deadline, not before or long after: {held:?}"
    );
    let run = SilentFirst {
        peer,
        db,
        alert,
        _dir: dir,
    };
    (run, d)
}

#[test]
fn smtp_silent_after_data_is_given_up_counted_as_a_possible_duplicate_and_frees_the_slot() {
    let (run, d) = silent_first(Smtp1::SilentAfterBody);
    assert_eq!(
        d.possible_duplicates, 1,
        "the message went out before the server fell silent: {d:?}"
    );
    // The server did take the message twice: the duplicate that was counted.
    let bodies = run.peer.bodies();
    assert_eq!(bodies.len(), 2);
    assert_eq!(message_id(&bodies[0]), message_id(&bodies[1]));

    // The only slot is free again: the next notice goes out.
    run.alert.submit(opened("d1-nh-04", "Bến Nghé", None));
    let rows = wait_deliveries(&run.db, Duration::from_secs(30), "the next e-mail", |r| {
        r.len() == 2 && r.iter().all(|d| d.state == "accepted")
    });
    assert_eq!(rows[1].possible_duplicates, 0);
    assert_eq!(run.peer.bodies().len(), 3);
    run.alert.shutdown();
}

/// A server silent before DATA never received the message: the resend is no duplicate.
#[test]
fn smtp_silent_before_data_is_given_up_without_counting_a_duplicate() {
    let (run, d) = silent_first(Smtp1::SilentAtMail);
    assert_eq!(d.possible_duplicates, 0, "{d:?}");
    assert_eq!(run.peer.bodies().len(), 1);
    run.alert.shutdown();
}

/// An HTTP server that takes requests and never answers (a gateway hung behind its load balancer).
struct SilentHttp {
    port: u16,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl SilentHttp {
    fn start() -> Self {
        let connections = Arc::new(Mutex::new(Vec::new()));
        let held = connections.clone();
        let port = serve_each(move |s| held.lock().unwrap().push(s));
        Self { port, connections }
    }
}

/// After an SMS outage the SMS receiver has hundreds of due deliveries; an e-mail receiver's notice decided
/// later must not wait behind them.
#[test]
fn one_receivers_backlog_does_not_hold_back_another_receiver() {
    let gateway = SilentHttp::start();
    let smtp = Smtp::start();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let cfg = AlertConfig::from_toml(&format!(
        r#"
[flood]
max_notices = 0
[[receivers]]
name = "post"
max_concurrency = 2
[receivers.sms]
url = "http://127.0.0.1:{gw}/cgi-bin/sendsms"
username = "u"
password = "p"
numbers = ["0901234567"]
timeout = "60s"
[[receivers]]
name = "district-command"
[receivers.email]
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
tls_domain = "localhost"
username = "{SMTP_USER}"
password = "{SMTP_PASS}"
ca_file = "{ca}"
from = "streetwatch <{SMTP_USER}>"
to = ["truc-ban@q1.police.vn"]
[route]
receiver = "post"
group_by = ["..."]
group_wait = "0s"
[[route.routes]]
receiver = "district-command"
match = {{ ward = ["Đa Kao"] }}
"#,
        gw = gateway.port,
        smtp_port = smtp.port,
        ca = smtp.ca_file.display(),
    ))
    .unwrap();
    let alert = AlertService::start(cfg, &db, Arc::new(SystemClock)).unwrap();
    // More due SMS than the notifier looked at in one go (256); the gateway holds the first two.
    for i in 0..300 {
        alert.submit(opened(&format!("cam-{i}"), "Bến Nghé", None));
    }
    wait_deliveries(&db, Duration::from_secs(60), "300 SMS decided", |r| {
        r.len() == 300
    });
    peers::wait_for(
        "two SMS requests held by the gateway",
        Duration::from_secs(30),
        || (gateway.connections.lock().unwrap().len() >= 2).then_some(()),
    );
    let t = Instant::now();
    alert.submit(opened("d1-dk-01", "Đa Kao", None));
    let rows = wait_deliveries(
        &db,
        Duration::from_secs(20),
        "the e-mail sent while the SMS backlog waits",
        |r| {
            r.iter()
                .any(|d| d.channel == "email" && d.state == "accepted")
        },
    );
    eprintln!(
        "e-mail accepted {:?} after its incident, behind 300 due SMS",
        t.elapsed()
    );
    let sms_waiting = rows
        .iter()
        .filter(|d| d.channel == "sms" && d.state == "pending")
        .count();
    assert!(
        sms_waiting >= 290,
        "the SMS backlog is still there: {sms_waiting}"
    );
    assert_eq!(smtp.messages().len(), 1);
    alert.shutdown();
}

/// An HTTP receiver that holds every request until its gate is released, then answers 200.
fn held_hooks(gate: Arc<Gate>) -> u16 {
    serve_each(move |s| {
        let _ = held_session(s, &gate);
    })
}

fn held_session(mut s: TcpStream, gate: &Gate) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    loop {
        let mut len = 0usize;
        let mut first = true;
        loop {
            let mut l = String::new();
            if r.read_line(&mut l)? == 0 {
                return Ok(());
            }
            if l.trim().is_empty() && !first {
                break;
            }
            first = false;
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        gate.arrive(|_| true);
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")?;
    }
}

/// Asks the delivery-report listener (a task on the notifier's runtime) for a page it does not have;
/// returns how long the 404 took, or None if none came within `limit`.
fn probe(port: u16, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    write!(s, "GET /probe HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    (resp.split_whitespace().nth(1) == Some("404")).then(|| t.elapsed())
}

/// Another process (the CLI, a backup, the incident store) holding a write transaction on the shared file
/// must not stall the notifier's runtime: sends that finish meanwhile wait for the lock off the runtime's
/// threads, and everything else on it (here the delivery-report listener) keeps answering.
#[test]
fn a_long_write_transaction_elsewhere_does_not_stall_the_notifier_runtime() {
    let hooks = Arc::new(Gate::default());
    let hooks_port = held_hooks(hooks.clone());
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let cfg = AlertConfig::from_toml(&format!(
        r#"
[dlr]
listen = "127.0.0.1:0"
[flood]
max_notices = 0
[[receivers]]
name = "city-platform"
max_concurrency = 4
[receivers.webhook]
url = "http://127.0.0.1:{}/hooks"
secret = "city-integration-secret"
timeout = "60s"
[route]
receiver = "city-platform"
group_by = ["..."]
group_wait = "0s"
"#,
        hooks_port
    ))
    .unwrap();
    let alert = AlertService::start(cfg, &db, Arc::new(SystemClock)).unwrap();
    let dlr_port = alert.dlr_addr().unwrap().port();
    // More sends in flight than the runtime has threads.
    for i in 0..4 {
        alert.submit(opened(&format!("cam-{i}"), "Bến Nghé", None));
    }
    peers::wait_for(
        "four webhook calls in flight",
        Duration::from_secs(30),
        || (hooks.arrived() == 4).then_some(()),
    );
    assert!(probe(dlr_port, Duration::from_secs(5)).is_some());

    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.busy_timeout(Duration::from_secs(10)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let locked = Instant::now();
    // The four answers come while the file is locked: each send's outcome waits to be recorded.
    hooks.release();
    let hold = Duration::from_secs(6);
    let mut slowest = Duration::ZERO;
    let mut stalled = 0;
    while locked.elapsed() < hold {
        std::thread::sleep(Duration::from_millis(250));
        match probe(dlr_port, Duration::from_secs(2)) {
            Some(took) => slowest = slowest.max(took),
            None => stalled += 1,
        }
    }
    lock.execute_batch("ROLLBACK").unwrap();
    assert_eq!(
        stalled, 0,
        "the runtime stopped answering while another connection held the write lock (slowest answer {slowest:?})"
    );
    wait_deliveries(
        &db,
        Duration::from_secs(30),
        "the four outcomes recorded once the lock is gone",
        |r| r.len() == 4 && r.iter().all(|d| d.state == "accepted"),
    );
    alert.shutdown();
}

/// Deliveries left queued for a receiver that was then removed from the config are dead-lettered with the
/// reason at the next start, not left pending for ever.
#[test]
fn deliveries_of_a_removed_receiver_are_dead_lettered() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    // Nothing listens on this port: the webhook fails and waits for its retry.
    let closed = peers::free_port();
    let receiver = |name: &str| {
        format!(
            "[retry]\ninitial_backoff = \"10m\"\nmax_backoff = \"10m\"\n[[receivers]]\nname = \"{name}\"\n\
             webhook = {{ url = \"http://127.0.0.1:{closed}/hooks\", secret = \"city-integration-secret\" }}\n\
             [route]\nreceiver = \"{name}\"\ngroup_wait = \"0s\"\n"
        )
    };
    let alert = AlertService::start(
        AlertConfig::from_toml(&receiver("old-platform")).unwrap(),
        &db,
        Arc::new(SystemClock),
    )
    .unwrap();
    alert.submit(opened("d1-nh-03", "Bến Nghé", None));
    wait_deliveries(&db, Duration::from_secs(30), "a failed attempt", |r| {
        r.len() == 1 && r[0].state == "pending" && r[0].attempts == 1
    });
    alert.shutdown();

    let alert = AlertService::start(
        AlertConfig::from_toml(&receiver("new-platform")).unwrap(),
        &db,
        Arc::new(SystemClock),
    )
    .unwrap();
    // (The incident is still open, so the new receiver gets a notice of its own.)
    let rows = wait_deliveries(&db, Duration::from_secs(30), "dead-lettered", |r| {
        r[0].state == "dead"
    });
    assert_eq!(rows[0].receiver, "old-platform");
    assert_eq!(
        rows[0].last_error.as_deref(),
        Some("receiver \"old-platform\" is no longer configured")
    );
    alert.shutdown();
}
