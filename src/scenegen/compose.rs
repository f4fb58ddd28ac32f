//! Compositing: sprites with a soft matte pasted on the clean plate at each actor's interpolated place.

use image::{Rgb, RgbImage, Rgba, RgbaImage, imageops};

/// What of a crop belongs to the object.
pub enum Coverage<'a> {
    /// The pixels that differ from the source clip's clean plate (the object and its shadow), holes filled.
    Plate(&'a RgbImage),
    /// Inside a polygon outlined by hand, in the source frame's pixels.
    Outline(Vec<[f32; 2]>),
    /// The whole crop.
    Crop,
}

/// A cut-out: colour plus coverage (alpha 0–255).
pub struct Sprite {
    pub image: RgbaImage,
}

impl Sprite {
    /// Cuts `crop` from `frame` with the given coverage. The matte fades to zero over `feather` pixels at the
    /// crop's border and is softened at its edges, so no hard seam shows.
    pub fn cut(frame: &RgbImage, coverage: Coverage, crop: [u32; 4], feather: u32) -> Self {
        let [x0, y0, w, h] = crop;
        let piece = imageops::crop_imm(frame, x0, y0, w, h).to_image();
        let soft = |mask: Vec<bool>| {
            let v: Vec<f32> = mask.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
            blur(&v, w, h, 1)
        };
        let mut alpha: Vec<f32> = match coverage {
            Coverage::Plate(plate) => {
                let under = imageops::crop_imm(plate, x0, y0, w, h).to_image();
                soft(difference_mask(&piece, &under))
            }
            Coverage::Outline(points) => {
                // Pixel centres inside the outline, which is given in the frame's pixels.
                let shape = crate::analyse::Polygon::new(&points);
                soft(
                    (0..h)
                        .flat_map(|y| (0..w).map(move |x| (x, y)))
                        .map(|(x, y)| {
                            shape.contains(((x0 + x) as f32 + 0.5, (y0 + y) as f32 + 0.5))
                        })
                        .collect(),
                )
            }
            Coverage::Crop => vec![1.0; (w * h) as usize],
        };
        for y in 0..h {
            for x in 0..w {
                let edge = x.min(y).min(w - 1 - x).min(h - 1 - y);
                if edge < feather {
                    alpha[(y * w + x) as usize] *= (edge as f32 + 0.5) / feather as f32;
                }
            }
        }
        let image = RgbaImage::from_fn(w, h, |x, y| {
            let Rgb([r, g, b]) = *piece.get_pixel(x, y);
            let a = (alpha[(y * w + x) as usize] * 255.0)
                .round()
                .clamp(0.0, 255.0) as u8;
            Rgba([r, g, b, a])
        });
        Self { image }
    }

    pub fn flipped(self, flip: super::script::Flip) -> Self {
        use super::script::Flip;
        let image = match flip {
            Flip::None => self.image,
            Flip::Horizontal => imageops::flip_horizontal(&self.image),
            Flip::Vertical => imageops::flip_vertical(&self.image),
        };
        Self { image }
    }
}

/// Where the object is: a pixel differs from the plate by more than sensor noise, then morphological
/// closing (bridges a limb's gap) and hole filling (a dark coat over dark asphalt is still the coat).
fn difference_mask(piece: &RgbImage, plate: &RgbImage) -> Vec<bool> {
    const THRESHOLD: i16 = 28;
    let (w, h) = piece.dimensions();
    let raw: Vec<bool> = piece
        .pixels()
        .zip(plate.pixels())
        .map(|(a, b)| (0..3).any(|c| (a.0[c] as i16 - b.0[c] as i16).abs() > THRESHOLD))
        .collect();
    let closed = erode(&dilate(&raw, w, h, 2), w, h, 2);
    fill_holes(&closed, w, h)
}

fn dilate(m: &[bool], w: u32, h: u32, r: i64) -> Vec<bool> {
    morph(m, w, h, r, true)
}
fn erode(m: &[bool], w: u32, h: u32, r: i64) -> Vec<bool> {
    morph(m, w, h, r, false)
}

/// Square structuring element of radius `r`; outside the crop counts as background for dilation and as
/// object for erosion (so closing does not eat objects cut by the crop's border).
fn morph(m: &[bool], w: u32, h: u32, r: i64, dilate: bool) -> Vec<bool> {
    let (w, h) = (w as i64, h as i64);
    let mut out = vec![false; m.len()];
    for y in 0..h {
        for x in 0..w {
            let mut hit = !dilate;
            'window: for dy in -r..=r {
                for dx in -r..=r {
                    let (xx, yy) = (x + dx, y + dy);
                    let v = if (0..w).contains(&xx) && (0..h).contains(&yy) {
                        m[(yy * w + xx) as usize]
                    } else {
                        !dilate
                    };
                    if v == dilate {
                        hit = dilate;
                        break 'window;
                    }
                }
            }
            out[(y * w + x) as usize] = hit;
        }
    }
    out
}

