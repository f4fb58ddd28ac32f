//! Letterboxing: scale a frame into the model's square input keeping its aspect ratio, pad the rest,
//! and write normalised planar values straight into the batch tensor.

use super::manifest::{ColourOrder, InputSpec};

/// Where an image landed inside the model input, to map boxes back. The image is the whole frame or a
/// region of it (`origin` and `frame` then say where it sits); boxes come back in frame fractions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    pub scale: f32,
    pub pad_x: f32,
    pub pad_y: f32,
    /// The letterboxed image's size in pixels.
    pub image_w: u32,
    pub image_h: u32,
    /// The image's top-left corner in the frame, in pixels (0, 0 for the whole frame).
    pub origin_x: u32,
    pub origin_y: u32,
    /// The frame's size in pixels.
    pub frame_w: u32,
    pub frame_h: u32,
}

impl Placement {
    /// A whole `frame_w`×`frame_h` frame letterboxed into `in_w`×`in_h`.
    pub fn new(frame_w: u32, frame_h: u32, in_w: u32, in_h: u32) -> Self {
        let scale = (in_w as f32 / frame_w as f32).min(in_h as f32 / frame_h as f32);
        let new_w = (frame_w as f32 * scale).round();
        let new_h = (frame_h as f32 * scale).round();
        Self {
            scale,
            pad_x: ((in_w as f32 - new_w) / 2.0).floor(),
            pad_y: ((in_h as f32 - new_h) / 2.0).floor(),
            image_w: frame_w,
            image_h: frame_h,
            origin_x: 0,
            origin_y: 0,
            frame_w,
            frame_h,
        }
    }

    /// The same letterbox for an image that is the region at (`x`, `y`) of a `frame_w`×`frame_h` frame.
    pub fn in_frame(self, x: u32, y: u32, frame_w: u32, frame_h: u32) -> Self {
        Self {
            origin_x: x,
            origin_y: y,
            frame_w,
            frame_h,
            ..self
        }
    }

    /// A point in model-input pixels as frame fractions, kept inside the image.
    pub fn to_frame(&self, x: f32, y: f32) -> (f32, f32) {
        let ix = ((x - self.pad_x) / self.scale).clamp(0.0, self.image_w as f32);
        let iy = ((y - self.pad_y) / self.scale).clamp(0.0, self.image_h as f32);
        (
            (self.origin_x as f32 + ix) / self.frame_w as f32,
            (self.origin_y as f32 + iy) / self.frame_h as f32,
        )
    }
}

/// Reusable sampling tables: rebuilt only when a frame of a new size arrives.
#[derive(Default)]
pub struct Letterboxer {
    key: (u32, u32, u32),
    xs: Vec<(u32, u32, f32)>,
    ys: Vec<(u32, u32, f32)>,
    placement: Option<Placement>,
}

impl Letterboxer {
    /// Writes one image (`rgb`, `w`×`h`, rows `stride` bytes apart) into `dst`, which holds
    /// 3 × in_h × in_w values (one batch item, planar). A region of a frame is passed as the frame's
    /// bytes from the region's first pixel on, with the frame's stride: no copy.
    pub fn fill(
        &mut self,
        spec: &InputSpec,
        rgb: &[u8],
        w: u32,
        h: u32,
        stride: u32,
        dst: &mut [f32],
    ) -> Placement {
        let (in_w, in_h) = (spec.width as usize, spec.height as usize);
        if self.key != (w, h, spec.width) || self.placement.is_none() {
            self.rebuild(w, h, spec.width, spec.height);
        }
        let p = self.placement.expect("built above");
        let plane = in_w * in_h;
        debug_assert_eq!(dst.len(), 3 * plane);
        // Channel c of the model reads source channel src_ch[c].
        let src_ch: [usize; 3] = match spec.colour {
            ColourOrder::Rgb => [0, 1, 2],
            ColourOrder::Bgr => [2, 1, 0],
        };
        let mul: [f32; 3] = std::array::from_fn(|c| 1.0 / spec.std[c]);
        let add: [f32; 3] = std::array::from_fn(|c| -spec.mean[c] / spec.std[c]);
        let fill: [f32; 3] = std::array::from_fn(|c| spec.letterbox_fill * mul[c] + add[c]);
        for c in 0..3 {
            dst[c * plane..(c + 1) * plane].fill(fill[c]);
        }
        let (x_off, y_off) = (p.pad_x as usize, p.pad_y as usize);
        let stride = stride as usize;
        let (p0, rest) = dst.split_at_mut(plane);
        let (p1, p2) = rest.split_at_mut(plane);
        for (dy, &(y0, y1, fy)) in self.ys.iter().enumerate() {
            let row0 = &rgb[y0 as usize * stride..];
            let row1 = &rgb[y1 as usize * stride..];
            let base = (dy + y_off) * in_w + x_off;
            for (dx, &(x0, x1, fx)) in self.xs.iter().enumerate() {
                let (a, bb) = (x0 as usize * 3, x1 as usize * 3);
                let sample = |ch: usize| {
                    let top =
                        row0[a + ch] as f32 + (row0[bb + ch] as f32 - row0[a + ch] as f32) * fx;
                    let bot =
                        row1[a + ch] as f32 + (row1[bb + ch] as f32 - row1[a + ch] as f32) * fx;
                    top + (bot - top) * fy
                };
                let i = base + dx;
                p0[i] = sample(src_ch[0]) * mul[0] + add[0];
                p1[i] = sample(src_ch[1]) * mul[1] + add[1];
                p2[i] = sample(src_ch[2]) * mul[2] + add[2];
            }
        }
        p
    }

