//! The embedded store: one SQLite file (WAL) for incidents; the alert stage keeps its tables in the same
//! file through its own connection.

mod lock;
mod reports;

pub use lock::{DataDirLock, LockError};
pub use reports::{CITIZEN_CAMERA, Joined, NewReport, ReportRow};

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

/// An incident to replay: the event that opened it, the one that closed it if it did, and where the next
/// page of [`Store::changed_since`] resumes.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayRow {
    pub opened: IncidentEvent,
    pub closed: Option<IncidentEvent>,
    pub resume: (Timestamp, String),
}

/// A row as the event that opened it, and its last change and close.
struct Opened {
    opened: IncidentEvent,
    updated_at: i64,
    closed_at: Option<i64>,
}

/// An incident as stored: one row for its whole life.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IncidentRow {
    pub id: String,
    pub camera: String,
    pub camera_name: String,
    pub ward: String,
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
             CREATE INDEX IF NOT EXISTS incidents_camera_opened ON incidents (camera, opened_at);
             CREATE INDEX IF NOT EXISTS incidents_closed ON incidents (closed_at);
             CREATE INDEX IF NOT EXISTS incidents_updated ON incidents (updated_at, id);
             CREATE INDEX IF NOT EXISTS incidents_opened ON incidents (opened_at, id);",
        )
        .map_err(wrap)?;
        conn.execute_batch(reports::SCHEMA).map_err(wrap)?;
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
        Ok(self
            .events("WHERE closed_at IS NULL ORDER BY opened_at", [])?
            .into_iter()
            .map(|r| r.opened)
            .collect())
    }

    /// Incidents changed at or after `since`, ordered by (last change, id) and resuming after `after`: each as
    /// the event that opened it (with its latest count and summary) and, if it closed, the closing event.
    /// For replaying to the router the events it could not take at the time.
    pub fn changed_since(
        &self,
        since: Timestamp,
        after: Option<&(Timestamp, String)>,
        limit: usize,
    ) -> Result<Vec<ReplayRow>, StoreError> {
        let (at, id) = after.map_or((since.0, ""), |(t, id)| (t.0, id.as_str()));
        Ok(self
            .events(
                "WHERE updated_at >= ?1 AND (updated_at, id) > (?2, ?3) ORDER BY updated_at, id LIMIT ?4",
                params![since.0, at, id, limit as i64],
            )?
            .into_iter()
            .map(|r| {
                let closed = r.closed_at.map(|t| IncidentEvent {
                    phase: IncidentPhase::Closed,
                    at: Timestamp(t),
                    ..r.opened.clone()
                });
                ReplayRow {
                    resume: (Timestamp(r.updated_at), r.opened.key.to_string()),
                    opened: r.opened,
                    closed,
                }
            })
            .collect())
    }

    /// The event that closed incident `id`, if it is closed.
    pub fn closing_event(&self, id: &str) -> Result<Option<IncidentEvent>, StoreError> {
        Ok(self
            .events("WHERE id = ?1 AND closed_at IS NOT NULL", [id])?
            .pop()
            .and_then(|r| {
                r.closed_at.map(|t| IncidentEvent {
                    phase: IncidentPhase::Closed,
                    at: Timestamp(t),
                    ..r.opened
                })
            }))
    }

    /// Rows as the events that opened them.
    fn events(&self, tail: &str, args: impl rusqlite::Params) -> Result<Vec<Opened>, StoreError> {
        let wrap = |source| StoreError {
            path: self.path.clone(),
            source,
        };
        let sql = format!(
            "SELECT camera, rule, zone, episode, kind, severity, camera_name, ward, opened_at, count, summary, snapshot,
                 updated_at, closed_at
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
                let event = IncidentEvent {
                    key: IncidentKey {
                        camera: CameraId::new(&text(0)?),
                        rule: text(1)?,
                        zone: text(2)?,
                        episode: Timestamp(r.get(3)?),
                    },
                    phase: IncidentPhase::Opened,
                    kind: serde_json::from_value(parse(4)?).map_err(|e| bad(4, e))?,
                    severity: serde_json::from_value(parse(5)?).map_err(|e| bad(5, e))?,
                    camera_name: text(6)?,
                    ward: text(7)?,
                    at: Timestamp(r.get(8)?),
                    count: r.get(9)?,
                    summary: text(10)?,
                    snapshot: r.get(11)?,
                };
                Ok(Opened {
                    opened: event,
                    updated_at: r.get(12)?,
                    closed_at: r.get(13)?,
                })
            })
            .map_err(wrap)?;
        rows.collect::<Result<_, _>>().map_err(wrap)
    }

    /// Deletes at most `limit` incidents closed before `before` (open ones stay, however old), with the
    /// citizen reports of incidents no longer there, in one transaction; returns the snapshot of each
    /// incident deleted, for the caller to remove the files once the deletion is committed. (The photos of
    /// later reports of an incident are no incident's snapshot: the age sweep removes them.)
    pub fn prune_closed(
        &mut self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<Option<String>>, StoreError> {
        let path = self.path.clone();
        let wrap = |source| StoreError {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(wrap)?;
        let gone = {
            let mut stmt = tx
                .prepare(
                    "DELETE FROM incidents WHERE id IN (SELECT id FROM incidents WHERE closed_at < ?1 LIMIT ?2) \
                     RETURNING snapshot",
                )
                .map_err(wrap)?;
            let rows = stmt
                .query_map(params![before.0, limit as i64], |r| r.get(0))
                .map_err(wrap)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(wrap)?
        };
        if !gone.is_empty() {
            reports::prune_orphans(&tx, before).map_err(wrap)?;
        }
        tx.commit().map_err(wrap)?;
        Ok(gone)
    }

    /// Clears the snapshot of at most `limit` incidents closed before `before`, in one transaction; returns
    /// how many. The rows stay; the retention sweep removes the files no row names any more.
    pub fn forget_snapshots(
        &mut self,
        before: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "UPDATE incidents SET snapshot = NULL WHERE id IN (SELECT id FROM incidents \
                 WHERE closed_at < ?1 AND snapshot IS NOT NULL LIMIT ?2)",
                params![before.0, limit as i64],
            )
            .map_err(|source| StoreError {
                path: self.path.clone(),
                source,
            })
    }

    /// Snapshots still named by incidents whose episode began before `before` (open ones, and closed ones
    /// whose snapshot is not yet due): the files an age sweep must keep.
    pub fn snapshots_begun_before(&self, before: Timestamp) -> Result<Vec<String>, StoreError> {
        let wrap = |source| StoreError {
            path: self.path.clone(),
            source,
        };
        let mut stmt = self
            .conn
            .prepare("SELECT snapshot FROM incidents WHERE episode < ?1 AND snapshot IS NOT NULL")
            .map_err(wrap)?;
        let rows = stmt.query_map([before.0], |r| r.get(0)).map_err(wrap)?;
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
            "SELECT id, camera, rule, zone, kind, severity, opened_at, updated_at, closed_at, count, summary, snapshot,
                 camera_name, ward
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
                    camera_name: r.get(12)?,
                    ward: r.get(13)?,
                })
            })
            .map_err(wrap)?;
        rows.collect::<Result<_, _>>().map_err(wrap)
    }

    /// One page of incidents matching `filter`, newest first (opened_at desc, id desc), after `after` (from
    /// the newest when `None`), at most `limit`. Incidents opened later than the first page sort before it,
    /// so paging on neither repeats nor skips one.
    pub fn incident_page(
        &self,
        filter: &IncidentFilter,
        after: Option<&IncidentPosition>,
        limit: usize,
    ) -> Result<Vec<IncidentRow>, StoreError> {
        let mut conds: Vec<&str> = Vec::new();
        let mut args: Vec<&dyn rusqlite::ToSql> = Vec::new();
        if let Some(c) = &filter.camera {
            conds.push("camera = ?");
            args.push(c);
        }
        if let Some(k) = &filter.kind {
            conds.push("kind = ?");
            args.push(k);
        }
        match filter.open {
            Some(true) => conds.push("closed_at IS NULL"),
            Some(false) => conds.push("closed_at IS NOT NULL"),
            None => {}
        }
        if let Some(p) = after {
            conds.push("(opened_at, id) < (?, ?)");
            args.push(&p.opened_at);
            args.push(&p.id);
        }
        let mut tail = String::new();
        if !conds.is_empty() {
            tail = format!("WHERE {}", conds.join(" AND "));
        }
        let limit = limit.min(i64::MAX as usize);
        self.query(
            &format!("{tail} ORDER BY opened_at DESC, id DESC LIMIT {limit}"),
            args.as_slice(),
        )
    }
}

/// Which incidents a page holds; `None` places no condition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IncidentFilter {
    pub camera: Option<String>,
    /// Rule family (`crowding`, …).
    pub kind: Option<String>,
    /// Not closed yet, or closed.
    pub open: Option<bool>,
}

/// A place in the newest-first order of incidents (opened_at desc, id desc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncidentPosition {
    pub opened_at: i64,
    pub id: String,
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
