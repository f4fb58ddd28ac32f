//! Motion gating: skip the model on a scene that has not changed since the camera's last inference.
//!
//! Each analysed frame gets a [`Signature`]: the mean luma of a 32×18 grid of cells, from a fixed 8×8
//! sample points per cell (so the cost is the same ~37 k pixel reads at 416 px or 4K, tens of µs against
//! a model's ~16 ms). It is compared with the signature of the frame the model last ran on — not the
//! previous frame, so a slow change adds up until it counts. When no cell changed by more than the
//! threshold and that inference is younger than the refresh interval, the camera's previous detections are
//! handed to its analyser with the new frame: the tracker sees the same objects in the same place, so dwell
//! timers (loitering, parking, encroachment) keep running on a still scene.

use std::sync::atomic::Ordering;

use super::{BatchDetector, Worker};
use crate::frame::Frame;
use crate::infer::Detection;
use crate::types::Timestamp;

const COLS: usize = 32;
const ROWS: usize = 18;
/// Sample points per cell along each axis.
const PER_CELL: usize = 8;
const CELLS: usize = COLS * ROWS;

/// When the model may be skipped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MotionGate {
    /// A scene counts as changed when any cell's mean luma moved by more than this (0–255 levels).
    ///
    /// Why the largest cell and 12 levels: a mean over the whole grid dilutes a small object, since a
    /// person far away covers 1–3 of the 576 cells, so the decision looks at each cell. A cell mean over 64
    /// samples keeps a tenth of a pixel's noise: at night gain (σ ≈ 8 levels per pixel) two signatures of
    /// the same scene differ by σ ≈ 1.4 per cell, ≈ 4.5 at the worst of 576 cells, and H.264 at 2 Mbps adds
    /// a level or two. 12 clears that with room, while a person of modest contrast (≥ 30 levels) covering
    /// 40 % of a cell (a 13 px cell at 416 px: a 5 px wide figure) moves it past 12. A change of exposure
    /// or a camera knocked askew moves many cells and re-runs the model, which is the safe side.
    pub threshold: u8,
    /// The model runs at least this often on a still scene (frame time, milliseconds), so a wrong skip
    /// (an object that arrived below the threshold) is corrected within one interval.
    pub refresh_ms: i64,
}

impl Default for MotionGate {
    fn default() -> Self {
        Self {
            threshold: 12,
            refresh_ms: 10_000,
        }
    }
}

/// Mean luma of each cell of a 32×18 grid over the frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; CELLS]);

impl Default for Signature {
    fn default() -> Self {
        Self([0; CELLS])
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({:?}…)", &self.0[..4])
    }
}

impl Signature {
    /// Samples `frame` (packed RGB rows of `stride` bytes) into `self`, allocating nothing. Sample points
    /// sit at the centres of a 256×144 grid over the frame; BT.601 luma in integer arithmetic.
    pub fn compute(&mut self, frame: &Frame) {
        let (w, h, stride) = (
            frame.width as usize,
            frame.height as usize,
            frame.stride as usize,
        );
        let rgb = frame.rgb();
        let (gx, gy) = (COLS * PER_CELL, ROWS * PER_CELL);
        let mut sums = [0u32; CELLS];
        if w > 0 && h > 0 && rgb.len() >= (h - 1) * stride + w * 3 {
            for sy in 0..gy {
                let y = (2 * sy + 1) * h / (2 * gy);
                let row = &rgb[y * stride..y * stride + w * 3];
                let cell_row = (sy / PER_CELL) * COLS;
                for sx in 0..gx {
                    let x = (2 * sx + 1) * w / (2 * gx);
                    let p = &row[x * 3..x * 3 + 3];
                    let luma = (77 * p[0] as u32 + 150 * p[1] as u32 + 29 * p[2] as u32) >> 8;
                    sums[cell_row + sx / PER_CELL] += luma;
                }
            }
        }
        for (cell, sum) in self.0.iter_mut().zip(sums) {
            *cell = (sum / (PER_CELL * PER_CELL) as u32) as u8;
        }
    }

