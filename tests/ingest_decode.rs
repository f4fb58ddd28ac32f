//! The shared decoder pool and admission before decode, with real GStreamer decoders and a real worker
//! pool (its detector a test double that finds nothing, optionally slow): keyframes of committed clips are
//! fed as a receiver would, and what comes out of the pool is compared with the clips decoded alone.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam::channel::{Receiver, Sender, unbounded};
use streetwatch::frame::Frame;
use streetwatch::health::CameraHealth;
use streetwatch::infer::Detection;
use streetwatch::ingest::{
    Codec, DecodeOptions, DecodeSpec, DecoderPool, EncodedUnit, Pacing, UnitSink,
};
use streetwatch::pool::{Analyser, Pool, PoolConfig};
use streetwatch::types::{CameraId, Timestamp};

use support::keyframes::{decoded_alone, keyframes};
use support::{SlowDetector, footage, wait_until};

const LIMIT: Duration = Duration::from_secs(60);

/// What an analysed frame looked like.
struct Seen {
    camera: usize,
    captured_ms: i64,
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

/// Sends every analysed frame (packed RGB) to the test.
struct Recorder {
    tx: Sender<Seen>,
}

impl Analyser for Recorder {
    fn analyse(&mut self, frame: &Frame, _: &[Detection]) {
        let _ = self.tx.send(Seen {
            camera: frame.camera,
            captured_ms: frame.captured_at.0,
            width: frame.width,
            height: frame.height,
            rgb: frame.to_rgb_image().into_raw(),
        });
    }
}

struct Rig {
    decoders: DecoderPool,
    sink: Arc<dyn UnitSink>,
    pool: Pool,
    health: Vec<Arc<CameraHealth>>,
    seen: Receiver<Seen>,
}

impl Rig {
    /// `cameras` cameras of `fps` analysed at `width`, through `decoders` decoder threads, into a pool of one
    /// worker taking one frame per `detect_delay`.
    fn start(cameras: usize, fps: f32, width: u32, decoders: usize, detect_delay: Duration) -> Rig {
        let (tx, seen) = unbounded();
        let health: Vec<Arc<CameraHealth>> = (0..cameras)
            .map(|i| Arc::new(CameraHealth::new(CameraId::new(&format!("cam-{i}")))))
            .collect();
        let config = PoolConfig {
            workers: 1,
            max_batch: 1,
            batch_wait: Duration::ZERO,
            // Every frame reaches the (throttled) detector.
            motion: None,
        };
        let (pool, frames) = Pool::start(
            &config,
            health
                .iter()
                .map(|h| {
                    let a: Box<dyn Analyser> = Box::new(Recorder { tx: tx.clone() });
                    (h.clone(), a)
                })
                .collect(),
            || {
                Ok(SlowDetector {
                    delay: detect_delay,
                    batch: 1,
                })
            },
        )
        .unwrap();
        let specs = health
            .iter()
            .enumerate()
            .map(|(index, h)| DecodeSpec {
                index,
                fps,
                width,
                health: h.clone(),
                sink: frames.clone(),
            })
            .collect();
        let opts = DecodeOptions {
            decoders,
            // The pool's one worker takes one frame a round.
            room: 1,
            pacing: Pacing::Realtime,
            timeout: Duration::from_secs(10),
        };
        let (decoders, sink) = DecoderPool::start(specs, cameras, opts, pool.observer()).unwrap();
        Rig {
            decoders,
            sink,
            pool,
            health,
            seen,
        }
    }

    fn push(&self, camera: usize, codec: Codec, data: &Bytes, captured_ms: i64) {
        self.sink.push(EncodedUnit {
            camera,
            codec,
            keyframe: true,
            data: data.clone(),
            captured_at: Timestamp(captured_ms),
            received: Instant::now(),
        });
    }

    fn next_frame(&self) -> Seen {
        self.seen
            .recv_timeout(LIMIT)
            .expect("a decoded frame reaches analysis")
    }

    fn total(&self, counter: impl Fn(&CameraHealth) -> u64) -> u64 {
        self.health.iter().map(|h| counter(h)).sum()
    }

