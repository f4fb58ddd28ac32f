//! The alert JSON of the API and the live feed: the one conversion from the alert tables.
//!
//! Interim: the alerts API branch (s9-alerts, `src/alert/store/api.rs`) defines the same `AlertView`,
//! `AlertDelivery` and `Store::alert_views_by_key` with the same fields and meaning. When both are merged,
//! keep that one and delete this file (and its `mod view;` line): the live feed only calls
//! `alert_views_by_key`.

use rusqlite::Connection;
use serde::Serialize;

use crate::types::Timestamp;

use super::Store;
use crate::alert::AlertError;

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

const VIEW_COLUMNS: &str = "rowid, key, camera, camera_name, ward, rule, zone, kind, severity, status, \
     handling, started_at, updated_at, ended_at, summary, count, snapshot_token, acknowledged_by, \
     acknowledged_at, resolved_by, resolved_at, resolution_note";

fn view_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlertView> {
    let status: String = r.get(9)?;
    let ts = |i: usize| r.get::<_, Option<i64>>(i).map(|t| t.map(Timestamp));
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
        firing: status == "firing",
        state: r.get(10)?,
        started_at: Timestamp(r.get(11)?),
        updated_at: Timestamp(r.get(12)?),
        ended_at: ts(13)?,
        summary: r.get(14)?,
        count: r.get(15)?,
        snapshot_url: r.get::<_, Option<String>>(16)?.map(|t| format!("/s/{t}")),
        acknowledged_by: r.get(17)?,
        acknowledged_at: ts(18)?,
        resolved_by: r.get(19)?,
        resolved_at: ts(20)?,
        resolution_note: r.get(21)?,
        deliveries: Vec::new(),
    })
}

fn deliveries_of(conn: &Connection, key: &str) -> Result<Vec<AlertDelivery>, AlertError> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.id, d.receiver, d.channel, d.state, d.attempts, d.updated_at, d.last_error \
         FROM alert_notice_alerts na JOIN alert_deliveries d ON d.notice_id = na.notice_id \
         WHERE na.alert_key = ?1 ORDER BY d.id",
    )?;
    let rows = stmt.query_map([key], |r| {
        Ok(AlertDelivery {
            id: r.get(0)?,
            receiver: r.get(1)?,
            channel: r.get(2)?,
            state: r.get(3)?,
            attempts: r.get(4)?,
            updated_at: Timestamp(r.get(5)?),
            last_error: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

impl Store {
    /// The alerts with these incident keys (those that exist), newest first: for the live feed.
    pub fn alert_views_by_key(&self, keys: &[String]) -> Result<Vec<AlertView>, AlertError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = serde_json::to_string(keys).map_err(|e| AlertError::Db(e.to_string()))?;
        let sql = format!(
            "SELECT {VIEW_COLUMNS} FROM alert_alerts WHERE key IN (SELECT value FROM json_each(?1)) \
             ORDER BY started_at DESC, rowid DESC"
        );
        let mut views: Vec<AlertView> = self
            .conn
            .prepare_cached(&sql)?
            .query_map([keys], view_from_row)?
            .collect::<Result<_, _>>()?;
        for v in &mut views {
            v.deliveries = deliveries_of(&self.conn, &v.key)?;
        }
        Ok(views)
    }
}
