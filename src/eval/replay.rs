//! Replays a scenario's footage through the real pipeline on the footage's own timestamps.
//!
//! Frames run flat out and none is dropped (`Pacing::Unthrottled { lossless: true }`), the clock stands
//! at the scenario's `starts_at`, so a frame's time is `starts_at` + its media position whatever the
//! machine's speed. One worker and one frame per inference run: batching never changes the floats, and
//! the same footage gives the same incidents bit for bit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::EvalOptions;
use super::metrics::Detected;
use super::scenario::Scenario;
use crate::app::{Pipeline, RunOptions};
use crate::config::{Config, RuntimeConfig};
use crate::ingest::Pacing;
use crate::store::Store;
use crate::types::ManualClock;

/// Longest a replay may take; the committed clips take seconds, a stuck pipeline must not hang CI.
const REPLAY_LIMIT: Duration = Duration::from_secs(1800);

/// A replayed scenario: its incidents, times in media seconds, and its frames.
pub struct Replayed {
    pub incidents: Vec<Detected>,
    pub frames_analysed: u64,
    /// Of `frames_analysed`, those analysed with the previous detections (a still scene).
    pub motion_skipped: u64,
}

pub fn replay(s: &Scenario, options: EvalOptions) -> anyhow::Result<Replayed> {
    let data = tempfile::tempdir().context("creating a temporary data folder")?;
    let config = Config {
        runtime: RuntimeConfig {
            data_dir: Some(data.path().to_path_buf()),
            workers: 1,
            max_batch: 1,
            motion_gate: options.motion_gate,
            ..RuntimeConfig::default()
        },
        alert: None,
        retention: Default::default(),
        serve: None,
        cluster: None,
        cameras: vec![s.camera.clone()],
        base_dir: s.base_dir.clone(),
    };
    let opts = RunOptions {
        pacing: Pacing::Unthrottled { lossless: true },
        loop_files: false,
        ..RunOptions::default()
    };
    let pipeline = Pipeline::start(&config, opts, Arc::new(ManualClock::at(s.starts_at)))?;
    let deadline = Instant::now() + REPLAY_LIMIT;
    let outcome = loop {
        let h = pipeline.health().remove(0);
        // A restarted file plays from its start again, and a frame the detector failed on is never
        // analysed: either would make the replay differ from the footage.
        if h.restarts > 0 {
            break Err(anyhow::anyhow!(
                "the footage failed: {}",
                h.last_error.as_deref().unwrap_or("unknown error")
            ));
        }
        if pipeline.stats().inference_errors.load(Ordering::Relaxed) > 0 {
            break Err(anyhow::anyhow!(
                "the detector failed on a frame (see the log)"
            ));
        }
        if h.worker_panics > 0 {
            break Err(anyhow::anyhow!(
                "a pool worker panicked on {} frame(s) (see the log)",
                h.worker_panics
            ));
        }
        if h.frames_dropped > 0 {
            break Err(anyhow::anyhow!(
                "{} frames were dropped: the replay would not be deterministic",
                h.frames_dropped
            ));
        }
        // The footage has ended and every frame that reached the pool has been analysed.
        if pipeline.finished() && h.frames_analysed >= h.frames_received {
            break if h.frames_analysed > 0 {
                Ok((h.frames_analysed, h.motion_skipped))
            } else {
                Err(anyhow::anyhow!("no frame of the footage was analysed"))
            };
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "replay did not finish within {} s",
                REPLAY_LIMIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let db = pipeline.db_path.clone();
    pipeline.shutdown();
    let (frames_analysed, motion_skipped) = outcome?;
    let secs = |t: i64| (t - s.starts_at.0) as f64 / 1000.0;
    let rows = Store::open(&db)?.incidents()?;
    Ok(Replayed {
        incidents: rows
            .into_iter()
            .map(|r| Detected {
                rule: r.rule,
                opened: secs(r.opened_at),
                closed: r.closed_at.map(secs),
            })
            .collect(),
        frames_analysed,
        motion_skipped,
    })
}
