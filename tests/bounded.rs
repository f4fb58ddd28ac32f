//! Nothing grows for good: old records and snapshots are pruned (live ones kept), `outbox list` pages,
//! peer-supplied text is stored capped, the queue in front of the router is bounded without losing an
//! opened incident, and the router holds the notification log of live groups only.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use streetwatch::alert::{AlertConfig, AlertService, Router, ServiceOptions, Store as AlertStore};
use streetwatch::app::Forwarder;
use streetwatch::config::RetentionConfig;
use streetwatch::retention::{self, Policy, snapshot_name};
use streetwatch::store::Store;
use streetwatch::types::{
    CameraId, Clock, IncidentEvent, IncidentKey, IncidentPhase, ManualClock, RuleKind, Severity,
    SystemClock, Timestamp,
};
use support::wait_until;
use tempfile::TempDir;

const DAY: i64 = 86_400_000;
const T0: Timestamp = Timestamp(1_795_000_000_000);

fn event(camera: &str, ward: &str, episode: Timestamp, phase: IncidentPhase) -> IncidentEvent {
    IncidentEvent {
        key: IncidentKey {
            camera: CameraId::new(camera),
            rule: "crowd".into(),
            zone: "plaza".into(),
            episode,
        },
        phase,
        at: episode,
        kind: RuleKind::Crowding,
        severity: Severity::Warning,
        camera_name: camera.into(),
        ward: ward.into(),
        summary: "7 người".into(),
        count: 7,
        snapshot: None,
    }
}

fn closed(mut e: IncidentEvent, at: Timestamp) -> IncidentEvent {
    e.phase = IncidentPhase::Closed;
    e.at = at;
    e
}

/// An HTTP peer that answers request n with `replies[n]` (the last one repeats) and counts requests.
fn http_peer(replies: Vec<(u16, String)>) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut s) = stream else { return };
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut l = String::new();
                if reader.read_line(&mut l).unwrap_or(0) == 0 || l.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (status, text) = &replies[n.min(replies.len() - 1)];
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (port, count)
}

/// Webhook receivers (name, URL); the first is the root route's; one group, so one notice, per incident,
/// sent at once; `routes` adds child routes.
fn one_notice_per_incident(receivers: &[(&str, String)], routes: &str) -> AlertConfig {
    let mut toml = String::new();
    for (name, url) in receivers {
        toml += &format!(
            "[[receivers]]\nname = \"{name}\"\nwebhook = {{ url = \"{url}\", secret = \"0123456789abcdef\" }}\n"
        );
    }
    toml += &format!(
        "[route]\nreceiver = \"{}\"\ngroup_wait = \"0s\"\ngroup_by = [\"...\"]\n{routes}\n",
        receivers[0].0
    );
    AlertConfig::from_toml(&toml).unwrap()
}

