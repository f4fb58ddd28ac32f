//! The alert router's throughput. `cargo bench --bench router` prints:
//! - `router/stages_to_outbox/*`: incidents per second through dedup → route → group → inhibit → silence →
//!   notification log → flood → outbox, each becoming a notice with its delivery committed to SQLite
//!   (WAL, synchronous=FULL, on this machine's disk);
//! - `router/updates`: incident updates per second (dedup and the alert row only, no notice);
//! - `kannel/notices_delivered`: notices per second from the decision to "accepted" by a real Kannel
//!   (bearerbox + smsbox + fakesmsc on loopback), through the notifier.

#[path = "../tests/support/alert_peers.rs"]
mod peers;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use streetwatch::alert::{AlertConfig, AlertService, Router, Store};
use streetwatch::types::{
    CameraId, Clock, IncidentEvent, IncidentKey, IncidentPhase, RuleKind, Severity, SystemClock,
    Timestamp,
};

const RECEIVER: &str = r#"
[flood]
max_notices = 0
[[receivers]]
name = "city"
webhook = { url = "http://127.0.0.1:9/hook", secret = "0123456789abcdef" }
[route]
receiver = "city"
group_by = ["..."]
group_wait = "0s"
"#;

fn event(n: u64, phase: IncidentPhase, at: Timestamp) -> IncidentEvent {
    IncidentEvent {
        key: IncidentKey {
            camera: CameraId::new(&format!("d1-cam-{:04}", n % 1115)),
            rule: "plaza-crowd".into(),
            zone: "plaza".into(),
            episode: Timestamp(n as i64),
        },
        phase,
        at,
        kind: RuleKind::Crowding,
        severity: Severity::Warning,
        camera_name: "Nguyễn Huệ / Lê Lợi".into(),
        ward: ["Bến Nghé", "Đa Kao", "Bến Thành", "Tân Định"][(n % 4) as usize].into(),
        summary: "7 người trong vùng 45 giây".into(),
        count: 7,
        snapshot: None,
    }
}

fn stages(c: &mut Criterion) {
    let mut g = c.benchmark_group("router");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    for batch in [1u64, 64] {
        let dir = tempfile::TempDir::new().unwrap();
        let cfg = AlertConfig::from_toml(RECEIVER).unwrap();
        let mut router = Router::open(&cfg, &dir.path().join("bench.db"), Timestamp(0)).unwrap();
        let mut n = 0u64;
        let mut now = Timestamp(1_795_000_000_000);
        g.throughput(Throughput::Elements(batch));
        g.bench_function(format!("stages_to_outbox/batch{batch}"), |b| {
            b.iter(|| {
                let events: Vec<IncidentEvent> = (0..batch)
                    .map(|_| {
                        n += 1;
                        event(n, IncidentPhase::Opened, now)
                    })
                    .collect();
                router.submit_batch(&events, now).unwrap();
                let ids = router.tick(now).unwrap();
                assert_eq!(ids.len() as u64, batch);
                // Each incident closes so groups do not pile up across iterations.
                let closes: Vec<IncidentEvent> = events
                    .iter()
                    .map(|e| IncidentEvent {
                        phase: IncidentPhase::Closed,
                        ..e.clone()
                    })
                    .collect();
                router.submit_batch(&closes, now).unwrap();
                now = now.plus_ms(1);
                black_box(ids)
            })
        });
    }
    {
        let dir = tempfile::TempDir::new().unwrap();
        let cfg = AlertConfig::from_toml(RECEIVER).unwrap();
        let mut router = Router::open(&cfg, &dir.path().join("bench.db"), Timestamp(0)).unwrap();
        let mut now = Timestamp(1_795_000_000_000);
        let live: Vec<IncidentEvent> = (0..200)
            .map(|i| event(i, IncidentPhase::Opened, now))
            .collect();
        router.submit_batch(&live, now).unwrap();
        router.tick(now).unwrap();
        g.throughput(Throughput::Elements(64));
        g.bench_function("updates/batch64", |b| {
            b.iter(|| {
                now = now.plus_ms(1);
                let updates: Vec<IncidentEvent> = (0..64)
                    .map(|i| event(i, IncidentPhase::Updated, now))
                    .map(|mut e| {
                        e.count = (now.0 % 50) as u32;
                        e
                    })
                    .collect();
                black_box(router.submit_batch(&updates, now).unwrap())
            })
        });
    }
    g.finish();
}

fn kannel(c: &mut Criterion) {
    let kannel = peers::Kannel::start();
    let dir = tempfile::TempDir::new().unwrap();
    let db = dir.path().join("bench.db");
    let cfg = format!(
        r#"
[flood]
max_notices = 0
[[receivers]]
name = "post"
max_concurrency = 8
[receivers.sms]
url = "{url}"
username = "{user}"
password = "{pass}"
numbers = ["0901234567"]
strip_diacritics = true
[route]
receiver = "post"
group_by = ["..."]
group_wait = "0s"
"#,
        url = kannel.sendsms_url(),
        user = peers::KANNEL_USER,
        pass = peers::KANNEL_PASS
    );
    let alert = AlertService::start(
        AlertConfig::from_toml(&cfg).unwrap(),
        &db,
        Arc::new(SystemClock),
    )
    .unwrap();
    let store = Store::open(&db).unwrap();
    let mut n = 0u64;
    const PER_SAMPLE: u64 = 100;
    let mut g = c.benchmark_group("kannel");
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    g.throughput(Throughput::Elements(PER_SAMPLE));
    g.bench_function("notices_delivered", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let target = (n + PER_SAMPLE) as usize;
                for _ in 0..PER_SAMPLE {
                    n += 1;
                    alert.submit(event(n, IncidentPhase::Opened, SystemClock.now()));
                }
                peers::wait_for(
                    "the notices accepted by Kannel",
                    Duration::from_secs(60),
                    || {
                        let (decided, unsent) = store.backlog().unwrap();
                        (decided as usize >= target && unsent == 0).then_some(())
                    },
                );
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
    let counts = store.delivery_counts().unwrap();
    assert!(
        !counts.contains_key("dead"),
        "dead-lettered deliveries during the benchmark: {counts:?}"
    );
    eprintln!(
        "kannel: {} SMS reached the fake SMSC; deliveries by state {counts:?}",
        kannel.received().len()
    );
    alert.shutdown();
}

criterion_group!(benches, stages, kannel);
criterion_main!(benches);
