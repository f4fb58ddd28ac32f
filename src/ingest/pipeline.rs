//! GStreamer pipelines built from the templates in `pipelines/`, and the appsink → pool hand-off.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use super::IngestError;
use crate::config::SourceUrl;
use crate::frame::{Frame, Pixels};
use crate::health::{CameraHealth, StreamState};
use crate::pool::FrameSink;
use crate::types::{Clock, Timestamp};

/// How frames from files are timed and handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// Play in real time and stamp frames with the clock, like a live camera.
    Realtime,
    /// Run flat out; frame time is the start time plus the media position. With `lossless`, the
    /// pipeline waits for the pool instead of dropping, so every sampled frame is analysed (evaluation).
    Unthrottled { lossless: bool },
}

/// The three template files, read once.
#[derive(Debug, Clone)]
pub struct Templates {
    rtsp: String,
    file: String,
    keyframe_filter: String,
}

impl Templates {
    pub fn load(dir: &Path) -> Result<Self, IngestError> {
        let read = |name: &str| -> Result<String, IngestError> {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path).map_err(|e| IngestError::Template {
                path: path.clone(),
                message: e.to_string(),
            })?;
            // gst-launch syntax has no comments: drop ours.
            Ok(text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .collect::<Vec<_>>()
                .join(" "))
        };
        Ok(Self {
            rtsp: read("rtsp.pipeline")?,
            file: read("file.pipeline")?,
            keyframe_filter: read("keyframe_filter.pipeline")?,
        })
    }

    fn render(&self, spec: &StreamSpec, pacing: Pacing) -> (String, &'static str) {
        let fps = fraction(spec.fps);
        let filter = if spec.keyframe_only {
            self.keyframe_filter.as_str()
        } else {
            ""
        };
        let (tpl, kind) = match spec.source {
            SourceUrl::Rtsp { .. } => (&self.rtsp, "rtsp.pipeline"),
            SourceUrl::File(_) => (&self.file, "file.pipeline"),
        };
        let (sync, drop) = match pacing {
            Pacing::Realtime => ("true", "true"),
            Pacing::Unthrottled { lossless } => ("false", if lossless { "false" } else { "true" }),
        };
        let text = tpl
            .replace("{keyframe_filter}", filter)
            .replace("{fps}", &fps)
            .replace("{width}", &spec.width.to_string())
            .replace("{sync}", sync)
            .replace("{drop}", drop);
        (text, kind)
    }

    /// Builds one camera's pipeline (not yet playing).
    pub fn build(
        &self,
        dir: &Path,
        spec: &StreamSpec,
        pacing: Pacing,
        spec_health: &Arc<CameraHealth>,
    ) -> Result<(gst::Pipeline, gst_app::AppSink), IngestError> {
        let (text, kind) = self.render(spec, pacing);
        let bad = |message: String| IngestError::Template {
            path: dir.join(kind),
            message,
        };
        let pipeline = gst::parse::launch(&text)
            .map_err(|e| bad(e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| bad("the template is not a pipeline".into()))?;
        let src = pipeline
            .by_name("src")
            .ok_or_else(|| bad("no element named `src`".into()))?;
        match &spec.source {
            SourceUrl::Rtsp {
                url,
                user,
                password,
            } => {
                src.set_property("location", url);
                if let Some(u) = user {
                    src.set_property("user-id", u);
                }
                if let Some(p) = password {
                    src.set_property("user-pw", p);
                }
            }
            SourceUrl::File(path) => src.set_property("location", path.to_string_lossy().as_ref()),
        }
        if let Some(pad) = pipeline.by_name("dec").and_then(|d| d.static_pad("src")) {
            let health = spec_health.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                health.frames_decoded.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
        }
        let sink = pipeline
            .by_name("sink")
            .and_then(|e| e.dynamic_cast::<gst_app::AppSink>().ok())
            .ok_or_else(|| bad("no appsink named `sink`".into()))?;
        Ok((pipeline, sink))
    }
}

