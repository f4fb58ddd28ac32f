//! `streetwatch bench`: N virtual cameras from recorded footage through the real pipeline, with figures.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::app::{Pipeline, RunOptions};
use crate::config::Config;
use crate::health::StreamState;
use crate::ingest::{FootageServer, Pacing};
use crate::types::SystemClock;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub cameras: usize,
    pub seconds: u64,
    pub footage: PathBuf,
    pub source: BenchSource,
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
    Url(String),
}

/// Exactly the figures the issue asks for, in this order.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub cameras: usize,
    pub seconds: u64,
    pub frames_decoded_per_s: f64,
    pub frames_analysed_per_s: f64,
    pub inference_ms_p50: f64,
    pub inference_ms_p99: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub dropped_frames: u64,
    pub cpu_percent: f64,
    pub rss_mb_per_stream: f64,
    pub threads_per_stream: f64,
    /// Frame width and regions, which set the cost of a frame.
    pub width: u32,
    pub regions: String,
    /// Model inputs per analysed frame: 1, plus one per region tile.
    pub model_inputs_per_frame: f64,
    /// Inference time per analysed frame (summed over batches, over frames): what regions cost.
    pub inference_ms_per_frame: f64,
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
        text.push_str(&format!(
            "[[cameras]]\nid = \"bench-{i:04}\"\nurl = {url:?}\nfps = {}\nkeyframe_only = {}\nstall_seconds = 15\nwidth = {}\n{regions}",
            opts.fps, opts.keyframe_only, opts.width
        ));
    }
    Ok(Config::parse(&text, "bench (generated)", &pipelines)?)
}

