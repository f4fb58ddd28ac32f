//! Configuration: one TOML file describes the runtime, the model and the cameras with their zones and rules.
//!
//! Every mistake is reported with the file, line, column and the key's path, e.g.
//! `district.toml:14:11: cameras[1].zones[0].polygon: a polygon needs at least 3 points, found 2`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

#[cfg(test)]
mod proptests;
mod regions;
mod retention;
mod spans;

pub use regions::RegionsConfig;
pub use retention::RetentionConfig;

use crate::alert::AlertConfig;
use crate::cluster::ClusterConfig;
use crate::secret::SecretUrl;
use crate::serve::ServeConfig;
use crate::types::{RuleKind, Severity};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Syntax errors and unknown or mistyped keys, located by the TOML parser.
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A value that parsed but makes no sense, located at its key.
    #[error("{file}:{line}:{column}: {key}: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// The alert router's settings (receivers, routes, grouping); without it incidents are stored and
    /// logged but nobody is notified.
    #[serde(default)]
    pub alert: Option<AlertConfig>,
    /// How long records and snapshots are kept.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// The operations-centre page, API and metrics; without it nothing listens.
    #[serde(default)]
    pub serve: Option<ServeConfig>,
    /// NATS JetStream between analysis nodes and routers (`streetwatch node`, `streetwatch router`);
    /// `run` ignores it.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
    /// Where the file was read from; relative paths inside it resolve against its folder.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Folder for the SQLite database and snapshots (default: `data` in the working directory).
    pub data_dir: Option<PathBuf>,
    /// Model manifest (TOML beside the .onnx file); default: [`DEFAULT_MODEL`].
    pub model: Option<Spanned<PathBuf>>,
    /// Inference workers; 0 means one per core.
    #[serde(default)]
    pub workers: usize,
    /// Most frames one inference run takes, gathered across cameras.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long a worker waits to fill a batch once it has one frame.
    #[serde(default = "default_batch_wait_ms")]
    pub batch_wait_ms: u64,
    /// Detections below this score are ignored.
    #[serde(default = "default_score_threshold")]
    pub score_threshold: f32,
    /// Folder with the pipeline templates (`rtsp.pipeline`, `file.pipeline`); default: the shipped `pipelines/`.
    pub pipelines: Option<PathBuf>,
    /// Nice value (0–19) of the camera threads. When the machine is overloaded, analysis should win over
    /// decoding frames that will be dropped anyway: measured at 96 cameras on 2 cores, 19 keeps analysis at
    /// capacity (30.6 frames/s) where 0 lets it collapse to 9 (BENCHMARKS.md). No privilege is needed.
    #[serde(default = "default_ingest_nice")]
    pub ingest_nice: Spanned<i32>,
    /// Path of the ONNX Runtime shared library; default: the one installed with streetwatch
    /// ([`crate::infer::default_runtime_path`]).
    #[serde(default)]
    pub onnxruntime: Option<PathBuf>,
    /// Skip the model on a frame whose scene has not changed since the camera's last inference, reusing
    /// that inference's detections (see `pool::MotionGate`).
    #[serde(default = "default_motion_gate")]
    pub motion_gate: bool,
    /// Luma levels (0–255) any cell of the 32×18 grid must move by for the scene to count as changed.
    #[serde(default = "default_motion_threshold")]
    pub motion_threshold: u8,
    /// The model runs at least this often on a still scene.
    #[serde(default = "default_motion_refresh_seconds")]
    pub motion_refresh_seconds: f32,
    /// Cameras this process can run at once, counting those a reload adds; fixed at start (the pool's
    /// slots are allocated once). Default: [`Config::camera_capacity`].
    #[serde(default)]
    pub camera_capacity: Option<usize>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            model: None,
            workers: 0,
            max_batch: default_max_batch(),
            batch_wait_ms: default_batch_wait_ms(),
            score_threshold: default_score_threshold(),
            pipelines: None,
            ingest_nice: default_ingest_nice(),
            onnxruntime: None,
            motion_gate: default_motion_gate(),
            motion_threshold: default_motion_threshold(),
            motion_refresh_seconds: default_motion_refresh_seconds(),
            camera_capacity: None,
        }
    }
}

fn default_ingest_nice() -> Spanned<i32> {
    Spanned::new(0..0, 19)
}
impl RuntimeConfig {
    /// The pool's motion gate, `None` when it is off.
    pub fn motion_gate(&self) -> Option<crate::pool::MotionGate> {
        self.motion_gate.then(|| crate::pool::MotionGate {
            threshold: self.motion_threshold,
            refresh_ms: (self.motion_refresh_seconds * 1000.0).round() as i64,
        })
    }
}

fn default_motion_gate() -> bool {
    true
}
fn default_motion_threshold() -> u8 {
    crate::pool::MotionGate::default().threshold
}
fn default_motion_refresh_seconds() -> f32 {
    crate::pool::MotionGate::default().refresh_ms as f32 / 1000.0
}
fn default_max_batch() -> usize {
    4
}
fn default_batch_wait_ms() -> u64 {
    5
}
fn default_score_threshold() -> f32 {
    0.35
}
/// The detector used when a configuration names none: NanoDet-g 416 quantised to int8, 2.7× faster
/// than the fp32 model per frame and agreeing with it on 96–97 % of people (models/README.md).
pub const DEFAULT_MODEL: &str = "models/nanodet_g_416_coco_int8.toml";

pub use crate::home::installed;

