//! Matching detected incidents to true ones, and the figures per rule.
//!
//! A detected incident of rule R matches a truth of rule R when its [opened, closed — or the end of the
//! footage] overlaps [start − tolerance, end + tolerance] (a truth without an end lasts to the end of the
//! footage). Recall counts truths with a match, precision counts incidents with a match, duplicates are
//! matching incidents per matched truth, onset delay is how long after a truth's start its first matching
//! incident opened (the first opened after the truth began, if any: an incident already open for an
//! earlier event is not this event's onset).

use super::scenario::Truth;

/// An incident as the pipeline reported it, in media seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    pub rule: String,
    pub opened: f64,
    /// `None`: still open when the footage ended.
    pub closed: Option<f64>,
}

/// One rule of one scenario after matching.
#[derive(Debug, Clone)]
pub struct RuleMatch {
    /// Per truth of the rule: the indices of the incidents matching it.
    pub truths: Vec<(Truth, Vec<usize>)>,
    /// Per incident of the rule: whether it matches any truth.
    pub incidents: Vec<(Detected, bool)>,
}

fn overlaps(t: &Truth, d: &Detected) -> bool {
    let (t0, t1) = (
        t.start - t.tolerance,
        t.end.map_or(f64::INFINITY, |e| e + t.tolerance),
    );
    let (d0, d1) = (d.opened, d.closed.unwrap_or(f64::INFINITY));
    d0 <= t1 && t0 <= d1
}

/// Matches one rule's incidents against its truths (both already filtered to that rule).
pub fn match_rule(truths: &[Truth], incidents: &[Detected]) -> RuleMatch {
    let truths: Vec<(Truth, Vec<usize>)> = truths
        .iter()
        .map(|t| {
            let hits = (0..incidents.len())
                .filter(|&i| overlaps(t, &incidents[i]))
                .collect();
            (t.clone(), hits)
        })
        .collect();
    let incidents = incidents
        .iter()
        .enumerate()
        .map(|(i, d)| (d.clone(), truths.iter().any(|(_, hits)| hits.contains(&i))))
        .collect();
    RuleMatch { truths, incidents }
}

/// Counts behind the figures; adds up over rules and scenarios.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub truths: usize,
    pub matched_truths: usize,
    pub incidents: usize,
    pub matching_incidents: usize,
    /// Per matched truth: its own matching incident's open − its start, in seconds.
    pub onset_delays: Vec<f64>,
}

impl Tally {
    pub fn of(m: &RuleMatch) -> Tally {
        let mut t = Tally {
            truths: m.truths.len(),
            incidents: m.incidents.len(),
            matching_incidents: m.incidents.iter().filter(|(_, hit)| *hit).count(),
            ..Tally::default()
        };
        for (truth, hits) in &m.truths {
            // The truth's own incident is the first one opened after it began; an incident that was
            // already open (a crossing 30 s earlier) only counts when there is no such one.
            let opened = |&i: &usize| m.incidents[i].0.opened;
            let first = hits
                .iter()
                .map(opened)
                .filter(|&o| o >= truth.start - truth.tolerance)
                .min_by(f64::total_cmp)
                .or_else(|| hits.iter().map(opened).min_by(f64::total_cmp));
            if let Some(opened) = first {
                t.matched_truths += 1;
                t.onset_delays.push(opened - truth.start);
            }
        }
        t
    }

    pub fn add(&mut self, other: &Tally) {
        self.truths += other.truths;
        self.matched_truths += other.matched_truths;
        self.incidents += other.incidents;
        self.matching_incidents += other.matching_incidents;
        self.onset_delays.extend_from_slice(&other.onset_delays);
    }

    /// Matched truths / truths; `None` without truths (a negative scenario).
    pub fn recall(&self) -> Option<f64> {
        ratio(self.matched_truths, self.truths)
    }

    /// Matching incidents / incidents; `None` when nothing was detected.
    pub fn precision(&self) -> Option<f64> {
        ratio(self.matching_incidents, self.incidents)
    }

    /// Matching incidents per matched truth: above 1 an event was reported more than once, below 1 one
    /// incident spanned several true events.
    pub fn duplicates(&self) -> Option<f64> {
        ratio(self.matching_incidents, self.matched_truths)
    }

    /// Median onset delay over matched truths, in seconds.
    pub fn onset_delay_s(&self) -> Option<f64> {
        median(&self.onset_delays)
    }
}

