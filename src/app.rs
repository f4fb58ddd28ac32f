//! Wires the stages for `run`, `demo`, `bench` and the tests:
//! ingest → pool (infer) → analyse → incident sink (store, snapshots, log).

mod forward;
mod reload;
mod snapshot;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use crossbeam::channel::Receiver;

pub use forward::{Forwarder, IncidentCounts, IncidentOutlet, SPILL_AFTER};
pub use reload::{ConfigFile, Reloaded};
pub use snapshot::render_incident_snapshot;

use crate::alert::{self, AlertService};
use crate::analyse::AnalysisEvent;
use crate::config::{CameraConfig, Config, RegionsConfig};
use crate::health::{CameraHealth, HealthSnapshot, StreamState};
use crate::infer::{self, BBox, Detector, ModelManifest, Regions};
use crate::ingest::{Backoff, Ingest, IngestOptions, LatestKeyframes, Pacing};
use crate::pool::{Pool, PoolConfig, PoolStats};
use crate::retention::{Policy, RetentionTask};
use crate::serve::{CameraList, PipelineStats, ServeContext, Server};
use crate::store::{DataDirLock, Store};
use crate::types::{CameraId, Clock, IncidentEvent, IncidentPhase, Timestamp};

/// Incident events queued between the analysers and the incident sink. An opened event carries a frame
/// (a few hundred KB), so this bounds that queue to tens of MB; when it is full, updates are dropped and
/// counted, opens and closes wait (see `CameraAnalyser`).
const EVENT_QUEUE: usize = 256;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub pacing: Pacing,
    pub loop_files: bool,
    pub backoff: Backoff,
    /// How long an incident left open by the previous run stays open after it is handed to the router
    /// again: long enough for the router to notify before it sees the incident close.
    pub restart_close_grace: Duration,
    /// A camera that has not streamed for this long is reported down to the alert router, which mutes its
    /// rule alerts (and can alert on the outage itself).
    pub camera_down_after: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            pacing: Pacing::Realtime,
            loop_files: true,
            backoff: Backoff::default(),
            restart_close_grace: Duration::from_secs(300),
            camera_down_after: Duration::from_secs(30),
        }
    }
}

/// Where a pipeline hands its incident events.
pub enum Outlet {
    /// The alert router in this process, started from the configuration's `[alert]` (without one,
    /// incidents are stored and logged, nobody is notified): `run` and `demo`.
    Embedded,
    /// An outlet of the caller's (a JetStream publisher: `node`), whose runtime the operations-centre
    /// server shares. At start, every incident changed within `replay` is handed on again, opens and
    /// closes: what the previous run stored but may not have handed on, which the outlet drops if it
    /// has it already.
    Given {
        outlet: Arc<dyn IncidentOutlet>,
        runtime: tokio::runtime::Handle,
        replay: Duration,
    },
}

/// A running pipeline.
pub struct Pipeline {
    ingest: Ingest,
    pool: Pool,
    sink: JoinHandle<()>,
    watcher: Option<(JoinHandle<()>, crossbeam::channel::Sender<()>)>,
    retention: RetentionTask,
    /// The running cameras by pool slot; their list is what serve and the health watcher read.
    cameras: reload::Cameras,
    clock: Arc<dyn Clock>,
    pub db_path: PathBuf,
    /// The operations-centre server, and the runtime it runs on when there is no alert service to share.
    server: Option<(Server, Option<tokio::runtime::Runtime>)>,
    /// The server's way into the incident sink; emptied at shutdown.
    report_tx: Arc<std::sync::Mutex<Option<crossbeam::channel::Sender<AnalysisEvent>>>>,
    /// Released last, when the pipeline is gone.
    _data_dir: DataDirLock,
}

