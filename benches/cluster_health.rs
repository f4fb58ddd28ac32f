//! What publishing a city's camera health through NATS costs: 1,100 cameras over three nodes (a
//! `HealthPublisher` each) and one router's `HealthFollower`, against a real nats-server, with 1% of the
//! cameras changing state every second. Prints puts/s per node and in all, the CPU our process and
//! nats-server spent per second, and how long a state change takes to reach the router.
//! `cargo bench --bench cluster_health` (`BENCH_SECONDS` sets the measured window, default 30).

#[path = "../tests/support/nats.rs"]
mod nats;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use streetwatch::cluster::health::{FollowOptions, HealthFollower, HealthPublisher};
use streetwatch::cluster::{Bus, ClusterConfig};
use streetwatch::health::{CameraHealth, StreamState};
use streetwatch::secret::SecretUrl;
use streetwatch::serve::{CameraInfo, CameraList};
use streetwatch::types::{CameraId, Clock, SystemClock};

const CAMERAS: usize = 1100;
const NODES: usize = 3;

fn cameras(ids: &[String]) -> Vec<CameraInfo> {
    ids.iter()
        .map(|id| {
            let health = Arc::new(CameraHealth::new(CameraId::new(id)));
            health.set_state(StreamState::Streaming);
            CameraInfo {
                id: CameraId::new(id),
                name: id.clone(),
                ward: "Bến Nghé".into(),
                health,
            }
        })
        .collect()
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat`.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the command name and state.
    (ticks(11) + ticks(12)) / 100.0
}

/// The nats-server this process started.
fn nats_pid() -> Option<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().into_string().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (name, rest) = stat.split_once(" (")?.1.split_once(')')?;
        let ppid = rest.split_whitespace().nth(1)?;
        (name == "nats-server" && ppid == me).then_some(pid)
    })
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let server = nats::NatsServer::start();
    let config = ClusterConfig {
        nats: SecretUrl::new(server.url()),
        ..ClusterConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ids: Vec<String> = (0..CAMERAS).map(|i| format!("cam-{i:04}")).collect();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut running = Vec::new();
    let mut publishers = Vec::new();
    for (n, shard) in ids.chunks(CAMERAS.div_ceil(NODES)).enumerate() {
        let res = runtime.block_on(async {
            let bus = Bus::connect(&config, &format!("node-{n}")).await.unwrap();
            bus.ensure().await.unwrap()
        });
        let list = cameras(shard);
        running.extend(list.iter().map(|c| c.health.clone()));
        publishers.push(HealthPublisher::start(
            &res,
            &format!("node-{n}"),
            CameraList::from(list),
            config.lease_ttl(),
            clock.clone(),
            runtime.handle(),
        ));
    }
    let city = cameras(&ids);
    let res = runtime.block_on(async {
        let bus = Bus::connect(&config, "router").await.unwrap();
        bus.ensure().await.unwrap()
    });
    let follower = HealthFollower::start(
        &res,
        CameraList::from(city.clone()),
        None,
        FollowOptions {
            lease_ttl: config.lease_ttl(),
            camera_down_after: Duration::from_secs(30),
        },
        clock.clone(),
        runtime.handle(),
    );
    // Past the first full round (every camera's first put).
    std::thread::sleep(Duration::from_secs(3));

    let nats = nats_pid();
    let me = std::process::id().to_string();
    let puts = |ps: &[HealthPublisher]| -> Vec<u64> {
        ps.iter()
            .map(|p| p.stats().puts.load(Ordering::Relaxed))
            .collect()
    };
    let (puts_before, cpu_before, nats_before) = (
        puts(&publishers),
        cpu_seconds(&me),
        nats.as_deref().map_or(0.0, cpu_seconds),
    );
    let started = Instant::now();
    let mut lags = Vec::new();
    let mut second = 0usize;
    while started.elapsed() < Duration::from_secs(seconds) {
        // 1% of the cameras change state; the first of them is timed to the router.
        for k in 0..CAMERAS / 100 {
            let i = (second * 97 + k * 101) % CAMERAS;
            let next = match running[i].state() {
                StreamState::Streaming => StreamState::Stalled,
                _ => StreamState::Streaming,
            };
            running[i].set_state(next);
            if k == 0 {
                let changed = Instant::now();
                while city[i].health.state() != next && changed.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                lags.push(changed.elapsed());
            }
        }
        for h in &running {
            h.frames_received.fetch_add(2, Ordering::Relaxed);
        }
        second += 1;
        // On the second: the next round starts `second` seconds after the first.
        let next = started + Duration::from_secs(second as u64);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let puts_after = puts(&publishers);
    let per_node: Vec<f64> = puts_after
        .iter()
        .zip(&puts_before)
        .map(|(a, b)| (a - b) as f64 / elapsed)
        .collect();
    let failures: u64 = publishers
        .iter()
        .map(|p| p.stats().put_failures.load(Ordering::Relaxed))
        .sum();
    lags.sort();
    let median = lags.get(lags.len() / 2).copied().unwrap_or_default();
    let worst = lags.last().copied().unwrap_or_default();
    println!(
        "cluster health, {CAMERAS} cameras over {NODES} nodes, lease {} s, {elapsed:.0} s measured:",
        config.lease_seconds
    );
    println!(
        "  puts/s: {:.0} in all ({}), put failures {failures}",
        per_node.iter().sum::<f64>(),
        per_node
            .iter()
            .map(|p| format!("{p:.0}"))
            .collect::<Vec<_>>()
            .join(" + ")
    );
    println!(
        "  CPU per second: this process (3 publishers + follower + driver) {:.3} s, nats-server {:.3} s",
        (cpu_seconds(&me) - cpu_before) / elapsed,
        nats.as_deref()
            .map_or(f64::NAN, |p| (cpu_seconds(p) - nats_before) / elapsed)
    );
    println!(
        "  a state change reached the router's CameraHealth in {median:?} (median), {worst:?} (worst) over {} changes",
        lags.len()
    );
    runtime.block_on(async {
        follower.stop().await;
        for p in publishers {
            p.stop().await;
        }
    });
}
