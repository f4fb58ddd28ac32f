//! The analyse stage's cost per frame: tracker + every rule kind, with 50 tracked objects and 10 zones
//! (a busy junction). `cargo bench --bench analyse` prints the time per frame; divide by 50 for the
//! cost per track (the throughput line shows tracks per second).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use streetwatch::analyse::CameraAnalyser;
use streetwatch::config::{Config, DEFAULT_MODEL, installed};
use streetwatch::frame::Frame;
use streetwatch::infer::{BBox, Detection, ModelManifest};
use streetwatch::pool::Analyser;
use streetwatch::types::Timestamp;

const OBJECTS: usize = 50;
const ZONES: usize = 10;

/// Ten zones in a 5 × 2 grid, each with one rule, the seven kinds in turn, and one counting line.
fn camera() -> String {
    let kinds = [
        ("crowding", "min_people = 5\n"),
        ("loitering", ""),
        ("parking", ""),
        ("encroachment", ""),
        ("intrusion", ""),
        ("wrong_way", "direction = [1.0, 0.0]\n"),
    ];
    let mut s = String::from("[[cameras]]\nid = \"bench\"\nurl = \"rtsp://h/s\"\n");
    for z in 0..ZONES {
        let (x, y) = ((z % 5) as f32 * 0.2, (z / 5) as f32 * 0.5);
        s += &format!(
            "[[cameras.zones]]\nid = \"z{z}\"\npolygon = [[{x}, {y}], [{}, {y}], [{}, {}], [{x}, {}]]\n",
            x + 0.2,
            x + 0.2,
            y + 0.5,
            y + 0.5
        );
    }
    s += "[[cameras.lines]]\nid = \"mid\"\npoints = [[0.0, 0.5], [1.0, 0.5]]\nin_direction = [0.0, -1.0]\n";
    for z in 0..ZONES {
        let (kind, extra) = kinds[z % kinds.len()];
        s += &format!(
            "[[cameras.rules]]\nkind = \"{kind}\"\nid = \"r{z}\"\nzone = \"z{z}\"\n{extra}"
        );
    }
    s += "[[cameras.rules]]\nkind = \"line_crossing\"\nid = \"cross\"\nline = \"mid\"\n";
    s
}

/// 50 objects of mixed classes, each walking its own slow circle, so tracks move, cross zones and
/// the line, and some stand nearly still.
fn scene(frame: usize) -> Vec<Detection> {
    let classes = [0u16, 0, 0, 2, 3, 1, 5, 7, 0, 56];
    (0..OBJECTS)
        .map(|i| {
            let phase = frame as f32 * 0.02 * (1.0 + (i % 5) as f32 * 0.3) + i as f32;
            let (cx, cy) = (
                0.05 + 0.9 * ((i % 10) as f32 + 0.5) / 10.0 + 0.03 * phase.cos(),
                0.1 + 0.8 * ((i / 10) as f32 + 0.5) / 5.0 + 0.03 * phase.sin(),
            );
            Detection {
                class: classes[i % classes.len()],
                score: 0.6 + 0.3 * ((i * 7 % 10) as f32 / 10.0),
                bbox: BBox {
                    x1: cx - 0.015,
                    y1: cy - 0.06,
                    x2: cx + 0.015,
                    y2: cy,
                },
            }
        })
        .collect()
}

fn tracker_and_rules(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = Config::parse(&camera(), "bench.toml", root).expect("bench camera");
    let labels = ModelManifest::load(&installed(DEFAULT_MODEL))
        .expect("model manifest")
        .output
        .labels;
    let (tx, rx) = crossbeam::channel::unbounded();
    let mut analyser = CameraAnalyser::new(&config.cameras[0], &labels, tx);
    let frames: Vec<Vec<Detection>> = (0..1000).map(scene).collect();
    let mut frame = Frame::from_rgb_image(0, Timestamp(0), image::RgbImage::new(16, 9));
    let mut k = 0usize;
    let mut g = c.benchmark_group("analyse");
    g.throughput(Throughput::Elements(OBJECTS as u64));
    g.bench_function("tracker_and_11_rules_50_objects_10_zones", |b| {
        b.iter(|| {
            // 2 analysed frames per second of frame time.
            frame.captured_at = Timestamp(k as i64 * 500);
            analyser.analyse(&frame, black_box(&frames[k % frames.len()]));
            k += 1;
            while rx.try_recv().is_ok() {}
        })
    });
    g.finish();
}

criterion_group!(benches, tracker_and_rules);
criterion_main!(benches);
