//! Flood control: at most `max_notices` notices per receiver per window; the rest are held (recorded, not
//! sent) and, when the window ends, the receiver gets one summary naming what was held. A police post's
//! phone that buzzes forty times in ten minutes is a phone nobody reads.
//!
//! A notice about a critical incident is never held for the others' sake: criticals have a budget of their
//! own, `critical_max_notices` (by default none: always sent). A summary that only counted them would hide
//! exactly what must not wait.
//!
//! Windows are fixed and start at a receiver's first notice. Their state is written in the same transaction
//! as the notices it decides about, so a restart neither forgets held notices nor grants a fresh budget.

use std::collections::{BTreeMap, HashMap};

use crate::types::{Severity, Timestamp};

use crate::alert::config::FloodConfig;
use crate::alert::model::{HeldAlert, NoticePayload};

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Window {
    pub start: Timestamp,
    pub sent: u32,
    pub critical_sent: u32,
    pub held: u32,
    pub held_by_ward: BTreeMap<String, u32>,
    /// Each camera and rule once, so the list is bounded by the configuration, not by the flood.
    pub held_alerts: Vec<HeldAlert>,
}

#[derive(Clone)]
pub(crate) struct Flood {
    max: u32,
    critical_max: u32,
    window_ms: i64,
    windows: HashMap<String, Window>,
}

impl Flood {
    /// Flood control with `windows` as last committed (empty on a new database).
    pub(crate) fn new(cfg: &FloodConfig, windows: HashMap<String, Window>) -> Self {
        Self {
            max: cfg.max_notices,
            critical_max: cfg.critical_max_notices,
            window_ms: cfg.window.ms(),
            windows,
        }
    }

    pub(crate) fn windows(&self) -> impl Iterator<Item = (&String, &Window)> {
        self.windows.iter()
    }

    /// Counts `notice` for `receiver` at `now`: true to send it, false to hold it.
    pub(crate) fn admit(&mut self, receiver: &str, notice: &NoticePayload, now: Timestamp) -> bool {
        let critical = notice
            .firing
            .iter()
            .any(|a| a.severity == Severity::Critical);
        let budget = if critical {
            self.critical_max
        } else {
            self.max
        };
        if budget == 0 {
            return true;
        }
        let w = self
            .windows
            .entry(receiver.to_string())
            .or_insert_with(|| Window {
                start: now,
                sent: 0,
                critical_sent: 0,
                held: 0,
                held_by_ward: BTreeMap::new(),
                held_alerts: Vec::new(),
            });
        let sent = if critical {
            &mut w.critical_sent
        } else {
            &mut w.sent
        };
        if *sent < budget {
            *sent += 1;
            return true;
        }
        w.held += 1;
        let mut alerts = notice.firing.iter().chain(&notice.resolved).peekable();
        let ward = alerts.peek().map(|a| a.ward.clone()).unwrap_or_default();
        *w.held_by_ward.entry(ward).or_default() += 1;
        for a in alerts {
            let h = HeldAlert::of(a);
            if !w.held_alerts.contains(&h) {
                w.held_alerts.push(h);
            }
        }
        false
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
    use crate::alert::model::Alert;

    fn notice(camera: &str, ward: &str, severity: Severity) -> NoticePayload {
        let alert = Alert {
            key: format!("{camera}/crowd/plaza/0"),
            camera: camera.into(),
            camera_name: format!("Cam {camera}"),
            ward: ward.into(),
            rule: "crowd".into(),
            zone: "plaza".into(),
            kind: "crowding".into(),
            severity,
            started_at: Timestamp(0),
            updated_at: Timestamp(0),
            ended_at: None,
            summary: String::new(),
            count: 0,
            snapshot: None,
            snapshot_token: None,
        };
        NoticePayload::alerts(camera.into(), BTreeMap::new(), vec![alert], vec![])
    }

    #[test]
    fn holds_past_the_budget_and_summarises_at_window_end() {
        let cfg = FloodConfig {
            max_notices: 2,
            critical_max_notices: 1,
            window: crate::alert::config::Dur::secs(60),
        };
        let mut f = Flood::new(&cfg, HashMap::new());
        let t = Timestamp(0);
        let warn = |c: &str, w: &str| notice(c, w, Severity::Warning);
        let crit = |c: &str| notice(c, "W", Severity::Critical);
        assert!(f.admit("post", &warn("a", "W"), t));
        assert!(f.admit("post", &warn("b", "W"), t.plus_ms(1000)));
        assert!(!f.admit("post", &warn("c", "W"), t.plus_ms(2000)));
        assert!(f.admit("post", &crit("d"), t.plus_ms(2500)), "own budget");
        assert!(!f.admit("post", &crit("e"), t.plus_ms(2600)));
        assert!(!f.admit("post", &warn("c", "X"), t.plus_ms(3000)));
        assert!(f.admit("other", &warn("a", "W"), t.plus_ms(3000)));
        assert_eq!(f.next_deadline(), Some(Timestamp(60_000)));
        assert!(f.close_windows(Timestamp(59_999)).is_empty());
        let over = f.close_windows(Timestamp(60_000));
        assert_eq!(over.len(), 1);
        let (receiver, w) = &over[0];
        assert_eq!((receiver.as_str(), w.held), ("post", 3));
        let named: Vec<&str> = w.held_alerts.iter().map(|h| h.camera.as_str()).collect();
        assert_eq!(named, ["c", "e"], "each camera and rule once, in order");
        assert!(f.admit("post", &warn("a", "W"), Timestamp(60_001)));
    }
}
