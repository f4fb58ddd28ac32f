//! RTSP without a thread per camera: one async task per camera on a small tokio runtime the receivers
//! own, each an RTSP session through `retina` (the client of Moonfire NVR) handing encoded access units
//! to a [`UnitSink`]. The task is the camera's supervisor, observable exactly as the GStreamer one in
//! `supervisor.rs`: Connecting → Streaming (first unit) → Stalled | error → Backoff → Connecting, with
//! the same restarts, operator-facing errors, backoff and stall watchdog.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use retina::client::{
    Credentials, Demuxed, InitialSequenceNumberPolicy, PlayOptions, Session, SessionOptions,
    SetupOptions, TcpTransportOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat, VideoFrame};
use retina::rtcp::ReceivedCompoundPacket;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::task::JoinHandle;

use super::IngestError;
use super::supervisor::{Backoff, auth_refused, redact};
use super::units::{Codec, EncodedUnit, LatestKeyframes, UnitSink};
use crate::config::SourceUrl;
use crate::health::{CameraHealth, StreamState};
use crate::types::{Clock, SystemClock};

/// One camera as the RTSP receivers see it.
pub struct ReceiveSpec {
    /// The camera's index in the running configuration (the pool's slot; `EncodedUnit::camera`).
    pub index: usize,
    /// The main (full-resolution) stream. Must be RTSP.
    pub url: SourceUrl,
    /// The camera's sub-stream, if analysis should use it: then it feeds the sink and the main stream
    /// only keeps its latest keyframe for snapshots.
    pub analysis_url: Option<SourceUrl>,
    /// No unit for this long restarts the session (a frozen server keeps its socket open).
    pub stall: Duration,
    pub health: Arc<CameraHealth>,
}

#[derive(Clone)]
pub struct ReceiveOptions {
    pub backoff: Backoff,
    /// Sessions in DESCRIBE/SETUP/PLAY at once: a district opens in parallel without a connect storm.
    pub max_concurrent_opens: usize,
    /// Threads of the receivers' runtime (named `sw-rtsp`): receiving is ~0.06 % of a core per stream.
    pub worker_threads: usize,
    /// Stamps each unit's `captured_at` on arrival.
    pub clock: Arc<dyn Clock>,
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            max_concurrent_opens: 64,
            worker_threads: 2,
            clock: Arc::new(SystemClock),
        }
    }
}

/// The running RTSP sessions of a set of cameras, which may change while they run.
pub struct Receivers {
    /// `None` once shut down.
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    cameras: HashMap<usize, Running>,
}

struct Running {
    task: JoinHandle<()>,
    health: Arc<CameraHealth>,
}

/// What every camera's task shares.
struct Shared {
    sink: Arc<dyn UnitSink>,
    keyframes: Arc<LatestKeyframes>,
    backoff: Backoff,
    clock: Arc<dyn Clock>,
    opens: Semaphore,
}

