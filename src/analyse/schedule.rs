//! When a rule is active: hours of the day and weekdays in Asia/Ho_Chi_Minh, which is UTC+7 all year
//! (Vietnam has no daylight saving), so a fixed offset is exact.

use crate::config::ScheduleConfig;
use crate::types::Timestamp;

const LOCAL_OFFSET_MS: i64 = 7 * 3_600_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// (start, end) in minutes of the local day; end < start runs over midnight.
    spans: Vec<(u16, u16)>,
    /// Bit 0 = Monday … bit 6 = Sunday.
    days: u8,
}

impl Schedule {
    pub fn from_config(c: &ScheduleConfig) -> Self {
        Self {
            spans: c.spans(),
            days: c.day_mask(),
        }
    }

    pub fn active(&self, t: Timestamp) -> bool {
        let local = t.0 + LOCAL_OFFSET_MS;
        let day = local.div_euclid(86_400_000);
        let minute = (local.rem_euclid(86_400_000) / 60_000) as u16;
        // 1970-01-01 was a Thursday (index 3 from Monday).
        let weekday = (day + 3).rem_euclid(7) as u8;
        // A span running over midnight belongs to the day it started on.
        let in_span = |&(a, b): &(u16, u16)| -> Option<bool> {
            if a < b {
                (a <= minute && minute < b).then_some(true)
            } else if minute >= a {
                Some(true)
            } else if minute < b {
                Some(false) // the span started yesterday
            } else {
                None
            }
        };
        let today = self.days & (1 << weekday) != 0;
        let yesterday = self.days & (1 << ((weekday + 6) % 7)) != 0;
        if self.spans.is_empty() {
            return today;
        }
        self.spans.iter().any(|s| match in_span(s) {
            Some(true) => today,
            Some(false) => yesterday,
            None => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toml::Spanned;

    fn schedule(hours: &[&str], days: &[&str]) -> Schedule {
        let sp = |s: &&str| Spanned::new(0..0, s.to_string());
        Schedule::from_config(&ScheduleConfig {
            hours: hours.iter().map(sp).collect(),
            days: days.iter().map(sp).collect(),
        })
    }

    /// 2026-12-01 is a Tuesday; local time = UTC + 7.
    fn local(day: i64, h: i64, m: i64) -> Timestamp {
        // 2026-12-01T00:00:00+07:00 = 2026-11-30T17:00:00Z = 1_796_058_000 s.
        Timestamp((1_796_058_000 + day * 86_400 + h * 3600 + m * 60) * 1000)
    }

    #[test]
    fn local_epoch_is_right() {
        assert_eq!(local(0, 7, 0).to_rfc3339(), "2026-12-01T00:00:00Z");
    }

    #[test]
    fn hours_are_local_time() {
        let s = schedule(&["07:00-11:00", "16:00-22:00"], &[]);
        assert!(!s.active(local(0, 6, 59)));
        assert!(s.active(local(0, 7, 0)));
        assert!(!s.active(local(0, 11, 0)));
        assert!(s.active(local(0, 21, 59)));
        assert!(!s.active(local(0, 22, 0)));
    }

    #[test]
    fn weekdays_and_overnight_spans() {
        // Friday and Saturday nights, 22:00 to 02:00.
        let s = schedule(&["22:00-02:00"], &["fri", "sat"]);
        // Day 3 is Friday 2026-12-04.
        assert!(s.active(local(3, 23, 0)));
        assert!(s.active(local(4, 1, 0)), "Saturday 01:00 is Friday night");
        assert!(s.active(local(4, 23, 30)));
        assert!(s.active(local(5, 1, 30)), "Sunday 01:30 is Saturday night");
        assert!(!s.active(local(5, 23, 0)), "Sunday night is not scheduled");
        assert!(!s.active(local(3, 1, 0)), "Friday 01:00 is Thursday night");
        assert!(!s.active(local(3, 12, 0)));
    }

    #[test]
    fn days_alone_mean_all_day() {
        let s = schedule(&[], &["sun"]);
        assert!(s.active(local(5, 0, 0)));
        assert!(!s.active(local(4, 23, 59)));
    }
}
