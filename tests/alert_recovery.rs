//! The router against a database that fails and a process that dies: a commit that fails once loses no
//! alert, shutdown ends by its deadline when nothing can be written, and an incident whose close reached the
//! incidents table but not the router (the process was killed in between) resolves at the next start.

#[path = "support/alert_util.rs"]
mod util;

use std::sync::Arc;
use std::time::{Duration, Instant};

use streetwatch::alert::{Admission, AlertConfig, AlertService, NoticePayload, Router, Store};
use streetwatch::types::{Clock, SystemClock};
use tempfile::TempDir;
use util::opened;

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
