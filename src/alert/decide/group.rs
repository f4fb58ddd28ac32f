//! Grouping (Alertmanager's aggregation groups): alerts that share a route and the route's `group_by` labels
//! become one notice. A new group waits `group_wait` for company before it speaks; afterwards it is looked at
//! every `group_interval`, and the notification log decides whether there is anything new to say.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::types::Timestamp;

use super::route::Route;
use crate::alert::config::Dur;

pub(crate) struct Group {
    pub key: String,
    pub route_id: String,
    pub receiver: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub alerts: BTreeSet<String>,
    /// Kept in step with the schedule: change it through `Groups::reschedule`.
    pub next_flush: Timestamp,
    pub group_interval: Dur,
    pub repeat_interval: Dur,
}

/// Groups by key, with their flush times in order so a tick costs O(due), not O(groups).
#[derive(Default)]
pub(crate) struct Groups {
    map: HashMap<String, Group>,
    schedule: BTreeSet<(Timestamp, String)>,
}

impl Groups {
    /// Adds alert `key` to its group on `route`, creating the group (first flush after `group_wait`).
    pub(crate) fn insert(
        &mut self,
        route: &Route,
        group_key: String,
        labels: Vec<(String, String)>,
        key: &str,
        now: Timestamp,
    ) {
        let g = self.map.entry(group_key.clone()).or_insert_with(|| {
            let next_flush = now.plus_ms(route.group_wait.ms());
            self.schedule.insert((next_flush, group_key.clone()));
            Group {
                key: group_key,
                route_id: route.id.clone(),
                receiver: route.receiver.clone(),
                labels: labels.into_iter().collect(),
                alerts: BTreeSet::new(),
                next_flush,
                group_interval: route.group_interval,
                repeat_interval: route.repeat_interval,
            }
        });
        g.alerts.insert(key.to_string());
    }

    /// Keys of the groups due at `now`, earliest first (ties by key, so runs are reproducible).
    pub(crate) fn due(&self, now: Timestamp) -> Vec<String> {
        self.schedule
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, k)| k.clone())
            .collect()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Group> {
        self.map.values()
    }

    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut Group> {
        self.map.get_mut(key)
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// Sets when a group is looked at next.
    pub(crate) fn reschedule(&mut self, key: &str, at: Timestamp) {
        if let Some(g) = self.map.get_mut(key) {
            self.schedule.remove(&(g.next_flush, key.to_string()));
            g.next_flush = at;
            self.schedule.insert((at, key.to_string()));
        }
    }

    pub(crate) fn remove(&mut self, key: &str) {
        if let Some(g) = self.map.remove(key) {
            self.schedule.remove(&(g.next_flush, g.key));
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Timestamp> {
        self.schedule.first().map(|(t, _)| *t)
    }
}