    /// Refills the tables in place: once they have grown to the largest image seen, a new size
    /// (regions of different sizes take turns in a batch slot) costs no allocation.
    fn rebuild(&mut self, w: u32, h: u32, in_w: u32, in_h: u32) {
        let p = Placement::new(w, h, in_w, in_h);
        let new_w = (w as f32 * p.scale).round() as u32;
        let new_h = (h as f32 * p.scale).round() as u32;
        let table = |t: &mut Vec<(u32, u32, f32)>, n_dst: u32, n_src: u32| {
            t.clear();
            t.extend((0..n_dst).map(|d| {
                // Pixel-centre alignment, as OpenCV's INTER_LINEAR does.
                let s = ((d as f32 + 0.5) / p.scale - 0.5).clamp(0.0, (n_src - 1) as f32);
                let s0 = s.floor() as u32;
                (s0, (s0 + 1).min(n_src - 1), s - s0 as f32)
            }));
        };
        table(&mut self.xs, new_w, w);
        table(&mut self.ys, new_h, h);
        self.key = (w, h, in_w);
        self.placement = Some(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::manifest::Layout;

    fn spec(colour: ColourOrder) -> InputSpec {
        InputSpec {
            name: "images".into(),
            width: 8,
            height: 8,
            layout: Layout::Nchw,
            colour,
            mean: [0.0; 3],
            std: [1.0; 3],
            letterbox_fill: 114.0,
        }
    }

    #[test]
    fn wide_frame_is_centred_with_padding_above_and_below() {
        // 8×4 frame into 8×8: scale 1, two padded rows above and below.
        let (w, h) = (8u32, 4u32);
        let rgb: Vec<u8> = (0..w * h).flat_map(|i| [i as u8, 100, 200]).collect();
        let mut dst = vec![0.0; 3 * 64];
        let p = Letterboxer::default().fill(&spec(ColourOrder::Bgr), &rgb, w, h, w * 3, &mut dst);
        assert_eq!((p.scale, p.pad_x, p.pad_y), (1.0, 0.0, 2.0));
        assert_eq!(dst[0], 114.0, "padding row");
        // BGR: channel 0 is blue (200), channel 2 is red (the index ramp).
        assert_eq!(dst[2 * 8 + 3], 200.0);
        assert_eq!(dst[2 * 64 + 2 * 8 + 3], 3.0);
        assert_eq!(dst[2 * 64 + 5 * 8 + 7], 31.0);
        assert_eq!(dst[2 * 64 + 6 * 8], 114.0, "padding below");
    }

    #[test]
    fn downscale_interpolates_and_honours_stride() {
        // 16×16 grey ramp with 4 bytes of row padding → 8×8.
        let (w, h, stride) = (16u32, 16u32, 52u32);
        let mut rgb = vec![0u8; (stride * h) as usize];
        for y in 0..h {
            for x in 0..w {
                let v = (x * 10) as u8;
                let i = (y * stride + x * 3) as usize;
                rgb[i..i + 3].copy_from_slice(&[v, v, v]);
            }
        }
        let mut dst = vec![0.0; 3 * 64];
        let p = Letterboxer::default().fill(&spec(ColourOrder::Rgb), &rgb, w, h, stride, &mut dst);
        assert_eq!(p.scale, 0.5);
        // dst x=0 samples src x=0.5 → 5; dst x=7 samples src x=14.5 → 145.
        assert!(
            (dst[0] - 5.0).abs() < 1e-4 && (dst[7] - 145.0).abs() < 1e-4,
            "{:?}",
            &dst[..8]
        );
    }
}
