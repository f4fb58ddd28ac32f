//! The detector on real footage and stills, through ONNX Runtime: NanoDet (in-graph decoding) and a real
//! Ultralytics YOLOv8 export (channel-major output).

mod support;

use std::sync::Arc;

use streetwatch::frame::Frame;
use streetwatch::infer::{Detection, Detector, ModelManifest};
use streetwatch::types::Timestamp;

fn detect(detector: &mut Detector, img: image::RgbImage) -> Vec<Detection> {
    let mut out = vec![Vec::new()];
    detector
        .detect(&[Frame::from_rgb_image(0, Timestamp(0), img)], &mut out)
        .unwrap();
    out.pop().unwrap()
}

fn count(dets: &[Detection], class: u16) -> usize {
    dets.iter().filter(|d| d.class == class).count()
}

fn still(name: &str) -> image::RgbImage {
    image::open(support::footage(name)).unwrap().to_rgb8()
}

#[test]
fn nanodet_finds_the_people_on_vtest_at_20_seconds() {
    let manifest = support::nanodet();
    let person = manifest.class_index("person").unwrap() as u16;
    let mut detector = Detector::new(manifest, 4, 0.35).unwrap();
    // vtest_h264.mp4 at 20.0 s: nine pedestrians on the walkway and the grass; at least 3 must be found.
    let frames = support::decode_frames(&support::footage("vtest_h264.mp4"), 1, 416);
    let (ms, img) = frames
        .into_iter()
        .find(|(ms, _)| *ms == 20_000)
        .expect("a frame at 20 s");
    let dets = detect(&mut detector, img);
    let people = count(&dets, person);
    assert!(people >= 3, "found {people} people at {ms} ms: {dets:?}");
    for d in &dets {
        let b = d.bbox;
        assert!(
            0.0 <= b.x1 && b.x1 < b.x2 && b.x2 <= 1.0 && 0.0 <= b.y1 && b.y1 < b.y2 && b.y2 <= 1.0,
            "{d:?}"
        );
    }
}

#[test]
fn nanodet_batches_match_single_runs() {
    let manifest = support::nanodet();
    let mut batched = Detector::new(manifest.clone(), 3, 0.35).unwrap();
    let mut single = Detector::new(manifest, 1, 0.35).unwrap();
    let imgs = [
        still("bus.jpg"),
        still("zidane.jpg"),
        support::decode_frames(&support::footage("vtest_h264.mp4"), 1, 416)
            .swap_remove(10)
            .1,
    ];
    let frames: Vec<Frame> = imgs
        .iter()
        .map(|i| Frame::from_rgb_image(0, Timestamp(0), i.clone()))
        .collect();
    let mut out = vec![Vec::new(), Vec::new(), Vec::new()];
    batched.detect(&frames, &mut out).unwrap();
    for (img, got) in imgs.into_iter().zip(out) {
        let want = detect(&mut single, img);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.class, w.class);
            assert!(
                (g.score - w.score).abs() < 1e-3 && (g.bbox.x1 - w.bbox.x1).abs() < 1e-3,
                "{g:?} vs {w:?}"
            );
        }
    }
}

#[test]
fn nanodet_finds_people_and_the_bus_on_bus_jpg() {
    let manifest = support::nanodet();
    let (person, bus) = (
        manifest.class_index("person").unwrap() as u16,
        manifest.class_index("bus").unwrap() as u16,
    );
    let mut detector = Detector::new(manifest, 1, 0.3).unwrap();
    let dets = detect(&mut detector, still("bus.jpg"));
    assert_eq!(count(&dets, bus), 1, "{dets:?}");
    assert!(count(&dets, person) >= 3, "{dets:?}");
}

#[test]
fn yolov8_layout_decodes_a_real_ultralytics_export() {
    support::nanodet(); // loads the runtime
    let manifest = Arc::new(
        ModelManifest::load(&support::root().join("fixtures/models/yolov8_fall.toml"))
            .expect("YOLOv8 test model (run scripts/setup.sh)"),
    );
    let mut detector = Detector::new(manifest.clone(), 4, 0.5).unwrap();
    assert_eq!(detector.max_batch(), 1, "the export fixes batch 1");
    // bus.jpg: three people standing ("Normal"), nobody fallen.
    let dets = detect(&mut detector, still("bus.jpg"));
    assert_eq!(count(&dets, 0), 3, "{dets:?}");
    assert_eq!(count(&dets, 1), 0, "{dets:?}");
    // Boxes are people-shaped: taller than wide, in the frame.
    for d in &dets {
        assert!(d.bbox.y2 - d.bbox.y1 > d.bbox.x2 - d.bbox.x1, "{d:?}");
    }
}

#[test]
fn a_corrupted_or_missing_model_is_a_clear_error() {
    support::nanodet();
    let dir = tempfile::tempdir().unwrap();
    let manifest_text =
        std::fs::read_to_string(support::root().join("models/nanodet_g_416_coco.toml")).unwrap();
    let path = dir.path().join("m.toml");
    std::fs::write(&path, &manifest_text).unwrap();
    let err = ModelManifest::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("nanodet_g_416_coco.onnx") && err.contains("cannot read"),
        "{err}"
    );
    std::fs::write(dir.path().join("nanodet_g_416_coco.onnx"), b"not a model").unwrap();
    let err = ModelManifest::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("sha256 is") && err.contains("the manifest expects"),
        "{err}"
    );
}

#[test]
fn int8_nanodet_agrees_with_fp32_on_vtest() {
    let fp32 = support::nanodet();
    let int8 = Arc::new(
        ModelManifest::load(&support::root().join("models/nanodet_g_416_coco_int8.toml")).unwrap(),
    );
    let person = fp32.class_index("person").unwrap() as u16;
    let (mut reference, mut quantised) = (
        Detector::new(fp32, 1, 0.35).unwrap(),
        Detector::new(int8, 1, 0.35).unwrap(),
    );
    let (mut matched, mut want, mut got) = (0usize, 0usize, 0usize);
    // Every other second of vtest: 40 frames, ~300 people.
    for (_, img) in support::decode_frames(&support::footage("vtest_h264.mp4"), 1, 416)
        .into_iter()
        .step_by(2)
    {
        let r: Vec<Detection> = detect(&mut reference, img.clone())
            .into_iter()
            .filter(|d| d.class == person)
            .collect();
        let q: Vec<Detection> = detect(&mut quantised, img)
            .into_iter()
            .filter(|d| d.class == person)
            .collect();
        want += r.len();
        got += q.len();
        matched += r
            .iter()
            .filter(|a| q.iter().any(|b| a.bbox.iou(&b.bbox) >= 0.5))
            .count();
    }
    let recall = matched as f64 / want as f64;
    let precision = matched as f64 / got as f64;
    assert!(want > 200, "{want} reference people");
    assert!(
        recall >= 0.93 && precision >= 0.93,
        "int8 vs fp32: recall {recall:.3}, precision {precision:.3}"
    );
}
