//! The streetwatch command line.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use streetwatch::app::{ConfigFile, Pipeline, RunOptions};
use streetwatch::bench::{self, BenchOptions, BenchSource};
use streetwatch::config::{Config, installed};
use streetwatch::ingest::{CameraServer, CameraServerOptions, FootageOptions, FootageServer};
use streetwatch::secret::Secret;
use streetwatch::serve::{Role, TokenConfig};
use streetwatch::types::SystemClock;

#[derive(Parser)]
#[command(
    name = "streetwatch",
    version,
    about = "Watches street cameras and tells police command when something needs them"
)]
struct Cli {
    /// The SQLite file the alert commands read and write.
    #[arg(long, global = true, default_value = "data/streetwatch.db")]
    db: PathBuf,
    #[command(subcommand)]
    command: Command,
}

/// What `node` and `router` are told: both are processes of a cluster sharing one file.
#[derive(clap::Args)]
struct ClusterProcess {
    #[arg(long)]
    config: PathBuf,
    /// This process's name in the cluster, the same at every restart (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Its database and snapshots (default: a node's is the file's data folder, then its name; a
    /// router's is the file's data folder).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Stop after this many seconds (default: run until Ctrl-C or SIGTERM).
    #[arg(long)]
    seconds: Option<u64>,
}