    fn stop(self) {
        self.decoders.stop();
        self.pool.shutdown();
    }
}

fn decoded(h: &CameraHealth) -> u64 {
    h.frames_decoded.load(Ordering::Relaxed)
}
fn skipped(h: &CameraHealth) -> u64 {
    h.decode_skipped.load(Ordering::Relaxed)
}
fn analysed(h: &CameraHealth) -> u64 {
    h.frames_analysed.load(Ordering::Relaxed)
}

#[test]
fn keyframes_of_two_clips_interleaved_through_one_decoder_match_each_clip_decoded_alone() {
    const WIDTH: u32 = 320;
    let clips = [
        footage("vtest_h264.mp4"), // 768×576
        footage("bikes.mp4"),      // 640×272: every switch renegotiates the decoder
    ];
    let units: Vec<Vec<Bytes>> = clips
        .iter()
        .map(|c| keyframes(c, Codec::H264).into_iter().take(5).collect())
        .collect();
    let alone: Vec<_> = clips
        .iter()
        .map(|c| decoded_alone(c, Codec::H264, WIDTH))
        .collect();
    assert!(
        units.iter().all(|u| u.len() >= 3),
        "each clip has keyframes"
    );

    // One decoder thread, so every keyframe goes through the same pipeline.
    let rig = Rig::start(2, 1.0, WIDTH, 1, Duration::ZERO);
    for k in 0..units[0].len().min(units[1].len()) {
        for (camera, clip) in units.iter().enumerate() {
            // A period apart: every keyframe is due.
            rig.push(camera, Codec::H264, &clip[k], 10_000 + k as i64 * 1000);
            let seen = rig.next_frame();
            assert_eq!(
                (seen.camera, seen.captured_ms),
                (camera, 10_000 + k as i64 * 1000)
            );
            let (w, h, rgb) = &alone[camera][k];
            assert_eq!(
                (seen.width, seen.height),
                (*w, *h),
                "clip {camera} keyframe {k}"
            );
            assert!(
                seen.rgb == *rgb,
                "clip {camera} keyframe {k}: the shared decoder's picture differs from the clip decoded alone"
            );
        }
    }
    assert_eq!(rig.decoders.stats().failures.load(Ordering::Relaxed), 0);
    rig.stop();
}

#[test]
fn an_h265_stream_decodes_to_pictures_of_the_expected_size() {
    const WIDTH: u32 = 192;
    let clip = footage("vtest_h265_384x288.mp4");
    let units = keyframes(&clip, Codec::H265);
    let alone = decoded_alone(&clip, Codec::H265, WIDTH);
    assert!(units.len() >= 3, "a keyframe per second over 4 s");

    let rig = Rig::start(1, 1.0, WIDTH, 1, Duration::ZERO);
    for (k, unit) in units.iter().enumerate() {
        rig.push(0, Codec::H265, unit, k as i64 * 1000);
        let seen = rig.next_frame();
        // 384×288 at width 192 keeps the 4:3 picture.
        assert_eq!((seen.width, seen.height), (192, 144), "keyframe {k}");
        let (lo, hi) = seen
            .rgb
            .iter()
            .fold((u8::MAX, u8::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(
            hi - lo > 100,
            "keyframe {k} is a picture, not a blank ({lo}..{hi})"
        );
        assert!(
            seen.rgb == alone[k].2,
            "keyframe {k} differs from the clip decoded alone"
        );
    }
    rig.stop();
}

#[test]
fn under_overload_every_camera_keeps_a_fair_share_and_the_rest_is_dropped_encoded() {
    const CAMERAS: usize = 40;
    const SECONDS: u64 = 20;
    let units = keyframes(&footage("vtest_h264.mp4"), Codec::H264);
    // One worker taking a frame per 75 ms analyses ~13 of the 40 keyframes a second.
    let rig = Rig::start(CAMERAS, 1.0, 160, 2, Duration::from_millis(75));
    let start = Instant::now();
    let mut pushed = 0u64;
    // Each camera sends a keyframe a second, the cameras spread evenly over the second.
    for tick in 0..SECONDS * CAMERAS as u64 {
        let at = Duration::from_millis(tick * 1000 / CAMERAS as u64);
        if let Some(wait) = at.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let camera = (tick % CAMERAS as u64) as usize;
        let ms = 1_000_000 + start.elapsed().as_millis() as i64;
        rig.push(camera, Codec::H264, &units[tick as usize % units.len()], ms);
        pushed += 1;
    }
    // Every keyframe ends decoded or dropped encoded; each decoded one reaches analysis or its slot.
    assert!(
        wait_until(LIMIT, || rig.total(decoded) + rig.total(skipped) == pushed),
        "keyframes unaccounted for: {pushed} pushed, {} decoded, {} skipped",
        rig.total(decoded),
        rig.total(skipped)
    );
    let dropped = |h: &CameraHealth| h.frames_dropped.load(Ordering::Relaxed);
    assert!(
        wait_until(LIMIT, || rig.total(analysed) + rig.total(dropped)
            == rig.total(decoded)),
        "decoded frames neither analysed nor dropped by the pool"
    );
    let dropped_in_pool = rig.total(dropped);
    let counts: Vec<u64> = rig.health.iter().map(|h| analysed(h)).collect();
    let mean = counts.iter().sum::<u64>() as f64 / CAMERAS as f64;
    let (least, most) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    eprintln!("analysed per camera: mean {mean:.1}, min {least}, max {most}; {counts:?}");
    // Overloaded for real: well under half the keyframes were analysed.
    assert!(
        (rig.total(analysed) as f64) < 0.5 * pushed as f64,
        "the pool was not overloaded"
    );
    for (camera, &n) in counts.iter().enumerate() {
        assert!(
            n as f64 >= 0.5 * mean,
            "camera {camera} got {n} frames analysed, under half the mean {mean:.1}"
        );
    }
    // The rest was dropped before decoding: decoders did not decode pictures only for the pool to drop.
    assert!(rig.total(skipped) > 0);
    assert!(
        dropped_in_pool * 10 <= rig.total(decoded),
        "{dropped_in_pool} decoded frames were dropped by the pool out of {}",
        rig.total(decoded)
    );
    rig.stop();
}

#[test]
fn keyframes_that_are_not_due_are_never_decoded() {
    let units = keyframes(&footage("bikes.mp4"), Codec::H264);
    // fps 1: a keyframe per second at most.
    let rig = Rig::start(1, 1.0, 160, 1, Duration::ZERO);
    let settled = |pushed: u64| {
        assert!(
            wait_until(LIMIT, || decoded(&rig.health[0]) + skipped(&rig.health[0])
                == pushed),
            "keyframe {pushed} neither decoded nor dropped"
        );
    };
    // Ten keyframes a second for 10 s, each settled before the next, so only due-ness decides.
    let mut pushed = 0;
    for k in 0..=100 {
        rig.push(0, Codec::H264, &units[k % units.len()], k as i64 * 100);
        pushed += 1;
        settled(pushed);
    }
    let times: Vec<i64> = std::iter::from_fn(|| rig.seen.recv_timeout(Duration::from_secs(5)).ok())
        .take(decoded(&rig.health[0]) as usize)
        .map(|s| s.captured_ms)
        .collect();
    let n = decoded(&rig.health[0]);
    eprintln!("decoded at {times:?}");
    assert_eq!(
        times.len() as u64,
        n,
        "every decoded keyframe reached analysis"
    );
    assert_eq!(rig.health[0].frames_received.load(Ordering::Relaxed), n);
    // 10 s at 1 fps: ten periods, plus the first keyframe.
    assert!(
        (10..=11).contains(&n),
        "{n} keyframes decoded in 10 s at 1 fps"
    );
    assert_eq!(skipped(&rig.health[0]), 101 - n);
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= 500,
            "two frames within half a period: {pair:?}"
        );
    }

    // Keyframes as slow as the rate, arriving up to a tenth of a period early or late: every one decoded.
    let before = n;
    for k in 0..10i64 {
        let jitter = if k % 2 == 0 { 100 } else { -100 };
        rig.push(0, Codec::H264, &units[0], 20_000 + k * 1000 + jitter);
        pushed += 1;
        settled(pushed);
    }
    assert_eq!(
        decoded(&rig.health[0]) - before,
        10,
        "a keyframe was lost to jitter"
    );
    rig.stop();
}

#[test]
fn delta_units_and_unknown_cameras_are_ignored_and_a_removed_camera_gets_nothing() {
    let units = keyframes(&footage("bikes.mp4"), Codec::H264);
    let rig = Rig::start(2, 1.0, 160, 1, Duration::ZERO);
    let mut delta = EncodedUnit {
        camera: 0,
        codec: Codec::H264,
        keyframe: false,
        data: units[0].clone(),
        captured_at: Timestamp(0),
        received: Instant::now(),
    };
    rig.sink.push(delta.clone());
    delta.camera = 7; // beyond the capacity
    delta.keyframe = true;
    rig.sink.push(delta);
    rig.decoders.remove(1);
    rig.push(1, Codec::H264, &units[0], 0);
    // A keyframe of camera 0 after them is the first and only picture out.
    rig.push(0, Codec::H264, &units[1], 0);
    assert_eq!(rig.next_frame().camera, 0);
    assert!(rig.seen.recv_timeout(Duration::from_secs(1)).is_err());
    assert_eq!(rig.total(decoded), 1);
    assert_eq!(
        rig.total(skipped),
        0,
        "ignored units are not admission decisions"
    );
    rig.stop();
}

#[test]
fn a_keyframe_that_gives_no_picture_is_counted_and_the_decoder_carries_on() {
    let units = keyframes(&footage("bikes.mp4"), Codec::H264);
    let rig = Rig::start(1, 1.0, 160, 1, Duration::ZERO);
    // Not H.264 at all: the parser finds no picture in it.
    rig.push(0, Codec::H264, &Bytes::from(vec![0x5a; 4096]), 0);
    assert!(
        wait_until(LIMIT, || rig
            .decoders
            .stats()
            .failures
            .load(Ordering::Relaxed)
            == 1),
        "the failed keyframe is counted"
    );
    // The same decoder thread decodes the camera's next keyframe.
    rig.push(0, Codec::H264, &units[0], 1000);
    assert_eq!(rig.next_frame().captured_ms, 1000);
    assert_eq!(decoded(&rig.health[0]), 1);
    rig.stop();
}
