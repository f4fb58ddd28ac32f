//! Encoded keyframes from the committed clips, and the same keyframes decoded by a plain pipeline: the
//! input and the reference for tests of the shared decoders.

use std::path::Path;

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;

use streetwatch::ingest::Codec;

fn parser(codec: Codec) -> (&'static str, &'static str, &'static str) {
    match codec {
        Codec::H264 => ("h264parse", "video/x-h264", "avdec_h264"),
        Codec::H265 => ("h265parse", "video/x-h265", "avdec_h265"),
    }
}

/// The clip's keyframes, in order, as Annex B access units with their parameter sets in front (what a
/// receiver hands the decoders).
pub fn keyframes(path: &Path, codec: Codec) -> Vec<Bytes> {
    let (parse, caps, _) = parser(codec);
    let desc = format!(
        "filesrc location={} ! qtdemux ! {parse} config-interval=-1 \
         ! {caps},stream-format=byte-stream,alignment=au ! appsink name=sink sync=false",
        path.display()
    );
    let (pipeline, sink) = super::play_to_appsink(&desc);
    let mut out = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) {
        let buffer = sample.buffer().expect("a sample carries a buffer");
        if !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
            out.push(Bytes::copy_from_slice(&buffer.map_readable().unwrap()));
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(!out.is_empty(), "no keyframes in {}", path.display());
    out
}

/// The clip's keyframes decoded alone by their own decoder, scaled to `width`: tightly packed RGB rows
/// and the picture's size, one per keyframe.
pub fn decoded_alone(path: &Path, codec: Codec, width: u32) -> Vec<(u32, u32, Vec<u8>)> {
    let (parse, _, dec) = parser(codec);
    let desc = format!(
        "filesrc location={} ! qtdemux ! {parse} ! identity drop-buffer-flags=delta-unit \
         ! {dec} max-threads=1 ! videoscale ! videoconvert \
         ! video/x-raw,format=RGB,width={width},pixel-aspect-ratio=1/1 ! appsink name=sink sync=false",
        path.display()
    );
    let (pipeline, sink) = super::play_to_appsink(&desc);
    let mut out = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) {
        let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        let map = sample.buffer().unwrap().map_readable().unwrap();
        let (w, h, stride) = (info.width(), info.height(), info.stride()[0] as usize);
        let mut rgb = Vec::with_capacity((w * h * 3) as usize);
        for row in 0..h as usize {
            rgb.extend_from_slice(&map[row * stride..row * stride + w as usize * 3]);
        }
        out.push((w, h, rgb));
    }
    pipeline.set_state(gst::State::Null).unwrap();
    out
}
