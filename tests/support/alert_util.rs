//! Helpers shared by the alert integration tests: incidents, a snapshot JPEG, and polling the outbox.

#![allow(dead_code)] // each test binary includes this file and uses what it needs

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use streetwatch::alert::{AlertConfig, DeliveryRow, Store};
use streetwatch::types::{
    CameraId, Clock, IncidentEvent, IncidentKey, IncidentPhase, RuleKind, Severity, SystemClock,
};

/// Every alert to one webhook receiver, `city-platform` at `url` signing with `secret`, retried after
/// 100–300 ms; `route` adds settings to the root route (`group_wait = "0s"`, …).
pub fn webhook_config(url: &str, secret: &str, route: &str) -> AlertConfig {
    AlertConfig::from_toml(&format!(
        r#"
[retry]
initial_backoff = "100ms"
max_backoff = "300ms"
[[receivers]]
name = "city-platform"
webhook = {{ url = "{url}", secret = "{secret}" }}
[route]
receiver = "city-platform"
{route}
"#
    ))
    .unwrap()
}

/// An opened crowding incident at the current time on `camera` in `ward`.
pub fn opened(camera: &str, ward: &str, snapshot: Option<&Path>) -> IncidentEvent {
    let now = SystemClock.now();
    IncidentEvent {
        key: IncidentKey {
            camera: CameraId::new(camera),
            rule: "plaza-crowd".into(),
            zone: "plaza".into(),
            episode: now,
        },
        phase: IncidentPhase::Opened,
        at: now,
        kind: RuleKind::Crowding,
        severity: Severity::Warning,
        camera_name: "Nguyễn Huệ / Lê Lợi".into(),
        ward: ward.into(),
        summary: "7 người trong vùng 45 giây".into(),
        count: 7,
        snapshot: snapshot.map(|p| p.display().to_string()),
    }
}

/// Writes a small JPEG (a gradient) as an incident snapshot.
pub fn snapshot_jpeg(dir: &Path) -> PathBuf {
    let img = image::RgbImage::from_fn(96, 64, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, 128])
    });
    let path = dir.join("snapshot.jpg");
    img.save(&path).unwrap();
    path
}

/// Polls the outbox until `done` holds for the deliveries, or panics after `timeout` showing them.
pub fn wait_deliveries(
    db: &Path,
    timeout: Duration,
    what: &str,
    done: impl Fn(&[DeliveryRow]) -> bool,
) -> Vec<DeliveryRow> {
    let store = Store::open(db).unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        let rows = store.deliveries(None).unwrap();
        if done(&rows) {
            return rows;
        }
        if Instant::now() > deadline {
            let dump: Vec<String> = rows
                .iter()
                .map(|d| {
                    format!(
                        "#{} {} {} {} tries={} err={:?} reply={:?}",
                        d.id,
                        d.channel,
                        d.target,
                        d.state,
                        d.attempts,
                        d.last_error,
                        d.gateway_reply
                    )
                })
                .collect();
            panic!(
                "timed out after {timeout:?} waiting for {what}; deliveries:\n{}",
                dump.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn settled(d: &DeliveryRow) -> bool {
    matches!(
        d.state.as_str(),
        "accepted" | "queued" | "delivered" | "undelivered" | "dead"
    )
}

/// Serves each connection on 127.0.0.1 with `handle` on a thread of its own; returns the port. For peers
/// in the test process that misbehave on purpose (silent, holding requests).
pub fn serve_each(handle: impl Fn(std::net::TcpStream) + Send + Sync + 'static) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::sync::Arc::new(handle);
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { return };
            let h = handle.clone();
            std::thread::spawn(move || h(s));
        }
    });
    port
}

/// Holds requests at a peer in the test process until the test releases them.
#[derive(Default)]
pub struct Gate {
    /// (requests arrived, released)
    state: std::sync::Mutex<(usize, bool)>,
    cv: std::sync::Condvar,
}

impl Gate {
    /// Counts a request and, if `hold` says so for its number (1, 2, …), waits until released.
    pub fn arrive(&self, hold: impl Fn(usize) -> bool) {
        let mut g = self.state.lock().unwrap();
        g.0 += 1;
        let held = hold(g.0);
        self.cv.notify_all();
        while held && !g.1 {
            g = self.cv.wait(g).unwrap();
        }
    }

    pub fn arrived(&self) -> usize {
        self.state.lock().unwrap().0
    }

    pub fn release(&self) {
        self.state.lock().unwrap().1 = true;
        self.cv.notify_all();
    }
}
