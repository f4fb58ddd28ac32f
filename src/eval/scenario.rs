//! Scenario files: one camera on recorded footage, its rules, and the incidents a person saw in it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::config::{self, CameraConfig, ConfigError, SourceUrl};
use crate::types::{RuleKind, Timestamp};

/// Wall-clock time of media second 0 when a scenario names none: a weekday morning in the district.
const DEFAULT_STARTS_AT: &str = "2026-12-01T09:00:00+07:00";
const DEFAULT_TOLERANCE_S: f64 = 2.0;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    scenario: Meta,
    camera: CameraConfig,
    #[serde(default)]
    truth: Vec<TruthEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    description: String,
    /// How the ground truth was made: required, a number without provenance measures nothing.
    labels: Spanned<String>,
    starts_at: Option<Spanned<String>>,
    min_recall: Option<Spanned<f64>>,
    min_precision: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TruthEntry {
    rule: Spanned<String>,
    start: Spanned<f64>,
    end: Option<Spanned<f64>>,
    tolerance: Option<Spanned<f64>>,
    #[serde(default)]
    note: String,
}

/// A loaded and checked scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub path: PathBuf,
    /// The file name without `.toml`: how tables and messages name the scenario.
    pub name: String,
    pub description: String,
    pub starts_at: Timestamp,
    pub min_recall: Option<f64>,
    pub min_precision: Option<f64>,
    pub camera: CameraConfig,
    /// The folder of the file: the camera's relative footage path resolves against it.
    pub base_dir: PathBuf,
    /// The camera's rules in file order.
    pub rules: Vec<(String, RuleKind)>,
    pub truths: Vec<Truth>,
}

/// One true incident, in media seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    pub rule: String,
    pub start: f64,
    /// `None`: still going at the end of the footage.
    pub end: Option<f64>,
    pub tolerance: f64,
    pub note: String,
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.display().to_string(),
            source,
        })?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, path, &base_dir)
    }

    /// Parses scenario text; `path` names it in errors, `base_dir` resolves the footage path.
    pub fn parse(text: &str, path: &Path, base_dir: &Path) -> Result<Scenario, ConfigError> {
        let file = path.display().to_string();
        let err = |span, key: &str, message: String| {
            config::invalid(text, &file, span, key.to_string(), message)
        };
        let parsed: File = config::parse_toml(text, &file)?;
        config::validate_camera(&parsed.camera, text, &file, base_dir)?;
        let url = &parsed.camera.url;
        match SourceUrl::parse(url.get_ref(), base_dir) {
            Ok(SourceUrl::File(footage)) if footage.is_file() => {}
            Ok(SourceUrl::File(footage)) => {
                return Err(err(
                    url.span(),
                    "camera.url",
                    format!("footage {} does not exist", footage.display()),
                ));
            }
            _ => {
                return Err(err(
                    url.span(),
                    "camera.url",
                    "a scenario replays recorded footage: give a file path".into(),
                ));
            }
        }
        let meta = &parsed.scenario;
        if meta.labels.get_ref().trim().is_empty() {
            return Err(err(
                meta.labels.span(),
                "scenario.labels",
                "say how the ground truth was made (who labelled what, at which step, by which criteria)"
                    .into(),
            ));
        }
        let starts_at = match &meta.starts_at {
            Some(s) => {
                parse_instant(s.get_ref()).map_err(|m| err(s.span(), "scenario.starts_at", m))?
            }
            None => parse_instant(DEFAULT_STARTS_AT).expect("a valid constant"),
        };
        let fraction = |v: &Option<Spanned<f64>>, key: &str| match v {
            Some(v) if !(0.0..=1.0).contains(v.get_ref()) => Err(err(
                v.span(),
                key,
                format!("must be 0–1, found {}", v.get_ref()),
            )),
            v => Ok(v.as_ref().map(|v| *v.get_ref())),
        };
        let min_recall = fraction(&meta.min_recall, "scenario.min_recall")?;
        let min_precision = fraction(&meta.min_precision, "scenario.min_precision")?;
        let rules: Vec<(String, RuleKind)> = parsed
            .camera
            .rules
            .iter()
            .map(|r| (r.id.get_ref().clone(), r.kind()))
            .collect();
        let kinds: HashMap<&str, RuleKind> =
            rules.iter().map(|(id, k)| (id.as_str(), *k)).collect();
        let mut truths = Vec::with_capacity(parsed.truth.len());
        for (i, t) in parsed.truth.iter().enumerate() {
            let key = |k: &str| format!("truth[{i}].{k}");
            if !kinds.contains_key(t.rule.get_ref().as_str()) {
                return Err(err(
                    t.rule.span(),
                    &key("rule"),
                    format!("no rule `{}` on the camera", t.rule.get_ref()),
                ));
            }
            let start = *t.start.get_ref();
            if !start.is_finite() || start < 0.0 {
                return Err(err(
                    t.start.span(),
                    &key("start"),
                    format!("must be ≥ 0 (media seconds), found {start}"),
                ));
            }
            if let Some(end) = &t.end
                && (!end.get_ref().is_finite() || *end.get_ref() < start)
            {
                return Err(err(
                    end.span(),
                    &key("end"),
                    format!("must be ≥ start ({start}), found {}", end.get_ref()),
                ));
            }
            let tolerance = match &t.tolerance {
                Some(tol) if !tol.get_ref().is_finite() || *tol.get_ref() < 0.0 => {
                    return Err(err(
                        tol.span(),
                        &key("tolerance"),
                        format!("must be ≥ 0, found {}", tol.get_ref()),
                    ));
                }
                Some(tol) => *tol.get_ref(),
                None => DEFAULT_TOLERANCE_S,
            };
            truths.push(Truth {
                rule: t.rule.get_ref().clone(),
                start,
                end: t.end.as_ref().map(|e| *e.get_ref()),
                tolerance,
                note: t.note.clone(),
            });
        }
        Ok(Scenario {
            path: path.to_path_buf(),
            name: path
                .file_stem()
                .map_or_else(|| file.clone(), |s| s.to_string_lossy().into_owned()),
            description: meta.description.clone(),
            starts_at,
            min_recall,
            min_precision,
            camera: parsed.camera,
            base_dir: base_dir.to_path_buf(),
            rules,
            truths,
        })
    }
}

