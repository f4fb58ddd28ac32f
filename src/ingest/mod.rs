//! Ingest: one GStreamer pipeline per camera (from a template in `pipelines/`), supervised, handing
//! sampled RGB frames to the pool; or RTSP sessions on a shared async runtime ([`Receivers`]) handing
//! encoded units to a decoder pool. Public entry: [`Ingest::start`].

mod decode;
mod footage_server;
mod pipeline;
mod receive;
mod still;
mod supervisor;
mod units;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

pub use decode::{DecodeOptions, DecodeSpec, DecodeStats, DecoderPool};
pub use footage_server::{BasicAuth, FootageOptions, FootageServer};
pub use pipeline::{Pacing, StreamSpec};
pub use receive::{ReceiveOptions, ReceiveSpec, Receivers};
pub use still::decode_still;
pub use supervisor::Backoff;
pub use units::{Codec, EncodedUnit, LatestKeyframes, UnitSink};

use crate::config::{Config, SourceUrl};
use crate::health::CameraHealth;
use crate::pool::FrameSink;
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
    pub spec: StreamSpec,
    pub stall: Duration,
    pub health: Arc<CameraHealth>,
}

impl CameraStream {
    /// The streams of a validated configuration, in camera order (the pool's indices).
    pub fn from_config(config: &Config, health: &[Arc<CameraHealth>]) -> Vec<CameraStream> {
        config
            .cameras
            .iter()
            .zip(health)
            .map(|(c, h)| CameraStream {
                spec: StreamSpec {
                    source: SourceUrl::parse(c.url.get_ref(), &config.base_dir)
                        .expect("validated by config"),
                    fps: c.fps,
                    width: c.width,
                    keyframe_only: c.keyframe_only,
                },
                stall: Duration::from_secs_f32(c.stall_seconds),
                health: h.clone(),
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub pipelines: PathBuf,
    pub pacing: Pacing,
    pub loop_files: bool,
    pub backoff: Backoff,
    /// Nice value for the camera threads: above 0 gives inference priority when the machine is overloaded.
    pub nice: i32,
}

pub struct Ingest {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Ingest {
    /// Starts a supervisor per camera. Templates are checked once up front, so a broken template is a
    /// start-up error; an unreachable camera is not: it is retried while the others run.
    pub fn start(
        cameras: Vec<CameraStream>,
        opts: IngestOptions,
        sink: FrameSink,
        clock: Arc<dyn Clock>,
    ) -> Result<Ingest, IngestError> {
        gstreamer::init().map_err(|e| IngestError::Gst(e.to_string()))?;
        let dir = opts.pipelines.clone();
        let templates = pipeline::Templates::load(&dir)?;
        for c in &cameras {
            templates.build(&dir, &c.spec, opts.pacing, &c.health)?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(supervisor::Context {
            templates,
            dir,
            pacing: opts.pacing,
            loop_files: opts.loop_files,
            backoff: opts.backoff,
            sink,
            clock,
            stop: stop.clone(),
            nice: opts.nice,
        });
        let threads = cameras
            .into_iter()
            .enumerate()
            .map(|(index, c)| {
                let ctx = ctx.clone();
                let task = supervisor::CameraTask {
                    index,
                    spec: c.spec,
                    stall: c.stall,
                    health: c.health,
                };
                std::thread::Builder::new()
                    .name(format!("sw-cam-{index}"))
                    .stack_size(256 * 1024)
                    .spawn(move || supervisor::supervise(task, ctx))
                    .map_err(|e| IngestError::Gst(format!("cannot start a supervisor thread: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Ingest { stop, threads })
    }

    /// True once every camera's supervisor has ended (files that do not loop reached their end).
    pub fn finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}
