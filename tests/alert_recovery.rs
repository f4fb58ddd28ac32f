//! The router against a database that fails and a process that dies: a commit that fails once loses no
//! alert, shutdown ends by its deadline when nothing can be written, and an incident whose close reached the
//! incidents table but not the router (the process was killed in between) resolves at the next start.

#[path = "support/alert_peers.rs"]
mod peers;
mod support;
#[path = "support/alert_util.rs"]
mod util;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use peers::HookServer;
use streetwatch::alert::{Admission, AlertConfig, AlertService, NoticePayload, Router, Store};
use streetwatch::types::{Clock, IncidentEvent, IncidentPhase, SystemClock};
use tempfile::TempDir;
use util::{opened, wait_deliveries};

/// Every incident to one webhook receiver at once, resolved notices included.
fn alert_toml(hook_url: &str, extra: &str) -> String {
    format!(
        r#"{extra}
[flood]
max_notices = 0
[retry]
initial_backoff = "100ms"
max_backoff = "300ms"
[[receivers]]
name = "district"
send_resolved = true
webhook = {{ url = "{hook_url}", secret = "0123456789abcdef" }}
[route]
receiver = "district"
group_by = ["..."]
group_wait = "0s"
group_interval = "1s"
repeat_interval = "1h"
"#
    )
}

/// A second connection to the file, as another process (or a failing disk) would be.
fn sqlite(db: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

#[test]
fn an_event_whose_commit_failed_is_recorded_and_notified_when_retried() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let cfg = AlertConfig::from_toml(&alert_toml("http://127.0.0.1:9/hook", "")).unwrap();
    let now = SystemClock.now();
    let mut router = Router::open(&cfg, &db, now).unwrap();
    let ev = opened("d1-nh-03", "Bến Nghé", None);

    // The next write to the alerts table fails (an I/O error, a full disk), then the fault clears.
    let other = sqlite(&db);
    other
        .execute_batch(
            "CREATE TRIGGER fail_once BEFORE INSERT ON alert_alerts \
             BEGIN SELECT RAISE(ABORT, 'simulated I/O error'); END;",
        )
        .unwrap();
    let err = router.submit(&ev, now).unwrap_err();
    assert!(err.to_string().contains("simulated I/O error"), "{err}");
    other.execute_batch("DROP TRIGGER fail_once").unwrap();

    assert_eq!(
        router.submit(&ev, now).unwrap(),
        Admission::New,
        "nothing was committed, so the retried open is news"
    );
    router.tick(now).unwrap();
    let store = Store::open(&db).unwrap();
    let alerts = store.alerts(None, 10).unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].key, ev.key.to_string());
    let notices = store.notices().unwrap();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0].status, "queued");
    let p: NoticePayload = serde_json::from_str(&notices[0].payload).unwrap();
    assert_eq!(p.firing[0].key, ev.key.to_string());
    assert_eq!(store.deliveries(None).unwrap().len(), 1);
}

#[test]
fn shutdown_ends_by_its_deadline_when_the_database_refuses_every_write() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let cfg = AlertConfig::from_toml(&alert_toml(
        "http://127.0.0.1:9/hook",
        "shutdown_timeout = \"2s\"",
    ))
    .unwrap();
    let alert = AlertService::start(cfg, &db, Arc::new(SystemClock)).unwrap();
    sqlite(&db)
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON alert_alerts \
             BEGIN SELECT RAISE(ABORT, 'database unwritable'); END;",
        )
        .unwrap();
    alert.submit(opened("d1-nh-03", "Bến Nghé", None));

    let started = Instant::now();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        alert.shutdown();
        let _ = done_tx.send(());
    });
    let ended = done_rx.recv_timeout(Duration::from_secs(40));
    let took = started.elapsed();
    assert!(ended.is_ok(), "shutdown still waiting after {took:?}");
    // The router keeps trying until its deadline, then gives up; deliveries in flight have 5 s more.
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(12),
        "shutdown took {took:?}"
    );
    assert!(
        Store::open(&db)
            .unwrap()
            .alerts(None, 10)
            .unwrap()
            .is_empty()
    );
}

/// The `[alert]` table of a `streetwatch run` configuration, from [`alert_toml`]'s body.
fn run_config(data: &std::path::Path, hook_url: &str) -> String {
    let alert = alert_toml(hook_url, "")
        .replace("[flood]", "[alert.flood]")
        .replace("[retry]", "[alert.retry]")
        .replace("[[receivers]]", "[[alert.receivers]]")
        .replace("[route]", "[alert.route]");
    format!("[runtime]\ndata_dir = {data:?}\n\n[alert]\n{alert}")
}

#[test]
fn an_incident_closed_just_before_a_crash_resolves_its_alert_at_the_next_start() {
    let hook = HookServer::start(vec![200]);
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("streetwatch.db");
    let incidents = streetwatch::store::Store::open(&db).unwrap();

    // The previous run: the incident opened, went into the incidents table and through the router, and
    // the district was told.
    let mut open: IncidentEvent = opened("d1-cam-7", "Đa Kao", None);
    open.at = open.at.plus_ms(-60_000);
    open.key.episode = open.at;
    incidents.record(&open).unwrap();
    let cfg = AlertConfig::from_toml(&alert_toml(&hook.url(), "")).unwrap();
    let alert = AlertService::start(cfg, &db, Arc::new(SystemClock)).unwrap();
    alert.submit(open.clone());
    wait_deliveries(&db, Duration::from_secs(20), "the firing notice", |r| {
        r.len() == 1 && r[0].state == "accepted"
    });
    alert.shutdown();
    // Then the incident closed: the sink committed the close to the incidents table, and the process was
    // killed before the router (which gets it through memory) recorded it. This is the file as that crash
    // leaves it: the incident closed, its alert firing.
    let close = IncidentEvent {
        phase: IncidentPhase::Closed,
        at: open.at.plus_ms(40_000),
        summary: "đã giải tán".into(),
        ..open.clone()
    };
    incidents.record(&close).unwrap();
    let key = open.key.to_string();
    let store = Store::open(&db).unwrap();
    assert_eq!(store.alerts(None, 10).unwrap()[0].status, "firing");

    // The next start of the real program.
    let cfg_path = dir.path().join("run.toml");
    std::fs::write(&cfg_path, run_config(dir.path(), &hook.url())).unwrap();
    let log = std::fs::File::create(dir.path().join("run.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_streetwatch"))
        .current_dir(support::root())
        .args(["run", "--config"])
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _child = support::ChildGuard(child);
    let resolved = support::wait_until(Duration::from_secs(60), || {
        store
            .alerts(None, 10)
            .unwrap()
            .iter()
            .any(|a| a.key == key && a.status == "resolved" && a.ended_at == Some(close.at))
    });
    let log = || std::fs::read_to_string(dir.path().join("run.log")).unwrap_or_default();
    assert!(
        resolved,
        "the alert is still {:?} after the restart; log:\n{}",
        store.alerts(None, 10).unwrap(),
        log()
    );
    // The district, which asked for resolved notices, is told the incident ended.
    let told = support::wait_until(Duration::from_secs(20), || {
        hook.requests.lock().unwrap().iter().any(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["status"] == "resolved" && v["alerts"][0]["key"] == key.as_str()
        })
    });
    assert!(
        told,
        "no resolved notice reached the webhook; log:\n{}",
        log()
    );
    let firing_notices = hook
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["status"] == "firing"
        })
        .count();
    assert_eq!(firing_notices, 1, "the firing notice is not repeated");
}