fn ratio(n: usize, d: usize) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(start: f64, end: Option<f64>, tolerance: f64) -> Truth {
        Truth {
            rule: "r".into(),
            start,
            end,
            tolerance,
            note: String::new(),
        }
    }

    fn inc(opened: f64, closed: Option<f64>) -> Detected {
        Detected {
            rule: "r".into(),
            opened,
            closed,
        }
    }

    #[test]
    fn overlap_honours_tolerance_and_open_ends() {
        let t = truth(10.0, Some(20.0), 2.0);
        // Touching the widened interval at either end counts; a hair beyond does not.
        assert!(overlaps(&t, &inc(22.0, Some(30.0))));
        assert!(!overlaps(&t, &inc(22.1, Some(30.0))));
        assert!(overlaps(&t, &inc(1.0, Some(8.0))));
        assert!(!overlaps(&t, &inc(1.0, Some(7.9))));
        // Still open at the end of the footage: reaches every later truth.
        assert!(overlaps(&t, &inc(3.0, None)));
        // A truth lasting to the end matches any incident after its start.
        assert!(overlaps(&truth(50.0, None, 0.0), &inc(70.0, Some(71.0))));
        assert!(!overlaps(&truth(50.0, None, 0.0), &inc(40.0, Some(49.0))));
    }

    #[test]
    fn figures_on_a_hand_made_timeline() {
        // Truths: A 10–20, B 40–50, C 70–end, D 100–105 (tolerance 2 s each).
        let truths = [
            truth(10.0, Some(20.0), 2.0),
            truth(40.0, Some(50.0), 2.0),
            truth(70.0, None, 2.0),
            truth(100.0, Some(105.0), 2.0),
        ];
        // Incidents: two for A (opened 13 and 17: a split incident), one for B opened 9 s late, a false
        // one at 60–62, one for C opened 4 s late and still open at the end. D is missed: the only
        // incident near it (C's, still open) overlaps D too.
        let incidents = [
            inc(13.0, Some(16.0)),
            inc(17.0, Some(24.0)),
            inc(49.0, Some(55.0)),
            inc(60.0, Some(62.0)),
            inc(74.0, None),
        ];
        let m = match_rule(&truths, &incidents);
        assert_eq!(m.truths[0].1, vec![0, 1]);
        assert_eq!(m.truths[1].1, vec![2]);
        assert_eq!(m.truths[2].1, vec![4]);
        assert_eq!(m.truths[3].1, vec![4], "an open incident reaches D");
        let t = Tally::of(&m);
        // Every truth has a match (D through C's open incident): 4/4.
        assert_eq!(t.recall(), Some(1.0));
        // Incidents matching something: 0, 1, 2, 4 of 5.
        assert_eq!(t.precision(), Some(0.8));
        // 4 matching incidents for 4 matched truths.
        assert_eq!(t.duplicates(), Some(1.0));
        // Delays 3 (A: first at 13), 9 (B), 4 (C), −26 (D: the incident opened at 74): sorted −26, 3, 4, 9.
        assert_eq!(t.onset_delays, vec![3.0, 9.0, 4.0, -26.0]);
        assert_eq!(t.onset_delay_s(), Some(3.5));
    }

    #[test]
    fn misses_false_alarms_and_duplicates_count_separately() {
        let truths = [truth(5.0, Some(8.0), 1.0), truth(30.0, Some(31.0), 1.0)];
        // Three incidents on the first truth, none near the second, one far off.
        let incidents = [
            inc(5.5, Some(6.0)),
            inc(6.5, Some(7.0)),
            inc(8.5, Some(9.5)),
            inc(20.0, Some(21.0)),
        ];
        let t = Tally::of(&match_rule(&truths, &incidents));
        assert_eq!((t.truths, t.matched_truths), (2, 1));
        assert_eq!((t.incidents, t.matching_incidents), (4, 3));
        assert_eq!(t.recall(), Some(0.5));
        assert_eq!(t.precision(), Some(0.75));
        assert_eq!(t.duplicates(), Some(3.0));
        assert_eq!(t.onset_delay_s(), Some(0.5));
    }

    #[test]
    fn empty_sides_give_no_figure_and_tallies_add_up() {
        // A negative scenario that stayed quiet: nothing to measure.
        let quiet = Tally::of(&match_rule(&[], &[]));
        assert_eq!(
            (
                quiet.recall(),
                quiet.precision(),
                quiet.duplicates(),
                quiet.onset_delay_s()
            ),
            (None, None, None, None)
        );
        // A negative scenario with one alarm: precision 0.
        let noisy = Tally::of(&match_rule(&[], &[inc(1.0, Some(2.0))]));
        assert_eq!((noisy.recall(), noisy.precision()), (None, Some(0.0)));
        // A scenario with one truth caught 2 s late.
        let good = Tally::of(&match_rule(&[truth(10.0, None, 2.0)], &[inc(12.0, None)]));
        let mut all = Tally::default();
        for t in [&quiet, &noisy, &good] {
            all.add(t);
        }
        assert_eq!(all.recall(), Some(1.0));
        assert_eq!(all.precision(), Some(0.5));
        assert_eq!(all.duplicates(), Some(1.0));
        assert_eq!(all.onset_delay_s(), Some(2.0));
    }
}