// PartialEq: a reload restarts a camera whose settings changed (spans are not compared).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub id: Spanned<String>,
    /// Display name for the operations centre, e.g. "Nguyễn Huệ / Lê Lợi".
    #[serde(default)]
    pub name: String,
    /// Ward (phường) the camera is in; routes match on it.
    #[serde(default)]
    pub ward: String,
    /// `rtsp://[user:pass@]host[:port]/path` or a footage file path (`file:///…` or a plain path).
    /// `${VAR}` is replaced from the environment, so passwords need not live in the file.
    pub url: Spanned<SecretUrl>,
    /// The camera's sub-stream (e.g. 640×360), analysed instead of `url`, which then serves only the
    /// full-resolution snapshots. Same form and `${VAR}` expansion as `url`; RTSP when `url` is.
    #[serde(default)]
    pub analysis_url: Option<Spanned<SecretUrl>>,
    /// Frames per second handed to analysis.
    #[serde(default = "default_fps")]
    pub fps: f32,
    /// Decode only keyframes (one every 1–2 s on real cameras): a fraction of the CPU of full decoding.
    #[serde(default)]
    pub keyframe_only: bool,
    /// Width frames are scaled to for analysis (height keeps the aspect ratio).
    #[serde(default = "default_width")]
    pub width: u32,
    /// Parts of the frame also detected on at `width` resolution, for small and far objects: "zones",
    /// "tiles" or rectangles. Default: the whole frame only.
    #[serde(default)]
    pub regions: Option<Spanned<RegionsConfig>>,
    /// Seconds without a frame before the watchdog restarts the stream.
    #[serde(default = "default_stall_seconds")]
    pub stall_seconds: f32,
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    #[serde(default)]
    pub lines: Vec<LineConfig>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

fn default_fps() -> f32 {
    2.0
}
fn default_width() -> u32 {
    416
}
fn default_stall_seconds() -> f32 {
    8.0
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub id: Spanned<String>,
    /// Vertices as `[x, y]` in 0–1 of the frame's width and height.
    pub polygon: Spanned<Vec<[f32; 2]>>,
}

/// A counting line: two points in frame fractions and the direction that counts as "in".
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    pub id: Spanned<String>,
    /// The line's two end points as `[x, y]` in 0–1 of the frame.
    pub points: Spanned<[[f32; 2]; 2]>,
    /// Moving this way across the line is "in" (e.g. `[0, -1]`: up the frame); the other way is "out".
    pub in_direction: Spanned<[f32; 2]>,
}

/// One rule on one zone (or line). `kind` picks the rule; the fields it needs are checked for that kind,
/// and what a kind leaves unset takes a default a district would use (see [`RuleDefaults`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub kind: Spanned<RuleKind>,
    pub id: Spanned<String>,
    /// The zone the rule watches (every kind but `line_crossing`).
    pub zone: Option<Spanned<String>>,
    /// The line the rule counts (`line_crossing`).
    pub line: Option<Spanned<String>>,
    /// Detector labels the rule looks at; default per kind.
    pub classes: Option<Spanned<Vec<String>>>,
    /// How long the condition must hold before an incident opens; default per kind.
    pub min_seconds: Option<Spanned<f32>>,
    /// How long the condition must be gone before the incident closes (absorbs missed detections and
    /// occlusions); default per kind.
    pub clear_seconds: Option<Spanned<f32>>,
    pub severity: Option<Severity>,
    /// crowding: people needed in the zone.
    pub min_people: Option<Spanned<u32>>,
    /// parking, encroachment: how far an object may wander and still count as stationary, in heights of
    /// its own box (survives detector jitter; a car creeping along is not parked).
    pub stationary_radius: Option<Spanned<f32>>,
    /// wrong_way: the allowed direction of travel in the zone, `[dx, dy]` in frame fractions.
    pub direction: Option<Spanned<[f32; 2]>>,
    /// line_crossing: which crossings raise an incident (all are counted).
    pub alert_on: Option<CrossingAlert>,
    /// When the rule is active; always when unset.
    pub schedule: Option<Spanned<ScheduleConfig>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrossingAlert {
    In,
    Out,
    Both,
}

/// Hours and weekdays in Asia/Ho_Chi_Minh (UTC+7, no daylight saving).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// `"HH:MM-HH:MM"` spans; one that ends before it starts runs over midnight. Default: all day.
    #[serde(default)]
    pub hours: Vec<Spanned<String>>,
    /// `mon` … `sun`; default: every day.
    #[serde(default)]
    pub days: Vec<Spanned<String>>,
}

/// Defaults for what a rule leaves unset: what a district would start with, not fitted to any clip.
pub struct RuleDefaults {
    pub classes: &'static [&'static str],
    pub min_seconds: f32,
    pub clear_seconds: f32,
    pub severity: Severity,
}

const VEHICLES: &[&str] = &["car", "motorcycle", "bus", "truck"];
const MOVERS: &[&str] = &["person", "bicycle", "car", "motorcycle", "bus", "truck"];

impl RuleDefaults {
    pub fn of(kind: RuleKind) -> RuleDefaults {
        let d = |classes, min_seconds, clear_seconds, severity| RuleDefaults {
            classes,
            min_seconds,
            clear_seconds,
            severity,
        };
        match kind {
            // A crowd worth a look lasts a minute; a gap of half a minute is still the same crowd.
            RuleKind::Crowding => d(&["person"], 60.0, 30.0, Severity::Warning),
            RuleKind::Loitering => d(&["person"], 300.0, 20.0, Severity::Info),
            // Three minutes is past any drop-off; half a minute of occlusion (a bus) keeps the incident.
            RuleKind::Parking => d(VEHICLES, 180.0, 30.0, Severity::Warning),
            RuleKind::Encroachment => d(
                &[
                    "person",
                    "bicycle",
                    "motorcycle",
                    "chair",
                    "bench",
                    "umbrella",
                    "dining table",
                    "suitcase",
                    "potted plant",
                ],
                300.0,
                60.0,
                Severity::Info,
            ),
            // Brief events stay open half a minute after they end: the router speaks about a group only
            // after its `group_wait` (30 s by default), and an alert resolved before then is not sent.
            RuleKind::Intrusion => d(
                &["person", "bicycle", "motorcycle"],
                0.0,
                30.0,
                Severity::Critical,
            ),
            RuleKind::LineCrossing => d(MOVERS, 0.0, 30.0, Severity::Info),
            RuleKind::WrongWay => d(
                &["bicycle", "car", "motorcycle", "bus", "truck"],
                0.0,
                30.0,
                Severity::Warning,
            ),
            // Not a camera rule (validation refuses it on a camera): citizens' reports open these.
            RuleKind::CitizenReport => d(&[], 0.0, 0.0, Severity::Warning),
        }
    }
}

