//! Alerts: the filtered, paged list (each alert with its deliveries), one alert, its deliveries and its
//! handling history; acknowledging and resolving; and the snapshot behind an alert's `/s/<token>` link.

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::alert::{
    AlertAction, AlertError, AlertFilter, AlertPosition, AlertView, HANDLING_STATES, Handled,
    Handling, Store,
};
use crate::types::{IncidentEvent, IncidentKey, IncidentPhase, RuleKind, Severity, Timestamp};

use super::auth::Caller;
use super::config::Role;
use super::error::ApiError;
use super::state::{AppState, ServeContext};

/// Alerts per page when the request does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// Most alerts (or incidents) one page may hold.
pub const MAX_LIMIT: usize = 500;
/// Longest note on an acknowledgement or a resolution, in characters.
pub const MAX_NOTE_CHARS: usize = 1000;
/// The rule family of citizen reports: resolving such an alert closes its incident.
pub const CITIZEN_REPORT_KIND: &str = "citizen_report";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/alerts", get(list))
        .route("/api/alerts/{id}", get(one))
        .route("/api/alerts/{id}/deliveries", get(deliveries))
        .route("/api/alerts/{id}/actions", get(actions))
        .route("/api/alerts/{id}/ack", post(acknowledge))
        .route("/api/alerts/{id}/resolve", post(resolve))
        .route("/s/{token}", get(snapshot))
}

// ---- query strings, shared with the incident list ----

/// The query string's parameters. Each may be given once, and only those in `known` (a misspelt filter
/// would otherwise be ignored and the page would show what was not asked for). An empty value is no
/// condition, as an HTML form sends an unset field.
pub(super) fn query_params(
    raw: Option<&str>,
    known: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    let mut out = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if !known.contains(&k.as_ref()) {
            return Err(ApiError::bad_request(format!(
                "unknown parameter `{}`; known: {}",
                clip(&k),
                known.join(", ")
            )));
        }
        if !seen.insert(k.to_string()) {
            return Err(ApiError::bad_request(format!(
                "parameter `{}` is given twice",
                clip(&k)
            )));
        }
        if !v.is_empty() {
            out.insert(k.into_owned(), v.into_owned());
        }
    }
    Ok(out)
}

/// At most 64 characters of what a client sent, for an error message.
pub(super) fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// `limit`: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
pub(super) fn limit_param(p: &HashMap<String, String>) -> Result<usize, ApiError> {
    let Some(v) = p.get("limit") else {
        return Ok(DEFAULT_LIMIT);
    };
    match v.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "limit must be a whole number from 1 to {MAX_LIMIT}, found `{}`",
            clip(v)
        ))),
    }
}

/// A true/false parameter (`1`/`0` also accepted).
pub(super) fn bool_param(
    p: &HashMap<String, String>,
    name: &str,
) -> Result<Option<bool>, ApiError> {
    p.get(name)
        .map(|v| match v.as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(ApiError::bad_request(format!(
                "{name} must be true or false, found `{}`",
                clip(v)
            ))),
        })
        .transpose()
}

fn time_param(p: &HashMap<String, String>, name: &str) -> Result<Option<Timestamp>, ApiError> {
    p.get(name)
        .map(|v| {
            v.parse::<i64>().map(Timestamp).map_err(|_| {
                ApiError::bad_request(format!(
                    "{name} must be a time in Unix milliseconds, found `{}`",
                    clip(v)
                ))
            })
        })
        .transpose()
}

fn one_of(
    p: &HashMap<String, String>,
    name: &str,
    allowed: &[&str],
) -> Result<Option<String>, ApiError> {
    match p.get(name) {
        Some(v) if !allowed.contains(&v.as_str()) => Err(ApiError::bad_request(format!(
            "{name} must be one of {}, found `{}`",
            allowed.join(", "),
            clip(v)
        ))),
        v => Ok(v.cloned()),
    }
}

