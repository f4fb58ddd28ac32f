//! The scenario generator end to end: a tiny script → an H.264 MP4 that decodes like camera footage, a scenario
//! file with the script's truth, the actor where the script put it and found there by the real detector.

mod support;

use std::path::{Path, PathBuf};

use gstreamer as gst;
use gstreamer::prelude::*;

use streetwatch::frame::Frame;
use streetwatch::infer::Detector;
use streetwatch::scenegen::{self, ActorBox};
use streetwatch::types::Timestamp;

/// 4 s at 5 fps, GOP 1 s: a man cut from vtest at 40 s walks in from the left and stops at the centre.
fn tiny_script(dir: &Path, truth: &str) -> PathBuf {
    let vtest = support::footage("vtest_h264.mp4");
    let text = format!(
        r#"
[scenario]
description = "tiny: a man walks in and stays"

[output]
name = "tiny"
width = 768
height = 576
fps = 5
seconds = 4
gop_seconds = 1

[background]
source = "{vtest}"
plate_frames = 9

[[sprites]]
id = "man"
class = "person"
source = "{vtest}"
at = 40.0
crop = [684, 296, 68, 120]

[[actors]]
sprite = "man"
path = [[0.0, 0.3, 0.8, 0.22], [2.0, 0.5, 0.8, 0.22], [4.0, 0.5, 0.8, 0.22]]

[camera]
id = "tiny"
fps = 5

[[camera.zones]]
id = "right"
polygon = [[0.45, 0.0], [1.0, 0.0], [1.0, 1.0], [0.45, 1.0]]

[[camera.rules]]
kind = "loitering"
id = "linger-right"
zone = "right"
min_seconds = 1

{truth}
"#,
        vtest = vtest.display()
    );
    let path = dir.join("tiny_script.toml");
    std::fs::write(&path, text).unwrap();
    path
}

// The man crosses x = 0.45 at 1.5 s (0.3 → 0.5 over 0–2 s), so the first frame (0.2 s apart) with him in the
// zone is at 1.6 s; he is still there at the end.
const TRUTH: &str = "[[truth]]\nrule = \"linger-right\"\nstart = 1.6\ntolerance = 0.5\n";

/// Per frame in decode order: (pts in ms, keyframe?) and the stream's caps, read without decoding.
fn stream_layout(mp4: &Path) -> (Vec<(u64, bool)>, gst::Caps) {
    let (pipeline, sink) = support::play_to_appsink(&format!(
        "filesrc location={} ! qtdemux ! h264parse ! appsink name=sink sync=false",
        mp4.display()
    ));
    let mut frames = Vec::new();
    let mut caps = None;
    while let Ok(sample) = sink.pull_sample() {
        caps = sample.caps().map(|c| c.to_owned());
        let b = sample.buffer().unwrap();
        frames.push((
            b.pts().unwrap().mseconds(),
            !b.flags().contains(gst::BufferFlags::DELTA_UNIT),
        ));
    }
    pipeline.set_state(gst::State::Null).unwrap();
    (frames, caps.unwrap())
}

