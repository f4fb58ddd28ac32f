//! The operations centre's side of the alert tables: alerts as the API shows them (with their deliveries),
//! filtered and paged newest first; acknowledging and resolving, each recorded in `alert_actions`; snapshot
//! links.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, ToSql, params};
use serde::Serialize;

use crate::types::Timestamp;

use super::super::error::AlertError;
use super::{DELIVERY_COLUMNS, DeliveryRow, Store, delivery_from_row};

/// The operations centre's handling states of an alert, in the order an alert goes through them.
pub const HANDLING_STATES: [&str; 3] = ["new", "acknowledged", "resolved"];

/// Which alerts a page holds; `None` places no condition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertFilter {
    pub ward: Option<String>,
    pub camera: Option<String>,
    pub rule: Option<String>,
    pub kind: Option<String>,
    pub severity: Option<String>,
    /// Handling state: new | acknowledged | resolved.
    pub state: Option<String>,
    /// Still firing (the incident has not closed) or not.
    pub firing: Option<bool>,
    /// Alerts that started at or after this instant.
    pub since: Option<Timestamp>,
    /// Alerts that started before this instant.
    pub until: Option<Timestamp>,
}

/// A place in the newest-first order (started_at desc, id desc): a page after it holds only alerts that
/// come later in that order, so pages neither repeat nor skip an alert while new ones arrive (they sort
/// before any page already read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertPosition {
    pub started_at: i64,
    pub id: i64,
}

/// One delivery of an alert, as the alert list shows it (without its target: a phone number or address).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AlertDelivery {
    pub id: i64,
    pub receiver: String,
    pub channel: String,
    pub state: String,
    pub attempts: i64,
    pub updated_at: Timestamp,
    pub last_error: Option<String>,
}

/// An alert as the API and the live feed show it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AlertView {
    /// The row's id: short, for URLs.
    pub id: i64,
    /// The incident key, `camera/rule/zone/episode`.
    pub key: String,
    pub camera: String,
    pub camera_name: String,
    pub ward: String,
    pub rule: String,
    pub zone: String,
    pub kind: String,
    pub severity: String,
    pub firing: bool,
    /// Handling: new | acknowledged | resolved.
    pub state: String,
    pub started_at: Timestamp,
    pub updated_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub summary: String,
    pub count: i64,
    /// `/s/<token>`: the snapshot's capability link, when the incident has a snapshot.
    pub snapshot_url: Option<String>,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<Timestamp>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<Timestamp>,
    pub resolution_note: Option<String>,
    /// Deliveries of the notices that carried this alert, oldest first.
    pub deliveries: Vec<AlertDelivery>,
}

/// One change of an alert's handling: who, when, what.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AlertAction {
    pub id: i64,
    pub at: Timestamp,
    pub actor: String,
    /// acknowledged | resolved
    pub action: String,
    pub note: Option<String>,
}

/// What an operator does to an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handling {
    /// new → acknowledged.
    Acknowledge,
    /// new or acknowledged → resolved.
    Resolve,
}

impl Handling {
    /// The state it leads to, which is also the action's name in `alert_actions`.
    pub fn target(self) -> &'static str {
        match self {
            Handling::Acknowledge => "acknowledged",
            Handling::Resolve => "resolved",
        }
    }

    fn allowed_from(self, state: &str) -> bool {
        match self {
            Handling::Acknowledge => state == "new",
            Handling::Resolve => matches!(state, "new" | "acknowledged"),
        }
    }
}

/// What [`Store::handle_alert`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Handled {
    /// Changed, and recorded; the alert as it is now.
    Done(Box<AlertView>),
    /// No alert has that id.
    NotFound,
    /// The alert's state does not allow it (already acknowledged or resolved): nothing changed.
    Refused { state: String },
}

const VIEW_COLUMNS: &str = "rowid, key, camera, camera_name, ward, rule, zone, kind, severity, started_at, \
     updated_at, ended_at, summary, count, snapshot_token, handling, acknowledged_by, acknowledged_at, \
     resolved_by, resolved_at, resolution_note";

fn view_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlertView> {
    let ended_at: Option<i64> = r.get(11)?;
    let token: Option<String> = r.get(14)?;
    Ok(AlertView {
        id: r.get(0)?,
        key: r.get(1)?,
        camera: r.get(2)?,
        camera_name: r.get(3)?,
        ward: r.get(4)?,
        rule: r.get(5)?,
        zone: r.get(6)?,
        kind: r.get(7)?,
        severity: r.get(8)?,
        firing: ended_at.is_none(),
        started_at: Timestamp(r.get(9)?),
        updated_at: Timestamp(r.get(10)?),
        ended_at: ended_at.map(Timestamp),
        summary: r.get(12)?,
        count: r.get(13)?,
        snapshot_url: token.map(|t| format!("/s/{t}")),
        state: r.get(15)?,
        acknowledged_by: r.get(16)?,
        acknowledged_at: r.get::<_, Option<i64>>(17)?.map(Timestamp),
        resolved_by: r.get(18)?,
        resolved_at: r.get::<_, Option<i64>>(19)?.map(Timestamp),
        resolution_note: r.get(20)?,
        deliveries: Vec::new(),
    })
}