/// Caps glibc's malloc arenas at two. glibc gives threads their own heap arenas (up to eight per core);
/// with GStreamer, tokio and RTSP threads coming and going as cameras reconnect, freed memory stays
/// scattered over them and RSS climbed by 30 % over 1,000 camera reconnects with no leak (threads and
/// descriptors flat). With two arenas it rises 6 % over the first 500 and then stays flat (tests/reload.rs,
/// `CHURN_SERVER_FLAPS=100`); the frame path does not allocate, so sharing arenas costs no contention
/// there. Call before starting threads.
pub fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator parameter; it is called before the threads it concerns.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Loads the ONNX Runtime library and the model manifest named by the configuration.
pub fn load_model(config: &Config) -> anyhow::Result<Arc<ModelManifest>> {
    let lib = config
        .runtime
        .onnxruntime
        .as_ref()
        .map(|p| config.resolve(p))
        .unwrap_or_else(infer::default_runtime_path);
    infer::init_runtime(&lib)?;
    let manifest = ModelManifest::load(&config.model_path())?;
    Ok(Arc::new(manifest))
}

/// The regions a camera's frames are also detected on (none unless configured).
pub fn camera_regions(camera: &CameraConfig) -> Regions {
    let Some(r) = &camera.regions else {
        return Regions::default();
    };
    match r.get_ref() {
        RegionsConfig::Zones => {
            Regions::around_zones(camera.zones.iter().map(|z| z.polygon.get_ref().as_slice()))
        }
        RegionsConfig::Tiles => Regions::tiles(),
        RegionsConfig::Rects(rects) => Regions::new(
            rects
                .iter()
                .map(|&[x1, y1, x2, y2]| BBox { x1, y1, x2, y2 })
                .collect(),
        ),
    }
}