impl ClusterProcess {
    fn name(&self) -> anyhow::Result<String> {
        match &self.name {
            Some(n) => Ok(n.clone()),
            None => host_name(),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the embedded demo: six cameras fed from fixture footage over RTSP on 127.0.0.1.
    Demo {
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Run the pipeline on a configuration file. SIGHUP re-reads it: cameras added, removed or changed
    /// there start, stop or restart; a file that fails validation changes nothing.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Stop after this many seconds (default: run until Ctrl-C or SIGTERM).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Run as one analysis node of a cluster (needs `[cluster]`): the cameras of the file it holds leases
    /// for, its incident events published to NATS JetStream for the routers. Several nodes can share one
    /// file; each needs its own name and data folder. `[alert]` is ignored (routers notify).
    Node(ClusterProcess),
    /// Run a router of a cluster: consume the incident events that analysis nodes publish to NATS
    /// JetStream (`[cluster]`), route and deliver them (`[alert]`), and serve the operations centre
    /// (`[serve]`). Several routers may run: they share the events and each notice is sent once.
    Router(ClusterProcess),
    /// Check a configuration file (and its model) without starting anything.
    CheckConfig { file: PathBuf },
    /// Benchmark N virtual cameras from recorded footage through the real pipeline.
    Bench {
        #[arg(long, default_value_t = 4)]
        cameras: usize,
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// H.264 MP4 footage; default: the 720p25 2 Mbps benchmark clip in fixtures.
        #[arg(long)]
        footage: Option<PathBuf>,
        /// `rtsp`: served over RTSP/TCP on loopback by this process; `file`: read directly (no network).
        #[arg(long, default_value = "rtsp", value_parser = ["rtsp", "file"])]
        source: String,
        /// Read every virtual camera from this RTSP URL instead (e.g. `streetwatch serve-footage` in another
        /// process, or a real camera), so only the client's cost is measured. `{n}` in it is the camera's
        /// number: `rtsp://127.0.0.1:8554/cam/{n}` reads N distinct paths.
        #[arg(long, conflicts_with = "source")]
        url: Option<String>,
        /// One RTSP URL per camera, a line each (`#` comments and blank lines skipped); repeated in turn
        /// when --cameras is larger.
        #[arg(long, conflicts_with_all = ["source", "url"])]
        urls: Option<PathBuf>,
        /// Each camera's sub-stream, analysed instead of its main stream; `{n}` as in --url.
        #[arg(long)]
        analysis_url: Option<String>,
        /// Receive only: no decoding, no inference (per-camera threads, RSS and CPU of ingest).
        #[arg(long)]
        ingest_only: bool,
        /// Also measure, in the same run, the inference ceiling (frames/s on every core, no ingest) and
        /// the ingest ceiling (keyframes/s decoded and scaled on every core, no inference).
        #[arg(long, conflicts_with = "ingest_only")]
        ceilings: bool,
        /// Analysed frames per second per camera.
        #[arg(long, default_value_t = 0.5)]
        fps: f32,
        /// Decode every frame instead of keyframes only.
        #[arg(long)]
        full_decode: bool,
        /// Inference workers (0: one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        #[arg(long, default_value_t = 4)]
        batch: usize,
        /// Model manifest (default: the shipped int8 NanoDet).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Width frames are scaled to for analysis (a camera's `width`); regions want the native width.
        #[arg(long, default_value_t = 416)]
        width: u32,
        /// Also detect on regions, as a camera's `regions` value: `tiles`, or `[[x1, y1, x2, y2], …]` in
        /// frame fractions (bench cameras have no zones).
        #[arg(long)]
        regions: Option<String>,
        /// Print one JSON object on the last line.
        #[arg(long)]
        json: bool,
    },
    /// Generate a scripted scene from real footage and stills: an H.264 MP4 and its scenario with exact truth.
    MakeScenario {
        /// The scene script (see fixtures/scenarios/scripts/).
        script: PathBuf,
        /// Where the `.mp4` and the scenario `.toml` go.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    #[command(flatten)]
    Alert(streetwatch::alert::cli::AlertCommand),
    /// Replay labelled scenarios (fixtures/scenarios/*.toml by default) and measure each rule kind's
    /// recall, precision, duplicates and onset delay; fails when a scenario's minimum is missed.
    Eval {
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Run the model on every frame, as with `[runtime] motion_gate = false` (the gate's effect on
        /// the figures is the difference from a run without this flag).
        #[arg(long)]
        no_motion_gate: bool,
        /// Scenario files (default: every fixtures/scenarios/*.toml).
        scenarios: Vec<PathBuf>,
    },
    /// Serve footage files over RTSP on 127.0.0.1 (a stand-in camera for tests and trials).
    ServeFootage {
        /// Port to listen on (0: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Play each file over and over in one stream that never ends (as a live camera), instead of
        /// ending the stream with the file.
        #[arg(long = "loop")]
        looping: bool,
        /// MOUNT=FILE, served at rtsp://127.0.0.1:PORT/MOUNT.
        #[arg(required_unless_present = "cameras")]
        mounts: Vec<String>,
        /// Serve a district of stand-in cameras instead: rtsp://127.0.0.1:PORT/cam/N (main stream) and
        /// /cam/N/sub (sub-stream) for N in 0..CAMERAS, live and looping; cameras share a few feeders.
        #[arg(long, conflicts_with_all = ["mounts", "looping"])]
        cameras: Option<usize>,
        /// The cameras' main stream (default: the 720p25 2 Mbps bench clip).
        #[arg(long, requires = "cameras")]
        main: Option<PathBuf>,
        /// The cameras' sub-stream (default: the bench clip's 640×360 sub-stream).
        #[arg(long, requires = "cameras")]
        sub: Option<PathBuf>,
        /// Groups of cameras whose streams start apart, spread over the 2 s GOP.
        #[arg(long, default_value_t = 8, requires = "cameras")]
        phases: usize,
    },
}

fn main() -> std::process::ExitCode {
    streetwatch::app::limit_malloc_arenas();
    let cli = Cli::parse();
    // Eval replays many cameras' lifecycles: only errors would leave its table readable.
    let default_level = match cli.command {
        Command::Eval { .. } => "error",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STREETWATCH_LOG")
                // The RTSP client logs each session's start at info: 1,100 lines at every start of a
                // district, and the URLs' query strings with them. Its warnings still show.
                .unwrap_or_else(|_| format!("{default_level},retina=warn").into()),
        )
        .with_writer(std::io::stderr)
        // Colour for a person at a terminal; plain text for a file, a pipe or a journal, and for anyone
        // who asks for none (https://no-color.org: NO_COLOR set and not empty).
        .with_ansi(
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Alert(cmd) => streetwatch::alert::cli::run(cmd, &cli.db),
        Command::Demo { seconds } => demo(seconds),
        Command::Run { config, seconds } => {
            let (config, file) = ConfigFile::load(&config)?;
            let pipeline = Pipeline::start(&config, RunOptions::default(), Arc::new(SystemClock))?;
            if let Some(addr) = pipeline.server_addr() {
                println!("streetwatch: page at http://{addr}/");
            }
            serve_until_stopped(pipeline, seconds, Some(&file))
        }
        Command::Node(args) => node(&args),
        Command::Router(args) => {
            let file = &args.config;
            let config = Config::load(file)?;
            let opts = streetwatch::cluster::router::RouterOptions {
                name: args.name()?,
                data_dir: args.data_dir.clone(),
            };
            let router = streetwatch::cluster::router::RouterService::start(
                &config,
                file,
                opts,
                Arc::new(SystemClock),
            )?;
            if let Some(addr) = router.server_addr() {
                println!("streetwatch: page at http://{addr}/");
            }
            wait_for_signal(args.seconds.map(Duration::from_secs), false, |_| {});
            router.stop();
            Ok(())
        }
        Command::CheckConfig { file } => {
            let config = Config::load(&file)?;
            let manifest = streetwatch::app::load_model(&config)?;
            let zones: usize = config.cameras.iter().map(|c| c.zones.len()).sum();
            let rules: usize = config.cameras.iter().map(|c| c.rules.len()).sum();
            println!(
                "{}: ok — {} cameras, {zones} zones, {rules} rules, model {}",
                file.display(),
                config.cameras.len(),
                manifest.name
            );
            Ok(())
        }
        Command::Bench {
            cameras,
            seconds,
            footage,
            source,
            url,
            urls,
            analysis_url,
            ingest_only,
            ceilings,
            fps,
            full_decode,
            workers,
            batch,
            model,
            width,
            regions,
            json,
        } => {
            let opts = BenchOptions {
                cameras,
                seconds,
                footage: footage.unwrap_or_else(|| installed(bench::MAIN_CLIP)),
                source: match (url, urls, source.as_str()) {
                    (Some(u), _, _) => BenchSource::Url(u),
                    (None, Some(f), _) => BenchSource::from_file(&f)?,
                    (None, None, "file") => BenchSource::File,
                    _ => BenchSource::Rtsp,
                },
                analysis_url,
                ingest_only,
                ceilings,
                fps,
                keyframe_only: !full_decode,
                workers,
                max_batch: batch,
                model: model.unwrap_or_else(|| installed(streetwatch::config::DEFAULT_MODEL)),
                width,
                regions,
                json,
            };
            bench::run(&opts).map(|_| ())
        }
        Command::MakeScenario { script, out } => {
            let g = streetwatch::scenegen::make_scenario(&script, &out)?;
            println!(
                "{}: {} frames; scenario {}",
                g.video.display(),
                g.frames,
                g.scenario.display()
            );
            Ok(())
        }
        Command::Eval {
            json,
            no_motion_gate,
            scenarios,
        } => eval(json, no_motion_gate, scenarios),
        Command::ServeFootage {
            port,
            cameras: Some(cameras),
            main,
            sub,
            phases,
            ..
        } => {
            let server = CameraServer::start(&CameraServerOptions {
                cameras,
                main: main.unwrap_or_else(|| installed(bench::MAIN_CLIP)),
                sub: Some(sub.unwrap_or_else(|| installed(bench::SUB_CLIP))),
                phases,
                gop: Duration::from_secs(2),
                port,
            })?;
            // `{n}` is the camera number, as `bench --url` takes it.
            println!("{}", server.url(0).replace("/cam/0", "/cam/{n}"));
            println!("{}", server.url(0).replace("/cam/0", "/cam/{n}/sub"));
            println!("ready");
            wait_for_signal(None, false, |_| {});
            Ok(())
        }
        Command::ServeFootage {
            port,
            looping,
            mounts,
            ..
        } => {
            let mounts = mounts
                .iter()
                .map(|m| {
                    let (name, file) = m
                        .split_once('=')
                        .with_context(|| format!("`{m}` is not MOUNT=FILE"))?;
                    Ok((name.to_string(), PathBuf::from(file)))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let server = FootageServer::start_with(
                &mounts,
                port,
                FootageOptions {
                    auth: None,
                    looping,
                },
            )?;
            for (name, _) in &mounts {
                println!("{}", server.url(name));
            }
            // Readiness for scripts and tests: the URLs above are live once this line is out.
            println!("ready");
            wait_for_signal(None, false, |_| {});
            Ok(())
        }
    }
}

fn eval(json: bool, no_motion_gate: bool, mut scenarios: Vec<PathBuf>) -> anyhow::Result<()> {
    if scenarios.is_empty() {
        let dir = installed("fixtures/scenarios");
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                scenarios.push(path);
            }
        }
        scenarios.sort();
        anyhow::ensure!(!scenarios.is_empty(), "no scenarios in {}", dir.display());
    }
    let options = streetwatch::eval::EvalOptions {
        motion_gate: !no_motion_gate,
    };
    let report = streetwatch::eval::run(&scenarios, options)?;
    if json {
        println!("{}", report.json());
    } else {
        print!("{report}");
    }
    let failures = report.failures();
    anyhow::ensure!(
        failures.is_empty(),
        "{} rule(s) below their scenario's minimum:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    Ok(())
}

/// The demo: fixture footage served over RTSP by this process, six cameras, SQLite under ./data.
fn demo(seconds: Option<u64>) -> anyhow::Result<()> {
    let demo = installed("pipelines/demo.toml");
    let mounts: Vec<(String, PathBuf)> = [
        ("vtest", "footage/vtest_h264.mp4"),
        ("parking", "footage/parking_aisle_overhead_768x432.mp4"),
        ("table", "footage/indoor_dwell_at_table_768x432.mp4"),
        ("bikes", "footage/bikes.mp4"),
        ("kerb", "scenarios/parking_east_kerb.mp4"),
        ("road", "scenarios/line_crossing_road.mp4"),
    ]
    .iter()
    .map(|(m, f)| (m.to_string(), installed(&format!("fixtures/{f}"))))
    .collect();
    // Looping, as live cameras: a stream that ended with its file would be restarted by the camera.
    let server = FootageServer::start_looping(&mounts, 0)?;
    let text =
        std::fs::read_to_string(&demo).with_context(|| format!("reading {}", demo.display()))?;
    let text = text.replace("${DEMO_RTSP_PORT}", &server.port().to_string());
    let mut config = Config::parse(
        &text,
        &demo.display().to_string(),
        demo.parent().unwrap_or(Path::new("/")),
    )?;
    config.runtime.data_dir = Some(std::env::current_dir()?.join("data"));
    // Made at each start and shown only here: a demo that shipped fixed tokens would open every copy's
    // page to anyone who read them.
    let viewer = random_token()?;
    let operator = random_token()?;
    if let Some(serve) = config.serve.as_mut() {
        for (name, role, token) in [
            ("demo-viewer", Role::Viewer, &viewer),
            ("demo-operator", Role::Operator, &operator),
        ] {
            serve.tokens.push(TokenConfig {
                name: name.into(),
                role,
                token: Secret::new(token.as_str()),
            });
        }
    }
    println!(
        "streetwatch demo: {} cameras from fixture footage at rtsp://127.0.0.1:{}/…, data in ./data, notices in ./data/notices.jsonl (Ctrl-C stops)",
        config.cameras.len(),
        server.port()
    );
    let pipeline = Pipeline::start(&config, RunOptions::default(), Arc::new(SystemClock))?;
    if let Some(addr) = pipeline.server_addr() {
        println!("streetwatch demo: page at http://{addr}/");
        println!("viewer token: {viewer}");
        println!("operator token: {operator}");
    }
    serve_until_stopped(pipeline, seconds, None)
}

/// `streetwatch node`: the pipeline runs the cameras this node holds leases for, and follows them as
/// leases are taken, handed over and lost; a clean stop deletes its leases so others take over at once.
fn node(args: &ClusterProcess) -> anyhow::Result<()> {
    use streetwatch::app::Outlet;
    use streetwatch::cluster::health::HealthPublisher;
    use streetwatch::cluster::{Bus, Publisher, leases, placement};

    let path = args.config.as_path();
    let (mut config, _) = ConfigFile::load(path)?;
    let Some(cluster) = config.cluster.clone() else {
        anyhow::bail!(
            "{}: no [cluster] table: `streetwatch node` needs one (nats = \"nats://host:4222\")",
            path.display()
        );
    };
    let name = args.name()?;
    anyhow::ensure!(!name.trim().is_empty(), "a node's name cannot be empty");
    if config.alert.take().is_some() {
        tracing::info!("[alert] ignored: a node publishes incidents to NATS, routers notify");
    }
    // Made absolute here: the pipeline resolves a relative data_dir against the file's folder, whereas
    // `--data-dir` and the default `data` are relative to the working directory, as for `run` and `router`.
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| config.data_dir().join(&name));
    config.runtime.data_dir = Some(
        std::env::current_dir()
            .context("reading the working directory")?
            .join(data_dir),
    );
    // Room for every camera of the file: this node may come to hold them all.
    config.runtime.camera_capacity = Some(config.camera_capacity());
    let all = std::mem::take(&mut config.cameras);
    let costs = all
        .iter()
        .map(|c| (c.id.get_ref().clone(), placement::camera_cost(c)))
        .collect();
    let clock: Arc<dyn streetwatch::types::Clock> = Arc::new(SystemClock);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sw-nats")
        .enable_all()
        .build()
        .context("starting the NATS runtime")?;
    let (bus, resources) = rt.block_on(async {
        let bus = Bus::connect(&cluster, &name).await?;
        let resources = bus.ensure().await?;
        Ok::<_, streetwatch::cluster::ClusterError>((bus, resources))
    })?;
    let publisher = Arc::new(Publisher::new(bus.clone(), &resources, rt.handle().clone()));
    let mut pipeline = Pipeline::start_with(
        &config,
        RunOptions::default(),
        clock.clone(),
        Outlet::Given {
            outlet: publisher.clone(),
            runtime: rt.handle().clone(),
            // Well within the stream's duplicate window, so what is replayed twice is dropped.
            replay: streetwatch::cluster::DUPLICATE_WINDOW / 2,
        },
    )?;
    if let Some(addr) = pipeline.server_addr() {
        println!("streetwatch: page at http://{addr}/");
    }
    println!(
        "streetwatch node {name}: {} cameras in the file, NATS at {}",
        all.len(),
        cluster.nats.redacted()
    );
    let health = HealthPublisher::start(
        &resources,
        &name,
        pipeline.cameras(),
        bus.lease_ttl,
        clock.clone(),
        rt.handle(),
    );
    let (held_tx, mut held_rx) = tokio::sync::watch::channel(Default::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let lease_loop = rt.spawn(leases::run(
        bus,
        resources,
        leases::LeaseConfig {
            me: name,
            started_at: clock.now(),
            capacity: cluster.capacity.unwrap_or_else(placement::default_capacity),
            cameras: costs,
        },
        clock,
        held_tx,
        stop_rx,
    ));
    // SIGHUP must not end a node (its default action): the camera list and costs are the leases' input,
    // fixed at start, so a changed file takes a restart, during which the other nodes carry the cameras.
    wait_for_signal(args.seconds.map(Duration::from_secs), true, |wake| {
        if matches!(wake, Wake::Hangup) {
            tracing::warn!(
                "SIGHUP: a node reads its file at start only; restart it to apply changes (the other nodes take its cameras meanwhile)"
            );
            return;
        }
        if !held_rx.has_changed().unwrap_or(false) {
            return;
        }
        let held = held_rx.borrow_and_update().clone();
        config.cameras = all
            .iter()
            .filter(|c| held.contains(c.id.get_ref()))
            .cloned()
            .collect();
        let done = pipeline.set_cameras(&config);
        tracing::info!(added = ?done.added, removed = ?done.removed, failed = ?done.failed, running = config.cameras.len(), "cameras follow the leases");
    });
    // Leases first, so the other nodes start these cameras while this one stops.
    let _ = stop_tx.send(true);
    let _ = rt.block_on(lease_loop);
    // Then every camera, as a lost lease would: what they left open closes and is published. The node
    // that takes a camera over starts its rules afresh and never closes this node's incidents, and a
    // restart of this node may not hold the camera again: left open, they would fire at the router for good.
    config.cameras.clear();
    let done = pipeline.set_cameras(&config);
    tracing::info!(removed = ?done.removed, "cameras stopped: their open incidents closed");
    // Then the health records this node still wrote last (a camera another node already runs keeps its).
    rt.block_on(health.stop());
    pipeline.shutdown();
    tracing::info!(published = publisher.published(), "node stopped");
    Ok(())
}

/// The machine's host name.
fn host_name() -> anyhow::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    anyhow::ensure!(
        rc == 0,
        "cannot read the host name ({}): pass --name",
        std::io::Error::last_os_error()
    );
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// A bearer token of 32 hex digits (128 bits) from the operating system's random source.
fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no random source for a token: {e}"))?;
    Ok(hex::encode(bytes))
}

/// Runs until stopped, logging health every 15 s, and reloading `file` on SIGHUP when there is one.
fn serve_until_stopped(
    mut pipeline: Pipeline,
    seconds: Option<u64>,
    file: Option<&ConfigFile>,
) -> anyhow::Result<()> {
    let mut last = Instant::now();
    wait_for_signal(seconds.map(Duration::from_secs), file.is_some(), |wake| {
        if let (Wake::Hangup, Some(file)) = (wake, file) {
            if let Err(e) = file.reload(&mut pipeline) {
                tracing::error!("configuration not reloaded, nothing changed: {e}");
            }
            return;
        }
        if last.elapsed() >= Duration::from_secs(15) {
            last = Instant::now();
            for h in pipeline.health() {
                tracing::info!(
                    camera = %h.camera,
                    state = h.state.as_str(),
                    received = h.frames_received,
                    analysed = h.frames_analysed,
                    dropped = h.frames_dropped,
                    restarts = h.restarts,
                    worker_panics = h.worker_panics,
                    last_frame_age_s = h.last_frame_age_s.map(|a| format!("{a:.1}")).unwrap_or_else(|| "-".into()),
                    last_error = h.last_error.as_deref().unwrap_or("-"),
                    "camera health"
                );
            }
        }
    });
    pipeline.shutdown();
    Ok(())
}

/// Why [`wait_for_signal`] calls back.
#[derive(Clone, Copy)]
enum Wake {
    /// About every 200 ms.
    Tick,
    /// SIGHUP arrived (only when asked for).
    Hangup,
}

/// Blocks until Ctrl-C, SIGTERM or the deadline, calling `on` about every 200 ms and, with `hangup`, on
/// each SIGHUP (which then no longer ends the process).
fn wait_for_signal(limit: Option<Duration>, hangup: bool, mut on: impl FnMut(Wake)) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    // A limit past what the clock can count to is no limit (adding it would panic).
    let deadline = limit.and_then(|d| tokio::time::Instant::now().checked_add(d));
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        let mut hup = hangup.then(|| tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).expect("SIGHUP handler"));
        let mut every = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
                _ = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => on(Wake::Hangup),
                _ = every.tick() => on(Wake::Tick),
            }
        }
    });
}
