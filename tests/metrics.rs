//! `GET /metrics` against real things: a pipeline reading the vtest walkway from the footage RTSP server,
//! alerting a real webhook receiver, scraped by `promtool check metrics` and by a real Prometheus server
//! whose query API must return the camera's frames; and a server with 1,100 cameras, to count its series.

#[path = "support/alert_peers.rs"]
mod peers;
mod support;
#[path = "support/alert_util.rs"]
mod util;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use peers::{HookServer, free_port, http_get, wait_for};
use streetwatch::alert::{AlertConfig, AlertService};
use streetwatch::app::{Pipeline, RunOptions};
use streetwatch::config::Config;
use streetwatch::health::{CameraHealth, StreamState};
use streetwatch::serve::{CameraInfo, PipelineStats, ServeConfig, ServeContext, Server};
use streetwatch::types::{CameraId, Clock, SystemClock, Timestamp};
use support::{promtool, samples};

const TOKEN: &str = "metrics-test-token-7f3a9c2e51";
const HOOK_SECRET: &str = "hook-secret-0123456789abcdef";
const CAMERA_PASSWORD: &str = "camPassw0rd9";

fn scrape(port: u16) -> String {
    let (status, body) = http_get(port, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// A Prometheus server scraping `target` every second, in its own temp dir, killed on drop.
struct Prometheus {
    _child: support::ChildGuard,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: streetwatch\n    \
                 metrics_path: /metrics\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus; scripts/setup.sh installs it)");
        Prometheus {
            _child: support::ChildGuard(child),
            _dir: dir,
            port,
        }
    }

    /// An instant query's result vector.
    fn query(&self, q: &str) -> Option<Vec<serde_json::Value>> {
        let (status, body) = http_get(self.port, &format!("/api/v1/query?query={q}"))?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"].as_array().cloned()
    }
}

