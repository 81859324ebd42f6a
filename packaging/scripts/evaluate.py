"""Accuracy of the detector and the tracker on real ground truth: detector precision/recall (IoU 0.5) and tracking
IDF1/MOTA (py-motmetrics), so a speed change can show it did not cost accuracy.

    .venv/bin/python packaging/scripts/evaluate.py [--data DIR] [--model FILE.onnx] [--input-size N]
        [--min-score S] [--fps F] [--json]

DIR is a MOT-format sequence: `img/*.jpg` (or `img1/`) and `gt/gt.txt` (frame,id,x,y,w,h,...; every row a person).
The default is the PETS 2009 S3-MF1 excerpt at ../shared/eval/pets2009-s3mf1 beside the checkout: research data
for evaluation only, read in place and never copied into the repository or shipped. The detector runs in-process
on onnxruntime with the decode and NMS the Triton model applies (plugin/inference/naive.py, the same letterbox the
bridge uses), one thread, so the numbers are deterministic; the bridge's filter follows (class person, score >=
detector.min_score), then the bridge's tracker (plugin/pipeline/tracking.py) at the sequence's frame rate.
Needs `motmetrics` (pip install motmetrics).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from plugin.config.cameras import CameraConfig, MotionGatingConfig
from plugin.config.service import DetectorConfig
from plugin.inference.naive import OnnxYolox, YoloxSettings, read_model_parameters
from plugin.inference.server import DEFAULT_MODEL_REPOSITORY, REPO_ROOT
from plugin.pipeline.motion import MotionGate
from plugin.pipeline.tracking import Tracker, iou_matrix
from plugin.types import Detections, Frame

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "eval" / "pets2009-s3mf1"
# PETS 2009 was recorded at about 7 frames per second
DEFAULT_FPS = 7.0
MODEL_DIR = DEFAULT_MODEL_REPOSITORY / "yolox_nano"
IOU = 0.5
PERSON = 0


def load_sequence(data: Path) -> tuple[list[Path], dict[int, np.ndarray]]:
    """The frames in order and the ground truth boxes (x1,y1,x2,y2, then the id) per 1-based frame number."""
    img_dir = next((data / d for d in ("img1", "img") if (data / d).is_dir()), None)
    gt_file = data / "gt" / "gt.txt"
    if img_dir is None or not gt_file.is_file():
        raise SystemExit(f"evaluate: {data} is not a MOT sequence (needs img/ or img1/ and gt/gt.txt)")
    images = sorted(img_dir.glob("*.jpg"))
    rows = np.loadtxt(gt_file, delimiter=",", ndmin=2)
    gt: dict[int, np.ndarray] = {}
    for frame in np.unique(rows[:, 0]).astype(int):
        r = rows[rows[:, 0] == frame]
        gt[int(frame)] = np.column_stack([r[:, 2], r[:, 3], r[:, 2] + r[:, 4], r[:, 3] + r[:, 5], r[:, 1]])
    return images, gt


def match_count(truth: np.ndarray, found: np.ndarray) -> int:
    """Detections matched one-to-one to ground truth at IoU >= 0.5 (optimal assignment)."""
    from scipy.optimize import linear_sum_assignment

    if not len(truth) or not len(found):
        return 0
    iou = iou_matrix(truth.astype(np.float64), found.astype(np.float64))
    rows, cols = linear_sum_assignment(-iou)
    return int((iou[rows, cols] >= IOU).sum())


def evaluate(
    data: Path,
    model: Path | None,
    input_size: int | None,
    min_score: float,
    fps: float,
    frames: int | None = None,
    gating: MotionGatingConfig | None = None,
) -> dict[str, Any]:
    """Run the detector and the tracker over the sequence; the metrics. With `gating`, the tracker sees what a
    camera with that motion gating (no zones: the whole view) sees: detections only on the frames the gate lets
    through, the tracks held on the others (the detector's precision and recall count every frame)."""
    import motmetrics as mm

    images, gt = load_sequence(data)
    if frames is not None:
        images = images[:frames]
    params = read_model_parameters(MODEL_DIR / "config.pbtxt")
    settings = YoloxSettings.from_parameters(params)
    model = model or _served_file(params)
    if input_size is not None:
        settings = YoloxSettings(input_size, *list(vars(settings).values())[1:])
    detector = OnnxYolox(model, settings, intra_op_threads=1)
    tracker = Tracker()
    gate = None if gating is None else MotionGate(CameraConfig(id="eval", source=str(data), motion_gating=gating))
    gate_counts: dict[str, int] = {}
    held = Detections.empty()
    start = datetime(2009, 1, 1, tzinfo=UTC)
    acc = mm.MOTAccumulator(auto_id=False)
    tp = fp = fn = 0
    for k, path in enumerate(images):
        number = k + 1
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"evaluate: cannot read {path}")
        dets = detector.detect(image)
        people = dets[(dets.class_ids == PERSON) & (dets.scores >= min_score)]
        truth = gt.get(number, np.zeros((0, 5)))
        matched = match_count(truth[:, :4], people.xyxy)
        tp, fp, fn = tp + matched, fp + len(people) - matched, fn + len(truth) - matched
        t = k / fps
        if gate is None:
            tracked = tracker.update(people, t)
        else:
            frame = Frame("eval", k, start + timedelta(seconds=t), t, image, pts_s=t)
            decision = gate.decide(frame, tracker.activity)
            gate_counts[decision.reason] = gate_counts.get(decision.reason, 0) + 1
            if decision.detect:
                held = tracker.update(people, t)
                gate.detected(frame)
            else:
                tracker.hold(t)
            tracked = held
        assert tracked.track_ids is not None
        distances = mm.distances.iou_matrix(_xywh(truth[:, :4]), _xywh(tracked.xyxy), max_iou=1 - IOU)
        acc.update(truth[:, 4].astype(int).tolist(), tracked.track_ids.tolist(), distances, frameid=number)
    summary = mm.metrics.create().compute(
        acc, metrics=["idf1", "mota", "motp", "num_switches", "mostly_tracked", "num_unique_objects"], name="seq"
    )
    row = summary.loc["seq"]
    return {
        "data": data.name,
        "frames": len(images),
        "model": model.name,
        "input_size": settings.input_size,
        "min_score": min_score,
        "fps": fps,
        "gating": None if gating is None else {"decisions": gate_counts},
        "detector": {
            "precision": round(tp / max(tp + fp, 1), 4),
            "recall": round(tp / max(tp + fn, 1), 4),
            "tp": tp,
            "fp": fp,
            "fn": fn,
        },
        "tracking": {
            "idf1": round(float(row["idf1"]), 4),
            "mota": round(float(row["mota"]), 4),
            "motp_iou": round(1.0 - float(row["motp"]), 4),
            "id_switches": int(row["num_switches"]),
            "mostly_tracked": int(row["mostly_tracked"]),
            "gt_objects": int(row["num_unique_objects"]),
        },
    }


