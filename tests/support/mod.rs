//! Shared helpers for integration tests: fixture paths, footage decoding, the model, child processes.
#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use streetwatch::frame::Frame;
use streetwatch::infer::{self, Detection, InferError, ModelManifest};
use streetwatch::pool::BatchDetector;

pub mod cluster;
pub mod http;
pub mod keyframes;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn footage(name: &str) -> PathBuf {
    root().join("fixtures/footage").join(name)
}

pub fn nanodet() -> Arc<ModelManifest> {
    infer::init_runtime(&infer::default_runtime_path())
        .expect("ONNX Runtime (run scripts/setup.sh)");
    Arc::new(
        ModelManifest::load(&root().join("models/nanodet_g_416_coco.toml"))
            .expect("NanoDet manifest"),
    )
}

/// Starts a gst-launch description ending in `appsink name=sink`; pull its samples, then set it to Null.
pub fn play_to_appsink(desc: &str) -> (gst::Pipeline, gst_app::AppSink) {
    gst::init().unwrap();
    let pipeline = gst::parse::launch(desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .dynamic_cast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    (pipeline, sink)
}

/// The vtest walkway as one camera whose crowding rule (seven people for 4 s) sees its two crowded spells.
pub fn vtest_crowd_camera() -> String {
    format!(
        r#"
[[cameras]]
id = "d1-walkway"
name = "Walkway cam"
ward = "Bến Nghé"
url = "{}"
fps = 2
[[cameras.zones]]
id = "all"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
[[cameras.rules]]
kind = "crowding"
id = "crowd"
zone = "all"
min_people = 7
min_seconds = 4
clear_seconds = 4
"#,
        footage("vtest_h264.mp4").display()
    )
}

/// A camera reading `url` whose intrusion rule covers the whole picture: the first person seen opens an
/// incident.
pub fn intrusion_camera(id: &str, url: &str) -> String {
    format!(
        r#"
[[cameras]]
id = "{id}"
name = "Camera {id}"
ward = "Bến Nghé"
url = "{url}"
fps = 2
[[cameras.zones]]
id = "all"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
[[cameras.rules]]
kind = "intrusion"
id = "walkway"
zone = "all"
severity = "warning"
"#
    )
}

/// Decodes `file` at `fps` into RGB images `width` wide, with their media time in ms.
pub fn decode_frames(file: &Path, fps: u32, width: u32) -> Vec<(i64, image::RgbImage)> {
    let desc = format!(
        "filesrc location={} ! qtdemux ! h264parse ! avdec_h264 ! videorate drop-only=true ! video/x-raw,framerate={fps}/1 \
         ! videoscale ! videoconvert ! video/x-raw,format=RGB,width={width},pixel-aspect-ratio=1/1 ! appsink name=sink sync=false",
        file.display()
    );
    let (pipeline, sink) = play_to_appsink(&desc);
    let mut out = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        let buf = sample.buffer().unwrap();
        let map = buf.map_readable().unwrap();
        let (w, h, stride) = (
            info.width() as usize,
            info.height() as usize,
            info.stride()[0] as usize,
        );
        let mut px = Vec::with_capacity(w * h * 3);
        for row in 0..h {
            px.extend_from_slice(&map[row * stride..row * stride + w * 3]);
        }
        let ms = buf.pts().map_or(0, |p| p.mseconds() as i64);
        out.push((
            ms,
            image::RgbImage::from_raw(w as u32, h as u32, px).unwrap(),
        ));
    }
    pipeline.set_state(gst::State::Null).unwrap();
    out
}

/// Video samples of an MP4 and how many of them are keyframes (sync samples), read by the demuxer from
/// the file's sample tables without decoding: the footage's own count, for tests that expect one.
pub fn mp4_video_samples(file: &Path) -> (u64, u64) {
    let desc = format!(
        "filesrc location=\"{}\" ! qtdemux ! video/x-h264 ! appsink name=sink sync=false",
        file.display()
    );
    let (pipeline, sink) = play_to_appsink(&desc);
    let (mut samples, mut keyframes) = (0, 0);
    while let Ok(sample) = sink.pull_sample() {
        samples += 1;
        if !sample
            .buffer()
            .unwrap()
            .flags()
            .contains(gst::BufferFlags::DELTA_UNIT)
        {
            keyframes += 1;
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    (samples, keyframes)
}

/// A child process killed on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `streetwatch serve-footage` in its own process, so a test can kill or freeze the server.
pub fn serve_footage(port: u16, mounts: &[(&str, &Path)]) -> (ChildGuard, u16) {
    serve_footage_with(port, mounts, false)
}

/// As [`serve_footage`]; with `looping`, each stream plays its file over and over, as a live camera.
pub fn serve_footage_with(port: u16, mounts: &[(&str, &Path)], looping: bool) -> (ChildGuard, u16) {
    use std::io::BufRead;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_streetwatch"));
    cmd.arg("serve-footage").arg("--port").arg(port.to_string());
    if looping {
        cmd.arg("--loop");
    }
    for (m, f) in mounts {
        cmd.arg(format!("{m}={}", f.display()));
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve-footage");
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut port = 0;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line == "ready" {
            break;
        }
        port = line
            .rsplit_once(':')
            .unwrap()
            .1
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
    }
    assert_ne!(port, 0, "serve-footage did not start");
    (ChildGuard(child), port)
}

/// `streetwatch serve-footage --cameras n`: n looping cameras, each with a sub-stream at `{url}/sub`;
/// the server and its first camera's main-stream URL.
pub fn serve_cameras(n: usize) -> (ChildGuard, String) {
    use std::io::BufRead;
    let child = Command::new(env!("CARGO_BIN_EXE_streetwatch"))
        .args(["serve-footage", "--cameras", &n.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve-footage");
    let mut server = ChildGuard(child);
    let mut lines = std::io::BufReader::new(server.0.stdout.take().unwrap()).lines();
    let main_url = lines.next().unwrap().unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), format!("{main_url}/sub"));
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    (server, main_url)
}

/// `streetwatch check-config file` from the repository root, which must accept it: what it printed.
pub fn check_config_ok(file: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_streetwatch"))
        .arg("check-config")
        .arg(file)
        .current_dir(root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Polls `cond` every 50 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// A model that finds nothing, taking `delay` per batch of up to `batch` frames: a pool throttled to a known
/// rate, or (no delay) one that only ingest limits.
pub struct SlowDetector {
    pub delay: Duration,
    pub batch: usize,
}

impl BatchDetector for SlowDetector {
    fn max_batch(&self) -> usize {
        self.batch
    }
    fn detect(
        &mut self,
        frames: &[Frame],
        out: &mut [Vec<Detection>],
    ) -> Result<usize, InferError> {
        std::thread::sleep(self.delay);
        for o in &mut out[..frames.len()] {
            o.clear();
        }
        Ok(frames.len())
    }
}

/// `promtool check metrics` on `body`: its exit code and what it said.
pub fn promtool(body: &str) -> (i32, String) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/setup.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Sample lines (`name{labels} value`) of a Prometheus exposition, keyed by `name{labels}`.
pub fn samples(body: &str) -> std::collections::BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}
