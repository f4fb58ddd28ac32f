//! Scenario generator: composes real footage and stills into a scripted scene with exact ground truth.
//!
//! A script (TOML, see `fixtures/scenarios/scripts/`) names a background clip or still, sprites cut from real
//! frames, and actors that move the sprites along keyframed paths. The background becomes a clean plate (the
//! per-pixel median of frames spread over the clip, which removes passers-by); each frame pastes the actors
//! on it, farther ones first, with a soft matte; the frames are encoded like an IP camera (H.264 main, no
//! B-frames, a keyframe every GOP). Next to the video goes a scenario file (`[scenario]`, `[camera]`,
//! `[[truth]]`) whose truth the script's author wrote and the generator checked against the exact paths.
//! The same script always gives the same frames.

mod compose;
mod encode;
mod footage;
mod script;
mod truth;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Serialize;

use compose::{Coverage, Sprite};
use script::{Matte, Script, TruthSpec};

#[derive(Debug, thiserror::Error)]
pub enum SceneError {
    #[error("{file}:{line}:{column}: {key}{}{message}", if key.is_empty() { "" } else { ": " })]
    Script {
        file: String,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    Footage { path: PathBuf, message: String },
    #[error("encoding {file}: {message}")]
    Encode { file: String, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What was written.
#[derive(Debug)]
pub struct Generated {
    pub video: PathBuf,
    pub scenario: PathBuf,
    pub frames: usize,
    /// Per frame, every actor on screen: where its sprite was pasted (for checking a detector on the scene).
    pub boxes: Vec<Vec<ActorBox>>,
}

/// A pasted sprite's rectangle in frame fractions, clipped to the frame, with its sprite's class.
#[derive(Debug, Clone, PartialEq)]
pub struct ActorBox {
    pub class: String,
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
}

/// Generates the scene `script` describes into `out_dir`: `<name>.mp4` and `<name>.toml`.
pub fn make_scenario(script_path: &Path, out_dir: &Path) -> Result<Generated, SceneError> {
    let (script, text) = Script::load(script_path)?;
    let base = script_path.parent().unwrap_or(Path::new("."));
    let name = script.output.name.clone().unwrap_or_else(|| {
        script_path
            .file_stem()
            .map_or("scene".into(), |s| s.to_string_lossy().into_owned())
    });
    let o = &script.output;
    let size = (o.width, o.height);
    check_truth(&script, &text, script_path)?;

    let decoded = decode_sources(&script, base)?;
    let bg_path = base.join(&script.background.source);
    let plate = match decoded.get(&bg_path) {
        Some(d) => d.plate.clone().expect("every decoded source has a plate"),
        None => footage::still(&bg_path)?,
    };
    let occluders = occluders(&script, plate.dimensions(), size);
    let plate = if plate.dimensions() == size {
        plate
    } else {
        image::imageops::resize(
            &plate,
            o.width,
            o.height,
            image::imageops::FilterType::Triangle,
        )
    };
    let sprites = cut_sprites(&script, base, &decoded, &text, script_path)?;
    let cast: Vec<(&Sprite, &[[f64; 4]])> = script
        .actors
        .iter()
        .map(|a| {
            (
                &sprites[a.sprite.get_ref().as_str()].0,
                &a.path.get_ref()[..],
            )
        })
        .collect();
    let classes: Vec<&str> = script
        .actors
        .iter()
        .map(|a| sprites[a.sprite.get_ref().as_str()].1)
        .collect();

    std::fs::create_dir_all(out_dir).map_err(|source| SceneError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let video = out_dir.join(format!("{name}.mp4"));
    let gop = ((o.gop_seconds * o.fps as f64).round() as u32).max(1);
    let mut encoder = encode::Encoder::start(&video, size, o.fps, gop, o.quality)?;
    let n_frames = (o.seconds * o.fps as f64).round() as usize;
    let mut frame = RgbImage::new(o.width, o.height);
    let mut boxes = Vec::with_capacity(n_frames);
    for i in 0..n_frames {
        let t = i as f64 / o.fps as f64;
        compose::render(&plate, &cast, &occluders, t, &mut frame);
        encoder.push(&frame)?;
        boxes.push(
            cast.iter()
                .zip(&classes)
                .filter_map(|(&(sprite, path), class)| {
                    actor_box(sprite, compose::place_at(path, t)?, class, size)
                })
                .collect(),
        );
    }
    encoder.finish()?;

    let scenario = out_dir.join(format!("{name}.toml"));
    // The script by file name only, so the scenario does not depend on where the command was run from.
    let script_name = script_path
        .file_name()
        .map_or(String::new(), |f| f.to_string_lossy().into_owned());
    let text = scenario_text(&script, &name, &script_name);
    std::fs::write(&scenario, text).map_err(|source| SceneError::Io {
        path: scenario.clone(),
        source,
    })?;
    Ok(Generated {
        video,
        scenario,
        frames: n_frames,
        boxes,
    })
}

/// A footage file's frames the sprites are cut from (in script order) and its clean plate.
struct Decoded {
    frames: Vec<RgbImage>,
    plate: Option<RgbImage>,
}

/// Decodes each footage file the script uses once: the sprites' frames and the plate.
fn decode_sources(script: &Script, base: &Path) -> Result<HashMap<PathBuf, Decoded>, SceneError> {
    let mut wanted: Vec<(PathBuf, Vec<f64>)> = Vec::new();
    let sources = script
        .sprites
        .iter()
        .map(|s| (base.join(&s.source), Some(s.at)))
        .chain([(base.join(&script.background.source), None)]);
    for (path, at) in sources.filter(|(p, _)| !footage::is_still(p)) {
        let i = match wanted.iter().position(|(p, _)| *p == path) {
            Some(i) => i,
            None => {
                wanted.push((path, Vec::new()));
                wanted.len() - 1
            }
        };
        wanted[i].1.extend(at);
    }
    let plate_frames = script.background.plate_frames.max(1);
    wanted
        .into_iter()
        .map(|(path, times)| {
            let (frames, plate) = footage::frames(&path, &times, plate_frames)?;
            Ok((path, Decoded { frames, plate }))
        })
        .collect()
}

/// The sprites by id, with their class.
fn cut_sprites<'s>(
    script: &'s Script,
    base: &Path,
    decoded: &HashMap<PathBuf, Decoded>,
    text: &str,
    script_path: &Path,
) -> Result<HashMap<&'s str, (Sprite, &'s str)>, SceneError> {
    let mut sprites = HashMap::new();
    let mut taken: HashMap<&Path, usize> = HashMap::new();
    for s in &script.sprites {
        let path = base.join(&s.source);
        let (frame, source_plate) = match decoded.get_key_value(&path) {
            Some((key, d)) => {
                // A source's frames were decoded in the order its sprites are listed.
                let n = taken.entry(key.as_path()).or_default();
                *n += 1;
                (d.frames[*n - 1].clone(), d.plate.as_ref())
            }
            None => (footage::still(&path)?, None),
        };
        let [x, y, w, h] = *s.crop.get_ref();
        if x + w > frame.width() || y + h > frame.height() {
            let (line, column) = script::line_col(text, s.crop.span().start);
            return Err(SceneError::Script {
                file: script_path.display().to_string(),
                line,
                column,
                key: format!("sprites `{}`.crop", s.id.get_ref()),
                message: format!(
                    "the crop leaves the {}×{} source",
                    frame.width(),
                    frame.height()
                ),
            });
        }
        let coverage = match (&s.outline, s.matte, source_plate) {
            (Some(outline), _, _) => Coverage::Outline(outline.clone()),
            (None, Some(Matte::Plate) | None, Some(plate)) => Coverage::Plate(plate),
            _ => Coverage::Crop,
        };
        let sprite = Sprite::cut(&frame, coverage, [x, y, w, h], s.feather).flipped(s.flip);
        sprites.insert(s.id.get_ref().as_str(), (sprite, s.class.as_str()));
    }
    Ok(sprites)
}

/// The script's occluders in output pixels (they are given in the background source's pixels).
fn occluders(script: &Script, source: (u32, u32), out: (u32, u32)) -> Vec<compose::Occluder> {
    let (sx, sy) = (
        out.0 as f64 / source.0 as f64,
        out.1 as f64 / source.1 as f64,
    );
    let scale = |v: u32, f: f64| (v as f64 * f).round() as u32;
    script
        .background
        .occluders
        .iter()
        .map(|oc| compose::Occluder {
            rects: oc
                .rects
                .iter()
                .map(|&[x, y, w, h]| [scale(x, sx), scale(y, sy), scale(w, sx), scale(h, sy)])
                .collect(),
            base: oc.base,
        })
        .collect()
}

/// Where a sprite was pasted, in frame fractions clipped to the frame; `None` when wholly off screen.
fn actor_box(
    sprite: &Sprite,
    place: compose::Place,
    class: &str,
    (w, h): (u32, u32),
) -> Option<ActorBox> {
    let (left, top, sw, sh) = compose::placement(sprite, place, (w, h));
    let (fw, fh) = (w as f64, h as f64);
    let b = ActorBox {
        class: class.to_string(),
        x1: (left as f64 / fw).clamp(0.0, 1.0),
        y1: (top as f64 / fh).clamp(0.0, 1.0),
        x2: ((left + sw as i64) as f64 / fw).clamp(0.0, 1.0),
        y2: ((top + sh as i64) as f64 / fh).clamp(0.0, 1.0),
    };
    (b.x2 > b.x1 && b.y2 > b.y1).then_some(b)
}

fn check_truth(script: &Script, text: &str, script_path: &Path) -> Result<(), SceneError> {
    let file = script_path.display().to_string();
    let camera: truth::CameraView = toml::Value::Table(script.camera.clone())
        .try_into()
        .map_err(|e: toml::de::Error| SceneError::Script {
            file: file.clone(),
            line: 1,
            column: 1,
            key: "camera".into(),
            message: e.message().to_string(),
        })?;
    let class = |id: &str| {
        script
            .sprites
            .iter()
            .find(|s| s.id.get_ref() == id)
            .map_or("", |s| s.class.as_str())
    };
    let movers: Vec<truth::Mover> = script
        .actors
        .iter()
        .map(|a| truth::Mover {
            class: class(a.sprite.get_ref()),
            path: a.path.get_ref(),
        })
        .collect();
    let starts_at = script
        .scenario
        .starts_at
        .as_deref()
        .unwrap_or(DEFAULT_STARTS_AT);
    let week_offset = truth::week_offset(starts_at).ok_or_else(|| SceneError::Script {
        file: file.clone(),
        line: 1,
        column: 1,
        key: "scenario.starts_at".into(),
        message: format!("`{starts_at}` is not an RFC 3339 time like {DEFAULT_STARTS_AT}"),
    })?;
    let timeline = truth::Timeline {
        fps: script.output.fps,
        seconds: script.output.seconds,
        week_offset,
    };
    let truths: Vec<TruthSpec> = script.truth.iter().map(|t| t.get_ref().clone()).collect();
    truth::check(&camera, &movers, &truths, &timeline).map_err(|(i, message)| {
        let (line, column, key) = match i {
            Some(i) => {
                let (l, c) = script::line_col(text, script.truth[i].span().start);
                (l, c, format!("truth[{i}]"))
            }
            None => (1, 1, "truth".into()),
        };
        SceneError::Script {
            file: file.clone(),
            line,
            column,
            key,
            message,
        }
    })
}

/// The scenario format's default for media second 0.
const DEFAULT_STARTS_AT: &str = "2026-12-01T09:00:00+07:00";

#[derive(Serialize)]
struct ScenarioFile<'a> {
    scenario: ScenarioOut<'a>,
    camera: toml::Table,
    truth: Vec<TruthSpec>,
}

#[derive(Serialize)]
struct ScenarioOut<'a> {
    description: &'a str,
    labels: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    starts_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_recall: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_precision: Option<f64>,
}

fn scenario_text(script: &Script, name: &str, script_name: &str) -> String {
    let mut camera = script.camera.clone();
    camera.insert("url".into(), toml::Value::String(format!("{name}.mp4")));
    let file = ScenarioFile {
        scenario: ScenarioOut {
            description: &script.scenario.description,
            labels: format!(
                "generated with exact ground truth by `streetwatch make-scenario` from the script {script_name}: \
                 the truth was written by the script's author with the actors' keyframed paths and checked \
                 against them frame by frame"
            ),
            starts_at: script.scenario.starts_at.as_deref(),
            min_recall: script.scenario.min_recall,
            min_precision: script.scenario.min_precision,
        },
        camera,
        truth: script.truth.iter().map(|t| t.get_ref().clone()).collect(),
    };
    format!(
        "# Generated by `streetwatch make-scenario` from {script_name}; edit the script, not this file.\n{}",
        toml::to_string(&file).expect("plain tables serialise")
    )
}
