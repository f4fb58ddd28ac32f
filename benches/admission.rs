//! Admission before decode: what `UnitSink::push` costs a receiver per unit, for the units that are
//! almost all of a camera's stream (delta units, and keyframes of cameras that are not due).
//! `cargo bench --bench admission` prints units/s.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use streetwatch::frame::Frame;
use streetwatch::health::CameraHealth;
use streetwatch::infer::{Detection, InferError};
use streetwatch::ingest::{Codec, DecodeOptions, DecodeSpec, DecoderPool, EncodedUnit, Pacing};
use streetwatch::pool::{Analyser, BatchDetector, Pool, PoolConfig};
use streetwatch::types::{CameraId, Timestamp};

const CAMERAS: usize = 256;

struct NoDetections;

impl BatchDetector for NoDetections {
    fn max_batch(&self) -> usize {
        1
    }
    fn detect(&mut self, frames: &[Frame], _: &mut [Vec<Detection>]) -> Result<usize, InferError> {
        Ok(frames.len())
    }
}

struct Discard;

impl Analyser for Discard {
    fn analyse(&mut self, _: &Frame, _: &[Detection]) {}
}

fn unit(camera: usize, keyframe: bool, ms: i64, data: &Bytes) -> EncodedUnit {
    EncodedUnit {
        camera,
        codec: Codec::H264,
        keyframe,
        data: data.clone(),
        captured_at: Timestamp(ms),
        received: Instant::now(),
    }
}

fn push(c: &mut Criterion) {
    let health: Vec<Arc<CameraHealth>> = (0..CAMERAS)
        .map(|i| Arc::new(CameraHealth::new(CameraId::new(&format!("c{i}")))))
        .collect();
    let cfg = PoolConfig {
        workers: 1,
        max_batch: 1,
        batch_wait: Duration::ZERO,
        motion: None,
    };
    let cameras = health
        .iter()
        .map(|h| (h.clone(), Box::new(Discard) as Box<dyn Analyser>))
        .collect();
    let (pool, frames) = Pool::start(&cfg, cameras, || Ok(NoDetections)).unwrap();
    let specs = health
        .iter()
        .enumerate()
        .map(|(index, h)| DecodeSpec {
            index,
            fps: 0.5,
            width: 416,
            health: h.clone(),
            sink: frames.clone(),
        })
        .collect();
    let opts = DecodeOptions::new(1, Pacing::Realtime);
    let (decoders, sink) = DecoderPool::start(specs, CAMERAS, opts, pool.observer()).unwrap();
    // A 30 kB unit, a 720p keyframe's size. Each camera's first keyframe is taken (it is not H.264, so
    // it gives no picture), which sets the camera's next due time 1 s ahead.
    let data = Bytes::from(vec![0x5a; 30_000]);
    for camera in 0..CAMERAS {
        sink.push(unit(camera, true, 0, &data));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while decoders.stats().failures.load(Ordering::Relaxed) < CAMERAS as u64 {
        assert!(Instant::now() < deadline, "first keyframes not taken");
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut g = c.benchmark_group("admission");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("delta_unit", |b| {
        b.iter(|| {
            i = (i + 1) % CAMERAS;
            sink.push(unit(i, false, 10, &data))
        })
    });
    g.bench_function("keyframe_not_due_dropped_encoded", |b| {
        b.iter(|| {
            i = (i + 1) % CAMERAS;
            sink.push(unit(i, true, 10, &data))
        })
    });
    g.finish();
    let skipped: u64 = health
        .iter()
        .map(|h| h.decode_skipped.load(Ordering::Relaxed))
        .sum();
    assert!(skipped > 0, "keyframes were admitted, not dropped");
    decoders.stop();
    pool.shutdown();
}

criterion_group!(benches, push);
criterion_main!(benches);
