//! Which node should run which camera: even by cost, not count, and stable when nodes come and go.
//!
//! **A camera's cost** is what it takes of a node's CPU, in model runs per second (one run of the detector
//! on one 416×416 input, ~40 ms of a core here: BENCHMARKS.md):
//!
//! ```text
//! cost = rate × (1 + tiles) + decoded × decode
//! ```
//!
//! - `rate`: frames analysed per second, the camera's `fps` (with `keyframe_only`, at most one a second:
//!   cameras send a keyframe every 1–2 s);
//! - `tiles`: the extra model runs of its `regions` on one frame, counted as the detector cuts them from a
//!   16:9 frame of the camera's `width`;
//! - `decoded`: frames decoded per second: `rate` with `keyframe_only`, else the stream's
//!   [`STREAM_FPS`] (every frame is decoded);
//! - `decode`: one decoded frame in model runs: a 720p keyframe decodes and scales in ~17 ms
//!   ([`DECODE_MAIN`]), a 640×360 sub-stream's in about a quarter of that ([`DECODE_SUB`]); with full
//!   decoding the inter frames between keyframes cost a quarter of a keyframe each (an estimate).
//!
//! **A node's capacity** is in the same unit: [`RUNS_PER_CORE`] per core unless configured.
//!
//! **The assignment** ([`assign`]) is rendezvous hashing with bounded load: cameras in order of falling
//! cost each go to the node of highest hash weight (camera, node) whose load stays within
//! `(1 + SLACK) × its fair share` (the total cost in proportion to capacity), or, when none has room,
//! to the least loaded node relative to its capacity. Every node computes it from the same inputs and gets
//! the same answer. A node leaving moves its cameras and few others (each camera's first choices are
//! unchanged); a node returning takes back about its share. **Bound**: every node's load is at most
//! `max((1 + SLACK) × share, share + the largest camera's cost)` ([`load_bound`]).

use std::collections::BTreeMap;

use crate::config::CameraConfig;

/// The detector's input side the region tiles are counted at (the shipped NanoDet's).
pub const MODEL_INPUT: u32 = 416;
/// A main-stream keyframe decoded and scaled, in model runs (17 ms against ~40 ms).
pub const DECODE_MAIN: f64 = 0.4;
/// A sub-stream keyframe decoded and scaled, in model runs.
pub const DECODE_SUB: f64 = 0.1;
/// Frames per second of a camera's stream, for full decoding.
pub const STREAM_FPS: f64 = 25.0;
/// An inter frame's decode against a keyframe's.
const INTER_FRAME: f64 = 0.25;
/// Most frames a second a keyframe-only camera analyses.
pub const KEYFRAME_RATE: f64 = 1.0;
/// Model runs a core does per second (int8 NanoDet, 36–42 ms a run).
pub const RUNS_PER_CORE: f64 = 25.0;
/// How far above its fair share a node's load may go to keep a camera on its first-choice node.
pub const SLACK: f64 = 0.25;

/// The cost of running `camera`, in model runs per second (see the module notes).
pub fn camera_cost(camera: &CameraConfig) -> f64 {
    let fps = f64::from(camera.fps);
    let rate = if camera.keyframe_only {
        fps.min(KEYFRAME_RATE)
    } else {
        fps
    };
    let tiles = region_tiles(camera) as f64;
    let keyframe = if camera.analysis_url.is_some() {
        DECODE_SUB
    } else {
        DECODE_MAIN
    };
    let decode = if camera.keyframe_only {
        rate * keyframe
    } else {
        STREAM_FPS * keyframe * INTER_FRAME
    };
    rate * (1.0 + tiles) + decode
}

/// Model runs the camera's regions add to each frame.
fn region_tiles(camera: &CameraConfig) -> usize {
    let regions = crate::app::camera_regions(camera);
    if regions.is_empty() {
        return 0;
    }
    let mut tiles = Vec::new();
    regions.tiles_for(
        camera.width,
        camera.width * 9 / 16,
        MODEL_INPUT,
        MODEL_INPUT,
        &mut tiles,
    );
    tiles.len()
}

