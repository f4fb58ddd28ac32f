//! What every handler can reach: the database, the cameras' health, the clock, and the way in for citizen
//! reports.

use std::path::PathBuf;
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;

use crate::alert::AlertHandle;
use crate::app::IncidentCounts;
use crate::health::CameraHealth;
use crate::pool::PoolObserver;
use crate::types::{CameraId, Clock, IncidentEvent};

use super::auth::Tokens;

/// A camera as the operations centre sees it: configuration and live health.
#[derive(Clone, Debug)]
pub struct CameraInfo {
    pub id: CameraId,
    pub name: String,
    pub ward: String,
    pub health: Arc<CameraHealth>,
}

/// The cameras the operations centre shows, in configuration order. A reload replaces the list whole;
/// readers take the list of the moment with [`CameraList::load`]. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct CameraList(Arc<ArcSwap<Vec<CameraInfo>>>);

impl CameraList {
    pub fn load(&self) -> Arc<Vec<CameraInfo>> {
        self.0.load_full()
    }

    pub fn store(&self, cameras: Vec<CameraInfo>) {
        self.0.store(Arc::new(cameras));
    }
}

impl From<Vec<CameraInfo>> for CameraList {
    fn from(cameras: Vec<CameraInfo>) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(cameras)))
    }
}

/// Hands an incident to the pipeline's incident sink (recorded, then routed like a camera's); fails when the
/// sink has no room or has stopped.
pub type IncidentSubmit = Arc<dyn Fn(IncidentEvent) -> Result<(), String> + Send + Sync>;

/// What the pipeline gives the server.
#[derive(Clone)]
pub struct ServeContext {
    /// The SQLite file with the incidents and alert tables.
    pub db_path: PathBuf,
    /// Where snapshots (and citizen report photos) are kept.
    pub snapshots_dir: PathBuf,
    pub cameras: CameraList,
    pub clock: Arc<dyn Clock>,
    /// `None` without an incident sink (no citizen reports then).
    pub submit: Option<IncidentSubmit>,
    /// Counters of the other stages, read by `/metrics`.
    pub stats: PipelineStats,
}

/// What `/metrics` (and the camera views) read besides the cameras, each kept by its own stage; none
/// outside a pipeline.
#[derive(Clone, Default)]
pub struct PipelineStats {
    /// On a router: the node running each camera, and the nodes (see [`crate::cluster::health`]).
    /// `None` in one process.
    pub cluster: Option<crate::cluster::health::ClusterView>,
    /// On a router: what its incident consumer did. `None` in one process and on a node.
    pub consumer: Option<Arc<crate::cluster::router::ConsumerCounts>>,
    pub pool: Option<PoolObserver>,
    /// Incidents opened per rule kind, counted by the incident sink.
    pub incidents: Option<Arc<IncidentCounts>>,
    /// The alert service, held weakly: the server neither keeps it running nor is the one to stop it.
    pub alerts: Option<Weak<AlertHandle>>,
}

/// Shared by the handlers.
#[derive(Clone)]
pub struct AppState {
    pub ctx: ServeContext,
    pub tokens: Tokens,
    pub utc_offset_minutes: i32,
    /// The `/metrics` registry, and the HTTP request counts every route adds to.
    pub metrics: Arc<super::metrics::Metrics>,
    /// Turns true when the server stops: long-lived responses (the live feed) end then.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// The live feed's broadcast of changes.
    pub(crate) feed: super::feed::Feed,
    /// Citizen reports' rate limits and ordering.
    pub reports: Arc<super::reports::Reports>,
}
