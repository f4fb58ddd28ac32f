//! Silences over HTTP: `GET /api/silences` (viewer), `POST /api/silences` and `DELETE /api/silences/{id}`
//! (operator). The same rows the CLI's `silence add|list|expire` writes, through the same [`Store`] methods;
//! the router reads them at each notice decision, so a silence made here applies to the next notice.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer, Serialize};

use crate::alert::{AlertError, Matchers, Silence};
use crate::types::{RuleKind, Severity, Timestamp};

use super::alerts::with_store;
use super::auth::Caller;
use super::config::Role;
use super::error::ApiError;
use super::state::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/silences", get(list).post(create))
        .route("/api/silences/{id}", delete(expire))
}

/// Longest silence the API sets: a month covers road works; longer is a mistake, or the CLI's business.
const MAX_SILENCE_MS: i64 = 30 * 86_400_000;
/// How far back `GET /api/silences` shows silences that ended or were expired.
const RECENT_MS: i64 = 7 * 86_400_000;
/// Longest matcher value and comment accepted.
const MAX_VALUE_CHARS: usize = 200;
const MAX_COMMENT_CHARS: usize = 1000;

/// A silence as the API shows it: every matcher field (an empty list matches anything) and its state now.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SilenceJson {
    #[serde(flatten)]
    pub silence: Silence,
    /// active | pending (starts later) | ended | expired (ended by hand)
    pub state: &'static str,
}

impl SilenceJson {
    pub fn of(s: Silence, now: Timestamp) -> Self {
        Self {
            state: s.state(now),
            silence: s,
        }
    }
}

#[derive(Serialize)]
struct SilenceList {
    silences: Vec<SilenceJson>,
}

async fn list(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<SilenceList>, ApiError> {
    caller.require(Role::Viewer, "see silences")?;
    let now = state.ctx.clock.now();
    let rows = with_store(state.ctx.db_path.clone(), move |s| {
        s.silences_ending_since(now.plus_ms(-RECENT_MS))
    })
    .await?;
    Ok(Json(SilenceList {
        silences: rows.into_iter().map(|s| SilenceJson::of(s, now)).collect(),
    }))
}

/// `POST /api/silences` body. Each matcher is a value or a list of values.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSilence {
    matchers: NewMatchers,
    /// From now, at most 720 (30 days). Give this or `ends_at`.
    hours: Option<f64>,
    /// Unix milliseconds.
    ends_at: Option<i64>,
    comment: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct NewMatchers {
    #[serde(deserialize_with = "one_or_many")]
    ward: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    camera: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    rule: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    kind: Vec<String>,
    #[serde(deserialize_with = "one_or_many")]
    severity: Vec<String>,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use serde::de::Error;
    let wrong = || D::Error::custom("expected a string or a list of strings");
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::String(s) => Ok(vec![s]),
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Ok(s),
                _ => Err(wrong()),
            })
            .collect(),
        _ => Err(wrong()),
    }
}

fn invalid(field: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::unprocessable(format!("{field}: {why}"))
}

