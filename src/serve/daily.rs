//! `GET /api/report/daily?date=YYYY-MM-DD`: the alerts that started on one local day of the operations
//! centre (`utc_offset_minutes`), per ward and rule kind — received, acknowledged, resolved, and the median
//! time from an alert's start to the first operator action on it.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::alert::HandlingRow;
use crate::types::{Timestamp, civil_from_days, days_from_civil, days_in_month};

use super::alerts::with_store;
use super::auth::Caller;
use super::config::Role;
use super::error::ApiError;
use super::state::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/api/report/daily", get(daily))
}

const DAY_MS: i64 = 86_400_000;

#[derive(Deserialize)]
struct DailyQuery {
    /// The local day, `YYYY-MM-DD`; today by default.
    date: Option<String>,
}

/// The figures of one row, and of the totals.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Figures {
    /// Alerts that started that day.
    pub received: u64,
    /// Of those, acknowledged or resolved by an operator (whether or not acknowledged first).
    pub acknowledged: u64,
    /// Of those, resolved by an operator.
    pub resolved: u64,
    /// Median seconds from the alert's start to its first operator action (acknowledgement, or resolution
    /// without one); `null` when none was handled. Of an even count, the mean of the middle two.
    pub median_ack_seconds: Option<f64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ReportRow {
    pub ward: String,
    pub kind: String,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DailyReport {
    pub date: String,
    pub utc_offset_minutes: i32,
    /// The local day in Unix milliseconds: `[from, until)`.
    pub from: Timestamp,
    pub until: Timestamp,
    /// By ward, then kind.
    pub rows: Vec<ReportRow>,
    pub totals: Figures,
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date, or why it is not one.
fn parse_date(text: &str) -> Result<i64, String> {
    let bad = || format!("date must be a day as YYYY-MM-DD, found {text:?}");
    let b = text.as_bytes();
    if b.len() != 10
        || b[4] != b'-'
        || b[7] != b'-'
        || !b
            .iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| text[r].parse::<i64>().map_err(|_| bad());
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err(format!("date {text:?} is not a day of the calendar"));
    }
    Ok(days_from_civil(y, m, d))
}

/// The local day (days since 1970-01-01) that `t` falls in at `offset_minutes` east of UTC.
fn local_day(t: Timestamp, offset_minutes: i32) -> i64 {
    (t.0 + i64::from(offset_minutes) * 60_000).div_euclid(DAY_MS)
}

fn format_day(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Median of the delays in milliseconds, in seconds.
fn median_seconds(mut ms: Vec<i64>) -> Option<f64> {
    if ms.is_empty() {
        return None;
    }
    ms.sort_unstable();
    let n = ms.len();
    let mid = if n % 2 == 1 {
        ms[n / 2] as f64
    } else {
        (ms[n / 2 - 1] as f64 + ms[n / 2] as f64) / 2.0
    };
    Some(mid / 1000.0)
}

#[derive(Default)]
struct Tally {
    received: u64,
    acknowledged: u64,
    resolved: u64,
    ack_ms: Vec<i64>,
}

impl Tally {
    fn add(&mut self, r: &HandlingRow) {
        self.received += 1;
        if matches!(r.handling.as_str(), "acknowledged" | "resolved") {
            self.acknowledged += 1;
            if let Some(first) = r.acknowledged_at.or(r.resolved_at) {
                self.ack_ms.push(first.since(r.started_at).max(0));
            }
        }
        if r.handling == "resolved" {
            self.resolved += 1;
        }
    }
    fn figures(self) -> Figures {
        Figures {
            received: self.received,
            acknowledged: self.acknowledged,
            resolved: self.resolved,
            median_ack_seconds: median_seconds(self.ack_ms),
        }
    }
}

/// The report's rows and totals from one day's alerts.
fn tally(alerts: &[HandlingRow]) -> (Vec<ReportRow>, Figures) {
    let mut groups: BTreeMap<(&str, &str), Tally> = BTreeMap::new();
    let mut all = Tally::default();
    for a in alerts {
        groups
            .entry((a.ward.as_str(), a.kind.as_str()))
            .or_default()
            .add(a);
        all.add(a);
    }
    let rows = groups
        .into_iter()
        .map(|((ward, kind), t)| ReportRow {
            ward: ward.to_string(),
            kind: kind.to_string(),
            figures: t.figures(),
        })
        .collect();
    (rows, all.figures())
}

async fn daily(
    caller: Caller,
    State(state): State<AppState>,
    query: Result<Query<DailyQuery>, QueryRejection>,
) -> Result<Json<DailyReport>, ApiError> {
    caller.require(Role::Viewer, "see the daily report")?;
    let Query(q) = query?;
    let offset = state.utc_offset_minutes;
    let day = match q.date.as_deref() {
        Some(text) => parse_date(text).map_err(ApiError::bad_request)?,
        None => local_day(state.ctx.clock.now(), offset),
    };
    let from = Timestamp(day * DAY_MS - i64::from(offset) * 60_000);
    let until = from.plus_ms(DAY_MS);
    let alerts = with_store(state.ctx.db_path.clone(), move |s| {
        s.handling_between(from, until)
    })
    .await?;
    let (rows, totals) = tally(&alerts);
    Ok(Json(DailyReport {
        date: format_day(day),
        utc_offset_minutes: offset,
        from,
        until,
        rows,
        totals,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_checked_and_placed_in_the_local_day() {
        // 2026-11-30 00:00 at +07:00 is 2026-11-29 17:00 UTC.
        let day = parse_date("2026-11-30").unwrap();
        assert_eq!(format_day(day), "2026-11-30");
        assert_eq!(day * DAY_MS - 420 * 60_000, 1_795_971_600_000);
        assert_eq!(
            local_day(Timestamp(1_795_971_600_000), 420),
            day,
            "local midnight"
        );
        assert_eq!(local_day(Timestamp(1_795_971_599_999), 420), day - 1);
        assert!(parse_date("2024-02-29").is_ok());
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-11-31",
            "26-11-30",
            "2026/11/30",
            "2026-11-3",
            "+026-11-30",
            "2026-1١-30",
            "",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median_seconds(vec![]), None);
        assert_eq!(median_seconds(vec![90_000]), Some(90.0));
        assert_eq!(median_seconds(vec![300_000, 60_000, 120_000]), Some(120.0));
        assert_eq!(median_seconds(vec![60_000, 181_000]), Some(120.5));
    }
}
