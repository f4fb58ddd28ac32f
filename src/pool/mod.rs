//! The worker pool between ingest and analysis, lock-free on the frame path.
//!
//! Each camera has a one-frame slot (latest frame wins; a replaced frame is counted as dropped) and a
//! `scheduled` flag. A camera whose flag goes up is put on the ready queue once; a worker that takes it off
//! holds the claim: it takes the frame and the camera's analyser (which travels with the claim, so
//! per-camera state is never shared and never locked), runs one batched inference for every camera it
//! claimed, analyses, then releases. Memory is bounded by construction: one frame per camera in slots, one
//! batch per worker, and a ready queue no longer than the number of cameras.
//!
//! Cameras come and go while the pool runs (a configuration reload): the slots are allocated once, to a
//! fixed capacity, and [`Pool::attach`] / [`Pool::detach`] give a slot to a camera and take it back. Each
//! slot counts generations (odd: a camera holds it; even: free) and every frame is tagged with the
//! generation of the camera that pushed it, so a removed camera's late frame is never analysed as the
//! camera given its slot next. Detaching takes the slot's claim as a worker would, so the analyser and
//! the waiting frame are dropped only once no worker holds them.
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

use arc_swap::ArcSwap;
use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};
use crossbeam::queue::ArrayQueue;

use crate::frame::Frame;
use crate::health::CameraHealth;
use crate::histogram::Histogram;
use crate::infer::{Detection, Detector, InferError};
use crate::types::CameraId;

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

/// Why a slot could not be given to, or taken from, a camera.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("camera slot {index} is beyond the pool's capacity of {capacity}")]
    OutOfRange { index: usize, capacity: usize },
    #[error("camera slot {0} is already in use")]
    InUse(usize),
    #[error("camera slot {0} holds no camera")]
    Free(usize),
}

struct Slot {
    /// The latest frame, with the generation of the camera that pushed it.
    frame: ArrayQueue<(u64, Frame)>,
    /// Up while the camera is queued or claimed by a worker; a free slot's claim is held by the pool.
    scheduled: AtomicBool,
    analyser: ArrayQueue<Box<dyn Analyser>>,
    /// The camera's health; a shared placeholder while the slot is free.
    health: ArcSwap<CameraHealth>,
    /// Odd while a camera holds the slot, even while it is free; bumped by every attach and detach.
    generation: AtomicU64,
    /// The camera's last inference, for motion gating; taken with the claim like the analyser.
    motion: ArrayQueue<MotionState>,
}

impl Slot {
    fn free(vacant: &Arc<CameraHealth>) -> Self {
        Slot {
            frame: ArrayQueue::new(1),
            scheduled: AtomicBool::new(true),
            analyser: ArrayQueue::new(1),
            health: ArcSwap::new(vacant.clone()),
            generation: AtomicU64::new(0),
            motion: ArrayQueue::new(1),
        }
    }
}

struct Shared {
    slots: Vec<Slot>,
    ready_tx: Sender<usize>,
    stats: PoolStats,
    stop: AtomicBool,
    /// What a free slot's health points at.
    vacant: Arc<CameraHealth>,
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
///
/// One from [`Pool::attach`] is bound to that camera's generation: once the camera is detached, its frames
/// are refused even after another camera is given the slot. One from [`Pool::start`] pushes as whichever
/// camera holds the frame's slot (for fixed camera sets: benchmarks, evaluation, tests).
#[derive(Clone)]
pub struct FrameSink {
    shared: Arc<Shared>,
    generation: Option<u64>,
}

impl FrameSink {
    /// The generation a frame is pushed as, or `None` when its camera no longer holds the slot (a late
    /// frame of a removed camera, dropped uncounted: it is no present camera's).
    fn generation(&self, slot: &Slot) -> Option<u64> {
        let current = slot.generation.load(Ordering::Acquire);
        let generation = self.generation.unwrap_or(current);
        (generation == current && generation % 2 == 1).then_some(generation)
    }

