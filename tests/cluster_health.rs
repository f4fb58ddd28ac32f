//! Camera health across the cluster, against a real nats-server and real RTSP cameras: two analysis nodes
//! (real pipelines reading the footage server) publish their cameras' health; a router's follower shows
//! the whole city in its `/api/cameras` and `/metrics` (checked by promtool), each camera with its node.
//! node-b then dies without cleaning up (its runtime and NATS connection dropped, as SIGKILL would):
//! within `lease_seconds`×3 its cameras show stopped on a lost node, the node shows lost, and the real
//! alert service was told Down (it mutes node-b's camera's incident) once per camera, never Up.
//!
//! The nodes' heartbeats (the nodes bucket) belong to `streetwatch node`'s lease loop; here a stand-in
//! writes the same record on the same key and rhythm (a third of the lease), on the node's runtime.

#[path = "support/nats.rs"]
mod nats;
#[path = "support/alert_peers.rs"]
mod peers;
mod support;
#[path = "support/alert_util.rs"]
mod util;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use nats::NatsServer;
use peers::{HookServer, free_port, wait_for};
use streetwatch::alert::{AlertService, Store};
use streetwatch::app::{Pipeline, RunOptions};
use streetwatch::cluster::health::{FollowOptions, HealthFollower, HealthPublisher, PUBLISH_SCAN};
use streetwatch::cluster::{Bus, ClusterConfig, HealthRecord, NodeRecord, subject_token};
use streetwatch::config::Config;
use streetwatch::health::{CameraHealth, StreamState};
use streetwatch::secret::SecretUrl;
use streetwatch::serve::{
    CameraInfo, CameraList, PipelineStats, Role, ServeConfig, ServeContext, Server, TokenConfig,
};
use streetwatch::types::{CameraId, Clock, SystemClock, Timestamp};

const TOKEN: &str = "cluster-health-viewer-5c1e9a";
const LEASE_SECONDS: u64 = 3;
/// A camera with no frames for this long is down; short, so the test sees it soon after its node dies.
const DOWN_AFTER: Duration = Duration::from_secs(2);

fn cluster(server: &NatsServer) -> ClusterConfig {
    ClusterConfig {
        nats: SecretUrl::new(server.url()),
        lease_seconds: LEASE_SECONDS,
        ..ClusterConfig::default()
    }
}

/// An analysis node: a real pipeline on its cameras, publishing their health and its heartbeat on a
/// runtime of its own. Dropping the runtime is the node's death: its tasks and NATS connection end
/// with no goodbye.
struct Node {
    runtime: tokio::runtime::Runtime,
    pipeline: Pipeline,
    publisher: HealthPublisher,
}

impl Node {
    fn start(name: &str, cluster: &ClusterConfig, cameras: &[(&str, String)]) -> Node {
        let dir = tempfile::tempdir().unwrap().keep();
        let cameras: String = cameras
            .iter()
            .map(|(id, url)| {
                support::intrusion_camera(id, url)
                    .replace("fps = 2\n", "fps = 2\nkeyframe_only = true\n")
            })
            .collect();
        let text = format!(
            "[runtime]\ndata_dir = {dir:?}\nworkers = 1\n{cameras}",
            dir = dir.join("data")
        );
        let config = Config::parse(&text, &format!("{name}.toml"), &support::root()).unwrap();
        let pipeline =
            Pipeline::start(&config, RunOptions::default(), Arc::new(SystemClock)).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (bus, res) = runtime.block_on(async {
            let bus = Bus::connect(cluster, name).await.unwrap();
            let res = bus.ensure().await.unwrap();
            (bus, res)
        });
        let record = serde_json::to_vec(&NodeRecord {
            node: name.into(),
            started_at: SystemClock.now(),
            capacity: 1.0,
        })
        .unwrap();
        let (nodes, key, every) = (res.nodes.clone(), subject_token(name), bus.lease_ttl / 3);
        runtime.spawn(async move {
            loop {
                let _ = nodes.put(&key, record.clone().into()).await;
                tokio::time::sleep(every).await;
            }
        });
        let publisher = HealthPublisher::start(
            &res,
            name,
            pipeline.cameras(),
            bus.lease_ttl,
            Arc::new(SystemClock),
            runtime.handle(),
        );
        Node {
            runtime,
            pipeline,
            publisher,
        }
    }

    fn streaming(&self) -> usize {
        self.pipeline
            .health()
            .iter()
            .filter(|h| h.state == StreamState::Streaming)
            .count()
    }

