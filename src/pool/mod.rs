//! The worker pool between ingest and analysis, lock-free on the frame path.
//!
//! Each camera has a one-frame slot (latest frame wins; a replaced frame is counted as dropped) and a
//! `scheduled` flag. A camera whose flag goes up is put on the ready queue once; a worker that takes it off
//! holds the claim: it takes the frame and the camera's analyser (which travels with the claim, so
//! per-camera state is never shared and never locked), runs one batched inference for every camera it
//! claimed, analyses, then releases. Memory is bounded by construction: one frame per camera in slots, one
//! batch per worker, and a ready queue no longer than the number of cameras.
//!
//! With a [`MotionGate`], a frame whose scene has not changed since its camera's last inference skips the
//! model and is analysed with that inference's detections (see [`motion`]).
//!
//! A panic while a batch is processed (in the detector or an analyser) is caught in the worker: the frames
//! it cost are counted per camera in [`CameraHealth::worker_panics`] and logged, every claim is released as
//! usual, and the worker takes the next batch. A worker never dies with cameras claimed.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};
use crossbeam::queue::ArrayQueue;

use crate::frame::Frame;
use crate::health::CameraHealth;
use crate::histogram::Histogram;
use crate::infer::{Detection, Detector, InferError};

mod motion;

pub use motion::MotionGate;
use motion::{MotionState, Signature};

/// What a camera does with its detections. Owned by one worker at a time.
pub trait Analyser: Send {
    fn analyse(&mut self, frame: &Frame, detections: &[Detection]);
}

/// What a worker runs on its batch: the real one is [`Detector`] (ONNX Runtime); tests put fakes here to
/// exercise the pool's logic alone. One per worker, never shared; the worker is generic over it, so the
/// call is static.
pub trait BatchDetector: Send + 'static {
    /// Most frames per call.
    fn max_batch(&self) -> usize;
    /// `out[i]` receives frame i's detections; returns the number of model inputs run.
    fn detect(&mut self, frames: &[Frame], out: &mut [Vec<Detection>])
    -> Result<usize, InferError>;
}

impl BatchDetector for Detector {
    fn max_batch(&self) -> usize {
        Detector::max_batch(self)
    }
    fn detect(
        &mut self,
        frames: &[Frame],
        out: &mut [Vec<Detection>],
    ) -> Result<usize, InferError> {
        Detector::detect(self, frames, out)
    }
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub workers: usize,
    pub max_batch: usize,
    /// Once a worker holds one frame, how long it waits for more to fill a batch.
    pub batch_wait: Duration,
    /// Skip the model on still scenes; `None` runs it on every frame.
    pub motion: Option<MotionGate>,
}

/// Throughput and latency, shared lock-free between workers and readers.
#[derive(Default)]
pub struct PoolStats {
    pub inference_ms: Histogram,
    /// From a frame's arrival at the pool to its detections being analysed.
    pub latency_ms: Histogram,
    pub frames_analysed: AtomicU64,
    pub batches: AtomicU64,
    pub inference_errors: AtomicU64,
    /// Model inputs run: one per frame, plus one per region tile (see `infer::Regions`).
    pub model_inputs: AtomicU64,
    /// Inference time summed over batches, in microseconds: with `frames_analysed`, the cost per frame.
    pub inference_us: AtomicU64,
    /// Frames analysed with their camera's previous detections because the scene had not changed; not
    /// in `frames_analysed`, which counts the frames the model ran on.
    pub motion_skipped: AtomicU64,
}

impl PoolStats {
    pub fn mean_batch(&self) -> f64 {
        let b = self.batches.load(Ordering::Relaxed);
        if b == 0 {
            0.0
        } else {
            self.frames_analysed.load(Ordering::Relaxed) as f64 / b as f64
        }
    }
}

/// Reads [`PoolStats`] and the ready queue's length without touching the frame path.
#[derive(Clone)]
pub struct PoolObserver {
    shared: Arc<Shared>,
}

impl PoolObserver {
    pub fn stats(&self) -> &PoolStats {
        &self.shared.stats
    }

    /// Cameras with a frame waiting for a worker (the ready queue's length; at most the camera count).
    pub fn queue_depth(&self) -> usize {
        self.shared.ready_tx.len()
    }
}

struct Slot {
    frame: ArrayQueue<Frame>,
    scheduled: AtomicBool,
    analyser: ArrayQueue<Box<dyn Analyser>>,
    health: Arc<CameraHealth>,
    /// The camera's last inference, for motion gating; taken with the claim like the analyser.
    motion: ArrayQueue<MotionState>,
}

struct Shared {
    slots: Vec<Slot>,
    ready_tx: Sender<usize>,
    stats: PoolStats,
    stop: AtomicBool,
}

