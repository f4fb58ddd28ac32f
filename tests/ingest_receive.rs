//! The async RTSP receivers against real RTSP servers (gst-rtsp-server, in process or in a process of
//! its own that can be killed or frozen): units arrive in Annex B with self-contained keyframes at the
//! clip's GOP spacing; a refused password, a server that goes away or freezes are supervised exactly as
//! the GStreamer path supervises them; many cameras cost no thread each; stopping never waits on a server.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use streetwatch::config::SourceUrl;
use streetwatch::health::{CameraHealth, StreamState};
use streetwatch::ingest::{
    Backoff, BasicAuth, Codec, EncodedUnit, FootageServer, LatestKeyframes, ReceiveOptions,
    ReceiveSpec, Receivers, UnitSink,
};
use streetwatch::types::{CameraId, Clock, ManualClock, Timestamp};

/// Generous for a loaded 2-core machine: waits poll and return as soon as their condition holds.
const DEADLINE: Duration = Duration::from_secs(60);

/// `vtest_h264.mp4` (fixtures/README.md): 768×576, 10 fps, a keyframe every 20 pictures (GOP 2 s).
const VTEST_GOP: usize = 20;
const VTEST_SIZE: (i32, i32) = (768, 576);

/// The tests count this process's threads, so they run one at a time.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A sink that keeps what it is given, per camera: the decoder pool's place in these tests.
#[derive(Default)]
struct Recorder {
    units: Mutex<Vec<EncodedUnit>>,
    count: AtomicUsize,
}

impl UnitSink for Recorder {
    fn push(&self, unit: EncodedUnit) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.units.lock().unwrap().push(unit);
    }
}

impl Recorder {
    fn of(&self, camera: usize) -> Vec<EncodedUnit> {
        self.units
            .lock()
            .unwrap()
            .iter()
            .filter(|u| u.camera == camera)
            .cloned()
            .collect()
    }
    fn count_of(&self, camera: usize) -> usize {
        self.units
            .lock()
            .unwrap()
            .iter()
            .filter(|u| u.camera == camera)
            .count()
    }
    fn keyframes_of(&self, camera: usize) -> usize {
        self.units
            .lock()
            .unwrap()
            .iter()
            .filter(|u| u.camera == camera && u.keyframe)
            .count()
    }
}

fn quick_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(1),
        reset_after: Duration::from_secs(30),
    }
}

fn rtsp(url: &str) -> SourceUrl {
    SourceUrl::parse(url, &support::root()).unwrap()
}

fn spec(index: usize, url: &str, stall: Duration) -> ReceiveSpec {
    ReceiveSpec {
        index,
        url: rtsp(url),
        analysis_url: None,
        stall,
        health: Arc::new(CameraHealth::new(CameraId::new(&format!("cam{index}")))),
    }
}

struct Rig {
    receivers: Receivers,
    sink: Arc<Recorder>,
    keyframes: Arc<LatestKeyframes>,
    health: Vec<Arc<CameraHealth>>,
}

fn start(specs: Vec<ReceiveSpec>, backoff: Backoff) -> Rig {
    start_with(specs, backoff, Arc::new(ManualClock::at(Timestamp(1))))
}

fn start_with(specs: Vec<ReceiveSpec>, backoff: Backoff, clock: Arc<ManualClock>) -> Rig {
    let health = specs.iter().map(|s| s.health.clone()).collect();
    let sink = Arc::new(Recorder::default());
    let keyframes = Arc::new(LatestKeyframes::new(specs.len().max(2)));
    let receivers = Receivers::start(
        specs,
        sink.clone(),
        keyframes.clone(),
        ReceiveOptions {
            backoff,
            clock,
            ..ReceiveOptions::default()
        },
    )
    .unwrap();
    Rig {
        receivers,
        sink,
        keyframes,
        health,
    }
}

/// NAL unit types (H.264) of an Annex B unit, in order.
fn nal_types(data: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut i = 0;
    while i + 4 < data.len() {
        if data[i..i + 4] == [0, 0, 0, 1] {
            types.push(data[i + 4] & 0x1f);
            i += 4;
        } else {
            i += 1;
        }
    }
    types
}

