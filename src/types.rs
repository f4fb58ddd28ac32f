//! Domain types shared by every stage: who (camera), when (timestamps, clocks) and what (incidents).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};

/// A camera's configured id (e.g. `d1-nguyen-hue-03`). Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CameraId(pub Arc<str>);

impl CameraId {
    pub fn new(id: &str) -> Self {
        Self(Arc::from(id))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by camera are looked up by the id's text (its hash and order are the text's).
impl std::borrow::Borrow<str> for CameraId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CameraId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Milliseconds since the Unix epoch. Frames, rules and the router all reason in this unit.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn plus_ms(self, ms: i64) -> Self {
        Self(self.0 + ms)
    }
    /// Milliseconds from `earlier` to `self` (negative if `earlier` is later).
    pub fn since(self, earlier: Timestamp) -> i64 {
        self.0 - earlier.0
    }
    /// RFC 3339 in UTC, second precision, for logs, SMS and e-mail.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's civil-from-days algorithm.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days from 1970-01-01 to a civil date (Howard Hinnant's days-from-civil).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days in month `m` (1–12) of year `y` (proleptic Gregorian).
pub fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The source of "now". Rules and the router take time from here so tests drive timelines without sleeping.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_millis() as i64)
    }
}

/// A clock that moves only when told to: for timeline tests.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn at(t: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(t.0)))
    }
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Which rule family raised an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    Crowding,
    Loitering,
    Parking,
    Encroachment,
    Intrusion,
    LineCrossing,
    WrongWay,
    /// A report sent by a citizen through the operations centre's API, not raised by a camera rule.
    CitizenReport,
}

impl RuleKind {
    pub const ALL: [RuleKind; 8] = [
        RuleKind::Crowding,
        RuleKind::Loitering,
        RuleKind::Parking,
        RuleKind::Encroachment,
        RuleKind::Intrusion,
        RuleKind::LineCrossing,
        RuleKind::WrongWay,
        RuleKind::CitizenReport,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Crowding => "crowding",
            RuleKind::Loitering => "loitering",
            RuleKind::Parking => "parking",
            RuleKind::Encroachment => "encroachment",
            RuleKind::Intrusion => "intrusion",
            RuleKind::LineCrossing => "line_crossing",
            RuleKind::WrongWay => "wrong_way",
            RuleKind::CitizenReport => "citizen_report",
        }
    }

    pub fn parse(s: &str) -> Option<RuleKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The incident's title for the operations centre and the police, in Vietnamese.
    pub fn title_vi(self) -> &'static str {
        match self {
            RuleKind::Crowding => "Tụ tập đông người",
            RuleKind::Loitering => "Lảng vảng",
            RuleKind::Parking => "Đỗ xe sai quy định",
            RuleKind::Encroachment => "Lấn chiếm vỉa hè",
            RuleKind::Intrusion => "Xâm nhập khu vực cấm",
            RuleKind::LineCrossing => "Vượt vạch",
            RuleKind::WrongWay => "Đi ngược chiều",
            RuleKind::CitizenReport => "Phản ánh của người dân",
        }
    }

    /// The same title in English.
    pub fn title_en(self) -> &'static str {
        match self {
            RuleKind::Crowding => "Crowd gathering",
            RuleKind::Loitering => "Loitering",
            RuleKind::Parking => "Illegal parking",
            RuleKind::Encroachment => "Sidewalk encroachment",
            RuleKind::Intrusion => "Intrusion",
            RuleKind::LineCrossing => "Line crossing",
            RuleKind::WrongWay => "Wrong way",
            RuleKind::CitizenReport => "Citizen report",
        }
    }
}

/// Identifies one incident for its whole life: camera, rule, zone and the episode (the time it opened).
/// A car parked for an hour is one key, not sixty.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IncidentKey {
    pub camera: CameraId,
    pub rule: String,
    pub zone: String,
    pub episode: Timestamp,
}

impl IncidentKey {
    /// The key stored as `stored` (its `Display`), rebuilt from the camera, rule and zone it was stored
    /// with and the episode at its end; `None` unless it spells `stored` again (ids may hold `/`).
    pub fn read_back(stored: &str, camera: &str, rule: &str, zone: &str) -> Option<IncidentKey> {
        let (_, episode) = stored.rsplit_once('/')?;
        let key = IncidentKey {
            camera: CameraId::new(camera),
            rule: rule.to_string(),
            zone: zone.to_string(),
            episode: Timestamp(episode.parse().ok()?),
        };
        (key.to_string() == stored).then_some(key)
    }
}

impl fmt::Display for IncidentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.camera, self.rule, self.zone, self.episode.0
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentPhase {
    Opened,
    Updated,
    Closed,
}

impl IncidentPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentPhase::Opened => "opened",
            IncidentPhase::Updated => "updated",
            IncidentPhase::Closed => "closed",
        }
    }
}

/// What the analyse stage emits and the alert stage consumes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentEvent {
    pub key: IncidentKey,
    pub phase: IncidentPhase,
    /// When this phase happened (frame time).
    pub at: Timestamp,
    pub kind: RuleKind,
    pub severity: Severity,
    /// Camera display name, e.g. "Nguyễn Huệ / Lê Lợi".
    pub camera_name: String,
    /// Administrative ward, e.g. "Bến Nghé"; routing matches on it.
    pub ward: String,
    /// Human summary in the operations centre's words, e.g. "7 people in zone plaza for 45 s".
    pub summary: String,
    /// The measured quantity (people counted, seconds stationary …).
    pub count: u32,
    /// Path of the JPEG snapshot, written on open.
    pub snapshot: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Timestamp(1_795_000_000_000).to_rfc3339(),
            "2026-11-18T11:06:40Z"
        );
        assert_eq!(
            Timestamp(951_782_400_000).to_rfc3339(),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::at(Timestamp(1000));
        assert_eq!(c.now(), Timestamp(1000));
        c.advance_ms(250);
        assert_eq!(c.now(), Timestamp(1250));
    }
}