pub fn run(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(
        opts.cameras > 0 && opts.seconds > 0,
        "--cameras and --seconds must be positive"
    );
    let footage = std::fs::canonicalize(&opts.footage)
        .with_context(|| format!("footage {}", opts.footage.display()))?;
    let server = match opts.source {
        BenchSource::Rtsp => Some(FootageServer::start(
            &[("bench".into(), footage.clone())],
            0,
        )?),
        _ => None,
    };
    let url = match (&opts.source, &server) {
        (BenchSource::Url(u), _) => u.clone(),
        (_, Some(s)) => s.url("bench"),
        (_, None) => footage.display().to_string(),
    };
    let urls = vec![url; opts.cameras];
    let config = bench_config(opts, &urls)?;
    let model = crate::app::load_model(&config)?.name.clone();
    let before = sample_proc();
    let pipeline = Pipeline::start(
        &config,
        RunOptions {
            pacing: Pacing::Realtime,
            ..RunOptions::default()
        },
        Arc::new(SystemClock),
    )?;

    // Warm up: every camera streaming (or 20 s), then measure from a clean slate.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(20)
        && !pipeline
            .camera_health()
            .iter()
            .all(|h| h.state() == StreamState::Streaming)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let totals = |p: &Pipeline| {
        p.camera_health()
            .iter()
            .fold((0u64, 0u64, 0u64), |(d, a, x), h| {
                (
                    d + h.frames_decoded.load(Ordering::Relaxed),
                    a + h.frames_analysed.load(Ordering::Relaxed),
                    x + h.frames_dropped.load(Ordering::Relaxed),
                )
            })
    };
    pipeline.stats().inference_ms.reset();
    pipeline.stats().latency_ms.reset();
    let start_totals = totals(&pipeline);
    let work = |p: &Pipeline| {
        let s = p.stats();
        (
            s.frames_analysed.load(Ordering::Relaxed),
            s.model_inputs.load(Ordering::Relaxed),
            s.inference_us.load(Ordering::Relaxed),
        )
    };
    let start_work = work(&pipeline);
    let start_proc = sample_proc();
    let t0 = Instant::now();
    let mut last_print = Instant::now();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    while t0.elapsed() < Duration::from_secs(opts.seconds) {
        std::thread::sleep(Duration::from_millis(100));
        // A live line on a terminal; a line every 5 s in a log.
        let every = if tty {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        };
        if last_print.elapsed() >= every {
            last_print = Instant::now();
            let (d, a, x) = totals(&pipeline);
            let s = t0.elapsed().as_secs_f64();
            eprint!(
                "{}[{s:5.1}/{} s] decoded {:7.1}/s  analysed {:6.1}/s  inference p50 {:6.1} ms  dropped {}{}",
                if tty { "\r" } else { "" },
                opts.seconds,
                (d - start_totals.0) as f64 / s,
                (a - start_totals.1) as f64 / s,
                pipeline.stats().inference_ms.quantile_ms(0.5),
                x - start_totals.2,
                if tty { "" } else { "\n" },
            );
        }
    }
    if tty {
        eprintln!();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let end_proc = sample_proc();
    let (d, a, x) = totals(&pipeline);
    let (frames, inputs, us) = work(&pipeline);
    let frames = (frames - start_work.0).max(1) as f64;
    let stats = pipeline.stats();
    let n = opts.cameras as f64;
    let report = BenchReport {
        cameras: opts.cameras,
        seconds: opts.seconds,
        frames_decoded_per_s: round2((d - start_totals.0) as f64 / elapsed),
        frames_analysed_per_s: round2((a - start_totals.1) as f64 / elapsed),
        inference_ms_p50: round2(stats.inference_ms.quantile_ms(0.5)),
        inference_ms_p99: round2(stats.inference_ms.quantile_ms(0.99)),
        latency_ms_p50: round2(stats.latency_ms.quantile_ms(0.5)),
        latency_ms_p99: round2(stats.latency_ms.quantile_ms(0.99)),
        dropped_frames: x - start_totals.2,
        cpu_percent: round2(100.0 * (end_proc.cpu_s - start_proc.cpu_s) / elapsed),
        rss_mb_per_stream: round2((end_proc.rss_mb - before.rss_mb) / n),
        threads_per_stream: round2((end_proc.threads - before.threads) / n),
        width: opts.width,
        regions: opts.regions.clone().unwrap_or_else(|| "none".into()),
        model_inputs_per_frame: round2((inputs - start_work.1) as f64 / frames),
        inference_ms_per_frame: round2((us - start_work.2) as f64 / 1000.0 / frames),
    };
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
    drop(server);
    if !opts.json || std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(
            "streetwatch bench: {} cameras × {} s, {} ({}), {} fps/camera{}, model {model}, {} workers, batch ≤ {} (mean {batch:.2}), {} cores",
            report.cameras,
            report.seconds,
            match &opts.source {
                BenchSource::Url(_) => "an external RTSP server",
                _ => footage.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
            },
            match opts.source {
                BenchSource::Rtsp => "RTSP/TCP from an in-process server on loopback",
                BenchSource::File => "file",
                BenchSource::Url(_) => "RTSP/TCP",
            },
            opts.fps,
            if opts.keyframe_only {
                ", keyframes only"
            } else {
                ""
            },
            crate::app::worker_count(&config),
            opts.max_batch,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        );
    }
    let lines = [
        (
            "frames decoded/s",
            format!("{:.1}", report.frames_decoded_per_s),
        ),
        (
            "frames analysed/s",
            format!("{:.1}", report.frames_analysed_per_s),
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
        ("CPU", format!("{:.1} % of one core", report.cpu_percent)),
        (
            "RSS per stream",
            format!(
                "{:.1} MB (process growth since before the pipeline, over N: includes worker sessions{})",
                report.rss_mb_per_stream,
                if opts.source == BenchSource::Rtsp {
                    " and the in-process server"
                } else {
                    ""
                }
            ),
        ),
        (
            "threads per stream",
            format!("{:.1}", report.threads_per_stream),
        ),
        ("stream restarts", restarts.to_string()),
        ("worker panics", format!("{panics} (frames lost to a bug)")),
    ];
    for (k, v) in lines {
        println!("  {k:<24} {v}");
    }
    if opts.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(report)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
