"""Where one camera's time goes: decode, pre-processing, inference (client round trip and Triton's own split),
tracking, rules. Runs the product's own pieces one after the other on the demo clip, single-threaded, so each stage
is timed alone; `storesight bench` measures them together under load.

    .venv/bin/python packaging/scripts/profile_stages.py [--clip FILE] [--frames N] [--analysis-fps F] [--json]

It starts the embedded Triton (or uses --triton-url grpc://HOST:PORT), decodes the clip at its own rate, analyses
every frame the analysis rate keeps, and prints per stage the mean and p95 milliseconds, the cost per camera-second
(decode runs at the clip's rate, the rest at the analysis rate) and the camera count that cost leaves room for on
this machine's cores if nothing else ran: an upper bound, not a sizing (that is what the benchmark is for).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from plugin.cli.bench.clip import resolve_clip
from plugin.cli.bench.trial import BENCH_DWELL_S, BENCH_ZONE
from plugin.inference.server import EmbeddedTriton
from plugin.inference.triton import letterbox
from plugin.pipeline.tracking import Tracker
from plugin.rules.base import Observation
from plugin.rules.loitering import LoiteringRuleConfig
from plugin.rules.registry import build_rule
from plugin.rules.zones import PolygonZone
from plugin.types import Detections

MODEL = "yolox_nano"


def _stats(client: Any) -> dict[str, float]:
    """Triton's cumulative per-model times (ns) and counts: queue, input, infer, output."""
    raw = client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
    inf = raw["inference_stats"]
    out = {k: float(inf[k].get("ns", 0)) for k in ("queue", "compute_input", "compute_infer", "compute_output")}
    out["executions"] = float(raw.get("execution_count", 0))
    out["inferences"] = float(raw.get("inference_count", 0))
    return out


def _timed(fn: Callable[[], Any], into: list[float]) -> Any:
    t0 = time.perf_counter()
    value = fn()
    into.append((time.perf_counter() - t0) * 1000.0)
    return value


def _summary(ms: list[float]) -> dict[str, float]:
    return {"mean": round(float(np.mean(ms)), 3), "p95": round(float(np.percentile(ms, 95)), 3), "n": len(ms)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=None)
    parser.add_argument("--frames", type=int, default=300, help="analysed frames (after warm-up)")
    parser.add_argument("--analysis-fps", type=float, default=5.0)
    parser.add_argument("--triton-url", default=None, help="grpc://HOST:PORT; default: start the embedded one")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import tritonclient.grpc as grpcclient

    clip = resolve_clip(args.clip)
    server = None
    if args.triton_url is None:
        server = EmbeddedTriton()
        server.start()
        server.wait_ready(MODEL)
        url = server.grpc_url
    else:
        url = args.triton_url
    client = grpcclient.InferenceServerClient(url.removeprefix("grpc://"))
    try:
        config = client.get_model_config(MODEL, as_json=True)["config"]
        size = int(config["input"][0]["dims"][0])
        cap = cv2.VideoCapture(str(clip))
        native_fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
        keep_every = max(1, round(native_fps / args.analysis_fps))
        tracker = Tracker()
        zone = PolygonZone(BENCH_ZONE)
        rule = build_rule(LoiteringRuleConfig(
            id="bench-dwell", type="loitering", camera="cam", zone=BENCH_ZONE.id, min_dwell_s=BENCH_DWELL_S,
        ))  # fmt: skip
        times: dict[str, list[float]] = {k: [] for k in ("decode", "letterbox", "infer", "track", "zones_rules")}
        warmup = 10
        analysed = decoded = 0
        before: dict[str, float] | None = None
        while analysed < args.frames + warmup:
            t0 = time.perf_counter()
            ok = cap.grab()
            if ok:
                ok, image = cap.retrieve()
            if not ok:  # loop the clip
                cap.release()
                cap = cv2.VideoCapture(str(clip))
                continue
            decoded += 1
            if analysed >= warmup:
                times["decode"].append((time.perf_counter() - t0) * 1000.0)
            if decoded % keep_every:
                continue
            step: dict[str, list[float]] = {k: [] for k in times}
            boxed, lb = _timed(lambda img=image: letterbox(img, size), step["letterbox"])
            inp = grpcclient.InferInput("images_u8", [1, size, size, 3], "UINT8")
            inp.set_data_from_numpy(boxed[None])
            outs = [grpcclient.InferRequestedOutput(n) for n in ("boxes", "scores", "classes", "count")]
            result = _timed(lambda inp=inp, outs=outs: client.infer(MODEL, [inp], outputs=outs), step["infer"])
            n = int(result.as_numpy("count").reshape(-1)[0])
            dets = Detections.from_arrays(
                lb.to_frame(result.as_numpy("boxes")[0, :n]), result.as_numpy("scores")[0, :n],
                result.as_numpy("classes")[0, :n],
            )  # fmt: skip
            people = dets[(dets.class_ids == 0) & (dets.scores >= 0.35)]
            t = analysed / args.analysis_fps
            tracked = _timed(lambda p=people, t=t: tracker.update(p, t), step["track"])
            h, w = image.shape[:2]

            def rules(tracked: Detections = tracked, t: float = t, w: int = w, h: int = h) -> None:
                inside = {BENCH_ZONE.id: zone.contains(tracked, w, h)}
                rule.update(Observation("cam", datetime.fromtimestamp(1.8e9 + t, UTC), tracked, inside, w, h))

            _timed(rules, step["zones_rules"])
            for k, v in step.items():
                times[k].extend(v)
            analysed += 1
            if analysed == warmup:  # measure from here: the model and the caches are warm
                before = _stats(client)
                for v in times.values():
                    v.clear()
        after = _stats(client)
    finally:
        client.close()
        if server is not None:
            server.stop()
    assert before is not None
    execs = max(1.0, after["executions"] - before["executions"])
    server_ms = {k: (after[k] - before[k]) / 1e6 / execs for k in ("queue", "compute_input", "compute_infer",
                                                                    "compute_output")}  # fmt: skip
    stages = {k: _summary(v) for k, v in times.items()}
    per_camera_s = (
        stages["decode"]["mean"] * native_fps
        + sum(stages[k]["mean"] for k in ("letterbox", "track", "zones_rules")) * args.analysis_fps
        # the round trip less Triton's queue: server compute plus transport and (de)serialisation on both sides
        + (stages["infer"]["mean"] - server_ms["queue"]) * args.analysis_fps
    )
    cores = os.cpu_count() or 1
    report = {
        "clip": clip.name,
        "native_fps": native_fps,
        "analysis_fps": args.analysis_fps,
        "frames": args.frames,
        "stage_ms": stages,
        "triton_server_ms_per_execution": {k: round(v, 3) for k, v in server_ms.items()},
        "cpu_ms_per_camera_second": round(per_camera_s, 1),
        "cores": cores,
        "upper_bound_cameras": int(cores * 1000.0 // per_camera_s) if per_camera_s > 0 else None,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{clip.name}: {args.frames} analysed frames at {args.analysis_fps:g} fps of a {native_fps:g} fps clip")
    print(f"{'stage':<28}{'mean ms':>10}{'p95 ms':>10}")
    for name, s in stages.items():
        print(f"{name:<28}{s['mean']:>10.2f}{s['p95']:>10.2f}")
    for name, v in server_ms.items():
        print(f"{'  triton ' + name:<28}{v:>10.2f}")
    print(f"CPU per camera-second: {per_camera_s:.0f} ms (decode x{native_fps:g}, the rest x{args.analysis_fps:g});")
    print(f"{cores} cores leave room for at most {report['upper_bound_cameras']} cameras if nothing else ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
