//! `streetwatch bench`: N virtual cameras from recorded footage through the real pipeline, with figures.

mod ceilings;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::app::{Pipeline, RunOptions};
use crate::config::{Config, SourceUrl};
use crate::health::{CameraHealth, StreamState};
use crate::ingest::{
    EncodedUnit, FootageServer, LatestKeyframes, Pacing, ReceiveOptions, ReceiveSpec, Receivers,
    UnitSink,
};
use crate::pool::PoolStats;
use crate::types::{CameraId, SystemClock};

pub use ceilings::Ceilings;

/// The benchmark camera: 1280×720, 25 fps, 2 Mbps, a keyframe every 2 s (fixtures/README.md).
pub const MAIN_CLIP: &str = "fixtures/footage/bench_720p25_2mbps.mp4";
/// Its sub-stream: 640×360, 512 kbit/s, same GOP (scripts/make_substream.sh).
pub const SUB_CLIP: &str = "fixtures/footage/bench_360p25_sub.mp4";

/// A camera meets its target when it analysed at least this share of the frames due over the window:
/// the test ../shared/tools/peer_baseline.py holds the Python loops to.
pub const TARGET_FRACTION: f64 = 0.9;

/// How long cameras may take to reach Streaming before the window opens anyway.
const OPEN_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub cameras: usize,
    pub seconds: u64,
    pub footage: PathBuf,
    pub source: BenchSource,
    /// Each camera's sub-stream, analysed instead of its main stream (`analysis_url`): `{n}` is the
    /// camera's number.
    pub analysis_url: Option<String>,
    /// Receive only: no decoding, no inference.
    pub ingest_only: bool,
    /// Also measure the machine's inference and ingest ceilings, in the same run.
    pub ceilings: bool,
    pub fps: f32,
    pub keyframe_only: bool,
    pub workers: usize,
    pub max_batch: usize,
    /// Model manifest.
    pub model: PathBuf,
    /// Width frames are scaled to (the camera's `width`).
    pub width: u32,
    /// The cameras' `regions` value as written in a config (`tiles`, `[[x1, y1, x2, y2], …]`); none: the
    /// whole frame only.
    pub regions: Option<String>,
    pub json: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BenchSource {
    /// Footage served over RTSP/TCP by an in-process server on loopback (its CPU is counted too).
    Rtsp,
    /// Footage read from the file (no network), paced in real time.
    File,
    /// An existing RTSP URL (another process's server, or a real camera): measures the client alone.
    /// `{n}` in it is replaced by the camera's number (0, 1, …), so N cameras read N distinct paths.
    Url(String),
    /// One URL per camera (`--urls FILE`).
    Urls(Vec<String>),
}

impl BenchSource {
    /// Reads `--urls FILE`: one URL a line; blank lines and `#` comments are skipped (as peer_baseline.py).
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let urls: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect();
        anyhow::ensure!(!urls.is_empty(), "{} lists no URL", path.display());
        Ok(Self::Urls(urls))
    }

    /// The URL of every camera.
    fn urls(&self, cameras: usize, local: &str) -> Vec<String> {
        match self {
            Self::Urls(urls) => urls.iter().cycle().take(cameras).cloned().collect(),
            Self::Url(pattern) => (0..cameras).map(|n| numbered(pattern, n)).collect(),
            Self::Rtsp | Self::File => vec![local.to_string(); cameras],
        }
    }
}

/// `pattern` with `{n}` replaced by `n`.
fn numbered(pattern: &str, n: usize) -> String {
    pattern.replace("{n}", &n.to_string())
}