impl Shared {
    fn schedule(&self, camera: usize) {
        // Pairs with the fence in `release`: either we see the flag down and enqueue, or the releasing
        // worker sees our frame and enqueues. Never both, never neither.
        fence(Ordering::SeqCst);
        if !self.slots[camera].scheduled.swap(true, Ordering::SeqCst) {
            // Capacity equals the camera count and each camera is queued at most once: never full.
            let _ = self.ready_tx.try_send(camera);
        }
    }

    fn release(&self, camera: usize) {
        let slot = &self.slots[camera];
        slot.scheduled.store(false, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !slot.frame.is_empty() {
            self.schedule(camera);
        }
    }
}

/// Ingest's handle for handing frames to the pool. Cheap to clone.
#[derive(Clone)]
pub struct FrameSink {
    shared: Arc<Shared>,
}

impl FrameSink {
    /// Cameras whose frame waits for a worker. Ingest decodes a keyframe only while this is below what the
    /// workers take in one round, so under overload pictures are never decoded just to be replaced.
    pub fn waiting(&self) -> usize {
        self.shared.ready_tx.len()
    }

    /// Live mode: the newest frame replaces an unanalysed one, which is counted as dropped.
    pub fn push(&self, frame: Frame) {
        let camera = frame.camera;
        let slot = &self.shared.slots[camera];
        if slot.frame.force_push(frame).is_some() {
            slot.health.frames_dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.schedule(camera);
    }

    /// Replay mode for evaluation: waits for the slot instead of dropping, so every frame is analysed.
    pub fn push_lossless(&self, mut frame: Frame) {
        let camera = frame.camera;
        loop {
            match self.shared.slots[camera].frame.push(frame) {
                Ok(()) => break,
                Err(back) => {
                    frame = back;
                    if self.shared.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        self.shared.schedule(camera);
    }
}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `config.workers` workers, each with its own detector from `make_detector`. Fails if any
    /// detector cannot be built, so a bad model is a start-up error, not a silent worker death.
    pub fn start<D: BatchDetector>(
        config: &PoolConfig,
        cameras: Vec<(Arc<CameraHealth>, Box<dyn Analyser>)>,
        make_detector: impl Fn() -> Result<D, InferError>,
    ) -> Result<(Pool, FrameSink), InferError> {
        let (ready_tx, ready_rx) = crossbeam::channel::bounded(cameras.len().max(1));
        let slots = cameras
            .into_iter()
            .map(|(health, analyser)| {
                let a = ArrayQueue::new(1);
                let _ = a.push(analyser);
                let motion = ArrayQueue::new(1);
                let _ = motion.push(MotionState::default());
                Slot {
                    frame: ArrayQueue::new(1),
                    scheduled: AtomicBool::new(false),
                    analyser: a,
                    health,
                    motion,
                }
            })
            .collect();
        let shared = Arc::new(Shared {
            slots,
            ready_tx,
            stats: PoolStats::default(),
            stop: AtomicBool::new(false),
        });
        let detectors = (0..config.workers.max(1))
            .map(|_| make_detector())
            .collect::<Result<Vec<_>, _>>()?;
        let workers = detectors
            .into_iter()
            .enumerate()
            .map(|(i, detector)| {
                let w = Worker::new(shared.clone(), ready_rx.clone(), detector, config);
                std::thread::Builder::new()
                    .name(format!("sw-worker-{i}"))
                    .spawn(move || w.run())
                    .expect("spawning a worker thread")
            })
            .collect();
        Ok((
            Pool {
                shared: shared.clone(),
                workers,
            },
            FrameSink { shared },
        ))
    }

    pub fn stats(&self) -> &PoolStats {
        &self.shared.stats
    }

    /// A reader of the pool's statistics and queue for others (the metrics endpoint); cheap to clone.
    pub fn observer(&self) -> PoolObserver {
        PoolObserver {
            shared: self.shared.clone(),
        }
    }

    /// Stops the workers after their current batch, then drops the analysers and waiting frames.
    /// Frame sinks may outlive the pool (a camera pipeline that is slow to reach Null keeps its
    /// appsink's), and must not keep the analysers, and the incident channel they send on, alive.
    pub fn shutdown(self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for w in self.workers {
            let _ = w.join();
        }
        for slot in &self.shared.slots {
            while slot.analyser.pop().is_some() {}
            while slot.frame.pop().is_some() {}
        }
    }
}

struct Worker<D> {
    shared: Arc<Shared>,
    ready_rx: Receiver<usize>,
    detector: D,
    batch_wait: Duration,
    motion: Option<MotionGate>,
    claimed: Vec<usize>,
    frames: Vec<Frame>,
    detections: Vec<Vec<Detection>>,
    /// Per frame of the batch when gating: its signature and its camera's state, taken from the slot
    /// until the batch is done.
    signatures: Vec<Signature>,
    states: Vec<MotionState>,
}

impl<D: BatchDetector> Worker<D> {
    fn new(
        shared: Arc<Shared>,
        ready_rx: Receiver<usize>,
        detector: D,
        config: &PoolConfig,
    ) -> Self {
        let batch = detector.max_batch().min(config.max_batch.max(1));
        Self {
            shared,
            ready_rx,
            batch_wait: config.batch_wait,
            motion: config.motion,
            claimed: Vec::with_capacity(batch),
            frames: Vec::with_capacity(batch),
            detections: (0..batch).map(|_| Vec::with_capacity(64)).collect(),
            signatures: vec![Signature::default(); batch],
            states: Vec::with_capacity(batch),
            detector,
        }
    }

    fn run(mut self) {
        let batch = self.detections.len();
        while !self.shared.stop.load(Ordering::Relaxed) {
            match self.ready_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(camera) => self.claimed.push(camera),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let deadline = Instant::now() + self.batch_wait;
            while self.claimed.len() < batch {
                match self.ready_rx.recv_deadline(deadline) {
                    Ok(camera) => self.claimed.push(camera),
                    Err(_) => break,
                }
            }
            self.process();
        }
    }

    fn process(&mut self) {
        for &camera in &self.claimed {
            if let Some(f) = self.shared.slots[camera].frame.pop() {
                self.frames.push(f);
            }
        }
        if let Some(gate) = self.motion {
            self.gate(&gate);
        }
        let shared = &*self.shared;
        if !self.frames.is_empty() {
            let started = Instant::now();
            let n = self.frames.len();
            // A panic in the detector loses this batch's frames, never the worker nor the claims: every
            // camera below is released and scheduled again on its next frame. Whatever the detector left
            // half-written is overwritten by its next call (outputs and scratch are cleared per call).
            let detected = panic::catch_unwind(AssertUnwindSafe(|| {
                self.detector
                    .detect(&self.frames, &mut self.detections[..n])
            }));
            match detected {
                Ok(Ok(inputs)) => {
                    let stats = &shared.stats;
                    let took = started.elapsed();
                    stats.inference_ms.record_ms(took.as_secs_f64() * 1e3);
                    stats
                        .inference_us
                        .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                    // Inputs before frames (release): a reader that acquires the frames sees their inputs.
                    stats
                        .model_inputs
                        .fetch_add(inputs as u64, Ordering::Relaxed);
                    stats.frames_analysed.fetch_add(n as u64, Ordering::Release);
                    for (i, (frame, dets)) in self.frames.iter().zip(&self.detections).enumerate() {
                        if let Some(state) = self.states.get_mut(i) {
                            state.inferred(&self.signatures[i], frame.captured_at, dets);
                        }
                        analyse(shared, frame, dets);
                    }
                }
                Ok(Err(e)) => {
                    shared
                        .stats
                        .inference_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, frames = n, "inference failed; frames skipped");
                }
                Err(payload) => {
                    for frame in &self.frames {
                        let health = &shared.slots[frame.camera].health;
                        worker_panicked(health, "detector", &*payload);
                    }
                }
            }
        }
        // Motion states go back to their slots (unchanged if the inference failed), and frames to
        // GStreamer's buffer pool, before the claims are released.
        for (frame, state) in self.frames.iter().zip(self.states.drain(..)) {
            let _ = shared.slots[frame.camera].motion.push(state);
        }
        self.frames.clear();
        for &camera in &self.claimed {
            shared.release(camera);
        }
        self.claimed.clear();
    }
}

/// Hands one frame and its detections to its camera's analyser and counts it analysed.
fn analyse(shared: &Shared, frame: &Frame, detections: &[Detection]) {
    let slot = &shared.slots[frame.camera];
    if let Some(mut analyser) = slot.analyser.pop() {
        // The analyser goes back to its slot even after a panic: dropping it would silence the camera
        // for good, while its state is at worst one frame stale.
        let analysed =
            panic::catch_unwind(AssertUnwindSafe(|| analyser.analyse(frame, detections)));
        let _ = slot.analyser.push(analyser);
        if let Err(payload) = analysed {
            worker_panicked(&slot.health, "analyser", &*payload);
            return;
        }
    }
    slot.health.frames_analysed.fetch_add(1, Ordering::Relaxed);
    shared
        .stats
        .latency_ms
        .record_ms(frame.received.elapsed().as_secs_f64() * 1e3);
}

/// Counts a contained panic against the camera whose frame it cost, and says so in the log.
fn worker_panicked(health: &CameraHealth, stage: &'static str, payload: &(dyn Any + Send)) {
    health.worker_panics.fetch_add(1, Ordering::Relaxed);
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    tracing::error!(
        camera = %health.camera,
        stage,
        panic = message,
        "a pool worker panicked; the camera's frame is lost, the worker and the camera carry on"
    );
}
