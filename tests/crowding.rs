//! The crowding rule end to end on recorded footage: file → GStreamer → pool → NanoDet → rule →
//! incident rows in a real SQLite file with snapshots. Footage runs flat out and loses no frame, so
//! frame time is media time and the assertions are about the footage, not the machine's speed.

mod support;

use std::sync::Arc;
use std::time::Duration;

use streetwatch::app::{Pipeline, RunOptions};
use streetwatch::config::Config;
use streetwatch::ingest::Pacing;
use streetwatch::store::{IncidentRow, Store};
use streetwatch::types::{ManualClock, Timestamp};

/// Runs one footage file through the pipeline once and returns its incidents, times in media seconds.
fn incidents_on(
    footage: &str,
    zone: &str,
    min_people: u32,
    min_seconds: u32,
) -> Vec<(f64, Option<f64>, IncidentRow)> {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[runtime]
data_dir = {data:?}
[[cameras]]
id = "cam"
url = "fixtures/footage/{footage}"
fps = 2
[[cameras.zones]]
id = "z"
polygon = {zone}
[[cameras.rules]]
kind = "crowding"
id = "crowd"
zone = "z"
min_people = {min_people}
min_seconds = {min_seconds}
clear_seconds = 4
"#,
        data = dir.path()
    );
    let config = Config::parse(&text, "test.toml", &support::root()).unwrap();
    let epoch = Timestamp(1_800_000_000_000);
    let opts = RunOptions {
        pacing: Pacing::Unthrottled { lossless: true },
        loop_files: false,
        ..RunOptions::default()
    };
    let pipeline = Pipeline::start(&config, opts, Arc::new(ManualClock::at(epoch))).unwrap();
    assert!(
        support::wait_until(Duration::from_secs(240), || pipeline.finished()),
        "footage did not finish"
    );
    let db = pipeline.db_path.clone();
    let health = pipeline.health();
    pipeline.shutdown();
    assert_eq!(
        health[0].frames_dropped, 0,
        "lossless replay dropped frames"
    );
    assert!(health[0].frames_analysed > 0);
    let secs = |t: i64| (t - epoch.0) as f64 / 1000.0;
    let rows = Store::open(&db).unwrap().incidents().unwrap();
    for r in &rows {
        let snap = r
            .snapshot
            .as_deref()
            .expect("an opened incident has a snapshot");
        let jpeg = std::fs::read(snap).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "snapshot is a JPEG");
    }
    rows.into_iter()
        .map(|r| (secs(r.opened_at), r.closed_at.map(secs), r))
        .collect()
}

#[test]
fn crowd_on_vtest_opens_then_closes_when_it_thins_out() {
    // vtest: seven or more people in view from ~4 s to ~37 s; two to five from ~38 s to ~46 s.
    let got = incidents_on(
        "vtest_h264.mp4",
        "[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]",
        7,
        4,
    );
    let (opened, closed, row) = &got[0];
    assert!(
        (6.0..=14.0).contains(opened),
        "first crowd opened at {opened} s: {got:?}"
    );
    let closed = closed.expect("the first crowd closes");
    assert!(
        (38.0..=47.0).contains(&closed),
        "first crowd closed at {closed} s: {got:?}"
    );
    assert!(row.count >= 8, "peak {}", row.count);
    assert_eq!(row.kind, "crowding");
    // Nothing opens while the street is thin (38–46 s).
    assert!(
        got.iter().all(|(o, _, _)| !(38.0..47.0).contains(o)),
        "{got:?}"
    );
}

#[test]
fn dwell_at_the_counter_matches_the_three_visits() {
    // One person at a time stands at the table (x 0.46–0.72): ~6–17 s, ~23–43 s, ~52 s to the end (60 s).
    let got = incidents_on(
        "indoor_dwell_at_table_768x432.mp4",
        "[[0.40, 0.0], [0.80, 0.0], [0.80, 1.0], [0.40, 1.0]]",
        1,
        3,
    );
    let spans: Vec<(f64, Option<f64>)> = got.iter().map(|(o, c, _)| (*o, *c)).collect();
    assert_eq!(spans.len(), 3, "{spans:?}");
    let within = |v: f64, lo: f64, hi: f64| (lo..=hi).contains(&v);
    assert!(
        within(spans[0].0, 8.0, 13.0) && within(spans[0].1.unwrap(), 19.0, 25.0),
        "{spans:?}"
    );
    assert!(
        within(spans[1].0, 25.0, 30.0) && within(spans[1].1.unwrap(), 44.0, 50.0),
        "{spans:?}"
    );
    assert!(
        within(spans[2].0, 53.0, 58.0) && spans[2].1.is_none(),
        "the last visit lasts to the end: {spans:?}"
    );
}
