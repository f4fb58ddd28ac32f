//! The `[retention]` table: how long incidents, the alert router's records and snapshots are kept, and how
//! the pruning paces itself. Ages are whole days; 0 keeps for good.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

/// Defaults a district would keep: a quarter of records (complaints and reviews come weeks later), a month
/// of pictures (they are most of the disk), pruned hourly in batches the router never waits long for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Closed incidents (open ones are kept however old).
    pub incidents_days: Spanned<i64>,
    /// Resolved alerts in the router's table (firing ones are kept).
    pub alerts_days: Spanned<i64>,
    /// Notices with no delivery left, and the notification log.
    pub notices_days: Spanned<i64>,
    /// Deliveries in a final state (accepted, delivered, undelivered, dead), with their state changes.
    pub deliveries_days: Spanned<i64>,
    /// State changes of deliveries in a final state.
    pub delivery_events_days: Spanned<i64>,
    /// Snapshot files of closed incidents (an open incident's picture is kept).
    pub snapshots_days: Spanned<i64>,
    /// Rows deleted per transaction.
    pub batch_rows: Spanned<i64>,
    /// Pause between two batches, so the router and the notifier get the database in between.
    pub batch_pause_ms: Spanned<i64>,
    /// How often pruning runs (it also runs once at start).
    pub every_minutes: Spanned<i64>,
}

fn value(v: i64) -> Spanned<i64> {
    Spanned::new(0..0, v)
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            incidents_days: value(90),
            alerts_days: value(90),
            notices_days: value(90),
            deliveries_days: value(90),
            delivery_events_days: value(90),
            snapshots_days: value(30),
            batch_rows: value(500),
            batch_pause_ms: value(100),
            every_minutes: value(60),
        }
    }
}

/// A century: beyond it a number of days is a typo, and days as milliseconds stay far from overflow.
const MAX_DAYS: i64 = 36_500;

impl RetentionConfig {
    /// The first value out of range: its span, key (under `retention.`) and what is wrong.
    pub(super) fn check(&self) -> Result<(), (Range<usize>, String, String)> {
        let days = [
            ("incidents_days", &self.incidents_days),
            ("alerts_days", &self.alerts_days),
            ("notices_days", &self.notices_days),
            ("deliveries_days", &self.deliveries_days),
            ("delivery_events_days", &self.delivery_events_days),
            ("snapshots_days", &self.snapshots_days),
        ];
        for (key, v) in days {
            if !(0..=MAX_DAYS).contains(v.get_ref()) {
                return Err(fail(
                    key,
                    v,
                    format!("must be 0–{MAX_DAYS} days (0 keeps for good)"),
                ));
            }
        }
        let paces = [
            ("batch_rows", &self.batch_rows, 1..=100_000, "rows"),
            ("batch_pause_ms", &self.batch_pause_ms, 0..=60_000, "ms"),
            ("every_minutes", &self.every_minutes, 1..=10_080, "minutes"),
        ];
        for (key, v, range, unit) in paces {
            if !range.contains(v.get_ref()) {
                return Err(fail(
                    key,
                    v,
                    format!("must be {}–{} {unit}", range.start(), range.end()),
                ));
            }
        }
        Ok(())
    }
}

fn fail(key: &str, v: &Spanned<i64>, message: String) -> (Range<usize>, String, String) {
    (
        v.span(),
        format!("retention.{key}"),
        format!("{message}, found {}", v.get_ref()),
    )
}
