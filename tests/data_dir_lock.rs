//! One data directory, one process: two runs on the same folder would both hand the incidents the other
//! left open to their routers and both send the outbox rows in flight, so the second refuses to start,
//! naming the folder and the first's PID. The alert commands only read and write rows in transactions
//! and must not wait for the running process.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{ChildGuard, wait_until};

fn streetwatch() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_streetwatch"));
    cmd.env(
        "STREETWATCH_ORT_LIB",
        streetwatch::infer::default_runtime_path(),
    );
    cmd
}

/// `streetwatch run` on `config` for `seconds`.
fn run(config: &Path, seconds: u64) -> Command {
    let mut cmd = streetwatch();
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .arg("--seconds")
        .arg(seconds.to_string());
    cmd
}

/// Runs `cmd` to its end, which must come within `limit`.
fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_second_process_on_the_same_data_directory_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("district.toml");
    // No cameras: the pipeline, its store and the router's recovery start all the same, at no CPU cost.
    std::fs::write(
        &config,
        format!("[runtime]\ndata_dir = {data:?}\nworkers = 1\n"),
    )
    .unwrap();
    let first_log = dir.path().join("first.log");
    let mut first = ChildGuard(
        run(&config, 120)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&first_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let first_pid = first.0.id();
    assert!(
        wait_until(Duration::from_secs(60), || std::fs::read_to_string(
            &first_log
        )
        .unwrap_or_default()
        .contains("pipeline started")),
        "the first run did not start: {}",
        std::fs::read_to_string(&first_log).unwrap_or_default()
    );

    let started = Instant::now();
    let second = output_within(&mut run(&config, 20), Duration::from_secs(40));
    let took = started.elapsed();
    let stderr = text(&second.stderr);
    assert!(
        !second.status.success(),
        "the second run on {} was allowed to start (exit {:?} after {took:?}): {stderr}",
        data.display(),
        second.status
    );
    assert!(
        took < Duration::from_secs(10),
        "the second run took {took:?} to give up"
    );
    assert!(
        stderr.contains(&data.display().to_string()),
        "the message does not name the data directory {}: {stderr}",
        data.display()
    );
    assert!(
        stderr.contains(&format!("pid {first_pid}")),
        "the message does not name the first process (pid {first_pid}): {stderr}"
    );
    assert!(
        first.0.try_wait().unwrap().is_none(),
        "the first run stopped: {}",
        std::fs::read_to_string(&first_log).unwrap_or_default()
    );

    // The alert commands read the same file while the first run holds the directory.
    let list = output_within(
        streetwatch()
            .arg("--db")
            .arg(data.join("streetwatch.db"))
            .args(["alerts", "list"]),
        Duration::from_secs(10),
    );
    assert!(list.status.success(), "alerts list: {}", text(&list.stderr));

    // The first stops cleanly; the lock file it leaves (with its PID) does not keep the next run out.
    unsafe { libc::kill(first_pid as i32, libc::SIGTERM) };
    let status = first.0.wait().unwrap();
    assert!(
        status.success(),
        "first run: {status:?}: {}",
        std::fs::read_to_string(&first_log).unwrap_or_default()
    );
    let third = output_within(&mut run(&config, 1), Duration::from_secs(60));
    assert!(
        third.status.success(),
        "a run after the first ended: {}",
        text(&third.stderr)
    );
}
