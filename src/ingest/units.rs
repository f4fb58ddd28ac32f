//! The seam between receiving and decoding: encoded access units.
//!
//! A receiver (the async RTSP client, or a GStreamer demuxer for files and sources the client does not
//! handle) turns a camera's stream into [`EncodedUnit`]s and hands them to a [`UnitSink`]. The decoder
//! pool behind the sink decides which keyframes are worth decoding (the camera is due and analysis has
//! room) and drops the others while they are still a few tens of KB.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use bytes::Bytes;

use crate::types::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    H264,
    H265,
}

impl Codec {
    /// The GStreamer caps name, parser and decoder of the codec, for every decoder built on units.
    pub(crate) fn gst_elements(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Codec::H264 => ("video/x-h264", "h264parse", "avdec_h264"),
            Codec::H265 => ("video/x-h265", "h265parse", "avdec_h265"),
        }
    }
}

/// One encoded picture (an access unit) as an Annex B byte stream. A keyframe carries its parameter sets
/// (SPS and PPS, and VPS for H.265) in front, so it decodes on its own through any decoder of its codec.
#[derive(Debug, Clone)]
pub struct EncodedUnit {
    /// Index of the camera in the running configuration (the pool's slot).
    pub camera: usize,
    pub codec: Codec,
    pub keyframe: bool,
    pub data: Bytes,
    /// When the scene was captured, in the timeline rules reason on.
    pub captured_at: Timestamp,
    /// When the unit reached us: end-to-end latency is measured from here.
    pub received: Instant,
}

/// Where a receiver hands its units. Called on the receive path (an async task, or a streaming thread),
/// so it must never block: a unit that cannot be taken now is dropped and counted.
pub trait UnitSink: Send + Sync + 'static {
    fn push(&self, unit: EncodedUnit);
}

/// The last keyframe of each camera's main (full-resolution) stream, kept encoded for snapshots: an
/// incident's snapshot is decoded from it at the camera's resolution, which analysis never pays for.
pub struct LatestKeyframes {
    slots: Box<[ArcSwapOption<EncodedUnit>]>,
}

impl LatestKeyframes {
    /// Room for cameras `0..capacity`.
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: (0..capacity).map(|_| ArcSwapOption::empty()).collect(),
        }
    }

    /// Keeps `unit` if it is a keyframe (the previous one is freed); other units are ignored.
    pub fn offer(&self, unit: &EncodedUnit) {
        if unit.keyframe
            && let Some(slot) = self.slots.get(unit.camera)
        {
            slot.store(Some(Arc::new(unit.clone())));
        }
    }

    pub fn latest(&self, camera: usize) -> Option<Arc<EncodedUnit>> {
        self.slots.get(camera).and_then(ArcSwapOption::load_full)
    }

    /// Forgets a camera that was removed, so a camera later given its slot never shows its picture.
    pub fn clear(&self, camera: usize) {
        if let Some(slot) = self.slots.get(camera) {
            slot.store(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(camera: usize, keyframe: bool, byte: u8) -> EncodedUnit {
        EncodedUnit {
            camera,
            codec: Codec::H264,
            keyframe,
            data: Bytes::from(vec![byte; 4]),
            captured_at: Timestamp(0),
            received: Instant::now(),
        }
    }

    #[test]
    fn only_the_newest_keyframe_of_each_camera_is_kept() {
        let k = LatestKeyframes::new(2);
        k.offer(&unit(0, true, 1));
        k.offer(&unit(0, false, 2));
        assert_eq!(k.latest(0).unwrap().data[0], 1);
        k.offer(&unit(0, true, 3));
        assert_eq!(k.latest(0).unwrap().data[0], 3);
        assert!(k.latest(1).is_none());
        k.offer(&unit(5, true, 4)); // out of range: ignored, not a panic
        k.clear(0);
        assert!(k.latest(0).is_none());
    }
}
