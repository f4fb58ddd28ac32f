//! The live feed, `GET /api/events`, against a real router (ManualClock) and a real server on the same
//! SQLite file, read as raw SSE over HTTP: alerts, delivery states and camera health arrive as events; a
//! stream resumed with `Last-Event-ID` gets exactly what it missed; tokens are required; streams end when
//! the server stops; the change log is pruned after its retention.

#[path = "support/alert_peers.rs"]
mod peers;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peers::{HookServer, wait_for};
use streetwatch::alert::{AlertConfig, AlertHandle, AlertService};
use streetwatch::health::{CameraHealth, StreamState};
use streetwatch::serve::{CameraInfo, Role, ServeConfig, ServeContext, Server, TokenConfig};
use streetwatch::types::{
    CameraId, Clock, IncidentEvent, IncidentKey, IncidentPhase, ManualClock, RuleKind, Severity,
    Timestamp,
};
use tempfile::TempDir;

/// 2026-11-18 11:06:40 UTC.
const T0: Timestamp = Timestamp(1_795_000_000_000);
const VIEWER: &str = "viewer-token-feed-0001";
const REPORTER: &str = "reporter-token-feed-01";
const WAIT: Duration = Duration::from_secs(30);

/// One SSE event as a client reads it.
#[derive(Clone, Debug)]
struct Ev {
    id: Option<i64>,
    event: String,
    data: serde_json::Value,
}

impl Ev {
    /// What identifies the event across two streams (the JSON is the state when it was rendered).
    fn ident(&self) -> (Option<i64>, String, String) {
        let who = match self.event.as_str() {
            "alert" => self.data["key"].as_str().unwrap_or_default().to_string(),
            _ => self.data["id"].as_str().unwrap_or_default().to_string(),
        };
        (self.id, self.event.clone(), who)
    }
}

/// What a stream has read so far.
#[derive(Default)]
struct Seen {
    status: Option<u16>,
    content_type: Option<String>,
    retry: Option<String>,
    events: Vec<Ev>,
    ended: bool,
}

/// An SSE reader over reqwest's streamed body, parsing by the spec (fields per line, `data` joined with
/// LF, an event dispatched at a blank line, comments ignored).
struct Stream {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stream {
    fn open(rt: &tokio::runtime::Runtime, url: String, last_event_id: Option<i64>) -> Stream {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        let task = rt.spawn(async move {
            let mut req = reqwest::Client::new().get(&url).bearer_auth(VIEWER);
            if let Some(id) = last_event_id {
                req = req.header("Last-Event-ID", id.to_string());
            }
            let mut resp = match req.send().await {
                Ok(r) => r,
                Err(_) => {
                    s.lock().unwrap().ended = true;
                    return;
                }
            };
            {
                let mut g = s.lock().unwrap();
                g.status = Some(resp.status().as_u16());
                g.content_type = resp
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_string());
            }
            let mut buf = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                buf.push_str(std::str::from_utf8(&chunk).expect("SSE is UTF-8"));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let (mut id, mut event, mut data) = (None, String::new(), Vec::<String>::new());
                    for line in block.lines() {
                        if line.is_empty() || line.starts_with(':') {
                            continue;
                        }
                        let (field, value) = line.split_once(':').unwrap_or((line, ""));
                        let value = value.strip_prefix(' ').unwrap_or(value);
                        match field {
                            "id" => id = Some(value.parse::<i64>().expect("numeric id")),
                            "event" => event = value.to_string(),
                            "data" => data.push(value.to_string()),
                            "retry" => s.lock().unwrap().retry = Some(value.to_string()),
                            other => panic!("unknown SSE field {other:?}"),
                        }
                    }
                    if !data.is_empty() {
                        let data = serde_json::from_str(&data.join("\n")).expect("JSON data");
                        s.lock().unwrap().events.push(Ev { id, event, data });
                    }
                }
            }
            s.lock().unwrap().ended = true;
        });
        let st = Stream { seen, task };
        wait_for("the stream to start", WAIT, || {
            let g = st.seen.lock().unwrap();
            (g.retry.is_some() || g.ended).then_some(())
        });
        st
    }

    fn events(&self) -> Vec<Ev> {
        self.seen.lock().unwrap().events.clone()
    }

    /// The last event id read (0 before any).
    fn last_id(&self) -> i64 {
        self.events().iter().filter_map(|e| e.id).max().unwrap_or(0)
    }

    /// Waits for an event that `pred` accepts.
    fn wait(&self, what: &str, pred: impl Fn(&Ev) -> bool) -> Ev {
        wait_for(what, WAIT, || self.events().into_iter().find(|e| pred(e)))
    }

    fn ended(&self) -> bool {
        self.seen.lock().unwrap().ended
    }

    /// Drops the connection, as a client going away does.
    fn disconnect(self) {
        self.task.abort();
    }
}

