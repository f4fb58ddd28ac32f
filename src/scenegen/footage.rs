//! Reading real footage and stills: frames at chosen media times, and a clip's clean plate.

use std::path::Path;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use image::RgbImage;

use super::SceneError;

/// Whether `path` is a still image (by extension) rather than footage.
pub fn is_still(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("jpg" | "jpeg" | "png")
    )
}

pub fn still(path: &Path) -> Result<RgbImage, SceneError> {
    Ok(image::open(path)
        .map_err(|e| footage_err(path, e.to_string()))?
        .to_rgb8())
}

/// The frames of `path` at or just after each of `times` (media seconds, any order), plus the per-pixel
/// median of `plate_frames` frames spread evenly over the clip when `plate_frames > 0`.
pub fn frames(
    path: &Path,
    times: &[f64],
    plate_frames: usize,
) -> Result<(Vec<RgbImage>, Option<RgbImage>), SceneError> {
    gst::init().map_err(|e| footage_err(path, e.to_string()))?;
    let pipeline = gst::Pipeline::new();
    let src = make("filesrc", path)?;
    src.set_property("location", path.to_string_lossy().as_ref());
    let decode = make("decodebin", path)?;
    let convert = make("videoconvert", path)?;
    let sink = gst_app::AppSink::builder()
        .caps(
            &gst_video::VideoCapsBuilder::new()
                .format(gst_video::VideoFormat::Rgb)
                .build(),
        )
        .sync(false)
        .build();
    pipeline
        .add_many([&src, &decode, &convert, sink.upcast_ref()])
        .and_then(|_| src.link(&decode))
        .and_then(|_| convert.link(&sink))
        .map_err(|e| footage_err(path, e.to_string()))?;
    let convert_weak = convert.downgrade();
    decode.connect_pad_added(move |_, pad| {
        if let Some(convert) = convert_weak.upgrade() {
            let sink_pad = convert
                .static_pad("sink")
                .expect("videoconvert has a sink pad");
            if !sink_pad.is_linked() {
                let _ = pad.link(&sink_pad);
            }
        }
    });

    // Preroll to learn the duration, so the plate's frames can be spread over the whole clip.
    pipeline
        .set_state(gst::State::Paused)
        .map_err(|e| footage_err(path, e.to_string()))?;
    let (res, _, _) = pipeline.state(gst::ClockTime::from_seconds(30));
    res.map_err(|_| footage_err(path, "cannot open (not H.264 MP4 footage?)".into()))?;
    let duration = pipeline
        .query_duration::<gst::ClockTime>()
        .map(|d| d.nseconds() as f64 / 1e9)
        .ok_or_else(|| footage_err(path, "unknown duration".into()))?;
    let plate_times: Vec<f64> = (0..plate_frames)
        .map(|i| duration * (i as f64 + 0.5) / plate_frames as f64)
        .collect();

    let mut wanted: Vec<(f64, usize)> = times
        .iter()
        .chain(&plate_times)
        .copied()
        .enumerate()
        .map(|(i, t)| (t, i))
        .collect();
    wanted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut got: Vec<Option<RgbImage>> = vec![None; wanted.len()];
    let mut next = 0;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| footage_err(path, e.to_string()))?;
    while next < wanted.len() {
        let Ok(sample) = sink.pull_sample() else {
            break;
        };
        let buf = sample.buffer().expect("a sample has a buffer");
        let pts = buf.pts().map_or(0.0, |p| p.nseconds() as f64 / 1e9);
        // The frame shown at time t is the last one with pts ≤ t (1 ms of slack for rounding).
        let Some(caps) = sample.caps() else { continue };
        let info =
            gst_video::VideoInfo::from_caps(caps).map_err(|e| footage_err(path, e.to_string()))?;
        let frame_end = pts + info.fps().denom() as f64 / info.fps().numer().max(1) as f64;
        if wanted[next].0 >= frame_end - 1e-3 {
            continue;
        }
        let img = packed_rgb(
            &info,
            &buf.map_readable()
                .map_err(|e| footage_err(path, e.to_string()))?,
        );
        while next < wanted.len() && wanted[next].0 < frame_end - 1e-3 {
            got[wanted[next].1] = Some(img.clone());
            next += 1;
        }
    }
    pipeline
        .set_state(gst::State::Null)
        .map_err(|e| footage_err(path, e.to_string()))?;
    if next < wanted.len() {
        return Err(footage_err(
            path,
            format!(
                "no frame at {:.2} s (the clip is {duration:.2} s long)",
                wanted[next].0
            ),
        ));
    }
    let mut all: Vec<RgbImage> = got.into_iter().map(|g| g.expect("filled above")).collect();
    let plate = (plate_frames > 0).then(|| median(&all.split_off(times.len())));
    Ok((all, plate))
}

fn make(factory: &str, path: &Path) -> Result<gst::Element, SceneError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| footage_err(path, format!("GStreamer element `{factory}` is missing")))
}

fn packed_rgb(info: &gst_video::VideoInfo, data: &[u8]) -> RgbImage {
    let (w, h, stride) = (
        info.width() as usize,
        info.height() as usize,
        info.stride()[0] as usize,
    );
    let mut px = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        px.extend_from_slice(&data[row * stride..row * stride + w * 3]);
    }
    RgbImage::from_raw(w as u32, h as u32, px).expect("sized from the caps")
}

/// Per-pixel, per-channel median: what stays put in most frames (the street) wins over what passes.
pub fn median(frames: &[RgbImage]) -> RgbImage {
    let (w, h) = frames[0].dimensions();
    let mut out = RgbImage::new(w, h);
    let mut column = vec![0u8; frames.len()];
    // Through the image's `Deref` to its samples: `as_mut()` is ambiguous once retina's dependencies
    // bring more `AsMut` impls into the build.
    let samples: &mut [u8] = &mut out;
    for (i, px) in samples.iter_mut().enumerate() {
        for (c, f) in column.iter_mut().zip(frames) {
            *c = f.as_raw()[i];
        }
        column.sort_unstable();
        *px = column[column.len() / 2];
    }
    out
}

fn footage_err(path: &Path, message: String) -> SceneError {
    SceneError::Footage {
        path: path.to_path_buf(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_drops_what_passes() {
        // Five 1×1 frames: the street is grey (100) in three, a passer-by (0 and 255) covers it in two.
        let f = |v: u8| RgbImage::from_pixel(1, 1, image::Rgb([v, v, v]));
        let m = median(&[f(100), f(0), f(100), f(255), f(100)]);
        assert_eq!(m.get_pixel(0, 0).0, [100, 100, 100]);
    }
}
