//! The live feed, `GET /api/events`: Server-Sent Events of alert changes (new alerts, updates, handling,
//! delivery states) and camera health changes.
//!
//! The source of truth is `alert_feed`, the change log that triggers write in the transaction making each
//! change (camera state changes are appended by a task of this module). One poller per server reads new
//! rows every [`POLL`], renders each once (the alert's current JSON, [`alert::Store::alert_views_by_key`]) and
//! broadcasts it to the open streams. A stream that resumes (`Last-Event-ID`) subscribes to the broadcast
//! first, then replays the rows after its id from the database, then goes on with the broadcast skipping
//! what it already sent: no row is missed or repeated across the switch. A stream that falls behind the
//! broadcast's buffer catches up from the database the same way.
//!
//! Each event carries its row's id. A delivery row becomes one `alert` event per alert its notice carried;
//! only the last of those carries the id, so a stream cut between them resumes at the row (repeating, never
//! missing, an alert's state).

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};

use crate::alert::{self, AlertError, FeedRow};
use crate::health::StreamState;
use crate::types::{CameraId, Clock, Timestamp};

use super::auth::Caller;
use super::config::Role;
use super::error::ApiError;
use super::state::{AppState, CameraInfo, CameraList, ServeContext};
use crate::cluster::health::{ClusterSnapshot, ClusterView, Placement};

/// How often the poller looks for new feed rows: the page sees a change within this (plus its rendering).
pub(crate) const POLL: Duration = Duration::from_millis(250);
/// Rows read (and rendered) at a time, by the poller and by a replay.
const PAGE: usize = 500;
/// Rows the broadcast holds for a slow stream before it has to catch up from the database.
const BUFFER: usize = 1024;
/// Open streams at most; more are refused with 503 (each holds a connection and a task).
pub(crate) const MAX_STREAMS: usize = 256;
/// A comment line this often keeps proxies and idle-timeouts from closing a quiet stream.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The reconnection delay the browser is told to use.
const RETRY_MS: u64 = 2000;
/// How often camera states are compared.
const CAMERA_TICK: Duration = Duration::from_secs(1);
/// Chunks a stream holds for a client not reading; beyond it the stream waits, and lags the broadcast.
const STREAM_QUEUE: usize = 16;

/// One feed row rendered as SSE text (empty when it shows nothing: its alert was pruned).
#[derive(Clone, Debug)]
struct Chunk {
    id: i64,
    bytes: Bytes,
}

/// The server's feed: the broadcast of rendered rows and the stream limit.
#[derive(Clone)]
pub(crate) struct Feed(Arc<Inner>);

struct Inner {
    db_path: PathBuf,
    tx: broadcast::Sender<Chunk>,
    /// The id of the last row broadcast; held while sending, so a subscriber knows where it starts.
    sent: Mutex<i64>,
    streams: Arc<Semaphore>,
}

impl Feed {
    /// Starts the poller and the camera watcher on `runtime`; both end when `stopping` turns true. The feed
    /// starts at the current end of the log.
    pub(crate) fn start(
        ctx: &ServeContext,
        stopping: watch::Receiver<bool>,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Feed, AlertError> {
        let last = alert::Store::open(&ctx.db_path)?.feed_last_id()?;
        let (tx, _) = broadcast::channel(BUFFER);
        let feed = Feed(Arc::new(Inner {
            db_path: ctx.db_path.clone(),
            tx,
            sent: Mutex::new(last),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        }));
        runtime.spawn(poll(feed.clone(), last, stopping.clone()));
        runtime.spawn(watch_cameras(
            ctx.cameras.clone(),
            ctx.stats.cluster.clone(),
            ctx.db_path.clone(),
            ctx.clock.clone(),
            stopping,
        ));
        Ok(feed)
    }

    /// A receiver of rows broadcast from now on, and the id of the last row broadcast before it.
    fn subscribe(&self) -> (broadcast::Receiver<Chunk>, i64) {
        let sent = self.0.sent.lock().unwrap_or_else(|p| p.into_inner());
        (self.0.tx.subscribe(), *sent)
    }

    fn publish(&self, chunk: Chunk) {
        let mut sent = self.0.sent.lock().unwrap_or_else(|p| p.into_inner());
        *sent = chunk.id;
        // No receiver is not an error: nobody is watching.
        let _ = self.0.tx.send(chunk);
    }
}

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/api/events", get(events))
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    last_event_id: Option<i64>,
}

