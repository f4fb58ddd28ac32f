#!/usr/bin/env python3
"""Make models/nanodet_g_416_coco_int8.onnx: a static-QDQ int8 copy of the batch-dynamic NanoDet-g model.

Pinned environment (models/requirements-quantize.txt), Python 3.11, Linux x86_64, CPU only:
    onnxruntime==1.31.1   onnx==1.23.2   numpy==2.4.6   pillow==13.0.0   protobuf==7.36.2
plus GStreamer 1.x (`gst-launch-1.0` with qtdemux, h264parse, avdec_h264, pngenc) when frames are extracted here.

    python3 -m venv /tmp/qvenv && /tmp/qvenv/bin/pip install -r models/requirements-quantize.txt
    /tmp/qvenv/bin/python models/quantize_nanodet.py --fp32 models/nanodet_g_416_coco.onnx \
        --out models/nanodet_g_416_coco_int8.onnx --footage fixtures/footage --work /tmp/nanodet-int8

Steps:
  1. frames     (--footage) decode each calibration clip with GStreamer at 2 frames/s into --work/frames/<clip>/;
                the calibration set is every other frame of the first 60 % of each clip (i.e. 1 frame/s);
                the last 40 % is held out for models/evaluate_int8.py.  (--frames DIR instead: every
                .png/.jpg under DIR, sorted by path, is a calibration frame.)
  2. preprocess exactly as the Rust side (src/infer/preprocess.rs): aspect-preserving letterbox into 416x416,
                centred (pad = floor((416-new)/2)), padding 0 before normalisation, bilinear with pixel-centre
                alignment (OpenCV INTER_LINEAR, no antialiasing), BGR, (x-mean)/std, NCHW float32.
  3. graph fix  the stem max-pool is `Pad(value=-inf) -> MaxPool`; the -inf makes MinMax calibration see an
                infinite range. The padding is moved into MaxPool's own `pads` (MaxPool ignores padded cells,
                i.e. the same as -inf) and the fp32 output is checked to be bit-identical. Unnamed nodes (the
                in-graph decoding) get deterministic names so they can be excluded from quantisation.
  4. quant_pre_process(skip_symbolic_shape=True) (ORT basic optimisations + ONNX shape inference).
  5. quantize_static: QDQ, per-channel int8 (QInt8) weights, uint8 (QUInt8) activations, MinMax calibration.
                Excluded (kept fp32): the three head 1x1 convs (the ones feeding the cls/reg Split) and every node
                downstream of the head Splits (sigmoid, reshape/transpose, GFL decoding, concat), because the
                final tensor mixes box pixels (0..450) with scores (0..1).
  6. check      input ['N',3,416,416], output ['N',3549,84]; a batch of 3 equals three batch-1 runs.

The calibration session runs with one intra-op thread so the MinMax ranges (and the file's sha256) do not
depend on the machine's core count.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

PINNED = {"onnxruntime": "1.31.1", "onnx": "1.23.2", "numpy": "2.4.6"}

INPUT_SIZE = 416
MEAN = np.array([103.53, 116.28, 123.675], np.float32)
STD = np.array([57.375, 57.12, 58.395], np.float32)
LETTERBOX_FILL = 0.0

# Calibration footage (fixtures/footage). bench_720p25_2mbps.mp4 is vtest re-encoded: not used.
CLIPS = ["vtest_h264.mp4", "parking_aisle_overhead_768x432.mp4", "indoor_dwell_at_table_768x432.mp4", "bikes.mp4"]
EXTRACT_FPS = "2/1"
CALIB_FRACTION = 0.6  # first 60 % of each clip -> calibration (every other frame); the rest -> evaluation


def log(*a):
    print("[quantize_nanodet]", *a, flush=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_versions(strict: bool):
    import onnx
    import onnxruntime

    got = {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "numpy": np.__version__}
    bad = {k: (v, PINNED[k]) for k, v in got.items() if v != PINNED[k]}
    if bad:
        msg = ", ".join(f"{k} {v} (pinned {p})" for k, (v, p) in bad.items())
        if strict:
            raise SystemExit(f"version mismatch: {msg}; use --no-strict-versions to go on anyway")
        log(f"WARNING version mismatch: {msg}; the sha256 will differ")
    log("versions: " + ", ".join(f"{k} {v}" for k, v in got.items()))


# ---------------------------------------------------------------------------------------------- 1. frames
def extract_frames(footage: Path, work: Path) -> Path:
    """Decode each clip at 2 frames/s to PNG (RGB) with GStreamer: work/frames/<clip stem>/NNNN.png."""
    root = work / "frames"
    for clip in CLIPS:
        src = footage / clip
        if not src.exists():
            raise SystemExit(f"missing footage {src}")
        dst = root / Path(clip).stem
        if dst.exists() and any(dst.glob("*.png")):
            continue
        dst.mkdir(parents=True, exist_ok=True)
        cmd = ["gst-launch-1.0", "-q", "filesrc", f"location={src}", "!", "qtdemux", "!", "h264parse", "!",
               "avdec_h264", "!", "videorate", "!", f"video/x-raw,framerate={EXTRACT_FPS}", "!", "videoconvert",
               "!", "video/x-raw,format=RGB", "!", "pngenc", "compression-level=1", "!", "multifilesink",
               f"location={dst}/%04d.png"]
        subprocess.run(cmd, check=True)
        log(f"extracted {len(list(dst.glob('*.png')))} frames from {clip}")
    return root


def split_frames(root: Path) -> tuple[list[Path], list[Path]]:
    """Per clip (frames at 2/s): calibration = even-numbered frames among the first 60 %; evaluation = the
    last 40 % (all frames). The two sets never share a frame and are seconds apart in time."""
    calib, evaluation = [], []
    for clip in CLIPS:
        frames = sorted((root / Path(clip).stem).glob("*.png"))
        cut = int(np.ceil(CALIB_FRACTION * len(frames)))
        calib += frames[:cut:2]
        evaluation += frames[cut:]
    return calib, evaluation


# ------------------------------------------------------------------------------------------- 2. preprocess
def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def letterbox(rgb: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Port of src/infer/preprocess.rs Letterboxer::fill (f32 arithmetic throughout). Returns the [3,size,size]
    BGR-normalised tensor and (scale, pad_x, pad_y)."""
    h, w = rgb.shape[:2]
    f32 = np.float32
    scale = min(f32(size) / f32(w), f32(size) / f32(h))
    new_w = int(np.floor(f32(w) * scale + f32(0.5)))  # Rust f32::round (half away from zero; positive here)
    new_h = int(np.floor(f32(h) * scale + f32(0.5)))
    pad_x = int(np.floor((size - new_w) / 2.0))
    pad_y = int(np.floor((size - new_h) / 2.0))

    def table(n_dst, n_src):
        d = np.arange(n_dst, dtype=f32)
        s = np.clip((d + f32(0.5)) / scale - f32(0.5), f32(0), f32(n_src - 1)).astype(f32)
        s0 = np.floor(s).astype(np.int64)
        return s0, np.minimum(s0 + 1, n_src - 1), (s - s0.astype(f32)).astype(f32)

    x0, x1, fx = table(new_w, w)
    y0, y1, fy = table(new_h, h)
    src = rgb.astype(f32)
    r0, r1 = src[y0], src[y1]                       # [new_h, w, 3]
    fx3 = fx[None, :, None]
    top = r0[:, x0] + (r0[:, x1] - r0[:, x0]) * fx3
    bot = r1[:, x0] + (r1[:, x1] - r1[:, x0]) * fx3
    img = top + (bot - top) * fy[:, None, None]     # [new_h, new_w, 3] RGB
    mul = (f32(1) / STD).astype(f32)
    add = (-MEAN / STD).astype(f32)
    out = np.empty((3, size, size), f32)
    for c in range(3):  # model channel c = BGR
        out[c].fill(f32(LETTERBOX_FILL) * mul[c] + add[c])
        out[c, pad_y:pad_y + new_h, pad_x:pad_x + new_w] = img[:, :, 2 - c] * mul[c] + add[c]
    return out, (float(scale), float(pad_x), float(pad_y))


