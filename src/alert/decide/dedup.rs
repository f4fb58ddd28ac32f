//! Dedup, twice: incident events by key as they arrive (a replayed or repeated event changes nothing), and
//! notices by group as they leave (the notification log: a group whose alerts were already told is not told
//! again until something changes or `repeat_interval` passes). Both survive a restart: alerts and the log are
//! in SQLite, so a router that crashed does not page anyone twice for what it had already sent.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::types::{IncidentEvent, IncidentPhase, Timestamp};

use crate::alert::keys::Keys;
use crate::alert::model::Alert;

/// What admission decided about one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A new incident.
    New,
    /// A newer state of a firing incident (count, summary, severity); it is not news by itself.
    Changed,
    /// The incident closed.
    Resolved,
    /// Dropped: the reason.
    Duplicate(&'static str),
}

/// The alerts the router knows, by incident key, with indexes so that inhibition looks only at firing
/// alerts and pruning only at the oldest resolved ones (a burst leaves thousands of closed incidents).
#[derive(Default)]
pub(crate) struct Dedup {
    alerts: HashMap<String, Alert>,
    firing: HashSet<String>,
    /// Firing alert keys by camera, for inhibition rules that compare cameras.
    firing_by_camera: HashMap<String, BTreeSet<String>>,
    resolved: BTreeSet<(Timestamp, String)>,
}

impl Dedup {
    pub(crate) fn get(&self, key: &str) -> Option<&Alert> {
        self.alerts.get(key)
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.alerts.contains_key(key)
    }

    /// Takes in an alert as committed: one restored from the database, or the next state [`judge`] gave.
    pub(crate) fn insert(&mut self, a: Alert) {
        self.index(&a);
        self.alerts.insert(a.key.clone(), a);
    }

    fn index(&mut self, a: &Alert) {
        match a.ended_at {
            None => {
                self.firing.insert(a.key.clone());
                self.firing_by_camera
                    .entry(a.camera.clone())
                    .or_default()
                    .insert(a.key.clone());
            }
            Some(end) => {
                self.firing.remove(&a.key);
                if let Some(keys) = self.firing_by_camera.get_mut(&a.camera) {
                    keys.remove(&a.key);
                    if keys.is_empty() {
                        self.firing_by_camera.remove(&a.camera);
                    }
                }
                self.resolved.insert((end, a.key.clone()));
            }
        }
    }

    /// Firing alerts of one camera.
    pub(crate) fn firing_on(&self, camera: &str) -> impl Iterator<Item = &Alert> {
        self.firing_by_camera
            .get(camera)
            .into_iter()
            .flatten()
            .filter_map(|k| self.alerts.get(k))
    }

    pub(crate) fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.firing.iter().filter_map(|k| self.alerts.get(k))
    }

    /// Resolved alerts still remembered (see [`prune`](Self::prune)), oldest end first.
    pub(crate) fn resolved(&self) -> impl Iterator<Item = &Alert> {
        self.resolved.iter().filter_map(|(_, k)| self.alerts.get(k))
    }

    /// Forgets alerts resolved before `cutoff` (the database keeps them) and returns their keys.
    pub(crate) fn prune(&mut self, cutoff: Timestamp) -> Vec<String> {
        let mut old = Vec::new();
        while let Some((end, _)) = self.resolved.first()
            && *end < cutoff
        {
            let (_, key) = self.resolved.pop_first().expect("checked non-empty");
            self.alerts.remove(&key);
            old.push(key);
        }
        old
    }
}

/// Whether `ev` is news about the alert whose committed state is `current`, and if so the alert's next
/// state. Pure: the router commits the new state and only then hands it to [`Dedup::insert`], so a commit
/// that fails leaves memory as the database is and the retried event is judged afresh.
pub(crate) fn judge(
    current: Option<&Alert>,
    ev: &IncidentEvent,
    keys: &Keys,
) -> (Admission, Option<Alert>) {
    let Some(a) = current else {
        return match ev.phase {
            IncidentPhase::Closed => (
                Admission::Duplicate("close of an incident never seen open"),
                None,
            ),
            // An update with no open seen (the analyser restarted, or the open was lost upstream) still
            // describes a live incident: take it as new rather than drop it.
            IncidentPhase::Opened | IncidentPhase::Updated => {
                (Admission::New, Some(Alert::from_event(ev, keys)))
            }
        };
    };
    let dup = |why| (Admission::Duplicate(why), None);
    if !a.firing() {
        return dup("event after the incident closed");
    }
    if ev.phase == IncidentPhase::Opened {
        return dup("repeated open");
    }
    if ev.at < a.updated_at {
        return dup("older than the state already seen");
    }
    let mut next = a.clone();
    next.updated_at = ev.at;
    if ev.phase == IncidentPhase::Closed {
        next.ended_at = Some(ev.at);
        if !ev.summary.is_empty() {
            next.summary = ev.summary.clone();
        }
        return (Admission::Resolved, Some(next));
    }
    if ev.at == a.updated_at
        && ev.count == a.count
        && ev.summary == a.summary
        && ev.severity == a.severity
    {
        return dup("repeated update");
    }
    next.count = ev.count;
    next.summary = ev.summary.clone();
    next.severity = ev.severity;
    (Admission::Changed, Some(next))
}

