//! The router core: synchronous, clock-free (time is an argument), so timelines are tested by calling
//! `submit(ev, t)` and `tick(t)` with made-up times. The service wraps it in a thread.
//!
//! Stage order, as events arrive: dedup (by incident key) → route (receiver, grouping, timings; routes are
//! chosen before grouping, as in Alertmanager, so each route can group and time its own way) → group.
//! As a group falls due: inhibit → silence (both judged at notice time, so a silence added or a camera that
//! went down while the group waited still counts) → dedup against the notification log → flood control →
//! outbox. Each decision and its outbox rows are one SQLite transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::types::{CameraId, IncidentEvent, IncidentPhase, Severity, Timestamp};

use super::config::AlertConfig;
use super::decide::dedup::{Admission, Dedup, LogEntry, judge, needs_notice};
use super::decide::flood::Flood;
use super::decide::group::Groups;
use super::decide::inhibit::{CameraHealth, Inhibitor};
use super::decide::route::{Route, local_minute};
use super::decide::silence::silenced_by;
use super::deliver::outbox;
use super::error::AlertError;
use super::keys::Keys;
use super::model::{Alert, NoticeKind, NoticePayload};
use super::store;
use super::wording::template::Ctx;

/// Counters since the router opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    pub events: u64,
    pub duplicates: u64,
    pub notices_queued: u64,
    pub notices_held: u64,
    pub notices_unrouted: u64,
    pub flood_summaries: u64,
    pub deliveries: u64,
}

pub struct Router {
    cfg: AlertConfig,
    conn: Connection,
    root: Route,
    dedup: Dedup,
    inhibit: Inhibitor,
    groups: Groups,
    nflog: HashMap<(String, String), LogEntry>,
    flood: Flood,
    stats: RouterStats,
    /// Keys new alerts' snapshot links.
    keys: Keys,
    /// Record the close of an incident never seen open as a resolved alert (told to nobody), so that a
    /// later event of it is known as late. Routers sharing a stream see only some events of an incident.
    remember_unknown_closes: bool,
}

const ALERT_COLUMNS: &str = "key, camera, camera_name, ward, rule, zone, kind, severity, started_at, updated_at, \
     ended_at, summary, count, snapshot, snapshot_token";

fn alert_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Alert> {
    let sev: String = r.get(7)?;
    Ok(Alert {
        key: r.get(0)?,
        camera: r.get(1)?,
        camera_name: r.get(2)?,
        ward: r.get(3)?,
        rule: r.get(4)?,
        zone: r.get(5)?,
        kind: r.get(6)?,
        severity: match sev.as_str() {
            "critical" => Severity::Critical,
            "warning" => Severity::Warning,
            _ => Severity::Info,
        },
        started_at: Timestamp(r.get(8)?),
        updated_at: Timestamp(r.get(9)?),
        ended_at: r.get::<_, Option<i64>>(10)?.map(Timestamp),
        summary: r.get(11)?,
        count: r.get(12)?,
        snapshot: r.get(13)?,
        snapshot_token: r.get(14)?,
    })
}

fn save_alert(tx: &Transaction<'_>, a: &Alert) -> Result<(), AlertError> {
    tx.prepare_cached(
        "INSERT INTO alert_alerts (key, camera, camera_name, ward, rule, zone, kind, severity, status, started_at, \
         updated_at, ended_at, summary, count, snapshot, snapshot_token) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
         ON CONFLICT(key) DO UPDATE SET severity = ?8, status = ?9, updated_at = ?11, ended_at = ?12, \
         summary = ?13, count = ?14, events = events + 1",
    )?
    .execute(params![
        a.key,
        a.camera,
        a.camera_name,
        a.ward,
        a.rule,
        a.zone,
        a.kind,
        a.severity.as_str(),
        if a.firing() { "firing" } else { "resolved" },
        a.started_at.0,
        a.updated_at.0,
        a.ended_at.map(|t| t.0),
        a.summary,
        a.count,
        a.snapshot,
        a.snapshot_token
    ])?;
    Ok(())
}

/// When the alert's incident began: the episode its key ends with, the same on every router (an alert
/// first seen from an update starts later than the incident).
fn episode(a: &Alert) -> Timestamp {
    a.key
        .rsplit('/')
        .next()
        .and_then(|t| t.parse().ok())
        .map_or(a.started_at, Timestamp)
}

