//! The embedded store: one SQLite file (WAL) for incidents; the alert stage keeps its tables in the same
//! file through its own connection.

use std::path::Path;

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::types::{CameraId, IncidentEvent, IncidentKey, IncidentPhase, Timestamp};

#[derive(Debug, thiserror::Error)]
#[error("database {path}: {source}")]
pub struct StoreError {
    pub path: String,
    #[source]
    pub source: rusqlite::Error,
}

pub struct Store {
    conn: Connection,
    path: String,
}

/// An incident as stored: one row for its whole life.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IncidentRow {
    pub id: String,
    pub camera: String,
    pub rule: String,
    pub zone: String,
    pub kind: String,
    pub severity: String,
    pub opened_at: i64,
    pub updated_at: i64,
    pub closed_at: Option<i64>,
    pub count: u32,
    pub summary: String,
    pub snapshot: Option<String>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let p = path.display().to_string();
        let wrap = |source| StoreError {
            path: p.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| wrap(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        }
        let conn = Connection::open(path).map_err(wrap)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS incidents (
                 id TEXT PRIMARY KEY,
                 camera TEXT NOT NULL, rule TEXT NOT NULL, zone TEXT NOT NULL, episode INTEGER NOT NULL,
                 kind TEXT NOT NULL, severity TEXT NOT NULL,
                 camera_name TEXT NOT NULL, ward TEXT NOT NULL,
                 opened_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, closed_at INTEGER,
                 count INTEGER NOT NULL, summary TEXT NOT NULL, snapshot TEXT
             );
             CREATE INDEX IF NOT EXISTS incidents_camera_opened ON incidents (camera, opened_at);",
        )
        .map_err(wrap)?;
        Ok(Self { conn, path: p })
    }

    /// Applies one lifecycle event: opened inserts, updated and closed amend the same row.
    pub fn record(&self, e: &IncidentEvent) -> Result<(), StoreError> {
        let wrap = |source| StoreError {
            path: self.path.clone(),
            source,
        };
        let id = e.key.to_string();
        match e.phase {
            IncidentPhase::Opened => self.conn.execute(
                "INSERT OR IGNORE INTO incidents (id, camera, rule, zone, episode, kind, severity, camera_name, ward,
                     opened_at, updated_at, count, summary, snapshot)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12, ?13)",
                params![
                    id, e.key.camera.as_str(), e.key.rule, e.key.zone, e.key.episode.0, e.kind.as_str(),
                    e.severity.as_str(), e.camera_name, e.ward, e.at.0, e.count, e.summary, e.snapshot
                ],
            ),
            IncidentPhase::Updated => self.conn.execute(
                "UPDATE incidents SET updated_at = ?2, count = ?3, summary = ?4 WHERE id = ?1",
                params![id, e.at.0, e.count, e.summary],
            ),
            IncidentPhase::Closed => self.conn.execute(
                "UPDATE incidents SET updated_at = ?2, closed_at = ?2, count = ?3, summary = ?4 WHERE id = ?1",
                params![id, e.at.0, e.count, e.summary],
            ),
        }
        .map_err(wrap)?;
        Ok(())
    }

    /// Incidents not closed yet, as the events that opened them (with their latest count and summary).
    pub fn open_incidents(&self) -> Result<Vec<IncidentEvent>, StoreError> {
        self.events(
            IncidentPhase::Opened,
            "opened_at",
            "WHERE closed_at IS NULL ORDER BY opened_at",
            [],
        )
    }

    /// The event that closed incident `id`, if it is closed.
    pub fn closing_event(&self, id: &str) -> Result<Option<IncidentEvent>, StoreError> {
        Ok(self
            .events(
                IncidentPhase::Closed,
                "closed_at",
                "WHERE id = ?1 AND closed_at IS NOT NULL",
                [id],
            )?
            .pop())
    }

    /// Incidents as lifecycle events of `phase`, dated by column `at`.
    fn events(
        &self,
        phase: IncidentPhase,
        at: &str,
        tail: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<IncidentEvent>, StoreError> {
        let wrap = |source| StoreError {
            path: self.path.clone(),
            source,
        };
        let sql = format!(
            "SELECT camera, rule, zone, episode, kind, severity, camera_name, ward, {at}, count, summary, snapshot
             FROM incidents {tail}"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(wrap)?;
        let rows = stmt
            .query_map(args, |r| {
                let text = |i: usize| r.get::<_, String>(i);
                let parse = |i: usize| -> rusqlite::Result<serde_json::Value> {
                    Ok(serde_json::Value::String(text(i)?))
                };
                let bad = |i: usize, e: serde_json::Error| {
                    rusqlite::Error::FromSqlConversionFailure(
                        i,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                };
                Ok(IncidentEvent {
                    key: IncidentKey {
                        camera: CameraId::new(&text(0)?),
                        rule: text(1)?,
                        zone: text(2)?,
                        episode: Timestamp(r.get(3)?),
                    },
                    phase,
                    kind: serde_json::from_value(parse(4)?).map_err(|e| bad(4, e))?,
                    severity: serde_json::from_value(parse(5)?).map_err(|e| bad(5, e))?,
                    camera_name: text(6)?,
                    ward: text(7)?,
                    at: Timestamp(r.get(8)?),
                    count: r.get(9)?,
                    summary: text(10)?,
                    snapshot: r.get(11)?,
                })
            })
            .map_err(wrap)?;
        rows.collect::<Result<_, _>>().map_err(wrap)
    }

    /// Every incident, oldest first.
    pub fn incidents(&self) -> Result<Vec<IncidentRow>, StoreError> {
        self.query("ORDER BY opened_at, id", [])
    }

    pub fn incident(&self, id: &str) -> Result<Option<IncidentRow>, StoreError> {
        Ok(self.query("WHERE id = ?1", [id])?.pop())
    }

    fn query(
        &self,
        tail: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<IncidentRow>, StoreError> {
        let wrap = |source| StoreError {
            path: self.path.clone(),
            source,
        };
        let sql = format!(
            "SELECT id, camera, rule, zone, kind, severity, opened_at, updated_at, closed_at, count, summary, snapshot
             FROM incidents {tail}"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(wrap)?;
        let rows = stmt
            .query_map(args, |r| {
                Ok(IncidentRow {
                    id: r.get(0)?,
                    camera: r.get(1)?,
                    rule: r.get(2)?,
                    zone: r.get(3)?,
                    kind: r.get(4)?,
                    severity: r.get(5)?,
                    opened_at: r.get(6)?,
                    updated_at: r.get(7)?,
                    closed_at: r.get(8)?,
                    count: r.get(9)?,
                    summary: r.get(10)?,
                    snapshot: r.get(11)?,
                })
            })
            .map_err(wrap)?;
        rows.collect::<Result<_, _>>().map_err(wrap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::*;

    #[test]
    fn lifecycle_is_one_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("sw.db")).unwrap();
        let key = IncidentKey {
            camera: CameraId::new("c1"),
            rule: "crowd".into(),
            zone: "plaza".into(),
            episode: Timestamp(1000),
        };
        let mut e = IncidentEvent {
            key,
            phase: IncidentPhase::Opened,
            at: Timestamp(11_000),
            kind: RuleKind::Crowding,
            severity: Severity::Warning,
            camera_name: "Cam 1".into(),
            ward: "Bến Nghé".into(),
            summary: "6 people".into(),
            count: 6,
            snapshot: Some("snap.jpg".into()),
        };
        store.record(&e).unwrap();
        let open = store.open_incidents().unwrap();
        assert_eq!(
            open,
            vec![e.clone()],
            "an open incident reads back as the event that opened it"
        );
        e.phase = IncidentPhase::Closed;
        e.at = Timestamp(30_000);
        e.count = 8;
        assert_eq!(store.closing_event("c1/crowd/plaza/1000").unwrap(), None);
        store.record(&e).unwrap();
        assert!(store.open_incidents().unwrap().is_empty());
        assert_eq!(
            store.closing_event("c1/crowd/plaza/1000").unwrap(),
            Some(e.clone()),
            "a closed incident reads back as the event that closed it"
        );
        let rows = store.incidents().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].opened_at, rows[0].closed_at, rows[0].count),
            (11_000, Some(30_000), 8)
        );
        assert_eq!(rows[0].id, "c1/crowd/plaza/1000");
    }
}
