//! The operations centre's read views and silences over real HTTP: `GET /api/cameras` (live health, secrets
//! redacted, counts), `GET|POST /api/silences` and `DELETE /api/silences/{id}` (a silence made through the
//! API holds the real router's next notice to a real webhook receiver), and `GET /api/report/daily` (figures
//! checked against a hand-computed timeline across a local midnight at +07:00).
//!
//! Each test starts the real server on 127.0.0.1 port 0 over a real SQLite file; time is a ManualClock.

#[path = "support/alert_peers.rs"]
mod peers;
#[path = "support/alert_util.rs"]
mod util;

use std::sync::Arc;
use std::time::{Duration, Instant};

use peers::{HookServer, wait_for};
use proptest::prelude::*;
use serde_json::{Value, json};
use streetwatch::alert::{AlertConfig, AlertHandle, AlertService, Store};
use streetwatch::health::{CameraHealth, StreamState};
use streetwatch::secret::Secret;
use streetwatch::serve::{CameraInfo, Role, ServeConfig, ServeContext, Server, TokenConfig};
use streetwatch::types::{
    CameraId, IncidentEvent, IncidentKey, IncidentPhase, ManualClock, RuleKind, Severity, Timestamp,
};
use tempfile::TempDir;

const OPERATOR: &str = "operator-token-0001";
const VIEWER: &str = "viewer-token-000001";
const REPORTER: &str = "reporter-token-0001";

/// 2026-11-29 17:00 UTC = 2026-11-30 00:00 at +07:00.
const T0: i64 = 1_795_971_600_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn serve_config() -> ServeConfig {
    let token = |name: &str, role, t: &str| TokenConfig {
        name: name.into(),
        role,
        token: Secret::new(t),
    };
    ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tokens: vec![
            token("desk", Role::Operator, OPERATOR),
            token("wall", Role::Viewer, VIEWER),
            token("kiosk", Role::Reporter, REPORTER),
        ],
        utc_offset_minutes: 420,
        ..ServeConfig::default()
    }
}

/// A running server and a blocking client for it.
struct Api {
    server: Option<Server>,
    base: String,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Api {
    fn start(
        dir: &TempDir,
        cameras: Vec<CameraInfo>,
        clock: &ManualClock,
        runtime: tokio::runtime::Handle,
    ) -> Api {
        let ctx = ServeContext {
            db_path: dir.path().join("sw.db"),
            snapshots_dir: dir.path().join("snapshots"),
            cameras: cameras.into(),
            clock: Arc::new(clock.clone()),
            submit: None,
            stats: Default::default(),
        };
        let server = Server::start(&serve_config(), ctx, runtime).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Api {
            base: format!("http://{}", server.addr()),
            server: Some(server),
            client: reqwest::Client::new(),
            rt,
        }
    }

    /// `method path` with an optional bearer token and raw JSON body: (status, parsed JSON body).
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let (status, text) = self.raw(method, path, token, body, "application/json");
        let doc = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        (status, doc)
    }

    fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
        content_type: &str,
    ) -> (u16, String) {
        self.rt.block_on(async {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut req = self.client.request(method, format!("{}{path}", self.base));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.header("content-type", content_type).body(b.to_string());
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        })
    }

    fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call("GET", path, Some(token), None)
    }

    fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn camera(id: &str, name: &str, ward: &str) -> CameraInfo {
    CameraInfo {
        id: CameraId::new(id),
        name: name.into(),
        ward: ward.into(),
        health: Arc::new(CameraHealth::new(CameraId::new(id))),
    }
}

/// Every protected path refuses a request without a token, or with an unknown one, with 401.
fn assert_needs_token(api: &Api, method: &str, path: &str) {
    let (s, doc) = api.call(method, path, None, None);
    assert_eq!(s, 401, "{method} {path} without a token: {doc}");
    assert!(doc["error"].is_string());
    let (s, _) = api.call(method, path, Some("not-a-known-token-at-all"), None);
    assert_eq!(s, 401, "{method} {path} with an unknown token");
}