#[test]
fn a_tiny_scene_encodes_like_a_camera_with_its_truth() {
    let dir = tempfile::tempdir().unwrap();
    let script = tiny_script(dir.path(), TRUTH);
    let out = dir.path().join("out");
    let g = scenegen::make_scenario(&script, &out).unwrap();
    assert_eq!(g.video, out.join("tiny.mp4"));
    assert_eq!(g.scenario, out.join("tiny.toml"));
    assert_eq!(g.frames, 20);

    // 20 frames 200 ms apart, in presentation order (no B-frames), a keyframe every second and only then.
    let (frames, caps) = stream_layout(&g.video);
    let pts: Vec<u64> = frames.iter().map(|f| f.0).collect();
    assert_eq!(pts, (0..20).map(|i| i * 200).collect::<Vec<u64>>());
    let keys: Vec<usize> = frames
        .iter()
        .enumerate()
        .filter(|f| f.1.1)
        .map(|f| f.0)
        .collect();
    assert_eq!(keys, [0, 5, 10, 15]);
    let s = caps.structure(0).unwrap();
    assert_eq!(s.get::<&str>("profile").unwrap(), "main");
    assert_eq!(
        (
            s.get::<i32>("width").unwrap(),
            s.get::<i32>("height").unwrap()
        ),
        (768, 576)
    );

    // The scenario: the script's camera with the video as its url, and its truth.
    let scenario: toml::Table = std::fs::read_to_string(&g.scenario)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        scenario["scenario"]["labels"]
            .as_str()
            .unwrap()
            .contains("exact ground truth"),
        "{scenario:?}"
    );
    assert_eq!(scenario["camera"]["url"].as_str(), Some("tiny.mp4"));
    assert_eq!(
        scenario["camera"]["rules"][0]["id"].as_str(),
        Some("linger-right")
    );
    let truth = scenario["truth"].as_array().unwrap();
    assert_eq!(truth.len(), 1);
    assert_eq!(truth[0]["rule"].as_str(), Some("linger-right"));
    assert_eq!(truth[0]["start"].as_float(), Some(1.6));
    assert!(truth[0].get("end").is_none());

    // At 3 s the man stands at x = 0.5, y = 0.8, 0.22 of 576 px tall: round(126.72) = 127 px, his crop
    // 68×120 scaled to round(68 × 127 / 120) = 72 px wide; left = round(384 − 36) = 348, top = 461 − 127 = 334.
    let want = ActorBox {
        class: "person".into(),
        x1: 348.0 / 768.0,
        y1: 334.0 / 576.0,
        x2: 420.0 / 768.0,
        y2: 461.0 / 576.0,
    };
    assert_eq!(g.boxes[15], std::slice::from_ref(&want));
    // He is on screen from the first keyframe (0 s) to the last (4 s): in every frame.
    assert!(g.boxes.iter().all(|b| b.len() == 1));

    // The decoded frame at 3 s shows a person there: the real detector finds him.
    let decoded = support::decode_frames(&g.video, 5, 768);
    assert_eq!(decoded.len(), 20);
    let (ms, img) = decoded.into_iter().nth(15).unwrap();
    assert_eq!(ms, 3000);
    let manifest = support::nanodet();
    let person = manifest.class_index("person").unwrap() as u16;
    let mut detector = Detector::new(manifest, 1, 0.35).unwrap();
    let mut dets = vec![Vec::new()];
    detector
        .detect(&[Frame::from_rgb_image(0, Timestamp(0), img)], &mut dets)
        .unwrap();
    let best = dets[0]
        .iter()
        .filter(|d| d.class == person)
        .map(|d| iou(&want, d.bbox))
        .fold(0.0, f64::max);
    assert!(
        best >= 0.5,
        "best IoU {best:.2} with the pasted man: {:?}",
        dets[0]
    );

    // It is a scenario `streetwatch eval` reads and replays: its camera, rules and truth load as written.
    let report =
        streetwatch::eval::run(std::slice::from_ref(&g.scenario), Default::default()).unwrap();
    let json = report.json();
    assert_eq!(json["scenarios"], 1, "{json}");
    assert!(json["rules"]["loitering"].is_object(), "{json}");

    // Same script, same bytes.
    let again = scenegen::make_scenario(&script, &dir.path().join("again")).unwrap();
    assert_eq!(
        std::fs::read(&g.video).unwrap(),
        std::fs::read(&again.video).unwrap()
    );
}