/// A node's default capacity: [`RUNS_PER_CORE`] on each core.
pub fn default_capacity() -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores as f64 * RUNS_PER_CORE
}

/// Each node's fair share of `total` cost: in proportion to its capacity.
pub fn shares(nodes: &[(String, f64)], total: f64) -> Vec<f64> {
    let capacity: f64 = nodes.iter().map(|(_, c)| c.max(0.0)).sum();
    nodes
        .iter()
        .map(|(_, c)| {
            if capacity > 0.0 {
                total * c.max(0.0) / capacity
            } else {
                total / nodes.len() as f64
            }
        })
        .collect()
}

/// The most load [`assign`] gives a node whose fair share is `share`, when no camera costs more than
/// `largest`.
pub fn load_bound(share: f64, largest: f64) -> f64 {
    ((1.0 + SLACK) * share).max(share + largest)
}

/// The target owner of each camera (`(id, cost)`) among `nodes` (`(name, capacity)`), by camera id.
/// Empty without nodes. The order of either list does not matter.
pub fn assign(nodes: &[(String, f64)], cameras: &[(String, f64)]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if nodes.is_empty() {
        return out;
    }
    let mut nodes = nodes.to_vec();
    nodes.sort_by(|a, b| a.0.cmp(&b.0));
    let total: f64 = cameras.iter().map(|(_, c)| c).sum();
    let shares = shares(&nodes, total);
    let mut order: Vec<&(String, f64)> = cameras.iter().collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut loads = vec![0.0; nodes.len()];
    for (camera, cost) in order {
        let mut ranked: Vec<usize> = (0..nodes.len()).collect();
        ranked.sort_by_key(|&i| std::cmp::Reverse(weight(camera, &nodes[i].0)));
        // A hair of tolerance, so a sum of floats equal to the bound counts as within it.
        let fits = |i: usize| loads[i] + cost <= (1.0 + SLACK) * shares[i] + 1e-9;
        let chosen = ranked
            .iter()
            .copied()
            .find(|&i| fits(i))
            .unwrap_or_else(|| {
                let relative = |i: usize| (loads[i] + cost) / nodes[i].1.max(f64::MIN_POSITIVE);
                ranked
                    .iter()
                    .copied()
                    .min_by(|&a, &b| relative(a).total_cmp(&relative(b)))
                    .expect("at least one node")
            });
        loads[chosen] += cost;
        out.insert(camera.clone(), nodes[chosen].0.clone());
    }
    out
}

