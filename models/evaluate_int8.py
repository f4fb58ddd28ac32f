#!/usr/bin/env python3
"""Compare models/nanodet_g_416_coco_int8.onnx with the fp32 model it was made from (same environment as
models/quantize_nanodet.py, models/requirements-quantize.txt).

    /tmp/qvenv/bin/python models/evaluate_int8.py --work /tmp/nanodet-int8            # quality + batch check
    /tmp/qvenv/bin/python models/evaluate_int8.py --work /tmp/nanodet-int8 --bench    # + CPU timings

Quality: on the held-out frames (the last 40 % of each clip at 2 frames/s, never used for calibration; see
quantize_nanodet.split_frames), decode each model's output like src/infer/postprocess.rs (per anchor the best
class, score >= 0.35, class-aware greedy NMS at IoU 0.5, boxes mapped back to the frame), then match int8
detections to fp32 detections per image (same class, IoU >= 0.5, one-to-one, greedy by int8 score).
recall = matched fp32 / all fp32, precision = matched int8 / all int8, with fp32 as the reference.
Also: persons per frame on vtest under both models (mean absolute difference), and a batch-of-3 vs batch-1 check.

Speed: onnxruntime CPU, intra_op_num_threads=1, inter_op_num_threads=1, ORT_ENABLE_ALL; batch 1 and 4; median
ms per frame over --runs runs, measured both in blocks (all fp32 runs, then all int8 runs) and interleaved
(fp32, int8, fp32, int8, ...), the latter being fairer on a shared CPU.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.dont_write_bytecode = True  # no models/__pycache__
sys.path.insert(0, str(Path(__file__).resolve().parent))
import quantize_nanodet as qn  # noqa: E402

SCORE = 0.35
NMS_IOU = 0.5
MATCH_IOU = 0.5
PERSON, CAR = 0, 2


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a [n,4] with b [m,4] -> [n,m]."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0)


def decode(out: np.ndarray, place, frame_wh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One item of `output` [3549,84] -> (classes, scores, boxes in frame fractions), NMS applied."""
    scale, px, py = place
    fw, fh = frame_wh
    cls = out[:, 4:].argmax(1)
    score = out[np.arange(len(out)), 4 + cls]
    keep = score >= SCORE
    cls, score, box = cls[keep], score[keep], out[keep, :4].copy()
    box[:, [0, 2]] = np.clip((box[:, [0, 2]] - px) / scale / fw, 0, 1)
    box[:, [1, 3]] = np.clip((box[:, [1, 3]] - py) / scale / fh, 0, 1)
    order = np.argsort(-score, kind="stable")
    cls, score, box = cls[order], score[order], box[order]
    kept = []
    for i in range(len(score)):
        if all(cls[k] != cls[i] or iou(box[k:k + 1], box[i:i + 1])[0, 0] <= NMS_IOU for k in kept):
            kept.append(i)
    return cls[kept], score[kept], box[kept]


def match(ref, test, c) -> tuple[int, int, int]:
    """(n_ref, n_test, n_matched) for class c in one image."""
    rb = ref[2][ref[0] == c]
    tb, ts = test[2][test[0] == c], test[1][test[0] == c]
    if len(rb) == 0 or len(tb) == 0:
        return len(rb), len(tb), 0
    m = iou(tb, rb)
    used, n = set(), 0
    for i in np.argsort(-ts, kind="stable"):
        cands = [j for j in np.argsort(-m[i], kind="stable") if m[i, j] >= MATCH_IOU and j not in used]
        if cands:
            used.add(cands[0])
            n += 1
    return len(rb), len(tb), n