impl RuleConfig {
    pub fn kind(&self) -> RuleKind {
        *self.kind.get_ref()
    }
    pub fn defaults(&self) -> RuleDefaults {
        RuleDefaults::of(self.kind())
    }
    pub fn min_seconds(&self) -> f32 {
        self.min_seconds
            .as_ref()
            .map_or(self.defaults().min_seconds, |v| *v.get_ref())
    }
    pub fn clear_seconds(&self) -> f32 {
        self.clear_seconds
            .as_ref()
            .map_or(self.defaults().clear_seconds, |v| *v.get_ref())
    }
    pub fn severity(&self) -> Severity {
        self.severity.unwrap_or(self.defaults().severity)
    }
    pub fn classes(&self) -> Vec<String> {
        match &self.classes {
            Some(c) => c.get_ref().clone(),
            None => self
                .defaults()
                .classes
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
    pub fn stationary_radius(&self) -> f32 {
        self.stationary_radius
            .as_ref()
            .map_or(0.3, |v| *v.get_ref())
    }
    /// The zone or line id the rule is attached to.
    pub fn target(&self) -> &str {
        self.zone
            .as_ref()
            .or(self.line.as_ref())
            .map_or("", |t| t.get_ref().as_str())
    }
}

impl ScheduleConfig {
    /// Minutes of the day spans (start, end); validated at load, so parsing cannot fail here.
    pub fn spans(&self) -> Vec<(u16, u16)> {
        self.hours
            .iter()
            .filter_map(|h| parse_span(h.get_ref()).ok())
            .collect()
    }
    /// Weekday bit set, bit 0 = Monday; all days when none are given.
    pub fn day_mask(&self) -> u8 {
        if self.days.is_empty() {
            return 0x7f;
        }
        self.days
            .iter()
            .filter_map(|d| weekday(d.get_ref()))
            .fold(0, |m, d| m | (1 << d))
    }
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn weekday(s: &str) -> Option<u8> {
    WEEKDAYS
        .iter()
        .position(|d| d.eq_ignore_ascii_case(s))
        .map(|i| i as u8)
}

fn parse_span(s: &str) -> Result<(u16, u16), String> {
    let hm = |t: &str| -> Result<u16, String> {
        let (h, m) = t
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("`{t}` is not HH:MM"))?;
        let h: u16 = h.parse().map_err(|_| format!("`{t}` is not HH:MM"))?;
        let m: u16 = m.parse().map_err(|_| format!("`{t}` is not HH:MM"))?;
        // 24:00 closes a span at midnight.
        if h > 24 || m > 59 || (h == 24 && m != 0) {
            return Err(format!("`{t}` is not a time of day (00:00–24:00)"));
        }
        Ok(h * 60 + m)
    };
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("`{s}` is not a span like \"07:00-22:00\""))?;
    let (a, b) = (hm(a)?, hm(b)?);
    if a == b {
        return Err(format!("`{s}` is an empty span"));
    }
    Ok((a, b))
}

/// Where a camera's frames come from, after `${VAR}` expansion and credential extraction.
#[derive(Clone, PartialEq, Eq)]
pub enum SourceUrl {
    Rtsp {
        /// The URL without user and password: safe to log.
        url: String,
        user: Option<String>,
        password: Option<String>,
    },
    File(PathBuf),
}

impl std::fmt::Debug for SourceUrl {
    // Passwords never reach a log line, even through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.redacted())
    }
}

impl SourceUrl {
    /// A form of the URL that is safe for logs, metrics and API responses.
    pub fn redacted(&self) -> String {
        match self {
            // Credentials may also be in the query (`?token=…`).
            SourceUrl::Rtsp { url, user, .. } => match user {
                Some(_) => crate::secret::redact_url(url).replacen("://", "://***@", 1),
                None => crate::secret::redact_url(url),
            },
            SourceUrl::File(p) => p.display().to_string(),
        }
    }

    /// Parses a camera URL; `base_dir` resolves relative file paths.
    pub fn parse(raw: &str, base_dir: &Path) -> Result<Self, String> {
        let expanded = crate::secret::expand_env(raw)?;
        if let Some(rest) = expanded.strip_prefix("file://") {
            return Ok(SourceUrl::File(PathBuf::from(rest)));
        }
        if !expanded.contains("://") {
            let p = PathBuf::from(&expanded);
            return Ok(SourceUrl::File(if p.is_absolute() {
                p
            } else {
                base_dir.join(p)
            }));
        }
        let mut url = url::Url::parse(&expanded).map_err(|e| {
            // The parser's message never contains the URL, so this cannot leak a password.
            format!("not a valid URL: {e}")
        })?;
        if !matches!(url.scheme(), "rtsp" | "rtsps") {
            return Err(format!(
                "unsupported scheme `{}` (expected rtsp://, file:// or a file path)",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the URL has no host".into());
        }
        let user = (!url.username().is_empty()).then(|| decode(url.username()));
        let password = url.password().map(decode);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(SourceUrl::Rtsp {
            url: url.to_string(),
            user,
            password,
        })
    }
}

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_text(path).map(|(config, _)| config)
    }

