//! Silences: an operator's "I know, stop telling me" for alerts matching camera, ward, rule or severity,
//! from a start to an end. Created and expired from the CLI (and later the API) in SQLite; the router reads
//! the active ones each time it decides on notices, so a silence applies without a restart.

use serde::Serialize;

use crate::alert::config::Matchers;
use crate::alert::model::Alert;
use crate::types::Timestamp;

/// One silence as an operator set it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Silence {
    pub id: i64,
    pub matchers: Matchers,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub created_by: String,
    pub comment: String,
    pub created_at: Timestamp,
    pub expired_at: Option<Timestamp>,
}

impl Silence {
    pub fn active_at(&self, now: Timestamp) -> bool {
        self.expired_at.is_none() && self.starts_at <= now && now < self.ends_at
    }

    /// `expired` (ended by hand), `active`, `pending` (starts later) or `ended`.
    pub fn state(&self, now: Timestamp) -> &'static str {
        match () {
            _ if self.expired_at.is_some() => "expired",
            _ if self.active_at(now) => "active",
            _ if self.starts_at > now => "pending",
            _ => "ended",
        }
    }
}

/// The id of the first active silence that matches `a`.
pub(crate) fn silenced_by(silences: &[Silence], a: &Alert, now: Timestamp) -> Option<i64> {
    silences
        .iter()
        .find(|s| s.active_at(now) && s.matchers.matches(a))
        .map(|s| s.id)
}
