//! The detector on real footage and stills, through ONNX Runtime: NanoDet (in-graph decoding) and a real
//! Ultralytics YOLOv8 export (channel-major output).

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use streetwatch::frame::Frame;
use streetwatch::infer::{Detection, Detector, InferError, ModelManifest};
use streetwatch::pool::{Pool, PoolConfig};
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

/// A copy of the manifest `manifest` (relative to the repository) with `from` replaced by `to`, in a fresh
/// temporary folder and pointing at the same model file.
fn edited_manifest(manifest: &str, from: &str, to: &str) -> (tempfile::TempDir, PathBuf) {
    let path = support::root().join(manifest);
    let model = ModelManifest::load(&path).unwrap().model_path();
    let model = model.canonicalize().unwrap().display().to_string();
    let text: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("file = ") {
                format!("file = {model:?}")
            } else {
                l.to_string()
            }
        })
        .collect();
    let text = text.join("\n");
    assert!(text.contains(from), "{manifest} has no `{from}` to edit");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("edited.toml");
    std::fs::write(&out, text.replace(from, to)).unwrap();
    (dir, out)
}

/// `manifest` edited (`from` → `to`) is rejected at start-up, saying each of `what`.
fn assert_edit_rejected(manifest: &str, from: &str, to: &str, what: &[&str]) {
    let (_dir, path) = edited_manifest(manifest, from, to);
    assert_rejected_at_start_up(&path, what);
}

/// Starts a pool on the manifest at `path`, as the pipeline does, expecting start-up to fail with the
/// typed mismatch error naming the manifest and saying each of `what`.
fn assert_rejected_at_start_up(path: &Path, what: &[&str]) {
    support::nanodet(); // loads the runtime
    let manifest = Arc::new(ModelManifest::load(path).unwrap());
    let config = PoolConfig {
        workers: 1,
        max_batch: 4,
        batch_wait: Duration::ZERO,
        motion: None,
    };
    match Pool::start(&config, Vec::new(), || {
        Detector::new(manifest.clone(), 4, 0.35)
    }) {
        Ok((pool, _)) => {
            pool.shutdown();
            panic!("{} was accepted at start-up", path.display())
        }
        Err(e) => assert_names(&e, path, what),
    }
}

/// `e` is the typed mismatch error, naming `manifest` and saying each of `what`.
fn assert_names(e: &InferError, manifest: &Path, what: &[&str]) {
    assert!(matches!(e, InferError::Mismatch { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&manifest.display().to_string()),
        "the error does not name the manifest: {msg}"
    );
    for w in what {
        assert!(msg.contains(w), "`{w}` missing from: {msg}");
    }
}

#[test]
fn labels_that_do_not_match_the_model_classes_are_rejected_at_start_up() {
    const NANODET: &str = "models/nanodet_g_416_coco.toml";
    let more = ("\"toothbrush\",", "\"toothbrush\", \"traffic cone\",");
    assert_edit_rejected(NANODET, more.0, more.1, &["81 labels", "80 classes"]);
    let fewer = (" \"toothbrush\",", "");
    assert_edit_rejected(NANODET, fewer.0, fewer.1, &["79 labels", "80 classes"]);
    // Channel-major output: the layout that used to index past its data with a label too many.
    let fall = (
        "[\"Normal\", \"Fall\"]",
        "[\"Normal\", \"Fall\", \"Lying\"]",
    );
    let yolo = "fixtures/models/yolov8_fall.toml";
    assert_edit_rejected(yolo, fall.0, fall.1, &["3 labels", "2 classes"]);
}

#[test]
fn the_shipped_manifests_fit_their_models() {
    support::nanodet(); // loads the runtime
    for m in [
        "models/nanodet_g_416_coco.toml",
        "models/nanodet_g_416_coco_int8.toml",
        "fixtures/models/yolov8_fall.toml",
    ] {
        let manifest = Arc::new(ModelManifest::load(&support::root().join(m)).unwrap());
        if let Err(e) = Detector::new(manifest, 4, 0.35) {
            panic!("{m}: {e}");
        }
    }
}

#[test]
fn a_model_whose_output_has_rank_2_is_rejected_at_start_up() {
    let path = support::root().join("fixtures/models/rank2_output.toml");
    assert_rejected_at_start_up(&path, &["rank 2", "`output`"]);
}

#[test]
fn an_input_that_does_not_match_the_manifest_is_rejected_naming_the_manifest() {
    const NANODET: &str = "models/nanodet_g_416_coco.toml";
    let (from, to) = ("name = \"images\"", "name = \"pixels\"");
    assert_edit_rejected(NANODET, from, to, &["`pixels`", "images"]);
    assert_edit_rejected(NANODET, "width = 416", "width = 320", &["416", "320"]);
}

#[test]
fn an_output_dimension_the_model_leaves_open_is_checked_at_run_time() {
    support::nanodet(); // loads the runtime
    let path = support::root().join("fixtures/models/dynamic_output.toml");
    let manifest = Arc::new(ModelManifest::load(&path).unwrap());
    // The graph cannot say how many values each anchor has: start-up has nothing to reject.
    let mut detector = Detector::new(manifest, 2, 0.35).unwrap();
    let img = image::RgbImage::from_pixel(64, 48, image::Rgb([90, 120, 150]));
    let frames = [
        Frame::from_rgb_image(0, Timestamp(0), img.clone()),
        Frame::from_rgb_image(1, Timestamp(0), img),
    ];
    let mut out = vec![Vec::new(), Vec::new()];
    // The run shows 2 values per anchor where 4 box values and 2 scores need 6: an error, not a panic.
    let e = detector.detect(&frames, &mut out).unwrap_err();
    assert_names(&e, &path, &["2 values", "6"]);
}
