//! One-shot decode of a kept keyframe at the camera's own resolution, for incident snapshots.
//!
//! Analysis never pays for full resolution: it decodes scaled frames (or the sub-stream). Only when an
//! incident opens is the camera's last main-stream keyframe (see [`super::LatestKeyframes`]) decoded,
//! through a pipeline of its own that lives for this one picture, on the incident sink's thread.

use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use image::RgbImage;

use super::{EncodedUnit, IngestError};

/// A keyframe decodes in milliseconds; this bounds a decoder that never answers.
const DECODE_LIMIT: Duration = Duration::from_secs(5);

/// Decodes `unit` (a keyframe with its parameter sets in front) to RGB at its native size.
pub fn decode_still(unit: &EncodedUnit) -> Result<RgbImage, IngestError> {
    if !unit.keyframe {
        return Err(IngestError::Gst(
            "not a keyframe: it cannot be decoded alone".into(),
        ));
    }
    gst::init().map_err(|e| IngestError::Gst(e.to_string()))?;
    let (caps, parse, decode) = unit.codec.gst_elements();
    // One decoder thread: the picture is rare and off the frame path, and must not take every core.
    let desc = format!(
        "appsrc name=src format=time caps={caps},stream-format=byte-stream,alignment=au ! {parse} ! \
         {decode} max-threads=1 direct-rendering=false ! videoconvert ! video/x-raw,format=RGB ! \
         appsink name=sink sync=false max-buffers=1"
    );
    let pipeline = gst::parse::launch(&desc)
        .map_err(|e| gst_err_of(&e))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| IngestError::Gst("the still decoder is not a pipeline".into()))?;
    let result = run(&pipeline, unit);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn run(pipeline: &gst::Pipeline, unit: &EncodedUnit) -> Result<RgbImage, IngestError> {
    let element = |name: &str| {
        pipeline
            .by_name(name)
            .ok_or_else(|| IngestError::Gst(format!("the still decoder has no `{name}`")))
    };
    let src = element("src")?
        .dynamic_cast::<gst_app::AppSrc>()
        .map_err(|_| IngestError::Gst("`src` is not an appsrc".into()))?;
    let sink = element("sink")?
        .dynamic_cast::<gst_app::AppSink>()
        .map_err(|_| IngestError::Gst("`sink` is not an appsink".into()))?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| IngestError::Gst(format!("starting the still decoder: {e}")))?;
    let mut buffer = gst::Buffer::from_slice(unit.data.clone());
    if let Some(b) = buffer.get_mut() {
        b.set_pts(gst::ClockTime::ZERO);
    }
    src.push_buffer(buffer)
        .map_err(|e| IngestError::Gst(format!("feeding the still decoder: {e}")))?;
    // End of stream drains the decoder: the one picture comes out without waiting for a next unit.
    let _ = src.end_of_stream();
    let Some(sample) =
        sink.try_pull_sample(gst::ClockTime::from_nseconds(DECODE_LIMIT.as_nanos() as u64))
    else {
        return Err(IngestError::Gst(bus_error(pipeline).unwrap_or_else(|| {
            format!(
                "no picture from a {} byte keyframe within {} s",
                unit.data.len(),
                DECODE_LIMIT.as_secs()
            )
        })));
    };
    let caps = sample
        .caps()
        .ok_or_else(|| IngestError::Gst("a decoded picture without caps".into()))?;
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| gst_err_of(&e))?;
    let buffer = sample
        .buffer()
        .ok_or_else(|| IngestError::Gst("a decoded sample without a buffer".into()))?;
    let map = buffer.map_readable().map_err(|e| gst_err_of(&e))?;
    let (w, h) = (info.width() as usize, info.height() as usize);
    let stride = info.stride()[0] as usize;
    if map.len() < (h.max(1) - 1) * stride + w * 3 {
        return Err(IngestError::Gst(format!(
            "a {w}×{h} picture in {} bytes",
            map.len()
        )));
    }
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in map.chunks(stride).take(h) {
        rgb.extend_from_slice(&row[..w * 3]);
    }
    RgbImage::from_raw(w as u32, h as u32, rgb)
        .ok_or_else(|| IngestError::Gst("a decoded picture of the wrong size".into()))
}

fn gst_err_of(e: &dyn std::fmt::Display) -> IngestError {
    IngestError::Gst(e.to_string())
}

/// The pipeline's error message, if it posted one (a corrupt keyframe, a missing decoder).
fn bus_error(pipeline: &gst::Pipeline) -> Option<String> {
    let bus = pipeline.bus()?;
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        if let gst::MessageView::Error(e) = msg.view() {
            return Some(e.error().to_string());
        }
    }
    None
}
