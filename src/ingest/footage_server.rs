//! An RTSP server for recorded footage (gst-rtsp-server), in process: the demo's cameras, the
//! benchmark's virtual cameras and the tests' real RTSP peer. Each client gets its own media, which
//! plays the file in real time from the start and ends with it. A server can demand basic auth, as
//! real cameras do, so a wrong password meets a real 401.

use std::path::PathBuf;
use std::thread::JoinHandle;

use gstreamer as gst;
use gstreamer::glib;
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

pub struct FootageServer {
    port: u16,
    main_loop: glib::MainLoop,
    thread: Option<JoinHandle<()>>,
}

impl FootageServer {
    /// Serves each `(mount, file)` at `rtsp://127.0.0.1:PORT/mount`. `port` 0 picks a free one.
    pub fn start(mounts: &[(String, PathBuf)], port: u16) -> Result<Self, IngestError> {
        Self::start_with_auth(mounts, port, None)
    }

    /// Like [`FootageServer::start`]; with `auth`, every mount requires those credentials.
    pub fn start_with_auth(
        mounts: &[(String, PathBuf)],
        port: u16,
        auth: Option<BasicAuth>,
    ) -> Result<Self, IngestError> {
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
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sw-rtsp-server".into())
            .spawn(move || {
                let ctx = glib::MainContext::new();
                let main_loop = glib::MainLoop::new(Some(&ctx), false);
                let server = rtsp::RTSPServer::new();
                server.set_address("127.0.0.1");
                server.set_service(&port.to_string());
                let points = server.mount_points().expect("a new server has mount points");
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
                    let loc = file.to_string_lossy().replace('"', "\\\"");
                    factory.set_launch(&format!(
                        "( filesrc location=\"{loc}\" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
                    ));
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

impl Drop for FootageServer {
    fn drop(&mut self) {
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