async fn events(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer, "read the live feed")?;
    let Query(query) = query?;
    // The header wins: a browser reconnecting sends its newest id there, while the URL keeps the first.
    let resume = match headers.get("last-event-id") {
        Some(v) if !v.as_bytes().is_empty() => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be an event id"))?,
        ),
        _ => query.last_event_id,
    };
    if resume.is_some_and(|n| n < 0) {
        return Err(ApiError::bad_request("last_event_id must be an event id"));
    }
    let permit = state
        .feed
        .0
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("too many live feeds open (at most {MAX_STREAMS}); try again later"),
            )
        })?;
    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_QUEUE);
    tokio::spawn(stream(
        state.feed.clone(),
        resume,
        tx,
        state.stopping.clone(),
        permit,
    ));
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    }));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        // Tells a reverse proxy (nginx) not to buffer the stream.
        .header("x-accel-buffering", "no")
        .body(body)
        .map_err(ApiError::internal)
}

/// Sends `bytes` to the client; false when it left or the server stops.
async fn send(
    tx: &mpsc::Sender<Bytes>,
    stopping: &mut watch::Receiver<bool>,
    bytes: Bytes,
) -> bool {
    tokio::select! {
        r = tx.send(bytes) => r.is_ok(),
        _ = stopping.wait_for(|s| *s) => false,
    }
}

/// One client's stream, until it leaves or the server stops.
async fn stream(
    feed: Feed,
    resume: Option<i64>,
    tx: mpsc::Sender<Bytes>,
    mut stopping: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    // Subscribe before reading the backlog: a row committed meanwhile is in one or the other (or both, and
    // is skipped the second time by its id).
    let (mut rx, mut last) = feed.subscribe();
    let retry = Bytes::from(format!("retry: {RETRY_MS}\n\n"));
    if !send(&tx, &mut stopping, retry).await {
        return;
    }
    if let Some(from) = resume {
        match catch_up(&feed, from, true, &tx, &mut stopping).await {
            Some(l) => last = l,
            None => return,
        }
    }
    let mut keep_alive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    loop {
        let next = tokio::select! {
            _ = stopping.wait_for(|s| *s) => return,
            _ = tx.closed() => return,
            _ = keep_alive.tick() => None,
            r = rx.recv() => Some(r),
        };
        let sent = match next {
            None => send(&tx, &mut stopping, Bytes::from_static(b": keep-alive\n\n")).await,
            Some(Ok(chunk)) if chunk.id <= last => true,
            Some(Ok(chunk)) => {
                last = chunk.id;
                chunk.bytes.is_empty() || send(&tx, &mut stopping, chunk.bytes).await
            }
            Some(Err(broadcast::error::RecvError::Lagged(_))) => {
                match catch_up(&feed, last, false, &tx, &mut stopping).await {
                    Some(l) => {
                        last = l;
                        true
                    }
                    None => false,
                }
            }
            Some(Err(broadcast::error::RecvError::Closed)) => false,
        };
        if !sent {
            return;
        }
    }
}

/// Sends the rows after `after` from the database, page by page; the id of the last one sent, or `None`
/// when the stream should end (client gone, server stopping, database failing: the client resumes later).
/// `clamp`: an id beyond the log's end (another database's) resumes at the end.
async fn catch_up(
    feed: &Feed,
    mut after: i64,
    clamp: bool,
    tx: &mpsc::Sender<Bytes>,
    stopping: &mut watch::Receiver<bool>,
) -> Option<i64> {
    let mut clamp = clamp;
    loop {
        let path = feed.0.db_path.clone();
        let read = tokio::task::spawn_blocking(move || {
            let store = alert::Store::open(&path)?;
            let from = if clamp {
                after.min(store.feed_last_id()?)
            } else {
                after
            };
            Ok::<_, AlertError>((from, render_after(&store, from, PAGE)?))
        })
        .await;
        let (from, chunks) = match read {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "live feed: cannot read the backlog; ending the stream");
                return None;
            }
            Err(e) => {
                tracing::error!(error = %e, "live feed: backlog reader failed");
                return None;
            }
        };
        clamp = false;
        after = from;
        let full = chunks.len() == PAGE;
        for c in chunks {
            after = c.id;
            if !c.bytes.is_empty() && !send(tx, stopping, c.bytes).await {
                return None;
            }
        }
        if !full {
            return Some(after);
        }
    }
}

