//! Snapshot JPEGs for incidents: the frame with the tracked objects (and their track ids) and the zone or
//! line drawn on it.

use image::{Rgb, RgbImage};

use crate::infer::BBox;

pub struct SnapshotRequest {
    /// The camera's index in the running configuration: its keyframe gives the full-resolution picture.
    pub camera: usize,
    /// The analysed frame: the picture drawn on when no full-resolution keyframe replaces it.
    pub image: RgbImage,
    pub boxes: Vec<SnapshotBox>,
    /// The zone's polygon, or a line's two points.
    pub outline: Vec<(f32, f32)>,
    /// A polygon is closed; a line is not.
    pub outline_closed: bool,
}

pub struct SnapshotBox {
    pub bbox: BBox,
    /// Objects that make the incident are red, the rest grey.
    pub highlight: bool,
    /// Track id, written above the box.
    pub track: Option<u64>,
}

const RED: Rgb<u8> = Rgb([230, 40, 40]);
const GREY: Rgb<u8> = Rgb([170, 170, 170]);
const ZONE: Rgb<u8> = Rgb([255, 200, 0]);

/// Draws and encodes. Boxes and outlines are in frame fractions, so they land in the same place at any
/// resolution; strokes and digits grow with the width to read the same. Quality 80 keeps a 416-wide
/// snapshot near 25 kB and a 1280×720 one near 100–150 kB.
pub fn render(req: SnapshotRequest) -> Result<Vec<u8>, image::ImageError> {
    let mut img = req.image;
    let (w, h) = (img.width() as f32, img.height() as f32);
    let scale = ((w / 416.0).round() as i32).max(1);
    let thickness = 2 * scale;
    let px = |(x, y): (f32, f32)| (x * (w - 1.0), y * (h - 1.0));
    let n = req.outline.len();
    let edges = if req.outline_closed {
        n
    } else {
        n.saturating_sub(1)
    };
    for i in 0..edges {
        let a = px(req.outline[i]);
        let b = px(req.outline[(i + 1) % n]);
        line(&mut img, a, b, ZONE, thickness);
    }
    for SnapshotBox {
        bbox: b,
        highlight,
        track,
    } in &req.boxes
    {
        let c = if *highlight { RED } else { GREY };
        let (x1, y1) = px((b.x1, b.y1));
        let (x2, y2) = px((b.x2, b.y2));
        for (p, q) in [
            ((x1, y1), (x2, y1)),
            ((x2, y1), (x2, y2)),
            ((x2, y2), (x1, y2)),
            ((x1, y2), (x1, y1)),
        ] {
            line(&mut img, p, q, c, thickness);
        }
        if let Some(id) = track {
            digits(&mut img, *id, x1 as i32, y1 as i32 - 12 * scale, c, scale);
        }
    }
    let mut out = Vec::with_capacity(48 * 1024);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80).encode_image(&img)?;
    Ok(out)
}

/// 3×5 pixel glyphs for 0–9, one row per u8 (bit 2 = left column).
const GLYPHS: [[u8; 5]; 10] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
];

/// Writes `n` at (x, y) in digits 2 × `size` pixels per glyph pixel, on a black backing so it reads on
/// any scene.
fn digits(img: &mut RgbImage, n: u64, x: i32, y: i32, c: Rgb<u8>, size: i32) {
    let text = n.to_string();
    let (scale, advance) = (2 * size, 8 * size);
    let y = y.max(0);
    for (k, ch) in text.bytes().enumerate() {
        let glyph = GLYPHS[(ch - b'0') as usize];
        let gx = x + k as i32 * advance;
        for dy in -size..11 * size {
            for dx in -size..7 * size {
                put(img, gx + dx, y + dy, Rgb([0, 0, 0]));
            }
        }
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    for sy in 0..scale {
                        for sx in 0..scale {
                            put(img, gx + col * scale + sx, y + row as i32 * scale + sy, c);
                        }
                    }
                }
            }
        }
    }
}

fn put(img: &mut RgbImage, x: i32, y: i32, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

fn line(
    img: &mut RgbImage,
    (x0, y0): (f32, f32),
    (x1, y1): (f32, f32),
    c: Rgb<u8>,
    thickness: i32,
) {
    let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as i32;
    for s in 0..=steps {
        let t = s as f32 / steps as f32;
        let (x, y) = ((x0 + (x1 - x0) * t) as i32, (y0 + (y1 - y0) * t) as i32);
        for dy in 0..thickness {
            for dx in 0..thickness {
                put(img, x + dx - thickness / 2, y + dy - thickness / 2, c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_box_and_zone_and_encodes_jpeg() {
        let req = SnapshotRequest {
            camera: 0,
            image: RgbImage::new(100, 50),
            boxes: vec![SnapshotBox {
                bbox: BBox {
                    x1: 0.1,
                    y1: 0.3,
                    x2: 0.5,
                    y2: 0.9,
                },
                highlight: true,
                track: Some(17),
            }],
            outline: vec![(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)],
            outline_closed: true,
        };
        let jpeg = render(req).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
        let img = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        // The track id sits above the box (top at y = 0.3 × 49 ≈ 15): red pixels in rows 3–13.
        let red_above = (3..13).any(|y| {
            (9..30).any(|x| {
                let p = img.get_pixel(x, y);
                p[0] > 150 && p[1] < 120
            })
        });
        assert!(red_above, "no track id drawn above the box");
        // The box's left edge is at x = 0.1 × 99 ≈ 9, two pixels wide; the zone's right edge at x = 99.
        let red = |x: u32, y: u32| {
            let p = img.get_pixel(x, y);
            p[0] > 150 && p[1] < 120
        };
        assert!((7..=11).any(|x| red(x, 25)), "no red box edge near x = 9");
        assert!(!red(30, 25), "inside the box stays black");
        let yellow = img.get_pixel(98, 40);
        assert!(
            yellow[0] > 150 && yellow[1] > 120 && yellow[2] < 100,
            "zone edge {yellow:?}"
        );
    }
}
