//! Local time-of-day windows for routes.

/// A local time-of-day window `HH:MM-HH:MM`; the end is exclusive; `22:00-06:00` wraps past midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HourWindow {
    start: u32,
    end: u32,
}

impl HourWindow {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("bad hours {text:?}: expected HH:MM-HH:MM");
        let (a, b) = text.split_once('-').ok_or_else(bad)?;
        let minute = |t: &str| -> Result<u32, String> {
            let (h, m) = t.trim().split_once(':').ok_or_else(bad)?;
            let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 24 || m > 59 || (h == 24 && m > 0) {
                return Err(bad());
            }
            Ok(h * 60 + m)
        };
        let (start, end) = (minute(a)?, minute(b)?);
        if start == end {
            return Err(format!("hours {text:?} is empty"));
        }
        Ok(Self { start, end })
    }

    pub(crate) fn contains(self, minute: u32) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}
