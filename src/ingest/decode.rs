//! A small pool of shared decoders behind a [`UnitSink`], deciding which keyframes are decoded.
//!
//! Admission happens before decode, on the receive path and without a lock: delta units are ignored; a
//! keyframe of a camera that is not due yet is dropped while still encoded (`decode_skipped`); a due
//! camera's keyframe waits in the camera's one-unit pending slot (a newer one replaces it, also counted).
//! Decoder threads take, while the worker pool has room, the pending keyframe of the camera that has been
//! due longest, so under overload every camera's rate drops evenly and none starves. Keyframes carry their
//! parameter sets, so any decoder of the codec decodes any camera's keyframe: one decoder pipeline per
//! (codec, analysis width) per thread serves every camera, whatever its resolution.
//!
//! Due times are in the units' own timeline (`captured_at`: the clock at arrival for live cameras, media
//! time for files run flat out), so the rate a camera is analysed at follows its footage, not the wall,
//! and the pool needs no clock of its own. The push path is lock-free and allocates nothing, except that
//! an admitted keyframe wakes a parked decoder (crossbeam's `Unparker`, which locks only to wake).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering, fence};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use crossbeam::queue::ArrayQueue;
use crossbeam::sync::{Parker, Unparker};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use super::units::{Codec, EncodedUnit, UnitSink};
use super::{IngestError, Pacing};
use crate::frame::{Frame, Pixels};
use crate::health::CameraHealth;
use crate::pool::{FrameSink, PoolObserver};

/// One camera as the decoder pool sees it.
#[derive(Clone)]
pub struct DecodeSpec {
    /// The camera's slot, below the pool's capacity (the same index as the worker pool's).
    pub index: usize,
    /// Analysed frames per second: at most one keyframe per `1/fps` is decoded.
    pub fps: f32,
    /// Width of the analysed picture; the height keeps the aspect ratio.
    pub width: u32,
    pub health: Arc<CameraHealth>,
    /// Bound to the camera (from `Pool::attach`): a picture that outlives its removal is refused.
    pub sink: FrameSink,
}

#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Decoder threads. A keyframe decodes on one core; more threads than cores add nothing.
    pub decoders: usize,
    /// Cameras that may wait in the worker pool's ready queue before decoders hold back: what the workers
    /// take in one round (workers × max batch). A picture decoded beyond that would only be replaced.
    pub room: usize,
    pub pacing: Pacing,
    /// Longest wait for one keyframe's picture; past it the decoder pipeline is rebuilt.
    pub timeout: Duration,
}

impl DecodeOptions {
    /// One decoder per available core, pictures within 2 s.
    pub fn new(room: usize, pacing: Pacing) -> Self {
        Self {
            decoders: std::thread::available_parallelism().map_or(1, |n| n.get()),
            room,
            pacing,
            timeout: Duration::from_secs(2),
        }
    }
}

/// Counters of the decoders themselves (per camera figures are in [`CameraHealth`]).
#[derive(Debug, Default)]
pub struct DecodeStats {
    /// Keyframes that gave no picture (a decoder error, or none within the timeout): each one rebuilt the
    /// decoder pipeline it went through.
    pub failures: AtomicU64,
}

/// How long a decoder waits before looking again at a worker pool that had no room. The pool does not
/// signal room; a few milliseconds are small beside a batch's inference.
const ROOM_POLL: Duration = Duration::from_millis(2);
/// An idle decoder is woken by the next admitted keyframe; the timeout only bounds how late it sees `stop`.
const IDLE_PARK: Duration = Duration::from_millis(500);

struct Camera {
    period_ms: i64,
    width: u32,
    health: Arc<CameraHealth>,
    sink: FrameSink,
    /// Timeline milliseconds from which the camera's next keyframe is due.
    next_due: AtomicI64,
    pending: ArrayQueue<EncodedUnit>,
}

impl Camera {
    fn new(spec: DecodeSpec) -> Self {
        Self {
            period_ms: (1000.0 / spec.fps.max(0.001)).round() as i64,
            width: spec.width,
            health: spec.health,
            sink: spec.sink,
            // Due since ever: a new camera's first keyframe is taken before those of cameras served already.
            next_due: AtomicI64::new(i64::MIN),
            pending: ArrayQueue::new(1),
        }
    }
}

struct Shared {
    cameras: Box<[ArcSwapOption<Camera>]>,
    /// Per decoder thread: parked (or about to park) with nothing to take.
    idle: Box<[AtomicBool]>,
    unparkers: Box<[Unparker]>,
    /// The worker pool's ready queue, read to hold decoding back while it is full.
    queue: PoolObserver,
    room: usize,
    pacing: Pacing,
    timeout: Duration,
    stop: AtomicBool,
    stats: DecodeStats,
}

