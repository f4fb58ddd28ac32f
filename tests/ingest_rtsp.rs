//! Ingest against real RTSP servers on 127.0.0.1: frames arrive; a server that dies or freezes is
//! detected and recovered from without a process restart, and the other cameras run on.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use streetwatch::app::{Pipeline, RunOptions};
use streetwatch::config::Config;
use streetwatch::health::{HealthSnapshot, StreamState};
use streetwatch::ingest::{Backoff, BasicAuth, FootageServer};
use streetwatch::types::SystemClock;

/// How long a test waits for what should happen within seconds. Generous for a loaded 2-core machine:
/// the waits poll and return as soon as the condition holds, so a large deadline costs nothing when
/// things work and only says "long enough" when they do not.
const DEADLINE: Duration = Duration::from_secs(60);

/// The backoff most tests use: quick retries, so recoveries show within seconds.
fn quick_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(1),
        reset_after: Duration::from_secs(30),
    }
}

fn start(urls: &[String], stall_seconds: f32) -> (Pipeline, tempfile::TempDir) {
    let cameras: String = urls
        .iter()
        .enumerate()
        .map(|(i, url)| {
            format!(
                "[[cameras]]\nid = \"cam{i}\"\nurl = {url:?}\nfps = 4\nstall_seconds = {stall_seconds}\n"
            )
        })
        .collect();
    start_cameras(&cameras, quick_backoff())
}

