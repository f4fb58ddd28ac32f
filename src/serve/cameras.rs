//! `GET /api/cameras`: every configured camera with its live health, read from the supervisors' atomics
//! (no database), so the camera wall of 1,100 cameras costs one pass over memory. On a router, each
//! camera also names the node running it, and the list comes with the nodes (live or lost).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::cluster::health::{ClusterSnapshot, NodeView};
use crate::health::StreamState;
use crate::secret::redact_urls_in;
use crate::types::Timestamp;

use super::auth::Caller;
use super::config::Role;
use super::error::ApiError;
use super::state::{AppState, CameraInfo};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/api/cameras", get(list))
}

/// One camera as the API and the live feed show it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CameraJson {
    pub id: String,
    pub name: String,
    pub ward: String,
    pub state: &'static str,
    /// Seconds since the last frame; `null` before the first.
    pub last_frame_age_s: Option<f64>,
    pub frames_received: u64,
    pub frames_analysed: u64,
    pub frames_dropped: u64,
    pub restarts: u64,
    /// The last stream failure, with any URL's credentials replaced by `***`.
    pub last_error: Option<String>,
    /// On a router: the node that runs the camera (or ran it last); absent in one process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// On a router: how its health reaches the router — `live`, `node_lost` (its node stopped its
    /// heartbeat), `stale` (its node stopped reporting it) or `none` (no node runs it); absent in one
    /// process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<&'static str>,
}

impl CameraJson {
    pub fn of(c: &CameraInfo, now: Timestamp) -> Self {
        let h = c.health.snapshot(now);
        Self {
            id: c.id.to_string(),
            name: c.name.clone(),
            ward: c.ward.clone(),
            state: h.state.as_str(),
            last_frame_age_s: h.last_frame_age_s.map(|s| s.max(0.0)),
            frames_received: h.frames_received,
            frames_analysed: h.frames_analysed,
            frames_dropped: h.frames_dropped,
            restarts: h.restarts,
            last_error: h.last_error.as_deref().map(redact_urls_in),
            node: None,
            report: None,
        }
    }

    /// With the node running the camera, as the router's view of the cluster has it.
    pub fn placed(mut self, cluster: Option<&ClusterSnapshot>) -> Self {
        if let Some(cluster) = cluster {
            let placement = cluster.cameras.get(self.id.as_str());
            self.node = placement.and_then(|p| p.node.clone());
            self.report = Some(placement.map_or("none", |p| p.report.as_str()));
        }
        self
    }
}

#[derive(Serialize)]
struct CameraList {
    cameras: Vec<CameraJson>,
    /// Cameras per state; every state is present, zero or not.
    counts: BTreeMap<&'static str, usize>,
    /// On a router: every node heard of, by name; absent in one process.
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<Vec<NodeView>>,
}

const STATES: [StreamState; 5] = [
    StreamState::Connecting,
    StreamState::Streaming,
    StreamState::Stalled,
    StreamState::Backoff,
    StreamState::Stopped,
];

async fn list(caller: Caller, State(state): State<AppState>) -> Result<Json<CameraList>, ApiError> {
    caller.require(Role::Viewer, "see cameras")?;
    let now = state.ctx.clock.now();
    let cluster = state.ctx.stats.cluster.as_ref().map(|v| v.load());
    let cameras: Vec<CameraJson> = state
        .ctx
        .cameras
        .load()
        .iter()
        .map(|c| CameraJson::of(c, now).placed(cluster.as_deref()))
        .collect();
    let mut counts: BTreeMap<&'static str, usize> =
        STATES.iter().map(|s| (s.as_str(), 0)).collect();
    for c in &cameras {
        *counts.entry(c.state).or_default() += 1;
    }
    Ok(Json(CameraList {
        cameras,
        counts,
        nodes: cluster.map(|c| c.nodes.clone()),
    }))
}