def load_tensor(path: Path) -> np.ndarray:
    return letterbox(load_rgb(path))[0][None]


# -------------------------------------------------------------------------------------------- 3. graph fix
def fold_maxpool_pad(model):
    """Pad(constant, value -inf) -> MaxPool  ==>  MaxPool(pads=...). Also names unnamed nodes."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    folded = 0
    for pad in list(g.node):
        if pad.op_type != "Pad":
            continue
        users = consumers.get(pad.output[0], [])
        if len(users) != 1 or users[0].op_type != "MaxPool":
            continue
        mp = users[0]
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        if mode != b"constant" or len(pad.input) < 3 or pad.input[2] not in inits:
            raise SystemExit(f"{pad.name}: unexpected Pad before MaxPool")
        value = float(numpy_helper.to_array(inits[pad.input[2]]))
        if not (np.isinf(value) and value < 0):
            raise SystemExit(f"{pad.name}: pad value {value} is not -inf; folding would change results")
        p = numpy_helper.to_array(inits[pad.input[1]]).tolist()  # [n,c,h,w begin, n,c,h,w end]
        if p[0] or p[1] or p[4] or p[5]:
            raise SystemExit(f"{pad.name}: pads batch/channel dims: {p}")
        if any(a.name in ("pads", "auto_pad") and (a.ints or a.s not in (b"", b"NOTSET")) for a in mp.attribute):
            raise SystemExit(f"{mp.name} already has padding")
        new_pads = [p[2], p[3], p[6], p[7]]
        mp.input[0] = pad.input[0]
        mp.attribute.append(helper.make_attribute("pads", new_pads))
        g.node.remove(pad)
        folded += 1
        log(f"folded {pad.name} (pads {p}, value -inf) into {mp.name}: pads={new_pads}")
    if folded != 1:
        raise SystemExit(f"expected exactly one Pad(-inf)->MaxPool, found {folded}")
    used = {i for n in g.node for i in n.input}
    for name in [i.name for i in g.initializer if i.name not in used]:
        g.initializer.remove(inits[name])
    for n in g.node:
        if not n.name:
            n.name = f"{n.op_type}_{n.output[0]}"
    del g.value_info[:]
    return model


def head_exclusions(model) -> list[str]:
    """Names of the three head convs (inputs of the cls/reg Splits) and every node downstream of the Splits."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    splits = [n for n in g.node if n.op_type == "Split"]
    heads = [producer[s.input[0]] for s in splits]
    if len(splits) != 3 or any(h.op_type != "Conv" for h in heads):
        raise SystemExit(f"expected 3 Conv->Split heads, got {[(h.op_type, h.name) for h in heads]}")
    tail, stack = set(), list(splits)
    while stack:
        n = stack.pop()
        if n.name in tail:
            continue
        tail.add(n.name)
        for o in n.output:
            stack += consumers.get(o, [])
    names = [n.name for n in g.node if n.name in tail or n in heads]  # graph order
    log(f"kept in fp32: {len(names)} nodes (heads {[h.name for h in heads]} + {len(tail)} tail nodes)")
    return names


