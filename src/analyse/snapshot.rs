//! Snapshot JPEGs for incidents: the frame with the detections and the zone drawn on it.

use image::{Rgb, RgbImage};

use crate::infer::BBox;

pub struct SnapshotRequest {
    pub image: RgbImage,
    /// Boxes to draw; `highlight` ones (those that count for the rule) in red, the rest in grey.
    pub boxes: Vec<(BBox, bool)>,
    pub zone: Vec<(f32, f32)>,
}

const RED: Rgb<u8> = Rgb([230, 40, 40]);
const GREY: Rgb<u8> = Rgb([170, 170, 170]);
const ZONE: Rgb<u8> = Rgb([255, 200, 0]);

/// Draws and encodes; quality 85 keeps a 416-wide snapshot near 30 kB.
pub fn render(req: SnapshotRequest) -> Result<Vec<u8>, image::ImageError> {
    let mut img = req.image;
    let (w, h) = (img.width() as f32, img.height() as f32);
    let px = |(x, y): (f32, f32)| (x * (w - 1.0), y * (h - 1.0));
    for i in 0..req.zone.len() {
        let a = px(req.zone[i]);
        let b = px(req.zone[(i + 1) % req.zone.len()]);
        line(&mut img, a, b, ZONE, 2);
    }
    for (b, highlight) in &req.boxes {
        let c = if *highlight { RED } else { GREY };
        let (x1, y1) = px((b.x1, b.y1));
        let (x2, y2) = px((b.x2, b.y2));
        for (p, q) in [
            ((x1, y1), (x2, y1)),
            ((x2, y1), (x2, y2)),
            ((x2, y2), (x1, y2)),
            ((x1, y2), (x1, y1)),
        ] {
            line(&mut img, p, q, c, 2);
        }
    }
    let mut out = Vec::with_capacity(48 * 1024);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode_image(&img)?;
    Ok(out)
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
                let (px, py) = (x + dx - thickness / 2, y + dy - thickness / 2);
                if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                    img.put_pixel(px as u32, py as u32, c);
                }
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
            image: RgbImage::new(100, 50),
            boxes: vec![(
                BBox {
                    x1: 0.1,
                    y1: 0.1,
                    x2: 0.5,
                    y2: 0.9,
                },
                true,
            )],
            zone: vec![(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)],
        };
        let jpeg = render(req).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
        let img = image::load_from_memory(&jpeg).unwrap().to_rgb8();
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
