//! The alert tables in the shared SQLite file, and the read side used by the CLI (and later the API).
//!
//! Each user of the file opens its own connection (WAL lets readers and one writer work at once);
//! `busy_timeout` absorbs the other writers' short transactions.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use serde::Serialize;

use crate::types::Timestamp;

use super::config::Matchers;
use super::decide::flood::Window;
use super::decide::silence::Silence;
use super::error::AlertError;
use super::keys::Keys;

mod api;
mod feed;
pub use api::{
    AlertAction, AlertDelivery, AlertFilter, AlertPosition, AlertView, HANDLING_STATES, Handled,
    Handling,
};
pub use feed::FeedRow;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alert_alerts (
    key TEXT PRIMARY KEY,
    camera TEXT NOT NULL, camera_name TEXT NOT NULL, ward TEXT NOT NULL, rule TEXT NOT NULL,
    zone TEXT NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL,
    status TEXT NOT NULL,                 -- firing | resolved
    started_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, ended_at INTEGER,
    summary TEXT NOT NULL, count INTEGER NOT NULL, snapshot TEXT, snapshot_token TEXT,
    events INTEGER NOT NULL DEFAULT 1,     -- events accepted for this incident
    duplicates INTEGER NOT NULL DEFAULT 0, -- events dropped as duplicates or stale
    muted_by TEXT,                         -- why the last notice left it out (silence:ID, inhibited:…)
    last_notice_id INTEGER
);
CREATE INDEX IF NOT EXISTS alert_alerts_status ON alert_alerts(status, updated_at);
-- the API's alert list, newest first (the rowid is the index's last column), the daily report's day;
-- snapshot links
CREATE INDEX IF NOT EXISTS alert_alerts_started ON alert_alerts(started_at);
CREATE INDEX IF NOT EXISTS alert_alerts_snapshot_token ON alert_alerts(snapshot_token);
CREATE TABLE IF NOT EXISTS alert_notices (
    id INTEGER PRIMARY KEY,
    created_at INTEGER NOT NULL,
    kind TEXT NOT NULL,                    -- alerts | flood_summary
    route TEXT NOT NULL, group_key TEXT NOT NULL,
    receiver TEXT,                         -- NULL: no receiver configured for this route
    status TEXT NOT NULL,                  -- queued | held (flood control) | unrouted
    firing INTEGER NOT NULL, resolved INTEGER NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_notices_receiver ON alert_notices(receiver, created_at);
CREATE TABLE IF NOT EXISTS alert_deliveries (
    id INTEGER PRIMARY KEY,
    notice_id INTEGER NOT NULL REFERENCES alert_notices(id),
    receiver TEXT NOT NULL, channel TEXT NOT NULL, target TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,                    -- what is sent: SMS text, or JSON for e-mail and webhook
    segments INTEGER,                      -- SMS only
    state TEXT NOT NULL,                   -- pending | sending | accepted | queued | delivered | undelivered | dead
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    last_error TEXT, gateway_reply TEXT,
    possible_duplicates INTEGER NOT NULL DEFAULT 0,
    retried_at INTEGER                     -- put back in the queue by hand; restarts the give-up clock
);
CREATE INDEX IF NOT EXISTS alert_deliveries_due ON alert_deliveries(state, next_attempt_at);
CREATE INDEX IF NOT EXISTS alert_deliveries_notice ON alert_deliveries(notice_id);
-- the notifier looks for each receiver's due deliveries on its own
CREATE INDEX IF NOT EXISTS alert_deliveries_receiver_due ON alert_deliveries(receiver, state, next_attempt_at);
CREATE TABLE IF NOT EXISTS alert_delivery_events (
    id INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL,
    at INTEGER NOT NULL,
    state TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS alert_delivery_events_delivery ON alert_delivery_events(delivery_id);
CREATE TABLE IF NOT EXISTS alert_nflog (
    group_key TEXT NOT NULL, receiver TEXT NOT NULL,
    firing TEXT NOT NULL, resolved TEXT NOT NULL,  -- JSON arrays of alert keys last notified
    notified_at INTEGER NOT NULL,
    PRIMARY KEY (group_key, receiver)
);
CREATE TABLE IF NOT EXISTS alert_flood (
    receiver TEXT PRIMARY KEY,
    window_start INTEGER NOT NULL, sent INTEGER NOT NULL, held INTEGER NOT NULL,
    held_by_ward TEXT NOT NULL
    -- critical_sent, held_alerts: added by ADDED_COLUMNS
);
-- Key for delivery-report and snapshot-link tokens (keys.rs), drawn at the first start.
CREATE TABLE IF NOT EXISTS alert_secret (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
-- Operations-centre handling of an alert (the `handling` columns of alert_alerts): every change, who and when.
CREATE TABLE IF NOT EXISTS alert_actions (
    id INTEGER PRIMARY KEY,
    alert_key TEXT NOT NULL,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,                  -- acknowledged | resolved
    note TEXT
);
CREATE INDEX IF NOT EXISTS alert_actions_alert ON alert_actions(alert_key, at);
-- Which alerts each notice carried, so an alert's deliveries are found without reading notice payloads.
CREATE TABLE IF NOT EXISTS alert_notice_alerts (
    alert_key TEXT NOT NULL,
    notice_id INTEGER NOT NULL,
    PRIMARY KEY (alert_key, notice_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alert_notice_alerts_notice ON alert_notice_alerts(notice_id);
-- The live feed's change log, written by triggers in the transaction that makes the change, so a reader
-- that resumes after id N misses nothing and repeats nothing. AUTOINCREMENT: ids never come back after
-- pruning. `ref` is the alert key or delivery id; camera health changes carry their state in `payload`.
CREATE TABLE IF NOT EXISTS alert_feed (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,                    -- alert | delivery | camera
    ref TEXT NOT NULL,
    payload TEXT
);
CREATE TRIGGER IF NOT EXISTS alert_feed_alert_insert AFTER INSERT ON alert_alerts BEGIN
    INSERT INTO alert_feed (at, kind, ref) VALUES (NEW.updated_at, 'alert', NEW.key);
END;
CREATE TRIGGER IF NOT EXISTS alert_feed_alert_update AFTER UPDATE ON alert_alerts BEGIN
    INSERT INTO alert_feed (at, kind, ref) VALUES (NEW.updated_at, 'alert', NEW.key);
END;
CREATE TRIGGER IF NOT EXISTS alert_feed_delivery_insert AFTER INSERT ON alert_deliveries BEGIN
    INSERT INTO alert_feed (at, kind, ref) VALUES (NEW.updated_at, 'delivery', NEW.id);
END;
CREATE TRIGGER IF NOT EXISTS alert_feed_delivery_update AFTER UPDATE OF state ON alert_deliveries BEGIN
    INSERT INTO alert_feed (at, kind, ref) VALUES (NEW.updated_at, 'delivery', NEW.id);
END;
CREATE TABLE IF NOT EXISTS alert_silences (
    id INTEGER PRIMARY KEY,
    matchers TEXT NOT NULL,
    starts_at INTEGER NOT NULL, ends_at INTEGER NOT NULL,
    created_by TEXT NOT NULL, comment TEXT NOT NULL,
    created_at INTEGER NOT NULL, expired_at INTEGER
);
";

/// Columns added after their table was first released: (table, column, declaration). A file made by an
/// earlier version gets them at open.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("alert_flood", "critical_sent", "INTEGER NOT NULL DEFAULT 0"),
    ("alert_flood", "held_alerts", "TEXT NOT NULL DEFAULT '[]'"), // JSON array of HeldAlert
    // Operations-centre handling: new | acknowledged | resolved (alert_actions has the history).
    ("alert_alerts", "handling", "TEXT NOT NULL DEFAULT 'new'"),
    ("alert_alerts", "acknowledged_by", "TEXT"),
    ("alert_alerts", "acknowledged_at", "INTEGER"),
    ("alert_alerts", "resolved_by", "TEXT"),
    ("alert_alerts", "resolved_at", "INTEGER"),
    ("alert_alerts", "resolution_note", "TEXT"),
];

/// Opens (creating if needed) the database file with the alert tables.
///
/// Every transaction that reads before it writes is IMMEDIATE: a deferred one that read a snapshot cannot
/// upgrade to a writer once another connection committed (SQLITE_BUSY_SNAPSHOT, not retried by
/// busy_timeout), which would leave, say, a delivery stuck in `sending`.
pub(crate) fn open(path: &Path) -> Result<Connection, AlertError> {
    open_with(path, Sync::Full)
}

/// How hard a connection's commits are pushed to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sync {
    /// fsync at every commit: for decisions, which must survive a power cut.
    Full,
    /// fsync at checkpoints only (WAL): a commit survives a crash of the process, not of the machine. For
    /// delivery progress, where a lost update can only cause a resend, never a lost notice; it makes each
    /// delivery's two or three state changes cheap.
    Normal,
}

/// [`open`] with the given durability.
pub(crate) fn open_with(path: &Path, sync: Sync) -> Result<Connection, AlertError> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| AlertError::Db(format!("create {}: {e}", dir.display())))?;
    }
    let conn = Connection::open(path)
        .map_err(|e| AlertError::Db(format!("open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Several processes may create the file at once (the router, the CLI, the incident store). Until it is
    // in WAL mode SQLite answers BUSY at once rather than wait when two connections would deadlock, so the
    // set-up is retried for a while.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match init(&conn, sync) {
            Ok(()) => return Ok(conn),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10 + fastrand::u64(0..20)));
            }
            Err(e) => return Err(AlertError::Db(format!("set up {}: {e}", path.display()))),
        }
    }
}

