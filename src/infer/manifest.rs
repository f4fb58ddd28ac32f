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

    pub fn class_index(&self, label: &str) -> Option<usize> {
        self.output.labels.iter().position(|l| l == label)
    }
}