/// A page cursor: `number:text` (the sort position), hex-encoded so clients treat it as opaque.
pub(super) fn encode_cursor(number: i64, text: &str) -> String {
    hex::encode(format!("{number}:{text}"))
}

/// The position a cursor from [`encode_cursor`] holds; a 400 naming `cursor` for anything else.
pub(super) fn decode_cursor(cursor: &str) -> Result<(i64, String), ApiError> {
    let bad = || ApiError::bad_request("cursor is not one this server gave out");
    let bytes = hex::decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (n, rest) = text.split_once(':').ok_or_else(bad)?;
    Ok((n.parse().map_err(|_| bad())?, rest.to_string()))
}

/// Cuts a page read with one row more than `limit` back to `limit`; the cursor of its last row when the
/// extra row shows another page follows.
pub(super) fn next_cursor<T>(
    rows: &mut Vec<T>,
    limit: usize,
    cursor: impl Fn(&T) -> String,
) -> Option<String> {
    if rows.len() <= limit {
        return None;
    }
    rows.truncate(limit);
    rows.last().map(cursor)
}

/// Runs blocking alert-table work off the async threads. Each blocking thread keeps its connection (one per
/// database file) for the next request it serves, so a request does not pay for opening the file and
/// checking the schema; the connection goes when the idle thread ends. No lock is held across an await.
pub(super) async fn with_store<T: Send + 'static>(
    db: PathBuf,
    f: impl FnOnce(&mut Store) -> Result<T, AlertError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || {
        thread_local! {
            static STORES: std::cell::RefCell<HashMap<PathBuf, Store>> = Default::default();
        }
        STORES.with(|stores| {
            let mut stores = stores.borrow_mut();
            let store = match stores.entry(db) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let store = Store::open(e.key())?;
                    e.insert(store)
                }
            };
            f(store)
        })
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)
}

// ---- reading ----

const LIST_PARAMS: &[&str] = &[
    "ward", "camera", "rule", "kind", "severity", "state", "firing", "since", "until", "cursor",
    "limit",
];
const SEVERITIES: &[&str] = &["info", "warning", "critical"];

#[derive(Serialize)]
struct AlertPage {
    alerts: Vec<AlertView>,
    next_cursor: Option<String>,
}