pub fn worker_count(config: &Config) -> usize {
    match config.runtime.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

impl Pipeline {
    pub fn start(
        config: &Config,
        opts: RunOptions,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Pipeline> {
        Self::start_with(config, opts, clock, Outlet::Embedded)
    }

    /// As [`start`](Self::start), handing incident events to `outlet`.
    pub fn start_with(
        config: &Config,
        opts: RunOptions,
        clock: Arc<dyn Clock>,
        outlet: Outlet,
    ) -> anyhow::Result<Pipeline> {
        let data_dir = config.data_dir();
        std::fs::create_dir_all(data_dir.join("snapshots"))
            .with_context(|| format!("creating {}", data_dir.display()))?;
        // Before anything reads the store: a second process fails at once instead of sending twice.
        let data_dir_lock = DataDirLock::acquire(&data_dir)?;
        let manifest = load_model(config)?;
        let db_path = data_dir.join("streetwatch.db");
        let store = Store::open(&db_path)?;

        let (events_tx, events_rx) = crossbeam::channel::bounded(EVENT_QUEUE);
        let (retired_tx, retired_rx) = crossbeam::channel::unbounded();
        let dropped_updates = Arc::new(AtomicU64::new(0));
        let pool_config = PoolConfig {
            workers: worker_count(config),
            max_batch: config.runtime.max_batch,
            batch_wait: Duration::from_millis(config.runtime.batch_wait_ms),
            motion: config.runtime.motion_gate(),
        };
        let threshold = config.runtime.score_threshold;
        let regions: infer::RegionTable = Arc::new(ArcSwap::from_pointee(Vec::new()));
        let pool = Pool::with_capacity(&pool_config, config.camera_capacity(), || {
            Ok(
                Detector::new(manifest.clone(), pool_config.max_batch, threshold)?
                    .with_region_table(regions.clone()),
            )
        })?;
        // Filled by the receivers with each camera's main-stream keyframes; read for snapshots.
        let keyframes = Arc::new(LatestKeyframes::new(pool.capacity()));
        let mut ingest = Ingest::start(
            Vec::new(),
            IngestOptions {
                pipelines: config.pipelines_dir(),
                pacing: opts.pacing,
                loop_files: opts.loop_files,
                backoff: opts.backoff,
                nice: *config.runtime.ingest_nice.get_ref(),
                capacity: pool.capacity(),
                pool: pool.observer(),
                decode_room: pool_config.workers * pool_config.max_batch,
                decoders: 0,
                keyframes: keyframes.clone(),
            },
            clock.clone(),
        )?;
        let mut cameras = reload::Cameras::new(
            pool.capacity(),
            manifest.output.labels.clone(),
            events_tx,
            dropped_updates.clone(),
            regions,
            retired_tx,
        );
        let started = cameras.apply(config, &pool, &mut ingest, clock.now());
        if let Some((camera, error)) = started.failed.first() {
            ingest.stop();
            pool.shutdown();
            anyhow::bail!("camera {camera}: {error}");
        }
        let (alerts, given) = match outlet {
            Outlet::Embedded => match &config.alert {
                Some(a) => (
                    Some(Arc::new(AlertService::start(
                        a.clone(),
                        &db_path,
                        clock.clone(),
                    )?)),
                    None,
                ),
                None => {
                    tracing::warn!(
                        "no [alert] table: incidents are stored and logged, nobody is notified"
                    );
                    (None, None)
                }
            },
            Outlet::Given {
                outlet,
                runtime,
                replay,
            } => (None, Some((outlet, runtime, replay))),
        };
        let outlet: Option<Arc<dyn IncidentOutlet>> = match (&alerts, &given) {
            (Some(a), _) => Some(a.clone()),
            (None, Some((o, _, _))) => Some(o.clone()),
            (None, None) => None,
        };
        let left_open = match &outlet {
            Some(o) => {
                // The embedded router's own tables say which alerts still fire; a remote one's closes
                // come with the start-up replay (`Outlet::Given`).
                let firing = match &alerts {
                    Some(_) => alert::Store::open(&db_path)?.firing_keys()?,
                    None => Vec::new(),
                };
                hand_over_left_state(&store, o.as_ref(), &firing)?
            }
            None => Vec::new(),
        };
        let close_at = std::time::Instant::now() + opts.restart_close_grace;
        // A citizen report's incident is not a rule's state lost with the previous run: its reports are in
        // the store, and the server closes it when no new report comes.
        let pending_close = left_open
            .into_iter()
            .filter(|e| e.kind != crate::types::RuleKind::CitizenReport)
            .map(|e| (close_at, e))
            .collect();
        let watcher = outlet
            .as_ref()
            .map(|o| watch_camera_health(cameras.list.clone(), o.clone(), opts.camera_down_after));
        let snapshots = data_dir.join("snapshots");
        let retention = RetentionTask::start(
            Policy::from(&config.retention),
            db_path.clone(),
            snapshots.clone(),
            clock.clone(),
        )?;
        let report_tx = Arc::new(std::sync::Mutex::new(Some(cameras.events())));
        let opened = Arc::new(IncidentCounts::default());
        let server = match &config.serve {
            Some(serve) => Some(start_server(
                serve,
                alerts
                    .as_ref()
                    .map(|a| a.runtime())
                    .or_else(|| given.as_ref().map(|(_, rt, _)| rt.clone())),
                ServeContext {
                    db_path: db_path.clone(),
                    snapshots_dir: snapshots.clone(),
                    cameras: cameras.list.clone(),
                    clock: clock.clone(),
                    submit: Some(incident_submit(report_tx.clone())),
                    stats: PipelineStats {
                        pool: Some(pool.observer()),
                        incidents: Some(opened.clone()),
                        alerts: alerts.as_ref().map(Arc::downgrade),
                        ..PipelineStats::default()
                    },
                },
            )?),
            None => None,
        };
        let mut forwarder = Forwarder::new(store, outlet, dropped_updates).counting_opened(opened);
        if let Some((_, _, replay)) = &given {
            let replay_ms = i64::try_from(replay.as_millis()).unwrap_or(i64::MAX);
            forwarder.behind_from(Timestamp(clock.now().0.saturating_sub(replay_ms)));
        }
        drop(alerts);
        let sink = std::thread::Builder::new()
            .name("sw-incidents".into())
            .spawn({
                let clock = clock.clone();
                let incoming = Incoming {
                    events: events_rx,
                    retired: retired_rx,
                };
                let snapshots = IncidentSnapshots {
                    dir: snapshots,
                    keyframes: keyframes.clone(),
                };
                move || incident_sink(incoming, forwarder, snapshots, pending_close, clock)
            })?;
        tracing::info!(cameras = config.cameras.len(), capacity = pool.capacity(), workers = pool_config.workers, model = %manifest.name, db = %db_path.display(), "pipeline started");
        Ok(Pipeline {
            ingest,
            pool,
            sink,
            watcher,
            retention,
            cameras,
            clock,
            db_path,
            server,
            report_tx,
            _data_dir: data_dir_lock,
        })
    }

    /// Where the operations-centre server listens, if configured.
    pub fn server_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.as_ref().map(|(s, _)| s.addr())
    }

    /// The running cameras' health, in configuration order.
    pub fn health(&self) -> Vec<HealthSnapshot> {
        let now = self.clock.now();
        let list = self.cameras.list.load();
        list.iter().map(|c| c.health.snapshot(now)).collect()
    }

    /// The running cameras, the list serve shows (a reload changes it): a node publishes their health.
    pub fn cameras(&self) -> CameraList {
        self.cameras.list.clone()
    }

    pub fn camera_health(&self) -> Vec<Arc<CameraHealth>> {
        let list = self.cameras.list.load();
        list.iter().map(|c| c.health.clone()).collect()
    }

    /// Runs exactly `config`'s cameras (see [`reload`](self::reload)), leaving the other sections as they
    /// started: how a node follows the cameras it holds leases for. `config` must name no more cameras
    /// than the pool has room for (`runtime.camera_capacity` at start).
    pub fn set_cameras(&mut self, config: &Config) -> Reloaded {
        self.apply_cameras(config)
    }

    /// Brings the running cameras to `config`'s: see [`ConfigFile::reload`], which checks the file first.
    fn apply_cameras(&mut self, config: &Config) -> Reloaded {
        let now = self.clock.now();
        self.cameras
            .apply(config, &self.pool, &mut self.ingest, now)
    }

    pub fn stats(&self) -> &PoolStats {
        self.pool.stats()
    }

    /// True once every source has ended (footage that does not loop).
    pub fn finished(&self) -> bool {
        self.ingest.finished()
    }

    /// Stops ingest, lets the workers finish their batch, and drains the incident events.
    pub fn shutdown(self) {
        // First, while the alert service's runtime it may run on is still up.
        if let Some((server, runtime)) = self.server {
            server.stop();
            drop(runtime);
        }
        self.report_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.ingest.stop();
        self.pool.shutdown();
        if let Some((thread, stop)) = self.watcher {
            drop(stop);
            let _ = thread.join();
        }
        // The sink ends when the analysers' senders and ours are gone, then stops the alert service it owns.
        drop(self.cameras);
        let _ = self.sink.join();
        self.retention.stop();
    }
}

/// Starts the operations-centre server on `runtime` (the alert service's or the outlet's), or on one of
/// its own without.
fn start_server(
    serve: &crate::serve::ServeConfig,
    runtime: Option<tokio::runtime::Handle>,
    ctx: ServeContext,
) -> anyhow::Result<(Server, Option<tokio::runtime::Runtime>)> {
    let (handle, own) = match runtime {
        Some(rt) => (rt, None),
        None => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("sw-http")
                .enable_all()
                .build()
                .context("starting the http server's runtime")?;
            (rt.handle().clone(), Some(rt))
        }
    };
    let server =
        Server::start(serve, ctx, handle).context("starting the operations-centre server")?;
    Ok((server, own))
}