/// What one camera's pipeline should produce.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub source: SourceUrl,
    pub fps: f32,
    pub width: u32,
    pub keyframe_only: bool,
}

fn fraction(fps: f32) -> String {
    let milli = (fps * 1000.0).round().max(1.0) as u64;
    let g = gcd(milli, 1000);
    format!("{}/{}", milli / g, 1000 / g)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Everything the appsink callback needs; moved into it.
pub struct FrameTap {
    pub camera: usize,
    pub health: Arc<CameraHealth>,
    pub sink: FrameSink,
    pub clock: Arc<dyn Clock>,
    pub pacing: Pacing,
    /// Frame time of media position zero (unthrottled files).
    pub media_epoch: Timestamp,
    /// Monotonic milliseconds (since `watch_base`) of the last frame: the stall watchdog reads it.
    pub last_frame_mono: Arc<AtomicI64>,
    pub watch_base: Instant,
}

impl FrameTap {
    pub fn attach(self, appsink: &gst_app::AppSink) {
        let mut tap = self;
        let mut info: Option<(gst::Caps, gst_video::VideoInfo)> = None;
        appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let caps = sample.caps().ok_or(gst::FlowError::NotNegotiated)?;
                    if info.as_ref().is_none_or(|(c, _)| c != caps) {
                        let vi = gst_video::VideoInfo::from_caps(caps)
                            .map_err(|_| gst::FlowError::NotNegotiated)?;
                        info = Some((caps.to_owned(), vi));
                    }
                    let vi = &info.as_ref().expect("set above").1;
                    let buffer = sample.buffer_owned().ok_or(gst::FlowError::Error)?;
                    tap.deliver(s, vi, buffer);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }

    fn deliver(&mut self, sink: &gst_app::AppSink, vi: &gst_video::VideoInfo, buffer: gst::Buffer) {
        // How long ago the buffer entered the pipeline: its timestamp is its arrival (live) or its due
        // time (real-time files) in running time. Latency is measured from there, not from the appsink.
        let lag = match (self.pacing, sink.clock(), sink.base_time(), buffer.pts()) {
            (Pacing::Realtime, Some(clock), Some(base), Some(pts)) => clock
                .time()
                .checked_sub(base)
                .and_then(|running| running.checked_sub(pts))
                .map_or(Duration::ZERO, |d| Duration::from_nanos(d.nseconds())),
            _ => Duration::ZERO,
        };
        let received = Instant::now().checked_sub(lag).unwrap_or_else(Instant::now);
        let captured_at = match self.pacing {
            Pacing::Realtime => self.clock.now().plus_ms(-(lag.as_millis() as i64)),
            Pacing::Unthrottled { .. } => self
                .media_epoch
                .plus_ms(buffer.pts().map_or(0, |p| p.mseconds() as i64)),
        };
        let Ok(mapped) = buffer.into_mapped_buffer_readable() else {
            return;
        };
        self.last_frame_mono.store(
            self.watch_base.elapsed().as_millis() as i64,
            Ordering::Relaxed,
        );
        self.health.frame_received(captured_at);
        if self.health.state() != StreamState::Streaming {
            self.health.set_state(StreamState::Streaming);
        }
        let frame = Frame {
            camera: self.camera,
            captured_at,
            received,
            width: vi.width(),
            height: vi.height(),
            stride: vi.stride()[0] as u32,
            pixels: Pixels::Gst(mapped),
        };
        match self.pacing {
            Pacing::Unthrottled { lossless: true } => self.sink.push_lossless(frame),
            _ => self.sink.push(frame),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fps_becomes_a_reduced_fraction() {
        assert_eq!(fraction(2.0), "2/1");
        assert_eq!(fraction(0.5), "1/2");
        assert_eq!(fraction(12.5), "25/2");
    }
}