/// Alerts matching `conds` (SQL conditions on alert_alerts, `?` parameters bound from `args` in order),
/// newest first, at most `limit`, each with its deliveries (one query for all of them).
fn select_views(
    conn: &Connection,
    conds: &[&str],
    args: &[&dyn ToSql],
    limit: Option<usize>,
) -> Result<Vec<AlertView>, AlertError> {
    let mut sql = format!("SELECT {VIEW_COLUMNS} FROM alert_alerts");
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(" ORDER BY started_at DESC, rowid DESC");
    if let Some(n) = limit {
        sql.push_str(&format!(" LIMIT {}", n.min(i64::MAX as usize)));
    }
    let mut views: Vec<AlertView> = conn
        .prepare_cached(&sql)?
        .query_map(args, view_from_row)?
        .collect::<Result<_, _>>()?;
    attach_deliveries(conn, &mut views)?;
    Ok(views)
}

/// Fills in each alert's deliveries: those of every notice that carried it (`alert_notice_alerts`).
fn attach_deliveries(conn: &Connection, views: &mut [AlertView]) -> Result<(), AlertError> {
    if views.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = views.iter().map(|v| v.key.as_str()).collect();
    let keys = serde_json::to_string(&keys).map_err(|e| AlertError::Db(e.to_string()))?;
    let mut by_key: HashMap<String, Vec<AlertDelivery>> = HashMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT na.alert_key, d.id, d.receiver, d.channel, d.state, d.attempts, d.updated_at, d.last_error \
         FROM alert_notice_alerts na JOIN alert_deliveries d ON d.notice_id = na.notice_id \
         WHERE na.alert_key IN (SELECT value FROM json_each(?1)) ORDER BY d.id",
    )?;
    let rows = stmt.query_map([keys], |r| {
        Ok((
            r.get::<_, String>(0)?,
            AlertDelivery {
                id: r.get(1)?,
                receiver: r.get(2)?,
                channel: r.get(3)?,
                state: r.get(4)?,
                attempts: r.get(5)?,
                updated_at: Timestamp(r.get(6)?),
                last_error: r.get(7)?,
            },
        ))
    })?;
    for row in rows {
        let (key, d) = row?;
        by_key.entry(key).or_default().push(d);
    }
    for v in views.iter_mut() {
        v.deliveries = by_key.remove(&v.key).unwrap_or_default();
    }
    Ok(())
}

fn view_by_id(conn: &Connection, id: i64) -> Result<Option<AlertView>, AlertError> {
    Ok(select_views(conn, &["rowid = ?"], &[&id], Some(1))?.pop())
}

impl Store {
    /// One page of alerts matching `filter`, newest first (started_at desc, id desc), after `after` (from
    /// the newest when `None`), at most `limit`.
    pub fn alert_page(
        &self,
        filter: &AlertFilter,
        after: Option<AlertPosition>,
        limit: usize,
    ) -> Result<Vec<AlertView>, AlertError> {
        let mut conds: Vec<&str> = Vec::new();
        let mut args: Vec<&dyn ToSql> = Vec::new();
        for (column, value) in [
            ("ward = ?", &filter.ward),
            ("camera = ?", &filter.camera),
            ("rule = ?", &filter.rule),
            ("kind = ?", &filter.kind),
            ("severity = ?", &filter.severity),
            ("handling = ?", &filter.state),
        ] {
            if let Some(v) = value {
                conds.push(column);
                args.push(v);
            }
        }
        match filter.firing {
            Some(true) => conds.push("ended_at IS NULL"),
            Some(false) => conds.push("ended_at IS NOT NULL"),
            None => {}
        }
        if let Some(t) = &filter.since {
            conds.push("started_at >= ?");
            args.push(&t.0);
        }
        if let Some(t) = &filter.until {
            conds.push("started_at < ?");
            args.push(&t.0);
        }
        if let Some(p) = &after {
            conds.push("(started_at, rowid) < (?, ?)");
            args.push(&p.started_at);
            args.push(&p.id);
        }
        select_views(&self.conn, &conds, &args, Some(limit))
    }

