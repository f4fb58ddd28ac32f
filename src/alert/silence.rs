//! Silences: an operator's "I know, stop telling me" for alerts matching camera, ward, rule or severity,
//! from a start to an end. Created and expired from the CLI (and later the API) in SQLite; the router reads
//! the active ones each time it decides on notices, so a silence applies without a restart.

use crate::types::Timestamp;

use super::model::Alert;
use super::store::Silence;

/// The id of the first active silence that matches `a`.
pub(crate) fn silenced_by(silences: &[Silence], a: &Alert, now: Timestamp) -> Option<i64> {
    silences
        .iter()
        .find(|s| s.active_at(now) && s.matchers.matches(a))
        .map(|s| s.id)
}