    /// Dies as a killed process would: nothing deleted, nothing said.
    fn kill(self) {
        let Node {
            runtime,
            pipeline,
            publisher,
        } = self;
        drop(runtime);
        drop(publisher);
        pipeline.shutdown();
    }

    fn stop(self) {
        self.runtime.block_on(self.publisher.stop());
        self.pipeline.shutdown();
    }
}

/// The router's half: every camera of the city with a health of its own, the follower, a real alert
/// service (a webhook receiver) and the operations-centre server.
struct Router {
    runtime: tokio::runtime::Runtime,
    follower: HealthFollower,
    server: Server,
    alerts: Arc<streetwatch::alert::AlertHandle>,
    db: std::path::PathBuf,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Router {
    fn start(cluster: &ClusterConfig, cameras: &[&str], hook: &HookServer) -> Router {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("streetwatch.db");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let alerts = Arc::new(
            AlertService::start(
                util::webhook_config(&hook.url(), "0123456789abcdef", "group_wait = \"0s\""),
                &db,
                Arc::new(SystemClock),
            )
            .unwrap(),
        );
        let list: CameraList = cameras
            .iter()
            .map(|id| CameraInfo {
                id: CameraId::new(id),
                name: format!("Camera {id}"),
                ward: "Bến Nghé".into(),
                health: Arc::new(CameraHealth::new(CameraId::new(id))),
            })
            .collect::<Vec<_>>()
            .into();
        let res = runtime.block_on(async {
            let bus = Bus::connect(cluster, "router").await.unwrap();
            bus.ensure().await.unwrap()
        });
        let follower = HealthFollower::start(
            &res,
            list.clone(),
            Some(alerts.clone()),
            FollowOptions {
                lease_ttl: cluster.lease_ttl(),
                camera_down_after: DOWN_AFTER,
            },
            Arc::new(SystemClock),
            runtime.handle(),
        );
        let server = Server::start(
            &ServeConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                tokens: vec![TokenConfig {
                    name: "wall".into(),
                    role: Role::Viewer,
                    token: streetwatch::secret::Secret::new(TOKEN),
                }],
                ..ServeConfig::default()
            },
            ServeContext {
                db_path: db.clone(),
                snapshots_dir: dir.path().join("snapshots"),
                cameras: list,
                clock: Arc::new(SystemClock),
                submit: None,
                stats: PipelineStats {
                    cluster: Some(follower.view()),
                    alerts: Some(Arc::downgrade(&alerts)),
                    ..PipelineStats::default()
                },
            },
            runtime.handle().clone(),
        )
        .unwrap();
        Router {
            runtime,
            follower,
            server,
            alerts,
            db,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    fn get(&self, path: &str) -> String {
        let url = format!("http://{}{path}", self.server.addr());
        self.runtime.block_on(async {
            let response = self.http.get(url).bearer_auth(TOKEN).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            response.text().await.unwrap()
        })
    }

    fn cameras(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/api/cameras")).unwrap()
    }

    fn stop(self) {
        self.server.stop();
        self.runtime.block_on(self.follower.stop());
        drop(self.runtime);
        Arc::into_inner(self.alerts)
            .expect("the server holds the alert service only weakly")
            .shutdown();
    }
}

fn camera<'a>(doc: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    doc["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("{id} missing: {doc}"))
}

fn node<'a>(doc: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    doc["nodes"].as_array()?.iter().find(|n| n["node"] == name)
}

/// The router's `/metrics`, accepted by `promtool check metrics`: its text and samples.
fn metrics(router: &Router) -> (String, BTreeMap<String, f64>) {
    let body = router.get("/metrics");
    let (code, said) = support::promtool(&body);
    assert_eq!(code, 0, "promtool check metrics: {said}\n{body}");
    let s = support::samples(&body);
    (body, s)
}

/// `streetwatch_cluster_nodes` live and lost.
fn nodes_by_state(s: &BTreeMap<String, f64>) -> (f64, f64) {
    let of = |state: &str| s[&format!("streetwatch_cluster_nodes{{state=\"{state}\"}}")];
    (of("live"), of("lost"))
}