    /// The alert with row id `id`.
    pub fn alert_view(&self, id: i64) -> Result<Option<AlertView>, AlertError> {
        view_by_id(&self.conn, id)
    }

    /// The alerts with these incident keys (those that exist), newest first: for the live feed.
    pub fn alert_views_by_key(&self, keys: &[String]) -> Result<Vec<AlertView>, AlertError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = serde_json::to_string(keys).map_err(|e| AlertError::Db(e.to_string()))?;
        select_views(
            &self.conn,
            &["key IN (SELECT value FROM json_each(?))"],
            &[&keys],
            None,
        )
    }

    /// Every delivery of the notices that carried alert `id`, oldest first; `None` when there is no such
    /// alert. Rows include the target: show it only to those allowed to see it.
    pub fn alert_deliveries(&self, id: i64) -> Result<Option<Vec<DeliveryRow>>, AlertError> {
        let Some(key) = self.alert_key(id)? else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries WHERE notice_id IN \
             (SELECT notice_id FROM alert_notice_alerts WHERE alert_key = ?1) ORDER BY id"
        );
        let rows = self
            .conn
            .prepare_cached(&sql)?
            .query_map([key], delivery_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(Some(rows))
    }

    /// Every handling change of alert `id`, oldest first; `None` when there is no such alert.
    pub fn alert_actions(&self, id: i64) -> Result<Option<Vec<AlertAction>>, AlertError> {
        let Some(key) = self.alert_key(id)? else {
            return Ok(None);
        };
        let rows = self
            .conn
            .prepare_cached(
                "SELECT id, at, actor, action, note FROM alert_actions WHERE alert_key = ?1 ORDER BY at, id",
            )?
            .query_map([key], |r| {
                Ok(AlertAction {
                    id: r.get(0)?,
                    at: Timestamp(r.get(1)?),
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    note: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Some(rows))
    }

    fn alert_key(&self, id: i64) -> Result<Option<String>, AlertError> {
        Ok(self
            .conn
            .query_row("SELECT key FROM alert_alerts WHERE rowid = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Acknowledges or resolves alert `id` as `actor` at `now`: the handling columns and the `alert_actions`
    /// row commit together, in one IMMEDIATE transaction, so two operators acting at once cannot both
    /// succeed and no change goes unrecorded.
    pub fn handle_alert(
        &mut self,
        id: i64,
        action: Handling,
        actor: &str,
        note: Option<&str>,
        now: Timestamp,
    ) -> Result<Handled, AlertError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let current: Option<(String, String)> = tx
            .query_row(
                "SELECT key, handling FROM alert_alerts WHERE rowid = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((key, state)) = current else {
            return Ok(Handled::NotFound);
        };
        if !action.allowed_from(&state) {
            return Ok(Handled::Refused { state });
        }
        match action {
            Handling::Acknowledge => tx.execute(
                "UPDATE alert_alerts SET handling = 'acknowledged', acknowledged_by = ?2, acknowledged_at = ?3 \
                 WHERE rowid = ?1",
                params![id, actor, now.0],
            )?,
            Handling::Resolve => tx.execute(
                "UPDATE alert_alerts SET handling = 'resolved', resolved_by = ?2, resolved_at = ?3, \
                 resolution_note = ?4 WHERE rowid = ?1",
                params![id, actor, now.0, note],
            )?,
        };
        tx.execute(
            "INSERT INTO alert_actions (alert_key, at, actor, action, note) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key, now.0, actor, action.target(), note],
        )?;
        let view = view_by_id(&tx, id)?
            .ok_or_else(|| AlertError::Db(format!("alert {id} vanished while it was changed")))?;
        tx.commit()?;
        Ok(Handled::Done(Box::new(view)))
    }

    /// The snapshot file (as stored) of the alert whose snapshot link token is `token`.
    pub fn snapshot_by_token(&self, token: &str) -> Result<Option<String>, AlertError> {
        Ok(self
            .conn
            .query_row(
                "SELECT snapshot FROM alert_alerts WHERE snapshot_token = ?1 AND snapshot IS NOT NULL",
                [token],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// For each incident key that has an alert: the alert's id and its snapshot link (`/s/<token>`), if any.
    pub fn alert_links(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, (i64, Option<String>)>, AlertError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let keys = serde_json::to_string(keys).map_err(|e| AlertError::Db(e.to_string()))?;
        let rows = self
            .conn
            .prepare_cached(
                "SELECT key, rowid, snapshot_token FROM alert_alerts \
                 WHERE key IN (SELECT value FROM json_each(?1))",
            )?
            .query_map([keys], |r| {
                let token: Option<String> = r.get(2)?;
                Ok((r.get(0)?, (r.get(1)?, token.map(|t| format!("/s/{t}")))))
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}
