//! Flood control: at most `max_notices` notices per receiver per window; the rest are held (recorded, not
//! sent) and, when the window ends, the receiver gets one summary of what was held. A police post's phone
//! that buzzes forty times in ten minutes is a phone nobody reads.
//!
//! Windows are fixed and start at a receiver's first notice. Their state is written in the same transaction
//! as the notices it decides about, so a restart neither forgets held notices nor grants a fresh budget.

use std::collections::{BTreeMap, HashMap};

use crate::types::Timestamp;

use crate::alert::config::FloodConfig;

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
    /// Flood control with `windows` as last committed (empty on a new database).
    pub(crate) fn new(cfg: &FloodConfig, windows: HashMap<String, Window>) -> Self {
        Self {
            max: cfg.max_notices,
            window_ms: cfg.window.ms(),
            windows,
        }
    }

    pub(crate) fn windows(&self) -> impl Iterator<Item = (&String, &Window)> {
        self.windows.iter()
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_past_the_budget_and_summarises_at_window_end() {
        let cfg = FloodConfig {
            max_notices: 2,
            window: crate::alert::config::Dur::secs(60),
        };
        let mut f = Flood::new(&cfg, HashMap::new());
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
