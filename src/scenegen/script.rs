//! The scene script: a TOML file naming the background, the sprites cut from real footage, the actors'
//! keyframed paths, and the scenario (camera, rules, ground truth) to write next to the video.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::SceneError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    pub scenario: ScenarioHead,
    pub output: Output,
    pub background: Background,
    #[serde(default)]
    pub sprites: Vec<SpriteSpec>,
    #[serde(default)]
    pub actors: Vec<ActorSpec>,
    /// Passed through to the scenario file (url filled in); the truth check reads its zones, lines and rules.
    pub camera: toml::Table,
    #[serde(default)]
    pub truth: Vec<Spanned<TruthSpec>>,
}

/// The generated scenario's `[scenario]` table, less `labels` (the generator writes those).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioHead {
    pub description: String,
    pub starts_at: Option<String>,
    pub min_recall: Option<f64>,
    pub min_precision: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Base name of the `.mp4` and `.toml` written; default: the script's file stem.
    pub name: Option<String>,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub seconds: f64,
    /// Keyframe interval, like a camera's GOP (1–2 s).
    #[serde(default = "default_gop_seconds")]
    pub gop_seconds: f64,
    /// x264 constant-quality level (lower: better and bigger).
    #[serde(default = "default_quality")]
    pub quality: u32,
}

fn default_gop_seconds() -> f64 {
    2.0
}
fn default_quality() -> u32 {
    32
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Background {
    /// A footage file (H.264 MP4) or a still (JPEG/PNG), relative to the script.
    pub source: PathBuf,
    /// Footage: the clean plate is the per-pixel median of this many frames spread over the clip, which
    /// removes whatever moves (passers-by). Ignored for stills.
    #[serde(default = "default_plate_frames")]
    pub plate_frames: usize,
    #[serde(default)]
    pub occluders: Vec<OccluderSpec>,
}

/// Parts of the background in front of the street (a lamp post): actors standing behind `base` pass behind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OccluderSpec {
    /// `[x, y, width, height]` rectangles in the background source's pixels.
    pub rects: Vec<[u32; 4]>,
    /// Where the object stands, as a fraction of the frame's height.
    pub base: f64,
}

fn default_plate_frames() -> usize {
    31
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flip {
    None,
    Horizontal,
    Vertical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Matte {
    /// Pixels that differ from the source clip's own clean plate (a cut-out of the object); footage only.
    Plate,
    /// Inside `outline` (an object the plate cannot separate: from a still, or one that never moves).
    Outline,
    /// The whole crop with a soft edge.
    Box,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpriteSpec {
    pub id: Spanned<String>,
    /// COCO class of the object (for the truth check's class filters).
    pub class: String,
    pub source: PathBuf,
    /// Media seconds of the frame to cut from (footage only).
    #[serde(default)]
    pub at: f64,
    /// `[x, y, width, height]` in source pixels.
    pub crop: Spanned<[u32; 4]>,
    #[serde(default = "default_flip")]
    pub flip: Flip,
    /// Default: `outline` when an outline is given, else `plate` for footage and `box` for stills.
    pub matte: Option<Matte>,
    /// The object's outline, `[x, y]` points in source pixels.
    pub outline: Option<Vec<[f32; 2]>>,
    /// Soft edge width in source pixels.
    #[serde(default = "default_feather")]
    pub feather: u32,
}

fn default_flip() -> Flip {
    Flip::None
}
fn default_feather() -> u32 {
    3
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorSpec {
    pub sprite: Spanned<String>,
    /// `[t, x, y, h]` keyframes: media seconds, bottom-centre in frame fractions, height in frame fractions.
    /// The actor is on screen from the first keyframe to the last; positions are linear in between.
    pub path: Spanned<Vec<[f64; 4]>>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TruthSpec {
    pub rule: String,
    pub start: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Script {
    pub fn load(path: &Path) -> Result<(Script, String), SceneError> {
        let text = std::fs::read_to_string(path).map_err(|source| SceneError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let file = path.display().to_string();
        let script: Script = toml::from_str(&text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((1, 1));
            SceneError::Script {
                file: file.clone(),
                line,
                column,
                key: String::new(),
                message: e.message().to_string(),
            }
        })?;
        let at = |span: std::ops::Range<usize>, key: String, message: String| {
            let (line, column) = line_col(&text, span.start);
            SceneError::Script {
                file: file.clone(),
                line,
                column,
                key,
                message,
            }
        };
        let o = &script.output;
        if o.width == 0 || o.height == 0 || o.width % 2 == 1 || o.height % 2 == 1 {
            return Err(at(
                0..0,
                "output".into(),
                "width and height must be even and non-zero (4:2:0 video)".into(),
            ));
        }
        if o.fps == 0 || o.seconds <= 0.0 || o.gop_seconds <= 0.0 {
            return Err(at(
                0..0,
                "output".into(),
                "fps, seconds and gop_seconds must be positive".into(),
            ));
        }
        for (i, s) in script.sprites.iter().enumerate() {
            let [_, _, w, h] = *s.crop.get_ref();
            if w < 2 || h < 2 {
                return Err(at(
                    s.crop.span(),
                    format!("sprites[{i}].crop"),
                    "a crop needs at least 2×2 pixels".into(),
                ));
            }
            let outline_ok = match (&s.outline, s.matte) {
                (Some(o), Some(Matte::Outline) | None) => o.len() >= 3,
                (None, Some(Matte::Outline)) | (Some(_), Some(_)) => false,
                (None, _) => true,
            };
            if !outline_ok {
                return Err(at(
                    s.id.span(),
                    format!("sprites[{i}].outline"),
                    "`matte = \"outline\"` needs an `outline` of at least 3 points, and an outline no other matte"
                        .into(),
                ));
            }
            if script.sprites[..i]
                .iter()
                .any(|p| p.id.get_ref() == s.id.get_ref())
            {
                return Err(at(
                    s.id.span(),
                    format!("sprites[{i}].id"),
                    format!("sprite `{}` is defined twice", s.id.get_ref()),
                ));
            }
        }
        for (i, a) in script.actors.iter().enumerate() {
            if !script
                .sprites
                .iter()
                .any(|s| s.id.get_ref() == a.sprite.get_ref())
            {
                return Err(at(
                    a.sprite.span(),
                    format!("actors[{i}].sprite"),
                    format!("no sprite `{}`", a.sprite.get_ref()),
                ));
            }
            let path = a.path.get_ref();
            if path.is_empty() {
                return Err(at(
                    a.path.span(),
                    format!("actors[{i}].path"),
                    "a path needs at least one keyframe".into(),
                ));
            }
            if path.windows(2).any(|k| k[1][0] < k[0][0]) {
                return Err(at(
                    a.path.span(),
                    format!("actors[{i}].path"),
                    "keyframe times must not decrease".into(),
                ));
            }
            if path.iter().any(|k| k[3] <= 0.0) {
                return Err(at(
                    a.path.span(),
                    format!("actors[{i}].path"),
                    "heights must be positive".into(),
                ));
            }
        }
        Ok((script, text))
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
