//! The alerts and incidents API over HTTP, against a real alert router (AlertService on a ManualClock) and a
//! real server on 127.0.0.1, both on one SQLite file: filters, pages that neither repeat nor skip while
//! alerts arrive, acknowledging and resolving (state machine, roles, history), deliveries in the alert,
//! incidents with their snapshot link, the snapshot link itself, retention of the handling tables, and
//! arbitrary input that must never be a 5xx.

#[path = "support/alert_peers.rs"]
mod peers;
#[path = "support/alert_util.rs"]
mod util;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use peers::HookServer;
use proptest::prelude::*;
use serde_json::{Value, json};
use streetwatch::alert::{AlertConfig, AlertHandle, AlertService};
use streetwatch::secret::Secret;
use streetwatch::serve::{Role, ServeConfig, ServeContext, Server, TokenConfig};
use streetwatch::types::{
    CameraId, IncidentEvent, IncidentKey, IncidentPhase, ManualClock, RuleKind, Severity, Timestamp,
};
use tempfile::TempDir;

const T0: i64 = 1_795_000_000_000;
const OPERATOR: &str = "operator-token-0001";
const OPERATOR_NAME: &str = "desk-1";
const VIEWER: &str = "viewer-token-000001";
const REPORTER: &str = "reporter-token-001";
/// How long anything the router or the notifier does may take on a loaded machine (the waits poll).
const PATIENCE: Duration = Duration::from_secs(60);

/// Routes each incident on its own at once to nobody: notices are recorded `unrouted`, nothing is sent.
const NO_RECEIVERS: &str =
    "[route]\ngroup_by = [\"...\"]\ngroup_wait = \"0s\"\ngroup_interval = \"1s\"\n";

struct Env {
    dir: TempDir,
    db: PathBuf,
    snaps: PathBuf,
    clock: ManualClock,
    alert: Option<AlertHandle>,
    server: Option<Server>,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

impl Env {
    fn start(alert_toml: &str) -> Env {
        let dir = TempDir::new().unwrap();
        let db = dir.path().join("sw.db");
        let snaps = dir.path().join("snapshots");
        std::fs::create_dir_all(&snaps).unwrap();
        let clock = ManualClock::at(Timestamp(T0));
        let alert = AlertService::start(
            AlertConfig::from_toml(alert_toml).unwrap(),
            &db,
            Arc::new(clock.clone()),
        )
        .unwrap();
        let token = |name: &str, role, token: &str| TokenConfig {
            name: name.into(),
            role,
            token: Secret::new(token),
        };
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            tokens: vec![
                token(OPERATOR_NAME, Role::Operator, OPERATOR),
                token("wall", Role::Viewer, VIEWER),
                token("kiosk", Role::Reporter, REPORTER),
            ],
            ..ServeConfig::default()
        };
        assert_eq!(config.check(), Ok(()));
        let ctx = ServeContext {
            db_path: db.clone(),
            snapshots_dir: snaps.clone(),
            cameras: Default::default(),
            clock: Arc::new(clock.clone()),
            submit: None,
            stats: Default::default(),
        };
        let server = Server::start(&config, ctx, alert.runtime()).unwrap();
        let base = format!("http://{}", server.addr());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Env {
            dir,
            db,
            snaps,
            clock,
            alert: Some(alert),
            server: Some(server),
            rt,
            client: reqwest::Client::new(),
            base,
        }
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Reply {
        let url = format!("{}{}", self.base, path);
        let mut req = self
            .client
            .request(method.parse().unwrap(), &url)
            .timeout(Duration::from_secs(30));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        self.rt.block_on(async {
            let r = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let body = r.bytes().await.unwrap().to_vec();
            Reply {
                status,
                headers,
                body,
            }
        })
    }

    fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self.request("GET", path, Some(token), None);
        (r.status, r.json())
    }

    fn post(&self, path: &str, token: &str, body: &str) -> (u16, Value) {
        let r = self.request("POST", path, Some(token), Some(body.as_bytes().to_vec()));
        (r.status, r.json())
    }

    /// `GET /api/alerts` with these parameters (encoded here), as the viewer; must answer 200.
    fn alerts(&self, params: &[(&str, &str)]) -> Value {
        let q = query(params);
        let (status, body) = self.get(&format!("/api/alerts?{q}"), VIEWER);
        assert_eq!(status, 200, "GET /api/alerts?{q}: {body}");
        body
    }

    fn keys(&self, params: &[(&str, &str)]) -> Vec<String> {
        keys_of(&self.alerts(params)["alerts"])
    }

    fn submit(&self, ev: &IncidentEvent) {
        self.alert.as_ref().unwrap().submit(ev.clone());
    }

