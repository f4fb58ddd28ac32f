//! Routing tree: which receiver hears about an alert, and with which grouping and timings.
//!
//! Alertmanager semantics: depth first; the first matching child wins unless it says `continue`; the deepest
//! matching nodes are the result; children inherit unset settings. Hour windows are checked in local time
//! when the alert arrives.

use crate::types::Timestamp;

use crate::alert::config::{Dur, HourWindow, Matchers, RouteConfig};
use crate::alert::model::Alert;

impl Matchers {
    /// True when every non-empty field matches the alert.
    pub fn matches(&self, a: &Alert) -> bool {
        let any = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        any(&self.camera, &a.camera)
            && any(&self.ward, &a.ward)
            && any(&self.rule, &a.rule)
            && any(&self.kind, &a.kind)
            && (self.severity.is_empty() || self.severity.contains(&a.severity))
            && self.min_severity.is_none_or(|m| a.severity >= m)
    }
}

/// Minute of the local day for `t` at `offset` minutes east of UTC.
pub(crate) fn local_minute(t: Timestamp, offset_minutes: i32) -> u32 {
    let local_ms = t.0 + i64::from(offset_minutes) * 60_000;
    (local_ms.div_euclid(60_000).rem_euclid(24 * 60)) as u32
}

/// A compiled route node with its inherited settings resolved.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    /// Position in the tree (`0`, `0.2`, `0.2.1`): stable for a given config, used in group keys.
    pub id: String,
    pub receiver: Option<String>,
    matchers: Matchers,
    hours: Vec<HourWindow>,
    continue_matching: bool,
    pub group_by: Vec<String>,
    pub group_wait: Dur,
    pub group_interval: Dur,
    pub repeat_interval: Dur,
    children: Vec<Route>,
}

/// Defaults at the root: one notice per camera and rule, quickly, repeated hourly while it lasts.
const DEFAULT_GROUP_BY: &[&str] = &["camera", "rule"];
const DEFAULT_GROUP_WAIT: Dur = Dur::secs(10);
const DEFAULT_GROUP_INTERVAL: Dur = Dur::secs(300);
const DEFAULT_REPEAT_INTERVAL: Dur = Dur::secs(3600);

impl Route {
    /// Compiles a validated config tree.
    pub(crate) fn compile(cfg: &RouteConfig) -> Self {
        let root = Route {
            id: "0".into(),
            receiver: None,
            matchers: Matchers::default(),
            hours: Vec::new(),
            continue_matching: false,
            group_by: DEFAULT_GROUP_BY.iter().map(|s| s.to_string()).collect(),
            group_wait: DEFAULT_GROUP_WAIT,
            group_interval: DEFAULT_GROUP_INTERVAL,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
            children: Vec::new(),
        };
        Self::child(cfg, &root, "0".into())
    }

    fn child(cfg: &RouteConfig, parent: &Route, id: String) -> Self {
        let mut r = Route {
            receiver: cfg.receiver.clone().or_else(|| parent.receiver.clone()),
            matchers: cfg.matchers.clone(),
            // Validated before compiling, so parse errors cannot happen here.
            hours: cfg
                .hours
                .iter()
                .filter_map(|h| HourWindow::parse(h).ok())
                .collect(),
            continue_matching: cfg.continue_matching,
            group_by: cfg
                .group_by
                .clone()
                .unwrap_or_else(|| parent.group_by.clone()),
            group_wait: cfg.group_wait.unwrap_or(parent.group_wait),
            group_interval: cfg.group_interval.unwrap_or(parent.group_interval),
            repeat_interval: cfg.repeat_interval.unwrap_or(parent.repeat_interval),
            children: Vec::new(),
            id,
        };
        r.children = cfg
            .routes
            .iter()
            .enumerate()
            .map(|(i, c)| Self::child(c, &r, format!("{}.{i}", r.id)))
            .collect();
        r
    }

    fn matches(&self, a: &Alert, minute: u32) -> bool {
        self.matchers.matches(a)
            && (self.hours.is_empty() || self.hours.iter().any(|h| h.contains(minute)))
    }

