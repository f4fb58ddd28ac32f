//! Small people on a 1080p camera: recall of the default (int8) detector with and without regions.
//!
//! The wide view, made at test time from committed footage: a 1920×1080 canvas holding a 7×5 mosaic of
//! `vtest_h264.mp4` frames (768×576; one every 2 s from 0 s to 68 s), each scaled by 274/768 ≈ 0.357 to
//! 274×206 px, so the walkers (60–100 px tall in the original) are 21–36 px tall: people across a street
//! on a 1080p camera.
//!
//! Ground truth: the fp32 reference model (`models/nanodet_g_416_coco.toml`, score ≥ 0.35) run on each
//! ORIGINAL 768×576 frame, where people are 32–54 input pixels tall and it sees them well; its person
//! boxes scaled by the same factor and placed where the frame sits in the canvas. Small people: ground
//! truth boxes under 40 px tall in the canvas. Found: matched one-to-one (greedily, best IoU first) by a
//! person detection of the int8 model at IoU ≥ 0.5.
//!
//! Expected, from the sizes alone (written before the first run): letterboxed whole, the canvas scales by
//! 416/1920 = 0.22 and these people are 5–8 input pixels tall, under NanoDet's finest stride (8): few are
//! found. With tiles they are in the detector's range, so at least half of the small people are found,
//! and at least twice as many as without. (The first design shrank 624-px tiles to 416, leaving people
//! 14–24 input pixels: it found 31 %, under this floor; tiles are now the model input's size, 1:1.)

mod support;

use std::sync::Arc;

use streetwatch::frame::Frame;
use streetwatch::infer::{BBox, Detection, Detector, ModelManifest, Regions};
use streetwatch::types::Timestamp;

const CANVAS: (u32, u32) = (1920, 1080);
const TILE: (u32, u32) = (274, 206);
const GRID: (u32, u32) = (7, 5);

/// The canvas and its ground truth (person boxes in canvas fractions).
fn wide_view(reference: &mut Detector, person: u16) -> (image::RgbImage, Vec<BBox>) {
    let frames = support::decode_frames(&support::footage("vtest_h264.mp4"), 1, 768);
    let picked: Vec<image::RgbImage> = frames
        .into_iter()
        .filter(|(ms, _)| ms % 2000 == 0)
        .map(|(_, img)| img)
        .take((GRID.0 * GRID.1) as usize)
        .collect();
    assert_eq!(picked.len(), (GRID.0 * GRID.1) as usize);
    let mut canvas = image::RgbImage::from_pixel(CANVAS.0, CANVAS.1, image::Rgb([114, 114, 114]));
    let mut truth = Vec::new();
    for (i, img) in picked.into_iter().enumerate() {
        let (ox, oy) = ((i as u32 % GRID.0) * TILE.0, (i as u32 / GRID.0) * TILE.1);
        let mut out = vec![Vec::new()];
        reference
            .detect(
                &[Frame::from_rgb_image(0, Timestamp(0), img.clone())],
                &mut out,
            )
            .unwrap();
        let to_canvas = |fx: f32, fy: f32| {
            (
                (ox as f32 + fx * TILE.0 as f32) / CANVAS.0 as f32,
                (oy as f32 + fy * TILE.1 as f32) / CANVAS.1 as f32,
            )
        };
        for d in out[0].iter().filter(|d| d.class == person) {
            let (x1, y1) = to_canvas(d.bbox.x1, d.bbox.y1);
            let (x2, y2) = to_canvas(d.bbox.x2, d.bbox.y2);
            truth.push(BBox { x1, y1, x2, y2 });
        }
        let small =
            image::imageops::resize(&img, TILE.0, TILE.1, image::imageops::FilterType::Triangle);
        image::imageops::replace(&mut canvas, &small, ox as i64, oy as i64);
    }
    (canvas, truth)
}