/// The matchers to store, or a 422 naming the field at fault.
fn check_matchers(m: NewMatchers) -> Result<Matchers, ApiError> {
    let values = |field: &str, vals: Vec<String>| -> Result<Vec<String>, ApiError> {
        let mut out: Vec<String> = Vec::with_capacity(vals.len());
        for v in vals {
            let v = v.trim();
            if v.is_empty() || v.chars().count() > MAX_VALUE_CHARS {
                return Err(invalid(
                    &format!("matchers.{field}"),
                    format!("each value must be 1–{MAX_VALUE_CHARS} characters"),
                ));
            }
            if !out.iter().any(|o| o == v) {
                out.push(v.to_string());
            }
        }
        Ok(out)
    };
    let kind = values("kind", m.kind)?;
    if let Some(k) = kind.iter().find(|k| RuleKind::parse(k).is_none()) {
        return Err(invalid(
            "matchers.kind",
            format!(
                "unknown rule kind {k:?} (one of {})",
                RuleKind::ALL.map(RuleKind::as_str).join(", ")
            ),
        ));
    }
    let severity = values("severity", m.severity)?
        .iter()
        .map(|s| match s.as_str() {
            "info" => Ok(Severity::Info),
            "warning" => Ok(Severity::Warning),
            "critical" => Ok(Severity::Critical),
            _ => Err(invalid(
                "matchers.severity",
                format!("unknown severity {s:?} (info, warning or critical)"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let matchers = Matchers {
        camera: values("camera", m.camera)?,
        ward: values("ward", m.ward)?,
        rule: values("rule", m.rule)?,
        kind,
        severity,
        min_severity: None,
    };
    if matchers == Matchers::default() {
        return Err(invalid(
            "matchers",
            "give at least one of ward, camera, rule, kind or severity; a silence of every alert is refused",
        ));
    }
    Ok(matchers)
}

/// When a new silence ends, or a 422 naming the field at fault.
fn check_end(
    hours: Option<f64>,
    ends_at: Option<i64>,
    now: Timestamp,
) -> Result<Timestamp, ApiError> {
    let max_hours = MAX_SILENCE_MS / 3_600_000;
    match (hours, ends_at) {
        (Some(_), Some(_)) => Err(invalid("hours", "give either hours or ends_at, not both")),
        (None, None) => Err(invalid(
            "hours",
            "say how long: hours (from now) or ends_at (Unix milliseconds)",
        )),
        (Some(h), None) => {
            if !(h > 0.0 && h <= max_hours as f64) {
                return Err(invalid(
                    "hours",
                    format!("must be more than 0 and at most {max_hours} (30 days), found {h}"),
                ));
            }
            Ok(now.plus_ms((h * 3_600_000.0).round().max(1.0) as i64))
        }
        (None, Some(e)) => {
            let end = Timestamp(e);
            if end <= now {
                return Err(invalid(
                    "ends_at",
                    format!("{} is not in the future", end.to_rfc3339()),
                ));
            }
            if end.since(now) > MAX_SILENCE_MS {
                return Err(invalid(
                    "ends_at",
                    format!(
                        "{} is more than 30 days from now; the longest silence is 30 days",
                        end.to_rfc3339()
                    ),
                ));
            }
            Ok(end)
        }
    }
}

fn check_comment(comment: Option<String>) -> Result<String, ApiError> {
    let c = comment.unwrap_or_default();
    let c = c.trim();
    if c.is_empty() {
        return Err(invalid(
            "comment",
            "say why (the next shift must know what is silenced and why)",
        ));
    }
    if c.chars().count() > MAX_COMMENT_CHARS {
        return Err(invalid(
            "comment",
            format!("at most {MAX_COMMENT_CHARS} characters"),
        ));
    }
    Ok(c.to_string())
}

async fn create(
    caller: Caller,
    State(state): State<AppState>,
    body: Result<Json<NewSilence>, JsonRejection>,
) -> Result<(StatusCode, Json<SilenceJson>), ApiError> {
    caller.require(Role::Operator, "create silences")?;
    let Json(body) = body?;
    let matchers = check_matchers(body.matchers)?;
    let now = state.ctx.clock.now();
    let ends_at = check_end(body.hours, body.ends_at, now)?;
    let comment = check_comment(body.comment)?;
    let by = caller.name.clone();
    // The store's own checks (matchers, order) answer 422; they cannot fail after the ones above.
    let silence = with_store(state.ctx.db_path.clone(), move |s| {
        let id = match s.add_silence(&matchers, now, ends_at, &by, &comment, now) {
            Ok(id) => id,
            Err(AlertError::Invalid(m)) => return Ok(Err(ApiError::unprocessable(m))),
            Err(e) => return Err(e),
        };
        Ok(s.silence(id)?
            .ok_or_else(|| ApiError::internal(format!("silence {id} vanished after it was made"))))
    })
    .await??;
    tracing::info!(id = silence.id, by = %caller.name, until = %ends_at.to_rfc3339(), "silence created");
    Ok((StatusCode::CREATED, Json(SilenceJson::of(silence, now))))
}

async fn expire(
    caller: Caller,
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<SilenceJson>, ApiError> {
    caller.require(Role::Operator, "expire silences")?;
    let Path(id) = id?;
    let now = state.ctx.clock.now();
    // Ok(Err(_)): the silence's state refuses it (404, 409); Err(_): the database failed.
    let silence = with_store(state.ctx.db_path.clone(), move |s| {
        let Some(before) = s.silence(id)? else {
            return Ok(Err(ApiError::not_found(format!("no silence {id}"))));
        };
        if let Some(at) = before.expired_at {
            return Ok(Err(ApiError::conflict(format!(
                "silence {id} was already expired at {}",
                at.to_rfc3339()
            ))));
        }
        if before.ends_at <= now {
            return Ok(Err(ApiError::conflict(format!(
                "silence {id} already ended at {}",
                before.ends_at.to_rfc3339()
            ))));
        }
        match s.expire_silence(id, now) {
            Ok(()) => {}
            // Expired by someone else since it was read.
            Err(AlertError::Invalid(_)) => {
                return Ok(Err(ApiError::conflict(format!(
                    "silence {id} was already expired"
                ))));
            }
            Err(e) => return Err(e),
        }
        Ok(s.silence(id)?
            .ok_or_else(|| ApiError::internal(format!("silence {id} vanished as it was expired"))))
    })
    .await??;
    tracing::info!(id, by = %caller.name, "silence expired");
    Ok(Json(SilenceJson::of(silence, now)))
}