    /// Live mode: the newest frame replaces an unanalysed one, which is counted as dropped.
    pub fn push(&self, frame: Frame) {
        let camera = frame.camera;
        let slot = &self.shared.slots[camera];
        let Some(generation) = self.generation(slot) else {
            return;
        };
        if let Some((replaced, _)) = slot.frame.force_push((generation, frame))
            && replaced == generation
        {
            slot.health
                .load()
                .frames_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
        self.shared.schedule(camera);
    }

    /// Replay mode for evaluation: waits for the slot instead of dropping, so every frame is analysed.
    pub fn push_lossless(&self, frame: Frame) {
        let camera = frame.camera;
        let slot = &self.shared.slots[camera];
        let Some(generation) = self.generation(slot) else {
            return;
        };
        let mut item = (generation, frame);
        loop {
            match slot.frame.push(item) {
                Ok(()) => break,
                Err(back) => {
                    item = back;
                    if self.shared.stop.load(Ordering::Relaxed) || self.generation(slot).is_none() {
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
    /// Starts `config.workers` workers, each with its own detector from `make_detector`, with `cameras`
    /// in slots `0..` and no room for more. Fails if any detector cannot be built, so a bad model is a
    /// start-up error, not a silent worker death.
    pub fn start<D: BatchDetector>(
        config: &PoolConfig,
        cameras: Vec<(Arc<CameraHealth>, Box<dyn Analyser>)>,
        make_detector: impl Fn() -> Result<D, InferError>,
    ) -> Result<(Pool, FrameSink), InferError> {
        let pool = Pool::with_capacity(config, cameras.len(), make_detector)?;
        for (index, (health, analyser)) in cameras.into_iter().enumerate() {
            pool.attach(index, health, analyser)
                .expect("a fresh pool has a free slot per camera");
        }
        let sink = FrameSink {
            shared: pool.shared.clone(),
            generation: None,
        };
        Ok((pool, sink))
    }

    /// Starts the workers with `capacity` free camera slots, for [`Pool::attach`].
    pub fn with_capacity<D: BatchDetector>(
        config: &PoolConfig,
        capacity: usize,
        make_detector: impl Fn() -> Result<D, InferError>,
    ) -> Result<Pool, InferError> {
        // Each camera is queued at most once: the queue never holds more than the slots.
        let (ready_tx, ready_rx) = crossbeam::channel::bounded(capacity.max(1));
        let vacant = Arc::new(CameraHealth::new(CameraId::new("")));
        let shared = Arc::new(Shared {
            slots: (0..capacity).map(|_| Slot::free(&vacant)).collect(),
            ready_tx,
            stats: PoolStats::default(),
            stop: AtomicBool::new(false),
            vacant,
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
        Ok(Pool { shared, workers })
    }

    /// Camera slots, free or not.
    pub fn capacity(&self) -> usize {
        self.shared.slots.len()
    }

    fn slot(&self, index: usize) -> Result<&Slot, SlotError> {
        self.shared.slots.get(index).ok_or(SlotError::OutOfRange {
            index,
            capacity: self.shared.slots.len(),
        })
    }

    /// Gives free slot `index` to a camera; its frames go through the returned sink.
    pub fn attach(
        &self,
        index: usize,
        health: Arc<CameraHealth>,
        analyser: Box<dyn Analyser>,
    ) -> Result<FrameSink, SlotError> {
        let slot = self.slot(index)?;
        let free = slot.generation.load(Ordering::Acquire);
        if free % 2 == 1 {
            return Err(SlotError::InUse(index));
        }
        // The pool holds a free slot's claim, so no worker is in the way. A frame left by the previous
        // camera is not this one's.
        drop(slot.frame.pop());
        let _ = slot.analyser.push(analyser);
        // The previous camera's scene and detections are not this one's.
        let _ = slot.motion.force_push(MotionState::default());
        slot.health.store(health);
        let generation = free + 1;
        slot.generation.store(generation, Ordering::Release);
        self.shared.release(index);
        Ok(FrameSink {
            shared: self.shared.clone(),
            generation: Some(generation),
        })
    }

    /// Takes slot `index` back from its camera: from now on its frames are refused; once no worker holds
    /// the camera (waiting, if one does, for its batch), its waiting frame and its analyser are dropped.
    pub fn detach(&self, index: usize) -> Result<(), SlotError> {
        let slot = self.slot(index)?;
        let attached = slot.generation.load(Ordering::Acquire);
        if attached % 2 == 0 {
            return Err(SlotError::Free(index));
        }
        slot.generation.store(attached + 1, Ordering::Release);
        // Take the claim as a worker does. A camera queued but not yet claimed is taken by a worker, which
        // finds its frame stale and releases it; then the claim is ours.
        while slot.scheduled.swap(true, Ordering::SeqCst) {
            if self.shared.stop.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(slot.frame.pop());
        drop(slot.analyser.pop());
        slot.health.store(self.shared.vacant.clone());
        Ok(())
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
    claimed: Vec<usize>,
    frames: Vec<Frame>,
    detections: Vec<Vec<Detection>>,
    motion: Option<MotionGate>,
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
            claimed: Vec::with_capacity(batch),
            frames: Vec::with_capacity(batch),
            detections: (0..batch).map(|_| Vec::with_capacity(64)).collect(),
            motion: config.motion,
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
            let slot = &self.shared.slots[camera];
            // A frame pushed as its camera was detached is dropped here: the slot may be another's next.
            if let Some((generation, f)) = slot.frame.pop()
                && generation == slot.generation.load(Ordering::Acquire)
            {
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
                        let health = shared.slots[frame.camera].health.load();
                        worker_panicked(&health, "detector", &*payload);
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
    // Stable while the claim is held: a detach waits for it to change the health.
    let health = slot.health.load();
    if let Some(mut analyser) = slot.analyser.pop() {
        // The analyser goes back to its slot even after a panic: dropping it would silence the camera
        // for good, while its state is at worst one frame stale.
        let analysed =
            panic::catch_unwind(AssertUnwindSafe(|| analyser.analyse(frame, detections)));
        let _ = slot.analyser.push(analyser);
        if let Err(payload) = analysed {
            worker_panicked(&health, "analyser", &*payload);
            return;
        }
    }
    health.frames_analysed.fetch_add(1, Ordering::Relaxed);
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
