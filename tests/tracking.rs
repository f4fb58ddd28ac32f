//! The tracker on real footage: the white van parked at the top right of vtest_h264.mp4 for the whole
//! clip keeps one track id for its whole stay, through the default (int8) detector at 2 frames/s.

mod support;

use std::sync::Arc;

use streetwatch::analyse::{Tracker, TrackerParams};
use streetwatch::config::{DEFAULT_MODEL, installed};
use streetwatch::frame::Frame;
use streetwatch::infer::{BBox, Detector, ModelManifest};
use streetwatch::types::Timestamp;

#[test]
fn the_parked_van_in_vtest_keeps_one_id_for_its_whole_stay() {
    support::nanodet(); // loads the ONNX Runtime library
    let manifest = Arc::new(ModelManifest::load(&installed(DEFAULT_MODEL)).unwrap());
    let labels = manifest.output.labels.clone();
    let vehicle = |c: u16| matches!(labels[c as usize].as_str(), "car" | "truck" | "bus");
    let mut detector = Detector::new(manifest.clone(), 1, 0.35).unwrap();
    let mut tracker = Tracker::new(TrackerParams::default(), &labels);
    // Where the van stands, read off the footage by eye (frame fractions of the 768×576 view): a box
    // around x 0.84–0.94, y 0.06–0.17. A track "is the van" when its box overlaps this one well.
    let van = BBox {
        x1: 0.84,
        y1: 0.06,
        x2: 0.94,
        y2: 0.17,
    };
    let frames = support::decode_frames(&support::footage("vtest_h264.mp4"), 2, 416);
    assert!(frames.len() >= 150, "{} frames", frames.len());
    let mut out = vec![Vec::new()];
    let mut seen_frames = 0;
    let mut ids = std::collections::BTreeMap::<u64, usize>::new();
    for (ms, img) in frames.iter().cloned() {
        detector
            .detect(&[Frame::from_rgb_image(0, Timestamp(ms), img)], &mut out)
            .unwrap();
        tracker.update(Timestamp(ms), &out[0]);
        let on_van: Vec<u64> = tracker
            .tracks()
            .iter()
            .filter(|t| t.matched && vehicle(t.class) && t.bbox.iou(&van) >= 0.3)
            .map(|t| t.id)
            .collect();
        if !on_van.is_empty() {
            seen_frames += 1;
        }
        for id in on_van {
            *ids.entry(id).or_default() += 1;
        }
    }
    // The detector must see the van on most frames for the test to mean anything.
    assert!(
        seen_frames * 10 >= frames.len() * 8,
        "van seen on {seen_frames} of {} frames",
        frames.len()
    );
    assert_eq!(ids.len(), 1, "the van had several track ids: {ids:?}");
    let van_track = tracker
        .tracks()
        .iter()
        .find(|t| ids.contains_key(&t.id))
        .expect("the van's track is alive at the end");
    let end = Timestamp(frames.last().unwrap().0);
    assert!(
        van_track.stationary_ms(end) >= 60_000,
        "the van stood still only {} ms",
        van_track.stationary_ms(end)
    );
}