async fn list(
    caller: Caller,
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<AlertPage>, ApiError> {
    caller.require(Role::Viewer, "read alerts")?;
    let p = query_params(raw.as_deref(), LIST_PARAMS)?;
    let filter = AlertFilter {
        ward: p.get("ward").cloned(),
        camera: p.get("camera").cloned(),
        rule: p.get("rule").cloned(),
        kind: p.get("kind").cloned(),
        severity: one_of(&p, "severity", SEVERITIES)?,
        state: one_of(&p, "state", &HANDLING_STATES)?,
        firing: bool_param(&p, "firing")?,
        since: time_param(&p, "since")?,
        until: time_param(&p, "until")?,
    };
    let after = p
        .get("cursor")
        .map(|c| {
            let (started_at, id) = decode_cursor(c)?;
            let id = id
                .parse()
                .map_err(|_| ApiError::bad_request("cursor is not one this server gave out"))?;
            Ok::<_, ApiError>(AlertPosition { started_at, id })
        })
        .transpose()?;
    let limit = limit_param(&p)?;
    // One more than asked shows whether another page follows.
    let mut alerts = with_store(state.ctx.db_path.clone(), move |s| {
        s.alert_page(&filter, after, limit + 1)
    })
    .await?;
    let next_cursor = next_cursor(&mut alerts, limit, |a| {
        encode_cursor(a.started_at.0, &a.id.to_string())
    });
    Ok(Json(AlertPage {
        alerts,
        next_cursor,
    }))
}

fn no_alert(id: i64) -> ApiError {
    ApiError::not_found(format!("no alert {id}"))
}

async fn one(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Json<AlertView>, ApiError> {
    caller.require(Role::Viewer, "read alerts")?;
    let Path(id) = path?;
    with_store(state.ctx.db_path.clone(), move |s| s.alert_view(id))
        .await?
        .map(Json)
        .ok_or_else(|| no_alert(id))
}

/// A delivery of an alert in full; `target` (a phone number, an address, a URL) only for operators.
#[derive(Serialize)]
struct DeliveryDetail {
    id: i64,
    notice_id: i64,
    receiver: String,
    channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    state: String,
    attempts: i64,
    segments: Option<i64>,
    created_at: Timestamp,
    updated_at: Timestamp,
    next_attempt_at: Timestamp,
    last_error: Option<String>,
    possible_duplicates: i64,
}

async fn deliveries(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer, "read deliveries")?;
    let Path(id) = path?;
    let rows = with_store(state.ctx.db_path.clone(), move |s| s.alert_deliveries(id))
        .await?
        .ok_or_else(|| no_alert(id))?;
    let operator = caller.role == Role::Operator;
    let out: Vec<DeliveryDetail> = rows
        .into_iter()
        .map(|d| DeliveryDetail {
            id: d.id,
            notice_id: d.notice_id,
            receiver: d.receiver,
            channel: d.channel,
            target: operator.then_some(d.target),
            state: d.state,
            attempts: d.attempts,
            segments: d.segments,
            created_at: d.created_at,
            updated_at: d.updated_at,
            next_attempt_at: d.next_attempt_at,
            last_error: d.last_error,
            possible_duplicates: d.possible_duplicates,
        })
        .collect();
    Ok(Json(serde_json::json!({ "deliveries": out })))
}

async fn actions(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Viewer, "read alerts")?;
    let Path(id) = path?;
    let rows: Vec<AlertAction> =
        with_store(state.ctx.db_path.clone(), move |s| s.alert_actions(id))
            .await?
            .ok_or_else(|| no_alert(id))?;
    Ok(Json(serde_json::json!({ "actions": rows })))
}

// ---- handling ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    #[serde(default)]
    note: Option<String>,
}

/// The note of an acknowledgement (optional) or a resolution (required): an empty body is no note;
/// unreadable JSON is a 400, JSON of the wrong shape or a note out of bounds a 422.
fn note_from_body(body: &[u8], required: bool) -> Result<Option<String>, ApiError> {
    let note = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let parsed: NoteBody = serde_json::from_slice(body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => {
                ApiError::unprocessable(format!("the body must be {{\"note\": \"…\"}}: {e}"))
            }
            _ => ApiError::bad_request(format!("the body is not valid JSON: {e}")),
        })?;
        parsed.note
    };
    let note = note.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
    match &note {
        None if required => Err(ApiError::unprocessable(
            "a resolution needs a note (1 to 1000 characters): {\"note\": \"…\"}",
        )),
        Some(n) if n.chars().count() > MAX_NOTE_CHARS => Err(ApiError::unprocessable(format!(
            "the note is {} characters; at most {MAX_NOTE_CHARS}",
            n.chars().count()
        ))),
        _ => Ok(note),
    }
}

async fn acknowledge(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
    body: Bytes,
) -> Result<Json<AlertView>, ApiError> {
    caller.require(Role::Operator, "acknowledge alerts")?;
    let Path(id) = path?;
    let note = note_from_body(&body, false)?;
    change(&state, &caller, id, Handling::Acknowledge, note).await
}

async fn resolve(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<i64>, PathRejection>,
    body: Bytes,
) -> Result<Json<AlertView>, ApiError> {
    caller.require(Role::Operator, "resolve alerts")?;
    let Path(id) = path?;
    let note = note_from_body(&body, true)?;
    let alert = change(&state, &caller, id, Handling::Resolve, note).await?;
    close_resolved_report(&state.ctx, &alert).await;
    Ok(alert)
}