    /// Polls the alert list until `done` holds for every alert, or fails after [`PATIENCE`].
    fn wait_alerts(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let page = self.alerts(&[("limit", "500")]);
            let alerts = page["alerts"].as_array().unwrap().clone();
            if done(&alerts) {
                return alerts;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; alerts: {alerts:#?}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The id of the alert with incident key `key`.
    fn id_of(&self, key: &str) -> i64 {
        let all = self.alerts(&[("limit", "500")]);
        all["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == key)
            .unwrap_or_else(|| panic!("no alert {key}"))["id"]
            .as_i64()
            .unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
        if let Some(a) = self.alert.take() {
            a.shutdown();
        }
    }
}

fn query(params: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

fn keys_of(alerts: &Value) -> Vec<String> {
    alerts
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {alerts}"))
        .iter()
        .map(|a| a["key"].as_str().unwrap().to_string())
        .collect()
}

fn event(
    camera: &str,
    ward: &str,
    rule: &str,
    kind: RuleKind,
    severity: Severity,
    episode: i64,
) -> IncidentEvent {
    IncidentEvent {
        key: IncidentKey {
            camera: CameraId::new(camera),
            rule: rule.into(),
            zone: "z1".into(),
            episode: Timestamp(episode),
        },
        phase: IncidentPhase::Opened,
        at: Timestamp(episode),
        kind,
        severity,
        camera_name: format!("Cam {camera}"),
        ward: ward.into(),
        summary: format!("{rule} on {camera}"),
        count: 7,
        snapshot: None,
    }
}

/// A warning crowding incident in Bến Nghé.
fn crowd(camera: &str, episode: i64) -> IncidentEvent {
    event(
        camera,
        "Bến Nghé",
        "crowd",
        RuleKind::Crowding,
        Severity::Warning,
        episode,
    )
}

fn closed(ev: &IncidentEvent, at: i64) -> IncidentEvent {
    IncidentEvent {
        phase: IncidentPhase::Closed,
        at: Timestamp(at),
        ..ev.clone()
    }
}

fn key(ev: &IncidentEvent) -> String {
    ev.key.to_string()
}

/// Five alerts over three wards: a2 and a4 closed, a3 acknowledged, a5 resolved by the operator.
struct Five {
    a: [IncidentEvent; 5],
}

fn five(env: &Env) -> Five {
    let a = [
        crowd("c-bn-1", T0 + 1000),
        event(
            "c-bn-2",
            "Bến Nghé",
            "park",
            RuleKind::Parking,
            Severity::Info,
            T0 + 2000,
        ),
        event(
            "c-bt-1",
            "Bến Thành",
            "crowd",
            RuleKind::Crowding,
            Severity::Critical,
            T0 + 3000,
        ),
        event(
            "c-bt-1",
            "Bến Thành",
            "wrong",
            RuleKind::WrongWay,
            Severity::Warning,
            T0 + 4000,
        ),
        event(
            "c-dk-1",
            "Đa Kao",
            "intr",
            RuleKind::Intrusion,
            Severity::Critical,
            T0 + 5000,
        ),
    ];
    for e in &a {
        env.submit(e);
    }
    env.submit(&closed(&a[1], T0 + 61_000));
    env.submit(&closed(&a[3], T0 + 62_000));
    env.wait_alerts("five alerts, two closed", |all| {
        all.len() == 5 && all.iter().filter(|x| x["firing"] == false).count() == 2
    });
    let (s, body) = env.post(
        &format!("/api/alerts/{}/ack", env.id_of(&key(&a[2]))),
        OPERATOR,
        "",
    );
    assert_eq!(s, 200, "{body}");
    let (s, body) = env.post(
        &format!("/api/alerts/{}/resolve", env.id_of(&key(&a[4]))),
        OPERATOR,
        r#"{"note": "false alarm: a cleaner"}"#,
    );
    assert_eq!(s, 200, "{body}");
    Five { a }
}

/// Query parameters, owned.
type Params = Vec<(&'static str, String)>;

#[test]
fn each_filter_selects_what_it_names_newest_first() {
    let env = Env::start(NO_RECEIVERS);
    let f = five(&env);
    let k = |i: usize| key(&f.a[i - 1]);
    let want = |is: &[usize]| is.iter().map(|&i| k(i)).collect::<Vec<_>>();
    let t = |ms: i64| (T0 + ms).to_string();
    let cases: Vec<(Params, Vec<usize>)> = vec![
        (vec![], vec![5, 4, 3, 2, 1]),
        (vec![("ward", "Bến Nghé".into())], vec![2, 1]),
        (vec![("ward", "Đa Kao".into())], vec![5]),
        (vec![("ward", "Bến".into())], vec![]),
        (vec![("camera", "c-bt-1".into())], vec![4, 3]),
        (vec![("rule", "crowd".into())], vec![3, 1]),
        (vec![("kind", "crowding".into())], vec![3, 1]),
        (vec![("kind", "wrong_way".into())], vec![4]),
        (vec![("severity", "critical".into())], vec![5, 3]),
        (vec![("severity", "info".into())], vec![2]),
        (vec![("state", "new".into())], vec![4, 2, 1]),
        (vec![("state", "acknowledged".into())], vec![3]),
        (vec![("state", "resolved".into())], vec![5]),
        (vec![("firing", "true".into())], vec![5, 3, 1]),
        (vec![("firing", "false".into())], vec![4, 2]),
        // since is inclusive, until exclusive, both on the start.
        (vec![("since", t(2000))], vec![5, 4, 3, 2]),
        (vec![("until", t(3000))], vec![2, 1]),
        (vec![("since", t(2000)), ("until", t(4000))], vec![3, 2]),
        (
            vec![("ward", "Bến Thành".into()), ("severity", "warning".into())],
            vec![4],
        ),
        (
            vec![("firing", "true".into()), ("state", "new".into())],
            vec![1],
        ),
        // An empty value is no condition (an HTML form's unset field).
        (
            vec![("ward", String::new()), ("severity", String::new())],
            vec![5, 4, 3, 2, 1],
        ),
    ];
    for (params, expect) in cases {
        let p: Vec<(&str, &str)> = params.iter().map(|(a, b)| (*a, b.as_str())).collect();
        assert_eq!(env.keys(&p), want(&expect), "filter {p:?}");
    }

    // Each alert as the contract spells it.
    let all = env.alerts(&[]);
    let by_key = |k: &str| {
        all["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == k)
            .unwrap()
            .clone()
    };
    let a1 = by_key(&k(1));
    assert!(a1["id"].is_i64());
    for (field, want) in [
        ("camera", json!("c-bn-1")),
        ("camera_name", json!("Cam c-bn-1")),
        ("ward", json!("Bến Nghé")),
        ("rule", json!("crowd")),
        ("kind", json!("crowding")),
        ("severity", json!("warning")),
        ("firing", json!(true)),
        ("state", json!("new")),
        ("started_at", json!(T0 + 1000)),
        ("ended_at", Value::Null),
        ("summary", json!("crowd on c-bn-1")),
        ("count", json!(7)),
        ("snapshot_url", Value::Null),
        ("acknowledged_by", Value::Null),
        ("acknowledged_at", Value::Null),
        ("resolved_by", Value::Null),
        ("resolved_at", Value::Null),
        ("resolution_note", Value::Null),
        ("deliveries", json!([])),
    ] {
        assert_eq!(a1[field], want, "alert 1 {field}: {a1}");
    }
    assert!(a1["updated_at"].is_i64());
    let a2 = by_key(&k(2));
    assert_eq!(
        (a2["firing"].clone(), a2["ended_at"].clone()),
        (json!(false), json!(T0 + 61_000))
    );
    let a3 = by_key(&k(3));
    assert_eq!(a3["state"], "acknowledged");
    assert_eq!(a3["acknowledged_by"], OPERATOR_NAME);
    assert_eq!(a3["acknowledged_at"], T0);
    let a5 = by_key(&k(5));
    assert_eq!(a5["state"], "resolved");
    assert_eq!(a5["resolved_by"], OPERATOR_NAME);
    assert_eq!(a5["resolution_note"], "false alarm: a cleaner");
    assert_eq!(
        a5["acknowledged_by"],
        Value::Null,
        "resolved straight from new"
    );
}

#[test]
fn a_bad_parameter_is_a_400_that_names_it() {
    let env = Env::start(NO_RECEIVERS);
    for (q, name) in [
        ("severity=urgent", "severity"),
        ("severity=Critical", "severity"),
        ("state=done", "state"),
        ("state=closed", "state"),
        ("firing=maybe", "firing"),
        ("since=yesterday", "since"),
        ("until=1.5e12", "until"),
        ("since=99999999999999999999999", "since"),
        ("cursor=xyz", "cursor"),
        ("cursor=3132", "cursor"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("wrad=Bến+Nghé", "wrad"),
        ("ward=a&ward=b", "ward"),
    ] {
        let (status, body) = env.get(&format!("/api/alerts?{q}"), VIEWER);
        assert_eq!(status, 400, "{q}: {body}");
        let msg = body["error"].as_str().unwrap();
        assert!(msg.contains(name), "{q}: the error names {name}: {msg}");
    }
    for (q, name) in [
        ("open=perhaps", "open"),
        ("cursor=zz", "cursor"),
        ("limit=501", "limit"),
        ("limit=0", "limit"),
        ("ward=x", "ward"),
    ] {
        let (status, body) = env.get(&format!("/api/incidents?{q}"), VIEWER);
        assert_eq!(status, 400, "incidents {q}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(name),
            "{q}: {body}"
        );
    }
    // The bounds themselves are fine.
    for q in ["limit=1", "limit=500", "since=-5", "firing=false&state=new"] {
        assert_eq!(env.get(&format!("/api/alerts?{q}"), VIEWER).0, 200, "{q}");
    }
}

/// Reads every page with `limit`, calling `between` after the first; returns the keys in order and the
/// page sizes.
fn read_pages(
    env: &Env,
    params: &[(&str, &str)],
    between: impl FnOnce(),
) -> (Vec<Value>, Vec<usize>) {
    let mut between = Some(between);
    let mut cursor: Option<String> = None;
    let mut out = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let mut p: Vec<(&str, &str)> = params.to_vec();
        if let Some(c) = &cursor {
            p.push(("cursor", c));
        }
        let page = env.alerts(&p);
        let alerts = page["alerts"].as_array().unwrap();
        sizes.push(alerts.len());
        out.extend(alerts.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return (out, sizes),
        }
        if let Some(f) = between.take() {
            f();
        }
        assert!(sizes.len() < 100, "pages never end");
    }
}

#[test]
fn pages_hold_every_alert_once_while_new_ones_arrive() {
    let env = Env::start(NO_RECEIVERS);
    // 260 alerts, four to each start time, so the order leans on the id as well.
    let first: Vec<IncidentEvent> = (0..260)
        .map(|i| crowd(&format!("p{i:03}"), T0 + (i / 4) * 1000))
        .collect();
    for e in &first {
        env.submit(e);
    }
    env.wait_alerts("260 alerts", |a| a.len() == 260);
    // While the pages are read: 30 newer alerts (they sort before the first page, so no later page holds
    // them) and 5 that started before all the others (they sort after the cursor: the last page has them).
    let newer: Vec<IncidentEvent> = (0..30)
        .map(|i| crowd(&format!("n{i:03}"), T0 + 1_000_000 + i))
        .collect();
    let older: Vec<IncidentEvent> = (0..5)
        .map(|i| crowd(&format!("o{i:03}"), T0 - 10_000 - i))
        .collect();
    let (got, sizes) = read_pages(&env, &[("limit", "100")], || {
        for e in newer.iter().chain(&older) {
            env.submit(e);
        }
        env.wait_alerts("295 alerts", |a| a.len() == 295);
    });
    assert_eq!(sizes, vec![100, 100, 65]);
    let got_keys: Vec<String> = got
        .iter()
        .map(|a| a["key"].as_str().unwrap().to_string())
        .collect();
    let unique: BTreeSet<&String> = got_keys.iter().collect();
    assert_eq!(unique.len(), got_keys.len(), "no alert twice");
    let want: BTreeSet<String> = first.iter().chain(&older).map(key).collect();
    assert_eq!(
        got_keys.iter().cloned().collect::<BTreeSet<_>>(),
        want,
        "every alert, and none newer than the first page"
    );
    // Newest first: started_at descending, then id descending.
    let order: Vec<(i64, i64)> = got
        .iter()
        .map(|a| (a["started_at"].as_i64().unwrap(), a["id"].as_i64().unwrap()))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] > w[1]),
        "strictly newest first: {order:?}"
    );
    assert_eq!(
        order[0].0,
        T0 + 64_000,
        "the first page starts with the newest of the first 260"
    );
    // A filter holds across pages: the default limit is 100, at most 500 per page.
    let (all, sizes) = read_pages(&env, &[], || {});
    assert_eq!(sizes, vec![100, 100, 95]);
    assert_eq!(all.len(), 295);
    let (one_page, sizes) = read_pages(&env, &[("limit", "500")], || {});
    assert_eq!((one_page.len(), sizes), (295, vec![295]));
    let (by_camera, sizes) = read_pages(&env, &[("camera", "p007"), ("limit", "1")], || {});
    assert_eq!(
        (keys_of(&Value::Array(by_camera)), sizes),
        (vec![key(&first[7])], vec![1])
    );
}

#[test]
fn acknowledging_and_resolving_follow_the_states_and_are_recorded() {
    let env = Env::start(NO_RECEIVERS);
    let a = crowd("c1", T0 + 1000);
    let b = crowd("c2", T0 + 2000);
    let c = crowd("c3", T0 + 3000);
    for e in [&a, &b, &c] {
        env.submit(e);
    }
    env.wait_alerts("three alerts", |all| all.len() == 3);
    let (ia, ib, ic) = (
        env.id_of(&key(&a)),
        env.id_of(&key(&b)),
        env.id_of(&key(&c)),
    );
    let ack = |id: i64| format!("/api/alerts/{id}/ack");
    let resolve = |id: i64| format!("/api/alerts/{id}/resolve");

    // Who may: nobody without a valid token, a viewer or a reporter not at all.
    let r = env.request("POST", &ack(ia), None, None);
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].is_string());
    assert_eq!(
        env.request("POST", &ack(ia), Some("not-a-token-at-all"), None)
            .status,
        401
    );
    assert_eq!(env.request("GET", "/api/alerts", None, None).status, 401);
    let (s, body) = env.post(&ack(ia), VIEWER, "");
    assert_eq!(s, 403, "{body}");
    assert_eq!(env.post(&resolve(ia), VIEWER, r#"{"note":"x"}"#).0, 403);
    assert_eq!(env.post(&ack(ia), REPORTER, "").0, 403);
    assert_eq!(
        env.get("/api/alerts", REPORTER).0,
        403,
        "a reporter reads nothing"
    );
    assert_eq!(
        env.get(&format!("/api/alerts/{ia}"), VIEWER).1["state"],
        "new",
        "refusals changed nothing"
    );

    // new → acknowledged, once.
    env.clock.set(Timestamp(T0 + 100_000));
    let (s, body) = env.post(&ack(ia), OPERATOR, r#"{"note": "on my way"}"#);
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["state"], "acknowledged");
    assert_eq!(body["acknowledged_by"], OPERATOR_NAME);
    assert_eq!(body["acknowledged_at"], T0 + 100_000);
    assert_eq!(body["key"], key(&a));
    let (s, body) = env.post(&ack(ia), OPERATOR, "");
    assert_eq!(s, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("acknowledged"));

    // Resolving needs a note of 1 to 1000 characters.
    for bad in [
        "",
        "{}",
        r#"{"note": ""}"#,
        r#"{"note": "   "}"#,
        r#"{"note": null}"#,
        r#"{"note": 42}"#,
    ] {
        let (s, body) = env.post(&resolve(ia), OPERATOR, bad);
        assert_eq!(s, 422, "resolve with {bad:?}: {body}");
    }
    let long = json!({ "note": "đ".repeat(1001) }).to_string();
    assert_eq!(env.post(&resolve(ia), OPERATOR, &long).0, 422);
    assert_eq!(
        env.post(&resolve(ia), OPERATOR, r#"{"note": "unterminated"#)
            .0,
        400
    );
    assert_eq!(
        env.get(&format!("/api/alerts/{ia}"), VIEWER).1["state"],
        "acknowledged"
    );

    // acknowledged → resolved, once; nothing after.
    env.clock.set(Timestamp(T0 + 200_000));
    let note = "đ".repeat(1000);
    let (s, body) = env.post(&resolve(ia), OPERATOR, &json!({ "note": note }).to_string());
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["state"], "resolved");
    assert_eq!(body["resolved_by"], OPERATOR_NAME);
    assert_eq!(body["resolved_at"], T0 + 200_000);
    assert_eq!(body["resolution_note"], note);
    assert_eq!(
        body["acknowledged_by"], OPERATOR_NAME,
        "the acknowledgement stays"
    );
    assert_eq!(
        env.post(&resolve(ia), OPERATOR, r#"{"note":"again"}"#).0,
        409
    );
    assert_eq!(env.post(&ack(ia), OPERATOR, "").0, 409);

    // new → resolved directly.
    let (s, body) = env.post(
        &resolve(ib),
        OPERATOR,
        r#"{"note":"seen on camera: dispersed"}"#,
    );
    assert_eq!(
        (s, body["state"].clone(), body["acknowledged_at"].clone()),
        (200, json!("resolved"), Value::Null)
    );

    // Unknown alerts.
    for path in [ack(987_654), resolve(987_654)] {
        assert_eq!(
            env.post(&path, OPERATOR, r#"{"note":"x"}"#).0,
            404,
            "{path}"
        );
    }
    for path in [
        "/api/alerts/987654",
        "/api/alerts/987654/deliveries",
        "/api/alerts/987654/actions",
    ] {
        assert_eq!(env.get(path, VIEWER).0, 404, "{path}");
    }

    // The history: who, when, what.
    let (s, body) = env.get(&format!("/api/alerts/{ia}/actions"), VIEWER);
    assert_eq!(s, 200);
    let acts: Vec<(String, String, i64, Value)> = body["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["actor"].as_str().unwrap().into(),
                x["action"].as_str().unwrap().into(),
                x["at"].as_i64().unwrap(),
                x["note"].clone(),
            )
        })
        .collect();
    assert_eq!(
        acts,
        vec![
            (
                OPERATOR_NAME.into(),
                "acknowledged".into(),
                T0 + 100_000,
                json!("on my way")
            ),
            (
                OPERATOR_NAME.into(),
                "resolved".into(),
                T0 + 200_000,
                json!(note)
            ),
        ]
    );
    assert_eq!(
        env.get(&format!("/api/alerts/{ic}/actions"), VIEWER).1["actions"],
        json!([])
    );

    // Eight operators acknowledge the same alert at once: exactly one succeeds, and one action is recorded.
    let url = format!("{}{}", env.base, ack(ic));
    let statuses: Vec<u16> = env.rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let req = env.client.post(&url).bearer_auth(OPERATOR).send();
            set.spawn(async move { req.await.unwrap().status().as_u16() });
        }
        let mut out = Vec::new();
        while let Some(s) = set.join_next().await {
            out.push(s.unwrap());
        }
        out.sort();
        out
    });
    assert_eq!(statuses, vec![200, 409, 409, 409, 409, 409, 409, 409]);
    assert_eq!(
        env.get(&format!("/api/alerts/{ic}/actions"), VIEWER).1["actions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn each_alert_carries_its_deliveries_and_only_operators_see_targets() {
    let hook = HookServer::start(vec![200]);
    let cfg = format!(
        r#"
[[receivers]]
name = "city"
send_resolved = true
webhook = {{ url = "{}", secret = "city-integration-secret" }}
[route]
receiver = "city"
group_by = ["..."]
group_wait = "0s"
group_interval = "1s"
"#,
        hook.url()
    );
    let env = Env::start(&cfg);
    let d1 = crowd("c1", T0 + 1000);
    let d2 = event(
        "c2",
        "Bến Thành",
        "crowd",
        RuleKind::Crowding,
        Severity::Critical,
        T0 + 2000,
    );
    env.submit(&d1);
    env.submit(&d2);
    let accepted = |a: &Value, n: usize| {
        let d = a["deliveries"].as_array().unwrap();
        d.len() == n && d.iter().all(|x| x["state"] == "accepted")
    };
    env.wait_alerts("one accepted delivery each", |all| {
        all.len() == 2 && all.iter().all(|a| accepted(a, 1))
    });
    // The incident closes: a second notice (resolved) for d1 once its group interval has passed.
    env.submit(&closed(&d1, T0 + 30_000));
    env.wait_alerts("d1 closed", |all| {
        all.iter()
            .any(|a| a["key"] == key(&d1) && a["firing"] == false)
    });
    env.clock.set(Timestamp(T0 + 32_000));
    let all = env.wait_alerts("two deliveries for d1", |all| {
        all.iter().any(|a| a["key"] == key(&d1) && accepted(a, 2))
    });
    assert_eq!(hook.count(), 3, "three webhooks: two firing, one resolved");
    let a1 = all.iter().find(|a| a["key"] == key(&d1)).unwrap();
    let a2 = all.iter().find(|a| a["key"] == key(&d2)).unwrap();
    for a in [a1, a2] {
        for d in a["deliveries"].as_array().unwrap() {
            assert_eq!(d["receiver"], "city");
            assert_eq!(d["channel"], "webhook");
            assert_eq!(d["attempts"], 1);
            assert_eq!(d["last_error"], Value::Null);
            assert!(d["id"].is_i64() && d["updated_at"].is_i64());
            assert!(
                d.get("target").is_none(),
                "no target in the alert list: {d}"
            );
        }
    }
    let ids = |a: &Value| -> Vec<i64> {
        a["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_i64().unwrap())
            .collect()
    };
    let (i1, i2) = (ids(a1), ids(a2));
    assert!(i1[0] < i1[1], "oldest first");
    assert!(!i1.contains(&i2[0]), "each alert has its own deliveries");
    // The same through one alert.
    let id1 = a1["id"].as_i64().unwrap();
    assert_eq!(
        env.get(&format!("/api/alerts/{id1}"), VIEWER).1["deliveries"],
        a1["deliveries"]
    );
    // Targets: operators only.
    let (s, v) = env.get(&format!("/api/alerts/{id1}/deliveries"), VIEWER);
    assert_eq!(s, 200);
    let v = v["deliveries"].as_array().unwrap().clone();
    assert_eq!(v.len(), 2);
    assert!(v.iter().all(|d| d.get("target").is_none()), "{v:?}");
    let (s, o) = env.get(&format!("/api/alerts/{id1}/deliveries"), OPERATOR);
    assert_eq!(s, 200);
    let o = o["deliveries"].as_array().unwrap().clone();
    assert_eq!(
        o.iter()
            .map(|d| d["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        i1
    );
    let port = format!("127.0.0.1:{}", hook.port);
    assert!(
        o.iter()
            .all(|d| d["target"].as_str().unwrap().contains(&port)),
        "{o:?}"
    );
    assert!(o.iter().all(|d| d["state"] == "accepted"));
}

#[test]
fn the_snapshot_link_serves_only_files_inside_the_snapshot_folder() {
    let env = Env::start(NO_RECEIVERS);
    let jpeg = util::snapshot_jpeg(&env.snaps);
    let outside_dir = env.dir.path().join("outside");
    std::fs::create_dir_all(&outside_dir).unwrap();
    let outside = util::snapshot_jpeg(&outside_dir);
    let link = env.snaps.join("link.jpg");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let with = |camera: &str, episode: i64, snap: &Path| IncidentEvent {
        snapshot: Some(snap.display().to_string()),
        ..crowd(camera, episode)
    };
    let inside = with("s-in", T0 + 1, &jpeg);
    let out = with("s-out", T0 + 2, &outside);
    let linked = with("s-link", T0 + 3, &link);
    let dotdot = with(
        "s-dotdot",
        T0 + 4,
        &env.snaps.join("../outside/snapshot.jpg"),
    );
    let none = crowd("s-none", T0 + 5);
    for e in [&inside, &out, &linked, &dotdot, &none] {
        env.submit(e);
    }
    let all = env.wait_alerts("five alerts", |a| a.len() == 5);
    let url_of = |e: &IncidentEvent| {
        all.iter().find(|a| a["key"] == key(e)).unwrap()["snapshot_url"].clone()
    };
    assert_eq!(url_of(&none), Value::Null);
    let u = url_of(&inside);
    let u = u.as_str().unwrap();
    assert!(u.starts_with("/s/"), "{u}");
    // No token needed: the link is the capability (it goes out by SMS).
    let r = env.request("GET", u, None, None);
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "image/jpeg");
    assert!(
        r.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("private")
    );
    assert_eq!(r.body, std::fs::read(&jpeg).unwrap());
    for e in [&out, &linked, &dotdot] {
        let u = url_of(e);
        let u = u.as_str().unwrap();
        assert_eq!(
            env.request("GET", u, None, None).status,
            404,
            "{} at {u}",
            key(e)
        );
    }
    for bad in [
        "/s/0123456789abcdef0123",
        "/s/..%2F..%2Fetc%2Fpasswd",
        // Not "/s/%2e%2e": a URL parser turns that dot segment into "/" (the page) before it is sent.
        "/s/%2e%2e%2F%2e%2e%2Fetc%2Fpasswd",
        "/s/a.jpg",
    ] {
        assert_eq!(env.request("GET", bad, None, None).status, 404, "{bad}");
    }
}

#[test]
fn incidents_are_listed_with_their_alert_and_snapshot_link() {
    let env = Env::start(NO_RECEIVERS);
    let jpeg = util::snapshot_jpeg(&env.snaps);
    // Recorded by the incident store, then routed: what the incident sink does.
    let store = streetwatch::store::Store::open(&env.db).unwrap();
    let mut evs: Vec<IncidentEvent> = (0..7)
        .map(|i| {
            let kind = if i % 2 == 0 {
                RuleKind::Crowding
            } else {
                RuleKind::Parking
            };
            event(
                &format!("cam/{}", i % 3),
                "Bến Nghé",
                &format!("r{i}"),
                kind,
                Severity::Warning,
                T0 + i * 1000,
            )
        })
        .collect();
    evs[6].snapshot = Some(jpeg.display().to_string());
    for e in &evs {
        store.record(e).unwrap();
        env.submit(e);
    }
    for i in [1usize, 4] {
        let c = closed(&evs[i], T0 + 90_000);
        store.record(&c).unwrap();
        env.submit(&c);
    }
    let alerts = env.wait_alerts("seven alerts", |a| a.len() == 7);
    let ids = |params: &str| -> Vec<String> {
        let (s, body) = env.get(&format!("/api/incidents?{params}"), VIEWER);
        assert_eq!(s, 200, "{params}: {body}");
        body["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    };
    let want = |is: &[usize]| is.iter().map(|&i| key(&evs[i])).collect::<Vec<_>>();
    assert_eq!(ids(""), want(&[6, 5, 4, 3, 2, 1, 0]));
    assert_eq!(ids(&query(&[("camera", "cam/1")])), want(&[4, 1]));
    assert_eq!(ids("kind=parking"), want(&[5, 3, 1]));
    assert_eq!(ids("open=true"), want(&[6, 5, 3, 2, 0]));
    assert_eq!(ids("open=false"), want(&[4, 1]));
    assert_eq!(ids("open=true&kind=crowding"), want(&[6, 2, 0]));
    // Pages of three: no repeats, no gaps.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (s, body) = env.get(&format!("/api/incidents?limit=3{cursor}"), VIEWER);
        assert_eq!(s, 200);
        seen.extend(
            body["incidents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_string()),
        );
        match body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, want(&[6, 5, 4, 3, 2, 1, 0]));
    // One incident, by its key (slashes as they are or encoded), with its alert and snapshot link.
    let k6 = key(&evs[6]);
    let alert6 = alerts.iter().find(|a| a["key"] == k6).unwrap();
    for path in [
        format!("/api/incidents/{k6}"),
        format!("/api/incidents/{}", k6.replace('/', "%2F")),
    ] {
        let (s, one) = env.get(&path, VIEWER);
        assert_eq!(s, 200, "{path}: {one}");
        assert_eq!(one["id"], k6);
        assert_eq!(one["camera"], "cam/0");
        assert_eq!(one["kind"], "crowding");
        assert_eq!(one["open"], true);
        assert_eq!(one["opened_at"], T0 + 6000);
        assert_eq!(one["alert_id"], alert6["id"]);
        assert_eq!(one["snapshot_url"], alert6["snapshot_url"]);
        assert!(one.get("snapshot").is_none(), "no server path in the API");
        let url = one["snapshot_url"].as_str().unwrap();
        assert_eq!(
            env.request("GET", url, None, None).body,
            std::fs::read(&jpeg).unwrap()
        );
    }
    let (_, closed1) = env.get(&format!("/api/incidents/{}", key(&evs[1])), VIEWER);
    assert_eq!(
        (
            closed1["open"].clone(),
            closed1["closed_at"].clone(),
            closed1["snapshot_url"].clone()
        ),
        (json!(false), json!(T0 + 90_000), Value::Null)
    );
    assert_eq!(env.get("/api/incidents/cam/9/r1/z1/1", VIEWER).0, 404);
    assert_eq!(env.request("GET", "/api/incidents", None, None).status, 401);
    assert_eq!(env.get("/api/incidents", REPORTER).0, 403);
}

fn count(db: &Path, sql: &str, key: &str) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(sql, [key], |r| r.get(0)).unwrap()
}

#[test]
fn retention_takes_an_alerts_history_and_links_with_it() {
    let env = Env::start(NO_RECEIVERS);
    let r1 = crowd("k1", T0 + 1000);
    let r2 = crowd("k2", T0 + 2000);
    env.submit(&r1);
    env.submit(&r2);
    env.wait_alerts("two alerts", |a| a.len() == 2);
    let (i1, i2) = (env.id_of(&key(&r1)), env.id_of(&key(&r2)));
    assert_eq!(
        env.post(
            &format!("/api/alerts/{i1}/resolve"),
            OPERATOR,
            r#"{"note":"gone"}"#
        )
        .0,
        200
    );
    assert_eq!(
        env.post(&format!("/api/alerts/{i2}/ack"), OPERATOR, "").0,
        200
    );
    env.submit(&closed(&r1, T0 + 10_000));
    env.wait_alerts("r1 closed", |a| {
        a.iter()
            .any(|x| x["key"] == key(&r1) && x["firing"] == false)
    });
    let actions = "SELECT COUNT(*) FROM alert_actions WHERE alert_key = ?1";
    let links = "SELECT COUNT(*) FROM alert_notice_alerts WHERE alert_key = ?1";
    let wait_links = |k: &str| {
        let deadline = Instant::now() + PATIENCE;
        while count(&env.db, links, k) == 0 {
            assert!(Instant::now() < deadline, "no notice carried {k}");
            std::thread::sleep(Duration::from_millis(25));
        }
    };
    wait_links(&key(&r1));
    wait_links(&key(&r2));
    assert_eq!(
        (
            count(&env.db, actions, &key(&r1)),
            count(&env.db, actions, &key(&r2))
        ),
        (1, 1)
    );

    let day = Duration::from_secs(86_400);
    let policy = |alerts, notices| streetwatch::retention::Policy {
        incidents: None,
        alerts,
        notices,
        deliveries: None,
        delivery_events: None,
        snapshots: None,
        feed: None,
        batch_rows: 100,
        batch_pause: Duration::ZERO,
        every: Duration::from_secs(60),
    };
    let (_keep, stop) = crossbeam::channel::bounded::<()>(1);
    let later = Timestamp(T0 + 2 * 86_400_000);
    // Alerts older than a day: the closed one goes with its history and links; the firing one stays whole.
    let p =
        streetwatch::retention::prune(&policy(Some(day), None), &env.db, &env.snaps, later, &stop)
            .unwrap();
    assert_eq!(p.alerts, 1);
    assert_eq!(
        (
            count(&env.db, actions, &key(&r1)),
            count(&env.db, links, &key(&r1))
        ),
        (0, 0)
    );
    assert_eq!(count(&env.db, actions, &key(&r2)), 1);
    assert!(count(&env.db, links, &key(&r2)) > 0);
    assert_eq!(env.get(&format!("/api/alerts/{i1}/actions"), VIEWER).0, 404);
    // Notices older than a day (none was delivered): their links go; the live alert keeps its history.
    let p =
        streetwatch::retention::prune(&policy(None, Some(day)), &env.db, &env.snaps, later, &stop)
            .unwrap();
    assert!(p.notices > 0);
    let all_links: i64 = rusqlite::Connection::open(&env.db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM alert_notice_alerts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(all_links, 0);
    assert_eq!(count(&env.db, actions, &key(&r2)), 1);
    assert_eq!(
        env.get(&format!("/api/alerts/{i2}/actions"), VIEWER).1["actions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Arbitrary query strings, paths and bodies: a 4xx at worst, never a 5xx.
#[test]
fn arbitrary_input_is_never_a_server_error() {
    let env = Env::start(NO_RECEIVERS);
    let ev = crowd("c1", T0 + 1000);
    env.submit(&ev);
    env.wait_alerts("one alert", |a| a.len() == 1);
    let id = env.id_of(&key(&ev));
    let names = prop::sample::select(vec![
        "ward", "camera", "rule", "kind", "severity", "state", "firing", "since", "until",
        "cursor", "limit", "open", "x",
    ]);
    let value = prop_oneof![
        any::<String>(),
        any::<i64>().prop_map(|n| n.to_string()),
        "[0-9a-f]{0,40}",
        Just("critical".to_string()),
        Just("resolved".to_string()),
    ];
    let pairs = prop::collection::vec((names, value), 0..6).prop_map(|ps| {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(ps)
            .finish()
    });
    let query = prop_oneof![pairs, "[ -~]{0,80}"];
    let json_value = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::from),
    ]
    .prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![Just("note".to_string()), any::<String>()],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let body = prop_oneof![
        json_value.prop_map(|v| serde_json::to_vec(&v).unwrap()),
        prop::collection::vec(any::<u8>(), 0..200),
    ];
    let segment = prop_oneof![
        Just(id.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<String>()
            .prop_map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&(query, body, segment), |(q, body, seg)| {
            for path in [format!("/api/alerts?{q}"), format!("/api/incidents?{q}")] {
                let r = env.request("GET", &path, Some(VIEWER), None);
                prop_assert!(r.status < 500, "GET {path}: {}", r.status);
                prop_assert!(r.json().is_object());
            }
            for tail in ["", "/deliveries", "/actions"] {
                let path = format!("/api/alerts/{seg}{tail}");
                let r = env.request("GET", &path, Some(OPERATOR), None);
                prop_assert!(r.status < 500, "GET {path}: {}", r.status);
            }
            for action in ["ack", "resolve"] {
                for target in [id.to_string(), seg.clone()] {
                    let path = format!("/api/alerts/{target}/{action}");
                    let r = env.request("POST", &path, Some(OPERATOR), Some(body.clone()));
                    prop_assert!(
                        r.status < 500,
                        "POST {path} {:?}: {} {}",
                        String::from_utf8_lossy(&body),
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    );
                }
            }
            let r = env.request("GET", &format!("/s/{seg}"), None, None);
            prop_assert!(r.status < 500);
            let r = env.request("GET", &format!("/api/incidents/{seg}"), Some(VIEWER), None);
            prop_assert!(r.status < 500);
            Ok(())
        })
        .unwrap();
}

/// Requests per second for the first page (100 alerts) of a list of 5,000, four clients at once. A figure
/// for the closing note, not a check: `cargo test --release --test api_alerts -- --ignored --nocapture`.
#[test]
#[ignore]
fn alert_list_throughput() {
    let env = Env::start(NO_RECEIVERS);
    for i in 0..5000 {
        env.submit(&crowd(&format!("t{i:04}"), T0 + i));
    }
    env.wait_alerts("5,000 alerts", |_| {
        env.alerts(&[("since", &(T0 + 4999).to_string())])["alerts"]
            .as_array()
            .unwrap()
            .len()
            == 1
    });
    let url = format!("{}/api/alerts?limit=100", env.base);
    let run = Duration::from_secs(5);
    let done: usize = env.rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (client, url) = (env.client.clone(), url.clone());
            set.spawn(async move {
                let start = Instant::now();
                let mut n = 0;
                while start.elapsed() < run {
                    let r = client.get(&url).bearer_auth(VIEWER).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().await.unwrap();
                    n += 1;
                }
                n
            });
        }
        let mut total = 0;
        while let Some(n) = set.join_next().await {
            total += n.unwrap();
        }
        total
    });
    println!(
        "GET /api/alerts?limit=100 of 5,000 alerts: {:.0} requests/s ({} in {run:?}, 4 clients)",
        done as f64 / run.as_secs_f64(),
        done
    );
}
