//! An RTSP server for recorded footage (gst-rtsp-server), in process: the demo's cameras, the
//! benchmark's virtual cameras and the tests' real RTSP peer. Each client gets its own media, which
//! plays the file in real time from the start and either ends with it (the stream's end, as a camera
//! that goes away: tests rely on it) or, [`looping`](FootageOptions::looping), starts it again
//! seamlessly with timestamps that keep increasing, as a live camera's stream never ends. A server can
//! demand basic auth, as real cameras do, so a wrong password meets a real 401.

use std::path::PathBuf;
use std::thread::JoinHandle;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

use super::IngestError;

/// Credentials a footage server demands of every client (RTSP basic auth); others get 401.
#[derive(Clone)]
pub struct BasicAuth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BasicAuth({}:***)", self.user)
    }
}

/// The media factory role that basic-auth clients get, and the permissions it carries.
const VIEWER_ROLE: &str = "viewer";

/// How a footage server serves its files.
#[derive(Clone, Debug, Default)]
pub struct FootageOptions {
    /// Credentials every client must give (RTSP basic auth).
    pub auth: Option<BasicAuth>,
    /// Play each file again from its start when it ends, in one stream that never ends; otherwise the
    /// stream ends (EOS, then the RTSP session's end) with the file.
    pub looping: bool,
}

pub struct FootageServer {
    port: u16,
    main_loop: glib::MainLoop,
    thread: Option<JoinHandle<()>>,
}

impl FootageServer {
    /// Serves each `(mount, file)` at `rtsp://127.0.0.1:PORT/mount`. `port` 0 picks a free one.
    /// Each stream ends with its file.
    pub fn start(mounts: &[(String, PathBuf)], port: u16) -> Result<Self, IngestError> {
        Self::start_with(mounts, port, FootageOptions::default())
    }

    /// Like [`FootageServer::start`]; with `auth`, every mount requires those credentials.
    pub fn start_with_auth(
        mounts: &[(String, PathBuf)],
        port: u16,
        auth: Option<BasicAuth>,
    ) -> Result<Self, IngestError> {
        Self::start_with(
            mounts,
            port,
            FootageOptions {
                auth,
                looping: false,
            },
        )
    }

    /// Like [`FootageServer::start`], but each stream plays its file over and over and never ends.
    pub fn start_looping(mounts: &[(String, PathBuf)], port: u16) -> Result<Self, IngestError> {
        Self::start_with(
            mounts,
            port,
            FootageOptions {
                auth: None,
                looping: true,
            },
        )
    }

    pub fn start_with(
        mounts: &[(String, PathBuf)],
        port: u16,
        options: FootageOptions,
    ) -> Result<Self, IngestError> {
        let FootageOptions { auth, looping } = options;
        gst::init().map_err(|e| IngestError::Gst(e.to_string()))?;
        for (_, f) in mounts {
            if !f.is_file() {
                return Err(IngestError::Footage(format!(
                    "{} does not exist",
                    f.display()
                )));
            }
        }
        let mounts = mounts.to_vec();
        let (port, main_loop, thread) = serve(port, move |server| {
            let points = server
                .mount_points()
                .expect("a new server has mount points");
            if let Some(a) = &auth {
                let gate = rtsp::RTSPAuth::new();
                let token = rtsp::RTSPToken::builder()
                    .field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE, VIEWER_ROLE)
                    .build();
                gate.add_basic(
                    rtsp::RTSPAuth::make_basic(&a.user, &a.password).as_str(),
                    &token,
                );
                server.set_auth(Some(&gate));
            }
            for (mount, file) in &mounts {
                let factory = rtsp::RTSPMediaFactory::new();
                if looping {
                    factory.set_launch(
                        "( appsrc name=src format=time ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )",
                    );
                    let file = file.clone();
                    factory.connect_media_configure(move |_, media| {
                        if let Err(e) = feed_looping(media, &file) {
                            tracing::error!(file = %file.display(), error = %e, "footage server: cannot play the file");
                        }
                    });
                } else {
                    factory.set_launch(&format!(
                        "( {} ! rtph264pay name=pay0 pt=96 config-interval=-1 )",
                        reader_launch(file)
                    ));
                }
                factory.set_shared(false);
                if auth.is_some() {
                    factory.add_role_from_structure(
                        &gst::Structure::builder(VIEWER_ROLE)
                            .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                            .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                            .build(),
                    );
                }
                points.add_factory(&format!("/{}", mount.trim_start_matches('/')), factory);
            }
        })?;
        Ok(Self {
            port,
            main_loop,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, mount: &str) -> String {
        format!(
            "rtsp://127.0.0.1:{}/{}",
            self.port,
            mount.trim_start_matches('/')
        )
    }
}

/// Runs an RTSP server on 127.0.0.1:`port` (0: any free port) in a thread of its own, with its own main
/// context; `setup` mounts what it serves. Returns the bound port, the loop to quit and the thread.
pub(super) fn serve(
    port: u16,
    setup: impl FnOnce(&rtsp::RTSPServer) + Send + 'static,
) -> Result<(u16, glib::MainLoop, JoinHandle<()>), IngestError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("sw-rtsp-server".into())
        .spawn(move || {
            let ctx = glib::MainContext::new();
            let main_loop = glib::MainLoop::new(Some(&ctx), false);
            let server = rtsp::RTSPServer::new();
            server.set_address("127.0.0.1");
            server.set_service(&port.to_string());
            setup(&server);
            match server.attach(Some(&ctx)) {
                // The source lives in this thread's private context and goes with it.
                Ok(_source) => {
                    let _ = tx.send(Ok((server.bound_port() as u16, main_loop.clone())));
                    main_loop.run();
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("cannot listen on 127.0.0.1:{port}: {e}")));
                }
            }
        })
        .map_err(|e| IngestError::Gst(e.to_string()))?;
    let (port, main_loop) = rx
        .recv()
        .map_err(|_| IngestError::Footage("the RTSP server thread died".into()))?
        .map_err(IngestError::Footage)?;
    Ok((port, main_loop, thread))
}