#[test]
fn a_running_pipeline_is_scraped_by_promtool_and_prometheus() {
    let vtest = support::footage("vtest_h264.mp4");
    let (_footage, rtsp_port) = support::serve_footage(0, &[("cam", &vtest)]);
    let hook = HookServer::start(vec![200]);
    let dir = tempfile::tempdir().unwrap();
    // The walkway over RTSP, with credentials in its URL (which must never show), and an intrusion rule: the
    // first person on the walkway opens an incident.
    let camera = support::intrusion_camera(
        "d1-walkway",
        &format!("rtsp://watcher:{CAMERA_PASSWORD}@127.0.0.1:{rtsp_port}/cam"),
    );
    let text = format!(
        r#"
[runtime]
data_dir = {data:?}
{camera}
[serve]
listen = "127.0.0.1:0"
[[serve.tokens]]
name = "desk"
role = "viewer"
token = "{TOKEN}"
[alert]
[alert.flood]
max_notices = 0
[[alert.receivers]]
name = "district"
webhook = {{ url = "{url}", secret = "{HOOK_SECRET}" }}
[alert.route]
receiver = "district"
group_wait = "0s"
"#,
        data = dir.path(),
        url = hook.url(),
    );
    let config = Config::parse(&text, "metrics.toml", &support::root()).unwrap();
    let pipeline = Pipeline::start(&config, RunOptions::default(), Arc::new(SystemClock)).unwrap();
    let addr = pipeline.server_addr().expect("[serve] starts the server");

    // The exposition of a running pipeline passes Prometheus's own linter (names, HELP, _total, units).
    let body = scrape(addr.port());
    let (code, said) = promtool(&body);
    assert_eq!(code, 0, "promtool check metrics: {said}\n{body}");

    // A real Prometheus scrapes it and answers for the camera's frames.
    let prometheus = Prometheus::start(addr);
    let started = Instant::now();
    let received = wait_for(
        "Prometheus to return the camera's received frames",
        Duration::from_secs(90),
        || {
            prometheus
                .query("streetwatch_camera_frames_received_total")?
                .into_iter()
                .find(|s| s["metric"]["camera"] == "d1-walkway")
                .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
                .filter(|&v| v > 0.0)
        },
    );
    eprintln!(
        "prometheus: {received} frames received by d1-walkway, queryable after {:?}",
        started.elapsed()
    );
    let up = prometheus.query("up").unwrap_or_default();
    assert!(
        up.iter()
            .any(|s| s["metric"]["job"] == "streetwatch" && s["value"][1] == "1"),
        "the scrape target is up: {up:?}"
    );

    // The crowd opens an incident, its notice goes to the webhook: the counters of the sink, the notifier
    // and the pool show it.
    let opened_key = r#"streetwatch_incidents_opened_total{kind="intrusion"}"#;
    let sent_key = r#"streetwatch_alert_delivery_attempts_total{channel="webhook",outcome="sent",receiver="district"}"#;
    let deadline = Instant::now() + Duration::from_secs(120);
    let body = loop {
        let body = scrape(addr.port());
        let s = samples(&body);
        let (opened, sent) = (s.get(opened_key).copied(), s.get(sent_key).copied());
        if opened >= Some(1.0) && sent >= Some(1.0) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no opened intrusion and sent notice in /metrics after 120 s: {opened_key} = {opened:?}, \
             {sent_key} = {sent:?}, webhook requests {}; {:?}",
            hook.count(),
            pipeline.health()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let s = samples(&body);
    assert!(hook.count() >= 1, "the webhook got the notice");
    assert!(
        s["streetwatch_inference_duration_seconds_count"] > 0.0,
        "{body}"
    );
    assert_eq!(
        s[r#"streetwatch_inference_duration_seconds_bucket{le="+Inf"}"#],
        s["streetwatch_inference_duration_seconds_count"],
        "{body}"
    );
    assert!(
        s["streetwatch_inference_duration_seconds_sum"] > 0.0,
        "{body}"
    );
    assert!(s.contains_key("streetwatch_pool_queue_depth"), "{body}");
    let states: f64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("streetwatch_camera_state{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(states, 1.0, "one state at a time: {body}");
    for state in ["connecting", "streaming", "stalled", "backoff", "stopped"] {
        let key = format!(r#"streetwatch_camera_state{{camera="d1-walkway",state="{state}"}}"#);
        assert!(s.contains_key(&key), "{key} missing: {body}");
    }
    for key in [
        r#"streetwatch_alert_outbox_deliveries{receiver="district",state="pending"}"#,
        r#"streetwatch_alert_outbox_deliveries{receiver="district",state="sending"}"#,
        "streetwatch_alert_router_queue_depth",
        "streetwatch_alert_router_spilled_total",
    ] {
        assert!(s.contains_key(key), "{key} missing: {body}");
    }
    assert!(
        s[r#"streetwatch_http_requests_total{method="GET",route="/metrics",status="200"}"#] >= 2.0,
        "{body}"
    );
    for secret in [TOKEN, HOOK_SECRET, CAMERA_PASSWORD, "rtsp://", "127.0.0.1"] {
        assert!(!body.contains(secret), "{secret} in /metrics: {body}");
    }
    let (code, said) = promtool(&body);
    assert_eq!(code, 0, "promtool check metrics: {said}\n{body}");
    pipeline.shutdown();
}

/// 1,100 cameras: every camera has the same fixed set of series, promtool accepts the whole exposition, and
/// the count is what the design says (and is reported).
#[test]
fn series_stay_bounded_for_1100_cameras() {
    const CAMERAS: usize = 1100;
    // Per camera: info, 4 frame counters, 2 skip counters, restarts, 5 one-hot states, last frame age.
    const PER_CAMERA: usize = 1 + 4 + 2 + 1 + 5 + 1;
    let now = SystemClock.now();
    let cameras: Vec<CameraInfo> = (0..CAMERAS)
        .map(|i| {
            let health = Arc::new(CameraHealth::new(CameraId::new(&format!("cam-{i:04}"))));
            health.set_state([StreamState::Streaming, StreamState::Backoff][i % 2]);
            health.frame_received(Timestamp(now.0 - 1500));
            CameraInfo {
                id: health.camera.clone(),
                name: format!("Camera {i}"),
                ward: format!("Ward {}", i % 10),
                health,
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServeConfig::default()
    };
    let server = Server::start(
        &config,
        ServeContext {
            db_path: dir.path().join("streetwatch.db"),
            snapshots_dir: dir.path().join("snapshots"),
            cameras: cameras.into(),
            clock: Arc::new(SystemClock),
            submit: None,
            stats: PipelineStats::default(),
        },
        runtime.handle().clone(),
    )
    .unwrap();
    let port = server.addr().port();
    scrape(port); // so the HTTP families have a series too
    let started = Instant::now();
    let body = scrape(port);
    let took = started.elapsed();
    let s = samples(&body);
    let per_camera = s.keys().filter(|k| k.contains("camera=\"")).count();
    let total = s.len();
    eprintln!(
        "1,100 cameras: {total} series ({per_camera} per-camera), {} bytes, scraped in {took:?}",
        body.len()
    );
    assert_eq!(per_camera, CAMERAS * PER_CAMERA);
    for i in [0, 549, 1099] {
        let id = format!("cam-{i:04}");
        let of_camera = s
            .keys()
            .filter(|k| k.contains(&format!("camera=\"{id}\"")))
            .count();
        assert_eq!(of_camera, PER_CAMERA, "{id}");
    }
    let streaming = s
        .iter()
        .filter(|(k, v)| k.contains("state=\"streaming\"") && **v == 1.0)
        .count();
    assert_eq!(streaming, CAMERAS / 2);
    let age = s[r#"streetwatch_camera_last_frame_age_seconds{camera="cam-0042"}"#];
    assert!((1.5..60.0).contains(&age), "{age}");
    // Besides the cameras: the panic total, and one route's request counter and histogram.
    assert!(total - per_camera < 40, "{total} series");
    let (code, said) = promtool(&body);
    assert_eq!(code, 0, "promtool check metrics: {said}");
    server.stop();
}

/// A webhook that fails once (503: retried) and then refuses (400: dead-lettered): the attempts are counted
/// per receiver and outcome, the outbox shows the delivery pending while it waits for its retry, and a
/// configured receiver that was sent nothing has its series at 0.
#[test]
fn delivery_outcomes_and_the_outbox_are_counted_per_receiver() {
    let hook = HookServer::start(vec![503, 400]);
    let spare = HookServer::start(vec![200]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("streetwatch.db");
    let config = AlertConfig::from_toml(&format!(
        r#"
[retry]
initial_backoff = "3s"
jitter = 0.0
[[receivers]]
name = "city-platform"
webhook = {{ url = "{url}", secret = "{HOOK_SECRET}" }}
[[receivers]]
name = "spare"
webhook = {{ url = "{spare}", secret = "{HOOK_SECRET}" }}
[route]
receiver = "city-platform"
group_wait = "0s"
"#,
        url = hook.url(),
        spare = spare.url(),
    ))
    .unwrap();
    let alert = Arc::new(AlertService::start(config, &db, Arc::new(SystemClock)).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = Server::start(
        &ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ServeConfig::default()
        },
        ServeContext {
            db_path: db.clone(),
            snapshots_dir: dir.path().join("snapshots"),
            cameras: Default::default(),
            clock: Arc::new(SystemClock),
            submit: None,
            stats: PipelineStats {
                alerts: Some(Arc::downgrade(&alert)),
                ..PipelineStats::default()
            },
        },
        runtime.handle().clone(),
    )
    .unwrap();
    let port = server.addr().port();
    let attempts = |s: &BTreeMap<String, f64>, receiver: &str, outcome: &str| {
        s.get(&format!(
            r#"streetwatch_alert_delivery_attempts_total{{channel="webhook",outcome="{outcome}",receiver="{receiver}"}}"#
        ))
        .copied()
    };
    let outbox = |s: &BTreeMap<String, f64>, receiver: &str, state: &str| {
        s.get(&format!(
            r#"streetwatch_alert_outbox_deliveries{{receiver="{receiver}",state="{state}"}}"#
        ))
        .copied()
    };

    let s = samples(&scrape(port));
    for outcome in ["sent", "failed", "dead_lettered"] {
        assert_eq!(attempts(&s, "city-platform", outcome), Some(0.0), "{s:?}");
    }
    alert.submit(util::opened("d1-nh-03", "Bến Nghé", None));

    // After the 503, the delivery waits 3 s for its retry: one failed attempt, one pending delivery.
    wait_for(
        "the failed attempt and the pending retry",
        Duration::from_secs(30),
        || {
            let s = samples(&scrape(port));
            (attempts(&s, "city-platform", "failed") == Some(1.0)
                && outbox(&s, "city-platform", "pending") == Some(1.0))
            .then_some(())
        },
    );
    util::wait_deliveries(&db, Duration::from_secs(30), "dead-lettered", |r| {
        r.len() == 1 && r[0].state == "dead"
    });
    let body = scrape(port);
    let s = samples(&body);
    assert_eq!(attempts(&s, "city-platform", "sent"), Some(0.0), "{body}");
    assert_eq!(attempts(&s, "city-platform", "failed"), Some(1.0), "{body}");
    assert_eq!(
        attempts(&s, "city-platform", "dead_lettered"),
        Some(1.0),
        "{body}"
    );
    for (receiver, state) in [
        ("city-platform", "pending"),
        ("city-platform", "sending"),
        ("spare", "pending"),
        ("spare", "sending"),
    ] {
        assert_eq!(outbox(&s, receiver, state), Some(0.0), "{body}");
    }
    for outcome in ["sent", "failed", "dead_lettered"] {
        assert_eq!(attempts(&s, "spare", outcome), Some(0.0), "{body}");
    }
    assert_eq!(s["streetwatch_alert_router_spilled_total"], 0.0, "{body}");
    for secret in [HOOK_SECRET, "/hooks/", "127.0.0.1"] {
        assert!(!body.contains(secret), "{secret} in /metrics: {body}");
    }
    let (code, said) = promtool(&body);
    assert_eq!(code, 0, "promtool check metrics: {said}\n{body}");
    server.stop();
    drop(runtime);
    Arc::into_inner(alert)
        .expect("the server holds the alert service only weakly")
        .shutdown();
}