fn keys(alerts: &[Alert]) -> BTreeSet<String> {
    alerts.iter().map(|a| a.key.clone()).collect()
}

impl Router {
    /// Opens the database and restores the state a previous run left: known alerts, groups of live alerts
    /// (due again after their `group_wait`), the notification log and flood windows.
    pub fn open(cfg: &AlertConfig, db_path: &Path, now: Timestamp) -> Result<Self, AlertError> {
        cfg.validate()?;
        let conn = store::open(db_path)?;
        let keys = store::keys(&conn)?;
        let mut dedup = Dedup::default();
        {
            let sql = format!(
                "SELECT {ALERT_COLUMNS} FROM alert_alerts WHERE status = 'firing' OR ended_at >= ?1 ORDER BY started_at"
            );
            let mut stmt = conn.prepare(&sql)?;
            let cutoff = now.plus_ms(-cfg.resolved_retention.ms());
            for a in stmt.query_map([cutoff.0], alert_from_row)? {
                dedup.insert(a?);
            }
        }
        let flood = Flood::new(&cfg.flood, store::load_flood_windows(&conn)?);
        let mut router = Self {
            root: Route::compile(&cfg.route),
            inhibit: Inhibitor::new(&cfg.inhibit),
            cfg: cfg.clone(),
            conn,
            dedup,
            groups: Groups::default(),
            nflog: HashMap::new(),
            flood,
            stats: RouterStats::default(),
            keys,
            remember_unknown_closes: false,
        };
        let restored: Vec<Alert> = router.dedup.firing().cloned().collect();
        for a in &restored {
            router.route_alert(a, now);
        }
        // An alert whose close committed but whose group had not fallen due yet: its group is restored
        // with it, and the notification log says whether its resolved notice was already told (the close
        // was acknowledged upstream once committed, so this is the only place it is still known).
        let resolved: Vec<Alert> = router.dedup.resolved().cloned().collect();
        for a in &resolved {
            router.route_alert(a, now);
        }
        router.load_notification_log()?;
        router.keep_untold_resolved();
        Ok(router)
    }

