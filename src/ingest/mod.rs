//! Ingest: one GStreamer pipeline per camera (from a template in `pipelines/`), supervised, handing
//! sampled RGB frames to the pool; or RTSP sessions on a shared async runtime ([`Receivers`]) handing
//! encoded units to a decoder pool. Public entry: [`Ingest::start`]; cameras come and go with
//! [`Ingest::add`] and [`Ingest::remove`].

mod camera_server;
mod decode;
mod footage_server;
mod pipeline;
mod receive;
mod still;
mod supervisor;
mod units;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

pub use camera_server::{CameraServer, CameraServerOptions};
pub use decode::{DecodeOptions, DecodeSpec, DecodeStats, DecoderPool};
pub use footage_server::{BasicAuth, FootageOptions, FootageServer};
pub use pipeline::{Pacing, StreamSpec};
pub use receive::{ReceiveOptions, ReceiveSpec, Receivers};
pub use still::decode_still;
pub use supervisor::Backoff;
pub use units::{Codec, EncodedUnit, LatestKeyframes, UnitSink};

use crate::config::{CameraConfig, Config, SourceUrl};
use crate::health::CameraHealth;
use crate::pool::{FrameSink, PoolObserver};
use crate::types::Clock;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("GStreamer: {0}")]
    Gst(String),
    #[error("pipeline template {path}: {message}")]
    Template { path: PathBuf, message: String },
    #[error("footage server: {0}")]
    Footage(String),
    #[error("RTSP receiver: {0}")]
    Receive(String),
    #[error("camera slot {index} is beyond the capacity of {capacity} cameras")]
    Capacity { index: usize, capacity: usize },
}

/// One camera as ingest sees it.
pub struct CameraStream {
    /// The camera's slot in the pool.
    pub index: usize,
    pub spec: StreamSpec,
    pub stall: Duration,
    /// The camera's sub-stream, analysed instead of the main one (which then only gives snapshots).
    pub analysis_url: Option<SourceUrl>,
    pub health: Arc<CameraHealth>,
    /// Bound to the camera (from `Pool::attach`): frames that outlive its removal are refused.
    pub sink: FrameSink,
}

impl CameraStream {
    /// `camera` of a validated configuration, in pool slot `index`.
    pub fn new(
        config: &Config,
        camera: &CameraConfig,
        index: usize,
        health: Arc<CameraHealth>,
        sink: FrameSink,
    ) -> CameraStream {
        CameraStream {
            index,
            spec: StreamSpec {
                source: SourceUrl::parse(camera.url.get_ref(), &config.base_dir)
                    .expect("validated by config"),
                fps: camera.fps,
                width: camera.width,
                keyframe_only: camera.keyframe_only,
            },
            stall: Duration::from_secs_f32(camera.stall_seconds),
            analysis_url: camera.analysis_url.as_ref().map(|u| {
                SourceUrl::parse(u.get_ref(), &config.base_dir).expect("validated by config")
            }),
            health,
            sink,
        }
    }
}

#[derive(Clone)]
pub struct IngestOptions {
    pub pipelines: PathBuf,
    pub pacing: Pacing,
    pub loop_files: bool,
    pub backoff: Backoff,
    /// Nice value for the camera threads: above 0 gives inference priority when the machine is overloaded.
    pub nice: i32,
    /// Camera slots (the worker pool's capacity): indices are below it.
    pub capacity: usize,
    /// The worker pool the decoders feed, and how many cameras may wait in its queue before they hold
    /// back (what the workers take in one round).
    pub pool: PoolObserver,
    pub decode_room: usize,
    /// Shared decoder threads (0: one per core).
    pub decoders: usize,
    /// Each camera's latest main-stream keyframe, kept for full-resolution snapshots.
    pub keyframes: Arc<LatestKeyframes>,
}