/// Exactly the figures the issue asks for, in this order.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// `pipeline` (receive, decode, analyse) or `ingest-only` (receive alone).
    pub mode: &'static str,
    pub cameras: usize,
    pub seconds: u64,
    /// From start to every camera Streaming; none if some camera was not streaming within 60 s.
    pub open_seconds: Option<f64>,
    /// Encoded pictures received (every picture of every stream, before any decoding).
    pub units_received_per_s: f64,
    pub frames_decoded_per_s: f64,
    pub frames_analysed_per_s: f64,
    /// Cameras whose analysed frames over the window are ≥ 90 % of those due (`fps` × `seconds`).
    pub cameras_meeting_target: usize,
    /// Keyframes dropped while still encoded (not due, or no room), over the window.
    pub decode_skipped: u64,
    /// Analysed frames whose scene had not changed: detections reused, no inference.
    pub motion_skipped: u64,
    pub inference_ms_p50: f64,
    pub inference_ms_p99: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub dropped_frames: u64,
    pub cpu_percent: f64,
    pub cpu_percent_per_stream: f64,
    pub rss_mb_per_stream: f64,
    pub threads_per_stream: f64,
    /// Frame width and regions, which set the cost of a frame.
    pub width: u32,
    pub regions: String,
    /// Model inputs per analysed frame: 1, plus one per region tile.
    pub model_inputs_per_frame: f64,
    /// Inference time per analysed frame (summed over batches, over frames): what regions cost.
    pub inference_ms_per_frame: f64,
    /// With `--ceilings`: what the machine can do at all, measured after the window in the same run.
    pub ceilings: Option<Ceilings>,
    /// Analysed frames/s as a share of the lower ceiling.
    pub share_of_ceiling: Option<f64>,
    /// Analysed frames/s as a share of the combined ceiling (both stages on the same cores).
    pub share_of_combined: Option<f64>,
}

/// CPU seconds, RSS and thread count of this process, from /proc.
struct ProcSample {
    cpu_s: f64,
    rss_mb: f64,
    threads: f64,
}

fn sample_proc() -> ProcSample {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat; index 11 and 12 after the ')'.
    let cpu_s = (field(11) + field(12)) / ticks;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    ProcSample {
        cpu_s,
        rss_mb: get("VmRSS:") / 1024.0,
        threads: get("Threads:"),
    }
}

fn bench_config(opts: &BenchOptions, urls: &[String]) -> anyhow::Result<Config> {
    let pipelines = crate::config::installed("pipelines");
    let mut text = format!(
        "[runtime]\nworkers = {}\nmax_batch = {}\nmodel = {:?}\npipelines = {:?}\ndata_dir = {:?}\n",
        opts.workers,
        opts.max_batch,
        std::path::absolute(&opts.model)?,
        pipelines,
        std::env::temp_dir().join(format!("streetwatch-bench-{}", std::process::id())),
    );
    let regions = match opts.regions.as_deref() {
        None => String::new(),
        Some(r) if r.starts_with('[') => format!("regions = {r}\n"),
        Some(r) => format!("regions = {r:?}\n"),
    };
    for (i, url) in urls.iter().enumerate() {
        let sub = opts
            .analysis_url
            .as_deref()
            .map(|p| format!("analysis_url = {:?}\n", numbered(p, i)))
            .unwrap_or_default();
        text.push_str(&format!(
            "[[cameras]]\nid = \"bench-{i:04}\"\nurl = {url:?}\n{sub}fps = {}\nkeyframe_only = {}\nstall_seconds = 15\nwidth = {}\n{regions}",
            opts.fps, opts.keyframe_only, opts.width
        ));
    }
    Ok(Config::parse(&text, "bench (generated)", &pipelines)?)
}

/// Per-camera counters at one instant.
#[derive(Clone, Copy, Default)]
struct Counts {
    units: u64,
    decoded: u64,
    analysed: u64,
    dropped: u64,
    decode_skipped: u64,
    motion_skipped: u64,
}

impl Counts {
    fn of(h: &CameraHealth) -> Self {
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Self {
            units: l(&h.units_received),
            decoded: l(&h.frames_decoded),
            analysed: l(&h.frames_analysed),
            dropped: l(&h.frames_dropped),
            decode_skipped: l(&h.decode_skipped),
            motion_skipped: l(&h.motion_skipped),
        }
    }

    fn since(self, before: Self) -> Self {
        Self {
            units: self.units - before.units,
            decoded: self.decoded - before.decoded,
            analysed: self.analysed - before.analysed,
            dropped: self.dropped - before.dropped,
            decode_skipped: self.decode_skipped - before.decode_skipped,
            motion_skipped: self.motion_skipped - before.motion_skipped,
        }
    }