/// Decodes one H.264 unit on its own, in a decoder that has seen nothing else; the picture's size.
fn decode_alone(data: &[u8]) -> Option<(i32, i32)> {
    let (pipeline, sink) = support::play_to_appsink(
        "appsrc name=src format=time caps=video/x-h264,stream-format=byte-stream,alignment=au \
         ! h264parse ! avdec_h264 ! appsink name=sink sync=false",
    );
    let src = pipeline
        .by_name("src")
        .unwrap()
        .dynamic_cast::<gst_app::AppSrc>()
        .unwrap();
    let mut buffer = gst::Buffer::from_slice(data.to_vec());
    buffer.get_mut().unwrap().set_pts(gst::ClockTime::ZERO);
    src.push_buffer(buffer).unwrap();
    src.end_of_stream().unwrap();
    let size = sink
        .try_pull_sample(gst::ClockTime::from_seconds(20))
        .and_then(|s| {
            let caps = s.caps()?.structure(0)?.to_owned();
            Some((caps.get("width").ok()?, caps.get("height").ok()?))
        });
    pipeline.set_state(gst::State::Null).unwrap();
    size
}

#[test]
fn units_arrive_in_annex_b_with_self_contained_keyframes_at_the_gop_spacing() {
    let _serial = one_at_a_time();
    let server =
        FootageServer::start(&[("vtest".into(), support::footage("vtest_h264.mp4"))], 0).unwrap();
    let clock = Arc::new(ManualClock::at(Timestamp(1_700_000_000_000)));
    let rig = start_with(
        vec![spec(0, &server.url("vtest"), Duration::from_secs(5))],
        quick_backoff(),
        clock.clone(),
    );
    // Four keyframes: three whole GOPs between them.
    assert!(
        support::wait_until(DEADLINE, || rig.sink.keyframes_of(0) >= 4),
        "{:?}",
        rig.health[0].snapshot(clock.now())
    );
    let h = rig.health[0].snapshot(clock.now());
    assert_eq!(h.state, StreamState::Streaming, "{h:?}");
    assert_eq!(h.restarts, 0, "{h:?}");
    assert_eq!(h.last_error, None, "{h:?}");
    rig.receivers.stop();
    assert_eq!(rig.health[0].state(), StreamState::Stopped);
    let units = rig.sink.of(0);
    // Every unit counts as the camera's liveness, and carries the injected clock's time.
    assert_eq!(
        rig.health[0].units_received.load(Ordering::Relaxed),
        units.len() as u64
    );
    assert_eq!(rig.health[0].last_frame_at(), Some(clock.now()));
    assert!(units.iter().all(|u| u.captured_at == clock.now()));
    assert!(units.iter().all(|u| u.codec == Codec::H264));

    // The stream starts at the file's start, a keyframe, and has one every GOP.
    let keys: Vec<usize> = (0..units.len()).filter(|&i| units[i].keyframe).collect();
    assert_eq!(keys[0], 0, "the first unit is not a keyframe: {keys:?}");
    for pair in keys.windows(2) {
        assert_eq!(pair[1] - pair[0], VTEST_GOP, "keyframes at {keys:?}");
    }
    // Annex B throughout; a keyframe opens with SPS and PPS, then its IDR slice; the others carry none.
    for (i, u) in units.iter().enumerate() {
        let types = nal_types(&u.data);
        assert_eq!(&u.data[..4], &[0, 0, 0, 1], "unit {i} is not Annex B");
        if u.keyframe {
            assert_eq!(&types[..2], &[7, 8], "keyframe {i}: NAL types {types:?}");
            assert!(types.contains(&5), "keyframe {i}: NAL types {types:?}");
        } else {
            assert!(
                !types.contains(&7) && !types.contains(&5),
                "unit {i}: {types:?}"
            );
        }
    }
    // A keyframe from mid-stream decodes with nothing before it: the shared decoders rely on that.
    assert_eq!(decode_alone(&units[keys[2]].data), Some(VTEST_SIZE));
    // The latest keyframe is kept for snapshots.
    let latest = rig.keyframes.latest(0).expect("a keyframe kept");
    assert!(latest.keyframe && latest.camera == 0);
    assert_eq!(decode_alone(&latest.data), Some(VTEST_SIZE));
}

// Distinctive credentials, so "absent" means something.
const CAM_USER: &str = "viewer7";
const CAM_PASS: &str = "Qz8-okapi-RIGHT-41";
const WRONG_PASS: &str = "Jx3-zebra-WRONG-96";

fn with_credentials(url: &str, user: &str, password: &str) -> String {
    url.replace("rtsp://", &format!("rtsp://{user}:{password}@"))
}

