//! Detect: ONNX models through ONNX Runtime. One [`Detector`] per worker, each a single-threaded
//! session (many single-threaded sessions beat one many-threaded session on CPU).

mod manifest;
mod postprocess;
mod preprocess;
mod regions;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{Outlet, TensorRef};

pub use manifest::{ModelManifest, OutputLayout};
pub use postprocess::{BBox, DecodeError, Detection, nms};

/// Decodes one image's raw output (`anchors` rows in `layout`) into detections in frame fractions; an
/// error if `data` is not exactly that many rows. Exposed for benchmarks; [`Detector::detect`] calls it
/// for every frame.
pub fn decode_output(
    layout: OutputLayout,
    classes: usize,
    score_threshold: f32,
    data: &[f32],
    anchors: usize,
    place: &Placement,
    out: &mut Vec<Detection>,
) -> Result<(), DecodeError> {
    let p = DecodeParams {
        layout,
        classes,
        score_threshold,
        iou_threshold: 0.5,
        max_detections: 300,
    };
    postprocess::decode(&p, data, anchors, place, out)
}
pub use preprocess::{Letterboxer, Placement};
pub use regions::{Crop, Regions};

use crate::frame::Frame;
use postprocess::DecodeParams;

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("model manifest {path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("model file {path}: {message}")]
    ModelFile { path: PathBuf, message: String },
    #[error("ONNX Runtime library {path}: {message}")]
    Runtime { path: PathBuf, message: String },
    #[error("model {model}: {message}")]
    Session { model: String, message: String },
    /// The model's input or output does not fit its manifest: found at start-up, or at run time for a
    /// dimension the model leaves open.
    #[error("model manifest {manifest}: {message} (model file {model})")]
    Mismatch {
        manifest: PathBuf,
        model: PathBuf,
        message: String,
    },
}

static RUNTIME: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// The ONNX Runtime library installed with streetwatch ([`crate::home`]: `<prefix>/lib/streetwatch/`, or
/// `.deps/onnxruntime/` of a development checkout), unless `STREETWATCH_ORT_LIB` names one.
pub fn default_runtime_path() -> PathBuf {
    std::env::var_os("STREETWATCH_ORT_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::home::home().onnxruntime.clone())
}

fn runtime() -> Result<&'static ort::environment::Environment, String> {
    match RUNTIME.get() {
        Some(Ok(env)) => Ok(env),
        Some(Err(e)) => Err(e.clone()),
        None => Err("ONNX Runtime is not loaded (call init_runtime first)".into()),
    }
}

/// Loads the ONNX Runtime library once per process. Later calls return the first outcome.
pub fn init_runtime(lib: &Path) -> Result<(), InferError> {
    let outcome = RUNTIME.get_or_init(|| {
        if !lib.is_file() {
            return Err("not found (run scripts/setup.sh and `make install`, or set runtime.onnxruntime / STREETWATCH_ORT_LIB)".into());
        }
        let builder = ort::init_from(lib).map_err(|e| e.to_string())?;
        builder.with_name("streetwatch").with_telemetry(false).build().map_err(|e| e.to_string())
    });
    outcome
        .as_ref()
        .map(|_| ())
        .map_err(|message| InferError::Runtime {
            path: lib.to_path_buf(),
            message: message.clone(),
        })
}

/// Per camera index, the regions its frames are also detected on.
pub type RegionTable = Arc<ArcSwap<Vec<Regions>>>;

/// One worker's detector: a session plus reusable input and output buffers.
pub struct Detector {
    manifest: Arc<ModelManifest>,
    session: Session,
    /// Most model inputs per run: the batch dimension if the model fixes it, else the pool's batch size.
    max_batch: usize,
    input: Vec<f32>,
    letterboxers: Vec<Letterboxer>,
    params: DecodeParams,
    /// Per camera index: the regions its frames are also detected on (none by default). Shared by the
    /// workers and replaced whole when cameras are added or changed by a reload.
    regions: RegionTable,
    /// This call's model inputs: which frame, and which part of it (`None`: the whole frame).
    items: Vec<(usize, Option<Crop>)>,
    /// Per batch slot of the current run: where its image landed.
    placements: Vec<Placement>,
    crops: Vec<Crop>,
    /// One model input's decoded detections, before they join their frame's list.
    scratch: Vec<Detection>,
    /// Per frame of this call: how many of its detections come from the whole-frame pass.
    whole: Vec<usize>,
}