/// A port nothing listens on: connections are refused.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn old_rows_and_snapshots_are_pruned_in_batches_and_live_ones_kept() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let snaps = dir.path().join("snapshots");
    std::fs::create_dir_all(&snaps).unwrap();
    let (hook, _) = http_peer(vec![(200, "ok".into())]);
    let cfg = one_notice_per_incident(
        &[
            ("city", format!("http://127.0.0.1:{hook}/h")),
            ("dead-end", format!("http://127.0.0.1:{}/h", closed_port())),
        ],
        "[[route.routes]]\nmatch = { ward = [\"Đa Kao\"] }\nreceiver = \"dead-end\"",
    );
    let clock = ManualClock::at(T0);
    let store = Store::open(&db).unwrap();
    let alerts = AlertService::start(cfg, &db, Arc::new(clock.clone())).unwrap();

    // 100 days ago: A, B, C open and close; D (its receiver unreachable) and E stay open.
    let mut old = Vec::new();
    for (i, (cam, ward)) in [
        ("cam-a", "Bến Nghé"),
        ("cam-b", "Bến Nghé"),
        ("cam-c", "Bến Nghé"),
        ("cam-d", "Đa Kao"),
        ("cam-e", "Bến Nghé"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = event(cam, ward, T0.plus_ms(i as i64), IncidentPhase::Opened);
        let snap = snaps.join(snapshot_name(&e.key));
        std::fs::write(&snap, b"jpeg").unwrap();
        e.snapshot = Some(snap.display().to_string());
        store.record(&e).unwrap();
        alerts.submit(e.clone());
        old.push(e);
    }
    let astore = AlertStore::open(&db).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || {
            let d = astore.deliveries(None).unwrap();
            d.iter().filter(|d| d.state == "accepted").count() == 4
                && d.iter()
                    .any(|d| d.receiver == "dead-end" && d.attempts >= 1 && d.state == "pending")
        }),
        "deliveries: {:?}",
        astore.deliveries(None).unwrap()
    );
    clock.set(T0.plus_ms(60_000));
    for e in &old[..3] {
        let c = closed(e.clone(), T0.plus_ms(60_000));
        store.record(&c).unwrap();
        alerts.submit(c);
    }
    assert!(wait_until(Duration::from_secs(30), || {
        astore.alerts(Some("resolved"), 100).unwrap().len() == 3
    }));
    alerts.shutdown();

    let now = T0.plus_ms(100 * DAY);
    let snapshot_of = |cam: &str, opened: i64, closed_at: Option<i64>| {
        let mut e = event(
            cam,
            "Bến Nghé",
            now.plus_ms(-opened * DAY),
            IncidentPhase::Opened,
        );
        let snap = snaps.join(snapshot_name(&e.key));
        std::fs::write(&snap, b"jpeg").unwrap();
        e.snapshot = Some(snap.display().to_string());
        store.record(&e).unwrap();
        if let Some(c) = closed_at {
            store
                .record(&closed(e.clone(), now.plus_ms(-c * DAY)))
                .unwrap();
        }
        (e.key.to_string(), snapshot_name(&e.key))
    };
    // F closed 5 days ago; G closed 40 days ago (its picture is past 30 days); I opened 41 days ago and
    // closed 10 days ago (its picture is kept, though its episode is old).
    let f = snapshot_of("cam-f", 6, Some(5));
    let g = snapshot_of("cam-g", 41, Some(40));
    let i = snapshot_of("cam-i", 41, Some(10));
    let orphan_old = format!("cam-h_crowd_{}.jpg", now.plus_ms(-50 * DAY).0);
    let orphan_new = format!("cam-h_crowd_{}.jpg", now.plus_ms(-DAY).0);
    for name in [&orphan_old, &orphan_new, &"README.txt".to_string()] {
        std::fs::write(snaps.join(name), b"x").unwrap();
    }

    let mut policy = Policy::from(&RetentionConfig::default());
    policy.batch_rows = 2;
    policy.batch_pause = Duration::ZERO;
    let (_keep, stop) = crossbeam::channel::bounded::<()>(1);
    let pruned = retention::prune(&policy, &db, &snaps, now, &stop).unwrap();

    let key = |e: &IncidentEvent| e.key.to_string();
    let (d, e) = (&old[3], &old[4]);
    assert_eq!(pruned.incidents, 3, "{pruned:?}");
    assert_eq!(pruned.alerts, 3, "{pruned:?}");
    assert_eq!(pruned.deliveries, 4, "{pruned:?}");
    assert_eq!(pruned.notices, 4, "{pruned:?}");
    assert_eq!(pruned.notification_log, 5, "{pruned:?}");
    assert_eq!(pruned.snapshots_cleared, 1, "{pruned:?}");
    // Two rows per transaction: at least two for each of the four tables that lost three or four rows.
    assert!(pruned.batches >= 8, "{pruned:?}");

    let kept: BTreeSet<String> = store
        .incidents()
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    let expected: BTreeSet<String> = [key(d), key(e), f.0.clone(), g.0.clone(), i.0.clone()].into();
    assert_eq!(
        kept, expected,
        "open incidents and those closed within 90 days stay"
    );
    assert_eq!(store.incident(&g.0).unwrap().unwrap().snapshot, None);
    assert!(store.incident(&i.0).unwrap().unwrap().snapshot.is_some());

    let left = files(&snaps);
    let expected: BTreeSet<String> = [
        snapshot_name(&d.key),
        snapshot_name(&e.key),
        f.1.clone(),
        i.1.clone(),
        orphan_new.clone(),
        "README.txt".into(),
    ]
    .into();
    assert_eq!(
        left, expected,
        "snapshots of pruned incidents, of G and the old orphan are gone"
    );
    assert_eq!(pruned.snapshot_files, 5, "{pruned:?}");

    let firing: BTreeSet<String> = astore
        .alerts(None, 100)
        .unwrap()
        .into_iter()
        .map(|r| {
            assert_eq!(r.status, "firing");
            r.key
        })
        .collect();
    assert_eq!(firing, [key(d), key(e)].into());
    let deliveries = astore.deliveries(None).unwrap();
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(
        (
            deliveries[0].receiver.as_str(),
            deliveries[0].state.as_str()
        ),
        ("dead-end", "pending")
    );
    assert!(!astore.delivery_events(deliveries[0].id).unwrap().is_empty());
    let notices = astore.notices().unwrap();
    assert_eq!(
        notices.iter().map(|n| n.id).collect::<Vec<_>>(),
        vec![deliveries[0].notice_id],
        "only the notice with a live delivery stays"
    );

    // A second run finds nothing left to prune.
    let again = retention::prune(&policy, &db, &snaps, now, &stop).unwrap();
    assert_eq!(again, Default::default());
}

