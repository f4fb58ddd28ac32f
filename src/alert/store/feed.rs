//! The live feed's change log (`alert_feed`): read by the server's feed, appended to for camera changes.

use rusqlite::params;
use serde::Serialize;

use crate::alert::AlertError;
use crate::types::Timestamp;

use super::Store;

/// One row of the live feed's change log.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FeedRow {
    pub id: i64,
    pub at: Timestamp,
    /// alert | delivery | camera
    pub kind: String,
    /// The alert key (alert), the delivery id (delivery) or the camera id (camera).
    pub reference: String,
    /// The camera's state as JSON (camera rows only).
    pub payload: Option<String>,
}

impl Store {
    /// Keys of the alerts the delivery's notice carried, in key order.
    pub fn delivery_alert_keys(&self, delivery_id: i64) -> Result<Vec<String>, AlertError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT na.alert_key FROM alert_deliveries d \
             JOIN alert_notice_alerts na ON na.notice_id = d.notice_id \
             WHERE d.id = ?1 ORDER BY na.alert_key",
        )?;
        let rows = stmt.query_map([delivery_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Feed rows after `after`, oldest first, at most `limit`.
    pub fn feed_after(&self, after: i64, limit: usize) -> Result<Vec<FeedRow>, AlertError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at, kind, ref, payload FROM alert_feed WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = stmt.query_map(params![after, limit], |r| {
            Ok(FeedRow {
                id: r.get(0)?,
                at: Timestamp(r.get(1)?),
                kind: r.get(2)?,
                reference: r.get(3)?,
                payload: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest feed id (0 when the feed is empty).
    pub fn feed_last_id(&self) -> Result<i64, AlertError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM alert_feed", [], |r| {
                r.get(0)
            })?)
    }

    /// Appends camera health changes (camera id, camera JSON) to the feed in one transaction.
    pub fn append_camera_feed(
        &mut self,
        at: Timestamp,
        changes: &[(String, String)],
    ) -> Result<(), AlertError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO alert_feed (at, kind, ref, payload) VALUES (?1, 'camera', ?2, ?3)",
            )?;
            for (camera, json) in changes {
                insert.execute(params![at.0, camera, json])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}