/// Starts the pipeline on `cameras` (`[[cameras]]` tables) with the fp32 model.
fn start_cameras(cameras: &str, backoff: Backoff) -> (Pipeline, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[runtime]\nmodel = \"models/nanodet_g_416_coco.toml\"\ndata_dir = {:?}\n{cameras}",
        dir.path()
    );
    let config = Config::parse(&text, "test.toml", &support::root()).unwrap();
    let opts = RunOptions {
        backoff,
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
        support::wait_until(DEADLINE, || cam(&p, 0).frames_analysed >= 4),
        "{:?}",
        cam(&p, 0)
    );
    let h = cam(&p, 0);
    assert_eq!(h.state, StreamState::Streaming);
    assert!(h.frames_decoded >= h.frames_received, "{h:?}");
    // Frames come 4 a second; the age stays under the stall time, or the watchdog would have acted.
    assert!(h.last_frame_age_s.unwrap() < 5.0, "{h:?}");
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
    assert!(support::wait_until(DEADLINE, || cam(&p, 1).restarts >= 2
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
    assert!(support::wait_until(DEADLINE, || (0..2)
        .all(|i| cam(&p, i).state == StreamState::Streaming)));

    // Server A dies: camera 0 backs off; camera 1 keeps analysing.
    drop(a);
    assert!(
        support::wait_until(DEADLINE, || cam(&p, 0).restarts >= 1),
        "{:?}",
        cam(&p, 0)
    );
    let before = cam(&p, 1).frames_analysed;
    assert!(
        support::wait_until(DEADLINE, || cam(&p, 1).frames_analysed >= before + 4),
        "camera 1 stalled while camera 0 was down: {:?}",
        cam(&p, 1)
    );
    assert_eq!(cam(&p, 1).restarts, 0);
    assert_ne!(cam(&p, 0).state, StreamState::Streaming);

    // Server A comes back on the same port: camera 0 recovers within seconds, same process.
    a = support::serve_footage(port_a, &[("cam", &vtest)]).0;
    assert!(
        support::wait_until(DEADLINE, || cam(&p, 0).state == StreamState::Streaming),
        "{:?}",
        cam(&p, 0)
    );
    let analysed = cam(&p, 0).frames_analysed;
    assert!(support::wait_until(DEADLINE, || cam(&p, 0).frames_analysed > analysed + 2));

    // Server B freezes with its socket open (SIGSTOP): the watchdog notices within the stall time.
    let pid = b.0.id() as i32;
    let restarts = cam(&p, 1).restarts;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let caught = support::wait_until(DEADLINE, || {
        let h = cam(&p, 1);
        h.restarts > restarts && h.last_error.is_some_and(|e| e.contains("stalled"))
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
        support::wait_until(DEADLINE, || cam(&p, 1).state == StreamState::Streaming),
        "{:?}",
        cam(&p, 1)
    );
    p.shutdown();
    drop((a, b));
}

// Credentials for a server that requires them. Distinctive strings, so "absent from the logs" means
// something: they cannot occur there by accident, and they share no part with the user name.
const CAM_USER: &str = "viewer7";
const CAM_PASS: &str = "Qz8-okapi-RIGHT-41";
const WRONG_PASS: &str = "Jx3-zebra-WRONG-96";

/// A footage server whose every mount requires `CAM_USER`/`CAM_PASS` (RTSP basic auth).
fn auth_server() -> FootageServer {
    FootageServer::start_with_auth(
        &[("vtest".into(), support::footage("vtest_h264.mp4"))],
        0,
        Some(BasicAuth {
            user: CAM_USER.into(),
            password: CAM_PASS.into(),
        }),
    )
    .unwrap()
}

fn with_credentials(url: &str, user: &str, password: &str) -> String {
    url.replace("rtsp://", &format!("rtsp://{user}:{password}@"))
}

/// Every form a password could leak in: as typed, percent-encoded and inside a basic-auth header.
fn secret_forms() -> Vec<String> {
    use base64::Engine as _;
    let b64 = |p: &str| base64::engine::general_purpose::STANDARD.encode(format!("{CAM_USER}:{p}"));
    vec![
        CAM_PASS.into(),
        WRONG_PASS.into(),
        CAM_PASS.to_lowercase(),
        WRONG_PASS.to_lowercase(),
        b64(CAM_PASS),
        b64(WRONG_PASS),
    ]
}

/// The log without its colour codes (which would split `camera=bad`, or a password, in two).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters… final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn assert_no_secret(text: &str, what: &str) {
    for secret in secret_forms() {
        assert!(
            !text.contains(&secret),
            "{what} contains the password (as {secret:?}):\n{text}"
        );
    }
}

#[test]
fn the_right_password_streams_from_a_server_that_requires_it() {
    let server = auth_server();
    let (p, _dir) = start(
        &[
            with_credentials(&server.url("vtest"), CAM_USER, CAM_PASS),
            // The same server refuses a client without credentials: the server really checks them.
            server.url("vtest"),
        ],
        5.0,
    );
    assert!(
        support::wait_until(DEADLINE, || cam(&p, 0).frames_analysed >= 4
            && cam(&p, 1).restarts >= 1),
        "{:?}",
        p.health()
    );
    let good = cam(&p, 0);
    assert_eq!(good.state, StreamState::Streaming, "{good:?}");
    assert_eq!(good.restarts, 0, "{good:?}");
    assert_eq!(good.last_error, None, "{good:?}");
    let refused = cam(&p, 1);
    assert_eq!(refused.frames_received, 0, "{refused:?}");
    assert!(
        refused
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("authentication failed (401)")),
        "{refused:?}"
    );
    assert_no_secret(&serde_json::to_string(&p.health()).unwrap(), "health");
    p.shutdown();
}

