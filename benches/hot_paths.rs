//! Hot paths of the frame path, one group each: letterbox pre-processing, output decoding + NMS, and
//! the pool's slot handoff. `cargo bench --bench hot_paths` prints the figures.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use streetwatch::frame::Frame;
use streetwatch::health::CameraHealth;
use streetwatch::infer::{
    BBox, Detection, Detector, Letterboxer, ModelManifest, Placement, decode_output, nms,
};
use streetwatch::pool::{Analyser, Pool, PoolConfig};
use streetwatch::types::{CameraId, Timestamp};

fn manifest() -> ModelManifest {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/nanodet_g_416_coco.toml");
    ModelManifest::load(&path).expect("model manifest")
}

fn still() -> image::RgbImage {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/footage/bus.jpg");
    image::open(path).unwrap().to_rgb8()
}

fn preprocess(c: &mut Criterion) {
    let m = manifest();
    let mut g = c.benchmark_group("preprocess");
    g.throughput(Throughput::Elements(1));
    let mut dst = vec![0.0f32; 3 * 416 * 416];
    for (w, h) in [(416u32, 234u32), (768, 432), (1280, 720)] {
        let img = image::imageops::resize(&still(), w, h, image::imageops::FilterType::Triangle);
        let mut lb = Letterboxer::default();
        g.bench_function(format!("letterbox_{w}x{h}_to_416"), |b| {
            b.iter(|| lb.fill(&m.input, black_box(img.as_raw()), w, h, w * 3, &mut dst))
        });
    }
    // A region tile: a 416×416 view into a 1920×1080 frame's rows (no copy), 1:1 into the input.
    let (w, h) = (1920u32, 1080u32);
    let img = image::imageops::resize(&still(), w, h, image::imageops::FilterType::Triangle);
    let at = (600 * w * 3 + 1000 * 3) as usize;
    let mut lb = Letterboxer::default();
    g.bench_function("letterbox_416x416_tile_of_1920x1080", |b| {
        b.iter(|| {
            lb.fill(
                &m.input,
                black_box(&img.as_raw()[at..]),
                416,
                416,
                w * 3,
                &mut dst,
            )
        })
    });
    g.finish();
}

/// Synthetic NanoDet output with a realistic number of candidates above threshold.
fn nanodet_output(candidates: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; 3549 * 84];
    let mut rng = fastrand::Rng::with_seed(7);
    for a in 0..3549 {
        let row = &mut out[a * 84..(a + 1) * 84];
        let (x, y) = (rng.f32() * 380.0, rng.f32() * 380.0);
        row[..4].copy_from_slice(&[
            x,
            y,
            x + 20.0 + rng.f32() * 40.0,
            y + 40.0 + rng.f32() * 60.0,
        ]);
        for s in &mut row[4..] {
            *s = rng.f32() * 0.2;
        }
        if a < candidates {
            row[4 + rng.usize(0..3)] = 0.4 + rng.f32() * 0.6;
        }
    }
    out
}

fn decode(c: &mut Criterion) {
    let m = manifest();
    let place = Placement::new(768, 432, 416, 416);
    let mut g = c.benchmark_group("decode_nms");
    for candidates in [20usize, 200] {
        let out = nanodet_output(candidates);
        let mut dets = Vec::with_capacity(512);
        g.bench_function(
            format!("nanodet_3549_anchors_{candidates}_candidates"),
            |b| {
                b.iter(|| {
                    decode_output(
                        m.output.layout,
                        80,
                        0.35,
                        black_box(&out),
                        3549,
                        &place,
                        &mut dets,
                    )
                })
            },
        );
    }
    let boxes: Vec<Detection> = (0..300)
        .map(|i| {
            let x = (i % 20) as f32 / 20.0;
            Detection {
                class: (i % 3) as u16,
                score: 1.0 - i as f32 / 300.0,
                bbox: BBox {
                    x1: x,
                    y1: 0.1,
                    x2: x + 0.08,
                    y2: 0.3,
                },
            }
        })
        .collect();
    g.bench_function("nms_300_boxes", |b| {
        b.iter(|| {
            let mut d = boxes.clone();
            nms(&mut d, 0.5, 300);
            d.len()
        })
    });
    g.finish();
}

struct Discard;
impl Analyser for Discard {
    fn analyse(&mut self, _: &Frame, _: &[Detection]) {}
}

/// Pushing frames into the pool's slots while real workers take them (detector on a tiny input):
/// what one frame costs the producer, i.e. the ingest thread.
fn slot_handoff(c: &mut Criterion) {
    let m = Arc::new(manifest());
    streetwatch::infer::init_runtime(&streetwatch::infer::default_runtime_path())
        .expect("ONNX Runtime");
    let cameras: Vec<(Arc<CameraHealth>, Box<dyn Analyser>)> = (0..64)
        .map(|i| {
            (
                Arc::new(CameraHealth::new(CameraId::new(&format!("c{i}")))),
                Box::new(Discard) as Box<dyn Analyser>,
            )
        })
        .collect();
    let cfg = PoolConfig {
        workers: 1,
        max_batch: 4,
        batch_wait: Duration::from_millis(1),
        motion: None,
    };
    let (pool, sink) = Pool::start(&cfg, cameras, || Detector::new(m.clone(), 4, 0.35)).unwrap();
    let pixels = vec![0u8; 32 * 32 * 3];
    let mut g = c.benchmark_group("slot_handoff");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("push_latest_wins_64_cameras", |b| {
        b.iter_batched(
            || {
                i = (i + 1) % 64;
                Frame {
                    camera: i,
                    ..Frame::from_rgb_image(
                        0,
                        Timestamp(0),
                        image::RgbImage::from_raw(32, 32, pixels.clone()).unwrap(),
                    )
                }
            },
            |f| sink.push(f),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
    pool.shutdown();
}

criterion_group!(benches, preprocess, decode, slot_handoff);
criterion_main!(benches);