/// An RFC 3339 date-time with its UTC offset (`2026-12-01T09:00:00+07:00`) as milliseconds since the epoch.
fn parse_instant(s: &str) -> Result<Timestamp, String> {
    let dt: toml::value::Datetime = s
        .parse()
        .map_err(|_| format!("`{s}` is not a date-time like {DEFAULT_STARTS_AT}"))?;
    let (Some(date), Some(time), Some(offset)) = (dt.date, dt.time, dt.offset) else {
        return Err(format!(
            "`{s}` needs a date, a time and a UTC offset, like {DEFAULT_STARTS_AT}"
        ));
    };
    let offset_min = match offset {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => i64::from(minutes),
    };
    let days = days_from_civil(
        i64::from(date.year),
        u32::from(date.month),
        u32::from(date.day),
    );
    let secs = days * 86_400
        + i64::from(time.hour) * 3600
        + i64::from(time.minute) * 60
        + i64::from(time.second)
        - offset_min * 60;
    Ok(Timestamp(
        secs * 1000 + i64::from(time.nanosecond / 1_000_000),
    ))
}

/// (year, month, day) to days since 1970-01-01: Howard Hinnant's days-from-civil algorithm.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    const SCENARIO: &str = r#"[scenario]
description = "two people at the table"
labels = "by hand"
starts_at = "2026-12-01T09:00:00+07:00"
min_recall = 0.9

[camera]
id = "table"
url = "fixtures/footage/indoor_dwell_at_table_768x432.mp4"
[[camera.zones]]
id = "counter"
polygon = [[0.4, 0.0], [0.8, 0.0], [0.8, 1.0]]
[[camera.rules]]
kind = "crowding"
id = "crowd"
zone = "counter"
min_people = 1
min_seconds = 3

[[truth]]
rule = "crowd"
start = 6.0
end = 17.0

