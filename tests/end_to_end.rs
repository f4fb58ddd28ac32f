//! The whole chain on recorded footage: GStreamer → pool → NanoDet → crowding → incidents in SQLite →
//! alert router → durable outbox → SMS through a real Kannel. Hundreds of frames show the crowd; the
//! police get one SMS per incident.

#[path = "support/alert_peers.rs"]
mod peers;
mod support;

use std::sync::Arc;
use std::time::Duration;

use peers::{Kannel, sms_alert_table};
use streetwatch::app::{Pipeline, RunOptions};
use streetwatch::config::Config;
use streetwatch::ingest::Pacing;
use streetwatch::types::SystemClock;

#[test]
fn footage_to_one_sms_per_incident_through_kannel() {
    let kannel = Kannel::start();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[runtime]
data_dir = {data:?}

{camera}
{alert}
"#,
        data = dir.path(),
        camera = support::vtest_crowd_camera(),
        alert = sms_alert_table(&kannel),
    );
    let config = Config::parse(&text, "e2e.toml", &support::root()).unwrap();
    let opts = RunOptions {
        pacing: Pacing::Unthrottled { lossless: true },
        loop_files: false,
        ..RunOptions::default()
    };
    let pipeline = Pipeline::start(&config, opts, Arc::new(SystemClock)).unwrap();
    assert!(support::wait_until(Duration::from_secs(240), || pipeline.finished()));
    let db = pipeline.db_path.clone();
    let analysed = pipeline.health()[0].frames_analysed;

    let incidents = streetwatch::store::Store::open(&db)
        .unwrap()
        .incidents()
        .unwrap();
    assert_eq!(
        incidents.len(),
        2,
        "vtest has two crowded spells: {incidents:?}"
    );
    // Let the router decide and the notifier deliver, then stop everything. The pause after is a quiet
    // period for a duplicate to show up in, several retry intervals (at most 1 s apart) long.
    let sms = kannel.wait_received(incidents.len(), Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(4));
    pipeline.shutdown();
    let sms_after = kannel.received();
    assert_eq!(
        sms_after.len(),
        incidents.len(),
        "one SMS per incident over {analysed} analysed frames: {sms_after:?}"
    );
    for s in &sms {
        let t = s.text();
        assert!(t.contains("Walkway cam") && t.contains("Ben Nghe"), "{t}");
    }
    let alerts = streetwatch::alert::Store::open(&db)
        .unwrap()
        .alerts(None, 100)
        .unwrap();
    let mut keys: Vec<&str> = alerts.iter().map(|a| a.key.as_str()).collect();
    keys.sort();
    let mut ids: Vec<&str> = incidents.iter().map(|i| i.id.as_str()).collect();
    ids.sort();
    assert_eq!(keys, ids, "the router tracks exactly the stored incidents");
}

#[test]
fn an_incident_the_previous_run_stored_but_never_routed_still_reaches_the_phone() {
    let kannel = Kannel::start();
    let dir = tempfile::tempdir().unwrap();
    // The previous run wrote the incident row and died before the router committed it.
    let db = dir.path().join("streetwatch.db");
    let now = streetwatch::types::Clock::now(&SystemClock);
    let event = streetwatch::types::IncidentEvent {
        key: streetwatch::types::IncidentKey {
            camera: streetwatch::types::CameraId::new("d1-cam-7"),
            rule: "crowd".into(),
            zone: "plaza".into(),
            episode: now.plus_ms(-60_000),
        },
        phase: streetwatch::types::IncidentPhase::Opened,
        at: now.plus_ms(-50_000),
        kind: streetwatch::types::RuleKind::Crowding,
        severity: streetwatch::types::Severity::Warning,
        camera_name: "Cam 7".into(),
        ward: "Đa Kao".into(),
        summary: "9 people in zone plaza for 10 s".into(),
        count: 9,
        snapshot: None,
    };
    streetwatch::store::Store::open(&db)
        .unwrap()
        .record(&event)
        .unwrap();

    let text = format!(
        r#"
[runtime]
data_dir = {data:?}
{alert}
"#,
        data = dir.path(),
        alert = sms_alert_table(&kannel),
    );
    let config = Config::parse(&text, "restart.toml", &support::root()).unwrap();
    let opts = RunOptions {
        restart_close_grace: Duration::from_secs(3),
        ..RunOptions::default()
    };
    let pipeline = Pipeline::start(&config, opts, Arc::new(SystemClock)).unwrap();
    let sms = kannel.wait_received(1, Duration::from_secs(60));
    let store = streetwatch::store::Store::open(&db).unwrap();
    let key = event.key.to_string();
    assert!(
        support::wait_until(Duration::from_secs(60), || store
            .incident(&key)
            .unwrap()
            .unwrap()
            .closed_at
            .is_some()),
        "closed after the grace period"
    );
    pipeline.shutdown();
    assert_eq!(sms.len(), 1, "{sms:?}");
    assert!(sms[0].text().contains("Cam 7"), "{}", sms[0].text());
    let row = streetwatch::store::Store::open(&db)
        .unwrap()
        .incident(&event.key.to_string())
        .unwrap()
        .unwrap();
    assert!(row.closed_at.is_some(), "closed after the restart: {row:?}");
}