/// Five deliveries, one per notice, none sent.
fn seed_outbox(db: &Path) {
    let cfg = one_notice_per_incident(&[("city", "http://127.0.0.1:9/hook".into())], "");
    let mut router = Router::open(&cfg, db, T0).unwrap();
    for i in 0..5 {
        let e = event(
            &format!("cam-{i}"),
            "Bến Nghé",
            T0.plus_ms(i),
            IncidentPhase::Opened,
        );
        router.submit(&e, T0).unwrap();
    }
    assert_eq!(router.tick(T0).unwrap().len(), 5);
}

fn cli(db: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_streetwatch"))
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ids(json_lines: &str) -> Vec<i64> {
    json_lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

#[test]
fn outbox_list_pages_newest_first_through_the_binary() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    seed_outbox(&db);
    let all: Vec<i64> = AlertStore::open(&db)
        .unwrap()
        .deliveries(None)
        .unwrap()
        .iter()
        .map(|d| d.id)
        .rev()
        .collect();
    assert_eq!(all.len(), 5);

    let first = ids(&cli(&db, &["outbox", "list", "--limit", "2", "--json"]));
    assert_eq!(first, all[..2], "the newest two");
    let before = first[1].to_string();
    let second = ids(&cli(
        &db,
        &[
            "outbox", "list", "--limit", "2", "--before", &before, "--json",
        ],
    ));
    assert_eq!(second, all[2..4]);
    let before = second[1].to_string();
    let third = ids(&cli(
        &db,
        &[
            "outbox", "list", "--limit", "2", "--before", &before, "--json",
        ],
    ));
    assert_eq!(third, all[4..]);

    let text = cli(&db, &["outbox", "list", "--limit", "2"]);
    assert!(
        text.contains(&format!("(more: --before {})", all[1])),
        "a full page says where the next starts:\n{text}"
    );
    assert_eq!(
        ids(&cli(&db, &["outbox", "list", "--json"])),
        all,
        "default page holds all five"
    );
}

#[test]
fn a_5_kib_gateway_reply_is_stored_capped() {
    // Vietnamese letters are 2–3 bytes in UTF-8: a cut at a byte count would split one.
    let reply = format!(
        "0: Accepted for delivery {}",
        "Đã nhận tin nhắn. ".repeat(250)
    );
    let error = format!("<html>{}</html>", "Lỗi máy chủ nội bộ. ".repeat(220));
    assert!(reply.len() > 5 * 1024 && error.len() > 5 * 1024);
    let (port, requests) = http_peer(vec![(500, error.clone()), (202, reply.clone())]);
    let cfg = AlertConfig::from_toml(&format!(
        r#"
[[receivers]]
name = "city"
sms = {{ url = "http://127.0.0.1:{port}/cgi-bin/sendsms", username = "u", password = "p", numbers = ["0901234567"] }}
[route]
receiver = "city"
group_wait = "0s"
[retry]
initial_backoff = "50ms"
"#
    ))
    .unwrap();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let alerts = AlertService::start(cfg, &db, Arc::new(SystemClock)).unwrap();
    alerts.submit(event(
        "cam-1",
        "Bến Nghé",
        SystemClock.now(),
        IncidentPhase::Opened,
    ));
    let store = AlertStore::open(&db).unwrap();
    assert!(wait_until(Duration::from_secs(60), || {
        store.deliveries(Some("accepted")).unwrap().len() == 1
    }));
    alerts.shutdown();
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 2);

    let d = store.deliveries(None).unwrap().remove(0);
    let stored = d.gateway_reply.expect("the reply is stored");
    let full = format!("HTTP 202: {}", reply.trim());
    assert!(stored.len() <= 1024, "{} bytes stored", stored.len());
    let (kept, marker) = stored.split_once('…').expect("a marker says it was cut");
    assert!(full.starts_with(kept) && kept.len() > 900, "{kept:?}");
    assert!(marker.contains("truncated"), "{marker:?}");
    let events = store.delivery_events(d.id).unwrap();
    let failed = events
        .iter()
        .find(|e| {
            e.state == "pending" && e.detail.as_deref().is_some_and(|t| t.contains("HTTP 500"))
        })
        .expect("the failed attempt is recorded");
    for e in &events {
        let t = e.detail.as_deref().unwrap_or("");
        assert!(t.len() <= 1024, "{} bytes in {:?}", t.len(), e.state);
    }
    assert!(
        failed
            .detail
            .as_deref()
            .unwrap()
            .contains("<html>Lỗi máy chủ"),
        "the start of the error stays: {:?}",
        failed.detail
    );
}