async fn change(
    state: &AppState,
    caller: &Caller,
    id: i64,
    action: Handling,
    note: Option<String>,
) -> Result<Json<AlertView>, ApiError> {
    let actor = caller.name.clone();
    let now = state.ctx.clock.now();
    let outcome = with_store(state.ctx.db_path.clone(), move |s| {
        s.handle_alert(id, action, &actor, note.as_deref(), now)
    })
    .await?;
    match outcome {
        Handled::Done(alert) => {
            tracing::info!(alert = id, key = %alert.key, by = %caller.name, "alert {}", action.target());
            Ok(Json(*alert))
        }
        Handled::NotFound => Err(no_alert(id)),
        Handled::Refused { state } => {
            Err(ApiError::conflict(format!("alert {id} is already {state}")))
        }
    }
}

/// A citizen report has no camera to see it end: when an operator resolves its alert, its incident is
/// closed through the incident sink (recorded, then routed like a camera's close). The resolution stands
/// if the sink cannot take the close; the incident then stays open until retention or a later close.
async fn close_resolved_report(ctx: &ServeContext, alert: &AlertView) {
    if alert.kind != CITIZEN_REPORT_KIND || !alert.firing {
        return;
    }
    let Some(submit) = ctx.submit.clone() else {
        return;
    };
    let Some(event) = closing_event(alert, ctx.clock.now()) else {
        tracing::warn!(key = %alert.key, "resolved citizen report: its incident key cannot be read back; not closed");
        return;
    };
    let key = alert.key.clone();
    match tokio::task::spawn_blocking(move || submit(event)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(%key, error = %e, "resolved citizen report: its incident was not closed")
        }
        Err(e) => tracing::error!(%key, error = %e, "resolved citizen report: closing failed"),
    }
}

/// The event that closes `alert`'s incident at `at`. The key comes from the alert's camera, rule and zone
/// columns and the episode at the key's end, and must spell the stored key again (ids may hold `/`).
pub fn closing_event(alert: &AlertView, at: Timestamp) -> Option<IncidentEvent> {
    let key = IncidentKey::read_back(&alert.key, &alert.camera, &alert.rule, &alert.zone)?;
    let label = |s: &str| serde_json::Value::String(s.to_string());
    let kind: RuleKind = serde_json::from_value(label(&alert.kind)).ok()?;
    let severity: Severity = serde_json::from_value(label(&alert.severity)).ok()?;
    Some(IncidentEvent {
        key,
        phase: IncidentPhase::Closed,
        at,
        kind,
        severity,
        camera_name: alert.camera_name.clone(),
        ward: alert.ward.clone(),
        summary: alert.summary.clone(),
        count: u32::try_from(alert.count).unwrap_or(0),
        snapshot: None,
    })
}

// ---- snapshots ----

/// `GET /s/{token}`: the snapshot of the alert whose link token this is. The file is the one the alert's
/// row names, and only if it lies inside the snapshot folder (after resolving links and `..`).
async fn snapshot(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let not_found = || ApiError::not_found("no such snapshot").into_response();
    if token.is_empty() || token.len() > 128 || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return not_found();
    }
    let db = state.ctx.db_path.clone();
    let dir = state.ctx.snapshots_dir.clone();
    let found = tokio::task::spawn_blocking(move || {
        let stored = Store::open(&db)?.snapshot_by_token(&token)?;
        Ok::<_, AlertError>(stored.and_then(|s| read_inside(&dir, FsPath::new(&s))))
    })
    .await;
    let bytes = match found {
        Ok(Ok(Some(b))) => b,
        Ok(Ok(None)) => return not_found(),
        Ok(Err(e)) => return ApiError::internal(e).into_response(),
        Err(e) => return ApiError::internal(e).into_response(),
    };
    // Citizen reports' photos may be PNG; camera snapshots are JPEG.
    let kind = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else {
        "image/jpeg"
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=3600"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        bytes,
    )
        .into_response()
}

