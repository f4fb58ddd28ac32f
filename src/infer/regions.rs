//! Regions: parts of a camera's frame that are also detected on at the frame's own resolution.
//!
//! Letterboxed whole, a 1920×1080 frame shrinks to 416 px wide: a person 30 px tall becomes 6 input pixels,
//! below what the detector resolves. A region is cropped from the full-resolution frame (a view into its
//! rows, no copy) and covered by tiles the size of the model input, so small objects keep their native
//! pixels: shrinking them costs dearly (people 21–36 px tall in the wide view of tests/regions.rs, int8
//! NanoDet: 72 % found in 416-px tiles, 55 % in 520-px tiles shrunk to 416, 31 % in 624-px ones). Each tile is one more
//! model input in the worker's batch; its detections are mapped
//! back to frame fractions and merged with the whole-frame pass by class-aware NMS. A box that touches a
//! tile's inner edge is a cut object: it is dropped, and the neighbouring tile (tiles overlap) or the
//! whole-frame pass (which sees large objects whole) reports it instead.

use super::postprocess::{BBox, Detection};

/// Neighbouring tiles overlap by this fraction of a tile, so an object up to that size cut by one tile's
/// edge is whole in the next; larger objects are the whole-frame pass's.
const TILE_OVERLAP: f32 = 0.25;
/// A box within this fraction of a tile's side of its inner edge was cut by it (a cut object's box ends
/// near, not exactly on, the edge). 3 % of a 416-px tile is 12 px: with the 104-px overlap, objects up to
/// 80 px keep a whole copy in some tile.
const EDGE_TOLERANCE: f32 = 0.03;
/// A tile box with more than this fraction of its area inside a whole-frame box of its class is a piece
/// of that object (a tile sees a large person's legs as a person).
const PIECE_INSIDE: f32 = 0.7;
/// Zone regions reach this fraction of the frame above the zone: objects are placed by their feet, so a
/// person standing in the zone has most of their body above it. 0.1 covers people up to about 100 px tall
/// at 1080p; taller ones the whole-frame pass finds.
const ZONE_PAD_ABOVE: f32 = 0.1;
/// … and this fraction on the other sides, for boxes that straddle the zone's edge.
const ZONE_PAD: f32 = 0.02;

/// A rectangle of the frame in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crop {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// The rectangles (frame fractions) of one camera's frames that are detected on at native resolution.
/// Empty: the whole frame only, as without regions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Regions {
    rects: Vec<BBox>,
}

impl Regions {
    pub fn new(rects: Vec<BBox>) -> Self {
        Self { rects }
    }

    /// The whole frame, in overlapping tiles.
    pub fn tiles() -> Self {
        Self::new(vec![BBox {
            x1: 0.0,
            y1: 0.0,
            x2: 1.0,
            y2: 1.0,
        }])
    }

    /// The bounding box of each zone polygon (frame fractions), padded to hold the bodies of the people
    /// whose feet are in it.
    pub fn around_zones<'a>(zones: impl IntoIterator<Item = &'a [[f32; 2]]>) -> Self {
        let rects = zones
            .into_iter()
            .map(|poly| {
                let (mut b, pad) = (
                    BBox {
                        x1: 1.0,
                        y1: 1.0,
                        x2: 0.0,
                        y2: 0.0,
                    },
                    ZONE_PAD,
                );
                for &[x, y] in poly {
                    (b.x1, b.y1, b.x2, b.y2) = (b.x1.min(x), b.y1.min(y), b.x2.max(x), b.y2.max(y));
                }
                BBox {
                    x1: (b.x1 - pad).max(0.0),
                    y1: (b.y1 - ZONE_PAD_ABOVE).max(0.0),
                    x2: (b.x2 + pad).min(1.0),
                    y2: (b.y2 + pad).min(1.0),
                }
            })
            .collect();
        Self::new(rects)
    }

    pub fn is_empty(&self) -> bool {
        self.rects.is_empty()
    }

    pub fn rects(&self) -> &[BBox] {
        &self.rects
    }

    /// Appends the tiles covering every region of a `frame_w`×`frame_h` frame, for a model input of
    /// `in_w`×`in_h`: overlapping tiles the input's size (a region smaller than that grows to it, inside
    /// the frame), so the detector sees the region's pixels 1:1.
    pub fn tiles_for(&self, frame_w: u32, frame_h: u32, in_w: u32, in_h: u32, out: &mut Vec<Crop>) {
        for r in &self.rects {
            let px = |f: f32, n: u32| (f * n as f32).round().clamp(0.0, n as f32) as u32;
            let (x1, x2) = (px(r.x1, frame_w), px(r.x2, frame_w));
            let (y1, y2) = (px(r.y1, frame_h), px(r.y2, frame_h));
            let mut cols = [(0u32, 0u32); MAX_SPANS];
            let mut rows = [(0u32, 0u32); MAX_SPANS];
            let nc = spans(x1, x2, frame_w, in_w, &mut cols);
            let nr = spans(y1, y2, frame_h, in_h, &mut rows);
            for &(y, h) in &rows[..nr] {
                for &(x, w) in &cols[..nc] {
                    out.push(Crop { x, y, w, h });
                }
            }
        }
    }
}

