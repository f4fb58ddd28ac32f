//! Per-camera health, written by ingest and the pool with atomics and read by logs, bench and the API.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::types::{CameraId, Timestamp};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    Connecting = 0,
    Streaming = 1,
    Stalled = 2,
    Backoff = 3,
    Stopped = 4,
}

impl StreamState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Connecting,
            1 => Self::Streaming,
            2 => Self::Stalled,
            3 => Self::Backoff,
            _ => Self::Stopped,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Streaming => "streaming",
            Self::Stalled => "stalled",
            Self::Backoff => "backoff",
            Self::Stopped => "stopped",
        }
    }
}

#[derive(Debug)]
pub struct CameraHealth {
    pub camera: CameraId,
    state: AtomicU8,
    /// Encoded access units from the RTSP client (every picture of the stream, before any decoding).
    pub units_received: AtomicU64,
    /// Keyframes dropped while still encoded: the camera was not due, or analysis had no room for them.
    pub decode_skipped: AtomicU64,
    /// Analysed frames whose scene had not changed since the last inference: the detections were reused.
    pub motion_skipped: AtomicU64,
    /// Pictures out of the decoder (all of them, or keyframes only), before sampling to the analysis rate.
    pub frames_decoded: AtomicU64,
    /// Sampled frames that reached the pool.
    pub frames_received: AtomicU64,
    pub frames_analysed: AtomicU64,
    /// Frames replaced in the pool's slot before a worker took them: the pool was busy.
    pub frames_dropped: AtomicU64,
    pub restarts: AtomicU64,
    /// Batches holding this camera's frame that panicked in a pool worker (detector or analyser). The
    /// worker carries on and the frame is lost, not analysed: above zero means a bug to report.
    pub worker_panics: AtomicU64,
    /// Milliseconds since the epoch of the last frame; 0 before the first.
    last_frame_ms: AtomicI64,
    /// Only written when a stream fails: never on the frame path.
    last_error: Mutex<Option<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthSnapshot {
    pub camera: CameraId,
    pub state: StreamState,
    pub units_received: u64,
    pub decode_skipped: u64,
    pub motion_skipped: u64,
    pub frames_decoded: u64,
    pub frames_received: u64,
    pub frames_analysed: u64,
    pub frames_dropped: u64,
    pub restarts: u64,
    pub worker_panics: u64,
    /// Seconds since the last frame, if any arrived.
    pub last_frame_age_s: Option<f64>,
    pub last_error: Option<String>,
}

impl CameraHealth {
    pub fn new(camera: CameraId) -> Self {
        Self {
            camera,
            state: AtomicU8::new(StreamState::Connecting as u8),
            units_received: AtomicU64::new(0),
            decode_skipped: AtomicU64::new(0),
            motion_skipped: AtomicU64::new(0),
            frames_decoded: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            frames_analysed: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            worker_panics: AtomicU64::new(0),
            last_frame_ms: AtomicI64::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub fn state(&self) -> StreamState {
        StreamState::from_u8(self.state.load(Ordering::Relaxed))
    }
    pub fn set_state(&self, s: StreamState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }
    pub fn frame_received(&self, at: Timestamp) {
        self.frames_received.fetch_add(1, Ordering::Relaxed);
        self.last_frame_ms.store(at.0, Ordering::Relaxed);
    }
    /// An encoded unit arrived: the stream is alive, whether or not the unit will be decoded.
    pub fn unit_received(&self, at: Timestamp) {
        self.units_received.fetch_add(1, Ordering::Relaxed);
        self.last_frame_ms.store(at.0, Ordering::Relaxed);
    }
    pub fn last_frame_at(&self) -> Option<Timestamp> {
        match self.last_frame_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Timestamp(ms)),
        }
    }
    pub fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes this camera's health that of a camera another process runs (a node, seen by a router):
    /// `state`, the counters and error of `remote`, and its last frame at `last_frame`.
    pub fn mirror(
        &self,
        remote: &HealthSnapshot,
        state: StreamState,
        last_frame: Option<Timestamp>,
    ) {
        self.set_state(state);
        for (mine, theirs) in [
            (&self.units_received, remote.units_received),
            (&self.decode_skipped, remote.decode_skipped),
            (&self.motion_skipped, remote.motion_skipped),
            (&self.frames_decoded, remote.frames_decoded),
            (&self.frames_received, remote.frames_received),
            (&self.frames_analysed, remote.frames_analysed),
            (&self.frames_dropped, remote.frames_dropped),
            (&self.restarts, remote.restarts),
            (&self.worker_panics, remote.worker_panics),
        ] {
            mine.store(theirs, Ordering::Relaxed);
        }
        self.last_frame_ms
            .store(last_frame.map_or(0, |t| t.0), Ordering::Relaxed);
        let mut error = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        if *error != remote.last_error {
            error.clone_from(&remote.last_error);
        }
    }

    pub fn snapshot(&self, now: Timestamp) -> HealthSnapshot {
        HealthSnapshot {
            camera: self.camera.clone(),
            state: self.state(),
            units_received: self.units_received.load(Ordering::Relaxed),
            decode_skipped: self.decode_skipped.load(Ordering::Relaxed),
            motion_skipped: self.motion_skipped.load(Ordering::Relaxed),
            frames_decoded: self.frames_decoded.load(Ordering::Relaxed),
            frames_received: self.frames_received.load(Ordering::Relaxed),
            frames_analysed: self.frames_analysed.load(Ordering::Relaxed),
            frames_dropped: self.frames_dropped.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            worker_panics: self.worker_panics.load(Ordering::Relaxed),
            last_frame_age_s: self.last_frame_at().map(|t| now.since(t) as f64 / 1000.0),
            last_error: self.last_error(),
        }
    }
}