    fn add(self, o: Self) -> Self {
        Self {
            units: self.units + o.units,
            decoded: self.decoded + o.decoded,
            analysed: self.analysed + o.analysed,
            dropped: self.dropped + o.dropped,
            decode_skipped: self.decode_skipped + o.decode_skipped,
            motion_skipped: self.motion_skipped + o.motion_skipped,
        }
    }
}

/// What happened over the measured window.
struct Window {
    open_seconds: Option<f64>,
    elapsed: f64,
    /// Per camera, over the window.
    cameras: Vec<Counts>,
    before: ProcSample,
    start: ProcSample,
    end: ProcSample,
    /// Frames analysed, model inputs and inference microseconds over the window (pool-wide).
    work: [u64; 3],
}

impl Window {
    fn total(&self) -> Counts {
        self.cameras
            .iter()
            .fold(Counts::default(), |t, &c| t.add(c))
    }
}

/// Frames due per camera over `seconds` at `fps`: the analysis ticks inside the window, as
/// peer_baseline.py counts them for a camera whose first tick opens the window.
pub fn frames_due(seconds: f64, fps: f64) -> u64 {
    (seconds * fps - 1e-6).ceil().max(0.0) as u64
}

/// Cameras whose analysed frames are at least [`TARGET_FRACTION`] of `due`.
pub fn meeting_target(analysed: impl IntoIterator<Item = u64>, due: u64) -> usize {
    analysed
        .into_iter()
        .filter(|&a| due > 0 && a as f64 >= TARGET_FRACTION * due as f64)
        .count()
}