/// How the server hands a citizen report to the incident sink: recorded and routed like a camera's
/// incident. Waits a little for room, so a burst of reports is not refused for a momentary backlog.
/// Shutdown empties `events` (a request still in flight must not keep the sink alive).
fn incident_submit(
    events: Arc<std::sync::Mutex<Option<crossbeam::channel::Sender<AnalysisEvent>>>>,
) -> crate::serve::IncidentSubmit {
    Arc::new(move |event| {
        let events = events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| "the pipeline is stopping".to_string())?;
        events
            .send_timeout(
                AnalysisEvent {
                    event,
                    snapshot: None,
                },
                Duration::from_secs(2),
            )
            .map_err(|e| match e {
                crossbeam::channel::SendTimeoutError::Timeout(_) => {
                    "the incident queue is full; try again shortly".to_string()
                }
                crossbeam::channel::SendTimeoutError::Disconnected(_) => {
                    "the pipeline is stopping".to_string()
                }
            })
    })
}

/// Reconciles the alert router with the incidents table at start-up. The incident sink commits each
/// lifecycle event to the table first and then hands it to the router through memory, so a crash in between
/// leaves the router behind the table; this catches it up.
///
/// - An alert still firing whose incident the table shows closed gets that close, dated when the incident
///   closed: otherwise it would fire for good (paging again every `repeat_interval`, and a critical one
///   muting its camera's warnings).
/// - Incidents left open are handed over again (the router drops what it already knows, so a crash before
///   the router's commit loses no notice). The rule state that would close them did not survive the
///   restart, so the incident sink closes them after a grace period; a crowd that is still there opens a
///   new incident within the rule's `min_seconds`. Returns them.
fn hand_over_left_state(
    store: &Store,
    alerts: &dyn IncidentOutlet,
    firing: &[String],
) -> anyhow::Result<Vec<IncidentEvent>> {
    for key in firing {
        if let Some(close) = store.closing_event(key)? {
            tracing::warn!(incident = %key, "incident closed before the previous run stopped, its alert still firing: close handed to the router");
            alerts.submit(close);
        }
    }
    let open = store.open_incidents()?;
    for event in &open {
        tracing::info!(incident = %event.key, "incident left open by the previous run: handed to the router again");
        alerts.submit(event.clone());
    }
    Ok(open)
}