impl Detector {
    /// Builds a single-threaded session. `max_batch` is capped at 1 for models with a fixed batch of 1.
    pub fn new(
        manifest: Arc<ModelManifest>,
        max_batch: usize,
        score_threshold: f32,
    ) -> Result<Self, InferError> {
        let model = manifest.name.clone();
        let err = |message: String| InferError::Session {
            model: model.clone(),
            message,
        };
        let env = runtime().map_err(&err)?;
        let session = Session::builder(env)
            .map_err(|e| err(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| err(e.to_string()))?
            .with_intra_threads(1)
            .map_err(|e| err(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| err(e.to_string()))?
            .commit_from_file(manifest.model_path())
            .map_err(|e| err(e.to_string()))?;
        let dims = tensor_dims(&manifest, "input", &manifest.input.name, session.inputs())?;
        manifest.check_input(&dims)?;
        let out_dims = tensor_dims(
            &manifest,
            "output",
            &manifest.output.name,
            session.outputs(),
        )?;
        manifest.check_output(&out_dims)?;
        let (h, w) = (manifest.input.height as i64, manifest.input.width as i64);
        let max_batch = if dims[0] > 0 {
            dims[0] as usize
        } else {
            max_batch.max(1)
        };
        let item = 3 * (h * w) as usize;
        Ok(Self {
            params: DecodeParams {
                layout: manifest.output.layout,
                classes: manifest.output.labels.len(),
                score_threshold,
                iou_threshold: 0.5,
                max_detections: 300,
            },
            session,
            max_batch,
            input: vec![0.0; max_batch * item],
            letterboxers: (0..max_batch).map(|_| Letterboxer::default()).collect(),
            regions: RegionTable::default(),
            items: Vec::new(),
            placements: Vec::with_capacity(max_batch),
            crops: Vec::new(),
            scratch: Vec::with_capacity(64),
            whole: Vec::new(),
            manifest,
        })
    }

    /// Detects on these regions too, `regions[i]` for frames of camera i (cameras beyond the list: none).
    pub fn with_regions(self, regions: Arc<[Regions]>) -> Self {
        self.with_region_table(Arc::new(ArcSwap::from_pointee(regions.to_vec())))
    }

    /// As [`with_regions`](Self::with_regions), reading a table that may be replaced while it runs.
    pub fn with_region_table(mut self, regions: RegionTable) -> Self {
        self.regions = regions;
        self
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Runs detection on `frames`; `out[i]` receives frame i's detections. Each frame is one model input,
    /// plus one per tile of its camera's regions; inputs run in batches of at most `max_batch`. Returns
    /// the number of model inputs run.
    pub fn detect(
        &mut self,
        frames: &[Frame],
        out: &mut [Vec<Detection>],
    ) -> Result<usize, InferError> {
        assert!(out.len() >= frames.len());
        let (in_w, in_h) = (self.manifest.input.width, self.manifest.input.height);
        self.items.clear();
        self.whole.clear();
        self.whole.resize(frames.len(), 0);
        // One table for the whole call, even if a reload replaces it meanwhile.
        let regions = self.regions.load_full();
        for (i, f) in frames.iter().enumerate() {
            out[i].clear();
            self.items.push((i, None));
            if let Some(r) = regions.get(f.camera).filter(|r| !r.is_empty()) {
                self.crops.clear();
                r.tiles_for(f.width, f.height, in_w, in_h, &mut self.crops);
                self.items.extend(self.crops.iter().map(|&c| (i, Some(c))));
            }
        }
        let mut start = 0;
        while start < self.items.len() {
            let end = (start + self.max_batch).min(self.items.len());
            self.run(frames, start..end, out)?;
            start = end;
        }
        // Tiles overlap each other and the whole frame: one box per object.
        for (i, f) in frames.iter().enumerate() {
            if regions.get(f.camera).is_some_and(|r| !r.is_empty()) {
                nms(
                    &mut out[i],
                    self.params.iou_threshold,
                    self.params.max_detections,
                );
            }
        }
        Ok(self.items.len())
    }

    /// One inference run over `self.items[range]`; each item's detections are appended to its frame's.
    fn run(
        &mut self,
        frames: &[Frame],
        range: std::ops::Range<usize>,
        out: &mut [Vec<Detection>],
    ) -> Result<(), InferError> {
        let spec = &self.manifest.input;
        let item = 3 * (spec.width * spec.height) as usize;
        let n = range.len();
        self.placements.clear();
        for (slot, &(fi, crop)) in self.items[range.clone()].iter().enumerate() {
            let f = &frames[fi];
            let dst = &mut self.input[slot * item..(slot + 1) * item];
            let lb = &mut self.letterboxers[slot];
            let p = match crop {
                None => lb.fill(spec, f.rgb(), f.width, f.height, f.stride, dst),
                Some(c) => {
                    // The region is a view into the frame: its first pixel, the frame's stride.
                    let at = (c.y * f.stride + c.x * 3) as usize;
                    lb.fill(spec, &f.rgb()[at..], c.w, c.h, f.stride, dst)
                        .in_frame(c.x, c.y, f.width, f.height)
                }
            };
            self.placements.push(p);
        }
        let shape = [n, 3, spec.height as usize, spec.width as usize];
        let model = &self.manifest.name;
        let err = |e: ort::Error| InferError::Session {
            model: model.clone(),
            message: e.to_string(),
        };
        let t = TensorRef::from_array_view((shape, &self.input[..n * item])).map_err(err)?;
        let outputs = self
            .session
            .run(ort::inputs![spec.name.as_str() => t])
            .map_err(err)?;
        let (out_shape, data) = outputs[self.manifest.output.name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(err)?;
        // Dimensions the model left open at start-up are known now: the same check, then the batch.
        self.manifest.check_output(out_shape)?;
        if out_shape[0] != n as i64 {
            return Err(self.manifest.mismatch(format!(
                "output `{}` is {:?} for a batch of {n}",
                self.manifest.output.name, &**out_shape
            )));
        }
        let anchors = out_shape[self.params.layout.anchors_axis()] as usize;
        let per_item = data.len() / n;
        for (slot, &(fi, crop)) in self.items[range].iter().enumerate() {
            let data = &data[slot * per_item..(slot + 1) * per_item];
            let place = &self.placements[slot];
            let decode_err = |e: postprocess::DecodeError| {
                self.manifest.mismatch(format!(
                    "output `{}` at run time: {e}",
                    self.manifest.output.name
                ))
            };
            match crop {
                // The whole frame, its frame's first item: decoded straight into its list.
                None => {
                    postprocess::decode(&self.params, data, anchors, place, &mut out[fi])
                        .map_err(decode_err)?;
                    self.whole[fi] = out[fi].len();
                }
                Some(c) => {
                    postprocess::decode(&self.params, data, anchors, place, &mut self.scratch)
                        .map_err(decode_err)?;
                    let (f, whole) = (&frames[fi], self.whole[fi]);
                    regions::add_tile_detections(
                        &self.scratch,
                        c,
                        f.width,
                        f.height,
                        whole,
                        &mut out[fi],
                    );
                }
            }
        }
        Ok(())
    }
}

/// The dimensions of the model's `kind` (input or output) named `name`, as ONNX Runtime reports them
/// (negative: left open by the model).
fn tensor_dims(
    manifest: &ModelManifest,
    kind: &str,
    name: &str,
    outlets: &[Outlet],
) -> Result<Vec<i64>, InferError> {
    let Some(outlet) = outlets.iter().find(|o| o.name() == name) else {
        let names: Vec<&str> = outlets.iter().map(|o| o.name()).collect();
        return Err(manifest.mismatch(format!(
            "the model has no {kind} named `{name}` (its {kind}s: {})",
            names.join(", ")
        )));
    };
    let shape = outlet
        .dtype()
        .tensor_shape()
        .ok_or_else(|| manifest.mismatch(format!("{kind} `{name}` is not a tensor")))?;
    Ok(shape.iter().copied().collect())
}
