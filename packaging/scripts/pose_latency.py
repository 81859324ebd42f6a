#!/usr/bin/env python
"""Pose model latency through a real tritonserver: milliseconds per person crop at batch 1 and at batch 4.

The person comes from the real detector on one frame of the demo clip (frame 300: one person at the table); the
crops go through the bridge's own PoseClient (crop, request, decode), one request at a time, the way a camera
pipeline asks for the people its pose rules watch. Printed with the machine it ran on, since figures from
machines of this kind differ by about 2x (ENVIRONMENT.md): compare numbers from one run, not across machines.

    .venv/bin/python packaging/scripts/pose_latency.py [--clip FILE] [--frame N] [--requests N] [--json]

It starts the embedded Triton (or uses --triton-url grpc://HOST:PORT).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from plugin.cli.bench.clip import resolve_clip
from plugin.inference.pose import POSE_MODEL, PoseClient
from plugin.inference.server import EmbeddedTriton
from plugin.inference.triton import TritonInferenceClient

DETECTOR = "yolox_nano"
WARMUP = 3


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU model, cores, load when the run started."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return {"cpu": model, "cores": os.cpu_count() or 1, "load_1min": round(load, 2), "python": sys.version.split()[0]}


async def measure(url: str, image: np.ndarray, requests: int) -> dict[str, Any]:
    """ms per crop at batch 1 and batch 4 (per-request wall time through the real server)."""
    detector = TritonInferenceClient(url, DETECTOR)
    try:
        [dets] = await detector.detect([image])
    finally:
        await detector.close()
    people = dets[(dets.class_ids == 0) & (dets.scores > 0.5)]
    if not len(people):
        raise SystemExit("pose_latency: the detector found no person in that frame; pick another with --frame")
    box = people.xyxy[:1]
    pose = PoseClient(url)
    try:
        out: dict[str, Any] = {}
        for batch in (1, 4):
            boxes = np.repeat(box, batch, axis=0)
            for _ in range(WARMUP):
                await pose.estimate(image, boxes)
            per_crop: list[float] = []
            for _ in range(requests):
                t0 = time.perf_counter()
                await pose.estimate(image, boxes)
                per_crop.append((time.perf_counter() - t0) * 1000.0 / batch)
            out[f"batch_{batch}"] = {
                "ms_per_crop_mean": round(statistics.fmean(per_crop), 2),
                "ms_per_crop_p50": round(statistics.median(per_crop), 2),
                "ms_per_crop_p95": round(float(np.percentile(per_crop, 95)), 2),
                "requests": requests,
            }
        return out
    finally:
        await pose.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=None)
    parser.add_argument("--frame", type=int, default=300, help="frame of the clip to take the person from")
    parser.add_argument("--requests", type=int, default=40, help="timed requests per batch size (after warm-up)")
    parser.add_argument("--triton-url", default=None, help="grpc://HOST:PORT; default: start the embedded one")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    clip = resolve_clip(args.clip)
    cap = cv2.VideoCapture(str(clip))
    cap.set(cv2.CAP_PROP_POS_FRAMES, args.frame)
    ok, image = cap.read()
    cap.release()
    if not ok:
        raise SystemExit(f"pose_latency: cannot read frame {args.frame} of {clip}")
    server = None
    if args.triton_url is None:
        server = EmbeddedTriton()
        server.start()
        url = server.grpc_url
    else:
        url = args.triton_url
    try:
        if server is not None:
            server.wait_ready(DETECTOR)
            server.wait_ready(POSE_MODEL)
        results = asyncio.run(measure(url, image, args.requests))
    finally:
        if server is not None:
            server.stop()
    report = {"machine": machine(), "clip": clip.name, "frame": args.frame, "model": POSE_MODEL, **results}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    m = report["machine"]
    print(f"{m['cpu']}, {m['cores']} cores, load {m['load_1min']} (1 min), Python {m['python']}")
    for batch in (1, 4):
        r = results[f"batch_{batch}"]
        print(f"{POSE_MODEL} batch {batch}: {r['ms_per_crop_mean']:.1f} ms per crop (p50 {r['ms_per_crop_p50']:.1f}, "
              f"p95 {r['ms_per_crop_p95']:.1f}, {r['requests']} requests)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
