//! The worker pool's logic with fake detectors behind its `BatchDetector` seam: latest frame wins, one
//! claim per camera, batches across cameras, bounded memory, a panic in a batch contained, and motion
//! gating (a still scene skips the model and reuses its detections).
//!
//! Frames carry a GStreamer buffer (as ingest's do) whose memory counts itself alive until the pool lets
//! go of the frame, so "frames alive" is measured by drops, not inferred from the pool's own counters.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam::channel::{Receiver, Sender, bounded};
use streetwatch::frame::{Frame, Pixels};
use streetwatch::health::CameraHealth;
use streetwatch::infer::{Detection, InferError};
use streetwatch::pool::{Analyser, BatchDetector, FrameSink, MotionGate, Pool, PoolConfig};
use streetwatch::types::{CameraId, Timestamp};

use support::wait_until;

const LIMIT: Duration = Duration::from_secs(10);

/// A frame's pixels: counted in `alive` from creation until the last reference is dropped.
struct Counted {
    bytes: [u8; 12],
    alive: Arc<AtomicUsize>,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A 2×2 frame of `camera`, told apart by its capture time `ms`.
fn frame(camera: usize, ms: i64, alive: &Arc<AtomicUsize>) -> Frame {
    gstreamer::init().unwrap();
    alive.fetch_add(1, Ordering::SeqCst);
    let buffer = gstreamer::Buffer::from_slice(Counted {
        bytes: [0; 12],
        alive: alive.clone(),
    });
    Frame {
        camera,
        captured_at: Timestamp(ms),
        received: std::time::Instant::now(),
        width: 2,
        height: 2,
        stride: 6,
        pixels: Pixels::Gst(buffer.into_mapped_buffer_readable().unwrap()),
    }
}

type Hook<T> = Arc<dyn Fn(&T) + Send + Sync>;

/// Runs `hook` on each batch (to block, sleep, check or panic), then finds nothing.
struct FakeDetector {
    max_batch: usize,
    hook: Hook<[Frame]>,
}

impl BatchDetector for FakeDetector {
    fn max_batch(&self) -> usize {
        self.max_batch
    }
    fn detect(
        &mut self,
        frames: &[Frame],
        out: &mut [Vec<Detection>],
    ) -> Result<usize, InferError> {
        (self.hook)(frames);
        for o in &mut out[..frames.len()] {
            o.clear();
        }
        Ok(frames.len())
    }
}

/// Records every frame it analyses as (camera, ms), after running `hook`.
struct Recorder {
    seen: Arc<Mutex<Vec<(usize, i64)>>>,
    hook: Hook<Frame>,
}

impl Analyser for Recorder {
    fn analyse(&mut self, frame: &Frame, _: &[Detection]) {
        (self.hook)(frame);
        self.seen
            .lock()
            .unwrap()
            .push((frame.camera, frame.captured_at.0));
    }
}

struct Harness {
    pool: Pool,
    sink: FrameSink,
    health: Vec<Arc<CameraHealth>>,
    seen: Arc<Mutex<Vec<(usize, i64)>>>,
    alive: Arc<AtomicUsize>,
}

impl Harness {
    fn start(
        cameras: usize,
        config: PoolConfig,
        detect: impl Fn(&[Frame]) + Send + Sync + 'static,
        analyse: impl Fn(&Frame) + Send + Sync + 'static,
    ) -> Self {
        Self::counting(Arc::default(), cameras, config, detect, analyse)
    }

    /// As `start`, counting its frames alive in `alive`.
    fn counting(
        alive: Arc<AtomicUsize>,
        cameras: usize,
        config: PoolConfig,
        detect: impl Fn(&[Frame]) + Send + Sync + 'static,
        analyse: impl Fn(&Frame) + Send + Sync + 'static,
    ) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let analyse: Hook<Frame> = Arc::new(analyse);
        let health: Vec<Arc<CameraHealth>> = (0..cameras)
            .map(|i| Arc::new(CameraHealth::new(CameraId::new(&format!("cam{i}")))))
            .collect();
        let slots = health
            .iter()
            .map(|h| {
                let a = Recorder {
                    seen: seen.clone(),
                    hook: analyse.clone(),
                };
                (h.clone(), Box::new(a) as Box<dyn Analyser>)
            })
            .collect();
        let detect: Hook<[Frame]> = Arc::new(detect);
        let max_batch = config.max_batch;
        let (pool, sink) = Pool::start(&config, slots, || {
            Ok(FakeDetector {
                max_batch,
                hook: detect.clone(),
            })
        })
        .unwrap();
        Self {
            pool,
            sink,
            health,
            seen,
            alive,
        }
    }