impl Receivers {
    /// Starts receiving `cameras`. A camera that cannot be reached is no error here: it is retried
    /// with backoff while the others run.
    pub fn start(
        cameras: Vec<ReceiveSpec>,
        sink: Arc<dyn UnitSink>,
        keyframes: Arc<LatestKeyframes>,
        opts: ReceiveOptions,
    ) -> Result<Receivers, IngestError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.worker_threads.max(1))
            // Only name resolution of cameras given by host name blocks; a few threads keep a
            // district's worth of lookups from growing a thread per camera.
            .max_blocking_threads(4)
            .thread_name("sw-rtsp")
            .enable_all()
            .build()
            .map_err(|e| IngestError::Receive(format!("cannot start the RTSP runtime: {e}")))?;
        let mut receivers = Receivers {
            runtime: Some(runtime),
            shared: Arc::new(Shared {
                sink,
                keyframes,
                backoff: opts.backoff,
                clock: opts.clock,
                opens: Semaphore::new(opts.max_concurrent_opens.max(1)),
            }),
            cameras: HashMap::new(),
        };
        for spec in cameras {
            receivers.add(spec)?;
        }
        Ok(receivers)
    }

    /// Starts receiving one more camera.
    pub fn add(&mut self, spec: ReceiveSpec) -> Result<(), IngestError> {
        if self.cameras.contains_key(&spec.index) {
            return Err(IngestError::Receive(format!(
                "camera {} is already being received",
                spec.index
            )));
        }
        let Some(runtime) = &self.runtime else {
            return Err(IngestError::Receive("the receivers have stopped".into()));
        };
        let camera = Arc::new(Camera {
            index: spec.index,
            main: Target::new(&spec.url)?,
            analysis: spec.analysis_url.as_ref().map(Target::new).transpose()?,
            stall: spec.stall,
            health: spec.health.clone(),
        });
        let task = runtime.spawn(supervise(camera, self.shared.clone()));
        self.cameras.insert(
            spec.index,
            Running {
                task,
                health: spec.health,
            },
        );
        Ok(())
    }

    /// Stops receiving camera `index` (its sessions are dropped, its latest keyframe forgotten); false
    /// if it was not being received. Returns once its task has ended, so its health is final.
    pub fn remove(&mut self, index: usize) -> bool {
        let Some(camera) = self.cameras.remove(&index) else {
            return false;
        };
        camera.task.abort();
        // An aborted task ends at its next await, within microseconds of a worker reaching it; until
        // then it could still write the camera's health.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !camera.task.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        camera.health.set_state(StreamState::Stopped);
        self.shared.keyframes.clear(index);
        true
    }

    /// Tears every session down, ends every task and the runtime. Does not wait for servers: a frozen
    /// one cannot hold it up.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        for camera in self.cameras.values() {
            camera.task.abort();
        }
        // Shutting down drops every task (and with it every session) on the workers; the wait only
        // covers a name lookup in progress. From inside another runtime blocking is not allowed.
        if tokio::runtime::Handle::try_current().is_ok() {
            runtime.shutdown_background();
        } else {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
        for camera in self.cameras.values() {
            camera.health.set_state(StreamState::Stopped);
        }
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A camera's task's view of it.
struct Camera {
    index: usize,
    main: Target,
    analysis: Option<Target>,
    stall: Duration,
    health: Arc<CameraHealth>,
}

/// Where one session connects, with its credentials kept apart from the URL.
struct Target {
    source: SourceUrl,
    url: url::Url,
    creds: Option<Credentials>,
}

impl Target {
    fn new(source: &SourceUrl) -> Result<Self, IngestError> {
        let SourceUrl::Rtsp {
            url,
            user,
            password,
        } = source
        else {
            return Err(IngestError::Receive(format!(
                "{} is not an RTSP URL: the RTSP client receives only rtsp:// sources",
                source.redacted()
            )));
        };
        let parsed = url::Url::parse(url).map_err(|e| {
            IngestError::Receive(format!("{}: not a valid URL: {e}", source.redacted()))
        })?;
        Ok(Self {
            source: source.clone(),
            url: parsed,
            creds: user.as_ref().map(|u| Credentials {
                username: u.clone(),
                password: password.clone().unwrap_or_default(),
            }),
        })
    }
}

/// What a session's units are for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The camera's only stream: analysed, and its keyframes kept for snapshots.
    Only,
    /// The camera's sub-stream: analysed. The camera's health follows this session.
    Analysis,
    /// The main stream beside a sub-stream: only its latest keyframe is kept, for snapshots.
    Snapshots,
}

impl Role {
    fn analysed(self) -> bool {
        self != Role::Snapshots
    }
    fn keeps_keyframes(self) -> bool {
        self != Role::Analysis
    }
}

async fn supervise(camera: Arc<Camera>, shared: Arc<Shared>) {
    match &camera.analysis {
        None => run_sessions(&camera, &camera.main, Role::Only, &shared).await,
        Some(sub) => {
            tokio::join!(
                run_sessions(&camera, sub, Role::Analysis, &shared),
                run_sessions(&camera, &camera.main, Role::Snapshots, &shared),
            );
        }
    }
}

enum Outcome {
    /// The server ended a stream that had been delivering units: reconnect promptly.
    Ended,
    Failed(String),
}