    /// The largest change of any cell's mean luma between two signatures.
    pub fn max_difference(&self, other: &Signature) -> u8 {
        self.0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0)
    }
}

/// A camera's state at its last inference. Kept in the camera's pool slot and taken by the worker that
/// holds the claim, so it is never shared; its buffers are reused (no allocation once warm).
#[derive(Debug, Default)]
pub struct MotionState {
    signature: Signature,
    /// Capture time of the frame the model last ran on; `None` before the first inference.
    at: Option<Timestamp>,
    detections: Vec<Detection>,
}

impl MotionState {
    /// The detections of the last inference, to hand the analyser when the model is skipped.
    pub fn detections(&self) -> &[Detection] {
        &self.detections
    }

    /// Whether the model may be skipped for a frame captured at `t` with signature `sig`.
    pub fn still(&self, gate: &MotionGate, sig: &Signature, t: Timestamp) -> bool {
        self.at.is_some_and(|last| {
            let age = t.0 - last.0;
            (0..gate.refresh_ms).contains(&age)
                && sig.max_difference(&self.signature) <= gate.threshold
        })
    }

    /// Records an inference: the frame's signature, time and detections become the reference.
    pub fn inferred(&mut self, sig: &Signature, t: Timestamp, detections: &[Detection]) {
        self.signature = *sig;
        self.at = Some(t);
        self.detections.clear();
        self.detections.extend_from_slice(detections);
    }
}