struct Harness {
    _dir: TempDir,
    db: PathBuf,
    clock: ManualClock,
    alerts: Option<AlertHandle>,
    server: Option<Server>,
    rt: tokio::runtime::Runtime,
    _hook: HookServer,
}

impl Harness {
    fn start(cameras: Vec<CameraInfo>) -> Harness {
        Harness::grouped_by("camera", cameras)
    }

    /// Notices group the alerts of each `group_by` value (a group's notice carries all its alerts).
    fn grouped_by(group_by: &str, cameras: Vec<CameraInfo>) -> Harness {
        let hook = HookServer::start(vec![200]);
        let dir = TempDir::new().unwrap();
        let db = dir.path().join("sw.db");
        let clock = ManualClock::at(T0);
        let config = AlertConfig::from_toml(&format!(
            r#"
[[receivers]]
name = "city"
send_resolved = true
webhook = {{ url = "{}", secret = "feed-test-secret" }}
[route]
receiver = "city"
group_by = ["{group_by}"]
group_wait = "0s"
group_interval = "1s"
"#,
            hook.url()
        ))
        .unwrap();
        let alerts = AlertService::start(config, &db, Arc::new(clock.clone())).unwrap();
        let serve = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            tokens: vec![
                TokenConfig {
                    name: "wall".into(),
                    role: Role::Viewer,
                    token: streetwatch::secret::Secret::new(VIEWER),
                },
                TokenConfig {
                    name: "kiosk".into(),
                    role: Role::Reporter,
                    token: streetwatch::secret::Secret::new(REPORTER),
                },
            ],
            utc_offset_minutes: 420,
            ..ServeConfig::default()
        };
        let server = Server::start(
            &serve,
            ServeContext {
                db_path: db.clone(),
                snapshots_dir: dir.path().join("snapshots"),
                cameras: cameras.into(),
                clock: Arc::new(clock.clone()),
                submit: None,
                stats: Default::default(),
            },
            alerts.runtime(),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        Harness {
            _dir: dir,
            db,
            clock,
            alerts: Some(alerts),
            server: Some(server),
            rt,
            _hook: hook,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.as_ref().unwrap().addr())
    }

    fn stream(&self, last_event_id: Option<i64>) -> Stream {
        let s = Stream::open(&self.rt, self.url("/api/events"), last_event_id);
        let g = s.seen.lock().unwrap();
        assert_eq!(g.status, Some(200));
        assert_eq!(g.content_type.as_deref(), Some("text/event-stream"));
        assert_eq!(
            g.retry.as_deref(),
            Some("2000"),
            "a stream starts with its retry delay"
        );
        drop(g);
        s
    }

    /// Opens an incident on `camera` now; returns its alert key.
    fn open(&self, camera: &str) -> String {
        let e = incident(
            camera,
            self.clock.now(),
            IncidentPhase::Opened,
            self.clock.now(),
        );
        let key = e.key.to_string();
        self.alerts.as_ref().unwrap().submit(e);
        key
    }

    fn close(&self, camera: &str, opened: Timestamp) {
        self.clock.advance_ms(1000);
        let e = incident(camera, opened, IncidentPhase::Closed, self.clock.now());
        self.alerts.as_ref().unwrap().submit(e);
    }

    /// Ids of the feed's rows after `after` of the given kinds, straight from the table.
    fn feed_ids(&self, after: i64, kinds: &[&str]) -> Vec<i64> {
        feed_rows(&self.db, after)
            .into_iter()
            .filter(|(_, k)| kinds.contains(&k.as_str()))
            .map(|(id, _)| id)
            .collect()
    }