/// Most tiles along one axis of a region (a 4K frame at a 416 input needs 12).
const MAX_SPANS: usize = 16;

/// Splits [a, b) of an axis `frame` pixels long into tiles for a model side of `side` pixels: writes
/// (start, length) pairs into `out` and returns how many.
fn spans(a: u32, b: u32, frame: u32, side: u32, out: &mut [(u32, u32); MAX_SPANS]) -> usize {
    let min = side.min(frame);
    let (mut a, mut len) = (a, b.saturating_sub(a));
    if len < min {
        // Grow around the centre, kept inside the frame.
        let centre = a + len / 2;
        a = centre.saturating_sub(min / 2).min(frame - min);
        len = min;
    }
    if len <= min {
        out[0] = (a, len);
        return 1;
    }
    let step = min as f32 * (1.0 - TILE_OVERLAP);
    let n = (((len - min) as f32 / step).ceil() as usize + 1).min(MAX_SPANS);
    let gap = (len - min) as f32 / (n - 1) as f32;
    for (i, s) in out.iter_mut().take(n).enumerate() {
        *s = (a + (i as f32 * gap).round() as u32, min);
    }
    n
}

/// Adds one tile's detections to its frame's list `out`, whose first `whole` entries are the whole-frame
/// pass's. Dropped: a box that reaches an inner side of the tile (a side that is not the frame's border)
/// is a cut object; a box mostly inside a whole-frame box of its class is a piece of an object the whole
/// frame saw entire (the whole-frame box is preferred). Duplicates among tiles are left to NMS.
pub fn add_tile_detections(
    dets: &[Detection],
    crop: Crop,
    frame_w: u32,
    frame_h: u32,
    whole: usize,
    out: &mut Vec<Detection>,
) {
    let (fw, fh) = (frame_w as f32, frame_h as f32);
    let (left, top) = (crop.x as f32 / fw, crop.y as f32 / fh);
    let (right, bottom) = ((crop.x + crop.w) as f32 / fw, (crop.y + crop.h) as f32 / fh);
    let (tx, ty) = (
        EDGE_TOLERANCE * crop.w as f32 / fw,
        EDGE_TOLERANCE * crop.h as f32 / fh,
    );
    let cut = |b: &BBox| {
        (crop.x > 0 && b.x1 <= left + tx)
            || (crop.y > 0 && b.y1 <= top + ty)
            || (crop.x + crop.w < frame_w && b.x2 >= right - tx)
            || (crop.y + crop.h < frame_h && b.y2 >= bottom - ty)
    };
    for d in dets {
        let piece = out[..whole]
            .iter()
            .any(|w| w.class == d.class && inside(&d.bbox, &w.bbox) > PIECE_INSIDE);
        if !cut(&d.bbox) && !piece {
            out.push(*d);
        }
    }
}