    /// The routes an alert takes at local minute `minute`.
    pub(crate) fn routes_for<'a>(&'a self, a: &Alert, minute: u32) -> Vec<&'a Route> {
        let mut out = Vec::new();
        self.collect(a, minute, &mut out);
        if out.is_empty() {
            // The root matches everything (validation forbids matchers on it).
            out.push(self);
        }
        out
    }

    fn collect<'a>(&'a self, a: &Alert, minute: u32, out: &mut Vec<&'a Route>) -> bool {
        if !self.matches(a, minute) {
            return false;
        }
        let before = out.len();
        for c in &self.children {
            if c.collect(a, minute, out) && !c.continue_matching {
                break;
            }
        }
        if out.len() == before {
            out.push(self);
        }
        true
    }

    /// The group an alert joins on this route: route id plus the `group_by` label values.
    pub(crate) fn group_key(&self, a: &Alert) -> (String, Vec<(String, String)>) {
        let labels: Vec<(String, String)> = if self.group_by.iter().any(|l| l == "...") {
            vec![("incident".to_string(), a.key.clone())]
        } else {
            self.group_by
                .iter()
                .map(|l| (l.clone(), a.label(l).to_string()))
                .collect()
        };
        let body: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        (format!("{}:{{{}}}", self.id, body.join(",")), labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Severity;

    fn alert(ward: &str, sev: Severity) -> Alert {
        Alert {
            key: "c1/r/z/1".into(),
            camera: "c1".into(),
            camera_name: "C1".into(),
            ward: ward.into(),
            rule: "r".into(),
            zone: "z".into(),
            kind: "crowding".into(),
            severity: sev,
            started_at: Timestamp(0),
            updated_at: Timestamp(0),
            ended_at: None,
            summary: String::new(),
            count: 1,
            snapshot: None,
            snapshot_token: None,
        }
    }

    #[test]
    fn a_kind_matcher_matches_the_rule_family() {
        let m = |kinds: &[&str]| Matchers {
            kind: kinds.iter().map(|k| k.to_string()).collect(),
            ..Matchers::default()
        };
        let a = alert("W", Severity::Warning);
        assert!(m(&[]).matches(&a));
        assert!(m(&["parking", "crowding"]).matches(&a));
        assert!(!m(&["parking"]).matches(&a));
    }

    #[test]
    fn hour_windows_wrap_midnight() {
        let w = HourWindow::parse("22:00-06:00").unwrap();
        assert!(w.contains(23 * 60) && w.contains(0) && w.contains(5 * 60 + 59));
        assert!(!w.contains(6 * 60) && !w.contains(12 * 60));
        assert!(HourWindow::parse("25:00-01:00").is_err());
        assert!(HourWindow::parse("08:00").is_err());
        // 17:00 UTC is midnight in Vietnam.
        assert_eq!(local_minute(Timestamp(17 * 3_600_000), 420), 0);
    }

    #[test]
    fn first_match_wins_unless_continue_and_settings_inherit() {
        let cfg: RouteConfig = toml::from_str(
            r#"
            receiver = "district"
            group_wait = "30s"
            [[routes]]
            match = { ward = ["Bến Nghé"] }
            receiver = "ben-nghe"
            continue = true
            [[routes]]
            match = { min_severity = "critical" }
            receiver = "command"
            group_wait = "0s"
            [[routes]]
            match = { ward = ["Bến Nghé"] }
            receiver = "fallback"
            "#,
        )
        .unwrap();
        let root = Route::compile(&cfg);
        let names = |a: &Alert| -> Vec<String> {
            root.routes_for(a, 0)
                .iter()
                .map(|r| r.receiver.clone().unwrap())
                .collect()
        };
        // `continue` goes on to later siblings; the critical route stops the search, the warning reaches the last.
        assert_eq!(
            names(&alert("Bến Nghé", Severity::Warning)),
            ["ben-nghe", "fallback"]
        );
        assert_eq!(
            names(&alert("Bến Nghé", Severity::Critical)),
            ["ben-nghe", "command"]
        );
        assert_eq!(names(&alert("Đa Kao", Severity::Warning)), ["district"]);
        let r = root.routes_for(&alert("Đa Kao", Severity::Critical), 0);
        assert_eq!(
            (r[0].group_wait, r[0].group_interval),
            (Dur::secs(0), DEFAULT_GROUP_INTERVAL)
        );
        assert_eq!(
            root.routes_for(&alert("Bến Nghé", Severity::Info), 0)[0].group_wait,
            Dur::secs(30)
        );
    }
}
