//! Flood control: at most `max_notices` notices per receiver per window; the rest are held (recorded, not
//! sent) and, when the window ends, the receiver gets one summary of what was held. A police post's phone
//! that buzzes forty times in ten minutes is a phone nobody reads.
//!
//! Windows are fixed and start at a receiver's first notice. Their state is written in the same transaction
//! as the notices it decides about, so a restart neither forgets held notices nor grants a fresh budget.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, Transaction, params};

use crate::types::Timestamp;

use super::AlertError;
use super::config::FloodConfig;

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Window {
    pub start: Timestamp,
    pub sent: u32,
    pub held: u32,
    pub held_by_ward: BTreeMap<String, u32>,
}

#[derive(Clone)]
pub(crate) struct Flood {
    max: u32,
    window_ms: i64,
    windows: HashMap<String, Window>,
}

impl Flood {
    pub(crate) fn restore(cfg: &FloodConfig, conn: &Connection) -> Result<Self, AlertError> {
        let mut stmt = conn
            .prepare("SELECT receiver, window_start, sent, held, held_by_ward FROM alert_flood")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut windows = HashMap::new();
        for row in rows {
            let (receiver, start, sent, held, wards) = row?;
            let held_by_ward = serde_json::from_str(&wards).unwrap_or_default();
            windows.insert(
                receiver,
                Window {
                    start: Timestamp(start),
                    sent,
                    held,
                    held_by_ward,
                },
            );
        }
        Ok(Self {
            max: cfg.max_notices,
            window_ms: cfg.window.ms(),
            windows,
        })
    }

    /// Counts a notice for `receiver` at `now`: true to send it, false to hold it.
    pub(crate) fn admit(&mut self, receiver: &str, ward: &str, now: Timestamp) -> bool {
        if self.max == 0 {
            return true;
        }
        let w = self
            .windows
            .entry(receiver.to_string())
            .or_insert_with(|| Window {
                start: now,
                sent: 0,
                held: 0,
                held_by_ward: BTreeMap::new(),
            });
        if w.sent < self.max {
            w.sent += 1;
            true
        } else {
            w.held += 1;
            *w.held_by_ward.entry(ward.to_string()).or_default() += 1;
            false
        }
    }

    /// Ends the windows that are over; returns those that held notices (each owes a summary).
    pub(crate) fn close_windows(&mut self, now: Timestamp) -> Vec<(String, Window)> {
        let over: Vec<String> = self
            .windows
            .iter()
            .filter(|(_, w)| now.since(w.start) >= self.window_ms)
            .map(|(r, _)| r.clone())
            .collect();
        let mut out = Vec::new();
        for r in over {
            if let Some(w) = self.windows.remove(&r)
                && w.held > 0
            {
                out.push((r, w));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub(crate) fn next_deadline(&self) -> Option<Timestamp> {
        self.windows
            .values()
            .map(|w| w.start.plus_ms(self.window_ms))
            .min()
    }

    /// Writes the whole state (a handful of rows) in the caller's transaction.
    pub(crate) fn persist(&self, tx: &Transaction<'_>) -> Result<(), AlertError> {
        tx.execute("DELETE FROM alert_flood", [])?;
        for (r, w) in &self.windows {
            tx.execute(
                "INSERT INTO alert_flood (receiver, window_start, sent, held, held_by_ward) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![r, w.start.0, w.sent, w.held, serde_json::to_string(&w.held_by_ward).unwrap_or_default()],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_past_the_budget_and_summarises_at_window_end() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE alert_flood (receiver TEXT PRIMARY KEY, window_start INTEGER, sent INTEGER, held INTEGER, held_by_ward TEXT)",
        )
        .unwrap();
        let cfg = FloodConfig {
            max_notices: 2,
            window: super::super::config::Dur::secs(60),
        };
        let mut f = Flood::restore(&cfg, &conn).unwrap();
        let t = Timestamp(0);
        assert!(f.admit("post", "W", t));
        assert!(f.admit("post", "W", t.plus_ms(1000)));
        assert!(!f.admit("post", "W", t.plus_ms(2000)));
        assert!(!f.admit("post", "X", t.plus_ms(3000)));
        assert!(f.admit("other", "W", t.plus_ms(3000)));
        assert_eq!(f.next_deadline(), Some(Timestamp(60_000)));
        assert!(f.close_windows(Timestamp(59_999)).is_empty());
        let over = f.close_windows(Timestamp(60_000));
        assert_eq!(over.len(), 1);
        assert_eq!((over[0].0.as_str(), over[0].1.held), ("post", 2));
        assert!(f.admit("post", "W", Timestamp(60_001)));
    }
}
