//! The model manifest: everything the code needs to know about an ONNX detector, kept beside the file,
//! so swapping the model is a config change.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::InferError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    pub name: String,
    /// ONNX file, relative to the manifest.
    pub file: PathBuf,
    /// Hex SHA-256 of the ONNX file; checked at start-up so a wrong or truncated file fails loudly.
    pub sha256: String,
    pub source: String,
    pub licence: String,
    pub input: InputSpec,
    pub output: OutputSpec,
    /// Where the manifest was read from (set on load).
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub colour: ColourOrder,
    /// Per channel, in the model's colour order: value = (pixel - mean) / std.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Pixel value (0–255) of the letterbox padding, before normalisation.
    #[serde(default)]
    pub letterbox_fill: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColourOrder {
    Rgb,
    Bgr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
    pub layout: OutputLayout,
    pub labels: Vec<String>,
}

/// How the output tensor is laid out. Coordinates are in model-input pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputLayout {
    /// `[N, anchors, 4 + C]`: x1, y1, x2, y2, then C class scores (NanoDet with in-graph decoding).
    BoxesXyxyScores,
    /// `[N, 4 + C, anchors]`: cx, cy, w, h, then C class scores (Ultralytics YOLOv8/v11).
    Yolov8,
    /// `[N, anchors, 5 + C]`: cx, cy, w, h, objectness, then C class scores (YOLOv5-style).
    Yolov5,
}

impl OutputLayout {
    /// The name the manifest uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BoxesXyxyScores => "boxes_xyxy_scores",
            Self::Yolov8 => "yolov8",
            Self::Yolov5 => "yolov5",
        }
    }

    /// Values per anchor before the class scores: the box, and objectness for YOLOv5.
    pub fn box_values(self) -> usize {
        match self {
            Self::BoxesXyxyScores | Self::Yolov8 => 4,
            Self::Yolov5 => 5,
        }
    }

    /// Values per anchor with `classes` class scores.
    pub fn values_per_anchor(self, classes: usize) -> usize {
        self.box_values() + classes
    }

    /// The output axis holding one anchor's values; the other axis after the batch counts anchors.
    pub fn values_axis(self) -> usize {
        match self {
            Self::Yolov8 => 1,
            Self::BoxesXyxyScores | Self::Yolov5 => 2,
        }
    }

    pub fn anchors_axis(self) -> usize {
        3 - self.values_axis()
    }
}

impl std::fmt::Display for OutputLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ModelManifest {
    /// Reads the manifest and checks that the model file exists and matches its hash.
    pub fn load(path: &Path) -> Result<Self, InferError> {
        let text = std::fs::read_to_string(path).map_err(|e| InferError::Manifest {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut m: ModelManifest = toml::from_str(&text).map_err(|e| InferError::Manifest {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        m.path = path.to_path_buf();
        if m.output.labels.is_empty() {
            return Err(InferError::Manifest {
                path: m.path.clone(),
                message: "output.labels is empty".into(),
            });
        }
        let model = m.model_path();
        let bytes = std::fs::read(&model).map_err(|e| InferError::ModelFile {
            path: model.clone(),
            message: format!(
                "cannot read: {e} (run scripts/setup.sh, or fix `file` in the manifest)"
            ),
        })?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(&m.sha256) {
            return Err(InferError::ModelFile {
                path: model,
                message: format!("sha256 is {actual}, the manifest expects {}", m.sha256),
            });
        }
        Ok(m)
    }

    pub fn model_path(&self) -> PathBuf {
        self.path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&self.file)
    }

    /// An error naming this manifest and its model file: the model does not fit what the manifest says.
    pub fn mismatch(&self, message: String) -> InferError {
        InferError::Mismatch {
            manifest: self.path.clone(),
            model: self.model_path(),
            message,
        }
    }

    /// Checks the model's input shape, as ONNX Runtime gives it (a dimension the model leaves open is
    /// negative), against `[N, 3, height, width]`.
    pub fn check_input(&self, dims: &[i64]) -> Result<(), InferError> {
        let (name, h, w) = (&self.input.name, self.input.height, self.input.width);
        let fits = |d: i64, want: u32| d < 0 || d == i64::from(want);
        if dims.len() != 4 || !fits(dims[1], 3) || !fits(dims[2], h) || !fits(dims[3], w) {
            return Err(self.mismatch(format!(
                "input `{name}` is {dims:?}, the manifest's is [N, 3, {h}, {w}] (height {h}, width {w})"
            )));
        }
        Ok(())
    }

    /// Checks the model's output shape against the manifest's layout and labels: rank 3, and as many
    /// values per anchor as the layout needs for one score per label. At start-up a dimension the model
    /// leaves open (negative) passes; at run time every dimension is known.
    pub fn check_output(&self, dims: &[i64]) -> Result<(), InferError> {
        let (name, layout) = (&self.output.name, self.output.layout);
        let labels = self.output.labels.len();
        let needed = layout.values_per_anchor(labels);
        // Called on every run: nothing is formatted unless the shape is wrong.
        let shape = || match layout {
            OutputLayout::Yolov8 => format!("[N, {} + classes, anchors]", layout.box_values()),
            _ => format!("[N, anchors, {} + classes]", layout.box_values()),
        };
        if dims.len() != 3 {
            return Err(self.mismatch(format!(
                "output `{name}` has rank {} ({dims:?}); layout `{layout}` needs rank 3: {}",
                dims.len(),
                shape()
            )));
        }
        let values = dims[layout.values_axis()];
        if values < 0 || values as usize == needed {
            return Ok(());
        }
        let (values, shape) = (values as usize, shape());
        let message = match values.checked_sub(layout.box_values()) {
            Some(classes) if classes > 0 => format!(
                "output `{name}` is {dims:?}: {values} values per anchor, so {classes} classes for layout \
                 `{layout}` {shape}, but the manifest lists {labels} labels"
            ),
            _ => format!(
                "output `{name}` is {dims:?}: {values} values per anchor, fewer than the {needed} that layout \
                 `{layout}` {shape} needs for {labels} labels"
            ),
        };
        Err(self.mismatch(message))
    }

    pub fn class_index(&self, label: &str) -> Option<usize> {
        self.output.labels.iter().position(|l| l == label)
    }
}