impl Shared {
    /// Wakes one idle decoder, if any: the others are busy and look for work when they finish.
    fn wake_one(&self) {
        // Pairs with the fence in `Decoder::run`: either the decoder sees our pending keyframe on its
        // last look before parking, or we see its idle flag and unpark it.
        fence(Ordering::SeqCst);
        for (flag, unparker) in self.idle.iter().zip(self.unparkers.iter()) {
            if flag.swap(false, Ordering::SeqCst) {
                unparker.unpark();
                return;
            }
        }
    }

    /// The pending keyframe of the camera that has been due longest, taken (and its next due time set).
    fn take_oldest_due(&self) -> Option<(Arc<Camera>, EncodedUnit)> {
        loop {
            let mut oldest: Option<(usize, i64)> = None;
            for (index, slot) in self.cameras.iter().enumerate() {
                let guard = slot.load();
                if let Some(cam) = guard.as_ref()
                    && !cam.pending.is_empty()
                {
                    let due = cam.next_due.load(Ordering::Relaxed);
                    if oldest.is_none_or(|(_, d)| due < d) {
                        oldest = Some((index, due));
                    }
                }
            }
            let (index, _) = oldest?;
            let Some(cam) = self.cameras[index].load_full() else {
                continue; // removed meanwhile
            };
            let Some(unit) = cam.pending.pop() else {
                continue; // another decoder took it
            };
            let t = unit.captured_at.0;
            let mut due = cam.next_due.load(Ordering::Acquire);
            let taken = loop {
                if t < due {
                    break false;
                }
                // Moved on before the decode, so keyframes arriving during it are judged by the new due
                // time. One period per decoded keyframe bounds the rate to `fps`. At least half a period
                // after this keyframe: no burst after an outage or at start (the due time never trails
                // the stream), yet a stream whose GOP equals the period keeps every keyframe when they
                // arrive up to a quarter period early or late.
                let next = due
                    .saturating_add(cam.period_ms)
                    .max(t.saturating_add(cam.period_ms / 2));
                // Another decoder may have taken a keyframe of this camera meanwhile: judged again.
                match cam
                    .next_due
                    .compare_exchange(due, next, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => break true,
                    Err(now) => due = now,
                }
            };
            if !taken {
                // Admitted against a due time that has since moved on: not due after all.
                cam.health.decode_skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            return Some((cam, unit));
        }
    }
}

/// The [`UnitSink`] in front of the decoders: admission.
struct Admission {
    shared: Arc<Shared>,
}

impl UnitSink for Admission {
    fn push(&self, unit: EncodedUnit) {
        if !unit.keyframe {
            return;
        }
        let shared = &*self.shared;
        let Some(slot) = shared.cameras.get(unit.camera) else {
            return;
        };
        let guard = slot.load();
        let Some(cam) = guard.as_ref() else {
            return; // removed camera: its receiver is being stopped
        };
        if unit.captured_at.0 < cam.next_due.load(Ordering::Acquire) {
            cam.health.decode_skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match shared.pacing {
            Pacing::Unthrottled { lossless: true } => {
                // Evaluation replays every due keyframe: the demuxer waits for the decoders instead.
                let mut unit = unit;
                while let Err(back) = cam.pending.push(unit) {
                    if shared.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    unit = back;
                    shared.wake_one();
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            _ => {
                if cam.pending.force_push(unit).is_some() {
                    cam.health.decode_skipped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        shared.wake_one();
    }
}

/// The shared decoders. Cameras are slots `0..capacity`, added and removed while running.
pub struct DecoderPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl DecoderPool {
    /// Starts `opts.decoders` decoder threads for cameras in slots `0..capacity`; returns the pool and the
    /// sink receivers hand their units to. Decoded frames go to each camera's own sink; `queue` is the
    /// worker pool they feed.
    pub fn start(
        cameras: Vec<DecodeSpec>,
        capacity: usize,
        opts: DecodeOptions,
        queue: PoolObserver,
    ) -> Result<(DecoderPool, Arc<dyn UnitSink>), IngestError> {
        gst::init().map_err(|e| IngestError::Gst(e.to_string()))?;
        let decoders = opts.decoders.max(1);
        let parkers: Vec<Parker> = (0..decoders).map(|_| Parker::new()).collect();
        let shared = Arc::new(Shared {
            cameras: (0..capacity).map(|_| ArcSwapOption::empty()).collect(),
            idle: (0..decoders).map(|_| AtomicBool::new(false)).collect(),
            unparkers: parkers.iter().map(|p| p.unparker().clone()).collect(),
            queue,
            room: opts.room.max(1),
            pacing: opts.pacing,
            timeout: opts.timeout,
            stop: AtomicBool::new(false),
            stats: DecodeStats::default(),
        });
        let mut pool = DecoderPool {
            shared: shared.clone(),
            threads: Vec::with_capacity(decoders),
        };
        for spec in cameras {
            pool.add(spec)?;
        }
        for (id, parker) in parkers.into_iter().enumerate() {
            let decoder = Decoder {
                id,
                shared: shared.clone(),
                parker,
                pipelines: HashMap::new(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("sw-decode-{id}"))
                .spawn(move || decoder.run());
            match spawned {
                Ok(t) => pool.threads.push(t),
                Err(e) => {
                    pool.stop();
                    return Err(IngestError::Gst(format!(
                        "cannot start a decoder thread: {e}"
                    )));
                }
            }
        }
        Ok((pool, Arc::new(Admission { shared }) as Arc<dyn UnitSink>))
    }

    /// Starts decoding a camera's keyframes (replacing whatever camera had its slot).
    pub fn add(&self, spec: DecodeSpec) -> Result<(), IngestError> {
        let capacity = self.shared.cameras.len();
        let slot = self
            .shared
            .cameras
            .get(spec.index)
            .ok_or(IngestError::Capacity {
                index: spec.index,
                capacity,
            })?;
        slot.store(Some(Arc::new(Camera::new(spec))));
        Ok(())
    }

    /// Stops decoding a camera: its pending keyframe is dropped and a picture being decoded is discarded,
    /// so nothing of it reaches a camera later given the same slot.
    pub fn remove(&self, index: usize) {
        if let Some(slot) = self.shared.cameras.get(index) {
            slot.store(None);
        }
    }

    pub fn stats(&self) -> &DecodeStats {
        &self.shared.stats
    }

    /// Stops the decoders after their current keyframe and tears their pipelines down.
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for u in self.shared.unparkers.iter() {
            u.unpark();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One decoder thread: its pipelines, one per (codec, width), built on first use.
struct Decoder {
    id: usize,
    shared: Arc<Shared>,
    parker: Parker,
    pipelines: HashMap<(Codec, u32), Pipeline>,
}

impl Decoder {
    fn run(mut self) {
        let shared = self.shared.clone();
        while !shared.stop.load(Ordering::Relaxed) {
            if shared.queue.queue_depth() >= shared.room {
                self.parker.park_timeout(ROOM_POLL);
                continue;
            }
            if let Some((cam, unit)) = shared.take_oldest_due() {
                self.decode(&cam, unit);
                continue;
            }
            shared.idle[self.id].store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            // One more look after raising the flag: a keyframe pushed before it was visible woke no one.
            if let Some((cam, unit)) = shared.take_oldest_due() {
                shared.idle[self.id].store(false, Ordering::Relaxed);
                self.decode(&cam, unit);
                continue;
            }
            self.parker.park_timeout(IDLE_PARK);
            shared.idle[self.id].store(false, Ordering::Relaxed);
        }
        for (_, p) in self.pipelines.drain() {
            p.close();
        }
    }

    fn decode(&mut self, cam: &Arc<Camera>, unit: EncodedUnit) {
        let shared = &*self.shared;
        let key = (unit.codec, cam.width);
        let pipeline = match self.pipelines.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => match Pipeline::build(key) {
                Ok(p) => e.insert(p),
                Err(error) => {
                    shared.stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(camera = %cam.health.camera, %error, "cannot build a decoder");
                    return;
                }
            },
        };
        let sample = match pipeline.decode(&unit, shared.timeout) {
            Ok(s) => s,
            Err(error) => {
                shared.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(camera = %cam.health.camera, %error, "keyframe not decoded; decoder rebuilt");
                if let Some(p) = self.pipelines.remove(&key) {
                    p.close();
                }
                return;
            }
        };
        let Some(frame) = pipeline.frame(&sample, &unit) else {
            return;
        };
        cam.health.frames_decoded.fetch_add(1, Ordering::Relaxed);
        // A camera removed (or its slot given to another) during the decode: its picture goes nowhere.
        let current = shared.cameras[unit.camera].load();
        if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, cam)) {
            return;
        }
        cam.health.frame_received(unit.captured_at);
        match shared.pacing {
            Pacing::Unthrottled { lossless: true } => cam.sink.push_lossless(frame),
            _ => cam.sink.push(frame),
        }
    }
}

/// `appsrc ! h26Xparse ! avdec_h26X ! videoscale ! videoconvert ! appsink`, fed one keyframe at a time.
struct Pipeline {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
    bus: gst::Bus,
    /// Video info of the last caps seen: renegotiated whenever a camera of another resolution comes through.
    info: Option<(gst::Caps, gst_video::VideoInfo)>,
}

impl Pipeline {
    fn build((codec, width): (Codec, u32)) -> Result<Self, String> {
        let (caps, parse, dec) = codec.gst_elements();
        // Seekable: a flushing seek readies the pipeline for the next keyframe (see `decode`). One
        // decoder thread: frame threads would hold pictures back. Scale before converting: RGB conversion of
        // the full 720p picture cost ~6 ms a frame here, of the scaled one under 1 ms. No direct rendering:
        // with it libav keeps the picture as a reference and the decoder copied each one into a freshly
        // allocated buffer; without it the one copy lands in a pooled buffer (see pipelines/rtsp.pipeline).
        let desc = format!(
            "appsrc name=src stream-type=seekable format=time caps=\"{caps},stream-format=byte-stream,alignment=au\" \
             ! {parse} ! {dec} max-threads=1 direct-rendering=false ! videoscale ! videoconvert \
             ! video/x-raw,format=RGB,width={width},pixel-aspect-ratio=1/1 \
             ! appsink name=sink max-buffers=1 sync=false"
        );
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| e.to_string())?
            .downcast::<gst::Pipeline>()
            .map_err(|_| "not a pipeline".to_string())?;
        let src = pipeline
            .by_name("src")
            .and_then(|e| e.dynamic_cast::<gst_app::AppSrc>().ok())
            .ok_or("no appsrc")?;
        let sink = pipeline
            .by_name("sink")
            .and_then(|e| e.dynamic_cast::<gst_app::AppSink>().ok())
            .ok_or("no appsink")?;
        let bus = pipeline.bus().ok_or("no bus")?;
        // The source has nothing to seek in: every keyframe starts a stream of its own.
        src.set_callbacks(
            gst_app::AppSrcCallbacks::builder()
                .seek_data(|_, _| true)
                .build(),
        );
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            pipeline,
            src,
            sink,
            bus,
            info: None,
        })
    }

    /// Pushes one keyframe and waits for its picture.
    /// Pushes one keyframe, ends the stream to drain it out, waits for its picture, and flushes the
    /// pipeline for the next keyframe. The end of stream is what gets every picture out: the parser holds
    /// an access unit until the next one starts, and libav holds a picture back for reordering when the
    /// stream has B-frames or does not say it has none, and the next keyframe may be seconds away or
    /// another camera's. The flush leaves no reference picture behind, so each keyframe decodes alone.
    fn decode(&mut self, unit: &EncodedUnit, timeout: Duration) -> Result<gst::Sample, String> {
        // The buffer wraps the unit's bytes: no copy.
        let mut buffer = gst::Buffer::from_slice(unit.data.clone());
        buffer
            .get_mut()
            .expect("a new buffer is writable")
            .set_pts(gst::ClockTime::ZERO);
        self.src.push_buffer(buffer).map_err(|e| e.to_string())?;
        self.src.end_of_stream().map_err(|e| e.to_string())?;
        let picture = self.pull(timeout);
        // Back to a fresh stream: clears the end of stream in every element and restarts the source.
        self.pipeline
            .seek_simple(gst::SeekFlags::FLUSH, gst::ClockTime::ZERO)
            .map_err(|e| format!("cannot flush the decoder: {e}"))?;
        picture
    }

    fn pull(&self, timeout: Duration) -> Result<gst::Sample, String> {
        let deadline = Instant::now() + timeout;
        // In short slices, so a decoder error ends the wait at once instead of at the timeout.
        let slice = gst::ClockTime::from_mseconds(20);
        loop {
            if let Some(sample) = self.sink.try_pull_sample(slice) {
                return Ok(sample);
            }
            if self.sink.is_eos() {
                return Err("the keyframe gave no picture".into());
            }
            if let Some(msg) = self.bus.pop_filtered(&[gst::MessageType::Error])
                && let gst::MessageView::Error(e) = msg.view()
            {
                return Err(e.error().to_string());
            }
            if Instant::now() >= deadline {
                return Err(format!("no picture within {} ms", timeout.as_millis()));
            }
        }
    }

    fn frame(&mut self, sample: &gst::Sample, unit: &EncodedUnit) -> Option<Frame> {
        let caps = sample.caps()?;
        if self.info.as_ref().is_none_or(|(c, _)| c != caps) {
            let vi = gst_video::VideoInfo::from_caps(caps).ok()?;
            self.info = Some((caps.to_owned(), vi));
        }
        let vi = &self.info.as_ref()?.1;
        let mapped = sample.buffer_owned()?.into_mapped_buffer_readable().ok()?;
        Some(Frame {
            camera: unit.camera,
            captured_at: unit.captured_at,
            received: unit.received,
            width: vi.width(),
            height: vi.height(),
            stride: vi.stride()[0] as u32,
            pixels: Pixels::Gst(mapped),
        })
    }

    fn close(self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
