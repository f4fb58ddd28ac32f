//! Incident snapshots at the camera's full resolution: the last keyframe kept for the camera is decoded
//! at its own size and the analysis boxes are drawn on it at the same relative place; without a usable
//! keyframe the analysed frame is the picture, as before.

mod support;

use std::time::Instant;

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;
use image::RgbImage;
use streetwatch::analyse::{SnapshotBox, SnapshotRequest};
use streetwatch::app::render_incident_snapshot;
use streetwatch::infer::BBox;
use streetwatch::ingest::{Codec, EncodedUnit, LatestKeyframes, decode_still};
use streetwatch::types::{CameraId, IncidentKey, Timestamp};

use support::play_to_appsink;

/// The first sample of a gst-launch description ending in `appsink name=sink`.
fn first_sample(desc: &str) -> gst::Sample {
    let (pipeline, sink) = play_to_appsink(desc);
    let sample = sink.pull_sample().expect("a first sample");
    pipeline.set_state(gst::State::Null).unwrap();
    sample
}

/// The first access unit of an encoded stream, as a receiver hands it on: Annex B, parameter sets in front.
fn first_unit(desc: &str, codec: Codec, camera: usize, at: Timestamp) -> EncodedUnit {
    let sample = first_sample(desc);
    let buffer = sample.buffer().unwrap();
    assert!(
        !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
        "the first unit is a keyframe"
    );
    EncodedUnit {
        camera,
        codec,
        keyframe: true,
        data: Bytes::copy_from_slice(&buffer.map_readable().unwrap()),
        captured_at: at,
        received: Instant::now(),
    }
}

/// The 720p bench clip's first keyframe, extracted by a demuxer as the file receiver does.
fn clip_keyframe(camera: usize, at: Timestamp) -> EncodedUnit {
    let desc = format!(
        "filesrc location={} ! qtdemux ! h264parse config-interval=-1 ! \
         video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false",
        support::footage("bench_720p25_2mbps.mp4").display()
    );
    first_unit(&desc, Codec::H264, camera, at)
}

/// The clip's first picture decoded by a pipeline of its own, the reference for what the snapshot shows.
fn clip_first_picture() -> RgbImage {
    let desc = format!(
        "filesrc location={} ! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! video/x-raw,format=RGB ! \
         appsink name=sink sync=false",
        support::footage("bench_720p25_2mbps.mp4").display()
    );
    let sample = first_sample(&desc);
    let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    let map = sample.buffer().unwrap().map_readable().unwrap();
    let (w, h, stride) = (info.width(), info.height(), info.stride()[0] as usize);
    RgbImage::from_fn(w, h, |x, y| {
        let i = y as usize * stride + x as usize * 3;
        image::Rgb([map[i], map[i + 1], map[i + 2]])
    })
}

fn key() -> IncidentKey {
    IncidentKey {
        camera: CameraId::new("d1-cam-2"),
        rule: "crowd".into(),
        zone: "plaza".into(),
        episode: Timestamp(61_000),
    }
}

/// What analysis saw: a black 416×234 frame (so it is told apart from the camera's picture) with one
/// incident box from 25 % to 50 % of the width and 40 % to 80 % of the height.
fn request(camera: usize) -> SnapshotRequest {
    SnapshotRequest {
        camera,
        image: RgbImage::new(416, 234),
        boxes: vec![SnapshotBox {
            bbox: BBox {
                x1: 0.25,
                y1: 0.40,
                x2: 0.50,
                y2: 0.80,
            },
            highlight: true,
            track: Some(7),
        }],
        outline: Vec::new(),
        outline_closed: true,
    }
}

fn red(p: &image::Rgb<u8>) -> bool {
    p[0] > 170 && p[1] < 110 && p[2] < 110
}