#[test]
fn a_truth_the_paths_do_not_bear_out_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    // Says the man lingered from 1.2 s; he only enters the zone at 1.6 s (more than a frame later).
    let script = tiny_script(
        dir.path(),
        "[[truth]]\nrule = \"linger-right\"\nstart = 1.2\ntolerance = 0.5\n",
    );
    let err = scenegen::make_scenario(&script, &dir.path().join("out"))
        .unwrap_err()
        .to_string();
    let header = std::fs::read_to_string(&script)
        .unwrap()
        .lines()
        .position(|l| l == "[[truth]]")
        .unwrap()
        + 1;
    // Located at the truth's table: its header or its first key.
    assert!(
        (err.contains(&format!("tiny_script.toml:{header}:"))
            || err.contains(&format!("tiny_script.toml:{}:", header + 1)))
            && err.contains("truth[0]"),
        "{err}"
    );
    // The last frame is at 3.8 s.
    assert!(
        err.contains("[1.6, 3.8]"),
        "names what the paths give: {err}"
    );
    assert!(
        !dir.path().join("out/tiny.mp4").exists(),
        "nothing is written"
    );

    // Forgetting the truth is refused too: the paths make an event no truth covers.
    let script = tiny_script(dir.path(), "");
    let err = scenegen::make_scenario(&script, &dir.path().join("out"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no truth covers"), "{err}");
}

/// Every committed scene: the script still gives the committed video byte for byte, and the real detector (the
/// default int8 NanoDet, as the pipeline runs it) sees the actors as what they are. Slow (it regenerates every
/// scene): run with `cargo test --release --test scenegen -- --ignored` after changing the generator or a script.
#[test]
#[ignore = "regenerates every committed scene (minutes)"]
fn committed_scenes_are_current_and_their_actors_are_detected() {
    let scenarios = support::root().join("fixtures/scenarios");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(scenarios.join("scripts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 7, "{scripts:?}");
    support::nanodet(); // loads the runtime
    let manifest = std::sync::Arc::new(
        streetwatch::infer::ModelManifest::load(
            &support::root().join("models/nanodet_g_416_coco_int8.toml"),
        )
        .unwrap(),
    );
    let mut detector = Detector::new(manifest.clone(), 1, 0.35).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for script in &scripts {
        let g = scenegen::make_scenario(script, dir.path()).unwrap();
        let name = g.video.file_name().unwrap().to_owned();
        assert_eq!(
            std::fs::read(&g.video).unwrap(),
            std::fs::read(scenarios.join(&name)).unwrap(),
            "{name:?} is stale: regenerate it with `streetwatch make-scenario {} --out fixtures/scenarios`",
            script.display()
        );
        assert_eq!(
            std::fs::read_to_string(&g.scenario).unwrap(),
            std::fs::read_to_string(scenarios.join(g.scenario.file_name().unwrap())).unwrap()
        );
        // One frame a second; an actor whose sprite lies wholly in the frame counts as seen when a detection of
        // its class overlaps its pasted crop with IoU ≥ 0.3 (the crop has a margin around the object). Vehicles
        // count as one class, as the rules' filters take them (a van is a car to one model, a truck to another).
        let script_toml: toml::Table = std::fs::read_to_string(script).unwrap().parse().unwrap();
        let fps = script_toml["output"]["fps"].as_integer().unwrap();
        let decoded = support::decode_frames(&g.video, 1, 768);
        let (mut shown, mut seen) = (0usize, 0usize);
        for (ms, img) in decoded {
            let boxes = &g.boxes[(ms * fps / 1000) as usize];
            let (fw, fh) = (img.width() as f64, img.height() as f64);
            let mut dets = vec![Vec::new()];
            detector
                .detect(&[Frame::from_rgb_image(0, Timestamp(0), img)], &mut dets)
                .unwrap();
            let family = |label: &str| -> Vec<u16> {
                let vehicles = ["car", "motorcycle", "bus", "truck"];
                let names: &[&str] = if vehicles.contains(&label) {
                    &vehicles
                } else {
                    &[label][..]
                };
                names
                    .iter()
                    .map(|n| manifest.class_index(n).unwrap() as u16)
                    .collect()
            };
            for b in boxes.iter().filter(|b| whole(b, fw, fh)) {
                shown += 1;
                let classes = family(&b.class);
                if dets[0]
                    .iter()
                    .filter(|d| classes.contains(&d.class))
                    .any(|d| iou(b, d.bbox) >= 0.3)
                {
                    seen += 1;
                }
            }
        }
        let rate = seen as f64 / shown as f64;
        eprintln!(
            "{name:?}: {seen}/{shown} actor-frames detected ({:.0} %)",
            rate * 100.0
        );
        if rate < 0.8 {
            failures.push(format!("{name:?}: {rate:.2}"));
        }
    }
    assert!(
        failures.is_empty(),
        "scenes whose actors the detector misses: {failures:?}"
    );
}

/// Wholly inside the frame (the generator clips boxes to the frame, so a clipped box touches an edge).
fn whole(b: &ActorBox, fw: f64, fh: f64) -> bool {
    let px = 0.5 / fw.max(fh);
    b.x1 > px && b.y1 > px && b.x2 < 1.0 - px && b.y2 < 1.0 - px
}

fn iou(a: &ActorBox, d: streetwatch::infer::BBox) -> f64 {
    let (dx1, dy1, dx2, dy2) = (d.x1 as f64, d.y1 as f64, d.x2 as f64, d.y2 as f64);
    let iw = (a.x2.min(dx2) - a.x1.max(dx1)).max(0.0);
    let ih = (a.y2.min(dy2) - a.y1.max(dy1)).max(0.0);
    let inter = iw * ih;
    inter / ((a.x2 - a.x1) * (a.y2 - a.y1) + (dx2 - dx1) * (dy2 - dy1) - inter)
}