/// Background pixels not connected to the crop's border become object.
fn fill_holes(m: &[bool], w: u32, h: u32) -> Vec<bool> {
    let (w, h) = (w as usize, h as usize);
    let mut outside = vec![false; m.len()];
    let mut stack: Vec<usize> = (0..w)
        .flat_map(|x| [x, (h - 1) * w + x])
        .chain((0..h).flat_map(|y| [y * w, y * w + w - 1]))
        .filter(|&i| !m[i])
        .collect();
    while let Some(i) = stack.pop() {
        if outside[i] || m[i] {
            continue;
        }
        outside[i] = true;
        let (x, y) = (i % w, i / w);
        if x > 0 {
            stack.push(i - 1);
        }
        if x + 1 < w {
            stack.push(i + 1);
        }
        if y > 0 {
            stack.push(i - w);
        }
        if y + 1 < h {
            stack.push(i + w);
        }
    }
    outside.iter().map(|o| !o).collect()
}

/// Box blur of radius `r` (edges clamp).
fn blur(v: &[f32], w: u32, h: u32, r: i64) -> Vec<f32> {
    let (w, h) = (w as i64, h as i64);
    let at = |x: i64, y: i64| v[(y.clamp(0, h - 1) * w + x.clamp(0, w - 1)) as usize];
    let n = ((2 * r + 1) * (2 * r + 1)) as f32;
    (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| {
            let mut s = 0.0;
            for dy in -r..=r {
                for dx in -r..=r {
                    s += at(x + dx, y + dy);
                }
            }
            s / n
        })
        .collect()
}

/// An actor's place at one instant: bottom-centre and height, in frame fractions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Place {
    pub x: f64,
    pub y: f64,
    pub h: f64,
}

/// Linear interpolation over `[t, x, y, h]` keyframes; `None` before the first and after the last.
pub fn place_at(path: &[[f64; 4]], t: f64) -> Option<Place> {
    let (first, last) = (path.first()?, path.last()?);
    if t < first[0] || t > last[0] {
        return None;
    }
    let i = path.partition_point(|k| k[0] <= t).clamp(1, path.len()) - 1;
    let a = path[i];
    let Some(&b) = path.get(i + 1) else {
        return Some(Place {
            x: a[1],
            y: a[2],
            h: a[3],
        });
    };
    let f = if b[0] > a[0] {
        (t - a[0]) / (b[0] - a[0])
    } else {
        0.0
    };
    let lerp = |j: usize| a[j] + (b[j] - a[j]) * f;
    Some(Place {
        x: lerp(1),
        y: lerp(2),
        h: lerp(3),
    })
}

/// Where `sprite` goes for `place` in a `(width, height)` frame: left, top, width, height in pixels.
pub fn placement(sprite: &Sprite, place: Place, (fw, fh): (u32, u32)) -> (i64, i64, u32, u32) {
    let (sw, sh) = sprite.image.dimensions();
    let h = (place.h * fh as f64).round().max(1.0) as u32;
    let w = ((sw as f64 * h as f64 / sh as f64).round() as u32).max(1);
    let left = (place.x * fw as f64 - w as f64 / 2.0).round() as i64;
    let top = (place.y * fh as f64).round() as i64 - h as i64;
    (left, top, w, h)
}

/// Pastes `sprite` scaled to `place.h` of the frame's height, its bottom-centre at `place`.
pub fn paste(frame: &mut RgbImage, sprite: &Sprite, place: Place) {
    let (left, top, w, h) = placement(sprite, place, frame.dimensions());
    let (sw, sh) = sprite.image.dimensions();
    let (fw, fh) = frame.dimensions();
    let scaled;
    let img = if (w, h) == (sw, sh) {
        &sprite.image
    } else {
        scaled = imageops::resize(&sprite.image, w, h, imageops::FilterType::Triangle);
        &scaled
    };
    for (sx, sy, px) in img.enumerate_pixels() {
        let (x, y) = (left + sx as i64, top + sy as i64);
        if x < 0 || y < 0 || x >= fw as i64 || y >= fh as i64 {
            continue;
        }
        let a = px.0[3] as u32;
        if a == 0 {
            continue;
        }
        let dst = frame.get_pixel_mut(x as u32, y as u32);
        for c in 0..3 {
            dst.0[c] = ((px.0[c] as u32 * a + dst.0[c] as u32 * (255 - a) + 127) / 255) as u8;
        }
    }
}