#[test]
fn a_refused_password_is_the_operators_401_wording_retried_with_backoff_and_never_shown() {
    let _serial = one_at_a_time();
    let server = FootageServer::start_with_auth(
        &[("vtest".into(), support::footage("vtest_h264.mp4"))],
        0,
        Some(BasicAuth {
            user: CAM_USER.into(),
            password: CAM_PASS.into(),
        }),
    )
    .unwrap();
    let url = server.url("vtest");
    let stall = Duration::from_secs(5);
    let backoff = Backoff {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(8),
        reset_after: Duration::from_secs(30),
    };
    let rig = start(
        vec![
            spec(0, &with_credentials(&url, CAM_USER, WRONG_PASS), stall),
            // The server really checks: the right password streams, none is refused.
            spec(1, &with_credentials(&url, CAM_USER, CAM_PASS), stall),
            spec(2, &url, stall),
        ],
        backoff.clone(),
    );
    let now = Timestamp(1);
    assert!(
        support::wait_until(DEADLINE, || rig.health[0].restarts.load(Ordering::Relaxed)
            >= 1
            && rig.health[2].restarts.load(Ordering::Relaxed) >= 1
            && rig.sink.count_of(1) > 0),
        "{:?}",
        rig.health
            .iter()
            .map(|h| h.snapshot(now))
            .collect::<Vec<_>>()
    );
    let first = Instant::now();
    for (camera, expected) in [
        (
            0,
            "authentication failed (401): the camera refused the user name and password in the URL",
        ),
        (
            2,
            "authentication failed (401): the camera requires a user name and password; the URL has none",
        ),
    ] {
        let h = rig.health[camera].snapshot(now);
        assert_eq!(h.last_error.as_deref(), Some(expected), "{h:?}");
        assert!(
            matches!(h.state, StreamState::Backoff | StreamState::Connecting),
            "{h:?}"
        );
    }
    assert_eq!(rig.health[1].state(), StreamState::Streaming);
    // Retried, not hammered: three more attempts wait at least half of initial·(1 + 2 + 4).
    assert!(support::wait_until(DEADLINE, || rig.health[0]
        .restarts
        .load(Ordering::Relaxed)
        >= 4));
    let least = backoff.initial * (1 + 2 + 4) / 2;
    assert!(
        first.elapsed() + Duration::from_millis(100) >= least,
        "4 failures within {:?}, backoff allows no less than {least:?}",
        first.elapsed()
    );
    assert_eq!(rig.sink.count_of(0), 0);
    let json = serde_json::to_string(
        &rig.health
            .iter()
            .map(|h| h.snapshot(now))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    for secret in [CAM_PASS, WRONG_PASS] {
        assert!(
            !json.contains(secret),
            "the password is in the health: {json}"
        );
    }
    rig.receivers.stop();
}

#[test]
fn a_server_that_goes_away_is_backed_off_and_streamed_again_when_it_returns() {
    let _serial = one_at_a_time();
    let vtest = support::footage("vtest_h264.mp4");
    let (server, port) = support::serve_footage(0, &[("cam", &vtest)]);
    let (other, other_port) = support::serve_footage(0, &[("cam", &vtest)]);
    let rig = start(
        vec![
            spec(
                0,
                &format!("rtsp://127.0.0.1:{port}/cam"),
                Duration::from_secs(5),
            ),
            spec(
                1,
                &format!("rtsp://127.0.0.1:{other_port}/cam"),
                Duration::from_secs(5),
            ),
        ],
        quick_backoff(),
    );
    let streaming = |i: usize| rig.health[i].state() == StreamState::Streaming;
    assert!(support::wait_until(DEADLINE, || streaming(0) && streaming(1)));

    drop(server);
    assert!(
        support::wait_until(DEADLINE, || rig.health[0].restarts.load(Ordering::Relaxed)
            >= 2),
        "{:?}",
        rig.health[0].snapshot(Timestamp(1))
    );
    let down = rig.health[0].snapshot(Timestamp(1));
    assert!(
        matches!(down.state, StreamState::Backoff | StreamState::Connecting),
        "{down:?}"
    );
    assert!(down.last_error.is_some(), "{down:?}");
    // The other camera runs on, untouched.
    let before = rig.sink.count_of(1);
    assert!(support::wait_until(DEADLINE, || rig.sink.count_of(1) >= before + 10));
    assert_eq!(rig.health[1].restarts.load(Ordering::Relaxed), 0);

    // Back on the same port: streaming again, in the same process.
    let _server = support::serve_footage(port, &[("cam", &vtest)]);
    let units = rig.sink.count_of(0);
    assert!(
        support::wait_until(DEADLINE, || streaming(0)
            && rig.sink.count_of(0) > units + 10),
        "{:?}",
        rig.health[0].snapshot(Timestamp(1))
    );
    rig.receivers.stop();
    drop(other);
}

/// Threads of this process whose name is `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn a_frozen_server_is_caught_by_the_watchdog_and_stop_does_not_wait_for_it() {
    let _serial = one_at_a_time();
    let vtest = support::footage("vtest_h264.mp4");
    let (server, port) = support::serve_footage(0, &[("cam", &vtest)]);
    let stall = Duration::from_secs(2);
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    let rig = start(
        (0..3).map(|i| spec(i, &url, stall)).collect(),
        quick_backoff(),
    );
    assert!(support::wait_until(DEADLINE, || rig
        .health
        .iter()
        .all(|h| h.state() == StreamState::Streaming)));

    // Frozen with its sockets open (SIGSTOP): no error, no end, only silence.
    let pid = server.0.id() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let mut seen_stalled = false;
    let caught = support::wait_until(DEADLINE, || {
        seen_stalled |= rig.health[0].state() == StreamState::Stalled;
        rig.health[0].restarts.load(Ordering::Relaxed) >= 1 && seen_stalled
    });
    let frozen = rig.health[0].snapshot(Timestamp(1));
    // Still frozen (reconnecting to it hangs in the handshake): stopping must not wait for it.
    let stopping = Instant::now();
    rig.receivers.stop();
    let stop_took = stopping.elapsed();
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(caught, "{frozen:?}");
    let error = frozen.last_error.unwrap();
    let seconds: f32 = error
        .strip_prefix("no frame for ")
        .and_then(|e| e.strip_suffix(" s (stalled)"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not the stall wording: {error}"));
    assert!(seconds >= stall.as_secs_f32(), "{error}");
    assert!(
        stop_took < Duration::from_secs(5),
        "stop took {stop_took:?}"
    );
    assert!(rig.health.iter().all(|h| h.state() == StreamState::Stopped));
    assert_eq!(
        threads_named("sw-rtsp"),
        0,
        "the runtime's threads outlived stop"
    );
}

#[test]
fn fifty_cameras_on_one_server_all_stream_without_a_thread_each() {
    let _serial = one_at_a_time();
    let vtest = support::footage("vtest_h264.mp4");
    let (_server, port) = support::serve_footage(0, &[("cam", &vtest)]);
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    let cameras = 50;
    let before = threads();
    let rig = start(
        (0..cameras)
            .map(|i| spec(i, &url, Duration::from_secs(30)))
            .collect(),
        quick_backoff(),
    );
    let all_streaming = support::wait_until(Duration::from_secs(120), || {
        rig.health
            .iter()
            .all(|h| h.state() == StreamState::Streaming)
    });
    let streaming = rig
        .health
        .iter()
        .filter(|h| h.state() == StreamState::Streaming)
        .count();
    assert!(all_streaming, "{streaming} of {cameras} streaming");
    assert!(support::wait_until(DEADLINE, || (0..cameras)
        .all(|i| rig.sink.keyframes_of(i) >= 1)));
    // Signed: threads of earlier tests (GStreamer's, ending lazily) may go meanwhile; a thread per
    // camera would still add 50 or more.
    let after = threads();
    let added = after as i64 - before as i64;
    assert!(
        added < 10,
        "{added} threads for {cameras} cameras ({before} → {after})"
    );
    assert_eq!(threads_named("sw-rtsp"), 2, "the runtime's two workers");
    rig.receivers.stop();
}

#[test]
fn cameras_come_and_go_while_the_others_stream() {
    let _serial = one_at_a_time();
    let server =
        FootageServer::start(&[("vtest".into(), support::footage("vtest_h264.mp4"))], 0).unwrap();
    let url = server.url("vtest");
    let stall = Duration::from_secs(5);
    let mut rig = start(
        vec![spec(0, &url, stall), spec(1, &url, stall)],
        quick_backoff(),
    );
    assert!(support::wait_until(DEADLINE, || (0..2)
        .all(|i| rig.keyframes.latest(i).is_some())));

    assert!(rig.receivers.remove(0));
    assert!(!rig.receivers.remove(0), "removed twice");
    assert_eq!(rig.health[0].state(), StreamState::Stopped);
    assert!(
        rig.keyframes.latest(0).is_none(),
        "a removed camera's keyframe kept"
    );
    // Once removed, nothing more of it arrives, while camera 1 runs on.
    let removed_at = rig.sink.count_of(0);
    let others = rig.sink.count_of(1);
    assert!(support::wait_until(DEADLINE, || rig.sink.count_of(1) >= others + 20));
    assert_eq!(rig.sink.count_of(0), removed_at);
    assert_eq!(rig.health[1].restarts.load(Ordering::Relaxed), 0);

    // Added back (a reload): it streams again.
    let again = spec(0, &url, stall);
    let health = again.health.clone();
    rig.receivers.add(again).unwrap();
    assert!(support::wait_until(DEADLINE, || health.state()
        == StreamState::Streaming
        && rig.sink.count_of(0) > removed_at));
    let twice = spec(1, &url, stall);
    assert!(rig.receivers.add(twice).is_err(), "camera 1 added twice");
    let file = ReceiveSpec {
        url: SourceUrl::File(support::footage("vtest_h264.mp4")),
        ..spec(2, &url, stall)
    };
    let refused = rig.receivers.add(file).unwrap_err().to_string();
    assert!(refused.contains("not an RTSP URL"), "{refused}");
    rig.receivers.stop();
}

#[test]
fn with_a_sub_stream_analysis_gets_it_and_snapshots_keep_the_main_stream() {
    let _serial = one_at_a_time();
    // Main: vtest at 768×576. Sub: another clip at 768×432, so each unit's stream can be told apart.
    let server = FootageServer::start_looping(
        &[
            ("main".into(), support::footage("vtest_h264.mp4")),
            (
                "sub".into(),
                support::footage("parking_aisle_overhead_768x432.mp4"),
            ),
        ],
        0,
    )
    .unwrap();
    let camera = ReceiveSpec {
        analysis_url: Some(rtsp(&server.url("sub"))),
        ..spec(0, &server.url("main"), Duration::from_secs(5))
    };
    let rig = start(vec![camera], quick_backoff());
    assert!(support::wait_until(DEADLINE, || rig.sink.keyframes_of(0)
        >= 2
        && rig.keyframes.latest(0).is_some()));
    assert_eq!(rig.health[0].state(), StreamState::Streaming);
    let units = rig.sink.of(0);
    let key = units.iter().find(|u| u.keyframe).unwrap();
    assert_eq!(
        decode_alone(&key.data),
        Some((768, 432)),
        "analysis is the sub-stream"
    );
    let snapshot = rig.keyframes.latest(0).unwrap();
    assert_eq!(
        decode_alone(&snapshot.data),
        Some(VTEST_SIZE),
        "snapshots are the main stream"
    );
    rig.receivers.stop();
    // Liveness counts the analysed stream only, not the main stream's units beside it.
    assert_eq!(
        rig.health[0].units_received.load(Ordering::Relaxed),
        rig.sink.count.load(Ordering::Relaxed) as u64
    );
}

#[test]
fn a_play_of_a_file_is_received_whole_and_its_end_is_the_server_ending_the_stream() {
    let _serial = one_at_a_time();
    let footage = support::footage("bikes.mp4");
    let (pictures, gops) = support::mp4_video_samples(&footage);
    assert!(
        pictures > 0 && gops > 1,
        "the fixture is not H.264 with several GOPs"
    );
    let server = FootageServer::start(&[("bikes".into(), footage)], 0).unwrap();
    // The server plays the file once and ends the stream; the long first delay keeps the camera from
    // starting a second play before the first is counted. No stall restart splits the play.
    let backoff = Backoff {
        initial: Duration::from_secs(60),
        max: Duration::from_secs(60),
        reset_after: Duration::from_secs(1),
    };
    let rig = start(
        vec![spec(0, &server.url("bikes"), Duration::from_secs(60))],
        backoff,
    );
    assert!(
        support::wait_until(Duration::from_secs(120), || rig.health[0]
            .restarts
            .load(Ordering::Relaxed)
            >= 1),
        "{:?}",
        rig.health[0].snapshot(Timestamp(1))
    );
    let h = rig.health[0].snapshot(Timestamp(1));
    assert_eq!(
        h.last_error.as_deref(),
        Some("the server ended the stream"),
        "{h:?}"
    );
    assert_eq!(h.state, StreamState::Backoff, "{h:?}");
    // Every picture of the file, each once; every keyframe flagged.
    assert_eq!(rig.sink.count_of(0) as u64, pictures, "{h:?}");
    assert_eq!(rig.sink.keyframes_of(0) as u64, gops, "{h:?}");
    rig.receivers.stop();
}