    /// As [`load`](Self::load), with the text it was read from.
    pub fn load_with_text(path: &Path) -> Result<(Config, String), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.display().to_string(),
            source,
        })?;
        // Absolute, so that what the file names never depends on the working directory later.
        let base = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let config = Self::parse(&text, &path.display().to_string(), &base)?;
        Ok((config, text))
    }

    /// Parses and validates configuration text; `file` names it in errors, `base_dir` resolves paths.
    pub fn parse(text: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = parse_toml(text, file)?;
        config.base_dir = base_dir.to_path_buf();
        Validator {
            text,
            file,
            config: &config,
            single_camera: false,
        }
        .validate()?;
        Ok(config)
    }

    /// Resolves a path from the file against the file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn model_path(&self) -> PathBuf {
        self.runtime
            .model
            .as_ref()
            .map_or_else(|| installed(DEFAULT_MODEL), |m| self.resolve(m.get_ref()))
    }

    pub fn pipelines_dir(&self) -> PathBuf {
        self.runtime
            .pipelines
            .as_ref()
            .map_or_else(|| installed("pipelines"), |p| self.resolve(p))
    }

    /// Cameras the pool has room for: as configured, or twice the configured cameras with at least 64
    /// spare, so reloads can add cameras without a restart.
    pub fn camera_capacity(&self) -> usize {
        let n = self.cameras.len();
        self.runtime
            .camera_capacity
            .unwrap_or_else(|| (2 * n).max(n + 64).min(MAX_CAMERA_CAPACITY).max(n))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.runtime
            .data_dir
            .as_ref()
            .map_or_else(|| PathBuf::from("data"), |d| self.resolve(d))
    }
}

/// The first point outside the frame, as a message.
fn outside_frame(points: &[[f32; 2]]) -> Option<String> {
    points
        .iter()
        .find(|[x, y]| !(0.0..=1.0).contains(x) || !(0.0..=1.0).contains(y))
        .map(|[x, y]| {
            format!("point [{x}, {y}] is outside 0–1 (coordinates are fractions of the frame)")
        })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, column)
}

struct Validator<'a> {
    text: &'a str,
    file: &'a str,
    config: &'a Config,
    /// The text holds one `[camera]` table (an `eval` scenario), not `[[cameras]]`.
    single_camera: bool,
}

/// Ranges of the numbers a configuration sets; outside them a value would wrap, panic or mean nothing.
const MAX_WORKERS: usize = 256;
/// Camera slots: a few hundred bytes each, allocated at start.
const MAX_CAMERA_CAPACITY: usize = 100_000;
const MAX_BATCH: usize = 64;
const MAX_BATCH_WAIT_MS: u64 = 1000;
const WIDTHS: std::ops::RangeInclusive<u32> = 32..=7680;
const STALL_SECONDS: std::ops::RangeInclusive<f32> = 1.0..=3600.0;
/// Under a second would refresh on every frame at usual rates; over an hour a wrong skip lasts too long.
const MOTION_REFRESH_SECONDS: std::ops::RangeInclusive<f32> = 1.0..=3600.0;
/// A rule's waits: up to 30 days.
const RULE_SECONDS: std::ops::RangeInclusive<f32> = 0.0..=2_592_000.0;

