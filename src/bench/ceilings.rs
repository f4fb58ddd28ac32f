//! What the machine can do at all, each stage alone on every core: the inference ceiling (frames/s through
//! the model, no ingest) and the ingest ceiling (keyframes/s decoded and scaled, no inference). A pipeline
//! that needs both shares the cores, so it stays below the lower of the two; how close it gets is the
//! share the bench reports.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use serde::Serialize;

use crate::config::Config;
use crate::frame::{Frame, Pixels};
use crate::infer::Detector;
use crate::types::Timestamp;

/// Excluded from each measurement: sessions and decoders warming up.
const WARM_UP: Duration = Duration::from_secs(1);
const SECONDS: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize)]
pub struct Ceilings {
    /// Threads each stage ran on: one per core.
    pub threads: usize,
    pub seconds: f64,
    pub inference_frames_per_s: f64,
    pub ingest_keyframes_per_s: f64,
    /// Analysed frames/s when the two stages share the cores, as they do in the pipeline: each analysed
    /// frame costs one keyframe decode plus one inference, so 1 / (1/inference + 1/ingest).
    pub combined_frames_per_s: f64,
}

impl Ceilings {
    pub fn lower(&self) -> f64 {
        self.inference_frames_per_s.min(self.ingest_keyframes_per_s)
    }
}

fn combined(inference: f64, ingest: f64) -> f64 {
    if inference <= 0.0 || ingest <= 0.0 {
        return 0.0;
    }
    1.0 / (1.0 / inference + 1.0 / ingest)
}

/// Measures both ceilings with the configuration's model and batch, decoding `clip`'s keyframes to
/// `width` as the cameras do.
pub fn measure(config: &Config, clip: &Path, width: u32) -> anyhow::Result<Ceilings> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let keyframes = Arc::new(keyframes(clip)?);
    eprintln!(
        "ceilings: {threads} threads, {} s each: decoding {} keyframes of {} to {width} px, then the model alone",
        SECONDS.as_secs(),
        keyframes.len(),
        clip.display()
    );
    let ingest = on_every_core(threads, |stop, count| {
        let mut decoder = Decoder::new(width)?;
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            if decoder.decode(&keyframes[i % keyframes.len()])?.is_some() {
                count.fetch_add(1, Ordering::Relaxed);
            }
            i += 1;
        }
        Ok(())
    })?;
    let picture = Decoder::new(width)?
        .decode_fully(&keyframes[0])
        .context("decoding a keyframe for the model")?;
    let manifest = crate::app::load_model(config)?;
    let (batch, threshold) = (config.runtime.max_batch, config.runtime.score_threshold);
    let inference = on_every_core(threads, |stop, count| {
        let mut detector = Detector::new(manifest.clone(), batch, threshold)?;
        let frames: Vec<Frame> = (0..detector.max_batch())
            .map(|i| Frame::from_rgb_image(i, Timestamp(0), picture.clone()))
            .collect();
        let mut out = vec![Vec::new(); frames.len()];
        while !stop.load(Ordering::Relaxed) {
            detector.detect(&frames, &mut out)?;
            count.fetch_add(frames.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    })?;
    Ok(Ceilings {
        threads,
        seconds: SECONDS.as_secs_f64(),
        inference_frames_per_s: (inference * 10.0).round() / 10.0,
        ingest_keyframes_per_s: (ingest * 10.0).round() / 10.0,
        combined_frames_per_s: (combined(inference, ingest) * 10.0).round() / 10.0,
    })
}

/// Runs `work` on `threads` threads and returns the count per second over [`SECONDS`] after [`WARM_UP`].
fn on_every_core(
    threads: usize,
    work: impl Fn(&AtomicBool, &AtomicU64) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<f64> {
    let stop = AtomicBool::new(false);
    let count = AtomicU64::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| work(&stop, &count)))
            .collect();
        std::thread::sleep(WARM_UP);
        let (from, t0) = (count.load(Ordering::Relaxed), Instant::now());
        std::thread::sleep(SECONDS);
        let rate = (count.load(Ordering::Relaxed) - from) as f64 / t0.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a ceiling thread panicked"))??;
        }
        Ok(rate)
    })
}