#[test]
fn a_wrong_password_is_a_clear_error_retried_with_backoff() {
    let server = auth_server();
    let backoff = Backoff {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(8),
        reset_after: Duration::from_secs(30),
    };
    let url = with_credentials(&server.url("vtest"), CAM_USER, WRONG_PASS);
    let (p, _dir) = start_cameras(
        &format!("[[cameras]]\nid = \"cam0\"\nurl = {url:?}\nfps = 4\nstall_seconds = 5\n"),
        backoff.clone(),
    );
    assert!(
        support::wait_until(DEADLINE, || cam(&p, 0).restarts >= 1),
        "{:?}",
        cam(&p, 0)
    );
    let first = Instant::now();
    let h = cam(&p, 0);
    assert!(
        h.last_error
            .as_deref()
            .is_some_and(|e| e.contains("authentication failed (401)")),
        "{h:?}"
    );
    assert!(
        matches!(h.state, StreamState::Backoff | StreamState::Connecting),
        "{h:?}"
    );
    // Retried, but not hammered: three more attempts wait at least half of initial·(1 + 2 + 4) between
    // them (equal jitter), 1.75 s; a supervisor that retried at once would get there in milliseconds.
    assert!(
        support::wait_until(DEADLINE, || cam(&p, 0).restarts >= 4),
        "{:?}",
        cam(&p, 0)
    );
    let took = first.elapsed();
    let least = (backoff.initial * (1 + 2 + 4)) / 2;
    assert!(
        took + Duration::from_millis(100) >= least,
        "4 failures within {took:?}, backoff allows no less than {least:?}"
    );
    let h = cam(&p, 0);
    assert_eq!(h.frames_received, 0, "{h:?}");
    let json = serde_json::to_string(&p.health()).unwrap();
    assert!(json.contains("authentication failed (401)"), "{json}");
    assert_no_secret(&json, "health");
    p.shutdown();
}

#[test]
fn passwords_stay_out_of_the_logs() {
    // The real binary at debug level, so every log line and every health line it prints is seen.
    let server = auth_server();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cams.toml");
    std::fs::write(
        &config,
        format!(
            "[runtime]\ndata_dir = {data:?}\nworkers = 1\n\
             [[cameras]]\nid = \"good\"\nurl = {good:?}\nfps = 1\n\
             [[cameras]]\nid = \"bad\"\nurl = {bad:?}\nfps = 1\n",
            data = dir.path(),
            good = with_credentials(&server.url("vtest"), CAM_USER, CAM_PASS),
            bad = with_credentials(&server.url("vtest"), CAM_USER, WRONG_PASS),
        ),
    )
    .unwrap();
    // The health lines come every 15 s: run past the first.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_streetwatch"))
        .args(["run", "--seconds", "17", "--config"])
        .arg(&config)
        .env("STREETWATCH_LOG", "debug")
        .current_dir(support::root())
        .output()
        .unwrap();
    let text = strip_ansi(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ));
    assert!(out.status.success(), "{text}");
    assert_no_secret(&text, "the log");
    // Not vacuous: the log did record the failure, with the camera's URL in its redacted form, and the
    // health of both cameras.
    let redacted = server.url("vtest").replace("rtsp://", "rtsp://***@");
    assert!(text.contains(&redacted), "no {redacted} in:\n{text}");
    assert!(
        text.lines().any(|l| l.contains("stream failed")
            && l.contains("camera=bad")
            && l.contains("authentication failed (401)")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.contains("camera health")
            && l.contains("camera=good")
            && l.contains("state=\"streaming\"")),
        "{text}"
    );
}

