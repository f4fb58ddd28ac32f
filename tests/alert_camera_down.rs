//! Camera health through the real pipeline: two cameras on RTSP servers of their own, an incident on each;
//! one server is killed, the ingest supervisor and the health watcher find the camera down, and the alert
//! router holds that camera's rule alert (muted, not sent) while the other camera's goes out.

#[path = "support/alert_peers.rs"]
mod peers;
mod support;

use std::sync::Arc;
use std::time::Duration;

use peers::HookServer;
use streetwatch::app::{Pipeline, RunOptions};
use streetwatch::config::Config;
use streetwatch::types::SystemClock;

fn camera(id: &str, port: u16) -> String {
    support::intrusion_camera(id, &format!("rtsp://127.0.0.1:{port}/cam"))
}

#[test]
fn a_camera_whose_server_died_has_its_rule_alert_held_not_sent() {
    let hook = HookServer::start(vec![200]);
    let vtest = support::footage("vtest_h264.mp4");
    let (dies, port_dies) = support::serve_footage(0, &[("cam", &vtest)]);
    let (_lives, port_lives) = support::serve_footage(0, &[("cam", &vtest)]);
    let dir = tempfile::tempdir().unwrap();
    // Each camera's group speaks 15 s after its incident opens: time enough for the watcher to see the
    // dead camera down (2 s here) first.
    let text = format!(
        r#"
[runtime]
data_dir = {data:?}
{a}
{b}
[alert]
[alert.flood]
max_notices = 0
[[alert.receivers]]
name = "district"
webhook = {{ url = "{url}", secret = "0123456789abcdef" }}
[alert.route]
receiver = "district"
group_by = ["camera"]
group_wait = "15s"
"#,
        data = dir.path(),
        a = camera("d1-dies", port_dies),
        b = camera("d1-lives", port_lives),
        url = hook.url(),
    );
    let config = Config::parse(&text, "camera-down.toml", &support::root()).unwrap();
    let opts = RunOptions {
        camera_down_after: Duration::from_secs(2),
        ..RunOptions::default()
    };
    let pipeline = Pipeline::start(&config, opts, Arc::new(SystemClock)).unwrap();
    let incidents = streetwatch::store::Store::open(&pipeline.db_path).unwrap();
    let open_on = |camera: &str| {
        incidents
            .incidents()
            .unwrap()
            .into_iter()
            .find(|i| i.camera == camera && i.closed_at.is_none())
    };
    assert!(
        support::wait_until(Duration::from_secs(60), || open_on("d1-dies").is_some()
            && open_on("d1-lives").is_some()),
        "people on the walkway open an incident on each camera: {:?}",
        incidents.incidents().unwrap()
    );
    let muted_key = open_on("d1-dies").unwrap().id;
    drop(dies);

    let alerts = streetwatch::alert::Store::open(&pipeline.db_path).unwrap();
    let row = |key: &str| {
        alerts
            .alerts(None, 100)
            .unwrap()
            .into_iter()
            .find(|a| a.key == key)
    };
    let told = |camera: &str| {
        hook.requests.lock().unwrap().iter().any(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["camera"] == camera)
        })
    };
    let decided = support::wait_until(Duration::from_secs(60), || {
        told("d1-lives") && row(&muted_key).is_some_and(|a| a.muted_by.is_some())
    });
    let health = pipeline.health();
    let muted = row(&muted_key);
    pipeline.shutdown();
    assert!(
        decided,
        "alert {muted:?}; webhook got {} requests; health {health:?}",
        hook.count()
    );
    let muted = muted.unwrap();
    assert_eq!(muted.muted_by.as_deref(), Some("camera down"), "{muted:?}");
    assert_eq!(muted.last_notice_id, None, "held, not sent: {muted:?}");
    assert!(!told("d1-dies"), "nothing about the dead camera was sent");
}