/// The clip's keyframes as self-contained Annex B access units (parameter sets in front).
fn keyframes(clip: &Path) -> anyhow::Result<Vec<gst::Buffer>> {
    gst::init()?;
    let loc = clip.to_string_lossy().replace('"', "\\\"");
    let pipeline = gst::parse::launch(&format!(
        "filesrc location=\"{loc}\" ! qtdemux ! h264parse config-interval=-1 \
         ! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let sink = appsink(&pipeline)?;
    pipeline.set_state(gst::State::Playing)?;
    let mut out = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        if let Some(b) = sample.buffer()
            && !b.flags().contains(gst::BufferFlags::DELTA_UNIT)
        {
            // Without timestamps: the decoders get them over and over, in any order.
            let mut b = b.copy();
            let m = b.make_mut();
            m.set_pts(gst::ClockTime::NONE);
            m.set_dts(gst::ClockTime::NONE);
            out.push(b);
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    anyhow::ensure!(!out.is_empty(), "{}: no H.264 keyframe", clip.display());
    Ok(out)
}

fn appsink(pipeline: &gst::Pipeline) -> anyhow::Result<gst_app::AppSink> {
    pipeline
        .by_name("sink")
        .and_then(|e| e.dynamic_cast::<gst_app::AppSink>().ok())
        .context("no appsink")
}

/// One decoder as the cameras have: keyframe in, RGB picture at the analysis width out.
struct Decoder {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
}

impl Decoder {
    fn new(width: u32) -> anyhow::Result<Self> {
        let pipeline = gst::parse::launch(&format!(
            "appsrc name=src format=time caps=video/x-h264,stream-format=byte-stream,alignment=au \
             ! h264parse ! avdec_h264 max-threads=1 ! videoscale ! videoconvert \
             ! video/x-raw,format=RGB,width={width},pixel-aspect-ratio=1/1 ! appsink name=sink sync=false"
        ))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
        let src = pipeline
            .by_name("src")
            .and_then(|e| e.dynamic_cast::<gst_app::AppSrc>().ok())
            .context("no appsrc")?;
        let sink = appsink(&pipeline)?;
        pipeline.set_state(gst::State::Playing)?;
        Ok(Self {
            pipeline,
            src,
            sink,
        })
    }

    /// Pushes a keyframe; the picture that comes out (a decoder may hand it over one keyframe later).
    fn decode(&mut self, keyframe: &gst::Buffer) -> anyhow::Result<Option<gst::Sample>> {
        self.src.push_buffer(keyframe.clone())?;
        Ok(self
            .sink
            .try_pull_sample(gst::ClockTime::from_mseconds(500)))
    }

    /// Decodes one keyframe to an image.
    fn decode_fully(&mut self, keyframe: &gst::Buffer) -> anyhow::Result<image::RgbImage> {
        let sample = match self.decode(keyframe)? {
            Some(s) => s,
            None => self
                .decode(keyframe)?
                .context("the decoder gave no picture")?,
        };
        let info = gstreamer_video::VideoInfo::from_caps(sample.caps().context("no caps")?)?;
        let buffer = sample.buffer_owned().context("no buffer")?;
        let frame = Frame {
            camera: 0,
            captured_at: Timestamp(0),
            received: Instant::now(),
            width: info.width(),
            height: info.height(),
            stride: info.stride()[0] as u32,
            pixels: Pixels::Gst(
                buffer
                    .into_mapped_buffer_readable()
                    .map_err(|_| anyhow::anyhow!("unreadable picture"))?,
            ),
        };
        Ok(frame.to_rgb_image())
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::combined;

    #[test]
    fn shared_cores_add_the_costs_per_frame() {
        // 20 ms of inference plus 5 ms of decoding per frame: 40 frames/s on one core.
        assert!((combined(50.0, 200.0) - 40.0).abs() < 1e-9);
        assert_eq!(combined(0.0, 200.0), 0.0);
    }
}