    /// Reads the notification log of the restored groups only. Any other entry belongs to a group with no
    /// alert left (every alert it told about has resolved), and such an entry changes no decision: a new
    /// alert is news with or without it, and there is nothing left to resolve. So the table may hold one
    /// row per group ever notified (one per incident with `group_by = ["..."]`) while memory holds the live
    /// groups' rows.
    fn load_notification_log(&mut self) -> Result<(), AlertError> {
        let mut stmt = self.conn.prepare(
            "SELECT firing, resolved, notified_at FROM alert_nflog WHERE group_key = ?1 AND receiver = ?2",
        )?;
        for g in self.groups.iter() {
            let log_key = (g.key.clone(), g.receiver.clone().unwrap_or_default());
            let row = stmt
                .query_row(params![log_key.0, log_key.1], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .optional()?;
            if let Some((f, res, at)) = row {
                self.nflog.insert(
                    log_key,
                    LogEntry {
                        firing: serde_json::from_str(&f).unwrap_or_default(),
                        resolved: serde_json::from_str(&res).unwrap_or_default(),
                        notified_at: Timestamp(at),
                    },
                );
            }
        }
        Ok(())
    }

    /// Leaves in the restored groups only the resolved alerts whose resolved notice is still owed: told
    /// firing, not told resolved. Groups left with nothing are dropped.
    fn keep_untold_resolved(&mut self) {
        let keys: Vec<String> = self.groups.iter().map(|g| g.key.clone()).collect();
        for gk in keys {
            let Some(g) = self.groups.get_mut(&gk) else {
                continue;
            };
            let entry = self
                .nflog
                .get(&(gk.clone(), g.receiver.clone().unwrap_or_default()));
            // A receiver that is not told closes (or no receiver at all) is owed nothing: its log never
            // records them as told.
            let send_resolved = g
                .receiver
                .as_deref()
                .and_then(|r| self.cfg.receiver(r))
                .is_some_and(|r| r.send_resolved);
            let dedup = &self.dedup;
            g.alerts.retain(|k| {
                dedup.get(k).is_some_and(Alert::firing)
                    || (send_resolved
                        && entry.is_some_and(|e| e.firing.contains(k) && !e.resolved.contains(k)))
            });
            if g.alerts.is_empty() {
                self.groups.remove(&gk);
            }
        }
        // The log holds live groups only: a group dropped here takes its entry with it.
        let groups = &self.groups;
        self.nflog.retain(|(gk, _), _| groups.contains(gk));
    }

    /// Records the close of an incident it never saw open (see `remember_unknown_closes`) instead of
    /// dropping it: for a router that sees only some events of each incident.
    pub fn remember_unknown_closes(&mut self, on: bool) {
        self.remember_unknown_closes = on;
    }

    /// Notification-log entries held in memory: one per live group at most.
    pub fn notification_log_len(&self) -> usize {
        self.nflog.len()
    }

    fn route_alert(&mut self, a: &Alert, now: Timestamp) {
        let minute = local_minute(now, self.cfg.utc_offset_minutes);
        for route in self.root.routes_for(a, minute) {
            let (gk, labels) = route.group_key(a);
            self.groups.insert(route, gk, labels, &a.key, now);
        }
    }

    /// One event through dedup, routing and grouping.
    pub fn submit(&mut self, ev: &IncidentEvent, now: Timestamp) -> Result<Admission, AlertError> {
        Ok(self.submit_batch(std::slice::from_ref(ev), now)?[0])
    }

    /// Several events in one transaction (one fsync). Memory follows only once the transaction committed:
    /// if it fails, nothing changed and the same events can be submitted again.
    pub fn submit_batch(
        &mut self,
        events: &[IncidentEvent],
        now: Timestamp,
    ) -> Result<Vec<Admission>, AlertError> {
        let mut out = Vec::with_capacity(events.len());
        // This batch's new alert states, by key: later events of the batch see them, memory gets them after
        // the commit.
        let mut staged: HashMap<String, Alert> = HashMap::new();
        let mut new_alerts = Vec::new();
        let mut stats = self.stats;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for ev in events {
            stats.events += 1;
            let key = ev.key.to_string();
            if !staged.contains_key(&key) && !self.dedup.contains(&key) {
                // Forgotten after `resolved_retention`, but the database remembers.
                let sql = format!("SELECT {ALERT_COLUMNS} FROM alert_alerts WHERE key = ?1");
                if let Some(a) = tx
                    .prepare_cached(&sql)?
                    .query_row([&key], alert_from_row)
                    .optional()?
                {
                    staged.insert(key.clone(), a);
                }
            }
            let current = staged.get(&key).or_else(|| self.dedup.get(&key));
            let unknown = current.is_none();
            match judge(current, ev, &self.keys) {
                (Admission::Duplicate(why), _)
                    if unknown
                        && ev.phase == IncidentPhase::Closed
                        && self.remember_unknown_closes =>
                {
                    stats.duplicates += 1;
                    tracing::debug!(incident = %key, why, "close of an incident seen elsewhere: remembered");
                    let mut a = Alert::from_event(ev, &self.keys);
                    a.ended_at = Some(ev.at);
                    save_alert(&tx, &a)?;
                    staged.insert(key, a);
                    out.push(Admission::Duplicate(why));
                }
                (Admission::Duplicate(why), _) => {
                    stats.duplicates += 1;
                    tracing::debug!(incident = %key, why, "duplicate incident event dropped");
                    tx.prepare_cached(
                        "UPDATE alert_alerts SET duplicates = duplicates + 1 WHERE key = ?1",
                    )?
                    .execute([&key])?;
                    out.push(Admission::Duplicate(why));
                }
                (admission, next) => {
                    if let Some(a) = next {
                        save_alert(&tx, &a)?;
                        if admission == Admission::New {
                            new_alerts.push(key.clone());
                        }
                        staged.insert(key, a);
                    }
                    out.push(admission);
                }
            }
        }
        tx.commit()?;
        // Committed: now the in-memory state may follow.
        self.stats = stats;
        for a in staged.into_values() {
            self.dedup.insert(a);
        }
        for key in &new_alerts {
            if let Some(a) = self.dedup.get(key).cloned() {
                self.route_alert(&a, now);
            }
        }
        Ok(out)
    }

    /// Bounds how long a statement waits for another writer's lock (normally 10 s).
    pub(crate) fn limit_busy_wait(&self, limit: std::time::Duration) {
        if let Err(e) = self.conn.busy_timeout(limit) {
            tracing::warn!(error = %e, "alert router: cannot shorten the database busy timeout");
        }
    }

    /// Records a camera's health for inhibition; applies at the next notice decision.
    pub fn set_camera_health(&mut self, camera: &CameraId, health: CameraHealth) {
        self.inhibit.set_health(camera.as_str(), health);
    }

    /// Closes, dated `at`, for the alerts of `camera` still firing that started before `before`: the
    /// node that ran the camera then was lost and another runs it since, so no close of theirs will come.
    pub fn orphan_closes(
        &self,
        camera: &CameraId,
        before: Timestamp,
        at: Timestamp,
    ) -> Vec<IncidentEvent> {
        self.dedup
            .firing_on(camera.as_str())
            .filter(|a| a.started_at < before)
            .filter_map(|a| {
                a.closing_event(
                    at,
                    "closed: its analysis node was lost and the camera moved",
                )
            })
            .collect()
    }

    /// When `tick` next has something to do.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        match (self.groups.next_deadline(), self.flood.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn stats(&self) -> RouterStats {
        self.stats
    }

