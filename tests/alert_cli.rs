//! The operator CLI over the same SQLite file the router writes: silences, alerts, outbox.

use clap::{Parser, Subcommand};
use streetwatch::alert::cli::{AlertCommand, run_to};
use streetwatch::alert::{AlertConfig, Router, Store};
use streetwatch::types::{
    CameraId, IncidentEvent, IncidentKey, IncidentPhase, RuleKind, Severity, Timestamp,
};
use tempfile::TempDir;

/// Mirrors how main.rs mounts the commands: flattened into the top-level subcommands.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Top,
}

#[derive(Subcommand)]
enum Top {
    #[command(flatten)]
    Alert(AlertCommand),
}

const NOW: Timestamp = Timestamp(1_795_000_000_000);

fn run(db: &std::path::Path, args: &[&str]) -> Result<String, String> {
    let cli = Cli::try_parse_from(std::iter::once("streetwatch").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    let Top::Alert(cmd) = cli.cmd;
    let mut out = Vec::new();
    run_to(cmd, db, NOW, &mut out).map_err(|e| format!("{e:#}"))?;
    Ok(String::from_utf8(out).unwrap())
}

fn seed(db: &std::path::Path) {
    seed_hook(db, "http://127.0.0.1:9/hook");
}

/// One notice to a webhook at `url`.
fn seed_hook(db: &std::path::Path, url: &str) {
    let cfg = AlertConfig::from_toml(&format!(
        r#"
[[receivers]]
name = "city"
webhook = {{ url = "{url}", secret = "0123456789abcdef" }}
[route]
receiver = "city"
group_wait = "0s"
"#
    ))
    .unwrap();
    let mut router = Router::open(&cfg, db, NOW).unwrap();
    let ev = IncidentEvent {
        key: IncidentKey {
            camera: CameraId::new("d1-nh-03"),
            rule: "plaza-crowd".into(),
            zone: "plaza".into(),
            episode: NOW,
        },
        phase: IncidentPhase::Opened,
        at: NOW,
        kind: RuleKind::Crowding,
        severity: Severity::Warning,
        camera_name: "Nguyễn Huệ / Lê Lợi".into(),
        ward: "Bến Nghé".into(),
        summary: "7 người".into(),
        count: 7,
        snapshot: None,
    };
    router.submit(&ev, NOW).unwrap();
    router.submit(&ev, NOW).unwrap();
    assert_eq!(router.tick(NOW).unwrap().len(), 1);
}

#[test]
fn silences_are_added_listed_and_expired() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let out = run(
        &db,
        &[
            "silence",
            "add",
            "--ward",
            "Bến Nghé",
            "--severity",
            "warning",
            "--duration",
            "2h",
            "--comment",
            "diễu hành 2/9",
        ],
    )
    .unwrap();
    assert_eq!(
        out,
        "silence 1 created: 2026-11-18T11:06:40Z until 2026-11-18T13:06:40Z\n"
    );
    let out = run(
        &db,
        &[
            "silence",
            "add",
            "--camera",
            "d1-nh-03",
            "--starts",
            "2026-11-18T22:00:00+07:00",
            "--ends",
            "2026-11-19T06:00:00+07:00",
            "--comment",
            "bảo trì",
            "--created-by",
            "kỹ thuật",
        ],
    )
    .unwrap();
    assert!(
        out.starts_with("silence 2 created: 2026-11-18T15:00:00Z until 2026-11-18T23:00:00Z"),
        "{out}"
    );
    let list = run(&db, &["silence", "list"]).unwrap();
    assert!(
        list.contains("active")
            && list.contains("ward=Bến Nghé severity=warning")
            && list.contains("diễu hành 2/9 (cli)"),
        "{list}"
    );
    assert!(
        list.contains("pending") && list.contains("camera=d1-nh-03") && list.contains("(kỹ thuật)"),
        "{list}"
    );
    assert_eq!(
        run(&db, &["silence", "expire", "1"]).unwrap(),
        "silence 1 expired\n"
    );
    assert!(
        run(&db, &["silence", "expire", "1"])
            .unwrap_err()
            .contains("no active silence 1")
    );
    let list = run(&db, &["silence", "list"]).unwrap();
    assert!(!list.contains("Bến Nghé"), "{list}");
    let all = run(&db, &["silence", "list", "--all", "--json"]).unwrap();
    let first: serde_json::Value = serde_json::from_str(all.lines().next().unwrap()).unwrap();
    assert_eq!(first["expired_at"], NOW.0);
    assert_eq!(Store::open(&db).unwrap().silences(true).unwrap().len(), 2);
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    assert!(
        run(&db, &["silence", "add", "--comment", "x"])
            .unwrap_err()
            .contains("at least one matcher")
    );
    assert!(
        run(&db, &["silence", "add", "--ward", "W"])
            .unwrap_err()
            .contains("--comment")
    );
    assert!(
        run(
            &db,
            &[
                "silence",
                "add",
                "--ward",
                "W",
                "--comment",
                "x",
                "--starts",
                "tomorrow"
            ]
        )
        .unwrap_err()
        .contains("bad time")
    );
    assert!(
        run(
            &db,
            &[
                "silence",
                "add",
                "--ward",
                "W",
                "--comment",
                "x",
                "--duration",
                "5 min"
            ]
        )
        .unwrap_err()
        .contains("bad duration")
    );
    assert!(
        run(
            &db,
            &[
                "silence",
                "add",
                "--ward",
                "W",
                "--comment",
                "x",
                "--severity",
                "huge"
            ]
        )
        .unwrap_err()
        .contains("unknown severity")
    );
    assert!(
        run(&db, &["alerts", "list", "--status", "open"])
            .unwrap_err()
            .contains("firing or resolved")
    );
    assert!(
        run(&db, &["outbox", "show", "7"])
            .unwrap_err()
            .contains("no delivery 7")
    );
}