/// One session's supervisor: connects, receives until the session fails, backs off, again. Runs until
/// its task is aborted.
async fn run_sessions(camera: &Camera, target: &Target, role: Role, shared: &Shared) {
    let health = &camera.health;
    let mut attempt = 0u32;
    loop {
        if role.analysed() {
            health.set_state(StreamState::Connecting);
        }
        let Ok(permit) = shared.opens.acquire().await else {
            return; // never closed
        };
        let started = Instant::now();
        let outcome = receive_once(camera, target, role, shared, permit).await;
        let (reason, healthy) = match outcome {
            Outcome::Ended => ("the server ended the stream".to_string(), true),
            Outcome::Failed(r) => (
                redact(&r, &target.source),
                started.elapsed() >= shared.backoff.reset_after,
            ),
        };
        if healthy {
            attempt = 0;
        }
        let delay = shared.backoff.delay(attempt);
        attempt = attempt.saturating_add(1);
        let source = target.source.redacted();
        let retry_in_ms = delay.as_millis() as u64;
        if role.analysed() {
            tracing::warn!(camera = %health.camera, %source, retry_in_ms, "stream failed: {reason}");
            health.set_error(reason);
            if health.state() != StreamState::Stalled {
                health.set_state(StreamState::Backoff);
            }
            // Last, so whoever sees the count go up reads the error and state that go with it.
            health.restarts.fetch_add(1, Ordering::Relaxed);
        } else {
            // Analysis runs on without it; only snapshots fall back to the analysed picture.
            tracing::warn!(camera = %health.camera, %source, retry_in_ms, "main stream (snapshots) failed: {reason}");
        }
        tokio::time::sleep(delay).await;
    }
}

/// One session, from DESCRIBE until it fails.
async fn receive_once(
    camera: &Camera,
    target: &Target,
    role: Role,
    shared: &Shared,
    permit: SemaphorePermit<'_>,
) -> Outcome {
    // The handshake and the first unit (a GOP or two away) get more than the stall time.
    let grace = camera.stall.max(Duration::from_secs(10));
    let opened = tokio::time::Instant::now();
    let (mut session, codec) = match tokio::time::timeout_at(opened + grace, open(target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(reason)) => return Outcome::Failed(reason),
        Err(_) => return stalled(camera, role, opened.elapsed()),
    };
    drop(permit);
    // The watchdog's timer is not moved per unit: when it fires, it is set again from the last unit.
    let watchdog = tokio::time::sleep_until(opened + grace);
    tokio::pin!(watchdog);
    let mut last_unit: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            item = session.next() => match item {
                Some(Ok(CodecItem::VideoFrame(frame))) => {
                    let received = Instant::now();
                    if last_unit.is_none() && role.analysed() {
                        camera.health.set_state(StreamState::Streaming);
                    }
                    last_unit = Some(tokio::time::Instant::from_std(received));
                    deliver(camera, role, shared, codec, frame, received);
                }
                // A server ends a stream with an RTCP BYE and may keep the connection open after it.
                Some(Ok(CodecItem::Rtcp(rtcp))) if says_goodbye(&rtcp) => {
                    return ended(last_unit.is_some());
                }
                // Other reports and other media: no sign of a live picture.
                Some(Ok(_)) => {}
                Some(Err(e)) => return Outcome::Failed(headline(&e)),
                None => return ended(last_unit.is_some()),
            },
            () = &mut watchdog => {
                let due = last_unit.map_or(opened + grace, |t| t + camera.stall);
                if due > tokio::time::Instant::now() {
                    watchdog.as_mut().reset(due);
                } else {
                    let silent = last_unit.unwrap_or(opened).elapsed();
                    return stalled(camera, role, silent);
                }
            }
        }
    }
}

fn ended(after_units: bool) -> Outcome {
    if after_units {
        Outcome::Ended
    } else {
        Outcome::Failed("the server ended the stream before any frame".into())
    }
}

/// Whether a compound RTCP packet holds a BYE (RFC 3550 §6.6, packet type 203).
fn says_goodbye(rtcp: &ReceivedCompoundPacket) -> bool {
    const BYE: u8 = 203;
    rtcp.pkts().any(|p| p.payload_type() == BYE)
}

fn stalled(camera: &Camera, role: Role, silent: Duration) -> Outcome {
    if role.analysed() {
        camera.health.set_state(StreamState::Stalled);
    }
    Outcome::Failed(format!(
        "no frame for {:.1} s (stalled)",
        silent.as_secs_f32()
    ))
}

/// Annex B with the parameter sets in front of every keyframe: retina writes the start codes and
/// prepends the sets as it assembles a picture, so a unit costs the one buffer it is built in.
/// (`SIMPLE` also frames AAC as ADTS, which no session here sets up.)
const UNIT_FORMAT: FrameFormat = FrameFormat::SIMPLE;

