//! The router's own view of an incident (an "alert", as in Alertmanager) and of a notice.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{IncidentEvent, IncidentKey, IncidentPhase, RuleKind, Severity, Timestamp};

use super::keys::Keys;

/// One incident as the router tracks it: its labels and latest state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The incident key, `camera/rule/zone/episode`.
    pub key: String,
    pub camera: String,
    pub camera_name: String,
    pub ward: String,
    pub rule: String,
    pub zone: String,
    /// Rule family (`crowding`, …), for wording.
    pub kind: String,
    pub severity: Severity,
    pub started_at: Timestamp,
    pub updated_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub summary: String,
    pub count: u32,
    pub snapshot: Option<String>,
    /// Token of the snapshot's short link (`{snapshot_base_url}{token}`): keyed with the database's secret,
    /// so a link cannot be made from the incident's camera, rule or time.
    pub snapshot_token: Option<String>,
}

impl Alert {
    pub(crate) fn from_event(ev: &IncidentEvent, keys: &Keys) -> Self {
        let key = ev.key.to_string();
        let snapshot_token = ev.snapshot.as_ref().map(|p| keys.snapshot_token(&key, p));
        Self {
            camera: ev.key.camera.to_string(),
            camera_name: ev.camera_name.clone(),
            ward: ev.ward.clone(),
            rule: ev.key.rule.clone(),
            zone: ev.key.zone.clone(),
            kind: ev.kind.as_str().to_string(),
            severity: ev.severity,
            started_at: ev.at,
            updated_at: ev.at,
            ended_at: None,
            summary: ev.summary.clone(),
            count: ev.count,
            snapshot: ev.snapshot.clone(),
            snapshot_token,
            key,
        }
    }

    pub fn firing(&self) -> bool {
        self.ended_at.is_none()
    }

    /// The event that closes this alert's incident at `at`, saying why in `summary`; `None` when the key
    /// does not spell the incident's again from the alert's columns (ids may hold `/`).
    pub(crate) fn closing_event(&self, at: Timestamp, summary: &str) -> Option<IncidentEvent> {
        let key = IncidentKey::read_back(&self.key, &self.camera, &self.rule, &self.zone)?;
        Some(IncidentEvent {
            key,
            phase: IncidentPhase::Closed,
            at: at.max(self.updated_at),
            kind: RuleKind::parse(&self.kind)?,
            severity: self.severity,
            camera_name: self.camera_name.clone(),
            ward: self.ward.clone(),
            summary: summary.into(),
            count: self.count,
            snapshot: None,
        })
    }

    /// A label's value by name (the names `group_by`, `equal` and matchers use).
    pub fn label(&self, name: &str) -> &str {
        match name {
            "camera" => &self.camera,
            "ward" => &self.ward,
            "rule" => &self.rule,
            "zone" => &self.zone,
            "severity" => self.severity.as_str(),
            _ => "",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// Alerts of one group.
    Alerts,
    /// Flood control's summary of notices held back in a window.
    FloodSummary,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Alerts => "alerts",
            NoticeKind::FloodSummary => "flood_summary",
        }
    }
}

/// What one notice says; stored as JSON with the notice so every delivery can be re-rendered and audited.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoticePayload {
    pub kind: NoticeKind,
    pub group_key: String,
    pub group_labels: BTreeMap<String, String>,
    pub firing: Vec<Alert>,
    pub resolved: Vec<Alert>,
    /// For a flood summary: how many notices were held back, and over which span.
    pub held: u32,
    pub held_since: Option<Timestamp>,
    /// For a flood summary: held notices per ward.
    pub held_by_ward: BTreeMap<String, u32>,
    /// For a flood summary: the alerts of the held notices, each camera and rule once, first held first.
    #[serde(default)]
    pub held_alerts: Vec<HeldAlert>,
    /// For a notice sent only because `repeat_interval` passed: each firing alert's repeat number (whole
    /// intervals since its incident began), so routers sharing the work claim the same repeat once.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub repeats: BTreeMap<String, i64>,
}

impl NoticePayload {
    /// A notice about the alerts of one group (not a flood summary).
    pub fn alerts(
        group_key: String,
        group_labels: BTreeMap<String, String>,
        firing: Vec<Alert>,
        resolved: Vec<Alert>,
    ) -> Self {
        Self {
            kind: NoticeKind::Alerts,
            group_key,
            group_labels,
            firing,
            resolved,
            held: 0,
            held_since: None,
            held_by_ward: BTreeMap::new(),
            held_alerts: Vec::new(),
            repeats: BTreeMap::new(),
        }
    }
}

/// An alert that flood control held back, as the window's summary names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldAlert {
    pub camera: String,
    pub camera_name: String,
    pub rule: String,
    /// Rule family, for wording.
    pub kind: String,
}

impl HeldAlert {
    pub fn of(a: &Alert) -> Self {
        Self {
            camera: a.camera.clone(),
            camera_name: a.camera_name.clone(),
            rule: a.rule.clone(),
            kind: a.kind.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(key: &str, camera: &str, rule: &str, zone: &str) -> Alert {
        Alert {
            key: key.into(),
            camera: camera.into(),
            camera_name: "Nguyễn Huệ".into(),
            ward: "Bến Nghé".into(),
            rule: rule.into(),
            zone: zone.into(),
            kind: "intrusion".into(),
            severity: Severity::Critical,
            started_at: Timestamp(1_000),
            updated_at: Timestamp(4_000),
            ended_at: None,
            summary: "2 people".into(),
            count: 2,
            snapshot: Some("/data/snapshots/x.jpg".into()),
            snapshot_token: None,
        }
    }

    #[test]
    fn an_alert_closes_its_own_incident() {
        let a = alert("d1/cam 7/enter/gate/1000", "d1/cam 7", "enter", "gate");
        let close = a.closing_event(Timestamp(9_000), "node lost").unwrap();
        assert_eq!(close.key.to_string(), a.key);
        assert_eq!(close.phase, IncidentPhase::Closed);
        assert_eq!(close.at, Timestamp(9_000));
        assert_eq!(
            (close.kind, close.severity),
            (RuleKind::Intrusion, Severity::Critical)
        );
        assert_eq!((close.summary.as_str(), close.count), ("node lost", 2));
        // Never dated before the alert's last event.
        assert_eq!(
            a.closing_event(Timestamp(2_000), "x").unwrap().at,
            Timestamp(4_000)
        );
        // Columns that do not spell the key again: no event rather than another incident's.
        assert!(
            alert("cam/enter/gate/1000", "cam", "enter", "yard")
                .closing_event(Timestamp(9_000), "x")
                .is_none()
        );
        assert!(
            alert("cam/enter/gate/x", "cam", "enter", "gate")
                .closing_event(Timestamp(9_000), "x")
                .is_none()
        );
    }
}