    /// Flushes the groups due at `now` and closes flood windows; returns the ids of notices written.
    pub fn tick(&mut self, now: Timestamp) -> Result<Vec<i64>, AlertError> {
        let due = self.groups.due(now);
        let mut flood = self.flood.clone();
        let summaries = flood.close_windows(now);
        let pruned = self
            .dedup
            .prune(now.plus_ms(-self.cfg.resolved_retention.ms()));
        if due.is_empty() && summaries.is_empty() {
            return Ok(Vec::new());
        }
        let silences = if due.is_empty() {
            Vec::new()
        } else {
            store::load_silences(&self.conn, false)?
        };
        let mut stats = self.stats;
        let mut ids = Vec::new();
        let mut log_updates = Vec::new();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for gk in &due {
            let Some(g) = self.groups.get_mut(gk) else {
                continue;
            };
            g.alerts.retain(|k| !pruned.contains(k));
            let (mut firing, mut resolved) = (Vec::new(), Vec::new());
            for key in &g.alerts {
                let Some(a) = self.dedup.get(key) else {
                    continue;
                };
                let muted = self
                    .inhibit
                    .muted_by(a, &self.dedup)
                    .or_else(|| silenced_by(&silences, a, now).map(|id| format!("silence {id}")));
                tx.prepare_cached("UPDATE alert_alerts SET muted_by = ?2 WHERE key = ?1")?
                    .execute(params![key, muted])?;
                if muted.is_some() {
                    continue;
                }
                if a.firing() {
                    firing.push(a.clone())
                } else {
                    resolved.push(a.clone())
                }
            }
            let receiver = g.receiver.as_deref().and_then(|r| self.cfg.receiver(r));
            let send_resolved = receiver.is_some_and(|r| r.send_resolved);
            let log_key = (gk.clone(), g.receiver.clone().unwrap_or_default());
            let (fset, rset) = (keys(&firing), keys(&resolved));
            if !needs_notice(
                self.nflog.get(&log_key),
                &fset,
                &rset,
                send_resolved,
                g.repeat_interval.ms(),
                now,
            ) {
                continue;
            }
            // Sent only because the repeat interval passed: nothing new fires, nothing newly resolved.
            let repeat = self.nflog.get(&log_key).is_some_and(|p| {
                fset.is_subset(&p.firing)
                    && !(send_resolved
                        && rset
                            .iter()
                            .any(|k| p.firing.contains(k) && !p.resolved.contains(k)))
            });
            if !send_resolved {
                resolved.clear();
            }
            let mut payload = NoticePayload::alerts(gk.clone(), g.labels.clone(), firing, resolved);
            if repeat {
                let every = g.repeat_interval.ms().max(1);
                for a in &payload.firing {
                    let n = now.since(episode(a)) / every;
                    payload.repeats.insert(a.key.clone(), n);
                }
            }
            let status = match &g.receiver {
                None => "unrouted",
                Some(r) if flood.admit(r, &payload, now) => "queued",
                Some(_) => "held",
            };
            let id = outbox::insert_notice(
                &tx,
                now,
                "alerts",
                &g.route_id,
                gk,
                g.receiver.as_deref(),
                status,
                &payload,
            )?;
            for a in payload.firing.iter().chain(payload.resolved.iter()) {
                tx.prepare_cached("UPDATE alert_alerts SET last_notice_id = ?2 WHERE key = ?1")?
                    .execute(params![a.key, id])?;
            }
            match (status, receiver) {
                ("queued", Some(r)) => {
                    stats.notices_queued += 1;
                    stats.deliveries += write_deliveries(&self.cfg, &tx, id, r, &payload, now)?;
                    ids.push(id);
                }
                ("held", _) => stats.notices_held += 1,
                _ => {
                    stats.notices_unrouted += 1;
                    tracing::info!(notice = id, group = %gk, firing = payload.firing.len(),
                        "notice decided with no receiver configured for its route (recorded, not sent)");
                }
            }
            let entry = LogEntry {
                firing: fset,
                resolved: if send_resolved { rset } else { BTreeSet::new() },
                notified_at: now,
            };
            tx.prepare_cached(
                "INSERT INTO alert_nflog (group_key, receiver, firing, resolved, notified_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT(group_key, receiver) DO UPDATE SET firing = ?3, resolved = ?4, notified_at = ?5",
            )?
            .execute(params![
                log_key.0,
                log_key.1,
                serde_json::to_string(&entry.firing).unwrap_or_default(),
                serde_json::to_string(&entry.resolved).unwrap_or_default(),
                now.0
            ])?;
            log_updates.push((log_key, entry));
        }
        for (receiver, w) in &summaries {
            let payload = NoticePayload {
                kind: NoticeKind::FloodSummary,
                group_key: format!("flood:{receiver}"),
                group_labels: BTreeMap::new(),
                firing: Vec::new(),
                resolved: Vec::new(),
                held: w.held,
                held_since: Some(w.start),
                held_by_ward: w.held_by_ward.clone(),
                held_alerts: w.held_alerts.clone(),
                repeats: BTreeMap::new(),
            };
            let id = outbox::insert_notice(
                &tx,
                now,
                "flood_summary",
                "-",
                &payload.group_key,
                Some(receiver),
                "queued",
                &payload,
            )?;
            if let Some(r) = self.cfg.receiver(receiver) {
                stats.deliveries += write_deliveries(&self.cfg, &tx, id, r, &payload, now)?;
            }
            stats.flood_summaries += 1;
            ids.push(id);
        }
        store::save_flood_windows(&tx, flood.windows())?;
        tx.commit()?;
        // Committed: now the in-memory state may follow.
        self.flood = flood;
        self.stats = stats;
        self.nflog.extend(log_updates);
        for gk in &due {
            let Some(g) = self.groups.get_mut(gk) else {
                continue;
            };
            let dedup = &self.dedup;
            g.alerts.retain(|k| dedup.get(k).is_some_and(Alert::firing));
            if g.alerts.is_empty() {
                // Its log entry can no longer change a decision (see `load_notification_log`).
                let log_key = (gk.clone(), g.receiver.clone().unwrap_or_default());
                self.nflog.remove(&log_key);
                self.groups.remove(gk);
            } else {
                let next = now.plus_ms(g.group_interval.ms());
                self.groups.reschedule(gk, next);
            }
        }
        Ok(ids)
    }
}

fn write_deliveries(
    cfg: &AlertConfig,
    tx: &Transaction<'_>,
    notice_id: i64,
    receiver: &super::config::ReceiverConfig,
    payload: &NoticePayload,
    now: Timestamp,
) -> Result<u64, AlertError> {
    let ctx = Ctx {
        notice_id,
        offset_minutes: cfg.utc_offset_minutes,
        link_base: cfg.snapshot_base_url.as_deref(),
        created_at: now,
    };
    let deliveries = outbox::deliveries_for(receiver, payload, &ctx);
    for d in &deliveries {
        outbox::insert_delivery(tx, notice_id, &receiver.name, d, now)?;
    }
    Ok(deliveries.len() as u64)
}