/// DESCRIBE, SETUP of the first video stream over TCP, PLAY.
async fn open(target: &Target) -> Result<(Demuxed, Codec), String> {
    let options = SessionOptions::default()
        .creds(target.creds.clone())
        .user_agent("streetwatch".into());
    let mut session = Session::describe(target.url.clone(), options)
        .await
        .map_err(|e| refusal(&e, target))?;
    let (index, stream) = session
        .streams()
        .iter()
        .enumerate()
        .find(|(_, s)| s.media() == "video")
        .ok_or("the camera offers no video stream")?;
    let codec = match stream.encoding_name() {
        "h264" => Codec::H264,
        "h265" => Codec::H265,
        other => {
            return Err(format!(
                "the camera sends {other} video; the RTSP client receives H.264 and H.265 only: \
                 set receiver = \"gstreamer\" for this camera"
            ));
        }
    };
    session
        .setup(
            index,
            SetupOptions::default()
                .transport(Transport::Tcp(TcpTransportOptions::default()))
                .frame_format(UNIT_FORMAT),
        )
        .await
        .map_err(|e| refusal(&e, target))?;
    // gst-rtsp-server's RTP-Info seq made ~0.5 % of sessions fail right after PLAY ("Out-of-order
    // packet or large loss"); the first packet's own number is the one to trust.
    let playing = session
        .play(PlayOptions::default().initial_seq(InitialSequenceNumberPolicy::Ignore))
        .await
        .map_err(|e| refusal(&e, target))?;
    let demuxed = playing.demuxed().map_err(|e| headline(&e))?;
    Ok((demuxed, codec))
}

/// A 401 in the operator's words (what to check: the password); other errors by their headline.
fn refusal(e: &retina::Error, target: &Target) -> String {
    if e.status_code() == Some(401) {
        auth_refused(target.creds.is_some()).to_string()
    } else {
        headline(e)
    }
}

/// retina's first line says what went wrong; the lines after it are connection and packet context
/// for a packet capture, not for an operator.
fn headline(e: &retina::Error) -> String {
    let text = e.to_string();
    match text.split_once('\n') {
        Some((first, _)) => first.to_string(),
        None => text,
    }
}

/// Hands one picture on: to the sink if analysed, to the latest keyframes if it is the main stream's.
fn deliver(
    camera: &Camera,
    role: Role,
    shared: &Shared,
    codec: Codec,
    frame: VideoFrame,
    received: Instant,
) {
    let at = shared.clock.now();
    if role.analysed() {
        camera.health.unit_received(at);
    }
    // retina prepends the parameter sets once it knows them; a keyframe before that cannot be
    // decoded on its own, so it is not offered as one.
    let keyframe = frame.is_random_access_point() && starts_with_parameter_set(codec, frame.data());
    let unit = EncodedUnit {
        camera: camera.index,
        codec,
        keyframe,
        data: Bytes::from(frame.into_data()),
        captured_at: at,
        received,
    };
    if role.keeps_keyframes() {
        shared.keyframes.offer(&unit);
    }
    if role.analysed() {
        shared.sink.push(unit);
    }
}

/// Whether an Annex B unit opens with the first parameter set of its codec (H.264 SPS, H.265 VPS).
fn starts_with_parameter_set(codec: Codec, data: &[u8]) -> bool {
    let [0, 0, 0, 1, header, ..] = *data else {
        return false;
    };
    match codec {
        Codec::H264 => header & 0x1f == 7,
        Codec::H265 => (header >> 1) & 0x3f == 32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyframe_counts_only_with_its_parameter_sets_in_front() {
        // H.264: SPS (type 7) then an IDR slice; a bare IDR slice (type 5) cannot be decoded alone.
        assert!(starts_with_parameter_set(
            Codec::H264,
            &[0, 0, 0, 1, 0x67, 0x4d, 0, 0, 0, 1, 0x65]
        ));
        assert!(!starts_with_parameter_set(Codec::H264, &[0, 0, 0, 1, 0x65]));
        // Length-prefixed (not Annex B) is not taken for a start code.
        assert!(!starts_with_parameter_set(Codec::H264, &[0, 0, 0, 9, 0x67]));
        // H.265: VPS is type 32 (header byte 0x40); an IDR_W_RADL slice (19, 0x26) is not.
        assert!(starts_with_parameter_set(
            Codec::H265,
            &[0, 0, 0, 1, 0x40, 0x01]
        ));
        assert!(!starts_with_parameter_set(
            Codec::H265,
            &[0, 0, 0, 1, 0x26, 0x01]
        ));
        assert!(!starts_with_parameter_set(Codec::H264, &[0, 0, 1]));
    }

    #[test]
    fn only_rtsp_sources_are_received() {
        let file = SourceUrl::File("/footage/a.mp4".into());
        let Err(e) = Target::new(&file) else {
            panic!("a file was taken for an RTSP source")
        };
        assert!(e.to_string().contains("not an RTSP URL"), "{e}");
    }
}
