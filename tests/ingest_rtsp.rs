//! Ingest against real RTSP servers on 127.0.0.1: frames arrive; a server that dies or freezes is
//! detected and recovered from without a process restart, and the other cameras run on.

mod support;

use std::sync::Arc;
use std::time::Duration;

use streetwatch::app::{Pipeline, RunOptions};
use streetwatch::config::Config;
use streetwatch::health::{HealthSnapshot, StreamState};
use streetwatch::ingest::{Backoff, FootageServer};
use streetwatch::types::SystemClock;

fn start(urls: &[String], stall_seconds: f32) -> (Pipeline, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!(
        "[runtime]\nmodel = \"models/nanodet_g_416_coco.toml\"\ndata_dir = {:?}\n",
        dir.path()
    );
    for (i, url) in urls.iter().enumerate() {
        text += &format!(
            "[[cameras]]\nid = \"cam{i}\"\nurl = {url:?}\nfps = 4\nstall_seconds = {stall_seconds}\n"
        );
    }
    let config = Config::parse(&text, "test.toml", &support::root()).unwrap();
    let opts = RunOptions {
        backoff: Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(1),
            reset_after: Duration::from_secs(30),
        },
        ..RunOptions::default()
    };
    (
        Pipeline::start(&config, opts, Arc::new(SystemClock)).unwrap(),
        dir,
    )
}

fn cam(p: &Pipeline, i: usize) -> HealthSnapshot {
    p.health().swap_remove(i)
}

#[test]
fn frames_arrive_from_an_rtsp_server_with_credentials_kept_out_of_health() {
    let server =
        FootageServer::start(&[("vtest".into(), support::footage("vtest_h264.mp4"))], 0).unwrap();
    // gst-rtsp-server without auth ignores credentials, so this also shows they are passed separately.
    let url = server
        .url("vtest")
        .replace("rtsp://", "rtsp://admin:s3cret@");
    let (p, _dir) = start(&[url], 5.0);
    assert!(
        support::wait_until(Duration::from_secs(20), || cam(&p, 0).frames_analysed >= 4),
        "{:?}",
        cam(&p, 0)
    );
    let h = cam(&p, 0);
    assert_eq!(h.state, StreamState::Streaming);
    assert!(h.frames_decoded >= h.frames_received, "{h:?}");
    assert!(h.last_frame_age_s.unwrap() < 2.0);
    assert!(!serde_json::to_string(&h).unwrap().contains("s3cret"));
    p.shutdown();
}

#[test]
fn an_unreachable_camera_is_retried_while_the_others_run() {
    let server =
        FootageServer::start(&[("vtest".into(), support::footage("vtest_h264.mp4"))], 0).unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead); // nothing listens there now
    let (p, _dir) = start(
        &[
            server.url("vtest"),
            format!("rtsp://u:topsecret@127.0.0.1:{dead_port}/none"),
        ],
        5.0,
    );
    assert!(support::wait_until(Duration::from_secs(20), || cam(&p, 1)
        .restarts
        >= 2
        && cam(&p, 0).frames_analysed >= 4));
    let bad = cam(&p, 1);
    assert!(
        matches!(bad.state, StreamState::Backoff | StreamState::Connecting),
        "{bad:?}"
    );
    let err = bad.last_error.unwrap();
    assert!(!err.is_empty() && !err.contains("topsecret"), "{err}");
    assert_eq!(cam(&p, 0).state, StreamState::Streaming);
    p.shutdown();
}

#[test]
fn a_restarted_server_is_recovered_and_a_frozen_one_is_caught_by_the_watchdog() {
    let vtest = support::footage("vtest_h264.mp4");
    let (mut a, port_a) = support::serve_footage(0, &[("cam", &vtest)]);
    let (b, port_b) = support::serve_footage(0, &[("cam", &vtest)]);
    let urls = [
        format!("rtsp://127.0.0.1:{port_a}/cam"),
        format!("rtsp://127.0.0.1:{port_b}/cam"),
    ];
    let (p, _dir) = start(&urls, 2.0);
    assert!(support::wait_until(Duration::from_secs(20), || (0..2)
        .all(|i| cam(&p, i).state == StreamState::Streaming)));

    // Server A dies: camera 0 backs off; camera 1 keeps analysing.
    drop(a);
    assert!(
        support::wait_until(Duration::from_secs(10), || cam(&p, 0).restarts >= 1),
        "{:?}",
        cam(&p, 0)
    );
    let before = cam(&p, 1).frames_analysed;
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        cam(&p, 1).frames_analysed >= before + 4,
        "camera 1 stalled while camera 0 was down"
    );
    assert_eq!(cam(&p, 1).restarts, 0);
    assert_ne!(cam(&p, 0).state, StreamState::Streaming);

    // Server A comes back on the same port: camera 0 recovers within seconds, same process.
    a = support::serve_footage(port_a, &[("cam", &vtest)]).0;
    assert!(
        support::wait_until(Duration::from_secs(10), || cam(&p, 0).state
            == StreamState::Streaming),
        "{:?}",
        cam(&p, 0)
    );
    let analysed = cam(&p, 0).frames_analysed;
    assert!(support::wait_until(Duration::from_secs(5), || cam(&p, 0)
        .frames_analysed
        > analysed + 2));

    // Server B freezes with its socket open (SIGSTOP): the watchdog notices within the stall time.
    let pid = b.0.id() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let caught = support::wait_until(Duration::from_secs(8), || {
        cam(&p, 1)
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("stalled"))
    });
    let frozen = cam(&p, 1);
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(caught, "{frozen:?}");
    assert!(frozen.restarts >= 1);
    assert_eq!(
        cam(&p, 0).state,
        StreamState::Streaming,
        "camera 0 unaffected by the freeze"
    );
    // Thawed, it streams again.
    assert!(
        support::wait_until(Duration::from_secs(15), || cam(&p, 1).state
            == StreamState::Streaming),
        "{:?}",
        cam(&p, 1)
    );
    p.shutdown();
    drop((a, b));
}
