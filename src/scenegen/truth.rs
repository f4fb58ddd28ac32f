//! The script's ground truth checked against the actors' exact paths.
//!
//! The author writes the truth (when the car stops, when the group forms); this module works out, frame by
//! frame from the keyframed paths, when each rule's condition really holds for an ideal detector and tracker,
//! and insists that every truth matches such an event at both ends to the frame (the truth's `tolerance` is
//! the slack the evaluation gives a detector, not slack for the author) and that every such event has a truth. A truth that says "parked from 10 s" with no actor standing still in the zone then, or
//! a passer-by the author forgot would trigger the rule, stops the generation.

use serde::Deserialize;

use crate::analyse::Polygon;

use super::script::TruthSpec;

/// What the check reads of a `[camera]` table (the scenario loader validates the rest).
#[derive(Debug, Deserialize)]
pub struct CameraView {
    #[serde(default)]
    pub zones: Vec<ZoneView>,
    #[serde(default)]
    pub lines: Vec<LineView>,
    #[serde(default)]
    pub rules: Vec<RuleView>,
}

#[derive(Debug, Deserialize)]
pub struct ZoneView {
    pub id: String,
    pub polygon: Vec<[f32; 2]>,
}

#[derive(Debug, Deserialize)]
pub struct LineView {
    pub id: String,
    pub points: [[f64; 2]; 2],
    pub in_direction: [f64; 2],
}

#[derive(Debug, Deserialize)]
pub struct RuleView {
    pub kind: String,
    pub id: String,
    pub zone: Option<String>,
    pub line: Option<String>,
    pub classes: Option<Vec<String>>,
    pub min_seconds: Option<f64>,
    pub clear_seconds: Option<f64>,
    pub min_people: Option<usize>,
    pub direction: Option<[f64; 2]>,
    pub alert_on: Option<String>,
    pub schedule: Option<ScheduleView>,
}

#[derive(Debug, Deserialize)]
pub struct ScheduleView {
    #[serde(default)]
    pub hours: Vec<String>,
    #[serde(default)]
    pub days: Vec<String>,
}

/// An actor as the check sees it: its class and its exact path.
pub struct Mover<'a> {
    pub class: &'a str,
    pub path: &'a [[f64; 4]],
}

/// Sampling: the clip's frame times.
pub struct Timeline {
    pub fps: u32,
    pub seconds: f64,
    /// Local time (UTC+7) of media second 0, in seconds since Monday 00:00.
    pub week_offset: f64,
}

impl Timeline {
    fn times(&self) -> impl Iterator<Item = f64> + '_ {
        let n = (self.seconds * self.fps as f64).round() as usize;
        (0..n).map(|i| i as f64 / self.fps as f64)
    }
}

/// An interval the rule's condition holds, `[start, end]` in media seconds (`end` = clip end if still on).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    pub start: f64,
    pub end: f64,
}