fn init(conn: &Connection, sync: Sync) -> rusqlite::Result<()> {
    // WAL: readers (CLI, API) never block the router. The router's connection is synchronous=FULL (a decision
    // that committed survives a power cut) and batches events into one transaction to keep that cheap.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let level = match sync {
        Sync::Full => "FULL",
        Sync::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", level)?;
    conn.execute_batch(SCHEMA)?;
    for (table, column, decl) in ADDED_COLUMNS {
        let known = conn
            .prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
            .exists(params![table, column])?;
        if known {
            continue;
        }
        match conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}")) {
            // Another process added it since we looked.
            Err(rusqlite::Error::SqliteFailure(_, Some(m)))
                if m.starts_with("duplicate column") => {}
            r => r?,
        }
    }
    Ok(())
}

/// The database's token key, made at its first use. Whoever opens the database first draws it; any other
/// process opening it at the same time keeps the one that was stored.
pub(crate) fn keys(conn: &Connection) -> Result<Keys, AlertError> {
    let fresh = Keys::generate().map_err(|e| AlertError::Db(format!("no random numbers: {e}")))?;
    conn.execute(
        "INSERT OR IGNORE INTO alert_secret (name, value) VALUES ('tokens', ?1)",
        [&fresh[..]],
    )?;
    let stored: Vec<u8> = conn.query_row(
        "SELECT value FROM alert_secret WHERE name = 'tokens'",
        [],
        |r| r.get(0),
    )?;
    let secret: [u8; 32] = stored
        .try_into()
        .map_err(|_| AlertError::Db("alert_secret: the stored key is not 32 bytes".into()))?;
    Ok(Keys::from_secret(secret))
}

