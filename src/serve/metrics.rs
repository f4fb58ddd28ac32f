//! `GET /metrics`: the pipeline in Prometheus text format.
//!
//! Everything but the HTTP request counts is read when scraped, from what the stages keep anyway: each
//! camera's [`CameraHealth`](crate::health::CameraHealth) atomics, the pool's lock-free histogram and
//! counters, the incident sink's counts per rule kind, the alert service's queue and delivery counters, and
//! the outbox in SQLite. Nothing is added to the frame path.
//!
//! Series stay bounded: per camera a fixed set keyed by the camera id alone (ward and name go in
//! `streetwatch_camera_info`, and on a router the node running it in `streetwatch_camera_node_info`, one
//! series per camera), HTTP requests by matched route (never the raw path), receivers and rule kinds
//! from the configuration, nodes by name (a deployment has a handful). No label carries a URL, token,
//! phone number or e-mail address.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

use crate::alert;
use crate::health::StreamState;

use super::error::ServeError;
use super::state::{AppState, CameraInfo, PipelineStats, ServeContext};

/// Upper bounds of `streetwatch_inference_duration_seconds`: one batch on a CPU takes milliseconds to
/// a few hundred; seconds mean trouble.
const INFERENCE_BOUNDS_S: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Upper bounds of `streetwatch_http_request_duration_seconds`.
const HTTP_BOUNDS_S: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// The route label of a request that matched no route.
const UNMATCHED: &str = "unmatched";

const STATES: [StreamState; 5] = [
    StreamState::Connecting,
    StreamState::Streaming,
    StreamState::Stalled,
    StreamState::Backoff,
    StreamState::Stopped,
];

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

/// Adds the request counter and duration histogram to every route of `app` (call it after the routes).
pub(super) fn track_requests(app: Router<AppState>, state: &AppState) -> Router<AppState> {
    app.layer(axum::middleware::from_fn_with_state(
        state.metrics.clone(),
        track,
    ))
}

/// The registry behind `/metrics`.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
}

impl Metrics {
    pub fn new(ctx: &ServeContext) -> Result<Metrics, ServeError> {
        let failed = |e: prometheus::Error| ServeError::Runtime(format!("metrics: {e}"));
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "streetwatch_http_requests_total",
                "HTTP requests answered, by matched route (not the raw path), method and status.",
            ),
            &["route", "method", "status"],
        )
        .map_err(failed)?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "streetwatch_http_request_duration_seconds",
                "Time from a request's arrival to its response head (a live feed's stream is not \
                 included), by matched route.",
            )
            .buckets(HTTP_BOUNDS_S.to_vec()),
            &["route"],
        )
        .map_err(failed)?;
        registry
            .register(Box::new(requests.clone()))
            .map_err(failed)?;
        registry
            .register(Box::new(request_seconds.clone()))
            .map_err(failed)?;
        registry
            .register(Box::new(ScrapeTime::new(ctx).map_err(failed)?))
            .map_err(failed)?;
        Ok(Metrics {
            registry,
            requests,
            request_seconds,
        })
    }

    /// Every series, in the text exposition format. Blocks: the outbox is read from SQLite.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }

    fn observe(&self, route: &str, method: &Method, status: StatusCode, seconds: f64) {
        self.requests
            .with_label_values(&[route, method_label(method), status.as_str()])
            .inc();
        self.request_seconds
            .with_label_values(&[route])
            .observe(seconds);
    }
}