# ----------------------------------------------------------------------------------------------- 6. check
def session(path, threads=1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def check_io(sess):
    i0, o0 = sess.get_inputs()[0], sess.get_outputs()[0]
    assert (i0.name, i0.shape, i0.type) == ("images", ["N", 3, INPUT_SIZE, INPUT_SIZE], "tensor(float)"), i0
    assert (o0.name, o0.shape, o0.type) == ("output", ["N", 3549, 84], "tensor(float)"), o0


def batch_diff(sess, xs) -> float:
    singles = [sess.run(["output"], {"images": x})[0] for x in xs]
    batch = sess.run(["output"], {"images": np.concatenate(xs)})[0]
    return max(float(np.abs(batch[i:i + 1] - s).max()) for i, s in enumerate(singles))


# ------------------------------------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp32", type=Path, default=Path("models/nanodet_g_416_coco.onnx"))
    ap.add_argument("--out", type=Path, default=Path("models/nanodet_g_416_coco_int8.onnx"))
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--footage", type=Path, default=Path("fixtures/footage"),
                     help="extract calibration frames from the clips here (default)")
    src.add_argument("--frames", type=Path, help="use every .png/.jpg under DIR (sorted) as calibration frames")
    ap.add_argument("--work", type=Path, default=Path("/tmp/nanodet-int8"))
    ap.add_argument("--no-strict-versions", action="store_true")
    args = ap.parse_args()

    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)
    import onnxruntime.quantization.calibrate as ort_calibrate

    check_versions(not args.no_strict_versions)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.frames:
        calib = sorted(p for p in args.frames.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        log(f"{len(calib)} calibration frames from {args.frames}")
    else:
        calib, held_out = split_frames(extract_frames(args.footage, args.work))
        log(f"{len(calib)} calibration frames, {len(held_out)} held out, from {args.footage} "
            f"(2 frames/s; calibration: even frames of the first {CALIB_FRACTION:.0%} of each clip)")
    if not calib:
        raise SystemExit("no calibration frames")
    tensors = [load_tensor(p) for p in calib]
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.tobytes())
    log(f"calibration tensors sha256 {h.hexdigest()}")

    # 3. graph fix, verified bit-identical on the calibration frames
    model = fold_maxpool_pad(onnx.load(str(args.fp32)))
    onnx.checker.check_model(model)
    fixed = args.work / "nanodet_fixed.onnx"
    onnx.save(model, str(fixed))
    s_ref, s_fix = session(args.fp32), session(fixed)
    d = max(float(np.abs(s_ref.run(["output"], {"images": x})[0] - s_fix.run(["output"], {"images": x})[0]).max())
            for x in tensors[:: max(1, len(tensors) // 8)])
    log(f"fp32 after the MaxPool pad fold: max |diff| vs original = {d}")
    if d != 0.0:
        raise SystemExit("MaxPool pad fold changed the fp32 output")

    # 4. pre-process
    pre = args.work / "nanodet_pre.onnx"
    quant_pre_process(str(fixed), str(pre), skip_symbolic_shape=True)
    pre_model = onnx.load(str(pre))
    exclude = head_exclusions(pre_model)

    # 5. static QDQ quantisation. The calibrator builds its own InferenceSession; give it one intra-op thread
    # so the fp32 reductions (and thus the ranges and the sha256) do not depend on the core count.
    class OneThreadOptions(ort_calibrate.onnxruntime.SessionOptions):
        def __init__(self):
            super().__init__()
            self.intra_op_num_threads = 1
            self.inter_op_num_threads = 1

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(tensors)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"images": x}

    real_options = ort_calibrate.onnxruntime.SessionOptions
    ort_calibrate.onnxruntime.SessionOptions = OneThreadOptions
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        quantize_static(str(pre), str(args.out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude)
    finally:
        ort_calibrate.onnxruntime.SessionOptions = real_options

    # 6. checks
    onnx.checker.check_model(str(args.out))
    q = session(args.out)
    check_io(q)
    xs = [tensors[0], tensors[len(tensors) // 2], tensors[-1]]
    d_batch = batch_diff(q, xs)
    log(f"int8: input {q.get_inputs()[0].shape}, output {q.get_outputs()[0].shape}; "
        f"max |batch3 - batch-1 runs| = {d_batch:.3g}")
    for x in xs:
        a, b = s_ref.run(["output"], {"images": x})[0][0], q.run(["output"], {"images": x})[0][0]
        log(f"  frame: fp32 anchors>=0.35 {int((a[:, 4:].max(1) >= .35).sum())}, "
            f"int8 {int((b[:, 4:].max(1) >= .35).sum())}; max |score diff| {np.abs(a[:, 4:] - b[:, 4:]).max():.3f}")
    log(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    log(f"sha256 {sha256(args.out)}  {args.out.name}")


if __name__ == "__main__":
    main()