/// The box's vertical edges are red at 25 % and 50 % of the width, halfway down the box, and its middle
/// is not: the box is where analysis put it, whatever the picture's size.
fn assert_box_in_place(img: &RgbImage) {
    let (w, h) = (img.width() as f32 - 1.0, img.height() as f32 - 1.0);
    let y = (0.60 * h) as u32;
    let near = |fx: f32| {
        let x = (fx * w) as i32;
        let tol = (img.width() as i32 / 200).max(3);
        (x - tol..=x + tol).any(|x| red(img.get_pixel(x as u32, y)))
    };
    assert!(near(0.25), "no red left edge at 25 % of {}", img.width());
    assert!(near(0.50), "no red right edge at 50 % of {}", img.width());
    assert!(
        !red(img.get_pixel((0.375 * w) as u32, y)),
        "the box's inside is not drawn on"
    );
    assert!(!near(0.75), "a red edge where there is no box");
}

#[test]
fn an_incidents_snapshot_is_the_cameras_full_resolution_keyframe_with_the_box_in_place() {
    let keyframes = LatestKeyframes::new(3);
    keyframes.offer(&clip_keyframe(2, Timestamp(60_000)));
    let jpeg = render_incident_snapshot(request(2), &keyframes, &key(), Timestamp(61_500)).unwrap();
    let img = image::load_from_memory(&jpeg).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1280, 720), "the camera's own resolution");
    // A sane size for a 720p street picture at quality ~80 (about 100–150 kB; a bound, not a figure).
    assert!(
        (40_000..250_000).contains(&jpeg.len()),
        "{} bytes",
        jpeg.len()
    );
    assert_box_in_place(&img);
    // The picture is the camera's, not the black analysed frame: away from the box it is the clip's
    // first picture, within JPEG's error.
    let reference = clip_first_picture();
    let (mut diff, mut n) = (0u64, 0u64);
    for y in (0..720).step_by(7).filter(|y| !(250..600).contains(y)) {
        for x in (0..1280).step_by(7) {
            let (a, b) = (img.get_pixel(x, y), reference.get_pixel(x, y));
            diff += (0..3).map(|c| a[c].abs_diff(b[c]) as u64).sum::<u64>();
            n += 3;
        }
    }
    let mean = diff as f64 / n as f64;
    assert!(mean < 6.0, "mean difference {mean} from the clip's picture");
    let brightness = reference.pixels().map(|p| p[1] as u64).sum::<u64>() / (1280 * 720);
    assert!(brightness > 30, "the reference is a real scene, not black");
}

#[test]
fn without_a_usable_keyframe_the_snapshot_is_the_analysed_frame() {
    let check = |keyframes: &LatestKeyframes| {
        let jpeg =
            render_incident_snapshot(request(1), keyframes, &key(), Timestamp(61_500)).unwrap();
        let img = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (416, 234));
        assert_box_in_place(&img);
    };
    // None kept yet (a file source, the first seconds of a stream), or one for another camera.
    let keyframes = LatestKeyframes::new(3);
    keyframes.offer(&clip_keyframe(2, Timestamp(60_000)));
    check(&keyframes);
    // The camera's last keyframe is a minute old: its main stream froze, the picture is another moment.
    keyframes.offer(&clip_keyframe(1, Timestamp(1_000)));
    check(&keyframes);
    // A keyframe that does not decode.
    keyframes.offer(&EncodedUnit {
        data: Bytes::from_static(&[0, 0, 0, 1, 0x65, 0xFF, 0x00, 0x13, 0x37]),
        ..clip_keyframe(1, Timestamp(61_000))
    });
    check(&keyframes);
}

#[test]
fn an_h265_keyframe_decodes_at_its_own_size() {
    let unit = first_unit(
        "videotestsrc num-buffers=1 pattern=smpte ! video/x-raw,width=960,height=540 ! x265enc ! \
         h265parse config-interval=-1 ! video/x-h265,stream-format=byte-stream,alignment=au ! \
         appsink name=sink sync=false",
        Codec::H265,
        0,
        Timestamp(0),
    );
    let img = decode_still(&unit).unwrap();
    assert_eq!(img.dimensions(), (960, 540));
    // SMPTE bars: the leftmost bar is white (75 % or full, by the generator), the second yellow.
    let p = img.get_pixel(20, 100);
    assert!(p.0.iter().all(|&c| c > 170), "{p:?}");
    let p = img.get_pixel(960 / 7 + 20, 100);
    assert!(p[0] > 170 && p[1] > 170 && p[2] < 40, "{p:?}");
}