/// What was last told to a receiver about a group.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LogEntry {
    pub firing: BTreeSet<String>,
    pub resolved: BTreeSet<String>,
    pub notified_at: Timestamp,
}

/// Alertmanager's "needs update": new firing alerts, newly resolved ones (when the receiver wants those), or
/// the repeat interval passed with alerts still firing.
pub(crate) fn needs_notice(
    prev: Option<&LogEntry>,
    firing: &BTreeSet<String>,
    resolved: &BTreeSet<String>,
    send_resolved: bool,
    repeat_ms: i64,
    now: Timestamp,
) -> bool {
    let Some(prev) = prev else {
        return !firing.is_empty();
    };
    if !firing.is_subset(&prev.firing) {
        return true;
    }
    if send_resolved
        && resolved
            .iter()
            .any(|k| prev.firing.contains(k) && !prev.resolved.contains(k))
    {
        return true;
    }
    !firing.is_empty() && now.since(prev.notified_at) >= repeat_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{CameraId, IncidentKey, RuleKind, Severity};

    fn ev(phase: IncidentPhase, at: i64, count: u32) -> IncidentEvent {
        IncidentEvent {
            key: IncidentKey {
                camera: CameraId::new("c1"),
                rule: "crowd".into(),
                zone: "plaza".into(),
                episode: Timestamp(1000),
            },
            phase,
            at: Timestamp(at),
            kind: RuleKind::Crowding,
            severity: Severity::Warning,
            camera_name: "C1".into(),
            ward: "W".into(),
            summary: format!("{count} people"),
            count,
            snapshot: None,
        }
    }

    /// Judges `e` and applies the result, as the router does once it committed.
    fn admit(d: &mut Dedup, e: &IncidentEvent) -> Admission {
        let keys = Keys::from_secret([0; 32]);
        let (admission, next) = judge(d.get(&e.key.to_string()), e, &keys);
        if let Some(a) = next {
            d.insert(a);
        }
        admission
    }

    #[test]
    fn events_are_admitted_once_and_in_order() {
        let mut d = Dedup::default();
        assert_eq!(
            admit(&mut d, &ev(IncidentPhase::Opened, 1000, 5)),
            Admission::New
        );
        assert!(matches!(
            admit(&mut d, &ev(IncidentPhase::Opened, 1000, 5)),
            Admission::Duplicate(_)
        ));
        assert_eq!(
            admit(&mut d, &ev(IncidentPhase::Updated, 2000, 6)),
            Admission::Changed
        );
        assert!(matches!(
            admit(&mut d, &ev(IncidentPhase::Updated, 2000, 6)),
            Admission::Duplicate(_)
        ));
        assert!(matches!(
            admit(&mut d, &ev(IncidentPhase::Updated, 1500, 7)),
            Admission::Duplicate(_)
        ));
        assert_eq!((d.firing().count(), d.firing_on("c1").count()), (1, 1));
        assert_eq!(
            admit(&mut d, &ev(IncidentPhase::Closed, 3000, 0)),
            Admission::Resolved
        );
        assert_eq!(d.firing().count(), 0);
        assert_eq!(d.firing_on("c1").count(), 0);
        assert!(
            d.prune(Timestamp(3000)).is_empty(),
            "kept until after the cutoff"
        );
        assert!(matches!(
            admit(&mut d, &ev(IncidentPhase::Updated, 4000, 8)),
            Admission::Duplicate(_)
        ));
        assert_eq!(d.prune(Timestamp(3001)).len(), 1);
        assert!(!d.contains("c1/crowd/plaza/1000"));
    }

    #[test]
    fn notice_needed_only_for_news_or_repeat() {
        let set = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let none = set(&[]);
        assert!(needs_notice(
            None,
            &set(&["a"]),
            &none,
            false,
            1000,
            Timestamp(0)
        ));
        assert!(!needs_notice(
            None,
            &none,
            &set(&["a"]),
            true,
            1000,
            Timestamp(0)
        ));
        let prev = LogEntry {
            firing: set(&["a"]),
            resolved: none.clone(),
            notified_at: Timestamp(0),
        };
        assert!(!needs_notice(
            Some(&prev),
            &set(&["a"]),
            &none,
            false,
            1000,
            Timestamp(999)
        ));
        assert!(needs_notice(
            Some(&prev),
            &set(&["a"]),
            &none,
            false,
            1000,
            Timestamp(1000)
        ));
        assert!(needs_notice(
            Some(&prev),
            &set(&["a", "b"]),
            &none,
            false,
            1000,
            Timestamp(1)
        ));
        assert!(!needs_notice(
            Some(&prev),
            &none,
            &set(&["a"]),
            false,
            1000,
            Timestamp(5000)
        ));
        assert!(needs_notice(
            Some(&prev),
            &none,
            &set(&["a"]),
            true,
            1000,
            Timestamp(1)
        ));
    }
}