/// How many of `truth` the detections match one-to-one at IoU ≥ 0.5.
fn matched(truth: &[BBox], dets: &[Detection]) -> usize {
    let mut pairs: Vec<(f32, usize, usize)> = truth
        .iter()
        .enumerate()
        .flat_map(|(t, tb)| {
            dets.iter()
                .enumerate()
                .map(move |(d, db)| (tb.iou(&db.bbox), t, d))
        })
        .filter(|(iou, _, _)| *iou >= 0.5)
        .collect();
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut used_t, mut used_d) = (vec![false; truth.len()], vec![false; dets.len()]);
    let mut n = 0;
    for (_, t, d) in pairs {
        if !used_t[t] && !used_d[d] {
            (used_t[t], used_d[d]) = (true, true);
            n += 1;
        }
    }
    n
}

#[test]
fn regions_find_small_people_the_whole_frame_misses() {
    let fp32 = support::nanodet();
    let person = fp32.class_index("person").unwrap() as u16;
    let int8 = Arc::new(
        ModelManifest::load(&support::root().join("models/nanodet_g_416_coco_int8.toml")).unwrap(),
    );
    let mut reference = Detector::new(fp32, 1, 0.35).unwrap();
    let (canvas, truth) = wide_view(&mut reference, person);
    let small: Vec<BBox> = truth
        .into_iter()
        .filter(|b| (b.y2 - b.y1) * (CANVAS.1 as f32) < 40.0)
        .collect();
    let frame = Frame::from_rgb_image(0, Timestamp(0), canvas);

    let run = |regions: Regions, truth: &[BBox]| {
        let mut d = Detector::new(int8.clone(), 4, 0.35)
            .unwrap()
            .with_regions(Arc::from([regions]));
        let mut out = vec![Vec::new()];
        let inputs = d.detect(std::slice::from_ref(&frame), &mut out).unwrap();
        let people: Vec<Detection> = out[0]
            .iter()
            .filter(|d| d.class == person)
            .copied()
            .collect();
        (matched(truth, &people), people.len(), inputs)
    };
    let (whole, whole_dets, whole_inputs) = run(Regions::default(), &small);
    let (tiled, tiled_dets, tiled_inputs) = run(Regions::tiles(), &small);
    // `regions = "zones"` with one zone on the lower 40 % of the view: the people standing in it (feet
    // inside, as rules place them) are found like with tiles, from about half the model inputs.
    let zone = [[0.0, 0.6], [1.0, 0.6], [1.0, 1.0], [0.0, 1.0]];
    let in_zone: Vec<BBox> = small.iter().filter(|b| b.y2 >= 0.6).copied().collect();
    let (zoned, _, zoned_inputs) = run(Regions::around_zones([&zone[..]]), &in_zone);
    let n = small.len();
    let pct = |k: usize, n: usize| 100.0 * k as f64 / n as f64;
    println!(
        "small people (< 40 px, ground truth from fp32 on the native frames): {n}\n\
         whole frame only: {whole} found ({:.1} %), {whole_dets} person detections, {whole_inputs} model input\n\
         regions = tiles:  {tiled} found ({:.1} %), {tiled_dets} person detections, {tiled_inputs} model inputs\n\
         regions = zones (lower 40 %): {zoned} of the {} in the zone found ({:.1} %), {zoned_inputs} model inputs",
        pct(whole, n),
        pct(tiled, n),
        in_zone.len(),
        pct(zoned, in_zone.len()),
    );
    assert!(n >= 150, "only {n} small people in the ground truth");
    assert!(2 * tiled >= n, "tiles found {tiled} of {n} small people");
    assert!(tiled >= 2 * whole, "tiles {tiled} vs whole frame {whole}");
    assert!(
        2 * zoned >= in_zone.len() && zoned_inputs < tiled_inputs,
        "zones found {zoned} of {} in the zone from {zoned_inputs} inputs",
        in_zone.len()
    );
}

/// Area of `a` inside `b`, over `a`'s area.
fn inside(a: &BBox, b: &BBox) -> f32 {
    let w = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let h = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    w * h / a.area().max(f32::EPSILON)
}