#[test]
fn a_flood_of_updates_on_a_full_queue_is_counted_and_every_opened_incident_reaches_the_router() {
    let dir = TempDir::new().unwrap();
    // The router's tables in one file, incidents in another, so that holding the router's database locked
    // stalls the router and nothing else.
    let alert_db = dir.path().join("alerts.db");
    let incident_db = dir.path().join("incidents.db");
    let alerts = Arc::new(
        AlertService::start_with(
            AlertConfig::default(),
            &alert_db,
            Arc::new(SystemClock),
            ServiceOptions {
                queue: 8,
                ..ServiceOptions::default()
            },
        )
        .unwrap(),
    );
    let mut forwarder = Forwarder::new(
        Store::open(&incident_db).unwrap(),
        Some(alerts.clone()),
        Arc::default(),
    );
    let start = SystemClock.now();
    let incidents: Vec<IncidentEvent> = (0..12)
        .map(|i| {
            event(
                &format!("cam-{i}"),
                "Bến Nghé",
                start.plus_ms(i),
                IncidentPhase::Opened,
            )
        })
        .collect();
    let opened: BTreeSet<String> = incidents.iter().map(|e| e.key.to_string()).collect();
    assert_eq!(opened.len(), 12);

    let lock = rusqlite::Connection::open(&alert_db).unwrap();
    lock.busy_timeout(Duration::from_secs(10)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    for e in &incidents {
        forwarder.record(e.clone());
        for n in 1..=50 {
            let mut u = e.clone();
            u.phase = IncidentPhase::Updated;
            u.at = e.at.plus_ms(n * 1000);
            u.count = 7 + n as u32;
            forwarder.record(u);
        }
    }
    lock.execute_batch("ROLLBACK").unwrap();

    let store = AlertStore::open(&alert_db).unwrap();
    let known = || -> BTreeSet<String> {
        store
            .alerts(None, 1000)
            .unwrap()
            .into_iter()
            .map(|a| a.key)
            .collect()
    };
    let reached = wait_until(Duration::from_secs(60), || {
        forwarder.catch_up();
        !forwarder.behind() && opened.is_subset(&known())
    });
    let stats = alerts.queue_stats();
    assert!(stats.dropped_updates > 0, "{stats:?}");
    assert!(stats.spilled > 0, "{stats:?}");
    assert!(
        reached,
        "missing at the router: {:?}",
        opened.difference(&known()).collect::<Vec<_>>()
    );
}

#[test]
fn the_router_holds_the_notification_log_of_live_groups_only() {
    let cfg = AlertConfig::from_toml(
        r#"
[route]
group_wait = "0s"
group_interval = "1m"
repeat_interval = "4h"
group_by = ["..."]
"#,
    )
    .unwrap();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let mut router = Router::open(&cfg, &db, T0).unwrap();
    let open: Vec<IncidentEvent> = (0..3)
        .map(|i| {
            event(
                &format!("cam-{i}"),
                "Bến Nghé",
                T0.plus_ms(i),
                IncidentPhase::Opened,
            )
        })
        .collect();
    for e in &open {
        router.submit(e, T0).unwrap();
    }
    assert!(
        router.tick(T0).unwrap().is_empty(),
        "no receiver: recorded, not queued"
    );
    assert_eq!(AlertStore::open(&db).unwrap().notices().unwrap().len(), 3);
    assert_eq!(router.notification_log_len(), 3);
    let later = T0.plus_ms(1000);
    for e in &open[..2] {
        router.submit(&closed(e.clone(), later), later).unwrap();
    }
    router.tick(T0.plus_ms(60_000)).unwrap();
    assert_eq!(
        router.notification_log_len(),
        1,
        "the two resolved groups are gone"
    );

    let reopened_at = T0.plus_ms(120_000);
    let mut router = Router::open(&cfg, &db, reopened_at).unwrap();
    assert_eq!(
        router.notification_log_len(),
        1,
        "only the live group's entry is read"
    );
    router.tick(reopened_at).unwrap();
    assert_eq!(
        AlertStore::open(&db).unwrap().notices().unwrap().len(),
        3,
        "the live group was told 2 minutes ago: its entry holds the repeat back"
    );
}
