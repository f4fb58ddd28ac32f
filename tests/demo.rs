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

/// The binary with `args` in `dir` (shipped files from this checkout, as scripts/test.sh sets them, and
/// the default log without colour settings), its output collected line by line.
fn spawn(args: &[&str], dir: &std::path::Path) -> (support::ChildGuard, Lines, Lines) {
    let started = Instant::now();
    let mut child = support::ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_streetwatch"))
            .args(args)
            .current_dir(dir)
            .env("STREETWATCH_HOME", support::root())
            .env_remove("NO_COLOR")
            .env_remove("STREETWATCH_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn streetwatch"),
    );
    let stdout = collect(child.0.stdout.take().unwrap(), started);
    let stderr = collect(child.0.stderr.take().unwrap(), started);
    (child, stdout, stderr)
}

/// Waits for a line starting with `prefix` on `stdout`; its rest.
fn wait_line(stdout: &Lines, stderr: &Lines, prefix: &str, limit: Duration) -> String {
    let mut found = None;
    support::wait_until(limit, || {
        found = find(stdout, prefix);
        found.is_some()
    });
    found.unwrap_or_else(|| {
        panic!(
            "no {prefix:?} line within {limit:?}; stdout {:?}\nstderr {:?}",
            stdout.lock().unwrap(),
            stderr.lock().unwrap()
        )
    })
}

/// `GET path` with a bearer token (none if empty): the status line and the body.
fn get(addr: &str, path: &str, token: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = if token.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {token}\r\n")
    };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, body.to_string())
}

fn get_status(addr: &str, path: &str, token: &str) -> String {
    get(addr, path, token).0
}

#[test]
fn the_demo_shows_its_page_and_tokens_and_a_delivered_alert_with_cameras_that_never_restart() {
    let work = tempfile::tempdir().unwrap();
    let seconds = RUN_SECONDS.to_string();
    let (mut child, stdout, stderr) = spawn(&["demo", "--seconds", &seconds], work.path());
    // The page's address and both tokens, printed once the server listens.
    wait_line(
        &stdout,
        &stderr,
        "operator token: ",
        Duration::from_secs(120),
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
    // The same through the page's API, where the alerts API is in this build (issue 9's contract): the
    // viewer token reads an alert whose delivery is `delivered`; no token is refused.
    let (status, body) = get(&addr, "/api/alerts", &viewer);
    if !status.contains(" 404 ") {
        assert!(status.contains(" 200 "), "{status} {body}");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        let shown = list["alerts"].as_array().unwrap().iter().any(|a| {
            a["deliveries"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["state"] == "delivered"))
        });
        assert!(shown, "{body}");
        assert!(get_status(&addr, "/api/alerts", "").contains(" 401 "));
    }
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

/// A configuration with one camera nobody serves and the page on a free loopback port.
fn run_config(dir: &std::path::Path, token: &str) -> std::path::PathBuf {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let file = dir.join("site.toml");
    std::fs::write(
        &file,
        format!(
            "[runtime]\ndata_dir = \"data\"\n\
             [[cameras]]\nid = \"c1\"\nurl = \"rtsp://127.0.0.1:{port}/none\"\n\
             [serve]\nlisten = \"127.0.0.1:0\"\n\
             [[serve.tokens]]\nname = \"ops\"\nrole = \"operator\"\ntoken = \"{token}\"\n"
        ),
    )
    .unwrap();
    file
}

#[test]
fn run_prints_its_page_address_and_never_a_token() {
    let work = tempfile::tempdir().unwrap();
    let token = "run-test-token-5f1c9a7e2b84d03c";
    let config = run_config(work.path(), token);
    let (mut child, stdout, stderr) = spawn(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--seconds",
            "5",
        ],
        work.path(),
    );
    let url = wait_line(
        &stdout,
        &stderr,
        "streetwatch: page at ",
        Duration::from_secs(60),
    );
    let addr = url
        .strip_prefix("http://")
        .and_then(|a| a.strip_suffix('/'))
        .unwrap_or_else(|| panic!("{url:?}"));
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    // The address is live while the run goes on.
    let status = get_status(&addr.to_string(), "/", token);
    assert!(status.starts_with("HTTP/1.1 "), "{status:?}");
    assert!(support::wait_until(Duration::from_secs(60), || matches!(
        child.0.try_wait(),
        Ok(Some(_))
    )));
    std::thread::sleep(Duration::from_millis(200));
    for lines in [&stdout, &stderr] {
        for (_, l) in lines.lock().unwrap().iter() {
            assert!(!l.contains(token), "the token in the output: {l}");
        }
    }
}

/// The run's log as a terminal shows it (`script` gives it a pseudo-terminal), with `env` set.
fn log_on_a_terminal(env: &[(&str, &str)]) -> String {
    let work = tempfile::tempdir().unwrap();
    let config = run_config(work.path(), "colour-test-token-0a9b8c7d6e5f");
    let command = format!(
        "{} run --config {} --seconds 1",
        env!("CARGO_BIN_EXE_streetwatch"),
        config.display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &command, "/dev/null"])
        .current_dir(work.path())
        .env("STREETWATCH_HOME", support::root())
        .env_remove("NO_COLOR")
        .env_remove("STREETWATCH_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .expect("script (util-linux) runs the command on a pty");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_log_is_coloured_on_a_terminal_unless_no_color_is_set() {
    let coloured = log_on_a_terminal(&[]);
    assert!(coloured.contains("pipeline started"), "{coloured}");
    assert!(
        coloured.contains("\u{1b}["),
        "no colour on a terminal: {coloured}"
    );
    let plain = log_on_a_terminal(&[("NO_COLOR", "1")]);
    assert!(plain.contains("pipeline started"), "{plain}");
    assert!(
        !plain.contains('\u{1b}'),
        "colour despite NO_COLOR: {plain}"
    );
}