def quality(fp32: Path, int8: Path, frames: list[Path]):
    s32, s8 = qn.session(fp32, threads=2), qn.session(int8, threads=2)
    tot = {c: np.zeros(3, int) for c in (PERSON, CAR)}
    per_clip = {}
    persons = {}  # frame -> (fp32, int8)
    for p in frames:
        rgb = qn.load_rgb(p)
        x, place = qn.letterbox(rgb)
        x = x[None]
        wh = (rgb.shape[1], rgb.shape[0])
        d32 = decode(s32.run(["output"], {"images": x})[0][0], place, wh)
        d8 = decode(s8.run(["output"], {"images": x})[0][0], place, wh)
        clip = p.parent.name
        pc = per_clip.setdefault(clip, {c: np.zeros(3, int) for c in (PERSON, CAR)})
        for c in (PERSON, CAR):
            r = np.array(match(d32, d8, c))
            tot[c] += r
            pc[c] += r
        persons[p] = (int((d32[0] == PERSON).sum()), int((d8[0] == PERSON).sum()))

    def fmt(a):
        n_ref, n_test, n_m = a
        rec = n_m / n_ref if n_ref else float("nan")
        prec = n_m / n_test if n_test else float("nan")
        return f"recall {rec:.3f} ({n_m}/{n_ref})  precision {prec:.3f} ({n_m}/{n_test})"

    print(f"held-out frames: {len(frames)}")
    for name, c in (("person", PERSON), ("car", CAR)):
        print(f"  ALL  {name:6s} {fmt(tot[c])}")
    for clip, pc in per_clip.items():
        for name, c in (("person", PERSON), ("car", CAR)):
            print(f"  {clip[:28]:28s} {name:6s} {fmt(pc[c])}")
    v = np.array([persons[p] for p in frames if p.parent.name.startswith("vtest")])
    print(f"vtest persons per frame ({len(v)} held-out frames): fp32 mean {v[:, 0].mean():.2f}, int8 mean "
          f"{v[:, 1].mean():.2f}, mean |diff| {np.abs(v[:, 0] - v[:, 1]).mean():.3f}, "
          f"max |diff| {np.abs(v[:, 0] - v[:, 1]).max()}, frames equal {(v[:, 0] == v[:, 1]).mean():.2%}")
    return s32, s8


def batch_check(s32, s8, frames):
    xs = [qn.load_tensor(frames[i]) for i in (0, len(frames) // 2, -1)]
    for name, s in (("fp32", s32), ("int8", s8)):
        print(f"batch: {name} max |batch-of-3 - three batch-1 runs| = {qn.batch_diff(s, xs):.3g}")


def bench(fp32: Path, int8: Path, frames: list[Path], runs: int):
    import onnxruntime as ort

    def sess(path):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    models = {"fp32": sess(fp32), "int8": sess(int8)}
    xs = [qn.load_tensor(frames[i * len(frames) // 4]) for i in range(4)]
    print(f"speed: onnxruntime {ort.__version__} CPU, 1 intra-op thread, 1 inter-op thread, ORT_ENABLE_ALL, "
          f"{runs} runs, median ms per frame")
    for batch in (1, 4):
        x = np.concatenate(xs[:batch])
        feed = {"images": x}

        def once(name):
            t = time.perf_counter()
            models[name].run(["output"], feed)
            return (time.perf_counter() - t) * 1000 / batch

        for name in models:  # warm-up
            for _ in range(3):
                once(name)
        block = {name: [once(name) for _ in range(runs)] for name in models}
        inter = {name: [] for name in models}
        for i in range(runs):
            for name in (("fp32", "int8") if i % 2 == 0 else ("int8", "fp32")):
                inter[name].append(once(name))
        for label, t in (("blocks", block), ("interleaved", inter)):
            m32, m8 = np.median(t["fp32"]), np.median(t["int8"])
            print(f"  batch {batch} {label:11s}: fp32 {m32:6.1f} ms/frame, int8 {m8:6.1f} ms/frame, "
                  f"speed-up {m32 / m8:.2f}x   (p10-p90 fp32 {np.percentile(t['fp32'], 10):.1f}-"
                  f"{np.percentile(t['fp32'], 90):.1f}, int8 {np.percentile(t['int8'], 10):.1f}-"
                  f"{np.percentile(t['int8'], 90):.1f})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp32", type=Path, default=Path("models/nanodet_g_416_coco.onnx"))
    ap.add_argument("--int8", type=Path, default=Path("models/nanodet_g_416_coco_int8.onnx"))
    ap.add_argument("--footage", type=Path, default=Path("fixtures/footage"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/nanodet-int8"))
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--bench-only", action="store_true")
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    _, held_out = qn.split_frames(qn.extract_frames(args.footage, args.work))
    if not args.bench_only:
        s32, s8 = quality(args.fp32, args.int8, held_out)
        batch_check(s32, s8, held_out)
    if args.bench or args.bench_only:
        bench(args.fp32, args.int8, held_out, args.runs)


if __name__ == "__main__":
    main()
