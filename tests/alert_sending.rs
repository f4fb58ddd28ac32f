//! The notifier under broken peers: an SMTP server that goes silent mid-conversation.
//! The broken peers are real TCP servers in this process, speaking just enough SMTP.

#[path = "support/alert_peers.rs"]
mod peers;
#[path = "support/alert_util.rs"]
mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streetwatch::alert::{AlertConfig, AlertHandle, AlertService, DeliveryRow, Store};
use streetwatch::types::SystemClock;
use tempfile::TempDir;
use util::{opened, wait_deliveries};

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
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (b, h) = (bodies.clone(), held.clone());
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(s) = stream else { return };
                let mode = script[n.min(script.len() - 1)];
                let (b, h) = (b.clone(), h.clone());
                std::thread::spawn(move || {
                    let _ = smtp_session(s, mode, &b, &h);
                });
            }
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
