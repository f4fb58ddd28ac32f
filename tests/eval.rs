//! `streetwatch eval` end to end: the committed scenarios replayed through the real pipeline (GStreamer,
//! NanoDet, the rules, SQLite), the JSON it prints, its exit status, and a deterministic replay.

mod support;

use std::path::Path;
use std::process::{Command, Output};

fn eval(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_streetwatch"))
        .arg("eval")
        .args(args)
        .current_dir(support::root())
        .output()
        .expect("running streetwatch eval")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn committed_scenarios_meet_their_minimums_and_print_one_json_object() {
    let out = eval(&["--json"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "eval failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    let json: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"));
    let files = std::fs::read_dir(support::root().join("fixtures/scenarios"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "toml")
        })
        .count();
    assert_eq!(json["scenarios"], files, "{json}");
    // Replays gate motion as a district does, and say how many frames skipped the model.
    assert_eq!(json["motion_gate"], true, "{json}");
    let analysed = json["frames_analysed"].as_u64().unwrap();
    let skipped = json["motion_skipped"].as_u64().unwrap();
    assert!(analysed > 0 && skipped <= analysed, "{json}");
    let rules = json["rules"].as_object().expect("`rules` is an object");
    // The rule kinds the committed scenario files configure.
    let mut kinds: Vec<&str> = rules.keys().map(String::as_str).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "crowding",
            "encroachment",
            "intrusion",
            "line_crossing",
            "loitering",
            "parking",
            "wrong_way"
        ],
        "{json}"
    );
    for (kind, figures) in rules {
        let f = figures.as_object().expect("figures are an object");
        let mut keys: Vec<&str> = f.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["duplicates", "onset_delay_s", "precision", "recall"],
            "{kind}"
        );
        for key in ["recall", "precision"] {
            let v = &f[key];
            assert!(
                v.is_null() || v.as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)),
                "{kind}.{key} = {v}"
            );
        }
        for key in ["duplicates", "onset_delay_s"] {
            assert!(
                f[key].is_null() || f[key].is_f64(),
                "{kind}.{key} = {}",
                f[key]
            );
        }
    }
}

#[test]
fn every_rule_kind_meets_the_district_bar_on_the_committed_scenarios() {
    // The bar written in the issue before any run: at least six rule kinds measured, each with recall
    // and precision at least 0.9 and at most 1.1 incidents per true incident.
    let out = eval(&["--json"]);
    let json: serde_json::Value = serde_json::from_str(text(&out.stdout).trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {}", text(&out.stderr)));
    let rules = json["rules"].as_object().unwrap();
    let measured: Vec<&String> = rules
        .iter()
        .filter(|(_, f)| !f["recall"].is_null())
        .map(|(k, _)| k)
        .collect();
    assert!(measured.len() >= 6, "{json}");
    for kind in measured {
        let f = &rules[kind];
        let get = |k: &str| {
            f[k].as_f64()
                .unwrap_or_else(|| panic!("{kind}.{k}: {json}"))
        };
        assert!(get("recall") >= 0.9, "{kind}: {json}");
        assert!(get("precision") >= 0.9, "{kind}: {json}");
        assert!(get("duplicates") <= 1.1, "{kind}: {json}");
    }
}

#[test]
fn replays_are_identical_run_to_run_even_side_by_side() {
    // Two processes on the same scenario at once: each competes with the other for the CPU, and the
    // footage's own timestamps still give the same incidents.
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_streetwatch"))
            .args([
                "eval",
                "--json",
                "fixtures/scenarios/line_crossing_road.toml",
            ])
            .current_dir(support::root())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(!a.stdout.is_empty(), "{}", text(&a.stderr));
    assert_eq!(text(&a.stdout), text(&b.stdout));
}

/// A scenario on the indoor clip where five people would have to gather: nobody does, so the truth is
/// missed and min_recall = 1 cannot be met.
fn impossible_scenario(dir: &Path) -> std::path::PathBuf {
    let footage = support::footage("indoor_dwell_at_table_768x432.mp4");
    let path = dir.join("impossible.toml");
    std::fs::write(
        &path,
        format!(
            r#"[scenario]
description = "a crowd of five at a counter where only one person ever stands"
labels = "a deliberately wrong truth: the clip never shows more than one person"
min_recall = 1.0

[camera]
id = "counter"
url = {footage:?}
[[camera.zones]]
id = "counter"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
[[camera.rules]]
kind = "crowding"
id = "crowd-counter"
zone = "counter"
min_people = 5
min_seconds = 3

[[truth]]
rule = "crowd-counter"
start = 10.0
end = 20.0
"#
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_missed_min_recall_makes_eval_fail_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = impossible_scenario(dir.path());
    let out = eval(&["--json", scenario.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "eval passed\n{stdout}\n{stderr}");
    // The figures are still printed, then the reason.
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(json["rules"]["crowding"]["recall"], 0.0, "{json}");
    assert!(
        stderr.contains("rule crowd-counter (crowding): recall 0.00 is below min_recall 1.00"),
        "{stderr}"
    );
    // The table names the missed truth.
    let out = eval(&[scenario.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("truth 10.0–20.0 s"), "{stdout}");
    assert!(stdout.contains("MISSED"), "{stdout}");
}

/// The overhead parking aisle is kept as a known limit of the COCO detector, not in the default set:
/// NanoDet labels cars seen from straight above "cell phone", so no vehicle rule can see them. The
/// scenarios still run and report every missed truth; when a detector that sees them is configured,
/// this test fails and the files move back to fixtures/scenarios.
#[test]
fn the_overhead_aisle_is_a_reported_known_limit() {
    let out = eval(&["fixtures/scenarios/known_limits/parking_aisle_traffic.toml"]);
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert_eq!(stdout.matches("MISSED").count(), 4, "{stdout}");
    assert!(
        text(&out.stderr).contains("recall 0.00 is below min_recall 0.90"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_scenario_mistake_is_located_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let good = impossible_scenario(dir.path());
    let bad = dir.path().join("bad.toml");
    let body = std::fs::read_to_string(&good).unwrap().replace(
        "rule = \"crowd-counter\"\nstart",
        "rule = \"crowd-kounter\"\nstart",
    );
    std::fs::write(&bad, body).unwrap();
    let out = eval(&[good.to_str().unwrap(), bad.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    // `rule = "crowd-kounter"` is on line 20 of the file, its value at column 8.
    assert!(
        stderr.contains(&format!(
            "{}:20:8: truth[0].rule: no rule `crowd-kounter` on the camera",
            bad.display()
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing was replayed");
}
