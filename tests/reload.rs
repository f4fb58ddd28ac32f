//! Cameras added, removed and changed by a configuration reload without a restart: `streetwatch run`
//! re-reads its file on SIGHUP, the health API and metrics follow, a broken file changes nothing and says
//! where it is broken. Cameras are real RTSP streams from `streetwatch serve-footage` in another process.
//! Churn without leaks is in tests/churn.rs, alone in its process.

mod support;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use streetwatch::app::{ConfigFile, Pipeline, RunOptions};
use streetwatch::types::SystemClock;

use support::{ChildGuard, serve_footage_with, wait_until};

const LIMIT: Duration = Duration::from_secs(120);
const TOKEN: &str = "reload-test-viewer-token-0123456789";

fn clip() -> PathBuf {
    support::footage("bikes.mp4")
}

fn camera(id: &str, url: &str, fps: u32) -> String {
    format!(
        "\n[[cameras]]\nid = \"{id}\"\nname = \"Camera {id}\"\nward = \"W1\"\nurl = \"{url}\"\nfps = {fps}\nwidth = 320\nstall_seconds = 3\n"
    )
}

/// `GET path` with the viewer's token; the body of a 200 answer.
fn get(addr: &str, path: &str) -> String {
    support::http::get_ok(addr, path, TOKEN)
}

/// A camera as `/api/cameras` shows it.
#[derive(Debug, Clone)]
struct Shown {
    id: String,
    state: String,
    received: u64,
    restarts: u64,
}

fn shown(addr: &str) -> Vec<Shown> {
    let doc: serde_json::Value = serde_json::from_str(&get(addr, "/api/cameras")).unwrap();
    doc["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Shown {
            id: c["id"].as_str().unwrap().into(),
            state: c["state"].as_str().unwrap().into(),
            received: c["frames_received"].as_u64().unwrap(),
            restarts: c["restarts"].as_u64().unwrap(),
        })
        .collect()
}

fn ids(cams: &[Shown]) -> Vec<&str> {
    cams.iter().map(|c| c.id.as_str()).collect()
}

fn all_streaming(cams: &[Shown]) -> bool {
    cams.iter().all(|c| c.state == "streaming")
}

fn find<'a>(cams: &'a [Shown], id: &str) -> &'a Shown {
    cams.iter().find(|c| c.id == id).unwrap()
}

fn hangup(child: &ChildGuard) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGHUP) }, 0);
}

#[test]
fn sighup_adds_and_removes_cameras_and_a_broken_file_changes_nothing() {
    let clip = clip();
    let mounts: Vec<(&str, &Path)> = ["a", "b", "c", "d"]
        .into_iter()
        .map(|m| (m, clip.as_path()))
        .collect();
    let (_server, port) = serve_footage_with(0, &mounts, true);
    let url = |m: &str| format!("rtsp://127.0.0.1:{port}/{m}");
    let dir = tempfile::tempdir().unwrap();
    let head = format!(
        "[runtime]\ndata_dir = {:?}\nworkers = 1\n[serve]\nlisten = \"127.0.0.1:0\"\n[[serve.tokens]]\nname = \"test\"\nrole = \"viewer\"\ntoken = \"{TOKEN}\"\n",
        dir.path()
    );
    let cfg = dir.path().join("reload.toml");
    let write = |cameras: &[(&str, u32)], tail: &str| -> String {
        let text = cameras
            .iter()
            .fold(head.clone(), |t, (id, fps)| t + &camera(id, &url(id), *fps))
            + tail;
        std::fs::write(&cfg, &text).unwrap();
        text
    };
    write(&[("a", 1), ("b", 1)], "");
    let log = dir.path().join("run.log");
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_streetwatch"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn streetwatch run"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = std::io::BufReader::new(stdout)
        .lines()
        .map(Result::unwrap)
        .find(|l| l.contains("page at"))
        .expect("the page's address");
    let addr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    assert!(
        wait_until(LIMIT, || {
            let c = shown(&addr);
            ids(&c) == ["a", "b"] && all_streaming(&c)
        }),
        "{:?}",
        shown(&addr)
    );
    let a_before = find(&shown(&addr), "a").received;

    // b removed, c and d added; a is untouched.
    write(&[("a", 1), ("c", 1), ("d", 1)], "");
    hangup(&child);
    assert!(
        wait_until(LIMIT, || {
            let c = shown(&addr);
            ids(&c) == ["a", "c", "d"] && all_streaming(&c)
        }),
        "{:?}",
        shown(&addr)
    );
    let cams = shown(&addr);
    let a = find(&cams, "a");
    assert!(
        a.received >= a_before && a.restarts == 0,
        "a kept running with its counters: {a:?}, {a_before} frames before"
    );
    let metrics = get(&addr, "/metrics");
    let info = |id: &str| {
        metrics.lines().any(|l| {
            l.starts_with("streetwatch_camera_info{") && l.contains(&format!("camera=\"{id}\""))
        })
    };
    assert!(
        info("a") && info("c") && info("d") && !info("b"),
        "{metrics}"
    );

    // A file that fails validation: logged with file, line and key; nothing changes.
    let text = write(
        &[("a", 1), ("c", 1), ("d", 1)],
        &camera("e", &url("a"), 1).replace("width = 320", "width = 5"),
    );
    let line = text.lines().position(|l| l == "width = 5").unwrap() + 1;
    hangup(&child);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(LIMIT, || logged().contains("configuration not reloaded")),
        "{}",
        logged()
    );
    let error = logged()
        .lines()
        .find(|l| l.contains("configuration not reloaded"))
        .unwrap()
        .to_string();
    assert!(
        error.contains(&format!("reload.toml:{line}:")) && error.contains("cameras[3].width"),
        "{error}"
    );
    let before = shown(&addr);
    assert_eq!(ids(&before), ["a", "c", "d"]);
    assert!(
        wait_until(LIMIT, || {
            let now = shown(&addr);
            ["a", "c", "d"]
                .iter()
                .all(|id| find(&now, id).received > find(&before, id).received)
        }),
        "every camera keeps streaming: {:?}",
        shown(&addr)
    );

    // a's settings change: it restarts (new counters); c and d are untouched.
    let before = shown(&addr);
    write(&[("a", 2), ("c", 1), ("d", 1)], "");
    hangup(&child);
    assert!(
        wait_until(LIMIT, || {
            let now = shown(&addr);
            let a = find(&now, "a");
            a.received < find(&before, "a").received && a.state == "streaming"
        }),
        "a restarted: {:?} before {:?}",
        shown(&addr),
        before
    );
    let now = shown(&addr);
    for id in ["c", "d"] {
        assert!(
            find(&now, id).received >= find(&before, id).received,
            "{id} untouched: {now:?} before {before:?}"
        );
    }
}

