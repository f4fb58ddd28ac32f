//! `kill -9` of the whole `streetwatch run` process — ingest, pool, rules, router and notifier together —
//! while incidents it opened are still on their way to the police, then a restart on the same data
//! directory: every incident opened before the kill still reaches the phone through a real Kannel, once.

#[path = "support/alert_peers.rs"]
mod peers;
mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use peers::{Kannel, sms_alert_table};
use support::ChildGuard;

fn config(data: &std::path::Path, kannel: &Kannel) -> String {
    format!(
        "[runtime]\ndata_dir = {data:?}\n{}\n{}",
        support::vtest_crowd_camera(),
        sms_alert_table(kannel)
    )
}

fn run(config: &std::path::Path) -> ChildGuard {
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_streetwatch"))
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn streetwatch run"),
    )
}

/// Incident ids named as firing in the notices each received SMS refers to (its text ends `#<notice id>`).
fn firing_sms_per_incident(kannel: &Kannel, db: &std::path::Path) -> BTreeMap<String, usize> {
    let store = streetwatch::alert::Store::open(db).unwrap();
    let notices = store.notices().unwrap();
    let mut per = BTreeMap::new();
    for sms in kannel.received() {
        let text = sms.text();
        let id: i64 = text
            .rsplit_once('#')
            .and_then(|(_, n)| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("SMS without a notice reference: {text}"));
        let notice = notices
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("SMS for unknown notice #{id}"));
        let payload: serde_json::Value = serde_json::from_str(&notice.payload).unwrap();
        for a in payload["firing"].as_array().into_iter().flatten() {
            *per.entry(a["key"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    per
}

#[test]
fn kill_9_of_the_whole_run_then_restart_notifies_every_opened_incident_once() {
    // The gateway's HTTP side is down during the first run, so its incidents are still undelivered —
    // decided or not yet — when the process dies.
    let mut kannel = Kannel::start_without_smsbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("crash.toml");
    std::fs::write(&cfg, config(dir.path(), &kannel)).unwrap();
    let db = dir.path().join("streetwatch.db");

    let first = run(&cfg);
    let opened = || {
        streetwatch::store::Store::open(&db)
            .and_then(|s| s.incidents())
            .unwrap_or_default()
    };
    assert!(
        support::wait_until(Duration::from_secs(120), || !opened().is_empty()),
        "the first run opens an incident"
    );
    let mut child = first;
    // SIGKILL: no destructor, no shutdown path, whatever was in memory is gone.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let before: Vec<String> = opened().into_iter().map(|i| i.id).collect();
    assert!(!before.is_empty());
    // An attempt to the refusing gateway can be under way at the kill: the outbox cannot know it never
    // arrived, so it may count that one as a possible duplicate, and only that one.
    let in_flight: Vec<i64> = streetwatch::alert::Store::open(&db)
        .and_then(|s| s.deliveries(Some("sending")))
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert!(
        kannel.received().is_empty(),
        "nothing could be sent before the kill"
    );

    kannel.start_smsbox();
    let second = run(&cfg);
    assert!(
        support::wait_until(Duration::from_secs(60), || {
            let per = firing_sms_per_incident(&kannel, &db);
            before.iter().all(|id| per.contains_key(id))
        }),
        "every incident opened before the kill reaches the phone after the restart: {:?} of {before:?}",
        firing_sms_per_incident(&kannel, &db)
    );
    // Quiet for several retry intervals: a duplicate would show.
    std::thread::sleep(Duration::from_secs(4));
    drop(second);
    let per = firing_sms_per_incident(&kannel, &db);
    let deliveries = streetwatch::alert::Store::open(&db)
        .unwrap()
        .deliveries(None)
        .unwrap();
    for id in &before {
        assert_eq!(per.get(id), Some(&1), "{id} notified once: {per:?}");
    }
    let flagged: Vec<i64> = deliveries
        .iter()
        .filter(|d| d.possible_duplicates > 0)
        .map(|d| d.id)
        .collect();
    assert!(
        flagged.iter().all(|id| in_flight.contains(id)),
        "only a delivery in flight at the kill may be a possible duplicate: flagged {flagged:?}, in flight {in_flight:?}"
    );
}
