//! Eval: replays labelled scenarios (footage, one camera's zones and rules, the true incidents) through
//! the real pipeline and measures each rule kind's recall, precision, duplicates and onset delay, so a
//! rule change can be checked on an operations centre's own footage before it goes live.

mod metrics;
mod replay;
mod scenario;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::ConfigError;
use crate::types::RuleKind;
use metrics::{RuleMatch, Tally};
use scenario::Scenario;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Scenario(#[from] ConfigError),
    #[error("{scenario}: replay failed: {message}")]
    Replay { scenario: String, message: String },
}

/// How scenarios are replayed.
#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    /// Skip the model on still scenes as a running district does (`[runtime] motion_gate`).
    pub motion_gate: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { motion_gate: true }
    }
}

/// Loads every scenario (all must be valid before anything runs), replays them two at a time and
/// matches their incidents against the truths.
pub fn run(paths: &[PathBuf], options: EvalOptions) -> Result<Report, EvalError> {
    let scenarios = paths
        .iter()
        .map(|p| Scenario::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let next = AtomicUsize::new(0);
    type Replayed = Option<Result<replay::Replayed, EvalError>>;
    let results: Mutex<Vec<Replayed>> = Mutex::new((0..scenarios.len()).map(|_| None).collect());
    // Two at a time: each replay is one decoder thread and one single-threaded inference worker.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2)
        .min(scenarios.len());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(s) = scenarios.get(i) else { break };
                    let got = replay::replay(s, options).map_err(|e| EvalError::Replay {
                        scenario: s.path.display().to_string(),
                        message: format!("{e:#}"),
                    });
                    results.lock().expect("not poisoned")[i] = Some(got);
                }
            });
        }
    });
    let detected = results.into_inner().expect("not poisoned");
    let mut out = Vec::with_capacity(scenarios.len());
    let mut frames = Frames {
        motion_gate: options.motion_gate,
        ..Frames::default()
    };
    for (scenario, got) in scenarios.into_iter().zip(detected) {
        let replayed = got.expect("every scenario was replayed")?;
        frames.analysed += replayed.frames_analysed;
        frames.motion_skipped += replayed.motion_skipped;
        let incidents = replayed.incidents;
        let rules = scenario
            .rules
            .iter()
            .map(|(id, kind)| {
                let truths: Vec<_> = scenario
                    .truths
                    .iter()
                    .filter(|t| &t.rule == id)
                    .cloned()
                    .collect();
                let found: Vec<_> = incidents
                    .iter()
                    .filter(|d| &d.rule == id)
                    .cloned()
                    .collect();
                let matched = metrics::match_rule(&truths, &found);
                RuleResult {
                    id: id.clone(),
                    kind: *kind,
                    tally: Tally::of(&matched),
                    matched,
                }
            })
            .collect();
        out.push(ScenarioResult { scenario, rules });
    }
    Ok(Report {
        scenarios: out,
        frames,
    })
}

/// What eval measured, per scenario and rule; aggregated per rule kind for the table and the JSON.
pub struct Report {
    scenarios: Vec<ScenarioResult>,
    frames: Frames,
}

/// Frames analysed over all scenarios, and how many of them skipped the model (still scenes).
#[derive(Default)]
struct Frames {
    motion_gate: bool,
    analysed: u64,
    motion_skipped: u64,
}

impl Frames {
    fn skipped_share(&self) -> f64 {
        if self.analysed == 0 {
            0.0
        } else {
            self.motion_skipped as f64 / self.analysed as f64
        }
    }
}

struct ScenarioResult {
    scenario: Scenario,
    rules: Vec<RuleResult>,
}

struct RuleResult {
    id: String,
    kind: RuleKind,
    matched: RuleMatch,
    tally: Tally,
}

