//! H.264 like an IP camera: main profile, no B-frames, a keyframe every GOP and never on scene cuts, in MP4.

use std::path::Path;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use image::RgbImage;

use super::SceneError;

pub struct Encoder {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    fps: u32,
    frames: u64,
    file: String,
}

impl Encoder {
    pub fn start(
        file: &Path,
        (width, height): (u32, u32),
        fps: u32,
        gop_frames: u32,
        quality: u32,
    ) -> Result<Self, SceneError> {
        let name = file.display().to_string();
        let err = |m: String| SceneError::Encode {
            file: name.clone(),
            message: m,
        };
        gst::init().map_err(|e| err(e.to_string()))?;
        // threads=1: x264's output then depends only on its input, so the same script gives the same file.
        let desc = format!(
            "appsrc name=src format=time ! videoconvert ! video/x-raw,format=I420 \
             ! x264enc pass=qual quantizer={quality} speed-preset=medium threads=1 bframes=0 \
               key-int-max={gop_frames} option-string=scenecut=0 \
             ! video/x-h264,profile=main ! h264parse ! mp4mux faststart=true ! filesink name=sink"
        );
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| err(format!("{e} (x264enc is in gstreamer1.0-plugins-ugly)")))?
            .downcast::<gst::Pipeline>()
            .expect("a launch line with several elements is a pipeline");
        pipeline
            .by_name("sink")
            .expect("named in the launch line")
            .set_property("location", file.to_string_lossy().as_ref());
        let src = pipeline
            .by_name("src")
            .expect("named in the launch line")
            .dynamic_cast::<gst_app::AppSrc>()
            .expect("an appsrc");
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, width, height)
            .fps(gst::Fraction::new(fps as i32, 1))
            .build()
            .map_err(|e| err(e.to_string()))?;
        src.set_caps(Some(&info.to_caps().map_err(|e| err(e.to_string()))?));
        // Block instead of queueing without bound: memory stays at a few frames.
        src.set_max_bytes(4 * (width * height * 3) as u64);
        src.set_block(true);
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            pipeline,
            src,
            fps,
            frames: 0,
            file: name,
        })
    }

    pub fn push(&mut self, frame: &RgbImage) -> Result<(), SceneError> {
        let mut buf = gst::Buffer::from_slice(frame.as_raw().clone());
        {
            let b = buf.get_mut().expect("a new buffer is writable");
            let at = |n: u64| gst::ClockTime::from_nseconds(n * 1_000_000_000 / self.fps as u64);
            b.set_pts(at(self.frames));
            b.set_duration(at(self.frames + 1) - at(self.frames));
        }
        self.frames += 1;
        self.src.push_buffer(buf).map_err(|e| SceneError::Encode {
            file: self.file.clone(),
            message: format!("pushing frame {}: {e}", self.frames),
        })?;
        Ok(())
    }

    /// Ends the stream and waits until the MP4 is written.
    pub fn finish(self) -> Result<(), SceneError> {
        let err = |m: String| SceneError::Encode {
            file: self.file.clone(),
            message: m,
        };
        self.src.end_of_stream().map_err(|e| err(e.to_string()))?;
        let bus = self.pipeline.bus().expect("a pipeline has a bus");
        let result = match bus.timed_pop_filtered(
            gst::ClockTime::NONE,
            &[gst::MessageType::Eos, gst::MessageType::Error],
        ) {
            Some(msg) => match msg.view() {
                gst::MessageView::Error(e) => Err(err(e.error().to_string())),
                _ => Ok(()),
            },
            None => Err(err("the pipeline ended without EOS".into())),
        };
        let _ = self.pipeline.set_state(gst::State::Null);
        result?;
        let path = Path::new(&self.file);
        let io = |e: std::io::Error| err(e.to_string());
        let mut bytes = std::fs::read(path).map_err(io)?;
        clear_mp4_times(&mut bytes);
        std::fs::write(path, bytes).map_err(io)
    }
}

/// mp4mux stamps the movie, track and media headers with the wall clock; zero (the format's epoch) makes the
/// file a function of the script alone.
fn clear_mp4_times(bytes: &mut [u8]) {
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let size = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let kind: [u8; 4] = bytes[at + 4..at + 8].try_into().expect("4 bytes");
        if size < 8 || at + size > bytes.len() {
            return; // 64-bit or to-the-end sizes: only mdat uses them, and nothing after it needs patching
        }
        let body = &mut bytes[at + 8..at + size];
        match &kind {
            b"moov" | b"trak" | b"mdia" => clear_mp4_times(body),
            b"mvhd" | b"tkhd" | b"mdhd" if !body.is_empty() => {
                // Version 0: 32-bit creation and modification times after version and flags; version 1: 64-bit.
                let n = if body[0] == 1 { 16 } else { 8 };
                if body.len() >= 4 + n {
                    body[4..4 + n].fill(0);
                }
            }
            _ => {}
        }
        at += size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_times_are_cleared_inside_moov_only() {
        // moov { mvhd v0 (times 1, 2), trak { tkhd v1 (times 3, 4) } }, then a free box whose bytes look like
        // an mdhd but sit outside moov and stay as they are.
        let mvhd = [
            &[0u8; 4][..],
            &1u32.to_be_bytes(),
            &2u32.to_be_bytes(),
            &[9; 4],
        ]
        .concat();
        let tkhd = [
            &[1u8, 0, 0, 0][..],
            &3u64.to_be_bytes(),
            &4u64.to_be_bytes(),
            &[9; 4],
        ]
        .concat();
        let boxed = |kind: &[u8], body: &[u8]| {
            [&((body.len() + 8) as u32).to_be_bytes()[..], kind, body].concat()
        };
        let trak = boxed(b"trak", &boxed(b"tkhd", &tkhd));
        let moov = boxed(b"moov", &[boxed(b"mvhd", &mvhd), trak].concat());
        let free = boxed(b"free", &boxed(b"mdhd", &[0, 0, 0, 0, 7, 7, 7, 7]));
        let mut file = [moov.clone(), free.clone()].concat();
        clear_mp4_times(&mut file);
        let want_mvhd = [&[0u8; 12][..], &[9; 4]].concat();
        let want_tkhd = [&[1u8, 0, 0, 0][..], &[0; 16], &[9; 4]].concat();
        let want = boxed(
            b"moov",
            &[
                boxed(b"mvhd", &want_mvhd),
                boxed(b"trak", &boxed(b"tkhd", &want_tkhd)),
            ]
            .concat(),
        );
        assert_eq!(file, [want, free].concat());
    }
}
