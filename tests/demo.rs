//! `streetwatch demo` as a newcomer meets it: the real binary, run in an empty folder, prints its page's
//! address and two fresh tokens; within seconds of an incident an alert has a delivered notice; the
//! footage loops on the server side, so no camera sees its stream end or restarts; the log carries no
//! colour codes when it is not a terminal.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the demo runs; longer than the shortest clip (bikes.mp4, 10 s) twice over.
const RUN_SECONDS: u64 = 60;

/// Lines of a stream with the time each arrived.
type Lines = Arc<Mutex<Vec<(Duration, String)>>>;

fn collect(stream: impl Read + Send + 'static, started: Instant) -> Lines {
    let lines: Lines = Arc::default();
    let out = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            out.lock().unwrap().push((started.elapsed(), line));
        }
    });
    lines
}

fn find(lines: &Lines, prefix: &str) -> Option<String> {
    lines
        .lock()
        .unwrap()
        .iter()
        .find_map(|(_, l)| l.strip_prefix(prefix).map(str::to_string))
}

/// The alerts that have a notice delivered, with the channel and receiver, read from the demo's database.
fn delivered_alerts(db: &std::path::Path) -> Vec<(String, String, String)> {
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return Vec::new();
    };
    let _ = conn.busy_timeout(Duration::from_secs(5));
    let Ok(mut stmt) = conn.prepare(
        "SELECT a.key, d.channel, d.receiver FROM alert_alerts a \
         JOIN alert_notice_alerts n ON n.alert_key = a.key \
         JOIN alert_deliveries d ON d.notice_id = n.notice_id WHERE d.state = 'delivered'",
    ) else {
        return Vec::new(); // not created yet
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

/// `GET path` with a bearer token; the status line.
fn get_status(addr: &str, path: &str, token: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut first = String::new();
    BufReader::new(s).read_line(&mut first).unwrap();
    first.trim_end().to_string()
}

#[test]
fn the_demo_shows_its_page_and_tokens_and_a_delivered_alert_with_cameras_that_never_restart() {
    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = support::ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_streetwatch"))
            .args(["demo", "--seconds", &RUN_SECONDS.to_string()])
            .current_dir(work.path())
            // Shipped files (pipelines, models, fixtures) from this checkout, as scripts/test.sh does.
            .env("STREETWATCH_HOME", support::root())
            .env_remove("NO_COLOR")
            .env_remove("STREETWATCH_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn streetwatch demo"),
    );
    let stdout = collect(child.0.stdout.take().unwrap(), started);
    let stderr = collect(child.0.stderr.take().unwrap(), started);

    // The page's address and both tokens, printed once the server listens.
    assert!(
        support::wait_until(Duration::from_secs(120), || find(
            &stdout,
            "operator token: "
        )
        .is_some()),
        "no tokens printed; stdout {:?}\nstderr {:?}",
        stdout.lock().unwrap(),
        stderr.lock().unwrap()
    );
    let url = find(&stdout, "streetwatch demo: page at ").expect("the page's address");
    let viewer = find(&stdout, "viewer token: ").unwrap();
    let operator = find(&stdout, "operator token: ").unwrap();
    let addr = url
        .strip_prefix("http://127.0.0.1:")
        .and_then(|rest| rest.strip_suffix('/'))
        .and_then(|port| port.parse::<u16>().ok())
        .map(|port| format!("127.0.0.1:{port}"))
        .unwrap_or_else(|| panic!("{url:?} is not http://127.0.0.1:PORT/"));
    for t in [&viewer, &operator] {
        assert!(
            t.len() >= 24 && t.chars().all(|c| c.is_ascii_alphanumeric()),
            "token {t:?}"
        );
    }
    assert_ne!(viewer, operator);
    // A live HTTP server is at that address (the routes are other parts' business).
    let status = get_status(&addr, "/api/alerts", &viewer);
    assert!(status.starts_with("HTTP/1.1 "), "{status:?}");

    // An incident becomes an alert whose notice is delivered (to the log receivers), while the demo runs.
    let db = work.path().join("data/streetwatch.db");
    let mut delivered = Vec::new();
    let seen = support::wait_until(Duration::from_secs(RUN_SECONDS), || {
        delivered = delivered_alerts(&db);
        !delivered.is_empty()
    });
    assert!(
        seen,
        "no alert with a delivered notice within {RUN_SECONDS} s; stderr:\n{}",
        stderr
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        delivered
            .iter()
            .all(|(_, channel, receiver)| channel == "log"
                && ["ben-nghe-duty", "district-duty"].contains(&receiver.as_str())),
        "{delivered:?}"
    );
    let notices = std::fs::read_to_string(work.path().join("data/notices.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(notices.lines().next().unwrap()).unwrap();
    assert!(
        first["text"].as_str().is_some_and(|t| !t.is_empty()),
        "{first}"
    );

    // The demo stops by itself after --seconds.
    let exited = support::wait_until(Duration::from_secs(RUN_SECONDS + 60), || {
        matches!(child.0.try_wait(), Ok(Some(_)))
    });
    assert!(exited, "the demo did not stop after {RUN_SECONDS} s");
    assert!(child.0.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(200)); // the readers take the last lines
    let err = stderr.lock().unwrap().clone();
    let all: Vec<&str> = err.iter().map(|(_, l)| l.as_str()).collect();
    let text = all.join("\n");
    assert!(!text.contains('\u{1b}'), "colour codes in a piped log");
    assert!(!text.contains("server ended the stream"), "{text}");
    assert!(
        !all.iter()
            .any(|l| l.contains("stream failed") && l.contains("d1-demo-vtest")),
        "{text}"
    );
    for t in [&viewer, &operator] {
        assert!(!text.contains(t.as_str()), "a token in the log");
    }
    // Camera health, logged every 15 s: every camera, the 10 s clip too, has run past its clip's end
    // without a restart.
    let late: Vec<&str> = err
        .iter()
        .filter(|(at, l)| *at > Duration::from_secs(25) && l.contains("camera health"))
        .map(|(_, l)| l.as_str())
        .collect();
    for camera in [
        "d1-demo-vtest",
        "d1-demo-parking",
        "d1-demo-table",
        "d1-demo-bikes",
        "d1-demo-kerb",
        "d1-demo-road",
    ] {
        let lines: Vec<&&str> = late
            .iter()
            .filter(|l| l.contains(&format!("camera={camera} ")))
            .collect();
        assert!(!lines.is_empty(), "no health line for {camera}:\n{text}");
        for l in lines {
            assert!(l.contains(" restarts=0 "), "{l}");
        }
    }
}
