//! A district of stand-in cameras for benchmarks: `rtsp://127.0.0.1:PORT/cam/N` (main stream) and
//! `/cam/N/sub` (sub-stream) for N in `0..cameras`, looping recorded footage as live cameras do.
//!
//! Cheap enough to serve 1,100 cameras from one process: each stream kind is read from its file by a
//! few feeders only (one per phase), and every camera of a phase shares that feeder's one media (one
//! payloader), so a camera costs the server a client connection, not a pipeline. Phases start a fraction
//! of a GOP apart, so keyframes of different cameras do not all arrive in the same instant, as with real
//! cameras (whose clocks are unrelated).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;
use gstreamer_rtsp_server::subclass::prelude::*;

use super::IngestError;

/// What a [`CameraServer`] serves.
#[derive(Debug, Clone)]
pub struct CameraServerOptions {
    pub cameras: usize,
    /// The main stream's footage (H.264 MP4 without B-frames), e.g. 720p25 2 Mbps.
    pub main: PathBuf,
    /// The sub-stream's footage, served at `/cam/N/sub` when given.
    pub sub: Option<PathBuf>,
    /// Groups of cameras whose streams start a fraction of `gop` apart.
    pub phases: usize,
    /// The footage's keyframe interval: phases spread over it.
    pub gop: Duration,
    pub port: u16,
}

pub struct CameraServer {
    port: u16,
    main_loop: glib::MainLoop,
    thread: Option<JoinHandle<()>>,
    feeders: Vec<Feeder>,
}