#[test]
fn tiles_keep_large_people_whole_and_single() {
    // bus.jpg (810×1080) and zidane.jpg (1280×720): people taller than a 416-px tile. Every tile cuts
    // them, so tiles add no pieces of them: every person the whole frame finds is still there, and no
    // person box lies mostly (> 70 % of its area) inside another.
    let manifest = Arc::new(
        ModelManifest::load(&support::root().join("models/nanodet_g_416_coco_int8.toml")).unwrap(),
    );
    support::nanodet(); // loads the runtime
    let person = manifest.class_index("person").unwrap() as u16;
    for name in ["bus.jpg", "zidane.jpg"] {
        let img = image::open(support::footage(name)).unwrap().to_rgb8();
        let frame = Frame::from_rgb_image(0, Timestamp(0), img);
        let people = |regions: Regions| {
            let mut d = Detector::new(manifest.clone(), 4, 0.35)
                .unwrap()
                .with_regions(Arc::from([regions]));
            let mut out = vec![Vec::new()];
            d.detect(std::slice::from_ref(&frame), &mut out).unwrap();
            out.swap_remove(0)
                .into_iter()
                .filter(|d| d.class == person)
                .collect::<Vec<_>>()
        };
        let (whole, tiled) = (people(Regions::default()), people(Regions::tiles()));
        println!(
            "{name}: {} people whole frame, {} with tiles",
            whole.len(),
            tiled.len()
        );
        for w in &whole {
            assert!(
                tiled.iter().any(|t| t.bbox.iou(&w.bbox) >= 0.5),
                "{name}: {w:?} lost with tiles: {tiled:?}"
            );
        }
        for (i, a) in tiled.iter().enumerate() {
            for (j, b) in tiled.iter().enumerate() {
                assert!(
                    i == j || inside(&a.bbox, &b.bbox) <= 0.7,
                    "{name}: {a:?} is a piece of {b:?}"
                );
            }
        }
    }
}

#[test]
fn a_cameras_regions_reach_its_detector_through_the_pipeline() {
    use std::sync::atomic::Ordering;
    use streetwatch::app::{Pipeline, RunOptions};
    use streetwatch::config::Config;
    use streetwatch::ingest::Pacing;
    use streetwatch::types::SystemClock;

    // vtest at its own 768×576 with one region, its top-left quarter (384×288 px): smaller than the
    // 416-px input, so it grows to one 416×416 tile. Every frame is two model inputs.
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[runtime]
data_dir = {data:?}
workers = 1
motion_gate = false   # every frame through the model, to count its inputs
[[cameras]]
id = "walkway"
url = "fixtures/footage/vtest_h264.mp4"
fps = 0.5
width = 768
regions = [[0.0, 0.0, 0.5, 0.5]]
"#,
        data = dir.path()
    );
    let config = Config::parse(&text, "regions.toml", &support::root()).unwrap();
    let opts = RunOptions {
        pacing: Pacing::Unthrottled { lossless: true },
        loop_files: false,
        ..RunOptions::default()
    };
    let pipeline = Pipeline::start(&config, opts, Arc::new(SystemClock)).unwrap();
    assert!(support::wait_until(
        std::time::Duration::from_secs(120),
        || pipeline.finished()
    ));
    let stats = pipeline.stats();
    let received = pipeline.health()[0].frames_received;
    // Lossless replay drops nothing: wait for the pool to analyse the last frame.
    assert!(support::wait_until(
        std::time::Duration::from_secs(30),
        || { stats.frames_analysed.load(Ordering::Acquire) == received }
    ));
    let (frames, inputs) = (
        stats.frames_analysed.load(Ordering::Acquire),
        stats.model_inputs.load(Ordering::Relaxed),
    );
    pipeline.shutdown();
    assert!(
        frames >= 30,
        "{frames} frames analysed from 79.5 s at 0.5 fps"
    );
    assert_eq!(inputs, 2 * frames);
}