    /// Waits until `deliveries` deliveries are made and accepted (nothing left to change) and returns the
    /// feed's last id.
    fn quiet(&self, deliveries: i64) -> i64 {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        wait_for("every delivery accepted", WAIT, || {
            let (all, accepted): (i64, i64) = conn
                .query_row(
                    "SELECT COUNT(*), COUNT(*) FILTER (WHERE state = 'accepted') FROM alert_deliveries",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            (all == deliveries && accepted == all).then_some(())
        });
        conn.query_row("SELECT COALESCE(MAX(id), 0) FROM alert_feed", [], |r| {
            r.get(0)
        })
        .unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
        if let Some(a) = self.alerts.take() {
            a.shutdown();
        }
    }
}

fn feed_rows(db: &Path, after: i64) -> Vec<(i64, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, kind FROM alert_feed WHERE id > ?1 ORDER BY id")
        .unwrap();
    stmt.query_map([after], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn incident(
    camera: &str,
    episode: Timestamp,
    phase: IncidentPhase,
    at: Timestamp,
) -> IncidentEvent {
    IncidentEvent {
        key: IncidentKey {
            camera: CameraId::new(camera),
            rule: "plaza-crowd".into(),
            zone: "plaza".into(),
            episode,
        },
        phase,
        at,
        kind: RuleKind::Crowding,
        severity: Severity::Warning,
        camera_name: format!("Camera {camera}"),
        ward: "Bến Nghé".into(),
        summary: "7 người trong vùng 45 giây".into(),
        count: 7,
        snapshot: None,
    }
}

fn camera(id: &str) -> (CameraInfo, Arc<CameraHealth>) {
    let health = Arc::new(CameraHealth::new(CameraId::new(id)));
    (
        CameraInfo {
            id: CameraId::new(id),
            name: "Nguyễn Huệ / Lê Lợi".into(),
            ward: "Bến Nghé".into(),
            health: health.clone(),
        },
        health,
    )
}

#[test]
fn new_alerts_delivery_states_and_camera_states_arrive_as_events() {
    let (cam, health) = camera("d1-cam-07");
    let h = Harness::start(vec![cam]);
    let s = h.stream(None);
    assert!(s.events().is_empty(), "a fresh stream starts at the end");

    let key = h.open("d1-nh-03");
    let first = s.wait("the new alert", |e| {
        e.event == "alert" && e.data["key"] == key
    });
    assert!(first.id.is_some());
    let a = &first.data;
    assert_eq!(a["camera"], "d1-nh-03");
    assert_eq!(a["camera_name"], "Camera d1-nh-03");
    assert_eq!(a["ward"], "Bến Nghé");
    assert_eq!(a["rule"], "plaza-crowd");
    assert_eq!(a["kind"], "crowding");
    assert_eq!(a["severity"], "warning");
    assert_eq!(a["firing"], true);
    assert_eq!(a["state"], "new");
    assert_eq!(a["started_at"], T0.0);
    assert!(a["ended_at"].is_null() && a["snapshot_url"].is_null());
    assert!(a["id"].as_i64().unwrap() > 0);

    // The webhook takes it: the delivery's change shows as the alert's event with its deliveries.
    let delivered = s.wait("the alert with its delivery accepted", |e| {
        e.event == "alert"
            && e.data["key"] == key
            && e.data["deliveries"]
                .as_array()
                .is_some_and(|d| d.len() == 1 && d[0]["state"] == "accepted")
    });
    let d = &delivered.data["deliveries"][0];
    assert_eq!(d["receiver"], "city");
    assert_eq!(d["channel"], "webhook");
    assert_eq!(d["attempts"], 1);
    assert!(
        d.get("target").is_none(),
        "no target in the alert JSON: {d}"
    );
    let ids: Vec<i64> = s.events().iter().filter_map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");

    // A camera goes into backoff with a password in its error: one camera event, redacted.
    health.set_error("cannot open rtsp://admin:hunter2@10.0.0.5/s1: timeout".into());
    health.set_state(StreamState::Backoff);
    let down = s.wait("the camera's change", |e| e.event == "camera");
    assert!(down.id.unwrap() > *ids.last().unwrap());
    assert_eq!(down.data["id"], "d1-cam-07");
    assert_eq!(down.data["name"], "Nguyễn Huệ / Lê Lợi");
    assert_eq!(down.data["ward"], "Bến Nghé");
    assert_eq!(down.data["state"], "backoff");
    assert_eq!(
        down.data["last_error"],
        "cannot open rtsp://***@10.0.0.5/s1: timeout"
    );
    assert!(!down.data.to_string().contains("hunter2"));

    // Counters alone are no change; the next state is.
    for _ in 0..50 {
        health.frame_received(T0);
    }
    std::thread::sleep(Duration::from_millis(2500)); // more than two camera ticks
    health.set_state(StreamState::Streaming);
    s.wait("the camera streaming", |e| {
        e.event == "camera" && e.data["state"] == "streaming"
    });
    let cams: Vec<String> = s
        .events()
        .iter()
        .filter(|e| e.event == "camera")
        .map(|e| e.data["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(cams, ["backoff", "streaming"]);
    assert!(h.feed_ids(0, &["camera"]).len() == 2);
}

#[test]
fn a_stream_resumed_with_last_event_id_gets_exactly_what_it_missed() {
    let h = Harness::start(Vec::new());
    let reference = h.stream(None);
    let b = h.stream(None);
    let k1 = h.open("cam-1");
    b.wait("alert 1 delivered", |e| {
        e.data["key"] == k1 && e.data["deliveries"][0]["state"] == "accepted"
    });
    let n = b.last_id();
    assert!(n > 0);
    b.disconnect();

    // While B is away: two new alerts and alert 1 resolved, each delivered.
    let opened1 = h.clock.now();
    h.clock.advance_ms(1000);
    let k2 = h.open("cam-2");
    h.clock.advance_ms(1000);
    let k3 = h.open("cam-3");
    h.close("cam-1", opened1);
    // One notice per alert opened or resolved, one delivery each.
    let end = h.quiet(4);
    wait_for("the reference stream to reach the end", WAIT, || {
        (reference.last_id() == end).then_some(())
    });

    // What B missed, by the table: every row after N (none is left without an alert to show).
    let missed = h.feed_ids(n, &["alert", "delivery"]);
    assert_eq!(missed.len(), feed_rows(&h.db, n).len());
    assert!(
        missed.len() >= 6,
        "3 changed alerts, 3 deliveries: {missed:?}"
    );

    let c = h.stream(Some(n));
    wait_for("the resumed stream to reach the end", WAIT, || {
        (c.last_id() == end).then_some(())
    });
    let got = c.events();
    let got_ids: Vec<i64> = got.iter().filter_map(|e| e.id).collect();
    assert_eq!(
        got_ids, missed,
        "exactly the missed rows, in order, none twice"
    );
    let want: Vec<_> = reference
        .events()
        .iter()
        .skip_while(|e| e.id.is_none_or(|id| id <= n))
        .map(Ev::ident)
        .collect();
    assert_eq!(got.iter().map(Ev::ident).collect::<Vec<_>>(), want);
    let keys: std::collections::BTreeSet<&str> = got
        .iter()
        .map(|e| e.data["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [k1.as_str(), k2.as_str(), k3.as_str()]
            .into_iter()
            .collect()
    );
    let last_of_1 = got.iter().rev().find(|e| e.data["key"] == k1).unwrap();
    assert_eq!(last_of_1.data["firing"], false, "alert 1 ended while away");

    // The same through the query string, as a page passes it when it opens.
    let q = Stream::open(
        &h.rt,
        h.url(&format!("/api/events?last_event_id={n}")),
        None,
    );
    wait_for("the query-resumed stream to reach the end", WAIT, || {
        (q.last_id() == end).then_some(())
    });
    assert_eq!(
        q.events().iter().filter_map(|e| e.id).collect::<Vec<_>>(),
        missed
    );

    // Live after the replay, without repeating it: a new alert comes once, after the end.
    let k4 = h.open("cam-4");
    let new = c.wait("alert 4 live", |e| e.data["key"] == k4);
    assert!(new.id.unwrap() > end);
    let tail_end = h.quiet(5);
    wait_for("the resumed stream to follow live", WAIT, || {
        (c.last_id() == tail_end).then_some(())
    });
    let all: Vec<i64> = c.events().iter().filter_map(|e| e.id).collect();
    assert_eq!(all, h.feed_ids(n, &["alert", "delivery"]));
}

#[test]
fn a_delivery_of_a_notice_with_two_alerts_is_two_alert_events_under_its_row_id() {
    let h = Harness::grouped_by("ward", Vec::new());
    let s = h.stream(None);
    let a = h.open("cam-a");
    h.quiet(1);
    h.clock.advance_ms(2000);
    let b = h.open("cam-b");
    let end = h.quiet(2);
    wait_for("the stream to reach the end", WAIT, || {
        (s.last_id() == end).then_some(())
    });
    // Events up to one with an id are what that row shows.
    let kinds: std::collections::BTreeMap<i64, String> = feed_rows(&h.db, 0).into_iter().collect();
    let mut groups: Vec<(i64, Vec<String>)> = Vec::new();
    let mut keys = Vec::new();
    for e in s.events() {
        keys.push(e.data["key"].as_str().unwrap().to_string());
        if let Some(id) = e.id {
            groups.push((id, std::mem::take(&mut keys)));
        }
    }
    assert!(keys.is_empty(), "the last event of a row carries its id");
    let ids: Vec<i64> = groups.iter().map(|g| g.0).collect();
    assert_eq!(ids, kinds.keys().copied().collect::<Vec<_>>());
    for (id, keys) in &groups {
        match kinds[id].as_str() {
            "alert" => assert_eq!(keys.len(), 1, "row {id}"),
            _ => assert!(keys.len() == 1 || keys.len() == 2, "row {id}: {keys:?}"),
        }
    }
    // The second notice carries the ward's two alerts: each of its delivery's changes shows both.
    let both: Vec<&(i64, Vec<String>)> = groups.iter().filter(|(_, k)| k.len() == 2).collect();
    assert!(!both.is_empty(), "{groups:?}");
    for (id, k) in both {
        assert_eq!(kinds[id], "delivery");
        let set: std::collections::BTreeSet<&String> = k.iter().collect();
        assert_eq!(set, [&a, &b].into_iter().collect(), "row {id}");
    }
}

#[test]
fn the_feed_needs_a_viewer_token_and_a_numeric_last_event_id() {
    let h = Harness::start(Vec::new());
    let status = |token: Option<&str>, extra: Option<(&str, &str)>| {
        h.rt.block_on(async {
            let mut req = reqwest::Client::new().get(h.url("/api/events"));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some((k, v)) = extra {
                req = req.header(k, v);
            }
            let r = req.send().await.unwrap();
            let code = r.status().as_u16();
            let body = if code == 200 {
                String::new()
            } else {
                r.text().await.unwrap()
            };
            (code, body)
        })
    };
    let (code, body) = status(None, None);
    assert_eq!(code, 401);
    assert!(body.contains("\"error\""), "{body}");
    assert_eq!(status(Some("not-a-token-at-all-x"), None).0, 401);
    assert_eq!(status(Some(REPORTER), None).0, 403);
    assert_eq!(status(Some(VIEWER), Some(("Last-Event-ID", "abc"))).0, 400);
    assert_eq!(status(Some(VIEWER), Some(("Last-Event-ID", "-3"))).0, 400);
    let q = h.rt.block_on(async {
        reqwest::Client::new()
            .get(h.url("/api/events?last_event_id=x"))
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(q, 400);
}

#[test]
fn at_most_256_streams_are_open_at_once() {
    let h = Harness::start(Vec::new());
    let open: Vec<Stream> = (0..256).map(|_| h.stream(None)).collect();
    let refused = Stream::open(&h.rt, h.url("/api/events"), None);
    wait_for("the 257th stream's answer", WAIT, || {
        refused.seen.lock().unwrap().status
    });
    assert_eq!(refused.seen.lock().unwrap().status, Some(503));
    // A client leaving frees its place.
    open.into_iter().next().unwrap().disconnect();
    wait_for("a place for a new stream", WAIT, || {
        let s = Stream::open(&h.rt, h.url("/api/events"), None);
        let status = s.seen.lock().unwrap().status;
        (status == Some(200)).then_some(())
    });
}

#[test]
fn streams_end_when_the_server_stops() {
    let mut h = Harness::start(Vec::new());
    let a = h.stream(None);
    let b = h.stream(Some(0));
    let started = Instant::now();
    h.server.take().unwrap().stop();
    let took = started.elapsed();
    // Server::stop gives open requests 2 s before it aborts them: the feeds must not need it.
    assert!(took < Duration::from_millis(1500), "stop took {took:?}");
    wait_for("both streams to end", Duration::from_secs(5), || {
        (a.ended() && b.ended()).then_some(())
    });
}

#[test]
fn the_change_log_is_pruned_after_a_week() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let now = T0;
    const DAY: i64 = 86_400_000;
    let mut store = streetwatch::alert::Store::open(&db).unwrap();
    let row = |c: &str| vec![(c.to_string(), "{}".to_string())];
    store
        .append_camera_feed(now.plus_ms(-8 * DAY), &row("old"))
        .unwrap();
    store
        .append_camera_feed(now.plus_ms(-6 * DAY), &row("recent"))
        .unwrap();
    let policy =
        streetwatch::retention::Policy::from(&streetwatch::config::RetentionConfig::default());
    let (_keep, stop) = crossbeam::channel::bounded::<()>(1);
    let pruned =
        streetwatch::retention::prune(&policy, &db, &dir.path().join("s"), now, &stop).unwrap();
    assert_eq!(pruned.feed, 1);
    assert_eq!(feed_rows(&db, 0), vec![(2, "camera".to_string())]);
}
