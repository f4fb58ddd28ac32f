//! One supervisor per camera: Connecting → Streaming → (Stalled | error) → Backoff → Connecting.
//! A stall watchdog catches servers that freeze with the socket open; backoff is exponential with
//! jitter and a cap, and resets once a stream has run well for a while.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::pipeline::{FrameTap, Pacing, StreamSpec, Templates};
use crate::config::SourceUrl;
use crate::health::{CameraHealth, StreamState};
use crate::pool::FrameSink;
use crate::types::Clock;

#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// A stream that ran at least this long starts the next backoff from `initial` again.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// Delay before attempt `n` (0-based): initial·2ⁿ capped at max, with "equal jitter" (half fixed,
    /// half random) so a district of cameras that lost one recorder does not reconnect in lockstep.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max);
        base / 2 + base.mul_f64(fastrand::f64() / 2.0)
    }
}

pub struct CameraTask {
    pub index: usize,
    pub spec: StreamSpec,
    pub stall: Duration,
    pub health: Arc<CameraHealth>,
}

pub struct Context {
    pub templates: Templates,
    pub dir: PathBuf,
    pub pacing: Pacing,
    pub loop_files: bool,
    pub backoff: Backoff,
    pub sink: FrameSink,
    pub clock: Arc<dyn Clock>,
    pub stop: Arc<AtomicBool>,
    /// Nice value for ingest threads (0 leaves them at the workers' priority).
    pub nice: i32,
}

enum Outcome {
    /// Asked to stop.
    Stopped,
    /// A file reached its end and files do not loop.
    Finished,
    /// The server ended a stream that had been delivering frames: reconnect promptly.
    Ended,
    Failed(String),
}

pub fn supervise(task: CameraTask, ctx: Arc<Context>) {
    lower_priority(ctx.nice);
    let mut attempt = 0u32;
    let health = task.health.clone();
    loop {
        health.set_state(StreamState::Connecting);
        let started = Instant::now();
        let outcome = run_once(&task, &ctx);
        match outcome {
            Outcome::Stopped => break,
            Outcome::Finished => {
                tracing::info!(camera = %health.camera, "footage finished");
                break;
            }
            Outcome::Ended | Outcome::Failed(_) => {
                let (reason, healthy) = match outcome {
                    Outcome::Failed(r) => (
                        redact(&r, &task.spec.source),
                        started.elapsed() >= ctx.backoff.reset_after,
                    ),
                    _ => ("the server ended the stream".to_string(), true),
                };
                if healthy {
                    attempt = 0;
                }
                let delay = ctx.backoff.delay(attempt);
                attempt = attempt.saturating_add(1);
                health.restarts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(camera = %health.camera, source = %task.spec.source.redacted(), retry_in_ms = delay.as_millis() as u64, "stream failed: {reason}");
                health.set_error(reason);
                if health.state() != StreamState::Stalled {
                    health.set_state(StreamState::Backoff);
                }
                if sleep_unless_stopped(delay, &ctx.stop) {
                    break;
                }
            }
        }
    }
    health.set_state(StreamState::Stopped);
}

/// Under overload, analysis must win over decoding frames that will be dropped anyway. Threads inherit
/// their creator's nice value, and GStreamer creates a pipeline's streaming threads from the thread that
/// starts it, so lowering this thread's priority lowers the whole camera's. Needs no privilege.
fn lower_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    // SAFETY: setpriority on the calling thread (who = 0 with PRIO_PROCESS means the caller's TID on Linux).
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc != 0 {
        tracing::debug!(nice, "could not lower the ingest thread's priority");
    }
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        std::thread::sleep(
            Duration::from_millis(50).min(end.saturating_duration_since(Instant::now())),
        );
    }
    stop.load(Ordering::Relaxed)
}

