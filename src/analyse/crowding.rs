//! Crowding: at least K people in a zone for at least T seconds opens an incident; fewer than K for
//! `clear` seconds closes it. Missed detections for less than `clear` neither reset nor close.

use crate::types::{IncidentPhase, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrowdingParams {
    pub min_people: u32,
    pub min_ms: i64,
    pub clear_ms: i64,
    /// Least time between two `Updated` events of one incident.
    pub update_every_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Idle,
    Pending {
        since: Timestamp,
        last_seen: Timestamp,
    },
    Open {
        episode: Timestamp,
        last_seen: Timestamp,
        peak: u32,
        reported_peak: u32,
        last_report: Timestamp,
    },
}

/// One crowding rule's state for one camera.
#[derive(Debug, Clone)]
pub struct Crowding {
    params: CrowdingParams,
    state: State,
}

/// A change worth telling the rest of the system about.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub phase: IncidentPhase,
    pub episode: Timestamp,
    /// People counted: now for `Opened`, the peak for `Updated` and `Closed`.
    pub count: u32,
    /// How long the crowd has been there (ms), from the first frame at or above K.
    pub duration_ms: i64,
}

impl Crowding {
    pub fn new(params: CrowdingParams) -> Self {
        Self {
            params,
            state: State::Idle,
        }
    }

    /// Feeds the people count of one analysed frame taken at `t` (frames arrive in time order).
    pub fn observe(&mut self, t: Timestamp, count: u32) -> Option<Transition> {
        let p = self.params;
        let crowded = count >= p.min_people;
        match self.state {
            State::Idle if crowded => {
                self.state = State::Pending {
                    since: t,
                    last_seen: t,
                };
                self.try_open(t, count)
            }
            State::Idle => None,
            State::Pending { since, .. } if crowded => {
                self.state = State::Pending {
                    since,
                    last_seen: t,
                };
                self.try_open(t, count)
            }
            State::Pending { last_seen, .. } => {
                if t.since(last_seen) >= p.clear_ms {
                    self.state = State::Idle;
                }
                None
            }
            State::Open {
                episode,
                peak,
                reported_peak,
                last_report,
                ..
            } if crowded => {
                let peak = peak.max(count);
                let report = peak > reported_peak && t.since(last_report) >= p.update_every_ms;
                let (reported_peak, last_report) = if report {
                    (peak, t)
                } else {
                    (reported_peak, last_report)
                };
                self.state = State::Open {
                    episode,
                    last_seen: t,
                    peak,
                    reported_peak,
                    last_report,
                };
                report.then_some(Transition {
                    phase: IncidentPhase::Updated,
                    episode,
                    count: peak,
                    duration_ms: t.since(episode),
                })
            }
            State::Open {
                episode,
                last_seen,
                peak,
                ..
            } => {
                if t.since(last_seen) < p.clear_ms {
                    return None;
                }
                self.state = State::Idle;
                Some(Transition {
                    phase: IncidentPhase::Closed,
                    episode,
                    count: peak,
                    duration_ms: last_seen.since(episode),
                })
            }
        }
    }

    fn try_open(&mut self, t: Timestamp, count: u32) -> Option<Transition> {
        let State::Pending { since, .. } = self.state else {
            return None;
        };
        if t.since(since) < self.params.min_ms {
            return None;
        }
        // The episode is the time the crowd formed: stable for the incident's life and unique per camera rule.
        self.state = State::Open {
            episode: since,
            last_seen: t,
            peak: count,
            reported_peak: count,
            last_report: t,
        };
        Some(Transition {
            phase: IncidentPhase::Opened,
            episode: since,
            count,
            duration_ms: t.since(since),
        })
    }

    /// Ends whatever is going on (the rule's schedule is over): an open incident closes at `t`.
    pub fn end(&mut self, t: Timestamp) -> Option<Transition> {
        let state = std::mem::replace(&mut self.state, State::Idle);
        match state {
            State::Open { episode, peak, .. } => Some(Transition {
                phase: IncidentPhase::Closed,
                episode,
                count: peak,
                duration_ms: t.since(episode),
            }),
            State::Idle | State::Pending { .. } => None,
        }
    }

    #[cfg(test)]
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IncidentPhase::*;

    fn rule() -> Crowding {
        Crowding::new(CrowdingParams {
            min_people: 5,
            min_ms: 10_000,
            clear_ms: 5_000,
            update_every_ms: 30_000,
        })
    }

    /// Feeds (second, count) samples and returns (second, phase, count) for each transition.
    fn timeline(r: &mut Crowding, samples: &[(i64, u32)]) -> Vec<(i64, IncidentPhase, u32)> {
        samples
            .iter()
            .filter_map(|&(s, c)| {
                r.observe(Timestamp(s * 1000), c)
                    .map(|t| (s, t.phase, t.count))
            })
            .collect()
    }

    #[test]
    fn opens_after_t_and_closes_after_clear() {
        let mut r = rule();
        let mut s: Vec<(i64, u32)> = (0..=12).map(|t| (t, 6)).collect();
        s.extend((13..=20).map(|t| (t, 2)));
        assert_eq!(timeline(&mut r, &s), vec![(10, Opened, 6), (17, Closed, 6)]);
    }

    #[test]
    fn a_brief_crowd_never_opens() {
        let mut r = rule();
        let s: Vec<(i64, u32)> = (0..30)
            .map(|t| (t, if t % 10 < 4 { 7 } else { 1 }))
            .collect();
        assert!(timeline(&mut r, &s).is_empty());
    }

    #[test]
    fn missed_detections_shorter_than_clear_neither_reset_nor_close() {
        let mut r = rule();
        // A dropout at 4–6 s while pending, and at 15–17 s while open.
        let s: Vec<(i64, u32)> = (0..=25)
            .map(|t| {
                (
                    t,
                    if (4..=6).contains(&t) || (15..=17).contains(&t) {
                        3
                    } else {
                        6
                    },
                )
            })
            .collect();
        assert_eq!(timeline(&mut r, &s), vec![(10, Opened, 6)]);
        assert!(r.is_open());
    }

    #[test]
    fn growth_is_reported_at_most_every_update_interval() {
        let mut r = rule();
        let s: Vec<(i64, u32)> = (0..=80).map(|t| (t, 5 + (t / 10) as u32)).collect();
        let got = timeline(&mut r, &s);
        assert_eq!(
            got,
            vec![(10, Opened, 6), (40, Updated, 9), (70, Updated, 12)]
        );
    }

    #[test]
    fn the_next_crowd_is_a_new_episode() {
        let mut r = rule();
        let mut s: Vec<(i64, u32)> = (0..=10).map(|t| (t, 6)).collect();
        s.extend((11..=20).map(|t| (t, 0)));
        s.extend((21..=31).map(|t| (t, 6)));
        let eps: Vec<_> = s
            .iter()
            .filter_map(|&(t, c)| r.observe(Timestamp(t * 1000), c))
            .map(|t| (t.phase, t.episode.0))
            .collect();
        assert_eq!(eps, vec![(Opened, 0), (Closed, 0), (Opened, 21_000)]);
    }
}