#[test]
fn a_reload_beyond_the_capacity_fixed_at_start_is_refused_and_other_sections_wait_for_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("capacity.toml");
    let write = |runtime: &str, cameras: &[&str]| -> String {
        let text = cameras.iter().fold(
            format!("[runtime]\ndata_dir = {:?}\n{runtime}\n", dir.path()),
            |t, id| t + &camera(id, clip().to_str().unwrap(), 1),
        );
        std::fs::write(&cfg, &text).unwrap();
        text
    };
    write("workers = 1\ncamera_capacity = 1", &["f0"]);
    let (config, file) = ConfigFile::load(&cfg).unwrap();
    let mut pipeline =
        Pipeline::start(&config, RunOptions::default(), Arc::new(SystemClock)).unwrap();

    // Valid on its own, but the pool was given one slot at start.
    let text = write("workers = 1\ncamera_capacity = 2", &["f0", "f1"]);
    let line = text.lines().position(|l| l == "id = \"f1\"").unwrap() + 1;
    let error = file.reload(&mut pipeline).unwrap_err().to_string();
    assert!(
        error.contains(&format!("capacity.toml:{line}:"))
            && error.contains("cameras[1]")
            && error.contains("restart"),
        "{error}"
    );
    let ids =
        |p: &Pipeline| -> Vec<String> { p.health().iter().map(|h| h.camera.to_string()).collect() };
    assert_eq!(ids(&pipeline), ["f0"]);

    // Only [runtime] changes: the camera is untouched and the section is named as needing a restart.
    write("workers = 2\ncamera_capacity = 1", &["f0"]);
    let done = file.reload(&mut pipeline).unwrap();
    assert_eq!(done.needs_restart, ["runtime"], "{done:?}");
    assert_eq!(done.unchanged, 1, "{done:?}");
    assert!(done.added.is_empty() && done.removed.is_empty() && done.restarted.is_empty());
    assert_eq!(ids(&pipeline), ["f0"]);
    pipeline.shutdown();
}

#[test]
fn a_removed_cameras_open_incidents_are_closed_and_the_others_keep_running() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("incidents.toml");
    let walkway = support::footage("vtest_h264.mp4");
    let head = format!("[runtime]\ndata_dir = {:?}\nworkers = 1\n", dir.path());
    let keep = camera("keep", clip().to_str().unwrap(), 1);
    // People walk through the whole clip: the intrusion stays open until something closes it.
    let watched = support::intrusion_camera("walkway", walkway.to_str().unwrap());
    std::fs::write(&cfg, format!("{head}{keep}{watched}")).unwrap();
    let (config, file) = ConfigFile::load(&cfg).unwrap();
    let mut pipeline =
        Pipeline::start(&config, RunOptions::default(), Arc::new(SystemClock)).unwrap();
    let db = pipeline.db_path.clone();
    let walkway_incidents = || {
        streetwatch::store::Store::open(&db)
            .and_then(|s| s.incidents())
            .unwrap_or_default()
            .into_iter()
            .filter(|i| i.camera == "walkway")
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(LIMIT, || walkway_incidents()
            .iter()
            .any(|i| i.closed_at.is_none())),
        "the walkway's intrusion opens"
    );

    std::fs::write(&cfg, format!("{head}{keep}")).unwrap();
    let done = file.reload(&mut pipeline).unwrap();
    assert_eq!(
        (done.removed, done.unchanged),
        (vec!["walkway".to_string()], 1)
    );
    assert!(
        wait_until(LIMIT, || walkway_incidents()
            .iter()
            .all(|i| i.closed_at.is_some())),
        "{:?}",
        walkway_incidents()
    );
    assert!(
        walkway_incidents()
            .iter()
            .any(|i| i.summary.contains("configuration reload")),
        "{:?}",
        walkway_incidents()
    );
    let received = pipeline.health()[0].frames_received;
    assert!(wait_until(LIMIT, || pipeline.health()[0].frames_received > received));
    pipeline.shutdown();
}