    fn push(&self, camera: usize, ms: i64) {
        self.sink.push(frame(camera, ms, &self.alive));
    }

    fn analysed(&self, camera: usize) -> u64 {
        self.health[camera].frames_analysed.load(Ordering::SeqCst)
    }

    fn dropped(&self, camera: usize) -> u64 {
        self.health[camera].frames_dropped.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<(usize, i64)> {
        self.seen.lock().unwrap().clone()
    }
}

fn config(workers: usize, max_batch: usize, batch_wait_ms: u64) -> PoolConfig {
    PoolConfig {
        workers,
        max_batch,
        batch_wait: Duration::from_millis(batch_wait_ms),
        motion: None,
    }
}

/// The test's end of a [`gate`]: each batch entering as (camera, ms) pairs, and the signal to let it go.
struct Gate {
    entered: Receiver<Vec<(usize, i64)>>,
    go: Sender<()>,
}

/// A detector hook that reports each batch and then waits to be let go.
fn gate() -> (impl Fn(&[Frame]) + Send + Sync + 'static, Gate) {
    let (entered_tx, entered_rx) = bounded(64);
    let (go_tx, go_rx) = bounded::<()>(64);
    let hook = move |frames: &[Frame]| {
        let batch = frames.iter().map(|f| (f.camera, f.captured_at.0)).collect();
        entered_tx.send(batch).unwrap();
        go_rx
            .recv_timeout(LIMIT)
            .expect("the test lets the batch go");
    };
    let gate = Gate {
        entered: entered_rx,
        go: go_tx,
    };
    (hook, gate)
}

/// A gated pool of one worker, held in its first batch: camera 0's frame 1.
fn held(cameras: usize, config: PoolConfig) -> (Harness, Gate) {
    let (hook, gate) = gate();
    let h = Harness::start(cameras, config, hook, |_| {});
    h.push(0, 1);
    assert_eq!(gate.entered.recv_timeout(LIMIT).unwrap(), vec![(0, 1)]);
    (h, gate)
}

#[test]
fn latest_frame_wins_and_each_replaced_frame_is_counted_dropped() {
    let (h, Gate { entered, go }) = held(1, config(1, 4, 0));
    // The worker holds frame 1; 2 and 3 are replaced in the slot before it comes back.
    h.push(0, 2);
    h.push(0, 3);
    h.push(0, 4);
    assert_eq!(h.dropped(0), 2);
    assert_eq!(
        h.alive.load(Ordering::SeqCst),
        2,
        "frame 1 in the worker, 4 in the slot"
    );
    go.send(()).unwrap();
    assert_eq!(entered.recv_timeout(LIMIT).unwrap(), vec![(0, 4)]);
    go.send(()).unwrap();
    assert!(wait_until(LIMIT, || h.analysed(0) == 2));
    assert_eq!(h.seen(), vec![(0, 1), (0, 4)]);
    assert_eq!(h.dropped(0), 2);
    assert!(wait_until(LIMIT, || h.alive.load(Ordering::SeqCst) == 0));
    h.pool.shutdown();
}

#[test]
fn a_batch_takes_frames_of_several_cameras_up_to_max_batch() {
    let (h, Gate { entered, go }) = held(6, config(1, 4, 200));
    // While camera 0's batch runs, five other cameras become ready: the next batch takes four of them
    // (max_batch), in the order they became ready, and the one after takes the fifth.
    for cam in 1..6 {
        h.push(cam, 1);
    }
    go.send(()).unwrap();
    let second = entered.recv_timeout(LIMIT).unwrap();
    go.send(()).unwrap();
    let third = entered.recv_timeout(LIMIT).unwrap();
    go.send(()).unwrap();
    assert_eq!(second, vec![(1, 1), (2, 1), (3, 1), (4, 1)]);
    assert_eq!(third, vec![(5, 1)]);
    assert!(wait_until(LIMIT, || (0..6).all(|c| h.analysed(c) == 1)));
    let stats = h.pool.stats();
    assert_eq!(stats.batches.load(Ordering::SeqCst), 3);
    assert_eq!(stats.frames_analysed.load(Ordering::SeqCst), 6);
    h.pool.shutdown();
}

#[test]
fn a_camera_is_never_claimed_by_two_workers_at_once() {
    const CAMERAS: usize = 3;
    const FRAMES: i64 = 300;
    // Per camera: raised when its frame enters a batch, lowered when its analyser is done. A second
    // claim on a camera while the first is held finds it raised.
    let busy: Arc<Vec<AtomicUsize>> = Arc::new((0..CAMERAS).map(|_| AtomicUsize::new(0)).collect());
    let overlaps = Arc::new(AtomicUsize::new(0));
    let (in_flight, most_in_flight) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let detect = {
        let (busy, overlaps) = (busy.clone(), overlaps.clone());
        let (in_flight, most) = (in_flight.clone(), most_in_flight.clone());
        move |frames: &[Frame]| {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            for f in frames {
                if busy[f.camera].fetch_add(1, Ordering::SeqCst) != 0 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
            }
            std::thread::sleep(Duration::from_millis(2));
            in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    };
    let analyse = {
        let busy = busy.clone();
        move |f: &Frame| {
            busy[f.camera].fetch_sub(1, Ordering::SeqCst);
        }
    };
    // More workers than cameras: every camera is contended.
    let h = Arc::new(Harness::start(CAMERAS, config(4, 2, 1), detect, analyse));
    let producers: Vec<_> = (0..CAMERAS)
        .map(|cam| {
            let h = h.clone();
            std::thread::spawn(move || {
                for ms in 0..FRAMES {
                    h.push(cam, ms);
                    std::thread::sleep(Duration::from_micros(300));
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    // Every frame pushed ends analysed or dropped.
    assert!(wait_until(LIMIT, || (0..CAMERAS)
        .all(|c| h.analysed(c) + h.dropped(c) == FRAMES as u64)));
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "a camera was claimed twice"
    );
    assert!(
        most_in_flight.load(Ordering::SeqCst) >= 2,
        "workers never ran side by side: the test proved nothing"
    );
    let seen = h.seen();
    for cam in 0..CAMERAS {
        let mine: Vec<i64> = seen.iter().filter(|s| s.0 == cam).map(|s| s.1).collect();
        // A claim without the camera's analyser would count the frame analysed without analysing it.
        assert_eq!(mine.len() as u64, h.analysed(cam), "camera {cam}");
        assert!(
            mine.len() >= 10,
            "camera {cam}: only {} analysed",
            mine.len()
        );
        // One claim at a time also means a camera's frames are analysed in order.
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "camera {cam}: {mine:?}"
        );
    }
    let h = Arc::into_inner(h).unwrap();
    h.pool.shutdown();
}

#[test]
fn frames_alive_stay_within_one_per_camera_plus_one_batch_per_worker() {
    const CAMERAS: usize = 8;
    const WORKERS: usize = 2;
    const MAX_BATCH: usize = 3;
    const PRODUCERS: usize = 2;
    const FRAMES: i64 = 1500;
    // The design (src/pool/mod.rs): one frame per camera in its slot, one batch per worker. Each
    // producer also holds the frame it is pushing, so at most one more each.
    const BOUND: usize = CAMERAS + WORKERS * MAX_BATCH + PRODUCERS;
    let (alive, alive_seen) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let detect = {
        let (alive, alive_seen) = (alive.clone(), alive_seen.clone());
        move |_: &[Frame]| {
            alive_seen.fetch_max(alive.load(Ordering::SeqCst), Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(3));
        }
    };
    let h = Arc::new(Harness::counting(
        alive,
        CAMERAS,
        config(WORKERS, MAX_BATCH, 2),
        detect,
        |_| {},
    ));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let h = h.clone();
            std::thread::spawn(move || {
                let mut most = 0;
                for ms in 0..FRAMES {
                    for cam in (p..CAMERAS).step_by(PRODUCERS) {
                        h.push(cam, ms);
                        most = most.max(h.alive.load(Ordering::SeqCst));
                    }
                }
                most
            })
        })
        .collect();
    let most_by_producers = producers
        .into_iter()
        .map(|p| p.join().unwrap())
        .max()
        .unwrap();
    let most = most_by_producers.max(alive_seen.load(Ordering::SeqCst));
    assert!(
        most <= BOUND,
        "{most} frames alive at once, the bound is {BOUND}"
    );
    assert!(
        (0..CAMERAS).map(|c| h.dropped(c)).sum::<u64>() > 0,
        "the pool was never saturated: the test proved nothing"
    );
    assert!(wait_until(LIMIT, || (0..CAMERAS)
        .all(|c| h.analysed(c) + h.dropped(c) == FRAMES as u64)));
    assert_eq!(
        h.alive.load(Ordering::SeqCst),
        0,
        "a frame outlived its analysis"
    );
    let h = Arc::into_inner(h).unwrap();
    h.pool.shutdown();
}

#[test]
fn a_detector_panic_is_contained_released_and_counted() {
    let h = Harness::start(
        2,
        config(1, 2, 50),
        |frames: &[Frame]| {
            if frames.iter().any(|f| f.captured_at.0 == 666) {
                panic!("fake detector fails on frame 666");
            }
        },
        |_| {},
    );
    h.push(0, 1);
    h.push(1, 1);
    assert!(wait_until(LIMIT, || h.analysed(0) == 1 && h.analysed(1) == 1));
    // Each camera's 666 is in a batch that panics (together or apart, depending on timing).
    h.push(0, 666);
    h.push(1, 666);
    assert!(
        wait_until(LIMIT, || h
            .health
            .iter()
            .all(|x| x.worker_panics.load(Ordering::SeqCst) == 1)),
        "panics counted: {:?}",
        h.health
            .iter()
            .map(|x| x.worker_panics.load(Ordering::SeqCst))
            .collect::<Vec<_>>()
    );
    // The only worker lives on, and both cameras were released: their next frames are analysed.
    h.push(0, 2);
    h.push(1, 2);
    assert!(
        wait_until(LIMIT, || h.analysed(0) == 2 && h.analysed(1) == 2),
        "next frames analysed: {} and {} of 2",
        h.analysed(0),
        h.analysed(1)
    );
    let mut seen = h.seen();
    seen.sort();
    assert_eq!(seen, vec![(0, 1), (0, 2), (1, 1), (1, 2)]);
    assert!(wait_until(LIMIT, || h.alive.load(Ordering::SeqCst) == 0));
    for x in &h.health {
        assert_eq!(x.worker_panics.load(Ordering::SeqCst), 1);
        assert_eq!(x.snapshot(Timestamp(0)).worker_panics, 1);
    }
    h.pool.shutdown();
}

#[test]
fn an_analyser_panic_is_counted_for_its_camera_and_its_analyser_carries_on() {
    let h = Harness::start(
        2,
        config(1, 2, 50),
        |_: &[Frame]| {},
        |f: &Frame| {
            if f.camera == 0 && f.captured_at.0 == 666 {
                panic!("fake analyser fails on camera 0's frame 666");
            }
        },
    );
    h.push(0, 666);
    h.push(1, 666);
    assert!(wait_until(LIMIT, || h.health[0]
        .worker_panics
        .load(Ordering::SeqCst)
        == 1));
    h.push(0, 2);
    h.push(1, 2);
    assert!(
        wait_until(LIMIT, || h.seen().len() == 3),
        "seen {:?}",
        h.seen()
    );
    let mut seen = h.seen();
    seen.sort();
    // Camera 1 shared the batch and lost nothing; camera 0's analyser (the same one) goes on.
    assert_eq!(seen, vec![(0, 2), (1, 2), (1, 666)]);
    assert_eq!(h.health[1].worker_panics.load(Ordering::SeqCst), 0);
    assert_eq!((h.analysed(0), h.analysed(1)), (1, 2));
    h.pool.shutdown();
}

/// Marks each detection with the capture time of the frame the model ran on, so an analyser can tell a
/// fresh inference from a reused one; records the frames it ran on.
struct Stamping {
    ran_on: Arc<Mutex<Vec<i64>>>,
}

impl BatchDetector for Stamping {
    fn max_batch(&self) -> usize {
        4
    }
    fn detect(
        &mut self,
        frames: &[Frame],
        out: &mut [Vec<Detection>],
    ) -> Result<usize, InferError> {
        for (f, o) in frames.iter().zip(out.iter_mut()) {
            self.ran_on.lock().unwrap().push(f.captured_at.0);
            o.clear();
            o.push(Detection {
                class: 0,
                score: f.captured_at.0 as f32,
                bbox: streetwatch::infer::BBox {
                    x1: 0.4,
                    y1: 0.4,
                    x2: 0.6,
                    y2: 0.9,
                },
            });
        }
        Ok(frames.len())
    }
}

/// Records (frame time, the time stamped on its detections).
struct StampReader(Arc<Mutex<Vec<(i64, i64)>>>);

impl Analyser for StampReader {
    fn analyse(&mut self, frame: &Frame, detections: &[Detection]) {
        let stamp = detections.first().map_or(-1, |d| d.score as i64);
        self.0.lock().unwrap().push((frame.captured_at.0, stamp));
    }
}

/// A 320×180 street: a grey road with a dark figure 12×30 px whose left edge is at `figure_x`.
fn street(ms: i64, figure_x: u32, noise: u8) -> Frame {
    let img = image::RgbImage::from_fn(320, 180, |x, y| {
        if (figure_x..figure_x + 12).contains(&x) && (100..130).contains(&y) {
            image::Rgb([40, 35, 30])
        } else {
            // The sensor's noise: a level or two that differs from frame to frame.
            let n = ((x * 7 + y * 13 + ms as u32) % 3) as u8 * noise;
            image::Rgb([120 + n, 118 + n, 110 + n])
        }
    });
    Frame::from_rgb_image(0, Timestamp(ms), img)
}

/// Feeds `frames` one at a time (each analysed before the next, so none is replaced) to one camera;
/// returns the frame times the model ran on, (frame, detections' time) per analysed frame, and the
/// camera's motion_skipped.
fn gated(motion: Option<MotionGate>, frames: Vec<Frame>) -> (Vec<i64>, Vec<(i64, i64)>, u64) {
    let ran_on = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let health = Arc::new(CameraHealth::new(CameraId::new("still")));
    let config = PoolConfig {
        motion,
        ..config(1, 4, 0)
    };
    let (pool, sink) = Pool::start(
        &config,
        vec![(
            health.clone(),
            Box::new(StampReader(seen.clone())) as Box<dyn Analyser>,
        )],
        || {
            Ok(Stamping {
                ran_on: ran_on.clone(),
            })
        },
    )
    .unwrap();
    for (i, f) in frames.into_iter().enumerate() {
        sink.push(f);
        assert!(wait_until(LIMIT, || health
            .frames_analysed
            .load(Ordering::SeqCst)
            == i as u64 + 1));
    }
    let skipped = health.motion_skipped.load(Ordering::SeqCst);
    assert_eq!(pool.stats().motion_skipped.load(Ordering::SeqCst), skipped);
    pool.shutdown();
    let ran_on = ran_on.lock().unwrap().clone();
    let seen = seen.lock().unwrap().clone();
    (ran_on, seen, skipped)
}

#[test]
fn a_still_scene_skips_the_model_and_its_analyser_gets_the_last_detections() {
    let gate = MotionGate {
        threshold: 12,
        refresh_ms: 10_000,
    };
    let frames = || {
        vec![
            street(0, 100, 1),      // the first frame: the model runs
            street(500, 100, 1),    // the same scene, other noise: skipped
            street(1_000, 100, 1),  // skipped
            street(1_500, 140, 1),  // the figure walked 40 px: the model runs
            street(2_000, 140, 1),  // skipped, with the detections of 1 500
            street(11_400, 140, 1), // still, but 9.9 s since the model ran: skipped
            street(11_500, 140, 1), // 10 s since the model ran: the refresh runs it
        ]
    };
    let (ran_on, seen, skipped) = gated(Some(gate), frames());
    assert_eq!(ran_on, vec![0, 1_500, 11_500]);
    assert_eq!(
        seen,
        vec![
            (0, 0),
            (500, 0),
            (1_000, 0),
            (1_500, 1_500),
            (2_000, 1_500),
            (11_400, 1_500),
            (11_500, 11_500)
        ]
    );
    assert_eq!(skipped, 4);
    // Without the gate every frame goes through the model.
    let (ran_on, seen, skipped) = gated(None, frames());
    assert_eq!(ran_on, vec![0, 500, 1_000, 1_500, 2_000, 11_400, 11_500]);
    assert!(seen.iter().all(|(t, stamp)| t == stamp));
    assert_eq!(skipped, 0);
}
