//! Incidents: the filtered, paged list and one incident, each with its alert's id and snapshot link.

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use serde::Serialize;

use crate::store::{IncidentFilter, IncidentPosition, IncidentRow, Store};

use super::alerts::{
    bool_param, clip, decode_cursor, encode_cursor, limit_param, next_cursor, query_params,
};
use super::auth::Caller;
use super::config::Role;
use super::error::ApiError;
use super::state::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/incidents", get(list))
        // The id is the incident key, `camera/rule/zone/episode`: its slashes may come as they are or as %2F.
        .route("/api/incidents/{*id}", get(one))
}

/// An incident as the API shows it (the snapshot as its link, never its path on the server).
#[derive(Serialize)]
struct IncidentView {
    id: String,
    camera: String,
    camera_name: String,
    ward: String,
    rule: String,
    zone: String,
    kind: String,
    severity: String,
    open: bool,
    opened_at: i64,
    updated_at: i64,
    closed_at: Option<i64>,
    count: u32,
    summary: String,
    /// The alert the router made of it, if it has one yet.
    alert_id: Option<i64>,
    snapshot_url: Option<String>,
}

#[derive(Serialize)]
struct IncidentPage {
    incidents: Vec<IncidentView>,
    next_cursor: Option<String>,
}

/// Reads incidents with `f`, and their alerts' ids and snapshot links, off the async threads.
async fn read(
    state: &AppState,
    f: impl FnOnce(&Store) -> Result<Vec<IncidentRow>, crate::store::StoreError> + Send + 'static,
) -> Result<Vec<IncidentView>, ApiError> {
    let db = state.ctx.db_path.clone();
    tokio::task::spawn_blocking(move || -> Result<Vec<IncidentView>, ApiError> {
        let rows = f(&Store::open(&db).map_err(ApiError::internal)?).map_err(ApiError::internal)?;
        let keys: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let mut links: HashMap<String, (i64, Option<String>)> = crate::alert::Store::open(&db)
            .and_then(|s| s.alert_links(&keys))
            .map_err(ApiError::internal)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let (alert_id, snapshot_url) = links.remove(&r.id).unzip();
                IncidentView {
                    open: r.closed_at.is_none(),
                    id: r.id,
                    camera: r.camera,
                    camera_name: r.camera_name,
                    ward: r.ward,
                    rule: r.rule,
                    zone: r.zone,
                    kind: r.kind,
                    severity: r.severity,
                    opened_at: r.opened_at,
                    updated_at: r.updated_at,
                    closed_at: r.closed_at,
                    count: r.count,
                    summary: r.summary,
                    alert_id,
                    snapshot_url: snapshot_url.flatten(),
                }
            })
            .collect())
    })
    .await
    .map_err(ApiError::internal)?
}

const LIST_PARAMS: &[&str] = &["camera", "kind", "open", "cursor", "limit"];

async fn list(
    caller: Caller,
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<IncidentPage>, ApiError> {
    caller.require(Role::Viewer, "read incidents")?;
    let p = query_params(raw.as_deref(), LIST_PARAMS)?;
    let filter = IncidentFilter {
        camera: p.get("camera").cloned(),
        kind: p.get("kind").cloned(),
        open: bool_param(&p, "open")?,
    };
    let after = p
        .get("cursor")
        .map(|c| decode_cursor(c).map(|(opened_at, id)| IncidentPosition { opened_at, id }))
        .transpose()?;
    let limit = limit_param(&p)?;
    let mut incidents = read(&state, move |s| {
        s.incident_page(&filter, after.as_ref(), limit + 1)
    })
    .await?;
    let next_cursor = next_cursor(&mut incidents, limit, |i| encode_cursor(i.opened_at, &i.id));
    Ok(Json(IncidentPage {
        incidents,
        next_cursor,
    }))
}

async fn one(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<IncidentView>, ApiError> {
    caller.require(Role::Viewer, "read incidents")?;
    let Path(id) = path?;
    let wanted = id.clone();
    read(&state, move |s| {
        Ok(s.incident(&wanted)?.into_iter().collect())
    })
    .await?
    .pop()
    .map(Json)
    .ok_or_else(|| ApiError::not_found(format!("no incident `{}`", clip(&id))))
}