/// A camera's supervisor and the flag that stops it.
struct Supervised {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// How a camera is received: RTSP cameras analysed on keyframes go through the async client and the
/// shared decoders; files, and cameras that decode every frame, through a GStreamer pipeline of their own.
fn receives_encoded(spec: &StreamSpec) -> bool {
    spec.keyframe_only && matches!(spec.source, SourceUrl::Rtsp { .. })
}

/// The RTSP sessions and the shared decoders they feed, started with the first camera that needs them.
struct Encoded {
    receivers: Receivers,
    decoders: DecoderPool,
}

pub struct Ingest {
    ctx: Arc<supervisor::Context>,
    opts: IngestOptions,
    clock: Arc<dyn Clock>,
    /// Cameras on a pipeline of their own.
    cameras: HashMap<usize, Supervised>,
    encoded: Option<Encoded>,
    /// Cameras on the RTSP client and shared decoders.
    encoded_cameras: std::collections::HashSet<usize>,
}

impl Ingest {
    /// Starts a supervisor per camera. Templates are checked once up front, so a broken template is a
    /// start-up error; an unreachable camera is not: it is retried while the others run.
    pub fn start(
        cameras: Vec<CameraStream>,
        opts: IngestOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Ingest, IngestError> {
        gstreamer::init().map_err(|e| IngestError::Gst(e.to_string()))?;
        let dir = opts.pipelines.clone();
        let templates = pipeline::Templates::load(&dir)?;
        for c in cameras.iter().filter(|c| !receives_encoded(&c.spec)) {
            templates.build(&dir, &c.spec, opts.pacing, &c.health)?;
        }
        let mut ingest = Ingest {
            ctx: Arc::new(supervisor::Context {
                templates,
                dir,
                pacing: opts.pacing,
                loop_files: opts.loop_files,
                backoff: opts.backoff.clone(),
                clock: clock.clone(),
                nice: opts.nice,
            }),
            opts,
            clock,
            cameras: HashMap::new(),
            encoded: None,
            encoded_cameras: Default::default(),
        };
        for c in cameras {
            ingest.add(c)?;
        }
        Ok(ingest)
    }

    /// Starts supervising one more camera, in its own slot. Its pipeline is built once first, so a
    /// camera the templates cannot serve is refused here rather than retried for ever.
    pub fn add(&mut self, camera: CameraStream) -> Result<(), IngestError> {
        let index = camera.index;
        if self.cameras.contains_key(&index) || self.encoded_cameras.contains(&index) {
            return Err(IngestError::Gst(format!(
                "camera slot {index} is already supervised"
            )));
        }
        if receives_encoded(&camera.spec) {
            return self.add_encoded(camera);
        }
        let ctx = &self.ctx;
        ctx.templates
            .build(&ctx.dir, &camera.spec, ctx.pacing, &camera.health)?;
        let stop = Arc::new(AtomicBool::new(false));
        let task = supervisor::CameraTask {
            index,
            spec: camera.spec,
            stall: camera.stall,
            health: camera.health,
            sink: camera.sink,
            stop: stop.clone(),
        };
        let ctx = ctx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sw-cam-{index}"))
            .stack_size(256 * 1024)
            .spawn(move || supervisor::supervise(task, ctx))
            .map_err(|e| IngestError::Gst(format!("cannot start a supervisor thread: {e}")))?;
        self.cameras.insert(index, Supervised { stop, thread });
        Ok(())
    }

    /// Stops the camera in slot `index` and waits for its supervisor (a fraction of a second: it polls its
    /// flag). Its pipeline is taken down in the background; frames it still hands over are refused by
    /// the pool once the camera is detached. False if no camera is in that slot.
    pub fn remove(&mut self, index: usize) -> bool {
        if self.encoded_cameras.remove(&index) {
            if let Some(e) = &mut self.encoded {
                e.receivers.remove(index);
                e.decoders.remove(index);
            }
            return true;
        }
        let Some(camera) = self.cameras.remove(&index) else {
            return false;
        };
        camera.stop.store(true, Ordering::SeqCst);
        let _ = camera.thread.join();
        true
    }

    /// True once every camera's supervisor has ended (files that do not loop reached their end).
    pub fn finished(&self) -> bool {
        self.encoded_cameras.is_empty() && self.cameras.values().all(|c| c.thread.is_finished())
    }

    /// Receives `camera` with the async RTSP client and decodes its keyframes on the shared decoders.
    fn add_encoded(&mut self, camera: CameraStream) -> Result<(), IngestError> {
        if self.encoded.is_none() {
            self.encoded = Some(self.start_encoded()?);
        }
        let encoded = self.encoded.as_mut().expect("started above");
        let index = camera.index;
        encoded.decoders.add(DecodeSpec {
            index,
            fps: camera.spec.fps,
            width: camera.spec.width,
            health: camera.health.clone(),
            sink: camera.sink,
        })?;
        let received = encoded.receivers.add(ReceiveSpec {
            index,
            url: camera.spec.source,
            analysis_url: camera.analysis_url,
            stall: camera.stall,
            health: camera.health,
        });
        if let Err(e) = received {
            encoded.decoders.remove(index);
            return Err(e);
        }
        self.encoded_cameras.insert(index);
        Ok(())
    }

    fn start_encoded(&self) -> Result<Encoded, IngestError> {
        let opts = &self.opts;
        let mut decode = DecodeOptions::new(opts.decode_room, opts.pacing);
        if opts.decoders > 0 {
            decode.decoders = opts.decoders;
        }
        let (decoders, units) =
            DecoderPool::start(Vec::new(), opts.capacity, decode, opts.pool.clone())?;
        let receivers = Receivers::start(
            Vec::new(),
            units,
            opts.keyframes.clone(),
            ReceiveOptions {
                backoff: opts.backoff.clone(),
                clock: self.clock.clone(),
                ..ReceiveOptions::default()
            },
        );
        match receivers {
            Ok(receivers) => Ok(Encoded {
                receivers,
                decoders,
            }),
            Err(e) => {
                decoders.stop();
                Err(e)
            }
        }
    }

    pub fn stop(self) {
        // Sessions first, so no unit reaches a decoder that is stopping.
        if let Some(e) = self.encoded {
            e.receivers.stop();
            e.decoders.stop();
        }
        for c in self.cameras.values() {
            c.stop.store(true, Ordering::SeqCst);
        }
        for c in self.cameras.into_values() {
            let _ = c.thread.join();
        }
    }
}