fn run_once(task: &CameraTask, ctx: &Context) -> Outcome {
    let (pipeline, appsink) =
        match ctx
            .templates
            .build(&ctx.dir, &task.spec, ctx.pacing, &task.health)
        {
            Ok(p) => p,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
    let watch_base = Instant::now();
    let last_frame = Arc::new(AtomicI64::new(-1));
    FrameTap {
        camera: task.index,
        health: task.health.clone(),
        sink: ctx.sink.clone(),
        clock: ctx.clock.clone(),
        pacing: ctx.pacing,
        media_epoch: ctx.clock.now(),
        last_frame_mono: last_frame.clone(),
        watch_base,
    }
    .attach(&appsink);
    let outcome = watch(task, ctx, &pipeline, &last_frame, watch_base);
    // A pipeline stuck on a frozen server can take seconds to reach Null; do not hold the supervisor.
    std::thread::spawn(move || {
        let _ = pipeline.set_state(gst::State::Null);
    });
    outcome
}

fn watch(
    task: &CameraTask,
    ctx: &Context,
    pipeline: &gst::Pipeline,
    last_frame: &AtomicI64,
    base: Instant,
) -> Outcome {
    if let Err(e) = pipeline.set_state(gst::State::Playing) {
        return Outcome::Failed(format!("cannot start the pipeline: {e}"));
    }
    let Some(bus) = pipeline.bus() else {
        return Outcome::Failed("pipeline has no bus".into());
    };
    let is_file = matches!(task.spec.source, SourceUrl::File(_));
    // The first frame may take a GOP or two and an RTSP handshake: allow more than the stall time.
    let first_frame_grace = task.stall.max(Duration::from_secs(10));
    loop {
        if ctx.stop.load(Ordering::Relaxed) {
            return Outcome::Stopped;
        }
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) {
            match msg.view() {
                gst::MessageView::Error(err) => {
                    if let Some(reason) = rtsp_refusal(&err.error(), &task.spec.source) {
                        return Outcome::Failed(reason.into());
                    }
                    let src = msg
                        .src()
                        .map(|s| s.path_string().to_string())
                        .unwrap_or_default();
                    return Outcome::Failed(format!("{src}: {}", err.error()));
                }
                gst::MessageView::Eos(_) if is_file && ctx.loop_files => {
                    if let Err(e) = pipeline.seek_simple(
                        gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
                        gst::ClockTime::ZERO,
                    ) {
                        return Outcome::Failed(format!("cannot loop the footage: {e}"));
                    }
                }
                gst::MessageView::Eos(_) if is_file => return Outcome::Finished,
                gst::MessageView::Eos(_) if last_frame.load(Ordering::Relaxed) >= 0 => {
                    return Outcome::Ended;
                }
                gst::MessageView::Eos(_) => {
                    return Outcome::Failed("the server ended the stream before any frame".into());
                }
                _ => {}
            }
        }
        let now = base.elapsed().as_millis() as i64;
        let last = last_frame.load(Ordering::Relaxed);
        let silent_for = silence(now, last);
        let limit = if last < 0 {
            first_frame_grace
        } else {
            task.stall
        };
        if silent_for > limit
            && !(is_file && matches!(ctx.pacing, Pacing::Unthrottled { lossless: true }))
        {
            task.health.set_state(StreamState::Stalled);
            return Outcome::Failed(format!(
                "no frame for {:.1} s (stalled)",
                silent_for.as_secs_f32()
            ));
        }
    }
}

/// How long the stream has been silent at `now`, given the last frame's time (both ms since the watch
/// began; `last` < 0 before the first frame).
fn silence(now: i64, last: i64) -> Duration {
    // A frame may land between the two reads, putting `last` after `now`: that is no silence, not a
    // negative one wrapped to 585 million years (which restarted a healthy stream as "stalled").
    Duration::from_millis(u64::try_from(now - last.max(0)).unwrap_or(0))
}

/// What an operator should read when the camera refused us: rtspsrc's own words ("Unauthorized", after
/// the element path) do not say that the password is what to check.
fn rtsp_refusal(err: &gst::glib::Error, source: &SourceUrl) -> Option<&'static str> {
    let SourceUrl::Rtsp { user, .. } = source else {
        return None;
    };
    // rtspsrc raises RESOURCE/NOT_AUTHORIZED for a 401 that survives its retry with our credentials.
    if !err.matches(gst::ResourceError::NotAuthorized) {
        return None;
    }
    Some(auth_refused(user.is_some()))
}

/// The operator's words for a 401 that survived a retry with our credentials (if the URL has any): the
/// same from every receiver, so the page and the logs read alike whichever one a camera uses.
pub(super) fn auth_refused(has_user: bool) -> &'static str {
    if has_user {
        "authentication failed (401): the camera refused the user name and password in the URL"
    } else {
        "authentication failed (401): the camera requires a user name and password; the URL has none"
    }
}

/// Belt and braces: even though credentials are never put into the pipeline's location, scrub them from
/// any message that might echo them.
pub(super) fn redact(msg: &str, source: &SourceUrl) -> String {
    match source {
        SourceUrl::Rtsp {
            password: Some(p), ..
        } if !p.is_empty() => msg.replace(p.as_str(), "***"),
        _ => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            reset_after: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let d0 = b.delay(0);
            assert!(
                d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100),
                "{d0:?}"
            );
            let d3 = b.delay(3);
            assert!(
                d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800),
                "{d3:?}"
            );
            let d30 = b.delay(30);
            assert!(
                d30 >= Duration::from_secs(1) && d30 <= Duration::from_secs(2),
                "{d30:?}"
            );
        }
    }

    #[test]
    fn a_frame_that_lands_while_the_watchdog_reads_the_clock_is_no_silence() {
        // The appsink thread stores a frame's time between the watchdog's reading of `now` and of `last`.
        assert_eq!(silence(1_000, 1_003), Duration::ZERO);
        assert_eq!(silence(1_000, 400), Duration::from_millis(600));
        assert_eq!(silence(1_000, -1), Duration::from_millis(1_000));
    }

    #[test]
    fn redaction_scrubs_the_password() {
        let src = SourceUrl::Rtsp {
            url: "rtsp://h/s".into(),
            user: Some("u".into()),
            password: Some("hunter2".into()),
        };
        assert_eq!(redact("auth hunter2 failed", &src), "auth *** failed");
    }
}
