//! An opened incident's snapshot at the camera's full resolution, made on the incident sink's thread.

use crate::analyse::{SnapshotRequest, render_snapshot};
use crate::ingest::{LatestKeyframes, decode_still};
use crate::types::{IncidentKey, Timestamp};

/// A keyframe further than this from the incident's frame shows another moment: a main stream that froze
/// while the sub-stream goes on, or a camera that came back. Cameras send one every 1–2 s, and the
/// analysed frame may lag its keyframe by a second or two more.
const KEYFRAME_MAX_GAP_MS: i64 = 5_000;

/// Draws the snapshot of an incident opened at `at` on the camera's last keyframe decoded at its own
/// resolution, or on the analysed frame when there is none near `at` (file sources, the first seconds
/// of a stream) or it does not decode; why is logged at debug. The boxes and outlines are in frame
/// fractions, so they land on the same place of either picture.
pub fn render_incident_snapshot(
    mut req: SnapshotRequest,
    keyframes: &LatestKeyframes,
    incident: &IncidentKey,
    at: Timestamp,
) -> Result<Vec<u8>, image::ImageError> {
    match keyframes.latest(req.camera) {
        None => {
            tracing::debug!(%incident, "no keyframe kept for the camera: snapshot at analysis resolution")
        }
        Some(unit) if (unit.captured_at.0 - at.0).abs() > KEYFRAME_MAX_GAP_MS => tracing::debug!(
            %incident,
            gap_ms = unit.captured_at.0 - at.0,
            "the camera's last keyframe is from another moment: snapshot at analysis resolution"
        ),
        Some(unit) => match decode_still(&unit) {
            Ok(image) => req.image = image,
            Err(e) => {
                tracing::debug!(%incident, error = %e, "the camera's last keyframe did not decode: snapshot at analysis resolution")
            }
        },
    }
    render_snapshot(req)
}