/// The elements that read `file`'s H.264 video, in order, ready to be linked on.
fn reader_launch(file: &std::path::Path) -> String {
    let loc = file.to_string_lossy().replace('"', "\\\"");
    format!("filesrc location=\"{loc}\" ! qtdemux ! h264parse")
}

/// Plays `file` over and over into the media's `appsrc`: a reader pipeline of its own demuxes the file
/// (as fast as the appsrc takes it; the media's sinks pace it in real time) and goes back to the start at
/// its end, each pass shifted by the time of the passes before, so timestamps keep increasing.
fn feed_looping(media: &rtsp::RTSPMedia, file: &std::path::Path) -> Result<(), String> {
    let src = media
        .element()
        .dynamic_cast::<gst::Bin>()
        .map_err(|_| "the media is not a bin".to_string())?
        .by_name("src")
        .and_then(|e| e.dynamic_cast::<gst_app::AppSrc>().ok())
        .ok_or("the media has no appsrc")?;
    let reader = gst::parse::launch(&format!(
        "{} ! appsink name=sink sync=false max-buffers=16",
        reader_launch(file)
    ))
    .map_err(|e| e.to_string())?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "the reader is not a pipeline".to_string())?;
    let sink = reader
        .by_name("sink")
        .and_then(|e| e.dynamic_cast::<gst_app::AppSink>().ok())
        .ok_or("the reader has no appsink")?;
    reader
        .set_state(gst::State::Playing)
        .map_err(|e| format!("starting the reader: {e}"))?;
    let mut looper = Looper {
        reader: Reader(reader),
        sink,
        offset: gst::ClockTime::ZERO,
        end: gst::ClockTime::ZERO,
        caps_set: false,
    };
    src.set_callbacks(
        gst_app::AppSrcCallbacks::builder()
            .need_data(move |src, _| looper.feed(src))
            .build(),
    );
    Ok(())
}

/// A reader pipeline, stopped when it goes (with its media).
struct Reader(gst::Pipeline);

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

struct Looper {
    reader: Reader,
    sink: gst_app::AppSink,
    /// Added to the timestamps of the current pass: where the passes before it ended.
    offset: gst::ClockTime,
    /// Where the current pass ends so far (its latest buffer's end, shifted).
    end: gst::ClockTime,
    caps_set: bool,
}

impl Looper {
    /// Pushes the next buffer into `src`; at the file's end, starts it again. Runs on the appsrc's
    /// streaming thread, which waits for data anyway; returns when the media stops (the pad flushes).
    fn feed(&mut self, src: &gst_app::AppSrc) {
        let flushing = || {
            src.static_pad("src")
                .is_none_or(|p| p.pad_flags().contains(gst::PadFlags::FLUSHING))
        };
        loop {
            if flushing() {
                return;
            }
            if let Some(sample) = self
                .sink
                .try_pull_sample(gst::ClockTime::from_mseconds(100))
            {
                let (Some(buffer), Some(caps)) = (sample.buffer_owned(), sample.caps()) else {
                    continue;
                };
                if !self.caps_set {
                    src.set_caps(Some(&caps.to_owned()));
                    self.caps_set = true;
                }
                let mut buffer = buffer;
                let b = buffer.make_mut();
                let pts = b.pts().map(|t| t + self.offset);
                let dts = b.dts().map(|t| t + self.offset);
                b.set_pts(pts);
                b.set_dts(dts);
                let duration = b.duration().unwrap_or(gst::ClockTime::from_mseconds(40));
                if let Some(t) = pts.or(dts) {
                    self.end = self.end.max(t + duration);
                }
                let _ = src.push_buffer(buffer);
                return;
            }
            if let Some(msg) = self
                .reader
                .0
                .bus()
                .and_then(|b| b.pop_filtered(&[gst::MessageType::Error]))
            {
                tracing::error!(message = ?msg, "footage server: the file cannot be read");
                let _ = src.end_of_stream();
                return;
            }
            if self.sink.is_eos() {
                // A pass that gave nothing would only spin: end the stream instead.
                if self.end == self.offset {
                    let _ = src.end_of_stream();
                    return;
                }
                self.offset = self.end;
                if let Err(e) = self.reader.0.seek_simple(
                    gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
                    gst::ClockTime::ZERO,
                ) {
                    tracing::error!(error = %e, "footage server: cannot go back to the file's start");
                    let _ = src.end_of_stream();
                    return;
                }
            }
        }
    }
}

impl Drop for FootageServer {
    fn drop(&mut self) {
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