/// The rendezvous weight of `node` for `camera`: a fixed hash (FNV-1a, then a 64-bit finaliser), so every
/// process of every build agrees.
fn weight(camera: &str, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in camera.bytes().chain([0]).chain(node.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn camera(extra: &str) -> CameraConfig {
        let text = format!(
            "[[cameras]]\nid = \"c\"\nurl = \"rtsp://127.0.0.1:8554/cam/0\"\n{extra}\n\
             [[cameras.zones]]\nid = \"z\"\npolygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]\n"
        );
        let config = Config::parse(&text, "t.toml", std::path::Path::new("/")).unwrap();
        config.cameras[0].clone()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn cost_counts_analysed_frames_region_tiles_and_decoding() {
        // Keyframes only, 2 fps asked: one frame a second analysed and decoded from the main stream.
        let c = camera("fps = 2\nkeyframe_only = true");
        assert!(close(camera_cost(&c), 1.0 * 1.0 + 1.0 * 0.4));
        // From the sub-stream, half a frame a second.
        let c = camera(
            "fps = 0.5\nkeyframe_only = true\nanalysis_url = \"rtsp://127.0.0.1:8554/cam/0/sub\"",
        );
        assert!(close(camera_cost(&c), 0.5 + 0.5 * 0.1));
        // Full decoding: 25 frames a second, inter frames a quarter of a keyframe: 25 × 0.4 × 0.25 = 2.5.
        let c = camera("fps = 2");
        assert!(close(camera_cost(&c), 2.0 + 2.5));
        // Tiles of a 1280-wide 16:9 frame at 416: columns step ≤ 312 over 864 px → 4, rows over 304 px
        // → 2: 8 more runs per frame.
        let c = camera("fps = 1\nkeyframe_only = true\nwidth = 1280\nregions = \"tiles\"");
        assert!(close(camera_cost(&c), 1.0 * (1.0 + 8.0) + 0.4));
    }

    fn nodes(names: &[&str]) -> Vec<(String, f64)> {
        names.iter().map(|n| (n.to_string(), 50.0)).collect()
    }

    /// 24 cameras of four costs (1, 2, 3, 6 runs/s), 72 in all.
    fn cameras() -> Vec<(String, f64)> {
        (0..24)
            .map(|i| (format!("cam-{i:02}"), [1.0, 2.0, 3.0, 6.0][i % 4]))
            .collect()
    }

    fn loads(assigned: &BTreeMap<String, String>, cams: &[(String, f64)]) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (id, cost) in cams {
            *out.entry(assigned[id].clone()).or_insert(0.0) += cost;
        }
        out
    }

    #[test]
    fn load_follows_cost_within_the_bound_and_capacity() {
        let cams = cameras();
        let a = assign(&nodes(&["a", "b", "c"]), &cams);
        assert_eq!(a.len(), 24);
        // Fair share 72 / 3 = 24; bound max(1.25 × 24, 24 + 6) = 30.
        for (node, load) in loads(&a, &cams) {
            assert!(load <= 30.0 + 1e-9, "{node}: {load}");
        }
        // A node with twice the capacity: shares 36 / 18 / 18, bounds 45 / 24 + 6 = 24.
        let unequal = vec![
            ("a".to_string(), 100.0),
            ("b".to_string(), 50.0),
            ("c".to_string(), 50.0),
        ];
        let l = loads(&assign(&unequal, &cams), &cams);
        assert!(
            l["a"] <= 45.0 + 1e-9 && l["a"] >= 72.0 - 2.0 * 24.0,
            "{l:?}"
        );
        assert!(l["b"] <= 24.0 + 1e-9 && l["c"] <= 24.0 + 1e-9, "{l:?}");
    }

    #[test]
    fn every_node_computes_the_same_assignment_whatever_the_order() {
        let cams = cameras();
        let mut reversed = cams.clone();
        reversed.reverse();
        assert_eq!(
            assign(&nodes(&["a", "b", "c"]), &cams),
            assign(&nodes(&["c", "a", "b"]), &reversed)
        );
    }

    #[test]
    fn a_node_leaving_moves_its_cameras_and_few_others_and_returning_restores_the_assignment() {
        let cams = cameras();
        let three = assign(&nodes(&["a", "b", "c"]), &cams);
        let two = assign(&nodes(&["a", "b"]), &cams);
        assert!(two.values().all(|n| n != "c"));
        let others_moved = cams
            .iter()
            .filter(|(id, _)| three[id] != "c" && three[id] != two[id])
            .count();
        let on_c = three.values().filter(|n| *n == "c").count();
        // Only c's cameras must move; bounded load may shift a few more to keep the two within bound.
        assert!(
            others_moved <= on_c / 2 + 1,
            "{others_moved} of the others moved, c had {on_c}"
        );
        // c returning: the same inputs give the same answer.
        assert_eq!(assign(&nodes(&["a", "b", "c"]), &cams), three);
    }

    #[test]
    fn no_nodes_no_assignment_and_one_node_takes_everything() {
        assert!(assign(&[], &cameras()).is_empty());
        assert!(
            assign(&nodes(&["a"]), &cameras())
                .values()
                .all(|n| n == "a")
        );
    }
}