#[test]
fn alerts_and_outbox_show_what_the_router_decided() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    seed(&db);
    let alerts = run(&db, &["alerts", "list"]).unwrap();
    assert!(
        alerts.contains("firing") && alerts.contains("d1-nh-03/plaza-crowd/plaza/1795000000000"),
        "{alerts}"
    );
    let row: serde_json::Value =
        serde_json::from_str(run(&db, &["alerts", "list", "--json"]).unwrap().trim()).unwrap();
    assert_eq!(
        (row["duplicates"].as_i64(), row["last_notice_id"].as_i64()),
        (Some(1), Some(1))
    );
    assert!(
        run(&db, &["alerts", "list", "--status", "resolved"])
            .unwrap()
            .lines()
            .count()
            == 1,
        "header only"
    );

    let outbox = run(&db, &["outbox", "list"]).unwrap();
    assert!(
        outbox.contains("city") && outbox.contains("webhook") && outbox.contains("pending"),
        "{outbox}"
    );
    let show = run(&db, &["outbox", "show", "1"]).unwrap();
    assert!(
        show.contains("state pending after 0 attempts") && show.contains("pending      decided"),
        "{show}"
    );
    assert!(
        run(&db, &["outbox", "retry", "1"])
            .unwrap_err()
            .contains("not dead-lettered")
    );
    assert_eq!(
        run(&db, &["outbox", "list", "--state", "dead"])
            .unwrap()
            .lines()
            .count(),
        1
    );
}

/// Times and durations an operator can mistype: each is refused with a reason, none panics.
#[test]
fn odd_times_and_durations_are_refused_not_panicked() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let add = |extra: &[&str]| {
        let mut args = vec!["silence", "add", "--ward", "W", "--comment", "x"];
        args.extend_from_slice(extra);
        run(&db, &args)
    };
    let refused = [
        // A non-ASCII offset: byte slicing in the middle of `é` used to panic.
        (&["--starts", "2026-11-18T11:06+0é00"][..], "bad time"),
        (&["--ends", "2026-11-18T11:06:00+éé0"][..], "bad time"),
        // No 31 February, no offset of a day or more.
        (&["--starts", "2026-02-31T00:00Z"][..], "bad time"),
        (&["--starts", "2026-11-18T11:06+24:00"][..], "bad time"),
        // Milliseconds past the end of time used to overflow adding to the start.
        (
            &["--duration", "9223372036854775807ms"][..],
            "--duration must be more than 0s and at most 366d",
        ),
        (
            &["--duration=-5"][..],
            "--duration must be more than 0s and at most 366d",
        ),
    ];
    for (extra, want) in refused {
        let err = add(extra).unwrap_err();
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    // What is right still works: the longest silence, and an offset with minutes.
    assert!(add(&["--duration", "366d"]).is_ok());
    let out = add(&["--starts", "2026-11-18T23:36-05:30", "--duration", "1h"]).unwrap();
    assert!(
        out.contains("2026-11-19T05:06:00Z until 2026-11-19T06:06:00Z"),
        "{out}"
    );
}

#[test]
fn webhook_credentials_do_not_show_in_the_outbox() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    seed_hook(&db, "https://ops:PwInUrl77@x/hook?token=SECRET123&v=2");
    for args in [
        &["outbox", "list"][..],
        &["outbox", "list", "--json"],
        &["outbox", "show", "1"],
    ] {
        let out = run(&db, args).unwrap();
        assert!(out.contains("https://"), "{args:?}: {out}");
        assert!(
            !out.contains("SECRET123") && !out.contains("PwInUrl77"),
            "{args:?}: {out}"
        );
        assert!(out.contains("token=***"), "{args:?}: {out}");
    }
}