#[test]
fn every_nodes_cameras_reach_the_router_and_a_dead_node_shows_lost() {
    let nats = NatsServer::start();
    let cluster = cluster(&nats);
    let vtest = support::footage("vtest_h264.mp4");
    let (_footage, port) =
        support::serve_footage_with(0, &[("a1", &vtest), ("b1", &vtest), ("b2", &vtest)], true);
    let rtsp = |mount: &str| format!("rtsp://127.0.0.1:{port}/{mount}");
    // Nothing listens there: the camera backs off and never streams.
    let dead = format!("rtsp://127.0.0.1:{}/cam", free_port());
    let node_a = Node::start(
        "node-a",
        &cluster,
        &[("d1.a1", rtsp("a1")), ("d1.a-dead", dead)],
    );
    let node_b = Node::start(
        "node-b",
        &cluster,
        &[("d2.b1", rtsp("b1")), ("d2.b2", rtsp("b2"))],
    );
    // A router started on a running city: the nodes' cameras stream before it looks.
    wait_for(
        "the nodes' cameras to stream",
        Duration::from_secs(120),
        || (node_a.streaming() == 1 && node_b.streaming() == 2).then_some(()),
    );
    let hook = HookServer::start(vec![200]);
    let city = ["d1.a1", "d1.a-dead", "d2.b1", "d2.b2", "d3.nobody"];
    let router = Router::start(&cluster, &city, &hook);

    // Every camera with its node, state and counters as its node has them; the nodes listed live.
    let doc = wait_for(
        "every node's cameras on the router's /api/cameras",
        Duration::from_secs(60),
        || {
            let doc = router.cameras();
            let ok = ["d1.a1", "d2.b1", "d2.b2"]
                .iter()
                .all(|id| camera(&doc, id)["state"] == "streaming")
                && camera(&doc, "d1.a-dead")["report"] == "live"
                && camera(&doc, "d2.b1")["frames_received"].as_u64() > Some(0);
            ok.then_some(doc)
        },
    );
    for (id, node) in [
        ("d1.a1", "node-a"),
        ("d1.a-dead", "node-a"),
        ("d2.b1", "node-b"),
        ("d2.b2", "node-b"),
    ] {
        let c = camera(&doc, id);
        assert_eq!(c["node"], node, "{c}");
        assert_eq!(c["report"], "live", "{c}");
    }
    let dead_state = camera(&doc, "d1.a-dead")["state"].as_str().unwrap();
    assert!(
        ["connecting", "backoff"].contains(&dead_state),
        "a camera nobody answers is not streaming: {doc}"
    );
    let nobody = camera(&doc, "d3.nobody");
    assert_eq!(nobody["state"], "stopped", "{nobody}");
    assert_eq!(nobody["report"], "none", "{nobody}");
    assert!(nobody.get("node").is_none(), "{nobody}");
    for (name, cameras) in [("node-a", 2), ("node-b", 2)] {
        let n = node(&doc, name).unwrap_or_else(|| panic!("{name}: {doc}"));
        assert_eq!(n["state"], "live", "{n}");
        assert_eq!(n["cameras"], cameras, "{n}");
    }
    assert_eq!(doc["counts"]["streaming"], 3, "{doc}");
    let age = camera(&doc, "d2.b1")["last_frame_age_s"].as_f64().unwrap();
    assert!(
        age < (LEASE_SECONDS * 2) as f64,
        "a streaming camera's last frame is recent: {age}"
    );

    let (body, s) = metrics(&router);
    for (id, node) in [
        ("d1.a1", "node-a"),
        ("d2.b1", "node-b"),
        ("d2.b2", "node-b"),
    ] {
        let key = format!(r#"streetwatch_camera_node_info{{camera="{id}",node="{node}"}}"#);
        assert_eq!(s.get(&key), Some(&1.0), "{key}: {body}");
        let key = format!(r#"streetwatch_camera_state{{camera="{id}",state="streaming"}}"#);
        assert_eq!(s.get(&key), Some(&1.0), "{key}: {body}");
    }
    assert!(
        !s.keys()
            .any(|k| k.starts_with("streetwatch_camera_node_info{camera=\"d3.nobody\"")),
        "no node for a camera nobody runs: {body}"
    );
    assert_eq!(nodes_by_state(&s), (2.0, 0.0), "{body}");
    assert!(
        s[r#"streetwatch_camera_frames_received_total{camera="d2.b1"}"#] > 0.0,
        "{body}"
    );

    // The cameras that never streamed are down by now, each reported once.
    wait_for(
        "the camera nobody runs and the one nobody answers reported down",
        Duration::from_secs(30),
        || (router.follower.view().load().reported_down == 2).then_some(()),
    );

    // node-b dies.
    let killed = Instant::now();
    node_b.kill();
    let limit = Duration::from_secs(LEASE_SECONDS * 3) + Duration::from_secs(3);
    let doc = wait_for(
        "node-b's cameras shown stopped on a lost node",
        limit * 3,
        || {
            let doc = router.cameras();
            let lost = ["d2.b1", "d2.b2"].iter().all(|id| {
                let c = camera(&doc, id);
                c["state"] == "stopped" && c["report"] == "node_lost"
            }) && node(&doc, "node-b").is_some_and(|n| n["state"] == "lost");
            lost.then_some(doc)
        },
    );
    let took = killed.elapsed();
    eprintln!("node-b shown lost {took:?} after it died (lease_seconds = {LEASE_SECONDS})");
    assert!(took <= limit, "{took:?} > {limit:?}");
    let b1 = camera(&doc, "d2.b1");
    assert_eq!(b1["node"], "node-b", "the node it ran on: {b1}");
    assert_eq!(camera(&doc, "d1.a1")["state"], "streaming", "{doc}");
    assert_eq!(node(&doc, "node-a").unwrap()["state"], "live", "{doc}");
    let since = node(&doc, "node-b").unwrap()["since"].as_i64().unwrap();
    let now = SystemClock.now();
    assert!(
        now.since(Timestamp(since)) < took.as_millis() as i64,
        "lost since after it died: {doc}"
    );

    // Down once for each of node-b's cameras: the alert service mutes an incident there, not on node-a's.
    wait_for(
        "node-b's cameras reported down",
        Duration::from_secs(30),
        || (router.follower.view().load().reported_down == 4).then_some(()),
    );
    router
        .alerts
        .submit(util::opened("d2.b1", "Bến Nghé", None));
    router
        .alerts
        .submit(util::opened("d1.a1", "Bến Nghé", None));
    let alerts = Store::open(&router.db).unwrap();
    let rows = wait_for(
        "both incidents decided: node-b's muted, node-a's notified",
        Duration::from_secs(30),
        || {
            let rows = alerts.alerts(None, 100).unwrap();
            let of = |camera: &str| rows.iter().find(|a| a.camera == camera).cloned();
            let (b, a) = (of("d2.b1")?, of("d1.a1")?);
            (b.muted_by.is_some() && a.last_notice_id.is_some()).then_some((a, b))
        },
    );
    assert_eq!(rows.1.muted_by.as_deref(), Some("camera down"), "{rows:?}");
    assert_eq!(rows.0.muted_by, None, "{rows:?}");

    let (body, s) = metrics(&router);
    assert_eq!(nodes_by_state(&s), (1.0, 1.0), "{body}");
    assert_eq!(
        s[r#"streetwatch_cluster_node_up{node="node-b"}"#], 0.0,
        "{body}"
    );
    assert_eq!(
        s[r#"streetwatch_cluster_node_up{node="node-a"}"#], 1.0,
        "{body}"
    );
    assert_eq!(
        s[r#"streetwatch_camera_state{camera="d2.b1",state="stopped"}"#], 1.0,
        "{body}"
    );
    assert_eq!(
        s[r#"streetwatch_camera_node_info{camera="d2.b1",node="node-b"}"#], 1.0,
        "{body}"
    );

    // A few more rounds: no duplicate Down, no Up.
    let ticks_later = Instant::now() + PUBLISH_SCAN * 3;
    while Instant::now() < ticks_later {
        std::thread::sleep(Duration::from_millis(200));
    }
    let view = router.follower.view().load();
    assert_eq!((view.reported_down, view.reported_up), (4, 0));

    node_a.stop();
    router.stop();
}

/// A camera that moved is not erased by the node it left: node-a's delete fails its revision check
/// because node-b wrote the record since; a camera only node-a ran is deleted; a graceful stop deletes
/// what the node still holds.
#[test]
fn a_stopped_camera_is_deleted_only_by_the_node_that_wrote_it_last() {
    let nats = NatsServer::start();
    let cluster = cluster(&nats);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let res = runtime.block_on(async {
        let bus = Bus::connect(&cluster, "test").await.unwrap();
        bus.ensure().await.unwrap()
    });
    let info = |id: &str, state: StreamState| {
        let health = Arc::new(CameraHealth::new(CameraId::new(id)));
        health.set_state(state);
        CameraInfo {
            id: CameraId::new(id),
            name: id.into(),
            ward: "Bến Nghé".into(),
            health,
        }
    };
    let moving = info("d1.moving", StreamState::Streaming);
    let staying = info("d1.staying", StreamState::Backoff);
    let a_list: CameraList = vec![moving.clone(), staying.clone()].into();
    let b_list = CameraList::default();
    let start = |name: &str, list: &CameraList| {
        HealthPublisher::start(
            &res,
            name,
            list.clone(),
            cluster.lease_ttl(),
            Arc::new(SystemClock),
            runtime.handle(),
        )
    };
    let a = start("node-a", &a_list);
    let b = start("node-b", &b_list);
    let record = |id: &str| -> Option<HealthRecord> {
        runtime.block_on(async {
            let value = res.health.get(subject_token(id)).await.unwrap()?;
            Some(serde_json::from_slice(&value).unwrap())
        })
    };
    let writer = |id: &str| record(id).map(|r| r.node);
    wait_for("node-a's records", Duration::from_secs(30), || {
        (writer("d1.moving").as_deref() == Some("node-a")
            && writer("d1.staying").as_deref() == Some("node-a"))
        .then_some(())
    });
    let staying_record = record("d1.staying").unwrap();
    assert_eq!(staying_record.health.state, StreamState::Backoff);
    assert_eq!(staying_record.health.camera.as_str(), "d1.staying");

    // The camera moves: node-b runs it and writes its record, then node-a stops it and d1.staying.
    b_list.store(vec![moving.clone()]);
    wait_for("node-b's record", Duration::from_secs(30), || {
        (writer("d1.moving").as_deref() == Some("node-b")).then_some(())
    });
    a_list.store(vec![]);
    wait_for(
        "node-a's delete of d1.staying",
        Duration::from_secs(30),
        || (writer("d1.staying").is_none()).then_some(()),
    );
    wait_for("node-a's refused delete", Duration::from_secs(30), || {
        (a.stats()
            .kept_moved
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1)
            .then_some(())
    });
    assert_eq!(writer("d1.moving").as_deref(), Some("node-b"), "not erased");
    assert_eq!(
        a.stats().deleted.load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // A state change is published within a scan, well before the refresh.
    let changed = Instant::now();
    moving.health.set_state(StreamState::Stalled);
    wait_for("the stalled state", Duration::from_secs(30), || {
        (record("d1.moving")?.health.state == StreamState::Stalled).then_some(())
    });
    eprintln!("state change in the bucket after {:?}", changed.elapsed());

    // A graceful stop deletes what node-b holds.
    runtime.block_on(b.stop());
    assert!(writer("d1.moving").is_none(), "deleted on stop");
    runtime.block_on(a.stop());
    let keys: Vec<String> = runtime.block_on(async {
        let keys = res.health.keys().await.unwrap();
        keys.map(|k| k.unwrap()).collect().await
    });
    assert!(keys.is_empty(), "{keys:?}");
}

/// nats-server restarts (SIGKILL, same store): the publisher's puts and the follower's watch carry on
/// by themselves, and a change made after the restart reaches the router's camera.
#[test]
fn the_router_follows_again_after_nats_restarts() {
    let mut nats = NatsServer::start();
    let cluster = cluster(&nats);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let connect = |name: &str| {
        runtime.block_on(async {
            let bus = Bus::connect(&cluster, name).await.unwrap();
            bus.ensure().await.unwrap()
        })
    };
    let camera = |id: &str| CameraInfo {
        id: CameraId::new(id),
        name: id.into(),
        ward: "Bến Nghé".into(),
        health: Arc::new(CameraHealth::new(CameraId::new(id))),
    };
    let on_node = camera("d1.cam");
    on_node.health.set_state(StreamState::Streaming);
    let publisher = HealthPublisher::start(
        &connect("node-a"),
        "node-a",
        vec![on_node.clone()].into(),
        cluster.lease_ttl(),
        Arc::new(SystemClock),
        runtime.handle(),
    );
    let on_router = camera("d1.cam");
    let follower = HealthFollower::start(
        &connect("router"),
        vec![on_router.clone()].into(),
        None,
        FollowOptions {
            lease_ttl: cluster.lease_ttl(),
            camera_down_after: DOWN_AFTER,
        },
        Arc::new(SystemClock),
        runtime.handle(),
    );
    let shows = |state: StreamState| (on_router.health.state() == state).then_some(());
    wait_for(
        "the camera streaming on the router",
        Duration::from_secs(30),
        || shows(StreamState::Streaming),
    );

    nats.restart(Duration::from_millis(200));
    on_node.health.set_state(StreamState::Backoff);
    let restarted = Instant::now();
    wait_for(
        "the change after the restart",
        Duration::from_secs(60),
        || shows(StreamState::Backoff),
    );
    eprintln!("followed again {:?} after the restart", restarted.elapsed());
    runtime.block_on(async {
        follower.stop().await;
        publisher.stop().await;
    });
}
