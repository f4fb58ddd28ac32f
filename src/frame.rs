//! A decoded RGB frame on its way from ingest to analysis.

use std::time::Instant;

use crate::types::Timestamp;

/// Pixel storage. GStreamer buffers are handed through without a copy; the buffer returns to its pool
/// when the frame is dropped, so the hot path allocates nothing per frame.
pub enum Pixels {
    Gst(gstreamer::MappedBuffer<gstreamer::buffer::Readable>),
    Owned(Vec<u8>),
}

pub struct Frame {
    /// Index of the camera in the running configuration (dense, for the pool's slots).
    pub camera: usize,
    /// When the scene was captured, in the timeline rules reason on.
    pub captured_at: Timestamp,
    /// When the frame reached us: end-to-end latency is measured from here.
    pub received: Instant,
    pub width: u32,
    pub height: u32,
    /// Bytes per row (GStreamer pads RGB rows to 4 bytes).
    pub stride: u32,
    pub pixels: Pixels,
}

impl Frame {
    pub fn rgb(&self) -> &[u8] {
        match &self.pixels {
            Pixels::Gst(m) => m.as_slice(),
            Pixels::Owned(v) => v,
        }
    }

    /// A tightly packed copy (for snapshots, which are rare).
    pub fn to_rgb_image(&self) -> image::RgbImage {
        let (w, h, stride) = (
            self.width as usize,
            self.height as usize,
            self.stride as usize,
        );
        let src = self.rgb();
        let mut out = Vec::with_capacity(w * h * 3);
        for row in 0..h {
            out.extend_from_slice(&src[row * stride..row * stride + w * 3]);
        }
        image::RgbImage::from_raw(self.width, self.height, out)
            .expect("buffer sized from dimensions")
    }

    /// A frame from a packed RGB image (tests, stills, benchmarks).
    pub fn from_rgb_image(camera: usize, captured_at: Timestamp, img: image::RgbImage) -> Self {
        let (width, height) = img.dimensions();
        Self {
            camera,
            captured_at,
            received: Instant::now(),
            width,
            height,
            stride: width * 3,
            pixels: Pixels::Owned(img.into_raw()),
        }
    }
}