/// The bytes of `file` if it is a regular file inside `dir`.
fn read_inside(dir: &FsPath, file: &FsPath) -> Option<Vec<u8>> {
    let dir = dir.canonicalize().ok()?;
    let file = file.canonicalize().ok()?;
    if !file.starts_with(&dir) || !file.is_file() {
        return None;
    }
    std::fs::read(file).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(key: &str, camera: &str, rule: &str, zone: &str, kind: &str) -> AlertView {
        AlertView {
            id: 1,
            key: key.into(),
            camera: camera.into(),
            camera_name: "Cổng chợ".into(),
            ward: "Bến Thành".into(),
            rule: rule.into(),
            zone: zone.into(),
            kind: kind.into(),
            severity: "warning".into(),
            firing: true,
            state: "resolved".into(),
            started_at: Timestamp(5),
            updated_at: Timestamp(5),
            ended_at: None,
            summary: "s".into(),
            count: 3,
            snapshot_url: None,
            acknowledged_by: None,
            acknowledged_at: None,
            resolved_by: None,
            resolved_at: None,
            resolution_note: None,
            deliveries: Vec::new(),
        }
    }

    #[test]
    fn the_closing_event_names_the_same_incident() {
        let a = alert(
            "cam/a/b/crowd/plaza/1700",
            "cam/a/b",
            "crowd",
            "plaza",
            "crowding",
        );
        let ev = closing_event(&a, Timestamp(9000)).unwrap();
        assert_eq!(ev.key.to_string(), "cam/a/b/crowd/plaza/1700");
        assert_eq!(ev.key.camera.as_str(), "cam/a/b");
        assert_eq!(ev.key.episode, Timestamp(1700));
        assert_eq!((ev.phase, ev.at), (IncidentPhase::Closed, Timestamp(9000)));
        assert_eq!(
            (ev.kind, ev.severity),
            (RuleKind::Crowding, Severity::Warning)
        );
        // A key that the columns do not spell is not guessed at.
        let b = alert("cam/crowd/other/1700", "cam", "crowd", "plaza", "crowding");
        assert!(closing_event(&b, Timestamp(9000)).is_none());
        let c = alert("cam/crowd/plaza/x", "cam", "crowd", "plaza", "crowding");
        assert!(closing_event(&c, Timestamp(9000)).is_none());
    }

    #[test]
    fn cursors_round_trip_and_reject_forgeries() {
        let c = encode_cursor(-5, "a:b/c");
        assert_eq!(decode_cursor(&c).unwrap(), (-5, "a:b/c".to_string()));
        for bad in [
            "",
            "zz",
            "00",
            &hex::encode("x:1"),
            &hex::encode([0xff, 0xfe]),
        ] {
            assert_eq!(
                decode_cursor(bad).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }

    #[test]
    fn notes_are_bounded() {
        assert_eq!(note_from_body(b"", false).unwrap(), None);
        assert_eq!(note_from_body(b" {} ", false).unwrap(), None);
        assert_eq!(
            note_from_body(br#"{"note":" on it "}"#, true)
                .unwrap()
                .as_deref(),
            Some("on it")
        );
        let status = |b: &[u8], req| note_from_body(b, req).unwrap_err().status;
        assert_eq!(status(b"", true), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            status(br#"{"note":"  "}"#, true),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            status(br#"{"note":5}"#, false),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            status(br#"{"nots":"x"}"#, false),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(status(b"{\"note\":", true), StatusCode::BAD_REQUEST);
        let long = format!(r#"{{"note":"{}"}}"#, "ư".repeat(1001));
        assert_eq!(
            status(long.as_bytes(), true),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let max = format!(r#"{{"note":"{}"}}"#, "ư".repeat(1000));
        assert!(note_from_body(max.as_bytes(), true).is_ok());
    }
}