/// Tells the alert router when cameras go down (not streaming for `down_after`) and come back, once per
/// change. Follows the cameras a reload adds and removes.
fn watch_camera_health(
    cameras: CameraList,
    alerts: Arc<dyn IncidentOutlet>,
    down_after: Duration,
) -> (JoinHandle<()>, crossbeam::channel::Sender<()>) {
    let (stop_tx, stop_rx) = crossbeam::channel::bounded::<()>(0);
    let thread = std::thread::Builder::new()
        .name("sw-health".into())
        .spawn(move || {
            // Per camera: since when it has not been streaming, and whether the router was told it is down.
            let mut seen: HashMap<CameraId, (Option<std::time::Instant>, bool)> = HashMap::new();
            while let Err(crossbeam::channel::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(Duration::from_secs(1)) {
                let list = cameras.load();
                seen.retain(|id, _| list.iter().any(|c| c.id == *id));
                for c in list.iter() {
                    let (down_since, reported_down) = seen.entry(c.id.clone()).or_default();
                    let streaming = c.health.state() == StreamState::Streaming;
                    *down_since = if streaming { None } else { down_since.or(Some(std::time::Instant::now())) };
                    let down = down_since.is_some_and(|t| t.elapsed() >= down_after);
                    if down != *reported_down {
                        *reported_down = down;
                        let state = if down { alert::CameraHealth::Down } else { alert::CameraHealth::Up };
                        tracing::info!(camera = %c.id, down, "camera health reported to the alert router");
                        alerts.camera_health(&c.id, state);
                    }
                }
            }
        })
        .expect("spawning the health watcher");
    (thread, stop_tx)
}

/// Where the incident sink writes snapshots, and the keyframes it draws them on.
struct IncidentSnapshots {
    dir: PathBuf,
    keyframes: Arc<LatestKeyframes>,
}

/// What the incident sink receives: the analysers' events, and the cameras a reload stopped.
struct Incoming {
    events: Receiver<AnalysisEvent>,
    retired: Receiver<(CameraId, Timestamp)>,
}

/// Writes snapshots and incident rows, logs each lifecycle event and hands it to the alert router.
/// Runs off the frame path: a snapshot's full-resolution decode happens here.
fn incident_sink(
    incoming: Incoming,
    mut forwarder: Forwarder,
    snapshots: IncidentSnapshots,
    mut pending_close: Vec<(std::time::Instant, IncidentEvent)>,
    clock: Arc<dyn Clock>,
) {
    let Incoming { events, retired } = incoming;
    let close_retired = |forwarder: &mut Forwarder| {
        while let Ok((camera, stopped)) = retired.try_recv() {
            // The stopped camera's analyser sent its last events before it was dropped, and so before
            // this: record them first, then close what is still open.
            while let Ok(e) = events.try_recv() {
                record(e, forwarder, &snapshots);
            }
            forwarder.close_camera(&camera, stopped, clock.now());
        }
    };
    loop {
        close_retired(&mut forwarder);
        let received = events.recv_timeout(Duration::from_millis(500));
        let now = std::time::Instant::now();
        for (_, mut event) in pending_close.extract_if(.., |(due, _)| *due <= now) {
            event.phase = IncidentPhase::Closed;
            event.at = clock.now().max(event.at);
            event.summary = "closed after monitoring restarted".into();
            forwarder.record(event);
        }
        forwarder.catch_up();
        match received {
            Ok(e) => record(e, &mut forwarder, &snapshots),
            Err(crossbeam::channel::RecvTimeoutError::Timeout) => continue,
            Err(crossbeam::channel::RecvTimeoutError::Disconnected) => break,
        }
    }
    // Cameras stopped just before the pipeline (a node's clean stop hands every camera on) may have
    // reached the sink while it waited for events: their incidents close too.
    close_retired(&mut forwarder);
    // Incidents still waiting for their close stay open in the store: the next run hands them over again.
    forwarder.finish();
}

/// Writes an event's snapshot, if it has one, then stores and forwards the event.
fn record(received: AnalysisEvent, forwarder: &mut Forwarder, snapshots: &IncidentSnapshots) {
    let AnalysisEvent {
        mut event,
        snapshot,
    } = received;
    if let Some(req) = snapshot {
        let path = snapshots
            .dir
            .join(crate::retention::snapshot_name(&event.key));
        match render_incident_snapshot(req, &snapshots.keyframes, &event.key, event.at)
            .map_err(anyhow::Error::from)
            .and_then(|jpeg| Ok(std::fs::write(&path, jpeg)?))
        {
            Ok(()) => event.snapshot = Some(path.display().to_string()),
            Err(e) => {
                tracing::error!(incident = %event.key, error = %e, "snapshot not written")
            }
        }
    }
    forwarder.record(event);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{CameraId, IncidentKey, RuleKind, Severity, SystemClock};

    fn opened(camera: &str, at: i64) -> IncidentEvent {
        IncidentEvent {
            key: IncidentKey {
                camera: CameraId::new(camera),
                rule: "enter".into(),
                zone: "all".into(),
                episode: Timestamp(at),
            },
            phase: IncidentPhase::Opened,
            at: Timestamp(at),
            kind: RuleKind::Intrusion,
            severity: Severity::Warning,
            camera_name: camera.into(),
            ward: "Bến Nghé".into(),
            summary: "1 person".into(),
            count: 1,
            snapshot: None,
        }
    }

    /// A node's clean stop retires every camera and then stops the pipeline at once: the sink, waiting for
    /// events, learns of the retired camera as the analysers' channel closes, and still closes what the
    /// camera left open (its cameras go to other nodes; nothing here would ever close it).
    #[test]
    fn a_camera_retired_as_the_pipeline_stops_has_its_incidents_closed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("streetwatch.db");
        let (events_tx, events) = crossbeam::channel::bounded(4);
        let (retired_tx, retired) = crossbeam::channel::unbounded();
        let forwarder = Forwarder::new(Store::open(&db).unwrap(), None, Arc::default());
        let snapshots = IncidentSnapshots {
            dir: dir.path().to_path_buf(),
            keyframes: Arc::new(LatestKeyframes::new(1)),
        };
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let now = clock.now().0;
        let sink = std::thread::spawn(move || {
            incident_sink(
                Incoming { events, retired },
                forwarder,
                snapshots,
                Vec::new(),
                clock,
            )
        });
        events_tx
            .send(AnalysisEvent {
                event: opened("cam-1", now - 5_000),
                snapshot: None,
            })
            .unwrap();
        events_tx
            .send(AnalysisEvent {
                event: opened("cam-2", now - 4_000),
                snapshot: None,
            })
            .unwrap();
        let open = || Store::open(&db).unwrap().open_incidents().unwrap();
        // Both recorded: the sink has gone back to waiting for events.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while open().len() < 2 {
            assert!(std::time::Instant::now() < deadline, "never recorded");
            std::thread::sleep(Duration::from_millis(10));
        }
        retired_tx
            .send((CameraId::new("cam-1"), Timestamp(now)))
            .unwrap();
        drop(events_tx);
        sink.join().unwrap();
        let left: Vec<String> = open().iter().map(|e| e.key.camera.to_string()).collect();
        assert_eq!(left, ["cam-2"], "only the retired camera's incident closes");
    }
}