/// Checks `truths` against the events the paths make; `Err((truth index or None, message))`.
pub fn check(
    camera: &CameraView,
    movers: &[Mover],
    truths: &[TruthSpec],
    timeline: &Timeline,
) -> Result<(), (Option<usize>, String)> {
    for (i, t) in truths.iter().enumerate() {
        if !camera.rules.iter().any(|r| r.id == t.rule) {
            return Err((Some(i), format!("no rule `{}` in [camera]", t.rule)));
        }
    }
    let clip_end = timeline.times().last().unwrap_or(0.0);
    let frame = 1.0 / timeline.fps as f64 + 1e-6;
    let same = |e: &Event, t: &TruthSpec| {
        (e.start - t.start).abs() <= frame && (e.end - t.end.unwrap_or(clip_end)).abs() <= frame
    };
    for rule in &camera.rules {
        let events = events(rule, camera, movers, timeline).map_err(|m| (None, m))?;
        let mine: Vec<(usize, &TruthSpec)> = truths
            .iter()
            .enumerate()
            .filter(|(_, t)| t.rule == rule.id)
            .collect();
        for &(i, t) in &mine {
            if !events.iter().any(|e| same(e, t)) {
                return Err((
                    Some(i),
                    format!(
                        "[{:.1}, {}] matches no event of the actors' paths to the frame; the paths give {}",
                        t.start,
                        t.end.map_or("end".into(), |e| format!("{e:.1}")),
                        list(&events)
                    ),
                ));
            }
        }
        for e in &events {
            if !mine.iter().any(|(_, t)| same(e, t)) {
                return Err((
                    None,
                    format!(
                        "rule `{}`: the actors' paths make an event at [{:.1}, {:.1}] that no truth covers",
                        rule.id, e.start, e.end
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn list(events: &[Event]) -> String {
    if events.is_empty() {
        return "none".into();
    }
    events
        .iter()
        .map(|e| format!("[{:.1}, {:.1}]", e.start, e.end))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The defaults the analyser uses for what a rule leaves unset (one source: the config's table).
fn defaults(kind: &str) -> Option<crate::config::RuleDefaults> {
    crate::types::RuleKind::parse(kind).map(crate::config::RuleDefaults::of)
}

/// The rule's events for an ideal detector and tracker that sees every actor at its exact place.
fn events(
    rule: &RuleView,
    camera: &CameraView,
    movers: &[Mover],
    timeline: &Timeline,
) -> Result<Vec<Event>, String> {
    let classes: Vec<&str> = match &rule.classes {
        Some(c) => c.iter().map(String::as_str).collect(),
        None => defaults(&rule.kind).map_or_else(Vec::new, |d| d.classes.to_vec()),
    };
    let movers: Vec<&Mover> = movers
        .iter()
        .filter(|m| classes.contains(&m.class))
        .collect();
    let min_seconds = rule
        .min_seconds
        .unwrap_or_else(|| defaults(&rule.kind).map_or(0.0, |d| f64::from(d.min_seconds)));
    let active = |t: f64| {
        rule.schedule
            .as_ref()
            .is_none_or(|s| schedule_active(s, timeline.week_offset + t))
    };
    if rule.kind == "line_crossing" {
        let id = rule
            .line
            .as_deref()
            .ok_or(format!("rule `{}` names no line", rule.id))?;
        let line = camera
            .lines
            .iter()
            .find(|l| l.id == id)
            .ok_or(format!("rule `{}`: no line `{id}`", rule.id))?;
        let alert_on = rule.alert_on.as_deref().unwrap_or("both");
        let mut out = Vec::new();
        for m in &movers {
            let mut prev: Option<(f64, f64)> = None;
            for t in timeline.times() {
                let here = super::compose::place_at(m.path, t).map(|p| (p.x, p.y));
                if let (Some(a), Some(b)) = (prev, here)
                    && let Some(inward) = crosses(line, a, b)
                    && active(t)
                    && (alert_on == "both" || (alert_on == "in") == inward)
                {
                    out.push(Event { start: t, end: t });
                }
                prev = here;
            }
        }
        out.sort_by(|a, b| a.start.total_cmp(&b.start));
        return Ok(out);
    }
    let id = rule
        .zone
        .as_deref()
        .ok_or(format!("rule `{}` names no zone", rule.id))?;
    let zone = camera
        .zones
        .iter()
        .find(|z| z.id == id)
        .ok_or(format!("rule `{}`: no zone `{id}`", rule.id))?;
    let polygon = Polygon::new(&zone.polygon);
    // Per mover and frame: on screen in the zone, and its velocity along the path's current segment.
    let state = |m: &Mover, t: f64| -> Option<(bool, (f64, f64))> {
        let p = super::compose::place_at(m.path, t)?;
        let inside = polygon.contains((p.x as f32, p.y as f32));
        Some((inside, velocity_at(m.path, t)))
    };
    let still = |d: (f64, f64)| d.0.abs() < 1e-9 && d.1.abs() < 1e-9;
    let per_object = |cond: &dyn Fn(bool, (f64, f64)) -> bool| -> Vec<Vec<bool>> {
        movers
            .iter()
            .map(|m| {
                timeline
                    .times()
                    .map(|t| active(t) && state(m, t).is_some_and(|(i, d)| cond(i, d)))
                    .collect()
            })
            .collect()
    };
    let times: Vec<f64> = timeline.times().collect();
    let clear = rule.clear_seconds.unwrap_or(0.0);
    let runs = |on: &[bool]| intervals(on, &times, clear, min_seconds);
    let out: Vec<Event> = match rule.kind.as_str() {
        "loitering" => per_object(&|inside, _| inside)
            .iter()
            .flat_map(|o| runs(o))
            .collect(),
        "parking" => per_object(&|inside, d| inside && still(d))
            .iter()
            .flat_map(|o| runs(o))
            .collect(),
        "wrong_way" => {
            let dir = rule
                .direction
                .ok_or(format!("rule `{}` needs direction", rule.id))?;
            per_object(&|inside, d| inside && d.0 * dir[0] + d.1 * dir[1] < -1e-9)
                .iter()
                .flat_map(|o| runs(o))
                .collect()
        }
        "intrusion" | "encroachment" | "crowding" => {
            let need = match rule.kind.as_str() {
                "crowding" => rule
                    .min_people
                    .ok_or(format!("rule `{}` needs min_people", rule.id))?,
                _ => 1,
            };
            let each = if rule.kind == "encroachment" {
                per_object(&|inside, d| inside && still(d))
            } else {
                per_object(&|inside, _| inside)
            };
            let on: Vec<bool> = (0..times.len())
                .map(|i| each.iter().filter(|o| o[i]).count() >= need)
                .collect();
            runs(&on)
        }
        other => return Err(format!("rule `{}`: unknown kind `{other}`", rule.id)),
    };
    let mut out = out;
    out.sort_by(|a, b| a.start.total_cmp(&b.start));
    Ok(out)
}

/// Velocity (frame fractions per second) on the keyframe segment that starts at or before `t`; the last
/// keyframe takes the segment that ends there.
fn velocity_at(path: &[[f64; 4]], t: f64) -> (f64, f64) {
    let i = path
        .partition_point(|k| k[0] <= t)
        .clamp(1, path.len().max(1))
        - 1;
    let (a, b) = match (path.get(i), path.get(i + 1)) {
        (Some(&a), Some(&b)) => (a, b),
        (Some(&b), None) if i > 0 => (path[i - 1], b),
        _ => return (0.0, 0.0),
    };
    let dt = b[0] - a[0];
    if dt <= 0.0 {
        return (0.0, 0.0);
    }
    ((b[1] - a[1]) / dt, (b[2] - a[2]) / dt)
}

/// Runs of `on`, gaps shorter than `clear` bridged, kept when they last at least `min_seconds`.
fn intervals(on: &[bool], times: &[f64], clear: f64, min_seconds: f64) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    let mut start = None;
    for (i, &o) in on.iter().enumerate() {
        match (o, start) {
            (true, None) => start = Some(times[i]),
            (false, Some(s)) => {
                push_run(
                    &mut out,
                    Event {
                        start: s,
                        end: times[i],
                    },
                    clear,
                );
                start = None;
            }
            _ => {}
        }
    }
    if let (Some(s), Some(&end)) = (start, times.last()) {
        push_run(&mut out, Event { start: s, end }, clear);
    }
    out.retain(|e| e.end - e.start >= min_seconds);
    out
}

fn push_run(out: &mut Vec<Event>, e: Event, clear: f64) {
    match out.last_mut() {
        Some(last) if e.start - last.end < clear => last.end = e.end,
        _ => out.push(e),
    }
}

/// Whether the step a → b crosses the line segment; `Some(true)` when it moves along `in_direction`.
fn crosses(line: &LineView, a: (f64, f64), b: (f64, f64)) -> Option<bool> {
    let [p, q] = line.points;
    let side = |s: (f64, f64)| (q[0] - p[0]) * (s.1 - p[1]) - (q[1] - p[1]) * (s.0 - p[0]);
    let (sa, sb) = (side(a), side(b));
    // Touching the line counts as crossing it; leaving it from the touch point does not count again.
    if sa == 0.0 || (sb != 0.0 && (sa > 0.0) == (sb > 0.0)) {
        return None;
    }
    // The segment's ends must lie on either side of the step too.
    let step = |s: [f64; 2]| (b.0 - a.0) * (s[1] - a.1) - (b.1 - a.1) * (s[0] - a.0);
    if (step(p) > 0.0) == (step(q) > 0.0) {
        return None;
    }
    let d = (b.0 - a.0, b.1 - a.1);
    Some(d.0 * line.in_direction[0] + d.1 * line.in_direction[1] > 0.0)
}

/// Whether a schedule is on at `week_seconds` (local time since Monday 00:00).
fn schedule_active(s: &ScheduleView, week_seconds: f64) -> bool {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let w = week_seconds.rem_euclid(7.0 * 86_400.0);
    let day = DAYS[(w / 86_400.0) as usize];
    let minute = (w % 86_400.0) / 60.0;
    let day_ok = s.days.is_empty() || s.days.iter().any(|d| d == day);
    let hour_ok = s.hours.is_empty()
        || s.hours.iter().any(|h| {
            let mins = |hm: &str| {
                let (h, m) = hm.split_once(':')?;
                Some(h.trim().parse::<f64>().ok()? * 60.0 + m.trim().parse::<f64>().ok()?)
            };
            h.split_once('-')
                .and_then(|(a, b)| Some((mins(a)?, mins(b)?)))
                .is_some_and(|(a, b)| a <= minute && minute < b)
        });
    day_ok && hour_ok
}

/// Seconds since Monday 00:00 in UTC+7 of an RFC 3339 time such as `2026-12-01T09:00:00+07:00`.
pub fn week_offset(rfc3339: &str) -> Option<f64> {
    let (date, rest) = rfc3339.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (clock, offset) = match rest.find(['+', '-', 'Z']) {
        Some(i) => rest.split_at(i),
        None => return None,
    };
    let mut c = clock.split(':').map(|p| p.parse::<f64>().ok());
    let (h, mi, s) = (c.next()??, c.next()??, c.next().flatten().unwrap_or(0.0));
    let offset_s = if offset == "Z" {
        0.0
    } else {
        let sign = if offset.starts_with('-') { -1.0 } else { 1.0 };
        let (oh, om) = offset[1..].split_once(':')?;
        sign * (oh.parse::<f64>().ok()? * 3600.0 + om.parse::<f64>().ok()? * 60.0)
    };
    // Days since 1970-01-01 (a Thursday), from Howard Hinnant's days_from_civil.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let utc = days as f64 * 86_400.0 + h * 3600.0 + mi * 60.0 + s - offset_s;
    // Local UTC+7; 1970-01-01 was a Thursday, three days after a Monday.
    Some((utc + 7.0 * 3600.0 + 3.0 * 86_400.0).rem_euclid(7.0 * 86_400.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(toml_text: &str) -> CameraView {
        toml::from_str(toml_text).unwrap()
    }

    const KERB: &str = r#"
        [[zones]]
        id = "kerb"
        polygon = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]
        [[rules]]
        kind = "parking"
        id = "park"
        zone = "kerb"
        min_seconds = 10
    "#;

    fn truth(start: f64, end: Option<f64>) -> TruthSpec {
        TruthSpec {
            rule: "park".into(),
            start,
            end,
            tolerance: Some(1.0),
            note: None,
        }
    }

    #[test]
    fn a_parked_car_matches_its_truth_and_a_short_stop_needs_none() {
        let cam = camera(KERB);
        let tl = Timeline {
            fps: 10,
            seconds: 60.0,
            week_offset: 0.0,
        };
        // Car: drives in over 0–5 s, stands in the kerb zone 5–40 s, leaves by 45 s. Van: stops 20–25 s (< 10 s).
        let car = [
            [0.0, 0.1, 0.3, 0.2],
            [5.0, 0.5, 0.7, 0.2],
            [40.0, 0.5, 0.7, 0.2],
            [45.0, 0.9, 0.3, 0.2],
        ];
        let van = [
            [15.0, 0.0, 0.8, 0.2],
            [20.0, 0.3, 0.8, 0.2],
            [25.0, 0.3, 0.8, 0.2],
            [30.0, 1.0, 0.8, 0.2],
        ];
        let movers = [
            Mover {
                class: "car",
                path: &car,
            },
            Mover {
                class: "truck",
                path: &van,
            },
        ];
        assert_eq!(check(&cam, &movers, &[truth(5.0, Some(40.0))], &tl), Ok(()));
        // A truth the paths do not bear out (parked from 12 s) fails, naming what the paths give.
        let err = check(&cam, &movers, &[truth(12.0, Some(40.0))], &tl).unwrap_err();
        assert_eq!(err.0, Some(0));
        assert!(err.1.contains("[5.0, 40.0]"), "{}", err.1);
        // Forgetting the truth fails too.
        let err = check(&cam, &movers, &[], &tl).unwrap_err();
        assert!(err.1.contains("no truth covers"), "{}", err.1);
    }

    #[test]
    fn crossings_are_counted_per_direction() {
        let cam = camera(
            r#"
            [[lines]]
            id = "gate"
            points = [[0.0, 0.5], [1.0, 0.5]]
            in_direction = [0.0, -1.0]
            [[rules]]
            kind = "line_crossing"
            id = "gate-in"
            line = "gate"
            alert_on = "in"
            "#,
        );
        let tl = Timeline {
            fps: 10,
            seconds: 20.0,
            week_offset: 0.0,
        };
        // Up the frame (in) crossing y = 0.5 at 5 s; down (out) crossing at 15 s.
        let up = [[0.0, 0.5, 1.0, 0.2], [10.0, 0.5, 0.0, 0.2]];
        let down = [[10.0, 0.2, 0.0, 0.2], [20.0, 0.2, 1.0, 0.2]];
        let movers = [
            Mover {
                class: "person",
                path: &up,
            },
            Mover {
                class: "person",
                path: &down,
            },
        ];
        let t = TruthSpec {
            rule: "gate-in".into(),
            start: 5.0,
            end: Some(5.0),
            tolerance: Some(0.5),
            note: None,
        };
        assert_eq!(check(&cam, &movers, &[t], &tl), Ok(()));
    }

    #[test]
    fn schedules_use_local_time_in_ho_chi_minh() {
        // 2026-12-01 is a Tuesday; 09:00 at +07:00 is 1 day 9 h after Monday 00:00.
        assert_eq!(
            week_offset("2026-12-01T09:00:00+07:00"),
            Some(86_400.0 + 9.0 * 3600.0)
        );
        // The same instant written in UTC.
        assert_eq!(
            week_offset("2026-12-01T02:00:00Z"),
            Some(86_400.0 + 9.0 * 3600.0)
        );
        let s = ScheduleView {
            hours: vec!["07:00-11:00".into()],
            days: vec!["tue".into()],
        };
        assert!(schedule_active(&s, 86_400.0 + 10.99 * 3600.0));
        assert!(!schedule_active(&s, 86_400.0 + 11.0 * 3600.0));
        assert!(!schedule_active(&s, 2.0 * 86_400.0 + 9.0 * 3600.0));
    }
}