/// A method label from a fixed set: a client may send any token as its method.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_string(), |p| p.as_str().to_string());
    let method = req.method().clone();
    let response = next.run(req).await;
    metrics.observe(
        &route,
        &method,
        response.status(),
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn scrape(State(state): State<AppState>) -> Response {
    let metrics = state.metrics.clone();
    match tokio::task::spawn_blocking(move || metrics.render()).await {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Ok(Err(e)) => super::ApiError::internal(format!("metrics: {e}")).into_response(),
        Err(e) => super::ApiError::internal(format!("metrics task: {e}")).into_response(),
    }
}

/// One family: its description (name, help, label names) and type.
struct Family {
    desc: Desc,
    kind: MetricType,
}

impl Family {
    fn new(
        name: &str,
        help: &str,
        kind: MetricType,
        labels: &[&str],
    ) -> prometheus::Result<Family> {
        let desc = Desc::new(
            name.into(),
            help.into(),
            labels.iter().map(|l| l.to_string()).collect(),
            Default::default(),
        )?;
        Ok(Family { desc, kind })
    }

    fn empty(&self) -> MetricFamily {
        let mut mf = MetricFamily::default();
        mf.set_name(self.desc.fq_name.clone());
        mf.set_help(self.desc.help.clone());
        mf.set_field_type(self.kind);
        mf
    }

    /// A family of one series per `(label values, value)`: counters or gauges as the family says.
    fn values<'a, I>(&self, series: I) -> MetricFamily
    where
        I: IntoIterator<Item = (Vec<&'a str>, f64)>,
    {
        let mut mf = self.empty();
        mf.set_metric(
            series
                .into_iter()
                .map(|(values, v)| {
                    let mut m = self.metric(&values);
                    match self.kind {
                        MetricType::COUNTER => {
                            let mut c = proto::Counter::default();
                            c.set_value(v);
                            m.set_counter(c);
                        }
                        _ => {
                            let mut g = proto::Gauge::default();
                            g.set_value(v);
                            m.set_gauge(g);
                        }
                    }
                    m
                })
                .collect(),
        );
        mf
    }

    /// One unlabelled histogram from cumulative counts under `bounds`.
    fn histogram(&self, bounds: &[f64], below: &[u64], count: u64, sum: f64) -> MetricFamily {
        let mut h = proto::Histogram::default();
        h.set_sample_count(count);
        h.set_sample_sum(sum);
        h.set_bucket(
            bounds
                .iter()
                .zip(below)
                .map(|(&le, &n)| {
                    let mut b = proto::Bucket::default();
                    b.set_upper_bound(le);
                    b.set_cumulative_count(n);
                    b
                })
                .collect(),
        );
        let mut m = self.metric(&[]);
        m.set_histogram(h);
        let mut mf = self.empty();
        mf.set_metric(vec![m]);
        mf
    }

    /// A series with `values` for the family's labels, written in name order (as the crate's own vectors do).
    fn metric(&self, values: &[&str]) -> proto::Metric {
        debug_assert_eq!(values.len(), self.desc.variable_labels.len());
        let mut labels: Vec<proto::LabelPair> = self
            .desc
            .variable_labels
            .iter()
            .zip(values)
            .map(|(name, value)| {
                let mut l = proto::LabelPair::default();
                l.set_name(name.clone());
                l.set_value(value.to_string());
                l
            })
            .collect();
        labels.sort_by(|a, b| a.name().cmp(b.name()));
        proto::Metric::from_label(labels)
    }
}

/// Everything read when scraped: the cameras, the pool, the incident sink and the alert service.
struct ScrapeTime {
    cameras: super::CameraList,
    clock: Arc<dyn crate::types::Clock>,
    stats: PipelineStats,
    db_path: std::path::PathBuf,
    /// Kept between scrapes; opened at the first one that has an alert service.
    outbox: Mutex<Option<alert::Store>>,
    camera_info: Family,
    frames_decoded: Family,
    frames_received: Family,
    frames_analysed: Family,
    frames_dropped: Family,
    decode_skipped: Family,
    motion_skipped: Family,
    restarts: Family,
    camera_state: Family,
    last_frame_age: Family,
    worker_panics: Family,
    inference: Family,
    batches: Family,
    inference_errors: Family,
    pool_queue: Family,
    incidents_opened: Family,
    attempts: Family,
    outbox_depth: Family,
    router_queue: Family,
    router_queue_capacity: Family,
    router_dropped: Family,
    router_spilled: Family,
    camera_node: Family,
    cluster_nodes: Family,
    node_up: Family,
    consumer_events: Family,
    snapshots_missing: Family,
}

impl ScrapeTime {
    fn new(ctx: &ServeContext) -> prometheus::Result<ScrapeTime> {
        use MetricType::{COUNTER, GAUGE, HISTOGRAM};
        let cam = &["camera"][..];
        Ok(ScrapeTime {
            cameras: ctx.cameras.clone(),
            clock: ctx.clock.clone(),
            stats: ctx.stats.clone(),
            db_path: ctx.db_path.clone(),
            outbox: Mutex::new(None),
            camera_info: Family::new(
                "streetwatch_camera_info",
                "A configured camera: always 1; its name and ward as labels.",
                GAUGE,
                &["camera", "name", "ward"],
            )?,
            frames_decoded: Family::new(
                "streetwatch_camera_frames_decoded_total",
                "Pictures out of the camera's decoder, before sampling to the analysis rate.",
                COUNTER,
                cam,
            )?,
            frames_received: Family::new(
                "streetwatch_camera_frames_received_total",
                "Sampled frames of the camera that reached the worker pool.",
                COUNTER,
                cam,
            )?,
            frames_analysed: Family::new(
                "streetwatch_camera_frames_analysed_total",
                "Frames of the camera detected and analysed.",
                COUNTER,
                cam,
            )?,
            frames_dropped: Family::new(
                "streetwatch_camera_frames_dropped_total",
                "Frames of the camera replaced by a newer one before a worker took them (the pool was busy).",
                COUNTER,
                cam,
            )?,
            decode_skipped: Family::new(
                "streetwatch_camera_decode_skipped_total",
                "Keyframes of the camera dropped still encoded: not due yet, or analysis had no room.",
                COUNTER,
                cam,
            )?,
            motion_skipped: Family::new(
                "streetwatch_camera_motion_skipped_total",
                "Analysed frames of the camera whose scene had not changed: detections reused, no inference.",
                COUNTER,
                cam,
            )?,
            restarts: Family::new(
                "streetwatch_camera_restarts_total",
                "Times the camera's stream was restarted after a failure or stall.",
                COUNTER,
                cam,
            )?,
            camera_state: Family::new(
                "streetwatch_camera_state",
                "The camera stream's state: 1 for the current one of connecting, streaming, stalled, \
                 backoff, stopped; 0 for the others.",
                GAUGE,
                &["camera", "state"],
            )?,
            last_frame_age: Family::new(
                "streetwatch_camera_last_frame_age_seconds",
                "Seconds since the camera's last frame reached the pool; absent before its first.",
                GAUGE,
                cam,
            )?,
            worker_panics: Family::new(
                "streetwatch_worker_panics_total",
                "Frames lost to a panic in a pool worker (detector or analyser), all cameras: above 0 is a bug.",
                COUNTER,
                &[],
            )?,
            inference: Family::new(
                "streetwatch_inference_duration_seconds",
                "Time to run the detector on one batch of frames.",
                HISTOGRAM,
                &[],
            )?,
            batches: Family::new(
                "streetwatch_inference_batches_total",
                "Batches of frames the detector ran on.",
                COUNTER,
                &[],
            )?,
            inference_errors: Family::new(
                "streetwatch_inference_errors_total",
                "Batches whose inference failed (their frames were skipped).",
                COUNTER,
                &[],
            )?,
            pool_queue: Family::new(
                "streetwatch_pool_queue_depth",
                "Cameras with a frame waiting for a pool worker.",
                GAUGE,
                &[],
            )?,
            incidents_opened: Family::new(
                "streetwatch_incidents_opened_total",
                "Incidents opened, by rule kind.",
                COUNTER,
                &["kind"],
            )?,
            attempts: Family::new(
                "streetwatch_alert_delivery_attempts_total",
                "Attempts to deliver a notice, by receiver, channel and outcome: sent (the peer took it), \
                 failed (retried later), dead_lettered (given up).",
                COUNTER,
                &["receiver", "channel", "outcome"],
            )?,
            outbox_depth: Family::new(
                "streetwatch_alert_outbox_deliveries",
                "Deliveries in the outbox not yet sent, by receiver and state (pending, sending).",
                GAUGE,
                &["receiver", "state"],
            )?,
            router_queue: Family::new(
                "streetwatch_alert_router_queue_depth",
                "Incident events and camera health changes waiting for the alert router.",
                GAUGE,
                &[],
            )?,
            router_queue_capacity: Family::new(
                "streetwatch_alert_router_queue_capacity",
                "Room in the alert router's queue.",
                GAUGE,
                &[],
            )?,
            router_dropped: Family::new(
                "streetwatch_alert_router_dropped_updates_total",
                "Incident update events dropped because the alert router's queue was full.",
                COUNTER,
                &[],
            )?,
            router_spilled: Family::new(
                "streetwatch_alert_router_spilled_total",
                "Opened or closed incident events that found the router's queue full and were replayed \
                 from the incidents table.",
                COUNTER,
                &[],
            )?,
            camera_node: Family::new(
                "streetwatch_camera_node_info",
                "On a router: the node that runs the camera, or ran it last (always 1). Absent for a \
                 camera no node has reported.",
                GAUGE,
                &["camera", "node"],
            )?,
            cluster_nodes: Family::new(
                "streetwatch_cluster_nodes",
                "On a router: analysis nodes heard of, by state: live (heartbeat within lease_seconds) \
                 or lost.",
                GAUGE,
                &["state"],
            )?,
            node_up: Family::new(
                "streetwatch_cluster_node_up",
                "On a router: 1 while the analysis node is live, 0 once it is lost.",
                GAUGE,
                &["node"],
            )?,
            consumer_events: Family::new(
                "streetwatch_router_consumer_events_total",
                "On a router: incident events taken from JetStream, by outcome: committed (recorded, \
                 then acknowledged), malformed (not an incident event; terminated), shared_close (a \
                 close shared by any router through the claims bucket, submitted here).",
                COUNTER,
                &["outcome"],
            )?,
            snapshots_missing: Family::new(
                "streetwatch_router_snapshots_missing_total",
                "On a router: events whose snapshot was not in the object store, routed without it.",
                COUNTER,
                &[],
            )?,
        })
    }

    fn families(&self) -> [&Family; 27] {
        [
            &self.camera_info,
            &self.frames_decoded,
            &self.frames_received,
            &self.frames_analysed,
            &self.frames_dropped,
            &self.decode_skipped,
            &self.motion_skipped,
            &self.restarts,
            &self.camera_state,
            &self.last_frame_age,
            &self.worker_panics,
            &self.inference,
            &self.batches,
            &self.inference_errors,
            &self.pool_queue,
            &self.incidents_opened,
            &self.attempts,
            &self.outbox_depth,
            &self.router_queue,
            &self.router_queue_capacity,
            &self.router_dropped,
            &self.router_spilled,
            &self.camera_node,
            &self.cluster_nodes,
            &self.node_up,
            &self.consumer_events,
            &self.snapshots_missing,
        ]
    }

    /// On a router: where each camera runs, the nodes, and what its consumer did.
    fn cluster(&self, out: &mut Vec<MetricFamily>) {
        use crate::cluster::health::NodeState;
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(counts) = &self.stats.consumer {
            out.push(
                self.consumer_events.values(
                    [
                        ("committed", &counts.committed),
                        ("malformed", &counts.malformed),
                        ("shared_close", &counts.shared_closes),
                    ]
                    .map(|(outcome, n)| (vec![outcome], n.load(Relaxed) as f64)),
                ),
            );
            out.push(
                self.snapshots_missing
                    .values([(vec![], counts.snapshots_missing.load(Relaxed) as f64)]),
            );
        }
        let Some(view) = &self.stats.cluster else {
            return;
        };
        let cluster = view.load();
        let cams = self.cameras.load();
        out.push(self.camera_node.values(cams.iter().filter_map(|c| {
            let node = cluster.cameras.get(&c.id)?.node.as_deref()?;
            Some((vec![c.id.as_str(), node], 1.0))
        })));
        out.push(
            self.cluster_nodes
                .values([NodeState::Live, NodeState::Lost].map(|state| {
                    let n = cluster.nodes.iter().filter(|n| n.state == state).count();
                    (vec![state.as_str()], n as f64)
                })),
        );
        out.push(self.node_up.values(cluster.nodes.iter().map(|n| {
            (
                vec![n.node.as_str()],
                f64::from(u8::from(n.state == NodeState::Live)),
            )
        })));
    }

    fn cameras(&self, out: &mut Vec<MetricFamily>) {
        use std::sync::atomic::Ordering::Relaxed;
        let cams = &*self.cameras.load();
        out.push(
            self.camera_info.values(
                cams.iter()
                    .map(|c| (vec![c.id.as_str(), c.name.as_str(), c.ward.as_str()], 1.0)),
            ),
        );
        let counter = |f: &Family, read: fn(&CameraInfo) -> u64| {
            f.values(cams.iter().map(|c| (vec![c.id.as_str()], read(c) as f64)))
        };
        out.push(counter(&self.frames_decoded, |c| {
            c.health.frames_decoded.load(Relaxed)
        }));
        out.push(counter(&self.frames_received, |c| {
            c.health.frames_received.load(Relaxed)
        }));
        out.push(counter(&self.frames_analysed, |c| {
            c.health.frames_analysed.load(Relaxed)
        }));
        out.push(counter(&self.frames_dropped, |c| {
            c.health.frames_dropped.load(Relaxed)
        }));
        out.push(counter(&self.decode_skipped, |c| {
            c.health.decode_skipped.load(Relaxed)
        }));
        out.push(counter(&self.motion_skipped, |c| {
            c.health.motion_skipped.load(Relaxed)
        }));
        out.push(counter(&self.restarts, |c| c.health.restarts.load(Relaxed)));
        out.push(self.camera_state.values(cams.iter().flat_map(|c| {
            let now = c.health.state();
            STATES.iter().map(move |&s| {
                (
                    vec![c.id.as_str(), s.as_str()],
                    f64::from(u8::from(s == now)),
                )
            })
        })));
        let now = self.clock.now();
        out.push(self.last_frame_age.values(cams.iter().filter_map(|c| {
            let at = c.health.last_frame_at()?;
            Some((vec![c.id.as_str()], now.since(at).max(0) as f64 / 1000.0))
        })));
        let panics: u64 = cams
            .iter()
            .map(|c| c.health.worker_panics.load(Relaxed))
            .sum();
        out.push(self.worker_panics.values([(vec![], panics as f64)]));
    }

    fn pool(&self, out: &mut Vec<MetricFamily>) {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(pool) = &self.stats.pool else { return };
        let stats = pool.stats();
        let bounds_ms = INFERENCE_BOUNDS_S.map(|s| s * 1000.0);
        let (below, count) = stats.inference_ms.cumulative_ms(&bounds_ms);
        let sum = stats.inference_us.load(Relaxed) as f64 / 1e6;
        out.push(
            self.inference
                .histogram(&INFERENCE_BOUNDS_S, &below, count, sum),
        );
        out.push(
            self.batches
                .values([(vec![], stats.batches.load(Relaxed) as f64)]),
        );
        out.push(
            self.inference_errors
                .values([(vec![], stats.inference_errors.load(Relaxed) as f64)]),
        );
        out.push(
            self.pool_queue
                .values([(vec![], pool.queue_depth() as f64)]),
        );
    }

    fn alerts(&self, out: &mut Vec<MetricFamily>) {
        if let Some(incidents) = &self.stats.incidents {
            out.push(
                self.incidents_opened.values(
                    incidents
                        .opened()
                        .map(|(kind, n)| (vec![kind.as_str()], n as f64)),
                ),
            );
        }
        // Held only while read: the server must never be the last owner of the alert service.
        let Some(handle) = self.stats.alerts.as_ref().and_then(|w| w.upgrade()) else {
            return;
        };
        let deliveries = handle.delivery_stats();
        let queue = handle.queue_stats();
        let (depth, capacity) = handle.queue_depth();
        drop(handle);
        out.push(self.attempts.values(deliveries.iter().flat_map(|d| {
            [
                ("sent", d.sent),
                ("failed", d.failed),
                ("dead_lettered", d.dead_lettered),
            ]
            .map(|(outcome, n)| (vec![d.receiver.as_str(), d.channel, outcome], n as f64))
        })));
        out.push(self.router_queue.values([(vec![], depth as f64)]));
        out.push(
            self.router_queue_capacity
                .values([(vec![], capacity as f64)]),
        );
        out.push(
            self.router_dropped
                .values([(vec![], queue.dropped_updates as f64)]),
        );
        out.push(self.router_spilled.values([(vec![], queue.spilled as f64)]));
        match self.read_outbox() {
            Ok(rows) => {
                // Every configured receiver has both series, 0 when nothing waits.
                let mut depth: std::collections::BTreeMap<(String, String), i64> = deliveries
                    .iter()
                    .flat_map(|d| {
                        ["pending", "sending"].map(|s| ((d.receiver.clone(), s.to_string()), 0))
                    })
                    .collect();
                for (receiver, state, n) in rows {
                    *depth.entry((receiver, state)).or_default() += n;
                }
                out.push(
                    self.outbox_depth.values(
                        depth
                            .iter()
                            .map(|((r, s), n)| (vec![r.as_str(), s.as_str()], *n as f64)),
                    ),
                );
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read the alert outbox"),
        }
    }

    fn read_outbox(&self) -> Result<Vec<(String, String, i64)>, alert::AlertError> {
        let mut kept = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        let store = match kept.take() {
            Some(s) => s,
            None => alert::Store::open(&self.db_path)?,
        };
        let rows = store.outbox_depth();
        *kept = Some(store);
        rows
    }
}

impl Collector for ScrapeTime {
    fn desc(&self) -> Vec<&Desc> {
        self.families().into_iter().map(|f| &f.desc).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Vec::with_capacity(27);
        self.cameras(&mut out);
        self.cluster(&mut out);
        self.pool(&mut out);
        self.alerts(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SystemClock;

    /// Called on a runtime: the feed starts its poller there.
    fn state() -> AppState {
        let dir = tempfile::tempdir().unwrap().keep();
        let ctx = ServeContext {
            db_path: dir.join("streetwatch.db"),
            snapshots_dir: dir.join("snapshots"),
            cameras: Default::default(),
            clock: Arc::new(SystemClock),
            submit: None,
            stats: PipelineStats::default(),
        };
        let stopping = tokio::sync::watch::channel(false).1;
        AppState {
            metrics: Arc::new(Metrics::new(&ctx).unwrap()),
            feed: super::super::feed::Feed::start(
                &ctx,
                stopping.clone(),
                &tokio::runtime::Handle::current(),
            )
            .unwrap(),
            ctx,
            tokens: super::super::auth::Tokens::new(&[]),
            utc_offset_minutes: 420,
            stopping,
            reports: super::super::reports::Reports::new(&Default::default()),
        }
    }

    /// A parametrised route is counted under its pattern: one series whatever the ids asked for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_are_labelled_by_matched_route_not_raw_path() {
        let state = state();
        let app = Router::new()
            .route("/api/alerts/{id}", get(|| async { "an alert" }))
            .merge(routes());
        let app = track_requests(app, &state).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let http = reqwest::Client::new();
        for path in [
            "/api/alerts/41",
            "/api/alerts/9731",
            "/api/alerts/41",
            "/no/such/page-5521",
        ] {
            http.get(format!("http://{addr}{path}"))
                .send()
                .await
                .unwrap();
        }
        let body = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            body.contains(
                r#"streetwatch_http_requests_total{method="GET",route="/api/alerts/{id}",status="200"} 3"#
            ),
            "{body}"
        );
        assert!(
            body.contains(
                r#"streetwatch_http_request_duration_seconds_count{route="/api/alerts/{id}"} 3"#
            ),
            "{body}"
        );
        assert!(
            body.contains(
                r#"streetwatch_http_requests_total{method="GET",route="unmatched",status="404"} 1"#
            ),
            "{body}"
        );
        for raw in ["9731", "/api/alerts/41", "page-5521"] {
            assert!(!body.contains(raw), "raw path {raw} in a label: {body}");
        }
    }
}