#[test]
fn keyframe_only_decodes_one_picture_per_gop_over_rtsp() {
    // The fixture (fixtures/README.md): 12.5 fps, 30.16 s, a keyframe every 2 s (GOP 25), so one play
    // is 377 pictures in 16 GOPs (the last one short).
    let footage = support::footage("parking_aisle_overhead_768x432.mp4");
    let (fps, seconds, gop_seconds) = (12.5, 30.16_f64, 2.0);
    let frames = (seconds * fps).round() as u64;
    let gops = (seconds / gop_seconds).ceil() as u64;
    assert_eq!(
        support::mp4_video_samples(&footage),
        (frames, gops),
        "the fixture is not what this test expects"
    );

    let server = FootageServer::start(&[("aisle".into(), footage)], 0).unwrap();
    let url = server.url("aisle");
    // A stall restart would split the play in two; stalls are another test's business, and a loaded
    // machine can hold up a camera thread (niced below inference) for seconds.
    let cameras = format!(
        "[[cameras]]\nid = \"keyframes\"\nurl = {url:?}\nfps = 4\nkeyframe_only = true\nstall_seconds = 60\n\
         [[cameras]]\nid = \"full\"\nurl = {url:?}\nfps = 4\nkeyframe_only = false\nstall_seconds = 60\n"
    );
    // The server plays the file once and ends the stream; the long first delay keeps the cameras from
    // starting a second play before the counts of the first are read.
    let backoff = Backoff {
        initial: Duration::from_secs(20),
        max: Duration::from_secs(20),
        reset_after: Duration::from_secs(1),
    };
    let (p, _dir) = start_cameras(&cameras, backoff);
    // One play takes the footage's length in real time, longer for a camera held up on a loaded
    // machine (full decoding was seen finishing 40 s after keyframes only). Each camera's counts are
    // read as it ends its first play, before its next one starts.
    let mut first_play: [Option<HealthSnapshot>; 2] = [None, None];
    let played = support::wait_until(Duration::from_secs(240), || {
        for (i, seen) in first_play.iter_mut().enumerate() {
            if seen.is_none() {
                let h = cam(&p, i);
                if h.restarts >= 1 {
                    *seen = Some(h);
                }
            }
        }
        first_play.iter().all(Option::is_some)
    });
    assert!(played, "{first_play:?} {:?}", p.health());
    p.shutdown();
    let [Some(key), Some(full)] = first_play else {
        unreachable!("both seen")
    };
    for h in [&key, &full] {
        assert_eq!(h.restarts, 1, "one play only: {h:?}");
        assert_eq!(
            h.last_error.as_deref(),
            Some("the server ended the stream"),
            "{h:?}"
        );
    }
    // Keyframes only: one decoded picture per GOP, and those are analysed.
    assert!(
        (gops - 1..=gops + 1).contains(&key.frames_decoded),
        "{} pictures decoded from {gops} GOPs: {key:?}",
        key.frames_decoded
    );
    assert!(
        key.frames_analysed >= gops / 2 && key.frames_analysed <= key.frames_decoded,
        "{key:?}"
    );
    // Full decoding of the same stream: every picture.
    assert!(
        full.frames_decoded >= frames * 95 / 100 && full.frames_decoded <= frames,
        "{} pictures decoded of {frames}: {full:?}",
        full.frames_decoded
    );
    assert!(full.frames_analysed > 0, "{full:?}");
}

#[test]
fn shutdown_does_not_wait_for_a_camera_pipeline_still_tearing_down() {
    // rtspsrc can take a long while to reach Null after a server ends or dies on a loaded machine (seen
    // here: minutes). Its appsink callback still holds the pool's frame sink; shutdown must not wait
    // for it, so the camera's analyser (and with it the incident channel) goes with the pool.
    use streetwatch::frame::Frame;
    use streetwatch::health::CameraHealth;
    use streetwatch::infer::{Detection, Detector};
    use streetwatch::pool::{Analyser, Pool, PoolConfig};
    use streetwatch::types::CameraId;

    struct Holds(#[allow(dead_code)] crossbeam::channel::Sender<()>);
    impl Analyser for Holds {
        fn analyse(&mut self, _: &Frame, _: &[Detection]) {}
    }
    let manifest = support::nanodet();
    let (tx, rx) = crossbeam::channel::unbounded::<()>();
    let health = Arc::new(CameraHealth::new(CameraId::new("cam0")));
    let config = PoolConfig {
        workers: 1,
        max_batch: 1,
        batch_wait: Duration::from_millis(1),
        motion: None,
    };
    let (pool, sink) = Pool::start(&config, vec![(health, Box::new(Holds(tx)))], || {
        Detector::new(manifest.clone(), 1, 0.35)
    })
    .unwrap();
    let stuck_pipeline_tap = sink.clone();
    drop(sink);
    pool.shutdown();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)),
        Err(crossbeam::channel::RecvTimeoutError::Disconnected),
        "the analyser outlived the pool's shutdown"
    );
    drop(stuck_pipeline_tap);
}