/// One incident as `alerts list` shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AlertRow {
    pub key: String,
    pub camera: String,
    pub ward: String,
    pub rule: String,
    pub severity: String,
    pub status: String,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub summary: String,
    pub events: i64,
    pub duplicates: i64,
    pub muted_by: Option<String>,
    pub last_notice_id: Option<i64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NoticeRow {
    pub id: i64,
    pub created_at: Timestamp,
    pub kind: String,
    pub route: String,
    pub group_key: String,
    pub receiver: Option<String>,
    pub status: String,
    pub firing: i64,
    pub resolved: i64,
    pub payload: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DeliveryRow {
    pub id: i64,
    pub notice_id: i64,
    pub receiver: String,
    pub channel: String,
    pub target: String,
    pub idempotency_key: String,
    pub body: String,
    pub segments: Option<i64>,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Timestamp,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_error: Option<String>,
    pub gateway_reply: Option<String>,
    pub possible_duplicates: i64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DeliveryEvent {
    pub delivery_id: i64,
    pub at: Timestamp,
    pub state: String,
    pub detail: Option<String>,
}

/// Read and admin access to the alert tables, for the CLI, tests and the API.
pub struct Store {
    conn: Connection,
}

const DELIVERY_COLUMNS: &str = "id, notice_id, receiver, channel, target, idempotency_key, body, segments, state, \
     attempts, next_attempt_at, created_at, updated_at, last_error, gateway_reply, possible_duplicates";

pub(crate) fn delivery_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRow> {
    Ok(DeliveryRow {
        id: r.get(0)?,
        notice_id: r.get(1)?,
        receiver: r.get(2)?,
        channel: r.get(3)?,
        target: r.get(4)?,
        idempotency_key: r.get(5)?,
        body: r.get(6)?,
        segments: r.get(7)?,
        state: r.get(8)?,
        attempts: r.get(9)?,
        next_attempt_at: Timestamp(r.get(10)?),
        created_at: Timestamp(r.get(11)?),
        updated_at: Timestamp(r.get(12)?),
        last_error: r.get(13)?,
        gateway_reply: r.get(14)?,
        possible_duplicates: r.get(15)?,
    })
}

pub(crate) fn load_silences(
    conn: &Connection,
    include_inactive: bool,
) -> Result<Vec<Silence>, AlertError> {
    if include_inactive {
        query_silences(conn, "ORDER BY id", [])
    } else {
        query_silences(conn, "WHERE expired_at IS NULL ORDER BY id", [])
    }
}

/// Silences selected by `tail` (a WHERE and ORDER BY clause over `alert_silences`, with `params`).
fn query_silences(
    conn: &Connection,
    tail: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Silence>, AlertError> {
    let sql = format!(
        "SELECT id, matchers, starts_at, ends_at, created_by, comment, created_at, expired_at \
         FROM alert_silences {tail}"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params, |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, i64>(6)?,
            r.get::<_, Option<i64>>(7)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, m, s, e, by, comment, created, expired) = row?;
        let matchers: Matchers = serde_json::from_str(&m)
            .map_err(|x| AlertError::Db(format!("silence {id}: bad matchers: {x}")))?;
        out.push(Silence {
            id,
            matchers,
            starts_at: Timestamp(s),
            ends_at: Timestamp(e),
            created_by: by,
            comment,
            created_at: Timestamp(created),
            expired_at: expired.map(Timestamp),
        });
    }
    Ok(out)
}

/// One alert as the daily report counts it: its labels and how the operations centre handled it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HandlingRow {
    pub ward: String,
    pub kind: String,
    pub started_at: Timestamp,
    /// new | acknowledged | resolved
    pub handling: String,
    pub acknowledged_at: Option<Timestamp>,
    pub resolved_at: Option<Timestamp>,
}

/// Read side for the operations centre's views (silences, daily report).
impl Store {
    /// One silence, expired or not.
    pub fn silence(&self, id: i64) -> Result<Option<Silence>, AlertError> {
        Ok(query_silences(&self.conn, "WHERE id = ?1", [id])?.pop())
    }

    /// Silences that end (or were expired) at or after `t`, newest first: with `t` a while ago, the active
    /// and upcoming ones and those that ended since. Expiring a silence moves its end to the moment it was
    /// expired, so this covers both.
    pub fn silences_ending_since(&self, t: Timestamp) -> Result<Vec<Silence>, AlertError> {
        query_silences(&self.conn, "WHERE ends_at >= ?1 ORDER BY id DESC", [t.0])
    }

    /// Alerts that started in `[from, until)`, with their handling, oldest first.
    pub fn handling_between(
        &self,
        from: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<HandlingRow>, AlertError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT ward, kind, started_at, handling, acknowledged_at, resolved_at FROM alert_alerts \
             WHERE started_at >= ?1 AND started_at < ?2 ORDER BY started_at",
        )?;
        let rows = stmt.query_map(params![from.0, until.0], |r| {
            Ok(HandlingRow {
                ward: r.get(0)?,
                kind: r.get(1)?,
                started_at: Timestamp(r.get(2)?),
                handling: r.get(3)?,
                acknowledged_at: r.get::<_, Option<i64>>(4)?.map(Timestamp),
                resolved_at: r.get::<_, Option<i64>>(5)?.map(Timestamp),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, AlertError> {
        Ok(Self { conn: open(path)? })
    }

    /// Incidents, newest first; `status` filters on firing / resolved.
    pub fn alerts(&self, status: Option<&str>, limit: usize) -> Result<Vec<AlertRow>, AlertError> {
        let mut stmt = self.conn.prepare(
            "SELECT key, camera, ward, rule, severity, status, started_at, ended_at, summary, events, duplicates, \
             muted_by, last_notice_id FROM alert_alerts WHERE ?1 IS NULL OR status = ?1 \
             ORDER BY updated_at DESC, key LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![status, limit as i64], |r| {
            Ok(AlertRow {
                key: r.get(0)?,
                camera: r.get(1)?,
                ward: r.get(2)?,
                rule: r.get(3)?,
                severity: r.get(4)?,
                status: r.get(5)?,
                started_at: Timestamp(r.get(6)?),
                ended_at: r.get::<_, Option<i64>>(7)?.map(Timestamp),
                summary: r.get(8)?,
                events: r.get(9)?,
                duplicates: r.get(10)?,
                muted_by: r.get(11)?,
                last_notice_id: r.get(12)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Keys of the alerts still firing.
    pub fn firing_keys(&self) -> Result<Vec<String>, AlertError> {
        let mut stmt = self
            .conn
            .prepare("SELECT key FROM alert_alerts WHERE status = 'firing' ORDER BY started_at")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Notices in decision order.
    pub fn notices(&self) -> Result<Vec<NoticeRow>, AlertError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, created_at, kind, route, group_key, receiver, status, firing, resolved, payload \
             FROM alert_notices ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(NoticeRow {
                id: r.get(0)?,
                created_at: Timestamp(r.get(1)?),
                kind: r.get(2)?,
                route: r.get(3)?,
                group_key: r.get(4)?,
                receiver: r.get(5)?,
                status: r.get(6)?,
                firing: r.get(7)?,
                resolved: r.get(8)?,
                payload: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One page of deliveries, newest first: at most `limit` with an id below `before` (all when `None`);
    /// `state` filters. The next page starts before the last id of this one.
    pub fn deliveries_page(
        &self,
        state: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<DeliveryRow>, AlertError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries WHERE (?1 IS NULL OR state = ?1) \
             AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(
            params![state, before, limit.min(i64::MAX as usize) as i64],
            delivery_from_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Notices that made no delivery: held by flood control or with no receiver.
    pub fn notices_without_delivery(&self) -> Result<i64, AlertError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM alert_notices WHERE status != 'queued'",
            [],
            |r| r.get(0),
        )?)
    }

    /// Deliveries in decision order; `state` filters.
    pub fn deliveries(&self, state: Option<&str>) -> Result<Vec<DeliveryRow>, AlertError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries WHERE ?1 IS NULL OR state = ?1 ORDER BY id"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params![state], delivery_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deliveries decided so far, and how many of them are not yet sent (pending or sending): cheap, from
    /// the indexes, for health checks and benchmarks.
    pub fn backlog(&self) -> Result<(i64, i64), AlertError> {
        let decided: i64 = self.conn.query_row(
            "SELECT COALESCE(MAX(id), 0) FROM alert_deliveries",
            [],
            |r| r.get(0),
        )?;
        let unsent: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM alert_deliveries WHERE state IN ('pending', 'sending')",
            [],
            |r| r.get(0),
        )?;
        Ok((decided, unsent))
    }

    /// Deliveries not yet sent, per receiver and state (`pending` or `sending`), from the receiver index.
    pub fn outbox_depth(&self) -> Result<Vec<(String, String, i64)>, AlertError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT receiver, state, COUNT(*) FROM alert_deliveries \
             WHERE state IN ('pending', 'sending') GROUP BY receiver, state ORDER BY receiver, state",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deliveries per state.
    pub fn delivery_counts(&self) -> Result<std::collections::BTreeMap<String, i64>, AlertError> {
        let mut stmt = self
            .conn
            .prepare("SELECT state, COUNT(*) FROM alert_deliveries GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn delivery(&self, id: i64) -> Result<Option<DeliveryRow>, AlertError> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM alert_deliveries WHERE id = ?1");
        Ok(self
            .conn
            .query_row(&sql, [id], delivery_from_row)
            .optional()?)
    }

    /// Every state change of one delivery, oldest first.
    pub fn delivery_events(&self, id: i64) -> Result<Vec<DeliveryEvent>, AlertError> {
        let mut stmt = self.conn.prepare(
            "SELECT delivery_id, at, state, detail FROM alert_delivery_events WHERE delivery_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok(DeliveryEvent {
                delivery_id: r.get(0)?,
                at: Timestamp(r.get(1)?),
                state: r.get(2)?,
                detail: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Silences; without `all`, only those not expired by hand.
    pub fn silences(&self, all: bool) -> Result<Vec<Silence>, AlertError> {
        load_silences(&self.conn, all)
    }

    /// Creates a silence; the running router applies it at its next notice decision.
    pub fn add_silence(
        &self,
        matchers: &Matchers,
        starts_at: Timestamp,
        ends_at: Timestamp,
        created_by: &str,
        comment: &str,
        now: Timestamp,
    ) -> Result<i64, AlertError> {
        if matchers == &Matchers::default() {
            return Err(AlertError::Invalid(
                "a silence needs at least one matcher".into(),
            ));
        }
        if ends_at <= starts_at {
            return Err(AlertError::Invalid(
                "a silence must end after it starts".into(),
            ));
        }
        let m = serde_json::to_string(matchers).map_err(|e| AlertError::Invalid(e.to_string()))?;
        self.conn.execute(
            "INSERT INTO alert_silences (matchers, starts_at, ends_at, created_by, comment, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![m, starts_at.0, ends_at.0, created_by, comment, now.0],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Ends a silence now. Errors if it does not exist or was already expired.
    pub fn expire_silence(&self, id: i64, now: Timestamp) -> Result<(), AlertError> {
        let n = self.conn.execute(
            "UPDATE alert_silences SET expired_at = ?2, ends_at = MIN(ends_at, ?2) WHERE id = ?1 AND expired_at IS NULL",
            params![id, now.0],
        )?;
        if n == 0 {
            return Err(AlertError::Invalid(format!("no active silence {id}")));
        }
        Ok(())
    }

    /// Puts a dead-lettered delivery back in the queue (after the cause was fixed), keeping its idempotency key.
    pub fn retry_delivery(&self, id: i64, now: Timestamp) -> Result<(), AlertError> {
        let n = self.conn.execute(
            "UPDATE alert_deliveries SET state = 'pending', next_attempt_at = ?2, updated_at = ?2, retried_at = ?2 \
             WHERE id = ?1 AND state IN ('dead', 'undelivered')",
            params![id, now.0],
        )?;
        if n == 0 {
            return Err(AlertError::Invalid(format!(
                "delivery {id} is not dead-lettered or undelivered"
            )));
        }
        self.conn.execute(
            "INSERT INTO alert_delivery_events (delivery_id, at, state, detail) VALUES (?1, ?2, 'pending', 'retried by hand')",
            params![id, now.0],
        )?;
        Ok(())
    }
}

/// What the retention task prunes from the alert tables. Each keeps what is still live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prunable {
    /// State changes older than the cutoff, of deliveries in a final state.
    DeliveryEvents,
    /// Deliveries in a final state (accepted, delivered, undelivered, dead) last changed before the cutoff,
    /// with all their events. Pending, sending and queued ones (the gateway still holds them) stay.
    Deliveries,
    /// Notices decided before the cutoff that have no delivery left, with their links to alerts.
    Notices,
    /// Notification-log entries written before the cutoff: a group still firing is notified again every
    /// `repeat_interval`, which rewrites its entry, so an entry this old belongs to no live group.
    NotificationLog,
    /// Alerts resolved before the cutoff, with their handling history (`alert_actions`) and links to
    /// notices; firing ones stay, however old.
    Alerts,
    /// Live-feed change log rows written before the cutoff (a client away longer cannot resume).
    Feed,
}

/// States a delivery does not leave by itself (`suppressed`: another router told its incidents).
const FINAL_STATES: &str = "'accepted', 'delivered', 'undelivered', 'dead', 'suppressed'";

impl Prunable {
    /// The table, its id column, and the condition (cutoff `?1`) a row must meet to go.
    fn parts(self) -> (&'static str, &'static str, String) {
        match self {
            Prunable::DeliveryEvents => (
                "alert_delivery_events",
                "id",
                format!(
                    "at < ?1 AND NOT EXISTS (SELECT 1 FROM alert_deliveries d \
                     WHERE d.id = delivery_id AND d.state NOT IN ({FINAL_STATES}))"
                ),
            ),
            Prunable::Deliveries => (
                "alert_deliveries",
                "id",
                format!("updated_at < ?1 AND state IN ({FINAL_STATES})"),
            ),
            Prunable::Notices => (
                "alert_notices",
                "id",
                "created_at < ?1 AND NOT EXISTS (SELECT 1 FROM alert_deliveries d \
                 WHERE d.notice_id = alert_notices.id)"
                    .into(),
            ),
            Prunable::NotificationLog => ("alert_nflog", "rowid", "notified_at < ?1".into()),
            Prunable::Alerts => (
                "alert_alerts",
                "rowid",
                "status = 'resolved' AND updated_at < ?1".into(),
            ),
            Prunable::Feed => ("alert_feed", "id", "at < ?1".into()),
        }
    }
}

/// What one pruning batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PruneBatch {
    pub deleted: usize,
    /// Where the next batch resumes (`from`), or `None`: nothing older is left.
    pub next: Option<i64>,
}

impl Store {
    /// Deletes at most `limit` rows of `what` older than `before` whose id is above `from` (start at 0).
    /// The candidates are read first, without the write lock (WAL readers block no one), then deleted in one
    /// short transaction that checks the condition again, so the router and the notifier wait for the write
    /// lock no longer than one batch of deletes and a row that came back to life meanwhile (a delivery
    /// retried by hand) stays. Resuming from the last id makes a whole run one pass over each table.
    pub fn prune_batch(
        &mut self,
        what: Prunable,
        before: Timestamp,
        from: i64,
        limit: usize,
    ) -> Result<PruneBatch, AlertError> {
        let (table, id, cond) = what.parts();
        let candidates: Vec<i64> = self
            .conn
            .prepare(&format!(
                "SELECT {id} FROM {table} WHERE {id} > ?3 AND {cond} ORDER BY {id} LIMIT ?2"
            ))?
            .query_map(params![before.0, limit as i64, from], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let Some(&last) = candidates.last() else {
            return Ok(PruneBatch {
                deleted: 0,
                next: None,
            });
        };
        let ids = serde_json::to_string(&candidates).unwrap_or_default();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // An alert's handling history and notice links go with it, and a notice's links with the notice:
        // chosen by the same condition, before the rows they name are gone.
        match what {
            Prunable::Alerts => {
                for child in ["alert_actions", "alert_notice_alerts"] {
                    tx.execute(
                        &format!(
                            "DELETE FROM {child} WHERE alert_key IN (SELECT key FROM {table} \
                             WHERE {id} IN (SELECT value FROM json_each(?2)) AND {cond})"
                        ),
                        params![before.0, ids],
                    )?;
                }
            }
            Prunable::Notices => {
                tx.execute(
                    &format!(
                        "DELETE FROM alert_notice_alerts WHERE notice_id IN (SELECT {id} FROM {table} \
                         WHERE {id} IN (SELECT value FROM json_each(?2)) AND {cond})"
                    ),
                    params![before.0, ids],
                )?;
            }
            _ => {}
        }
        let deleted: Vec<i64> = tx
            .prepare(&format!(
                "DELETE FROM {table} WHERE {id} IN (SELECT value FROM json_each(?2)) AND {cond} RETURNING {id}"
            ))?
            .query_map(params![before.0, ids], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if what == Prunable::Deliveries {
            let mut events =
                tx.prepare("DELETE FROM alert_delivery_events WHERE delivery_id = ?1")?;
            for d in &deleted {
                events.execute([d])?;
            }
        }
        tx.commit()?;
        Ok(PruneBatch {
            deleted: deleted.len(),
            next: (candidates.len() == limit).then_some(last),
        })
    }
}

/// Flood-control windows as the router last committed them.
pub(crate) fn load_flood_windows(conn: &Connection) -> Result<HashMap<String, Window>, AlertError> {
    let mut stmt = conn.prepare(
        "SELECT receiver, window_start, sent, critical_sent, held, held_by_ward, held_alerts FROM alert_flood",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            Window {
                start: Timestamp(r.get(1)?),
                sent: r.get(2)?,
                critical_sent: r.get(3)?,
                held: r.get(4)?,
                held_by_ward: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
                held_alerts: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
            },
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Replaces the stored flood windows (a handful of rows) in the caller's transaction.
pub(crate) fn save_flood_windows<'a>(
    tx: &rusqlite::Transaction<'_>,
    windows: impl Iterator<Item = (&'a String, &'a Window)>,
) -> Result<(), AlertError> {
    tx.execute("DELETE FROM alert_flood", [])?;
    for (r, w) in windows {
        tx.execute(
            "INSERT INTO alert_flood (receiver, window_start, sent, critical_sent, held, held_by_ward, held_alerts) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                r,
                w.start.0,
                w.sent,
                w.critical_sent,
                w.held,
                serde_json::to_string(&w.held_by_ward).unwrap_or_default(),
                serde_json::to_string(&w.held_alerts).unwrap_or_default()
            ],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_key_is_made_once_per_database() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("sw.db");
        let first = keys(&open(&path).unwrap()).unwrap().dlr_token(1);
        assert_eq!(keys(&open(&path).unwrap()).unwrap().dlr_token(1), first);
        let other = dir.path().join("other.db");
        assert_ne!(keys(&open(&other).unwrap()).unwrap().dlr_token(1), first);
    }

    #[test]
    fn a_file_from_before_an_added_column_gets_it() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("sw.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE alert_flood (receiver TEXT PRIMARY KEY, window_start INTEGER NOT NULL, \
                 sent INTEGER NOT NULL, held INTEGER NOT NULL, held_by_ward TEXT NOT NULL);
                 INSERT INTO alert_flood VALUES ('post', 1000, 10, 2, '{\"W\":2}');",
            )
            .unwrap();
        let conn = open(&path).unwrap();
        let w = &load_flood_windows(&conn).unwrap()["post"];
        assert_eq!((w.sent, w.critical_sent, w.held), (10, 0, 2));
        assert!(w.held_alerts.is_empty());
        drop(conn);
        open(&path).unwrap();
    }

    #[test]
    fn many_first_opens_at_once_all_succeed() {
        for _ in 0..5 {
            let dir = tempfile::TempDir::new().unwrap();
            let path = dir.path().join("sw.db");
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let p = path.clone();
                    std::thread::spawn(move || open(&p).map(|_| ()))
                })
                .collect();
            for t in threads {
                t.join().unwrap().unwrap();
            }
        }
    }
}