impl Report {
    /// Per rule kind over all scenarios, in name order.
    fn by_kind(&self) -> BTreeMap<&'static str, Tally> {
        let mut kinds: BTreeMap<&'static str, Tally> = BTreeMap::new();
        for r in self.scenarios.iter().flat_map(|s| &s.rules) {
            kinds.entry(r.kind.as_str()).or_default().add(&r.tally);
        }
        kinds
    }

    /// `{"rules": {"<kind>": {"recall", "precision", "duplicates", "onset_delay_s"}}, "scenarios": n}`;
    /// a figure with nothing to measure (no truths, no incidents) is null.
    pub fn json(&self) -> serde_json::Value {
        let rules: serde_json::Map<String, serde_json::Value> = self
            .by_kind()
            .into_iter()
            .map(|(kind, t)| {
                (
                    kind.to_string(),
                    serde_json::json!({
                        "recall": t.recall(),
                        "precision": t.precision(),
                        "duplicates": t.duplicates(),
                        // Frame times are whole milliseconds: no more digits than that.
                        "onset_delay_s": t.onset_delay_s().map(|s| (s * 1000.0).round() / 1000.0),
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "rules": rules,
            "scenarios": self.scenarios.len(),
            "motion_gate": self.frames.motion_gate,
            "frames_analysed": self.frames.analysed,
            "motion_skipped": self.frames.motion_skipped,
        })
    }

    /// Each rule that fell below its scenario's `min_recall` or `min_precision`, in words.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.scenarios {
            for r in &s.rules {
                let checks = [
                    ("recall", r.tally.recall(), s.scenario.min_recall),
                    ("precision", r.tally.precision(), s.scenario.min_precision),
                ];
                for (what, got, min) in checks {
                    if let (Some(got), Some(min)) = (got, min)
                        && got < min
                    {
                        out.push(format!(
                            "{}: rule {} ({}): {what} {got:.2} is below min_{what} {min:.2}",
                            s.scenario.path.display(),
                            r.id,
                            r.kind.as_str()
                        ));
                    }
                }
            }
        }
        out
    }
}

fn figure(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.2}"))
}

fn delay(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:+.1} s"))
}

fn fraction(n: usize, d: usize, v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{v:.2} ({n}/{d})"),
        None => "– (0/0)".into(),
    }
}

fn span(from: f64, to: Option<f64>) -> String {
    match to {
        Some(to) => format!("{from:.1}–{to:.1} s"),
        None => format!("{from:.1} s–end"),
    }
}

/// The table a district engineer reads: figures per rule kind, then per scenario and rule, with every
/// missed truth and every false incident so the reason for a figure can be looked up in the footage.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.scenarios.len();
        writeln!(
            f,
            "streetwatch eval: {n} scenario{}, replayed on their footage's own timestamps",
            if n == 1 { "" } else { "s" }
        )?;
        let fr = &self.frames;
        writeln!(
            f,
            "motion gate {}: {} of {} analysed frames skipped the model ({:.1} %)",
            if fr.motion_gate { "on" } else { "off" },
            fr.motion_skipped,
            fr.analysed,
            100.0 * fr.skipped_share()
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<14} {:>7} {:>10} {:>11} {:>12} {:>7} {:>10}",
            "rule kind", "recall", "precision", "duplicates", "onset delay", "truths", "incidents"
        )?;
        for (kind, t) in self.by_kind() {
            writeln!(
                f,
                "{:<14} {:>7} {:>10} {:>11} {:>12} {:>7} {:>10}",
                kind,
                figure(t.recall()),
                figure(t.precision()),
                figure(t.duplicates()),
                delay(t.onset_delay_s()),
                t.truths,
                t.incidents
            )?;
        }
        for s in &self.scenarios {
            writeln!(f)?;
            writeln!(
                f,
                "{} — {} ({})",
                s.scenario.name,
                s.scenario.description,
                s.scenario.path.display()
            )?;
            for r in &s.rules {
                let t = &r.tally;
                writeln!(
                    f,
                    "  {} ({}): recall {}, precision {}, duplicates {}, onset delay {}",
                    r.id,
                    r.kind.as_str(),
                    fraction(t.matched_truths, t.truths, t.recall()),
                    fraction(t.matching_incidents, t.incidents, t.precision()),
                    figure(t.duplicates()),
                    delay(t.onset_delay_s()),
                )?;
                // Every truth with the incidents that matched it, then every incident: a district
                // engineer sees a miss, a false alarm, a split or a merge at a glance.
                for (truth, hits) in &r.matched.truths {
                    let caught = if hits.is_empty() {
                        "MISSED".to_string()
                    } else {
                        let ids: Vec<String> = hits.iter().map(|i| format!("#{}", i + 1)).collect();
                        format!("caught by {}", ids.join(" "))
                    };
                    let line = format!(
                        "    truth {:<16} ±{} s  {caught:<14} {}",
                        span(truth.start, truth.end),
                        truth.tolerance,
                        truth.note
                    );
                    writeln!(f, "{}", line.trim_end())?;
                }
                for (i, (d, hit)) in r.matched.incidents.iter().enumerate() {
                    let line = format!(
                        "    incident #{:<2} {:<16} {}",
                        i + 1,
                        span(d.opened, d.closed),
                        if *hit { "" } else { "FALSE ALARM" }
                    );
                    writeln!(f, "{}", line.trim_end())?;
                }
            }
        }
        Ok(())
    }
}