impl<D: BatchDetector> Worker<D> {
    /// Analyses each frame whose scene is still with its camera's previous detections and takes it out
    /// of the batch; the frames left keep their signature and camera state (same index) for after
    /// inference.
    pub(super) fn gate(&mut self, gate: &MotionGate) {
        let shared = &*self.shared;
        let mut kept = 0;
        for i in 0..self.frames.len() {
            let slot = &shared.slots[self.frames[i].camera];
            // Always there: only the claim's holder takes it. An empty state just runs the model.
            let state = slot.motion.pop().unwrap_or_default();
            let sig = &mut self.signatures[kept];
            sig.compute(&self.frames[i]);
            if state.still(gate, sig, self.frames[i].captured_at) {
                super::analyse(shared, &self.frames[i], state.detections());
                slot.health.motion_skipped.fetch_add(1, Ordering::Relaxed);
                shared.stats.motion_skipped.fetch_add(1, Ordering::Relaxed);
                let _ = slot.motion.push(state);
            } else {
                self.frames.swap(kept, i);
                self.states.push(state);
                kept += 1;
            }
        }
        // The skipped frames, now behind the kept ones, go back to GStreamer's buffer pool.
        self.frames.truncate(kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::BBox;

    fn frame(w: u32, h: u32, stride: u32, paint: impl Fn(u32, u32) -> [u8; 3]) -> Frame {
        let mut px = vec![0u8; (stride * h) as usize];
        for y in 0..h {
            for x in 0..w {
                let i = (y * stride + x * 3) as usize;
                px[i..i + 3].copy_from_slice(&paint(x, y));
            }
        }
        Frame {
            camera: 0,
            captured_at: Timestamp(0),
            received: std::time::Instant::now(),
            width: w,
            height: h,
            stride,
            pixels: crate::frame::Pixels::Owned(px),
        }
    }

    fn sig(f: &Frame) -> Signature {
        let mut s = Signature::default();
        s.compute(f);
        s
    }

    #[test]
    fn signature_is_the_mean_luma_of_each_cell_whatever_the_stride() {
        // Grey 100 everywhere: luma (77+150+29)·100/256 = 100 in every cell. Rows padded to 4 bytes.
        let grey = frame(418, 234, 1256, |_, _| [100, 100, 100]);
        assert!(sig(&grey).0.iter().all(|&c| c == 100));
        // Pure red, green, blue weigh 77, 150, 29 of 256: 255 → 76, 149, 28.
        for (rgb, luma) in [([255, 0, 0], 76), ([0, 255, 0], 149), ([0, 0, 255], 28)] {
            assert!(
                sig(&frame(64, 36, 192, |_, _| rgb))
                    .0
                    .iter()
                    .all(|&c| c == luma)
            );
        }
        // The left half white, the right black: the first 16 columns of cells are 255, the rest 0.
        let half = frame(
            640,
            360,
            1920,
            |x, _| if x < 320 { [255; 3] } else { [0; 3] },
        );
        let s = sig(&half);
        for row in 0..ROWS {
            assert!(s.0[row * COLS..row * COLS + 16].iter().all(|&c| c == 255));
            assert!(
                s.0[row * COLS + 16..(row + 1) * COLS]
                    .iter()
                    .all(|&c| c == 0)
            );
        }
    }

    #[test]
    fn a_small_object_moves_its_cells_and_noise_does_not() {
        let w = 416;
        let h = 234;
        let scene = |x: u32, y: u32| {
            // A textured background.
            let v = 90 + ((x * 7 + y * 13) % 40) as u8 + ((x * 31 + y * 17) % 7) as u8;
            [v, v, v]
        };
        let a = sig(&frame(w, h, w * 3, scene));
        let noisy = sig(&frame(w, h, w * 3, |x, y| {
            let [v, ..] = scene(x, y);
            let n = ((x * 131 + y * 71) % 7) as u8;
            [v + n, v, v] // the red channel shifts by up to 6 levels: luma by under 2
        }));
        assert!(
            a.max_difference(&noisy) <= 2,
            "{}",
            a.max_difference(&noisy)
        );
        // A dark figure 8×26 px (a far person) at (200, 100): its cells move by tens of levels.
        let person = sig(&frame(w, h, w * 3, |x, y| {
            if (200..208).contains(&x) && (100..126).contains(&y) {
                [30, 30, 30]
            } else {
                scene(x, y)
            }
        }));
        assert!(
            a.max_difference(&person) > MotionGate::default().threshold,
            "{}",
            a.max_difference(&person)
        );
    }

    #[test]
    fn the_model_is_skipped_only_on_a_still_scene_within_the_refresh_interval() {
        let gate = MotionGate {
            threshold: 12,
            refresh_ms: 10_000,
        };
        let mut state = MotionState::default();
        let still = sig(&frame(64, 36, 192, |_, _| [100; 3]));
        let moved = sig(&frame(
            64,
            36,
            192,
            |x, _| {
                if x < 8 { [200; 3] } else { [100; 3] }
            },
        ));
        // Nothing inferred yet: the model runs.
        assert!(!state.still(&gate, &still, Timestamp(1_000)));
        let det = Detection {
            class: 0,
            score: 0.9,
            bbox: BBox {
                x1: 0.1,
                y1: 0.2,
                x2: 0.3,
                y2: 0.4,
            },
        };
        state.inferred(&still, Timestamp(1_000), &[det]);
        assert_eq!(state.detections().len(), 1);
        assert!(state.still(&gate, &still, Timestamp(1_500)));
        assert!(state.still(&gate, &still, Timestamp(10_999)));
        // The refresh is due: the model runs even on the same scene.
        assert!(!state.still(&gate, &still, Timestamp(11_000)));
        // The scene changed: the model runs.
        assert!(!state.still(&gate, &moved, Timestamp(1_500)));
        // A frame older than the reference (a clock step back) is not trusted to be still.
        assert!(!state.still(&gate, &still, Timestamp(999)));
        // A change at the threshold is still; one level more is not.
        let at = |v: u8| sig(&frame(64, 36, 192, move |_, _| [v; 3]));
        assert!(state.still(&gate, &at(112), Timestamp(2_000)));
        assert!(!state.still(&gate, &at(113), Timestamp(2_000)));
        // A new inference replaces the reference and its detections.
        state.inferred(&moved, Timestamp(3_000), &[]);
        assert!(state.detections().is_empty());
        assert!(state.still(&gate, &moved, Timestamp(3_500)));
        assert!(!state.still(&gate, &still, Timestamp(3_500)));
    }
}