/// The fraction of `a`'s area inside `b`.
fn inside(a: &BBox, b: &BBox) -> f32 {
    let w = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let h = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    let area = a.area();
    if area <= 0.0 { 1.0 } else { w * h / area }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::Placement;
    use crate::infer::nms;

    fn bbox(x1: f32, y1: f32, x2: f32, y2: f32) -> BBox {
        BBox { x1, y1, x2, y2 }
    }

    fn close(a: BBox, b: BBox) -> bool {
        [(a.x1, b.x1), (a.y1, b.y1), (a.x2, b.x2), (a.y2, b.y2)]
            .iter()
            .all(|(p, q)| (p - q).abs() < 1e-5)
    }

    #[test]
    fn a_box_in_a_region_maps_back_to_frame_fractions() {
        // A 600×400 region at (1000, 500) of a 1920×1080 frame, into a 416×416 input:
        // scale = min(416/600, 416/400) = 0.69333, content 416×277.33 → 277 rows, pad_y = floor(139/2) = 69.
        let p = Placement::new(600, 400, 416, 416).in_frame(1000, 500, 1920, 1080);
        assert_eq!((p.pad_x, p.pad_y), (0.0, 69.0));
        // Input point (208, 69 + 138.667): the region's centre (300, 200) → frame (1300, 700).
        let (x, y) = p.to_frame(208.0, 69.0 + 200.0 * p.scale);
        assert!((x - 1300.0 / 1920.0).abs() < 1e-5 && (y - 700.0 / 1080.0).abs() < 1e-5);
        // Input (0, 69) is the region's top-left corner → frame (1000, 500).
        let (x, y) = p.to_frame(0.0, 69.0);
        assert!((x - 1000.0 / 1920.0).abs() < 1e-6 && (y - 500.0 / 1080.0).abs() < 1e-6);
        // A point in the padding below the image stays on the region's bottom edge (frame row 900).
        let (_, y) = p.to_frame(10.0, 410.0);
        assert!((y - 900.0 / 1080.0).abs() < 1e-6);
    }

    #[test]
    fn tiles_cover_a_1080p_frame_with_overlap() {
        // 416-px tiles, steps of at most 312 px (25 % overlap): columns (1920-416)/312 = 4.8 → 5 steps of
        // 300.8 px, 6 columns; rows (1080-416)/312 = 2.1 → 3 steps of 221.3 px, 4 rows.
        let mut out = Vec::new();
        Regions::tiles().tiles_for(1920, 1080, 416, 416, &mut out);
        let xs: Vec<u32> = out.iter().filter(|c| c.y == 0).map(|c| c.x).collect();
        let ys: Vec<u32> = out.iter().filter(|c| c.x == 0).map(|c| c.y).collect();
        assert_eq!(xs, [0, 301, 602, 902, 1203, 1504]);
        assert_eq!(ys, [0, 221, 443, 664]);
        assert!(out.iter().all(|c| (c.w, c.h) == (416, 416)));
        assert_eq!(out.len(), 24);
    }

    #[test]
    fn a_small_region_grows_to_the_model_input_inside_the_frame() {
        // An 80×50 px region at (1200, 360) of a 1280×720 frame → one 416×416 tile around its centre
        // (1240, 385), pushed left to end at the frame's edge: x = 1280 - 416 = 864, y = 385 - 208 = 177.
        let mut out = Vec::new();
        let r = Regions::new(vec![bbox(1200.0 / 1280.0, 0.5, 1.0, 0.5 + 50.0 / 720.0)]);
        r.tiles_for(1280, 720, 416, 416, &mut out);
        assert_eq!(
            out,
            [Crop {
                x: 864,
                y: 177,
                w: 416,
                h: 416
            }]
        );
        // A frame smaller than the input: the region is the whole frame.
        out.clear();
        r.tiles_for(320, 240, 416, 416, &mut out);
        assert_eq!(
            out,
            [Crop {
                x: 0,
                y: 0,
                w: 320,
                h: 240
            }]
        );
    }

    #[test]
    fn zone_regions_reach_above_the_zone() {
        let zone = [[0.2, 0.5], [0.6, 0.5], [0.6, 0.9], [0.2, 0.9]];
        let r = Regions::around_zones([&zone[..]]);
        assert!(
            close(r.rects()[0], bbox(0.18, 0.4, 0.62, 0.92)),
            "{:?}",
            r.rects()
        );
        let edge = [[0.0, 0.05], [1.0, 0.05], [1.0, 1.0]];
        assert!(close(
            Regions::around_zones([&edge[..]]).rects()[0],
            bbox(0.0, 0.0, 1.0, 1.0)
        ));
    }

    fn person(score: f32, b: BBox) -> Detection {
        Detection {
            class: 0,
            score,
            bbox: b,
        }
    }

    #[test]
    fn cut_boxes_and_pieces_are_dropped_and_duplicates_merge() {
        // Tile (0, 0, 624, 624) of 1920×1080: its right (x = 624 → 0.325) and bottom (y = 624 → 0.5778)
        // edges are inner, its left and top are the frame's border. Tolerance 3 % of 624 px = 18.7 px.
        let crop = Crop {
            x: 0,
            y: 0,
            w: 624,
            h: 624,
        };
        // The whole-frame pass saw a large person and a small one.
        let large = person(0.5, bbox(0.25, 0.0, 0.3, 0.4));
        let small_whole = person(0.4, bbox(0.101, 0.301, 0.111, 0.331));
        // The tile's boxes:
        let small_tile = person(0.8, bbox(0.1, 0.3, 0.11, 0.33)); // 87 % inside small_whole: dropped
        let at_border = person(0.9, bbox(0.0, 0.0, 0.01, 0.03)); // on the frame's corner: kept
        let cut_right = person(0.7, bbox(0.3, 0.5, 0.316, 0.53)); // 17.3 px from x = 624: cut
        let kept_right = person(0.7, bbox(0.3, 0.45, 0.313, 0.48)); // 23 px from it: kept
        let cut_bottom = person(0.6, bbox(0.15, 0.55, 0.16, 606.0 / 1080.0)); // 18 px from y = 624: cut
        let piece = person(0.95, bbox(0.26, 0.2, 0.29, 0.38)); // legs of `large`, all inside it: dropped
        let other_class = Detection { class: 1, ..piece }; // inside `large` but not a person: kept
        // Two tiles saw one small person the whole frame missed (IoU 0.85): NMS keeps the better box.
        let (seen_a, seen_b) = (
            person(0.8, bbox(0.2, 0.3, 0.21, 0.33)),
            person(0.6, bbox(0.2005, 0.301, 0.2105, 0.331)),
        );
        let mut merged = vec![large, small_whole];
        add_tile_detections(
            &[
                small_tile,
                at_border,
                cut_right,
                kept_right,
                cut_bottom,
                piece,
                other_class,
                seen_a,
                seen_b,
            ],
            crop,
            1920,
            1080,
            2,
            &mut merged,
        );
        nms(&mut merged, 0.5, 300);
        assert_eq!(
            merged,
            [
                other_class,
                at_border,
                seen_a,
                kept_right,
                large,
                small_whole
            ]
        );
    }
}