impl CameraServer {
    pub fn start(opts: &CameraServerOptions) -> Result<Self, IngestError> {
        gst::init().map_err(|e| IngestError::Gst(e.to_string()))?;
        let phases = opts.phases.max(1);
        let kinds: Vec<(&str, &Path)> = std::iter::once(("main", opts.main.as_path()))
            .chain(opts.sub.as_deref().map(|s| ("sub", s)))
            .collect();
        let mut feeders = Vec::new();
        let mut by_kind = Vec::new();
        for (kind, file) in &kinds {
            let group: Vec<Arc<Targets>> = (0..phases)
                .map(|p| {
                    let delay = opts.gop.mul_f64(p as f64 / phases as f64);
                    Feeder::start(file, delay).map(|f| {
                        let t = f.targets.clone();
                        feeders.push(f);
                        t
                    })
                })
                .collect::<Result<_, _>>()?;
            by_kind.push((kind.to_string(), group));
        }
        let cameras = opts.cameras;
        let (port, main_loop, thread) = super::footage_server::serve(opts.port, move |server| {
            // Many clients connect at once when a district starts.
            server.set_backlog(1024);
            let points = server
                .mount_points()
                .expect("a new server has mount points");
            for (kind, targets) in by_kind {
                let factory = PhasedFactory::new(kind.clone(), targets);
                for n in 0..cameras {
                    let path = match kind.as_str() {
                        "main" => format!("/cam/{n}"),
                        _ => format!("/cam/{n}/{kind}"),
                    };
                    points.add_factory(&path, factory.clone());
                }
            }
        })?;
        Ok(Self {
            port,
            main_loop,
            thread: Some(thread),
            feeders,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Camera `n`'s main stream.
    pub fn url(&self, n: usize) -> String {
        format!("rtsp://127.0.0.1:{}/cam/{n}", self.port)
    }
}

impl Drop for CameraServer {
    fn drop(&mut self) {
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for f in self.feeders.drain(..) {
            f.stop();
        }
    }
}

/// The appsrcs of the media a feeder plays into (weak: a media that went away drops out).
#[derive(Default)]
struct Targets {
    caps: Mutex<Option<gst::Caps>>,
    srcs: Mutex<Vec<glib::WeakRef<gst_app::AppSrc>>>,
}

impl Targets {
    fn attach(&self, src: &gst_app::AppSrc) {
        if let Some(caps) = self.caps.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            src.set_caps(Some(caps));
        }
        self.srcs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(src.downgrade());
    }

    fn push(&self, buffer: &gst::Buffer) {
        let mut srcs = self.srcs.lock().unwrap_or_else(|p| p.into_inner());
        srcs.retain(|w| match w.upgrade() {
            // A stopped media's appsrc answers Flushing: forget it.
            Some(src) => src.push_buffer(buffer.clone()) != Err(gst::FlowError::Flushing),
            None => false,
        });
    }
}

/// Reads a file in real time, over and over, and pushes each access unit to its targets.
struct Feeder {
    targets: Arc<Targets>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: JoinHandle<()>,
}

impl Feeder {
    fn start(file: &Path, delay: Duration) -> Result<Self, IngestError> {
        if !file.is_file() {
            return Err(IngestError::Footage(format!(
                "{} does not exist",
                file.display()
            )));
        }
        let loc = file.to_string_lossy().replace('"', "\\\"");
        let pipeline = gst::parse::launch(&format!(
            "filesrc location=\"{loc}\" ! qtdemux ! h264parse \
             ! video/x-h264,stream-format=avc,alignment=au ! appsink name=sink sync=true max-buffers=4"
        ))
        .map_err(|e| IngestError::Gst(e.to_string()))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| IngestError::Gst("the feeder is not a pipeline".into()))?;
        let sink = pipeline
            .by_name("sink")
            .and_then(|e| e.dynamic_cast::<gst_app::AppSink>().ok())
            .ok_or_else(|| IngestError::Gst("the feeder has no appsink".into()))?;
        pipeline
            .set_state(gst::State::Paused)
            .map_err(|e| IngestError::Footage(format!("{}: {e}", file.display())))?;
        let caps = sink
            .try_pull_preroll(gst::ClockTime::from_seconds(10))
            .and_then(|s| s.caps().map(|c| c.to_owned()))
            .ok_or_else(|| IngestError::Footage(format!("{}: no H.264 video", file.display())))?;
        let targets = Arc::new(Targets {
            caps: Mutex::new(Some(caps)),
            srcs: Mutex::default(),
        });
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("sw-feeder".into())
            .spawn({
                let (targets, stop) = (targets.clone(), stop.clone());
                move || feed(pipeline, sink, delay, &targets, &stop)
            })
            .map_err(|e| IngestError::Gst(e.to_string()))?;
        Ok(Self {
            targets,
            stop,
            thread,
        })
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

fn feed(
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    delay: Duration,
    targets: &Targets,
    stop: &std::sync::atomic::AtomicBool,
) {
    let stopped = || stop.load(std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(delay);
    if pipeline.set_state(gst::State::Playing).is_err() {
        tracing::error!("camera server: a feeder cannot play its file");
        return;
    }
    while !stopped() {
        match sink.try_pull_sample(gst::ClockTime::from_mseconds(200)) {
            Some(sample) => {
                let Some(buffer) = sample.buffer() else {
                    continue;
                };
                // New metadata over the same memory: the appsrcs stamp it on arrival (live, seamless
                // across loops).
                let mut copy = buffer.copy();
                {
                    let b = copy.make_mut();
                    b.set_pts(gst::ClockTime::NONE);
                    b.set_dts(gst::ClockTime::NONE);
                    b.set_duration(gst::ClockTime::NONE);
                }
                targets.push(&copy);
            }
            None if sink.is_eos()
                && pipeline
                    .seek_simple(
                        gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
                        gst::ClockTime::ZERO,
                    )
                    .is_err() =>
            {
                tracing::error!("camera server: a feeder cannot go back to its file's start");
                break;
            }
            None => {}
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
}

glib::wrapper! {
    /// A media factory whose cameras of one phase share one media: the key is the phase, not the path.
    pub struct PhasedFactory(ObjectSubclass<imp::PhasedFactory>) @extends rtsp::RTSPMediaFactory;
}

impl PhasedFactory {
    fn new(kind: String, targets: Vec<Arc<Targets>>) -> Self {
        let f: Self = glib::Object::new();
        f.set_shared(true);
        let _ = f.imp().state.set((kind, targets));
        f
    }
}

mod imp {
    use super::*;

    #[derive(Default)]
    pub struct PhasedFactory {
        pub(super) state: std::sync::OnceLock<(String, Vec<Arc<Targets>>)>,
    }

    impl PhasedFactory {
        /// The phase of the camera `/cam/N[/sub]` names.
        fn phase(&self, url: &rtsp::gst_rtsp::RTSPUrl) -> Option<(usize, &Arc<Targets>)> {
            let (_, targets) = self.state.get()?;
            let uri = url.request_uri();
            let (_, path) = uri.split_once("/cam/")?;
            let n: usize = path.split(['/', '?']).next()?.parse().ok()?;
            let p = n % targets.len();
            Some((p, &targets[p]))
        }
    }

    #[glib::object_subclass]
    impl ObjectSubclass for PhasedFactory {
        const NAME: &'static str = "SwPhasedFactory";
        type Type = super::PhasedFactory;
        type ParentType = rtsp::RTSPMediaFactory;
    }

    impl ObjectImpl for PhasedFactory {}

    impl RTSPMediaFactoryImpl for PhasedFactory {
        fn gen_key(&self, url: &rtsp::gst_rtsp::RTSPUrl) -> Option<glib::GString> {
            let (kind, _) = self.state.get()?;
            let (p, _) = self.phase(url)?;
            Some(format!("{kind}-{p}").into())
        }

        fn create_element(&self, url: &rtsp::gst_rtsp::RTSPUrl) -> Option<gst::Element> {
            let (_, targets) = self.phase(url)?;
            let bin = gst::parse::bin_from_description(
                "appsrc name=src is-live=true do-timestamp=true format=time max-bytes=2000000 block=false \
                 ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1",
                false,
            )
            .ok()?;
            let src = bin
                .by_name("src")
                .and_then(|e| e.dynamic_cast::<gst_app::AppSrc>().ok())?;
            targets.attach(&src);
            Some(bin.upcast())
        }
    }
}