[[truth]]
rule = "crowd"
start = 52.0
tolerance = 3.0
"#;

    fn parse(text: &str) -> Result<Scenario, ConfigError> {
        Scenario::parse(text, Path::new("s.toml"), &root())
    }

    fn message(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_good_scenario_loads_with_defaults() {
        let s = parse(SCENARIO).unwrap();
        assert_eq!(s.name, "s");
        assert_eq!(s.min_recall, Some(0.9));
        assert_eq!(s.min_precision, None);
        assert_eq!(s.rules, vec![("crowd".to_string(), RuleKind::Crowding)]);
        assert_eq!(s.truths.len(), 2);
        assert_eq!((s.truths[0].end, s.truths[0].tolerance), (Some(17.0), 2.0));
        assert_eq!((s.truths[1].end, s.truths[1].tolerance), (None, 3.0));
        // 2026-12-01T02:00:00Z: 20 788 days after the epoch, plus two hours.
        assert_eq!(s.starts_at, Timestamp((20_788 * 86_400 + 7_200) * 1000));
    }

    #[test]
    fn instants_need_an_offset_and_honour_it() {
        assert_eq!(parse_instant("1970-01-01T07:00:00+07:00"), Ok(Timestamp(0)));
        assert_eq!(
            parse_instant("2000-03-01T00:00:00.250Z"),
            Ok(Timestamp(951_868_800_250))
        );
        assert!(
            parse_instant("2026-12-01T09:00:00")
                .unwrap_err()
                .contains("UTC offset")
        );
        let m = message(&SCENARIO.replace("+07:00\"", "\""));
        assert!(m.starts_with("s.toml:4:13: scenario.starts_at: "), "{m}");
    }

    #[test]
    fn a_truth_for_a_rule_the_camera_lacks_is_located() {
        let m = message(&SCENARIO.replacen("rule = \"crowd\"", "rule = \"crowds\"", 1));
        assert_eq!(
            m,
            "s.toml:21:8: truth[0].rule: no rule `crowds` on the camera"
        );
    }

    #[test]
    fn end_before_start_and_negative_tolerance_are_located() {
        let m = message(&SCENARIO.replace("end = 17.0", "end = 5.0"));
        assert_eq!(m, "s.toml:23:7: truth[0].end: must be ≥ start (6), found 5");
        let m = message(&SCENARIO.replace("tolerance = 3.0", "tolerance = -1.0"));
        assert_eq!(m, "s.toml:28:13: truth[1].tolerance: must be ≥ 0, found -1");
        let m = message(&SCENARIO.replace("min_recall = 0.9", "min_recall = 90"));
        assert_eq!(m, "s.toml:5:14: scenario.min_recall: must be 0–1, found 90");
    }

    #[test]
    fn camera_mistakes_are_located_as_in_a_config() {
        let m = message(&SCENARIO.replace("zone = \"counter\"", "zone = \"count\""));
        assert_eq!(
            m,
            "s.toml:16:8: camera.rules[0].zone: no zone `count` on this camera"
        );
        let m = message(&SCENARIO.replace("min_seconds = 3", "min_seconds = 3\nmin_secs = 4"));
        assert!(
            m.starts_with("s.toml:19:1: unknown field `min_secs`"),
            "{m}"
        );
        let m = message(&SCENARIO.replace("indoor_dwell", "no_such"));
        assert!(m.starts_with("s.toml:9:7: camera.url: footage "), "{m}");
        let m = message(&SCENARIO.replace(
            "fixtures/footage/indoor_dwell_at_table_768x432.mp4",
            "rtsp://10.0.0.1/live",
        ));
        assert!(
            m.contains("camera.url: a scenario replays recorded footage"),
            "{m}"
        );
    }

    #[test]
    fn a_scenario_without_labels_provenance_is_refused() {
        let m = message(&SCENARIO.replace("labels = \"by hand\"\n", ""));
        assert!(m.contains("missing field `labels`"), "{m}");
        let m = message(&SCENARIO.replace("labels = \"by hand\"", "labels = \" \""));
        assert!(
            m.starts_with("s.toml:3:10: scenario.labels: say how"),
            "{m}"
        );
    }
}