/// The poller: reads new rows, renders them once, broadcasts them.
async fn poll(feed: Feed, mut last: i64, mut stopping: watch::Receiver<bool>) {
    let mut store: Option<alert::Store> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stopping.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        // A page at a time, at once again while the pages are full.
        loop {
            let path = feed.0.db_path.clone();
            let held = store.take();
            let read = tokio::task::spawn_blocking(move || {
                let s = match held {
                    Some(s) => s,
                    None => match alert::Store::open(&path) {
                        Ok(s) => s,
                        Err(e) => return (None, Err(e)),
                    },
                };
                let r = render_after(&s, last, PAGE);
                (Some(s), r)
            })
            .await;
            let chunks = match read {
                Ok((s, Ok(chunks))) => {
                    store = s;
                    if failing {
                        tracing::info!("live feed: reading the change log again");
                        failing = false;
                    }
                    chunks
                }
                Ok((_, Err(e))) => {
                    // Reopened at the next tick; logged once per outage.
                    if !failing {
                        tracing::warn!(error = %e, "live feed: cannot read the change log");
                        failing = true;
                    }
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "live feed: change log reader failed");
                    break;
                }
            };
            let full = chunks.len() == PAGE;
            for c in chunks {
                last = c.id;
                feed.publish(c);
            }
            if !full || *stopping.borrow() {
                break;
            }
        }
    }
}

/// Up to `limit` rows after `after`, each rendered.
fn render_after(store: &alert::Store, after: i64, limit: usize) -> Result<Vec<Chunk>, AlertError> {
    store
        .feed_after(after, limit)?
        .into_iter()
        .map(|row| {
            Ok(Chunk {
                id: row.id,
                bytes: Bytes::from(render(store, &row)?),
            })
        })
        .collect()
}

/// The SSE text of one feed row: the events it shows, the last one with the row's id.
fn render(store: &alert::Store, row: &FeedRow) -> Result<String, AlertError> {
    let mut events: Vec<(&str, String)> = Vec::new();
    let json = |v: &alert::AlertView| {
        serde_json::to_string(v).map_err(|e| AlertError::Db(format!("encode alert: {e}")))
    };
    match row.kind.as_str() {
        "alert" => {
            for v in store.alert_views_by_key(std::slice::from_ref(&row.reference))? {
                events.push(("alert", json(&v)?));
            }
        }
        "delivery" => {
            if let Ok(id) = row.reference.parse::<i64>() {
                let keys = store.delivery_alert_keys(id)?;
                for v in store.alert_views_by_key(&keys)? {
                    events.push(("alert", json(&v)?));
                }
            }
        }
        "camera" => {
            if let Some(p) = &row.payload {
                events.push(("camera", p.clone()));
            }
        }
        other => tracing::debug!(kind = other, id = row.id, "live feed: unknown row kind"),
    }
    let mut out = String::new();
    let n = events.len();
    for (i, (event, data)) in events.iter().enumerate() {
        frame(&mut out, (i + 1 == n).then_some(row.id), event, data);
    }
    Ok(out)
}

/// Appends one SSE event: `id:` (when given), `event:`, and one `data:` line per line of `data` (a reader
/// joins them back with newlines), then the blank line that dispatches it. CR, LF and CRLF all end a line
/// in SSE, so each becomes a `data:` line of its own.
pub(crate) fn frame(out: &mut String, id: Option<i64>, event: &str, data: &str) {
    use std::fmt::Write;
    if let Some(id) = id {
        let _ = writeln!(out, "id: {id}");
    }
    let _ = writeln!(out, "event: {event}");
    let data = data.replace("\r\n", "\n").replace('\r', "\n");
    for line in data.split('\n') {
        let _ = writeln!(out, "data: {line}");
    }
    out.push('\n');
}

/// A camera as the operations centre sees it: the `/api/cameras` camera JSON.
pub(crate) fn camera_json(
    c: &CameraInfo,
    now: Timestamp,
    cluster: Option<&ClusterSnapshot>,
) -> serde_json::Value {
    serde_json::to_value(super::cameras::CameraJson::of(c, now).placed(cluster)).unwrap_or_default()
}

