//! Inputs the program did not write itself: values read back from the database, numbers on the
//! command line. It must survive them.

#[path = "support/alert_peers.rs"]
mod peers;
mod support;
#[path = "support/alert_util.rs"]
mod util;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use streetwatch::alert::{AlertConfig, AlertService, Router};
use streetwatch::types::{Clock, SystemClock};
use tempfile::TempDir;
use util::{opened, wait_deliveries};

/// An SMS delivery whose idempotency key was cut short in the database (an older version, a hand edit)
/// is attempted like any other; its delivery-report link used to slice the key's first 16 bytes and
/// panic the delivery task, leaving the row `sending` for good.
#[test]
fn a_short_idempotency_key_read_back_is_attempted_not_panicked_on() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    // A gateway port nobody listens on: the attempt fails at once, transiently, and is recorded.
    let gateway = format!("http://127.0.0.1:{}/cgi-bin/sendsms", peers::free_port());
    let cfg = AlertConfig::from_toml(&format!(
        r#"
[dlr]
listen = "127.0.0.1:0"
[retry]
initial_backoff = "10s"
max_backoff = "10s"
[[receivers]]
name = "duty"
[receivers.sms]
url = "{gateway}"
username = "u"
password = "p"
numbers = ["0901234567"]
[route]
receiver = "duty"
group_wait = "0s"
"#
    ))
    .unwrap();
    // The router decides the notice and its delivery; no notifier runs yet.
    let now = SystemClock.now();
    let mut router = Router::open(&cfg, &db, now).unwrap();
    router
        .submit(&opened("d1-nh-03", "Bến Nghé", None), now)
        .unwrap();
    assert_eq!(router.tick(now).unwrap().len(), 1);
    drop(router);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("UPDATE alert_deliveries SET idempotency_key = 'k1'", [])
        .unwrap();
    drop(conn);

    let _alert = AlertService::start(cfg, &db, Arc::new(SystemClock)).unwrap();
    let rows = wait_deliveries(
        &db,
        Duration::from_secs(20),
        "the attempt recorded as failed, to be retried",
        |r| r.len() == 1 && r[0].state == "pending" && r[0].last_error.is_some(),
    );
    assert_eq!(rows[0].attempts, 1);
    assert_eq!(rows[0].idempotency_key, "k1");
}

/// Whether the process behind `/proc/PID/status` handles SIGTERM (bit 15 of its caught-signal mask).
fn catches_sigterm(status: &str) -> bool {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|s| {
            let mask = s.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
}

/// `streetwatch run --seconds N` with N past what a clock can count to runs until it is stopped, as
/// without `--seconds`; adding it to the clock used to panic as the run began to wait.
#[test]
fn a_run_limit_past_the_end_of_time_runs_until_stopped() {
    let dir = TempDir::new().unwrap();
    let cfg = dir.path().join("no-cameras.toml");
    std::fs::write(
        &cfg,
        format!(
            "[runtime]\nworkers = 1\ndata_dir = {:?}\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_streetwatch"))
        .env(
            "STREETWATCH_ORT_LIB",
            streetwatch::infer::default_runtime_path(),
        )
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .args(["--seconds", &u64::MAX.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Waiting for a signal (or its end): SIGTERM is then handled.
    let status = format!("/proc/{}/status", child.id());
    support::wait_until(Duration::from_secs(120), || {
        catches_sigterm(&status) || child.try_wait().unwrap().is_some()
    });
    let early = child.try_wait().unwrap();
    // SAFETY: signals the child this test started and has not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(early.is_none(), "exited by itself ({early:?}): {stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}