/// Waits for every camera to stream (or [`OPEN_LIMIT`]), then measures `seconds` from a clean slate.
fn measure(
    health: &[Arc<CameraHealth>],
    stats: Option<&PoolStats>,
    opts: &BenchOptions,
    started: Instant,
    before: ProcSample,
) -> Window {
    let streaming = || health.iter().all(|h| h.state() == StreamState::Streaming);
    while started.elapsed() < OPEN_LIMIT && !streaming() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let open_seconds = streaming().then(|| round2(started.elapsed().as_secs_f64()));
    if let Some(s) = stats {
        s.inference_ms.reset();
        s.latency_ms.reset();
    }
    let work = || {
        stats.map_or([0; 3], |s| {
            [
                s.frames_analysed.load(Ordering::Relaxed),
                s.model_inputs.load(Ordering::Relaxed),
                s.inference_us.load(Ordering::Relaxed),
            ]
        })
    };
    let work_start = work();
    let counts = || health.iter().map(|h| Counts::of(h)).collect::<Vec<_>>();
    let first = counts();
    let start = sample_proc();
    let t0 = Instant::now();
    let mut last_print = Instant::now();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A live line on a terminal; a line every 5 s in a log.
    let every = Duration::from_secs(if tty { 1 } else { 5 });
    while t0.elapsed() < Duration::from_secs(opts.seconds) {
        std::thread::sleep(Duration::from_millis(100));
        if last_print.elapsed() >= every {
            last_print = Instant::now();
            let t = counts()
                .into_iter()
                .zip(&first)
                .fold(Counts::default(), |t, (c, &f)| t.add(c.since(f)));
            let s = t0.elapsed().as_secs_f64();
            eprint!(
                "{}[{s:5.1}/{} s] received {:7.1}/s  decoded {:7.1}/s  analysed {:6.1}/s  inference p50 {:6.1} ms  dropped {}{}",
                if tty { "\r" } else { "" },
                opts.seconds,
                t.units as f64 / s,
                t.decoded as f64 / s,
                t.analysed as f64 / s,
                stats.map_or(0.0, |s| s.inference_ms.quantile_ms(0.5)),
                t.dropped,
                if tty { "" } else { "\n" },
            );
        }
    }
    if tty {
        eprintln!();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let end = sample_proc();
    let work_end = work();
    let cameras = counts()
        .into_iter()
        .zip(&first)
        .map(|(c, &f)| c.since(f))
        .collect();
    Window {
        open_seconds,
        elapsed,
        cameras,
        before,
        start,
        end,
        work: [0, 1, 2].map(|i| work_end[i] - work_start[i]),
    }
}

pub fn run(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(
        opts.cameras > 0 && opts.seconds > 0,
        "--cameras and --seconds must be positive"
    );
    let footage = std::fs::canonicalize(&opts.footage)
        .with_context(|| format!("footage {}", opts.footage.display()))?;
    let server = match opts.source {
        BenchSource::Rtsp => Some(FootageServer::start_looping(
            &[("bench".into(), footage.clone())],
            0,
        )?),
        _ => None,
    };
    let local = match &server {
        Some(s) => s.url("bench"),
        None => footage.display().to_string(),
    };
    let urls = opts.source.urls(opts.cameras, &local);
    let config = bench_config(opts, &urls)?;
    let report = if opts.ingest_only {
        ingest_only(opts, &config)?
    } else {
        pipeline(opts, &config, &footage)?
    };
    drop(server);
    if opts.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(report)
}

/// Receive alone: every camera's RTSP session up and its units counted; nothing decoded or analysed. The
/// main streams' keyframes are kept for snapshots as in a running district, so their memory counts.
fn ingest_only(opts: &BenchOptions, config: &Config) -> anyhow::Result<BenchReport> {
    let health: Vec<Arc<CameraHealth>> = config
        .cameras
        .iter()
        .map(|c| Arc::new(CameraHealth::new(CameraId::new(c.id.get_ref()))))
        .collect();
    let source = |u: &str| SourceUrl::parse(u, &config.base_dir).map_err(anyhow::Error::msg);
    let specs = config
        .cameras
        .iter()
        .zip(&health)
        .enumerate()
        .map(|(index, (c, h))| {
            Ok(ReceiveSpec {
                index,
                url: source(c.url.get_ref())?,
                analysis_url: c
                    .analysis_url
                    .as_ref()
                    .map(|u| source(u.get_ref()))
                    .transpose()?,
                stall: Duration::from_secs_f32(c.stall_seconds),
                health: h.clone(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let before = sample_proc();
    let started = Instant::now();
    let receivers = Receivers::start(
        specs,
        Arc::new(Discard),
        Arc::new(LatestKeyframes::new(health.len())),
        ReceiveOptions::default(),
    )?;
    let window = measure(&health, None, opts, started, before);
    let restarts: u64 = health
        .iter()
        .map(|h| h.restarts.load(Ordering::Relaxed))
        .sum();
    receivers.stop();
    let report = report(opts, &window, None, None, "ingest-only");
    if !opts.json || std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(
            "streetwatch bench --ingest-only: {} cameras × {} s, RTSP/TCP, receive only (no decoding, no inference), {} cores",
            report.cameras,
            report.seconds,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        );
    }
    print_table(opts, &report, 0.0, restarts, 0);
    Ok(report)
}

/// Where ingest-only units go: nowhere (receiving is what is measured).
struct Discard;

impl UnitSink for Discard {
    fn push(&self, _unit: EncodedUnit) {}
}

fn pipeline(
    opts: &BenchOptions,
    config: &Config,
    footage: &std::path::Path,
) -> anyhow::Result<BenchReport> {
    let model = crate::app::load_model(config)?.name.clone();
    let before = sample_proc();
    let started = Instant::now();
    let pipeline = Pipeline::start(
        config,
        RunOptions {
            pacing: Pacing::Realtime,
            ..RunOptions::default()
        },
        Arc::new(SystemClock),
    )?;
    let stats = pipeline.stats();
    let window = measure(
        &pipeline.camera_health(),
        Some(stats),
        opts,
        started,
        before,
    );
    let quantiles = (
        [
            stats.inference_ms.quantile_ms(0.5),
            stats.inference_ms.quantile_ms(0.99),
        ],
        [
            stats.latency_ms.quantile_ms(0.5),
            stats.latency_ms.quantile_ms(0.99),
        ],
    );
    let batch = stats.mean_batch();
    let (restarts, panics) = pipeline
        .camera_health()
        .iter()
        .fold((0u64, 0u64), |(r, p), h| {
            (
                r + h.restarts.load(Ordering::Relaxed),
                p + h.worker_panics.load(Ordering::Relaxed),
            )
        });
    pipeline.shutdown();
    let ceilings = if opts.ceilings {
        // The decoders get what analysis decodes: the sub-stream when cameras have one.
        let clip = match opts.analysis_url {
            Some(_) => crate::config::installed(SUB_CLIP),
            None => footage.to_path_buf(),
        };
        Some(ceilings::measure(config, &clip, opts.width)?)
    } else {
        None
    };
    let report = report(opts, &window, Some(quantiles), ceilings, "pipeline");
    if !opts.json || std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(
            "streetwatch bench: {} cameras × {} s, {} ({}), {} fps/camera{}, model {model}, {} workers, batch ≤ {} (mean {batch:.2}), {} cores",
            report.cameras,
            report.seconds,
            match &opts.source {
                BenchSource::Url(_) | BenchSource::Urls(_) => "an external RTSP server",
                _ => footage.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
            },
            match opts.source {
                BenchSource::Rtsp => "RTSP/TCP from an in-process server on loopback",
                BenchSource::File => "file",
                BenchSource::Url(_) | BenchSource::Urls(_) => "RTSP/TCP",
            },
            opts.fps,
            if opts.keyframe_only {
                ", keyframes only"
            } else {
                ""
            },
            crate::app::worker_count(config),
            opts.max_batch,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        );
    }
    print_table(opts, &report, batch, restarts, panics);
    Ok(report)
}

/// The report's figures from a window (and, for the pipeline, the pool's quantiles).
fn report(
    opts: &BenchOptions,
    w: &Window,
    quantiles: Option<([f64; 2], [f64; 2])>,
    ceilings: Option<Ceilings>,
    mode: &'static str,
) -> BenchReport {
    let n = opts.cameras as f64;
    let t = w.total();
    let per_s = |v: u64| round2(v as f64 / w.elapsed);
    let due = frames_due(w.elapsed, f64::from(opts.fps));
    let analysed_per_s = t.analysed as f64 / w.elapsed;
    let cpu = 100.0 * (w.end.cpu_s - w.start.cpu_s) / w.elapsed;
    let ([i50, i99], [l50, l99]) = quantiles.unwrap_or_default();
    BenchReport {
        mode,
        cameras: opts.cameras,
        seconds: opts.seconds,
        open_seconds: w.open_seconds,
        units_received_per_s: per_s(t.units),
        frames_decoded_per_s: per_s(t.decoded),
        frames_analysed_per_s: round2(analysed_per_s),
        cameras_meeting_target: meeting_target(w.cameras.iter().map(|c| c.analysed), due),
        decode_skipped: t.decode_skipped,
        motion_skipped: t.motion_skipped,
        inference_ms_p50: round2(i50),
        inference_ms_p99: round2(i99),
        latency_ms_p50: round2(l50),
        latency_ms_p99: round2(l99),
        dropped_frames: t.dropped,
        cpu_percent: round2(cpu),
        cpu_percent_per_stream: round3(cpu / n),
        rss_mb_per_stream: round2((w.end.rss_mb - w.before.rss_mb) / n),
        threads_per_stream: round2((w.end.threads - w.before.threads) / n),
        width: opts.width,
        regions: opts.regions.clone().unwrap_or_else(|| "none".into()),
        model_inputs_per_frame: round2(w.work[1] as f64 / w.work[0].max(1) as f64),
        inference_ms_per_frame: round2(w.work[2] as f64 / 1000.0 / w.work[0].max(1) as f64),
        share_of_ceiling: ceilings
            .as_ref()
            .map(|c| round3(analysed_per_s / c.lower())),
        share_of_combined: ceilings
            .as_ref()
            .filter(|c| c.combined_frames_per_s > 0.0)
            .map(|c| round3(analysed_per_s / c.combined_frames_per_s)),
        ceilings,
    }
}

fn print_table(opts: &BenchOptions, report: &BenchReport, batch: f64, restarts: u64, panics: u64) {
    let due = frames_due(report.seconds as f64, f64::from(opts.fps));
    let mut lines = vec![
        (
            "open",
            report.open_seconds.map_or_else(
                || "not every camera streaming within 60 s".into(),
                |s| format!("{s:.1} s to every camera streaming"),
            ),
        ),
        (
            "units received/s",
            format!("{:.1}", report.units_received_per_s),
        ),
        (
            "frames decoded/s",
            format!(
                "{:.1} ({} keyframes skipped encoded)",
                report.frames_decoded_per_s, report.decode_skipped
            ),
        ),
        (
            "frames analysed/s",
            format!(
                "{:.1} ({} reused on still scenes)",
                report.frames_analysed_per_s, report.motion_skipped
            ),
        ),
        (
            "cameras meeting target",
            format!(
                "{} of {} (≥ {:.0} % of {due} frames due each)",
                report.cameras_meeting_target,
                report.cameras,
                TARGET_FRACTION * 100.0
            ),
        ),
        (
            "inference ms p50 / p99",
            format!(
                "{:.1} / {:.1} (mean batch {batch:.2})",
                report.inference_ms_p50, report.inference_ms_p99
            ),
        ),
        (
            "per analysed frame",
            format!(
                "{:.2} model inputs, {:.1} ms inference ({} px wide, regions {})",
                report.model_inputs_per_frame,
                report.inference_ms_per_frame,
                report.width,
                report.regions
            ),
        ),
        (
            "latency ms p50 / p99",
            format!(
                "{:.1} / {:.1} (capture to detections)",
                report.latency_ms_p50, report.latency_ms_p99
            ),
        ),
        (
            "dropped frames",
            format!("{} (pool busy)", report.dropped_frames),
        ),
        (
            "CPU",
            format!(
                "{:.1} % of one core ({:.3} % per camera)",
                report.cpu_percent, report.cpu_percent_per_stream
            ),
        ),
        (
            "RSS per stream",
            format!(
                "{:.2} MB (process growth since before start, over N{}{})",
                report.rss_mb_per_stream,
                if report.mode == "ingest-only" {
                    ""
                } else {
                    ": includes worker sessions"
                },
                if opts.source == BenchSource::Rtsp {
                    " and the in-process server"
                } else {
                    ""
                }
            ),
        ),
        (
            "threads per stream",
            format!("{:.2}", report.threads_per_stream),
        ),
        ("stream restarts", restarts.to_string()),
        ("worker panics", format!("{panics} (frames lost to a bug)")),
    ];
    if let (Some(c), Some(share)) = (&report.ceilings, report.share_of_ceiling) {
        lines.push((
            "ceilings",
            format!(
                "inference {:.1} frames/s, ingest {:.1} keyframes/s ({} threads each, no other load), both on the same cores {:.1} frames/s; analysed = {:.1} % of the lower, {:.1} % of the combined",
                c.inference_frames_per_s,
                c.ingest_keyframes_per_s,
                c.threads,
                c.combined_frames_per_s,
                share * 100.0,
                report.share_of_combined.unwrap_or(0.0) * 100.0
            ),
        ));
    }
    // Receiving alone: what decoding and analysis would report is not there.
    let receive_only = [
        "open",
        "units received/s",
        "CPU",
        "RSS per stream",
        "threads per stream",
        "stream restarts",
    ];
    for (k, v) in lines {
        if report.mode != "ingest-only" || receive_only.contains(&k) {
            println!("  {k:<24} {v}");
        }
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_due_count_the_ticks_inside_the_window() {
        // 60 s at 0.5 frames/s: ticks at 0, 2, …, 58 s.
        assert_eq!(frames_due(60.0, 0.5), 30);
        assert_eq!(frames_due(61.0, 0.5), 31);
        assert_eq!(frames_due(20.0, 2.0), 40);
        assert_eq!(frames_due(0.0, 0.5), 0);
    }

    #[test]
    fn a_camera_meets_the_target_at_ninety_percent() {
        // 30 due: 27 is exactly 90 %, 26 is below.
        assert_eq!(meeting_target([30, 27, 26, 0, 31], 30), 3);
        // Nothing due: nobody meets a target that was never set.
        assert_eq!(meeting_target([0, 1], 0), 0);
    }

    #[test]
    fn url_patterns_number_the_cameras() {
        let s = BenchSource::Url("rtsp://h:1/cam/{n}".into());
        assert_eq!(
            s.urls(3, "x"),
            ["rtsp://h:1/cam/0", "rtsp://h:1/cam/1", "rtsp://h:1/cam/2"]
        );
        let s = BenchSource::Urls(vec!["a".into(), "b".into()]);
        assert_eq!(s.urls(3, "x"), ["a", "b", "a"]);
        assert_eq!(BenchSource::Rtsp.urls(2, "x"), ["x", "x"]);
    }
}