/// The state of each camera in `cameras`, and on a router where it runs.
fn states(
    cameras: &[CameraInfo],
    cluster: Option<&ClusterSnapshot>,
) -> HashMap<CameraId, (StreamState, Option<Placement>)> {
    cameras
        .iter()
        .map(|c| {
            let placed = cluster.and_then(|s| s.cameras.get(&c.id).cloned());
            (c.id.clone(), (c.health.state(), placed))
        })
        .collect()
}

/// Appends a `camera` row whenever a camera's state changes (not its counters) or it moves to another
/// node, or a reload adds it, once a [`CAMERA_TICK`].
async fn watch_cameras(
    cameras: CameraList,
    cluster: Option<ClusterView>,
    db_path: PathBuf,
    clock: Arc<dyn Clock>,
    mut stopping: watch::Receiver<bool>,
) {
    let snapshot = || cluster.as_ref().map(|v| v.load());
    let mut seen = states(&cameras.load(), snapshot().as_deref());
    let mut store: Option<alert::Store> = None;
    let mut tick = tokio::time::interval(CAMERA_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopping.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let now = clock.now();
        let list = cameras.load();
        let placed = snapshot();
        let states = states(&list, placed.as_deref());
        let changes: Vec<(String, String)> = list
            .iter()
            .filter(|c| seen.get(&c.id) != states.get(&c.id))
            .map(|c| {
                let json = camera_json(c, now, placed.as_deref());
                (c.id.to_string(), json.to_string())
            })
            .collect();
        if changes.is_empty() {
            continue;
        }
        let path = db_path.clone();
        let held = store.take();
        let wrote = tokio::task::spawn_blocking(move || {
            let mut s = match held {
                Some(s) => s,
                None => alert::Store::open(&path)?,
            };
            s.append_camera_feed(now, &changes)?;
            Ok::<_, AlertError>(s)
        })
        .await;
        match wrote {
            Ok(Ok(s)) => {
                store = Some(s);
                seen = states;
            }
            // Tried again at the next tick, with the states of then.
            Ok(Err(e)) => tracing::warn!(error = %e, "live feed: cannot record camera changes"),
            Err(e) => tracing::error!(error = %e, "live feed: camera change writer failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses SSE text as the spec's reader does: fields per line, `data` lines joined with LF, an event
    /// dispatched at a blank line.
    fn parse(text: &str) -> Vec<(Option<String>, String, String)> {
        let mut out = Vec::new();
        let (mut id, mut event, mut data): (Option<String>, String, Vec<String>) =
            (None, String::new(), Vec::new());
        for line in text.split('\n') {
            if line.is_empty() {
                if !data.is_empty() {
                    out.push((id.take(), std::mem::take(&mut event), data.join("\n")));
                }
                data.clear();
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => id = Some(value.into()),
                "event" => event = value.into(),
                "data" => data.push(value.into()),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn multi_line_data_is_one_data_line_per_line_and_reads_back_whole() {
        let mut out = String::new();
        frame(
            &mut out,
            Some(41),
            "alert",
            "first\nsecond\r\nthird\rfourth",
        );
        frame(&mut out, None, "camera", "");
        frame(&mut out, Some(42), "camera", "{\"id\":\"c1\"}");
        assert_eq!(
            out,
            "id: 41\nevent: alert\ndata: first\ndata: second\ndata: third\ndata: fourth\n\n\
             event: camera\ndata: \n\n\
             id: 42\nevent: camera\ndata: {\"id\":\"c1\"}\n\n"
        );
        assert_eq!(
            parse(&out),
            vec![
                (
                    Some("41".into()),
                    "alert".into(),
                    "first\nsecond\nthird\nfourth".into()
                ),
                (None, "camera".into(), "".into()),
                (Some("42".into()), "camera".into(), "{\"id\":\"c1\"}".into()),
            ]
        );
    }

    /// A feed on a fresh database, without cameras, on the test's runtime.
    fn started(db: &std::path::Path) -> (Feed, watch::Sender<bool>, watch::Receiver<bool>) {
        let ctx = ServeContext {
            db_path: db.to_path_buf(),
            snapshots_dir: db.with_file_name("snapshots"),
            cameras: Default::default(),
            clock: Arc::new(crate::types::SystemClock),
            submit: None,
            stats: Default::default(),
        };
        let (stop, stopping) = watch::channel(false);
        let feed = Feed::start(&ctx, stopping.clone(), &tokio::runtime::Handle::current()).unwrap();
        (feed, stop, stopping)
    }

    /// A client that reads nothing while three broadcast buffers of rows go by lags the broadcast; it then
    /// gets every row from the log, in order, once, and its stream ends when the server stops.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_behind_the_broadcast_catches_up_from_the_log_without_a_gap() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = dir.path().join("sw.db");
        let (feed, stop, stopping) = started(&db);
        let (tx, mut rx) = mpsc::channel(STREAM_QUEUE);
        let permit = feed.0.streams.clone().try_acquire_owned().unwrap();
        tokio::spawn(stream(feed.clone(), None, tx, stopping, permit));
        assert_eq!(rx.recv().await.unwrap(), "retry: 2000\n\n");

        let n = 3 * BUFFER as i64;
        tokio::task::spawn_blocking(move || {
            let mut store = alert::Store::open(&db).unwrap();
            for i in 0..n / 64 {
                let rows: Vec<(String, String)> = (0..64)
                    .map(|j| (format!("cam-{i}-{j}"), format!("{{\"n\":{}}}", i * 64 + j)))
                    .collect();
                store.append_camera_feed(Timestamp(1), &rows).unwrap();
            }
        })
        .await
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while *feed.0.sent.lock().unwrap() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "the poller broadcast the rows"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let mut ids = Vec::new();
        while ids.last() != Some(&n) {
            let chunk = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .expect("the stream goes on")
                .expect("the stream is open");
            let text = std::str::from_utf8(&chunk).unwrap();
            for (id, event, data) in parse(text) {
                assert_eq!(event, "camera");
                let id: i64 = id.unwrap().parse().unwrap();
                assert_eq!(data, format!("{{\"n\":{}}}", id - 1));
                ids.push(id);
            }
        }
        let want: Vec<i64> = (1..=n).collect();
        assert!(
            ids == want,
            "{} ids for {n} rows, first wrong at {:?}",
            ids.len(),
            ids.iter().zip(&want).position(|(a, b)| a != b)
        );
        stop.send(true).unwrap();
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            while rx.recv().await.is_some() {}
        });
        assert!(end.await.is_ok(), "the stream ends when the server stops");
    }

    /// Streams that resume while rows keep coming switch from the log to the broadcast without a gap or a
    /// repeat, wherever the switch falls.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_resuming_while_rows_arrive_get_each_row_once() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = dir.path().join("sw.db");
        let (feed, stop, stopping) = started(&db);
        let total = 4000i64;
        let written = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let w = written.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let mut store = alert::Store::open(&db).unwrap();
            for i in 0..total / 20 {
                let rows: Vec<(String, String)> = (0..20)
                    .map(|j| (format!("c{i}-{j}"), "{}".into()))
                    .collect();
                store.append_camera_feed(Timestamp(1), &rows).unwrap();
                w.store((i + 1) * 20, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        // Streams resuming from several points while the writer runs; each reads as fast as it can.
        let mut readers = Vec::new();
        for k in 0..6i64 {
            while written.load(std::sync::atomic::Ordering::SeqCst) < k * 500 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let from = (k * 300).min(written.load(std::sync::atomic::Ordering::SeqCst));
            let (tx, mut rx) = mpsc::channel(STREAM_QUEUE);
            let permit = feed.0.streams.clone().try_acquire_owned().unwrap();
            tokio::spawn(stream(
                feed.clone(),
                Some(from),
                tx,
                stopping.clone(),
                permit,
            ));
            readers.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                while ids.last() != Some(&total) {
                    let Ok(Some(chunk)) =
                        tokio::time::timeout(Duration::from_secs(60), rx.recv()).await
                    else {
                        break;
                    };
                    for (id, _, _) in parse(std::str::from_utf8(&chunk).unwrap()) {
                        ids.push(id.unwrap().parse::<i64>().unwrap());
                    }
                }
                (from, ids)
            }));
        }
        writer.await.unwrap();
        for r in readers {
            let (from, ids) = r.await.unwrap();
            let want: Vec<i64> = (from + 1..=total).collect();
            assert!(
                ids == want,
                "resumed after {from}: {} ids for {} rows, first wrong at {:?}",
                ids.len(),
                want.len(),
                ids.iter().zip(&want).position(|(a, b)| a != b)
            );
        }
        stop.send(true).unwrap();
    }
}
