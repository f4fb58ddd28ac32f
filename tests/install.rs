//! The install layout (`make install`, README "Install (Debian)"): an installed binary finds its model,
//! pipeline templates, demo footage and ONNX Runtime from where it was installed, whatever the working
//! directory, and never loads what happens to lie in the working directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// Files a working directory might hold that look like streetwatch's own: broken, so that using any
/// of them fails.
fn plant_decoys(dir: &Path) {
    for rel in [
        ".deps/onnxruntime/libonnxruntime.so.1.31.1",
        "models/nanodet_g_416_coco_int8.toml",
        "models/nanodet_g_416_coco_int8.onnx",
        "pipelines/demo.toml",
        "pipelines/rtsp.pipeline",
        "pipelines/file.pipeline",
        "fixtures/footage/bench_720p25_2mbps.mp4",
        "fixtures/footage/vtest_h264.mp4",
    ] {
        write(&dir.join(rel), "decoy: not streetwatch's file\n");
    }
}

#[test]
fn an_installed_binary_runs_from_its_prefix_and_ignores_the_working_directory() {
    let stage = tempfile::tempdir().unwrap();
    let make = Command::new("make")
        .arg("-C")
        .arg(root())
        .arg("install")
        .arg(format!("DESTDIR={}", stage.path().display()))
        .arg("PREFIX=/usr")
        .arg(format!("BIN={}", env!("CARGO_BIN_EXE_streetwatch")))
        .output()
        .expect("running make (apt-get install make)");
    assert!(make.status.success(), "make install: {}", text(&make));

    let prefix = stage.path().join("usr");
    let share = prefix.join("share/streetwatch");
    for f in [
        prefix.join("bin/streetwatch"),
        prefix.join("lib/streetwatch/libonnxruntime.so.1.31.1"),
        share.join("models/nanodet_g_416_coco_int8.toml"),
        share.join("models/nanodet_g_416_coco_int8.onnx"),
        share.join("pipelines/rtsp.pipeline"),
        share.join("pipelines/demo.toml"),
        share.join("pipelines/district.example.toml"),
        share.join("fixtures/footage/bench_720p25_2mbps.mp4"),
        share.join("fixtures/scenarios/line_crossing_road.mp4"),
        prefix.join("lib/sysusers.d/streetwatch.conf"),
    ] {
        assert!(f.is_file(), "not installed: {}", f.display());
    }
    assert!(stage.path().join("etc/streetwatch").is_dir());
    let unit =
        std::fs::read_to_string(prefix.join("lib/systemd/system/streetwatch.service")).unwrap();
    for line in [
        "ExecStart=/usr/bin/streetwatch run --config /etc/streetwatch/streetwatch.toml",
        "Restart=on-failure",
        "User=streetwatch",
        "StateDirectory=streetwatch",
    ] {
        assert!(unit.lines().any(|l| l == line), "no `{line}` in:\n{unit}");
    }
    let sysusers = std::fs::read_to_string(prefix.join("lib/sysusers.d/streetwatch.conf")).unwrap();
    assert!(sysusers.contains("u streetwatch "), "{sysusers}");

    let work = tempfile::tempdir().unwrap();
    plant_decoys(work.path());
    let installed = |args: &[&str]| {
        Command::new(prefix.join("bin/streetwatch"))
            .args(args)
            .current_dir(work.path())
            .env_remove("STREETWATCH_ORT_LIB")
            .env_remove("STREETWATCH_HOME")
            .env("DEMO_RTSP_PORT", "8554")
            .output()
            .unwrap()
    };

    // Relative paths in a configuration resolve against its folder, not the working directory.
    let demo = share.join("pipelines/demo.toml");
    let out = installed(&["check-config", demo.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "check-config demo.toml: {}",
        text(&out)
    );

    // Defaults (model, templates, footage, ONNX Runtime) come from the prefix.
    let site = work.path().join("site/district.toml");
    write(
        &site,
        "[[cameras]]\nid = \"cam-1\"\nurl = \"rtsp://10.0.0.5/stream1\"\n",
    );
    let out = installed(&["check-config", site.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "check-config (defaults): {}",
        text(&out)
    );
    assert!(
        text(&out).contains("model nanodet-g-416-coco-int8"),
        "{}",
        text(&out)
    );

    let out = installed(&[
        "bench",
        "--cameras",
        "1",
        "--seconds",
        "2",
        "--workers",
        "1",
        "--json",
    ]);
    assert!(out.status.success(), "bench: {}", text(&out));
    assert!(text(&out).contains("\"cameras\":1"), "{}", text(&out));

    let out = installed(&["demo", "--seconds", "2"]);
    assert!(out.status.success(), "demo: {}", text(&out));
    assert!(text(&out).contains("6 cameras"), "{}", text(&out));
    assert!(
        work.path().join("data/streetwatch.db").is_file(),
        "the demo keeps its data in ./data"
    );
}