/// A fixed part of the background (a lamp post, a sign) that hides actors standing behind it: output-pixel
/// rectangles of the plate redrawn over every actor whose bottom is above `base` (farther from the camera).
pub struct Occluder {
    pub rects: Vec<[u32; 4]>,
    pub base: f64,
}

/// One frame: the plate, then the actors on screen at `t` and the occluders, farther (higher in the frame) first.
pub fn render(
    plate: &RgbImage,
    actors: &[(&Sprite, &[[f64; 4]])],
    occluders: &[Occluder],
    t: f64,
    out: &mut RgbImage,
) {
    out.clone_from(plate);
    enum Layer<'a> {
        Actor(&'a Sprite, Place),
        Occluder(&'a Occluder),
    }
    let mut layers: Vec<(f64, Layer)> = actors
        .iter()
        .filter_map(|(s, path)| place_at(path, t).map(|p| (p.y, Layer::Actor(s, p))))
        .chain(occluders.iter().map(|o| (o.base, Layer::Occluder(o))))
        .collect();
    // An actor standing exactly on an occluder's base line is in front of it.
    let actor_last = |l: &Layer| matches!(l, Layer::Actor(..));
    layers.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then(actor_last(&a.1).cmp(&actor_last(&b.1)))
    });
    for (_, layer) in layers {
        match layer {
            Layer::Actor(sprite, place) => paste(out, sprite, place),
            Layer::Occluder(o) => {
                for &[x, y, w, h] in &o.rects {
                    let (x1, y1) = ((x + w).min(out.width()), (y + h).min(out.height()));
                    for yy in y.min(y1)..y1 {
                        for xx in x.min(x1)..x1 {
                            out.put_pixel(xx, yy, *plate.get_pixel(xx, yy));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_is_linear_between_keyframes_and_absent_outside() {
        let path = [
            [2.0, 0.1, 0.5, 0.2],
            [12.0, 0.9, 0.5, 0.4],
            [20.0, 0.9, 0.5, 0.4],
        ];
        assert_eq!(place_at(&path, 1.9), None);
        assert_eq!(place_at(&path, 20.1), None);
        let p = place_at(&path, 4.5).unwrap(); // a quarter of the way from 2 s to 12 s
        assert!(
            (p.x - 0.3).abs() < 1e-12 && (p.h - 0.25).abs() < 1e-12,
            "{p:?}"
        );
        assert_eq!(
            place_at(&path, 16.0),
            Some(Place {
                x: 0.9,
                y: 0.5,
                h: 0.4
            })
        );
        assert_eq!(
            place_at(&path, 20.0),
            Some(Place {
                x: 0.9,
                y: 0.5,
                h: 0.4
            })
        );
    }

    #[test]
    fn a_sprite_lands_with_its_bottom_centre_on_the_place() {
        // 20×10 black frame; a 2×4 opaque white sprite at x = 0.5, y = 0.8, height 0.4 of 10 px = 4 px (no
        // scaling): left = 10 − 1 = 9, top = 8 − 4 = 4, so columns 9–10 and rows 4–7 are white.
        let mut frame = RgbImage::new(20, 10);
        let sprite = Sprite {
            image: RgbaImage::from_pixel(2, 4, Rgba([255, 255, 255, 255])),
        };
        paste(
            &mut frame,
            &sprite,
            Place {
                x: 0.5,
                y: 0.8,
                h: 0.4,
            },
        );
        for (x, y, px) in frame.enumerate_pixels() {
            let inside = (9..=10).contains(&x) && (4..=7).contains(&y);
            assert_eq!(px.0[0], if inside { 255 } else { 0 }, "({x}, {y})");
        }
        // Height 0.8 = 8 px: scaled ×2 to 4×8, left = 10 − 2 = 8, top = 10 − 8 = 2; bottom row 9 is the
        // frame's last.
        let mut frame = RgbImage::new(20, 10);
        paste(
            &mut frame,
            &sprite,
            Place {
                x: 0.5,
                y: 1.0,
                h: 0.8,
            },
        );
        let lit: Vec<(u32, u32)> = frame
            .enumerate_pixels()
            .filter(|p| p.2.0[0] > 0)
            .map(|p| (p.0, p.1))
            .collect();
        assert_eq!(lit.first(), Some(&(8, 2)));
        assert_eq!(lit.last(), Some(&(11, 9)));
        assert_eq!(lit.len(), 4 * 8);
    }

    #[test]
    fn half_alpha_blends_and_nearer_actors_cover_farther_ones() {
        let plate = RgbImage::from_pixel(10, 10, Rgb([0, 0, 200]));
        let red = Sprite {
            image: RgbaImage::from_pixel(4, 4, Rgba([255, 0, 0, 255])),
        };
        let green = Sprite {
            image: RgbaImage::from_pixel(4, 4, Rgba([0, 255, 0, 128])),
        };
        // Red's bottom at y = 0.6 (rows 2–5), green's at 0.5 (rows 1–4): green is farther, drawn first, and
        // red covers it where they overlap; green's own rows blend 128/255 over the plate's blue.
        let red_path = [[0.0, 0.5, 0.6, 0.4]];
        let green_path = [[0.0, 0.5, 0.5, 0.4]];
        let mut out = RgbImage::new(10, 10);
        render(
            &plate,
            &[(&red, &red_path[..]), (&green, &green_path[..])],
            &[],
            0.0,
            &mut out,
        );
        assert_eq!(out.get_pixel(5, 3).0, [255, 0, 0]);
        // (0·127 + 255·128 + 127) / 255 = 128; blue (200·127 + 127) / 255 = 100.
        assert_eq!(out.get_pixel(5, 1).0, [0, 128, 100]);
        assert_eq!(out.get_pixel(5, 8).0, [0, 0, 200]);
    }

    #[test]
    fn an_occluder_hides_actors_behind_it_only() {
        // A 10×10 plate with a 2-px "post" rectangle at columns 4–5, base at y = 0.7. The far actor (bottom at
        // 0.5) is hidden where the post is; the near one (bottom at 0.9) covers the post.
        let plate = RgbImage::from_pixel(10, 10, Rgb([0, 0, 0]));
        let white = Sprite {
            image: RgbaImage::from_pixel(6, 2, Rgba([255, 255, 255, 255])),
        };
        let post = Occluder {
            rects: vec![[4, 0, 2, 7]],
            base: 0.7,
        };
        let far = [[0.0, 0.5, 0.5, 0.2]]; // rows 3–4, columns 2–7
        let near = [[0.0, 0.5, 0.9, 0.2]]; // rows 7–8, below the post's rectangle
        let mut out = RgbImage::new(10, 10);
        render(
            &plate,
            &[(&white, &far[..]), (&white, &near[..])],
            &[post],
            0.0,
            &mut out,
        );
        assert_eq!(out.get_pixel(3, 4).0, [255, 255, 255]);
        assert_eq!(out.get_pixel(4, 4).0, [0, 0, 0], "behind the post");
        assert_eq!(out.get_pixel(6, 3).0, [255, 255, 255]);
        let near_over = Occluder {
            rects: vec![[4, 0, 2, 10]],
            base: 0.7,
        };
        render(&plate, &[(&white, &near[..])], &[near_over], 0.0, &mut out);
        assert_eq!(
            out.get_pixel(4, 8).0,
            [255, 255, 255],
            "in front of the post"
        );
    }

    #[test]
    fn an_outline_matte_covers_the_polygon_in_source_pixels() {
        // Crop (10, 10) 8×8 of a 20×20 frame; the outline is the square 12–16 in frame pixels, so crop pixels
        // 2–5 are inside (their centres 12.5–15.5) and the crop's corners are not. Softening leaves the middle whole.
        let frame = RgbImage::new(20, 20);
        let square = vec![[12.0, 12.0], [16.0, 12.0], [16.0, 16.0], [12.0, 16.0]];
        let s = Sprite::cut(&frame, Coverage::Outline(square), [10, 10, 8, 8], 0);
        assert_eq!(s.image.get_pixel(3, 3).0[3], 255);
        assert_eq!(s.image.get_pixel(0, 0).0[3], 0);
        assert_eq!(s.image.get_pixel(7, 7).0[3], 0);
    }

    #[test]
    fn the_plate_matte_keeps_the_object_and_fills_its_holes() {
        // A 12×12 grey plate; the frame has a 6×6 dark square at (3, 3) with a 2×2 grey "hole" in the middle
        // (a coat the colour of the street). The matte covers the square and its hole; the far corner is clear.
        let plate = RgbImage::from_pixel(12, 12, Rgb([120, 120, 120]));
        let mut frame = plate.clone();
        for y in 3..9 {
            for x in 3..9 {
                if !(5..7).contains(&x) || !(5..7).contains(&y) {
                    frame.put_pixel(x, y, Rgb([20, 20, 20]));
                }
            }
        }
        let s = Sprite::cut(&frame, Coverage::Plate(&plate), [0, 0, 12, 12], 0);
        assert_eq!(s.image.get_pixel(5, 5).0[3], 255, "the hole is filled");
        assert_eq!(s.image.get_pixel(4, 4).0[3], 255);
        assert_eq!(s.image.get_pixel(0, 0).0[3], 0);
    }
}
