//! Grouping (Alertmanager's aggregation groups): alerts that share a route and the route's `group_by` labels
//! become one notice. A new group waits `group_wait` for company before it speaks; afterwards it is looked at
//! every `group_interval`, and the notification log decides whether there is anything new to say.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::types::Timestamp;

use super::config::Dur;
use super::route::Route;

pub(crate) struct Group {
    pub key: String,
    pub route_id: String,
    pub receiver: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub alerts: BTreeSet<String>,
    pub next_flush: Timestamp,
    pub group_interval: Dur,
    pub repeat_interval: Dur,
}

#[derive(Default)]
pub(crate) struct Groups {
    map: HashMap<String, Group>,
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
        let g = self.map.entry(group_key.clone()).or_insert_with(|| Group {
            key: group_key,
            route_id: route.id.clone(),
            receiver: route.receiver.clone(),
            labels: labels.into_iter().collect(),
            alerts: BTreeSet::new(),
            next_flush: now.plus_ms(route.group_wait.ms()),
            group_interval: route.group_interval,
            repeat_interval: route.repeat_interval,
        });
        g.alerts.insert(key.to_string());
    }

    /// Keys of the groups due at `now`, earliest first (ties by key, so runs are reproducible).
    pub(crate) fn due(&self, now: Timestamp) -> Vec<String> {
        let mut due: Vec<(&Timestamp, &String)> = self
            .map
            .values()
            .filter(|g| g.next_flush <= now)
            .map(|g| (&g.next_flush, &g.key))
            .collect();
        due.sort();
        due.into_iter().map(|(_, k)| k.clone()).collect()
    }

    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut Group> {
        self.map.get_mut(key)
    }

    pub(crate) fn remove(&mut self, key: &str) {
        self.map.remove(key);
    }

    pub(crate) fn next_deadline(&self) -> Option<Timestamp> {
        self.map.values().map(|g| g.next_flush).min()
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}