def _served_file(params: dict[str, str]) -> Path:
    """The ONNX file Triton's model.py runs (the derived copy when the config names one and it is there); as
    plugin.inference.naive.model_file, repeated so this script also measures checkouts from before it existed."""
    batch = params.get("onnx_batch_file", "")
    if batch and (MODEL_DIR / "1" / batch).is_file():
        return MODEL_DIR / "1" / batch
    return MODEL_DIR / "1" / params.get("onnx_file", "yolox_nano.onnx")


def _xywh(xyxy: np.ndarray) -> np.ndarray:
    boxes = np.asarray(xyxy, np.float64).reshape(-1, 4).copy()
    boxes[:, 2:] -= boxes[:, :2]
    return boxes


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MOT sequence (default: %(default)s)")
    parser.add_argument("--model", type=Path, default=None, help="ONNX detector (default: the file Triton runs)")
    parser.add_argument("--input-size", type=int, default=None, help="model input (default: the config's)")
    parser.add_argument("--min-score", type=float, default=DetectorConfig().min_score, help="default: detector's")
    parser.add_argument("--fps", type=float, default=DEFAULT_FPS, help="the sequence's frame rate (tracker time)")
    parser.add_argument("--frames", type=int, default=None, help="only the first N frames")
    parser.add_argument(
        "--gating", action="store_true", help="the tracker sees only the frames a camera's motion gate lets through"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    gating = MotionGatingConfig() if args.gating else None
    report = evaluate(args.data, args.model, args.input_size, args.min_score, args.fps, args.frames, gating)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    d, t = report["detector"], report["tracking"]
    print(
        f"{report['data']}: {report['frames']} frames, {report['model']} at {report['input_size']}, "
        f"score >= {report['min_score']:g}, tracker at {report['fps']:g} fps"
    )
    if report["gating"] is not None:
        print(f"gating    the camera's default motion gate, decisions {report['gating']['decisions']}")
    print(
        f"detector  precision {d['precision']:.3f}  recall {d['recall']:.3f}  "
        f"(tp {d['tp']}, fp {d['fp']}, fn {d['fn']})"
    )
    print(
        f"tracking  IDF1 {t['idf1']:.3f}  MOTA {t['mota']:.3f}  MOTP(IoU) {t['motp_iou']:.3f}  "
        f"ID switches {t['id_switches']}  mostly tracked {t['mostly_tracked']}/{t['gt_objects']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