#[test]
fn cameras_show_live_health_with_credentials_redacted_and_counts_per_state() {
    let dir = TempDir::new().unwrap();
    let clock = ManualClock::at(Timestamp(T0));
    let cams = vec![
        camera("d1-nh-01", "Nguyễn Huệ / Lê Lợi", "Bến Nghé"),
        camera("d1-nh-02", "Nguyễn Huệ / Hàm Nghi", "Bến Nghé"),
        camera("d1-dk-01", "Đinh Tiên Hoàng / Điện Biên Phủ", "Đa Kao"),
        camera("d1-dk-02", "Trần Quang Khải", "Đa Kao"),
        camera("d1-dk-03", "Hai Bà Trưng", "Đa Kao"),
    ];
    let h = |i: usize| cams[i].health.clone();
    h(0).set_state(StreamState::Streaming);
    for ago in [4500, 3500, 2500] {
        h(0).frame_received(Timestamp(T0 - ago));
    }
    h(0).frames_analysed
        .fetch_add(2, std::sync::atomic::Ordering::Relaxed);
    h(0).frames_dropped
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    h(1).set_state(StreamState::Streaming);
    h(1).frame_received(Timestamp(T0 - 40));
    h(1).frames_analysed
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    h(2).set_state(StreamState::Backoff);
    h(2).restarts
        .fetch_add(4, std::sync::atomic::Ordering::Relaxed);
    h(2).set_error(
        "Could not open resource rtsp://admin:hunter2@10.1.2.3:554/live?token=s3cr3t for reading and writing"
            .into(),
    );
    h(3).set_state(StreamState::Stalled);
    h(3).frame_received(Timestamp(T0 - 61_000));
    h(3).restarts
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // h(4) is still connecting: no frame yet.
    let rt = runtime();
    let api = Api::start(&dir, cams.clone(), &clock, rt.handle().clone());

    assert_needs_token(&api, "GET", "/api/cameras");
    let (s, doc) = api.get("/api/cameras", REPORTER);
    assert_eq!(s, 403, "a reporter may only submit reports: {doc}");

    let (text_status, text) = api.raw("GET", "/api/cameras", Some(VIEWER), None, "");
    assert_eq!(text_status, 200);
    for secret in ["hunter2", "s3cr3t", "admin"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    let (s, doc) = api.get("/api/cameras", OPERATOR);
    assert_eq!(s, 200);
    let cam = |id: &str,
               name: &str,
               ward: &str,
               state: &str,
               age: Value,
               counters: [u64; 4],
               error: Value| {
        json!({
            "id": id, "name": name, "ward": ward, "state": state, "last_frame_age_s": age,
            "frames_received": counters[0], "frames_analysed": counters[1],
            "frames_dropped": counters[2], "restarts": counters[3], "last_error": error,
        })
    };
    assert_eq!(
        doc,
        json!({
            "cameras": [
                cam("d1-nh-01", "Nguyễn Huệ / Lê Lợi", "Bến Nghé", "streaming", json!(2.5), [3, 2, 1, 0], Value::Null),
                cam("d1-nh-02", "Nguyễn Huệ / Hàm Nghi", "Bến Nghé", "streaming", json!(0.04), [1, 1, 0, 0], Value::Null),
                cam("d1-dk-01", "Đinh Tiên Hoàng / Điện Biên Phủ", "Đa Kao", "backoff", Value::Null, [0, 0, 0, 4],
                    json!("Could not open resource rtsp://***@10.1.2.3:554/live?token=*** for reading and writing")),
                cam("d1-dk-02", "Trần Quang Khải", "Đa Kao", "stalled", json!(61.0), [1, 0, 0, 1], Value::Null),
                cam("d1-dk-03", "Hai Bà Trưng", "Đa Kao", "connecting", Value::Null, [0, 0, 0, 0], Value::Null),
            ],
            "counts": {"streaming": 2, "connecting": 1, "stalled": 1, "backoff": 1, "stopped": 0},
        })
    );

    // Live: a change in the supervisors' atomics shows at the next request, and the age follows the clock.
    h(2).set_state(StreamState::Streaming);
    h(2).frame_received(Timestamp(T0 + 1000));
    clock.set(Timestamp(T0 + 1500));
    let (_, doc) = api.get("/api/cameras", VIEWER);
    assert_eq!(doc["cameras"][2]["state"], "streaming");
    assert_eq!(doc["cameras"][2]["last_frame_age_s"], json!(0.5));
    assert_eq!(doc["cameras"][0]["last_frame_age_s"], json!(4.0));
    assert_eq!(doc["counts"]["streaming"], 3);
    assert_eq!(doc["counts"]["backoff"], 0);
}

#[test]
fn a_wall_of_1100_cameras_is_answered_in_milliseconds() {
    let dir = TempDir::new().unwrap();
    let clock = ManualClock::at(Timestamp(T0));
    let states = [
        StreamState::Streaming,
        StreamState::Backoff,
        StreamState::Stalled,
        StreamState::Connecting,
    ];
    let cams: Vec<CameraInfo> = (0..1100)
        .map(|i| {
            let c = camera(
                &format!("cam-{i:04}"),
                &format!("Camera {i}"),
                &format!("P{}", i % 10),
            );
            // 1,100 = 275 × 4: each state 275 times.
            c.health.set_state(states[i % 4]);
            c.health.frame_received(Timestamp(T0 - 1000));
            c.health.set_error(format!(
                "rtsp://u:pw{i}@10.0.{}.{}/s failed",
                i / 256,
                i % 256
            ));
            c
        })
        .collect();
    let rt = runtime();
    let api = Api::start(&dir, cams, &clock, rt.handle().clone());
    let mut times = Vec::new();
    let mut body = String::new();
    for _ in 0..20 {
        let started = Instant::now();
        let (s, text) = api.raw("GET", "/api/cameras", Some(VIEWER), None, "");
        times.push(started.elapsed());
        assert_eq!(s, 200);
        body = text;
    }
    times.sort();
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["cameras"].as_array().unwrap().len(), 1100);
    assert_eq!(
        doc["counts"],
        json!({"streaming": 275, "backoff": 275, "stalled": 275, "connecting": 275, "stopped": 0})
    );
    assert!(!body.contains(":pw"), "a camera password leaked");
    eprintln!(
        "GET /api/cameras, 1,100 cameras, {} bytes: median {:?}, max {:?} (debug build)",
        body.len(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
    assert!(
        times[times.len() / 2] < Duration::from_secs(1),
        "median {:?}",
        times[times.len() / 2]
    );
}

/// An opened incident on `camera` in `ward` at `at`.
fn incident(camera: &str, ward: &str, kind: RuleKind, at: i64) -> IncidentEvent {
    IncidentEvent {
        key: IncidentKey {
            camera: CameraId::new(camera),
            rule: format!("{}-rule", kind.as_str()),
            zone: "plaza".into(),
            episode: Timestamp(at),
        },
        phase: IncidentPhase::Opened,
        at: Timestamp(at),
        kind,
        severity: Severity::Warning,
        camera_name: format!("camera {camera}"),
        ward: ward.into(),
        summary: "7 người trong vùng 45 giây".into(),
        count: 7,
        snapshot: None,
    }
}

/// Cameras of the alerts in each webhook notice received so far.
fn notified_cameras(hook: &HookServer) -> Vec<String> {
    hook.requests
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| {
            let doc: Value = serde_json::from_slice(&r.body).unwrap();
            doc["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["camera"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn shutdown(mut api: Api, alert: AlertHandle) {
    api.stop();
    alert.shutdown();
}

/// Notices at once, then every minute for alerts new to a group.
const ROUTE: &str = "group_wait = \"0s\"\ngroup_interval = \"1m\"\nrepeat_interval = \"4h\"";

#[test]
fn a_silence_made_over_the_api_holds_the_real_routers_next_notice() {
    let hook = HookServer::start(vec![200]);
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let clock = ManualClock::at(Timestamp(T0));
    let alert = AlertService::start(
        util::webhook_config(&hook.url(), "city-integration-secret", ROUTE),
        &db,
        Arc::new(clock.clone()),
    )
    .unwrap();
    let api = Api::start(&dir, vec![], &clock, alert.runtime());

    let body =
        r#"{"matchers": {"ward": "Bến Nghé"}, "hours": 2, "comment": "đào đường Nguyễn Huệ"}"#;
    assert_needs_token(&api, "POST", "/api/silences");
    let (s, doc) = api.call("POST", "/api/silences", Some(VIEWER), Some(body));
    assert_eq!(s, 403, "a viewer may not silence: {doc}");
    let (s, created) = api.call("POST", "/api/silences", Some(OPERATOR), Some(body));
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    assert_eq!(
        created,
        json!({
            "id": id,
            "matchers": {"camera": [], "ward": ["Bến Nghé"], "rule": [], "kind": [], "severity": [],
                         "min_severity": null},
            "starts_at": T0, "ends_at": T0 + 2 * HOUR,
            "created_by": "desk", "comment": "đào đường Nguyễn Huệ",
            "created_at": T0, "expired_at": null, "state": "active",
        })
    );
    // The CLI's store sees the same silence.
    let store = Store::open(&db).unwrap();
    assert_eq!(store.silences(false).unwrap()[0].created_by, "desk");

    alert.submit(incident("d1-nh-01", "Bến Nghé", RuleKind::Crowding, T0));
    alert.submit(incident("d1-dk-01", "Đa Kao", RuleKind::Crowding, T0));
    let silenced_key = format!("d1-nh-01/crowding-rule/plaza/{T0}");
    wait_for(
        "the Đa Kao notice delivered and the Bến Nghé alert muted",
        Duration::from_secs(30),
        || {
            let muted = store
                .alerts(None, 10)
                .unwrap()
                .into_iter()
                .find(|a| a.key == silenced_key)?
                .muted_by;
            (notified_cameras(&hook).contains(&"d1-dk-01".to_string())
                && muted.as_deref() == Some(format!("silence {id}").as_str()))
            .then_some(())
        },
    );
    assert_eq!(
        notified_cameras(&hook),
        vec!["d1-dk-01"],
        "the silenced ward's alert must not reach the receiver"
    );

    // Expired through the API, the silence lets the held alert through at the group's next interval.
    clock.set(Timestamp(T0 + 10_000));
    let path = format!("/api/silences/{id}");
    let (s, doc) = api.call("DELETE", &path, Some(VIEWER), None);
    assert_eq!(s, 403, "{doc}");
    let (s, doc) = api.call("DELETE", &path, Some(OPERATOR), None);
    assert_eq!(s, 200, "{doc}");
    assert_eq!(doc["state"], "expired");
    assert_eq!(doc["expired_at"], T0 + 10_000);
    assert_eq!(doc["ends_at"], T0 + 10_000);
    let (s, doc) = api.call("DELETE", &path, Some(OPERATOR), None);
    assert_eq!(s, 409, "{doc}");
    let (s, doc) = api.call("DELETE", "/api/silences/987654", Some(OPERATOR), None);
    assert_eq!(s, 404, "{doc}");
    let (s, doc) = api.call("DELETE", "/api/silences/abc", Some(OPERATOR), None);
    assert_eq!(s, 400, "{doc}");
    clock.set(Timestamp(T0 + 2 * 60_000));
    wait_for(
        "the Bến Nghé alert notified once the silence is gone",
        Duration::from_secs(30),
        || {
            notified_cameras(&hook)
                .contains(&"d1-nh-01".to_string())
                .then_some(())
        },
    );
    shutdown(api, alert);
}

#[test]
fn silences_list_shows_current_and_recently_ended_ones() {
    let dir = TempDir::new().unwrap();
    let clock = ManualClock::at(Timestamp(T0));
    let rt = runtime();
    let api = Api::start(&dir, vec![], &clock, rt.handle().clone());
    let post = |body: &str| {
        let (s, doc) = api.call("POST", "/api/silences", Some(OPERATOR), Some(body));
        assert_eq!(s, 201, "{body}: {doc}");
        doc["id"].as_i64().unwrap()
    };
    let s1 =
        post(r#"{"matchers": {"camera": "d1-nh-01"}, "hours": 1, "comment": "lens cleaning"}"#);
    let s2 = post(&format!(
        r#"{{"matchers": {{"ward": ["Bến Nghé", "Đa Kao"], "kind": "parking", "severity": ["info", "warning"]}},
            "ends_at": {}, "comment": "Tết market"}}"#,
        T0 + 30 * DAY
    ));
    let s3 = post(r#"{"matchers": {"rule": "plaza-crowd"}, "hours": 2, "comment": "concert"}"#);
    clock.set(Timestamp(T0 + HOUR / 2));
    let (s, _) = api.call(
        "DELETE",
        &format!("/api/silences/{s3}"),
        Some(OPERATOR),
        None,
    );
    assert_eq!(s, 200);

    assert_needs_token(&api, "GET", "/api/silences");
    let (s, _) = api.get("/api/silences", REPORTER);
    assert_eq!(s, 403);
    clock.set(Timestamp(T0 + 3 * HOUR));
    let summary = |doc: &Value| -> Vec<(i64, String, i64)> {
        doc["silences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_i64().unwrap(),
                    s["state"].as_str().unwrap().to_string(),
                    s["ends_at"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let (s, doc) = api.get("/api/silences", VIEWER);
    assert_eq!(s, 200);
    assert_eq!(
        summary(&doc),
        vec![
            (s3, "expired".into(), T0 + HOUR / 2),
            (s2, "active".into(), T0 + 30 * DAY),
            (s1, "ended".into(), T0 + HOUR),
        ]
    );
    let two = &doc["silences"][1];
    assert_eq!(two["matchers"]["ward"], json!(["Bến Nghé", "Đa Kao"]));
    assert_eq!(two["matchers"]["kind"], json!(["parking"]));
    assert_eq!(two["matchers"]["severity"], json!(["info", "warning"]));
    // An ended silence cannot be expired again.
    let (s, doc) = api.call(
        "DELETE",
        &format!("/api/silences/{s1}"),
        Some(OPERATOR),
        None,
    );
    assert_eq!(s, 409, "{doc}");

    // Seven days after they ended, the ended and expired ones leave the list.
    clock.set(Timestamp(T0 + HOUR + 7 * DAY + 1));
    let (_, doc) = api.get("/api/silences", VIEWER);
    assert_eq!(summary(&doc), vec![(s2, "active".into(), T0 + 30 * DAY)]);
    clock.set(Timestamp(T0 + HOUR + 7 * DAY));
    let (_, doc) = api.get("/api/silences", VIEWER);
    assert_eq!(
        summary(&doc).len(),
        2,
        "ended exactly seven days ago: still listed"
    );
}

#[test]
fn bad_silences_are_refused_with_the_field_named() {
    let dir = TempDir::new().unwrap();
    let clock = ManualClock::at(Timestamp(T0));
    let rt = runtime();
    let api = Api::start(&dir, vec![], &clock, rt.handle().clone());
    let ok_m = r#""matchers": {"ward": "Bến Nghé"}"#;
    let long = "x".repeat(1001);
    let cases: Vec<(String, u16, &str)> = vec![
        (
            r#"{"hours": 1, "comment": "c"}"#.to_string(),
            422,
            "matchers",
        ),
        (
            r#"{"matchers": {}, "hours": 1, "comment": "c"}"#.to_string(),
            422,
            "matchers",
        ),
        (
            r#"{"matchers": {"ward": [], "camera": null}, "hours": 1, "comment": "c"}"#.to_string(),
            422,
            "matchers",
        ),
        (
            r#"{"matchers": {"zone": "z"}, "hours": 1, "comment": "c"}"#.to_string(),
            422,
            "zone",
        ),
        (
            r#"{"matchers": {"ward": ""}, "hours": 1, "comment": "c"}"#.to_string(),
            422,
            "matchers.ward",
        ),
        (
            r#"{"matchers": {"ward": [1]}, "hours": 1, "comment": "c"}"#.to_string(),
            422,
            "matchers.ward",
        ),
        (
            r#"{"matchers": {"ward": {}}, "hours": 1, "comment": "c"}"#.to_string(),
            422,
            "matchers.ward",
        ),
        (
            format!(
                r#"{{"matchers": {{"camera": "{}"}}, "hours": 1, "comment": "c"}}"#,
                "c".repeat(201)
            ),
            422,
            "matchers.camera",
        ),
        (
            r#"{"matchers": {"severity": "urgent"}, "hours": 1, "comment": "c"}"#.to_string(),
            422,
            "matchers.severity",
        ),
        (
            r#"{"matchers": {"kind": "fire"}, "hours": 1, "comment": "c"}"#.to_string(),
            422,
            "matchers.kind",
        ),
        (format!(r#"{{{ok_m}, "comment": "c"}}"#), 422, "hours"),
        (
            format!(
                r#"{{{ok_m}, "hours": 1, "ends_at": {}, "comment": "c"}}"#,
                T0 + HOUR
            ),
            422,
            "hours",
        ),
        (
            format!(r#"{{{ok_m}, "hours": 0, "comment": "c"}}"#),
            422,
            "hours",
        ),
        (
            format!(r#"{{{ok_m}, "hours": -1, "comment": "c"}}"#),
            422,
            "hours",
        ),
        (
            format!(r#"{{{ok_m}, "hours": 720.01, "comment": "c"}}"#),
            422,
            "hours",
        ),
        (
            format!(r#"{{{ok_m}, "hours": 1e308, "comment": "c"}}"#),
            422,
            "hours",
        ),
        (
            format!(r#"{{{ok_m}, "hours": "2", "comment": "c"}}"#),
            422,
            "hours",
        ),
        (
            format!(r#"{{{ok_m}, "ends_at": {}, "comment": "c"}}"#, T0 - 1),
            422,
            "ends_at",
        ),
        (
            format!(r#"{{{ok_m}, "ends_at": {T0}, "comment": "c"}}"#),
            422,
            "ends_at",
        ),
        (
            format!(
                r#"{{{ok_m}, "ends_at": {}, "comment": "c"}}"#,
                T0 + 30 * DAY + 1
            ),
            422,
            "ends_at",
        ),
        (
            format!(r#"{{{ok_m}, "ends_at": 1.5e300, "comment": "c"}}"#),
            422,
            "ends_at",
        ),
        (
            format!(r#"{{{ok_m}, "ends_at": {}, "comment": "c"}}"#, i64::MIN),
            422,
            "ends_at",
        ),
        (format!(r#"{{{ok_m}, "hours": 1}}"#), 422, "comment"),
        (
            format!(r#"{{{ok_m}, "hours": 1, "comment": "   "}}"#),
            422,
            "comment",
        ),
        (
            format!(r#"{{{ok_m}, "hours": 1, "comment": "{long}"}}"#),
            422,
            "comment",
        ),
        (
            format!(r#"{{{ok_m}, "hours": 1, "comment": "c", "by": "me"}}"#),
            422,
            "by",
        ),
        (format!(r#"{{{ok_m}, "hours": 1, "comment": "c""#), 400, ""),
        ("[]".to_string(), 422, ""),
        ("".to_string(), 400, ""),
    ];
    for (body, status, field) in &cases {
        let (s, doc) = api.call("POST", "/api/silences", Some(OPERATOR), Some(body));
        assert_eq!(s, *status, "{body}: {doc}");
        let msg = doc["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}: {doc}"));
        assert!(
            msg.contains(field),
            "{body}: the error should name {field:?}: {msg}"
        );
    }
    let (s, text) = api.raw(
        "POST",
        "/api/silences",
        Some(OPERATOR),
        Some(r#"{"matchers": {"ward": "x"}, "hours": 1, "comment": "c"}"#),
        "text/plain",
    );
    assert_eq!(s, 415, "{text}");
    // Nothing above made a silence; the limits themselves are accepted.
    let (_, doc) = api.get("/api/silences", VIEWER);
    assert_eq!(doc["silences"], json!([]));
    for body in [
        format!(r#"{{{ok_m}, "hours": 720, "comment": "c"}}"#),
        format!(
            r#"{{{ok_m}, "ends_at": {}, "comment": "{}"}}"#,
            T0 + 30 * DAY,
            "c".repeat(1000)
        ),
        r#"{"matchers": {"severity": "critical", "kind": "wrong_way"}, "hours": 0.5, "comment": "c"}"#.to_string(),
    ] {
        let (s, doc) = api.call("POST", "/api/silences", Some(OPERATOR), Some(&body));
        assert_eq!(s, 201, "{body}: {doc}");
    }
    let (_, doc) = api.get("/api/silences", VIEWER);
    let ends: Vec<i64> = doc["silences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ends_at"].as_i64().unwrap())
        .collect();
    assert_eq!(ends, vec![T0 + HOUR / 2, T0 + 30 * DAY, T0 + 30 * DAY]);
}

/// (camera, ward, kind, started_at, acknowledged_at, resolved_at)
type Planned = (
    &'static str,
    &'static str,
    RuleKind,
    i64,
    Option<i64>,
    Option<i64>,
);

#[test]
fn the_daily_report_counts_one_local_day_at_plus_seven() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    // The local day 2026-11-29 at +07:00 is [2026-11-28 17:00 UTC, 2026-11-29 17:00 UTC).
    let l0 = T0 - DAY;
    let clock = ManualClock::at(Timestamp(l0 - HOUR));
    let alert = AlertService::start(
        AlertConfig::from_toml("").unwrap(),
        &db,
        Arc::new(clock.clone()),
    )
    .unwrap();
    let api = Api::start(&dir, vec![], &clock, alert.runtime());
    const BN: &str = "Bến Nghé";
    const DK: &str = "Đa Kao";
    use RuleKind::{Crowding, Loitering, Parking};
    // (camera, ward, kind, started_at, acknowledged_at, resolved_at), in time order.
    let timeline: Vec<Planned> = vec![
        // 23:59:59 local on the 28th (16:59:59 UTC): the day before.
        ("c0", BN, Crowding, l0 - 1000, Some(l0 + 59_000), None),
        // 00:00:00 local on the 29th, though still the 28th in UTC: acknowledged after 120 s, resolved later.
        (
            "c1",
            BN,
            Crowding,
            l0,
            Some(l0 + 120_000),
            Some(l0 + 600_000),
        ),
        (
            "c2",
            BN,
            Crowding,
            l0 + 6 * HOUR,
            Some(l0 + 6 * HOUR + 300_000),
            None,
        ),
        // 07:30 local = 00:30 UTC on the 29th: never handled.
        ("c3", BN, Crowding, l0 + 7 * HOUR + HOUR / 2, None, None),
        // Resolved without an acknowledgement, 90 s after it started.
        (
            "c4",
            BN,
            Loitering,
            l0 + 12 * HOUR,
            None,
            Some(l0 + 12 * HOUR + 90_000),
        ),
        ("c7", DK, Parking, l0 + 18 * HOUR, None, None),
        // The last millisecond of the local day; acknowledged 45 s later, on the next day.
        (
            "c5",
            DK,
            Crowding,
            l0 + DAY - 1,
            Some(l0 + DAY + 44_999),
            None,
        ),
        // Local midnight of the 30th (17:00 UTC on the 29th): the next day.
        ("c6", DK, Crowding, l0 + DAY, Some(l0 + DAY + 30_000), None),
    ];
    // One time line of openings, acknowledgements and resolutions; the clock only moves forward. Handling
    // goes through the real endpoints, which record it at the server's clock.
    enum Step {
        Open,
        Ack,
        Resolve,
    }
    let mut steps: Vec<(i64, usize, Step)> = Vec::new();
    for (i, (_, _, _, at, ack, resolved)) in timeline.iter().enumerate() {
        steps.push((*at, i, Step::Open));
        steps.extend(ack.map(|t| (t, i, Step::Ack)));
        steps.extend(resolved.map(|t| (t, i, Step::Resolve)));
    }
    steps.sort_by_key(|(t, i, _)| (*t, *i));
    let mut ids = vec![0i64; timeline.len()];
    for (t, i, step) in steps {
        clock.set(Timestamp(t));
        let (camera, ward, kind, at, _, _) = timeline[i];
        match step {
            Step::Open => {
                alert.submit(incident(camera, ward, kind, at));
                ids[i] = wait_for(
                    &format!("{camera}'s alert listed"),
                    Duration::from_secs(30),
                    || {
                        let (s, doc) = api.get(&format!("/api/alerts?camera={camera}"), VIEWER);
                        assert_eq!(s, 200, "{doc}");
                        doc["alerts"][0]["id"].as_i64()
                    },
                );
            }
            Step::Ack => {
                let (s, doc) = api.call(
                    "POST",
                    &format!("/api/alerts/{}/ack", ids[i]),
                    Some(OPERATOR),
                    Some("{}"),
                );
                assert_eq!(s, 200, "{doc}");
            }
            Step::Resolve => {
                let body = r#"{"note": "đã xử lý"}"#;
                let path = format!("/api/alerts/{}/resolve", ids[i]);
                let (s, doc) = api.call("POST", &path, Some(OPERATOR), Some(body));
                assert_eq!(s, 200, "{doc}");
            }
        }
    }
    // 01:00 local on the 30th, still the 29th in UTC.
    clock.set(Timestamp(l0 + DAY + HOUR));

    assert_needs_token(&api, "GET", "/api/report/daily");
    let (s, _) = api.get("/api/report/daily?date=2026-11-29", REPORTER);
    assert_eq!(s, 403);

    let row = |ward: &str, kind: &str, figures: Value| {
        let mut r = json!({"ward": ward, "kind": kind});
        r.as_object_mut()
            .unwrap()
            .extend(figures.as_object().unwrap().clone());
        r
    };
    let fig = |received: u64, acknowledged: u64, resolved: u64, median: Value| {
        json!({"received": received, "acknowledged": acknowledged, "resolved": resolved,
               "median_ack_seconds": median})
    };
    let (s, doc) = api.get("/api/report/daily?date=2026-11-29", VIEWER);
    assert_eq!(s, 200, "{doc}");
    assert_eq!(
        doc,
        json!({
            "date": "2026-11-29", "utc_offset_minutes": 420, "from": l0, "until": l0 + DAY,
            "rows": [
                // c1 (120 s, resolved), c2 (300 s), c3 (new): median of 120 and 300.
                row(BN, "crowding", fig(3, 2, 1, json!(210.0))),
                row(BN, "loitering", fig(1, 1, 1, json!(90.0))),
                row(DK, "crowding", fig(1, 1, 0, json!(45.0))),
                row(DK, "parking", fig(1, 0, 0, Value::Null)),
            ],
            // Handled after 120, 300, 90 and 45 s: the median of 45, 90, 120, 300 is (90 + 120) / 2.
            "totals": fig(6, 4, 2, json!(105.0)),
        })
    );
    let (_, doc) = api.get("/api/report/daily?date=2026-11-28", VIEWER);
    assert_eq!(
        doc["rows"],
        json!([row(BN, "crowding", fig(1, 1, 0, json!(60.0)))])
    );
    assert_eq!(doc["totals"], fig(1, 1, 0, json!(60.0)));
    // Without a date: today at +07:00 (the 30th), not today in UTC (the 29th).
    let (s, doc) = api.get("/api/report/daily", VIEWER);
    assert_eq!(s, 200);
    assert_eq!(doc["date"], "2026-11-30");
    assert_eq!(
        doc["rows"],
        json!([row(DK, "crowding", fig(1, 1, 0, json!(30.0)))])
    );
    let (_, doc) = api.get("/api/report/daily?date=2026-12-01", VIEWER);
    assert_eq!(doc["rows"], json!([]));
    assert_eq!(doc["totals"], fig(0, 0, 0, Value::Null));

    for bad in [
        "2026-02-29",
        "2026-11-31",
        "2026-13-01",
        "yesterday",
        "2026-11-29T00:00",
        "29-11-2026",
        "",
        "%FF",
        "2026-11-29&date=2026-11-30",
    ] {
        let (s, doc) = api.get(&format!("/api/report/daily?date={bad}"), VIEWER);
        assert_eq!(s, 400, "{bad}: {doc}");
        assert!(doc["error"].is_string(), "{bad}: {doc}");
    }
    shutdown(api, alert);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever an operator posts, the answer is a verdict on the input, never a server error.
    #[test]
    fn no_silence_body_is_a_server_error(
        ward in prop_oneof![Just(Value::Null), "[ -~]{0,8}".prop_map(Value::from), any::<i64>().prop_map(Value::from)],
        hours in prop_oneof![Just(Value::Null), any::<f64>().prop_map(|h| json!(h)), "[0-9.e-]{0,6}".prop_map(Value::from)],
        ends_at in prop_oneof![Just(Value::Null), any::<i64>().prop_map(Value::from), any::<f64>().prop_map(|h| json!(h))],
        comment in prop_oneof![Just(Value::Null), ".{0,4}".prop_map(Value::from)],
        garbage in "[{}\\[\\]\":, a-z0-9]{0,24}",
    ) {
        let (dir, clock, rt) = (TempDir::new().unwrap(), ManualClock::at(Timestamp(T0)), runtime());
        let api = Api::start(&dir, vec![], &clock, rt.handle().clone());
        let body = json!({"matchers": {"ward": ward}, "hours": hours, "ends_at": ends_at, "comment": comment})
            .to_string();
        for b in [body.as_str(), garbage.as_str()] {
            let (s, text) = api.raw("POST", "/api/silences", Some(OPERATOR), Some(b), "application/json");
            prop_assert!(matches!(s, 201 | 400 | 415 | 422), "{b}: {s} {text}");
        }
        for q in [garbage.as_str(), ward.to_string().as_str()] {
            let path = format!("/api/report/daily?date={}", q.replace(' ', "%20").replace('#', "%23"));
            let (s, text) = api.raw("GET", &path, Some(VIEWER), None, "");
            prop_assert!(matches!(s, 200 | 400), "{path}: {s} {text}");
        }
    }
}