impl Validator<'_> {
    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        key: String,
        message: String,
    ) -> Result<T, ConfigError> {
        let (line, column) = line_col(self.text, span.start);
        Err(ConfigError::Invalid {
            file: self.file.to_string(),
            line,
            column,
            key,
            message,
        })
    }

    /// An error at `key`, located where the file writes it (or the nearest table it does write).
    fn err_at<T>(&self, key: String, message: String) -> Result<T, ConfigError> {
        let path = if self.single_camera {
            key.replacen("cameras[0]", "camera", 1)
        } else {
            key.clone()
        };
        self.err(spans::find(self.text, &path), key, message)
    }

    /// Checks of `(key, in range, the range in words, the value found)` under `table`; the first that
    /// fails is the error.
    fn in_ranges(
        &self,
        table: &str,
        checks: &[(&str, bool, String, String)],
    ) -> Result<(), ConfigError> {
        match checks.iter().find(|c| !c.1) {
            Some((key, _, range, found)) => self.err_at(
                format!("{table}.{key}"),
                format!("must be {range}, found {found}"),
            ),
            None => Ok(()),
        }
    }

    fn validate_runtime(&self) -> Result<(), ConfigError> {
        let rt = &self.config.runtime;
        let cameras = self.config.cameras.len();
        let nice = &rt.ingest_nice;
        if !(0..=19).contains(nice.get_ref()) {
            return self.err(
                nice.span(),
                "runtime.ingest_nice".into(),
                format!("must be 0–19, found {}", nice.get_ref()),
            );
        }
        self.in_ranges(
            "runtime",
            &[
                (
                    "workers",
                    rt.workers <= MAX_WORKERS,
                    format!("0 (one per core) to {MAX_WORKERS}"),
                    format!("{}", rt.workers),
                ),
                (
                    "max_batch",
                    (1..=MAX_BATCH).contains(&rt.max_batch),
                    format!("1–{MAX_BATCH}"),
                    format!("{}", rt.max_batch),
                ),
                (
                    "batch_wait_ms",
                    rt.batch_wait_ms <= MAX_BATCH_WAIT_MS,
                    format!("0–{MAX_BATCH_WAIT_MS} ms"),
                    format!("{}", rt.batch_wait_ms),
                ),
                (
                    "score_threshold",
                    (0.0..=1.0).contains(&rt.score_threshold),
                    "within 0–1".into(),
                    format!("{:?}", rt.score_threshold),
                ),
                (
                    "motion_refresh_seconds",
                    MOTION_REFRESH_SECONDS.contains(&rt.motion_refresh_seconds),
                    format!(
                        "{}–{} s",
                        MOTION_REFRESH_SECONDS.start(),
                        MOTION_REFRESH_SECONDS.end()
                    ),
                    format!("{:?}", rt.motion_refresh_seconds),
                ),
                (
                    "camera_capacity",
                    (cameras..=MAX_CAMERA_CAPACITY).contains(&self.config.camera_capacity()),
                    format!("at least the {cameras} cameras configured and at most {MAX_CAMERA_CAPACITY}"),
                    format!("{}", self.config.camera_capacity()),
                ),
            ],
        )?;
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let model = self.config.model_path();
        if !model.is_file() {
            let span = self
                .config
                .runtime
                .model
                .as_ref()
                .map_or(0..0, |m| m.span());
            return self.err(
                span,
                "runtime.model".into(),
                format!("model manifest {} does not exist", model.display()),
            );
        }
        if let Some(alert) = &self.config.alert
            && let Err(e) = alert.validate()
        {
            let key = match e.key.as_str() {
                "" => "alert".to_string(),
                k => format!("alert.{k}"),
            };
            return self.err_at(key, e.message);
        }
        if let Err((span, key, message)) = self.config.retention.check() {
            return self.err(span, key, message);
        }
        if let Some(serve) = &self.config.serve
            && let Err((key, message)) = serve.check()
        {
            return self.err_at(format!("serve.{key}"), message);
        }
        if let Some(cluster) = &self.config.cluster
            && let Err((key, message)) = cluster.check()
        {
            return self.err_at(format!("cluster.{key}"), message);
        }
        self.validate_runtime()?;
        let mut ids = HashSet::new();
        let mut labels: Option<Vec<String>> = None;
        for (ci, cam) in self.config.cameras.iter().enumerate() {
            let at = |k: &str| format!("cameras[{ci}].{k}");
            let id = cam.id.get_ref();
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return self.err(
                    cam.id.span(),
                    at("id"),
                    format!("`{id}` is not a valid id (letters, digits, - _ .)"),
                );
            }
            if !ids.insert(id.as_str()) {
                return self.err(
                    cam.id.span(),
                    at("id"),
                    format!("duplicate camera id `{id}`"),
                );
            }
            let url = match SourceUrl::parse(cam.url.get_ref(), &self.config.base_dir) {
                Ok(url) => url,
                Err(message) => return self.err(cam.url.span(), at("url"), message),
            };
            if let Some(analysis) = &cam.analysis_url {
                match SourceUrl::parse(analysis.get_ref(), &self.config.base_dir) {
                    Err(message) => return self.err(analysis.span(), at("analysis_url"), message),
                    // A sub-stream comes from the same camera: a file beside a live stream would
                    // analyse another scene than the snapshots show.
                    Ok(SourceUrl::File(_)) if matches!(url, SourceUrl::Rtsp { .. }) => {
                        return self.err(
                            analysis.span(),
                            at("analysis_url"),
                            "must be an rtsp:// URL when `url` is one".into(),
                        );
                    }
                    Ok(_) => {}
                }
            }
            // The watchdog's timer takes stall_seconds: negative or NaN seconds panic as a Duration.
            self.in_ranges(
                &format!("cameras[{ci}]"),
                &[
                    (
                        "fps",
                        cam.fps > 0.0 && cam.fps <= 60.0,
                        "in (0, 60]".into(),
                        format!("{:?}", cam.fps),
                    ),
                    (
                        "width",
                        WIDTHS.contains(&cam.width),
                        format!("{}–{} px", WIDTHS.start(), WIDTHS.end()),
                        format!("{}", cam.width),
                    ),
                    (
                        "stall_seconds",
                        STALL_SECONDS.contains(&cam.stall_seconds),
                        format!("{}–{} s", STALL_SECONDS.start(), STALL_SECONDS.end()),
                        format!("{:?}", cam.stall_seconds),
                    ),
                ],
            )?;
            let mut zone_ids = HashSet::new();
            for (zi, zone) in cam.zones.iter().enumerate() {
                let key = at(&format!("zones[{zi}].polygon"));
                let pts = zone.polygon.get_ref();
                if pts.len() < 3 {
                    return self.err(
                        zone.polygon.span(),
                        key,
                        format!("a polygon needs at least 3 points, found {}", pts.len()),
                    );
                }
                if let Some(message) = outside_frame(pts) {
                    return self.err(zone.polygon.span(), key, message);
                }
                if !zone_ids.insert(zone.id.get_ref().as_str()) {
                    return self.err(
                        zone.id.span(),
                        at(&format!("zones[{zi}].id")),
                        format!("duplicate zone id `{}`", zone.id.get_ref()),
                    );
                }
            }
            if let Some(r) = &cam.regions
                && let Err(message) = regions::check(cam, r.get_ref())
            {
                return self.err(r.span(), at("regions"), message);
            }
            for (li, line) in cam.lines.iter().enumerate() {
                let key = |k: &str| at(&format!("lines[{li}].{k}"));
                if !zone_ids.insert(line.id.get_ref().as_str()) {
                    return self.err(
                        line.id.span(),
                        key("id"),
                        format!(
                            "duplicate zone or line id `{}` (a line shares the zones' names)",
                            line.id.get_ref()
                        ),
                    );
                }
                let [a, b] = *line.points.get_ref();
                if let Some(message) = outside_frame(&[a, b]) {
                    return self.err(line.points.span(), key("points"), message);
                }
                let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
                if dx.hypot(dy) < 1e-3 {
                    return self.err(
                        line.points.span(),
                        key("points"),
                        "the line's two points are the same: it has no length".into(),
                    );
                }
                let [ix, iy] = *line.in_direction.get_ref();
                if !(ix.is_finite() && iy.is_finite()) {
                    return self.err(
                        line.in_direction.span(),
                        key("in_direction"),
                        format!("must be finite, found [{ix:?}, {iy:?}]"),
                    );
                }
                let cross = (dx * iy - dy * ix) / (dx.hypot(dy) * ix.hypot(iy).max(1e-9));
                if ix.hypot(iy) < 1e-6 || cross.abs() < 0.1 {
                    return self.err(
                        line.in_direction.span(),
                        key("in_direction"),
                        "must point across the line (it is zero or runs along the line)".into(),
                    );
                }
            }
            // The model's labels, read once for the whole file (a district has 1,100 cameras).
            if labels.is_none() && !cam.rules.is_empty() {
                labels = Some(self.labels()?);
            }
            let labels = labels.as_deref().unwrap_or_default();
            let mut rule_ids = HashSet::new();
            for (ri, rule) in cam.rules.iter().enumerate() {
                let key = |k: &str| at(&format!("rules[{ri}].{k}"));
                if !rule_ids.insert(rule.id.get_ref().as_str()) {
                    return self.err(
                        rule.id.span(),
                        key("id"),
                        format!("duplicate rule id `{}`", rule.id.get_ref()),
                    );
                }
                self.validate_rule(rule, &key, cam, labels)?;
            }
        }
        Ok(())
    }

    /// The model's labels, for checking rule class names.
    fn labels(&self) -> Result<Vec<String>, ConfigError> {
        let span = self
            .config
            .runtime
            .model
            .as_ref()
            .map_or(0..0, |m| m.span());
        match crate::infer::ModelManifest::load(&self.config.model_path()) {
            Ok(m) => Ok(m.output.labels),
            Err(e) => self.err(span, "runtime.model".into(), e.to_string()),
        }
    }

    fn validate_rule(
        &self,
        rule: &RuleConfig,
        key: &dyn Fn(&str) -> String,
        cam: &CameraConfig,
        labels: &[String],
    ) -> Result<(), ConfigError> {
        let kind = rule.kind();
        if kind == RuleKind::CitizenReport {
            return self.err(
                rule.kind.span(),
                key("kind"),
                "`citizen_report` incidents come from citizens' reports (POST /api/reports), \
                 not from a camera rule; pick a camera rule kind"
                    .into(),
            );
        }
        let is_line = kind == RuleKind::LineCrossing;
        let has_zone = |id: &str| cam.zones.iter().any(|z| z.id.get_ref() == id);
        let has_line = |id: &str| cam.lines.iter().any(|l| l.id.get_ref() == id);
        match (&rule.zone, &rule.line) {
            (Some(z), _) if is_line => {
                return self.err(
                    z.span(),
                    key("zone"),
                    "a line_crossing rule takes `line`, not `zone`".into(),
                );
            }
            (_, Some(l)) if !is_line => {
                return self.err(
                    l.span(),
                    key("line"),
                    format!("a {} rule takes `zone`, not `line`", kind.as_str()),
                );
            }
            (None, None) => {
                let what = if is_line { "line" } else { "zone" };
                return self.err(
                    rule.id.span(),
                    key(what),
                    format!("a {} rule needs a `{what}`", kind.as_str()),
                );
            }
            (Some(z), None) if !has_zone(z.get_ref()) => {
                return self.err(
                    z.span(),
                    key("zone"),
                    format!("no zone `{}` on this camera", z.get_ref()),
                );
            }
            (None, Some(l)) if !has_line(l.get_ref()) => {
                return self.err(
                    l.span(),
                    key("line"),
                    format!("no line `{}` on this camera", l.get_ref()),
                );
            }
            _ => {}
        }
        for (name, v) in [
            ("min_seconds", &rule.min_seconds),
            ("clear_seconds", &rule.clear_seconds),
        ] {
            if let Some(v) = v
                && !RULE_SECONDS.contains(v.get_ref())
            {
                return self.err(
                    v.span(),
                    key(name),
                    format!(
                        "must be a duration of 0–{} s (30 days), found {:?}",
                        RULE_SECONDS.end(),
                        v.get_ref()
                    ),
                );
            }
        }
        if let Some(classes) = &rule.classes {
            if classes.get_ref().is_empty() {
                return self.err(classes.span(), key("classes"), "lists no class".into());
            }
            if let Some(c) = classes.get_ref().iter().find(|c| !labels.contains(c)) {
                return self.err(
                    classes.span(),
                    key("classes"),
                    format!(
                        "unknown class `{c}`: the model's labels are {}",
                        labels.join(", ")
                    ),
                );
            }
        }
        let needs = |field: &str, present: bool| -> Result<(), ConfigError> {
            if present {
                Ok(())
            } else {
                self.err(
                    rule.id.span(),
                    key(field),
                    format!("a {} rule needs `{field}`", kind.as_str()),
                )
            }
        };
        let only = |field: &str, span: Option<std::ops::Range<usize>>, ok: bool| match span {
            Some(span) if !ok => self.err(
                span,
                key(field),
                format!("`{field}` does not apply to a {} rule", kind.as_str()),
            ),
            _ => Ok(()),
        };
        let stationary = matches!(kind, RuleKind::Parking | RuleKind::Encroachment);
        only(
            "min_people",
            rule.min_people.as_ref().map(|v| v.span()),
            kind == RuleKind::Crowding,
        )?;
        only(
            "stationary_radius",
            rule.stationary_radius.as_ref().map(|v| v.span()),
            stationary,
        )?;
        only(
            "direction",
            rule.direction.as_ref().map(|v| v.span()),
            kind == RuleKind::WrongWay,
        )?;
        only("alert_on", rule.alert_on.map(|_| rule.id.span()), is_line)?;
        if kind == RuleKind::Crowding {
            needs("min_people", rule.min_people.is_some())?;
            let m = rule.min_people.as_ref().expect("checked above");
            if *m.get_ref() == 0 {
                return self.err(
                    m.span(),
                    key("min_people"),
                    "a crowding rule needs min_people ≥ 1".into(),
                );
            }
        }
        if let Some(r) = &rule.stationary_radius
            && !(*r.get_ref() > 0.0 && *r.get_ref() <= 5.0)
        {
            return self.err(
                r.span(),
                key("stationary_radius"),
                format!("must be in (0, 5] box heights, found {}", r.get_ref()),
            );
        }
        if kind == RuleKind::WrongWay {
            needs("direction", rule.direction.is_some())?;
            let d = rule.direction.as_ref().expect("checked above");
            let [dx, dy] = *d.get_ref();
            if !(dx.is_finite() && dy.is_finite()) || dx.hypot(dy) <= 1e-6 {
                return self.err(
                    d.span(),
                    key("direction"),
                    format!("must be finite and not zero, found [{dx:?}, {dy:?}]"),
                );
            }
        }
        if let Some(sched) = &rule.schedule {
            for h in &sched.get_ref().hours {
                if let Err(m) = parse_span(h.get_ref()) {
                    return self.err(h.span(), key("schedule.hours"), m);
                }
            }
            for d in &sched.get_ref().days {
                if weekday(d.get_ref()).is_none() {
                    return self.err(
                        d.span(),
                        key("schedule.days"),
                        format!(
                            "`{}` is not a weekday (mon, tue, wed, thu, fri, sat, sun)",
                            d.get_ref()
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

/// Parses a whole TOML file into `T` with syntax and type errors located as in a configuration: for
/// files that embed configuration tables, such as `eval` scenarios.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        ConfigError::Parse {
            file: file.to_string(),
            line,
            column,
            message: e.message().to_string(),
        }
    })
}

/// A value that parsed but makes no sense, located at `span` of `text`.
pub fn invalid(
    text: &str,
    file: &str,
    span: std::ops::Range<usize>,
    key: String,
    message: String,
) -> ConfigError {
    let (line, column) = line_col(text, span.start);
    ConfigError::Invalid {
        file: file.to_string(),
        line,
        column,
        key,
        message,
    }
}

/// Checks a camera table of another kind of file (an `eval` scenario's `[camera]`) exactly as a camera of
/// a configuration; errors are located in that file and their keys read `camera.…`.
pub fn validate_camera(
    camera: &CameraConfig,
    text: &str,
    file: &str,
    base_dir: &Path,
) -> Result<(), ConfigError> {
    let config = Config {
        runtime: RuntimeConfig::default(),
        alert: None,
        retention: RetentionConfig::default(),
        serve: None,
        cluster: None,
        cameras: vec![camera.clone()],
        base_dir: base_dir.to_path_buf(),
    };
    Validator {
        text,
        file,
        config: &config,
        single_camera: true,
    }
    .validate()
    .map_err(|e| match e {
        ConfigError::Invalid {
            file,
            line,
            column,
            key,
            message,
        } => ConfigError::Invalid {
            file,
            line,
            column,
            key: key.replacen("cameras[0]", "camera", 1),
            message,
        },
        e => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        Config::parse(text, "test.toml", dir)
    }

    const CAMERA: &str = r#"
[[cameras]]
id = "cam-1"
url = "rtsp://admin:s3cret@10.1.2.3:554/stream1"
[[cameras.zones]]
id = "plaza"
polygon = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]]
[[cameras.rules]]
kind = "crowding"
id = "crowd"
zone = "plaza"
min_people = 5
min_seconds = 10
"#;

    #[test]
    fn a_good_file_parses_and_hides_credentials() {
        let c = parse(CAMERA).unwrap();
        let src = SourceUrl::parse(c.cameras[0].url.get_ref(), &c.base_dir).unwrap();
        assert_eq!(src.redacted(), "rtsp://***@10.1.2.3:554/stream1");
        assert!(!format!("{src:?}").contains("s3cret"));
        let SourceUrl::Rtsp { user, password, .. } = src else {
            panic!()
        };
        assert_eq!(
            (user.as_deref(), password.as_deref()),
            (Some("admin"), Some("s3cret"))
        );
        // Some cameras take a token in the query instead.
        let src = SourceUrl::parse("rtsp://10.1.2.3/live?token=T0k3n&ch=1", &c.base_dir).unwrap();
        assert_eq!(src.redacted(), "rtsp://10.1.2.3/live?token=***&ch=***");
    }

    fn message(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let m = message(&CAMERA.replace("min_people = 5", "min_people = 5\nmin_pople = 4"));
        // The new key is on line 13 of CAMERA (which starts with a newline).
        assert!(
            m.starts_with("test.toml:13:1: unknown field `min_pople`"),
            "{m}"
        );
        assert!(m.contains("min_pople"), "{m}");
    }

    #[test]
    fn short_polygon_and_out_of_range_points_are_located() {
        let m = message(&CAMERA.replace(
            "[[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]]",
            "[[0.1, 0.1], [0.9, 0.1]]",
        ));
        assert!(
            m.starts_with(
                "test.toml:7:11: cameras[0].zones[0].polygon: a polygon needs at least 3 points"
            ),
            "{m}"
        );
        let m = message(&CAMERA.replace("[0.9, 0.9]", "[1.5, 0.9]"));
        assert!(
            m.contains(
                "test.toml:7:11: cameras[0].zones[0].polygon: point [1.5, 0.9] is outside 0–1"
            ),
            "{m}"
        );
    }

    #[test]
    fn duplicate_camera_id_points_at_the_second() {
        let m = message(&format!("{CAMERA}{CAMERA}"));
        assert!(
            m.starts_with("test.toml:16:6: cameras[1].id: duplicate camera id `cam-1`"),
            "{m}"
        );
    }

    #[test]
    fn bad_url_and_missing_model_are_located() {
        let m = message(&CAMERA.replace(
            "rtsp://admin:s3cret@10.1.2.3:554/stream1",
            "rtsp://admin:s3cret@[::1/x",
        ));
        assert!(
            m.starts_with("test.toml:4:7: cameras[0].url: not a valid URL"),
            "{m}"
        );
        assert!(!m.contains("s3cret"), "{m}");
        let m = message(&format!(
            "[runtime]\nmodel = \"models/nope.toml\"\n{CAMERA}"
        ));
        assert!(
            m.starts_with("test.toml:2:9: runtime.model: model manifest"),
            "{m}"
        );
    }

    #[test]
    fn ingest_nice_out_of_range_is_located() {
        let m = message(&format!("[runtime]\ningest_nice = -5\n{CAMERA}"));
        assert!(
            m.starts_with("test.toml:2:15: runtime.ingest_nice: must be 0–19, found -5"),
            "{m}"
        );
    }

    #[test]
    fn retention_out_of_range_is_located() {
        let m = message(&format!(
            "[retention]\nincidents_days = 30\nsnapshots_days = -1\n{CAMERA}"
        ));
        assert!(
            m.starts_with(
                "test.toml:3:18: retention.snapshots_days: must be 0–36500 days (0 keeps for good), found -1"
            ),
            "{m}"
        );
        let m = message(&format!("[retention]\nbatch_rows = 0\n{CAMERA}"));
        assert!(
            m.starts_with("test.toml:2:14: retention.batch_rows: must be 1–100000 rows, found 0"),
            "{m}"
        );
        let m = message(&format!("[retention]\nincident_days = 30\n{CAMERA}"));
        assert!(
            m.starts_with("test.toml:2:1: unknown field `incident_days`"),
            "{m}"
        );
    }

    #[test]
    fn rule_on_unknown_zone_is_rejected() {
        let m = message(&CAMERA.replace("zone = \"plaza\"", "zone = \"plaze\""));
        assert!(
            m.contains("cameras[0].rules[0].zone: no zone `plaze`"),
            "{m}"
        );
    }

    #[test]
    fn a_camera_rule_cannot_be_a_citizen_report() {
        let m = message(&CAMERA.replace("kind = \"crowding\"", "kind = \"citizen_report\""));
        assert!(
            m.starts_with("test.toml:9:8: cameras[0].rules[0].kind: `citizen_report` incidents come from citizens' reports"),
            "{m}"
        );
    }

    #[test]
    fn analysis_url_is_expanded_redacted_and_located_like_url() {
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("SW_TEST_SUB_PASS", "s3cret") };
        let with =
            |line: &str| CAMERA.replace("[[cameras.zones]]", &format!("{line}\n[[cameras.zones]]"));
        let c = parse(&with(
            r#"analysis_url = "rtsp://admin:${SW_TEST_SUB_PASS}@10.1.2.3:554/stream2""#,
        ))
        .unwrap();
        let raw = c.cameras[0].analysis_url.as_ref().unwrap();
        assert!(!format!("{:?}", c.cameras[0]).contains("s3cret"));
        let SourceUrl::Rtsp { password, .. } =
            SourceUrl::parse(raw.get_ref(), &c.base_dir).unwrap()
        else {
            panic!("not rtsp")
        };
        assert_eq!(password.as_deref(), Some("s3cret"));
        // Line 5 of CAMERA (which starts with a newline), at the value.
        let m = message(&with(r#"analysis_url = "rtsp://${SW_UNSET_SUB_X}@h/s""#));
        assert!(
            m.starts_with("test.toml:5:16: cameras[0].analysis_url:")
                && m.contains("SW_UNSET_SUB_X"),
            "{m}"
        );
        let m = message(&with(r#"analysis_url = "http://h/s""#));
        assert!(
            m.starts_with("test.toml:5:16: cameras[0].analysis_url: unsupported scheme"),
            "{m}"
        );
        // A live camera's sub-stream cannot be a file.
        let m = message(&with(r#"analysis_url = "sub.mp4""#));
        assert!(
            m.starts_with(
                "test.toml:5:16: cameras[0].analysis_url: must be an rtsp:// URL when `url` is one"
            ),
            "{m}"
        );
        // Footage may be analysed from a smaller copy of itself.
        let files = with(r#"analysis_url = "sub.mp4""#)
            .replace("rtsp://admin:s3cret@10.1.2.3:554/stream1", "main.mp4");
        assert!(parse(&files).unwrap().cameras[0].analysis_url.is_some());
        assert!(parse(CAMERA).unwrap().cameras[0].analysis_url.is_none());
    }

    #[test]
    fn motion_gate_is_on_by_default_and_its_refresh_is_ranged() {
        let c = parse(CAMERA).unwrap();
        assert_eq!(
            c.runtime.motion_gate(),
            Some(crate::pool::MotionGate {
                threshold: 12,
                refresh_ms: 10_000
            })
        );
        let c = parse(&format!(
            "[runtime]\nmotion_threshold = 20\nmotion_refresh_seconds = 2.5\n{CAMERA}"
        ))
        .unwrap();
        assert_eq!(
            c.runtime.motion_gate(),
            Some(crate::pool::MotionGate {
                threshold: 20,
                refresh_ms: 2_500
            })
        );
        let c = parse(&format!("[runtime]\nmotion_gate = false\n{CAMERA}")).unwrap();
        assert_eq!(c.runtime.motion_gate(), None);
        let m = message(&format!(
            "[runtime]\nmotion_refresh_seconds = 0.1\n{CAMERA}"
        ));
        assert!(
            m.contains("runtime.motion_refresh_seconds: must be 1–3600 s, found 0.1"),
            "{m}"
        );
        let m = message(&format!("[runtime]\nmotion_threshold = 300\n{CAMERA}"));
        assert!(m.starts_with("test.toml:2:20:"), "{m}");
    }

    #[test]
    fn env_placeholders_expand() {
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("SW_TEST_PASS", "p@ss") };
        let src = SourceUrl::parse("rtsp://u:${SW_TEST_PASS}@h/s", Path::new(".")).unwrap();
        assert_eq!(src.redacted(), "rtsp://***@h/s");
        assert!(
            SourceUrl::parse("rtsp://u:${SW_UNSET_VAR_X}@h/s", Path::new("."))
                .unwrap_err()
                .contains("SW_UNSET_VAR_X")
        );
    }
}
