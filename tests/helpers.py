"""Test helpers: running the real CLI, a real HTTP receiver for webhooks, writing configs, the example config, a
stored incident with its snapshot, and a real pose from the demo clip."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from conftest import require

from plugin.incidents.database import Database
from plugin.incidents.evidence import draw_snapshot, write_jpeg
from plugin.inference.pose import PoseClient
from plugin.inference.server import DEFAULT_MODEL_REPOSITORY, EmbeddedTriton
from plugin.inference.triton import TritonInferenceClient
from plugin.rules.base import Measurement, Observation
from plugin.rules.line_crossing import LineCrossingRuleConfig
from plugin.rules.registry import build_rule
from plugin.types import Detections, Incident

HOLD_MAX_S = 120.0  # a held request a test forgot to release does not keep its thread for good


def run_cli(*args: str, timeout: float = 240, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`storesight ARGS...` in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "plugin.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def write_config(path: Path, doc: dict[str, Any]) -> Path:
    """Dump a config document to YAML."""
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 recording POSTs; it can fail the first N requests with a status, and hold
    every request unanswered until `hold` is set (a slow receiver whose slowness does not depend on the clock)."""

    def __init__(
        self,
        fail_first: int = 0,
        fail_status: int = 503,
        hold: threading.Event | None = None,
        port: int = 0,
        status: int = 200,
    ) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.hold = hold
        self.arrived = 0  # requests received, answered or still held
        self.status = status  # answer for requests past fail_first; change it while running
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.lock:
                    outer.arrived += 1
                if outer.hold is not None:
                    outer.hold.wait(HOLD_MAX_S)
                with outer.lock:
                    if outer.fail_first > 0:
                        outer.fail_first -= 1
                        status = outer.fail_status
                    else:
                        status = outer.status
                    if status == 200:
                        outer.requests.append(
                            {
                                "key": self.headers.get("Idempotency-Key"),
                                "signature": self.headers.get("X-StoreSight-Signature"),
                                "raw": body,
                                "body": json.loads(body or b"{}"),
                                "at": time.monotonic(),
                            }
                        )
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Where to POST."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def keys(self) -> list[str]:
        """Idempotency keys of the accepted requests, in arrival order (duplicates kept)."""
        with self.lock:
            return [str(r["key"]) for r in self.requests]

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def small_tmpfs(path: Path, size_kib: int) -> Iterator[Path]:
    """A real file system of `size_kib` KiB mounted at `path` (a tmpfs: root only; fails in CI without it), for a
    full disk: fill it with `fill_up`, free it by deleting the filler."""
    require(None if os.geteuid() == 0 else "mounting a small file system needs root")
    path.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs", str(path)],
                         capture_output=True, text=True)  # fmt: skip
    require(None if out.returncode == 0 else f"cannot mount a tmpfs here: {out.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def fill_up(folder: Path) -> Path:
    """Fill the file system holding `folder` until it has no byte left (ENOSPC); returns the filler to delete."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]
    return filler


EXAMPLE = """
storage: {path: ./storesight-data}
cameras:
  - id: cam1
    source: rtsp://127.0.0.1:8554/store     # or a file path / file:// URL
    zones:
      - id: table
        polygon: [[0.39, 0.67], [0.83, 0.67], [0.83, 1.0], [0.39, 1.0]]
      - id: stockroom-door
        polygon: [[0.0, 0.5], [0.2, 0.5], [0.2, 1.0], [0.0, 1.0]]
rules:
  - id: table-dwell
    type: loitering
    camera: cam1
    zone: table
    min_dwell_s: 8
  - id: stockroom-after-hours
    type: zone_intrusion
    camera: cam1
    zone: stockroom-door
    schedule: {active: ["22:00-06:00"], timezone: Europe/London}
"""


def example() -> dict[str, Any]:
    """A fresh copy of the example config document (two cameras' worth of rules on one camera)."""
    return copy.deepcopy(yaml.safe_load(EXAMPLE))


POSE_FILE = DEFAULT_MODEL_REPOSITORY / "movenet" / "1" / "movenet_lightning.onnx"


def frame_300(clip: Path) -> np.ndarray:
    """Frame 300 of the clip: one person standing at the table."""
    cap = cv2.VideoCapture(str(clip))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 300)
    ok, img = cap.read()
    cap.release()
    assert ok
    return img


async def real_pose(triton: EmbeddedTriton, img: np.ndarray) -> tuple[np.ndarray, np.ndarray, PoseClient]:
    """The person box from the real detector and its keypoints from the real pose model (client left open)."""
    require(None if POSE_FILE.is_file() else f"{POSE_FILE} missing: run `storesight models fetch --from DIR`")
    await asyncio.to_thread(triton.wait_ready, "movenet", 60)
    det = TritonInferenceClient(triton.grpc_url, "yolox_nano")
    try:
        [dets] = await det.detect([img])
    finally:
        await det.close()
    people = dets[(dets.class_ids == 0) & (dets.scores > 0.5)]
    assert len(people) == 1
    pose = PoseClient(triton.grpc_url)
    kps = await pose.estimate(img, people.xyxy)
    return people.xyxy[0], kps[0], pose


# --- synthetic tracks for rule tests: people as feet positions in a 1000 x 500 frame ------------------------------

TRACKS_T0 = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
TRACKS_W, TRACKS_H = 1000, 500


def frame(t_s: float, feet: dict[int, tuple[float, float]], inside: set[int] = frozenset()) -> Observation:  # type: ignore[assignment]
    """Tracks by id with their feet positions in pixels; `inside` marks zone 'z' membership."""
    ids = list(feet)
    boxes = [[x - 20, y - 100, x + 20, y] for x, y in feet.values()]
    dets = Detections.from_arrays(boxes, [0.9] * len(ids), [0] * len(ids), ids)
    mask = np.array([i in inside for i in ids], bool)
    return Observation("cam1", TRACKS_T0 + timedelta(seconds=t_s), dets, {"z": mask}, TRACKS_W, TRACKS_H, ("person",))


def line_rule(**kw: object) -> object:
    """A vertical tripwire at x = 0.5 drawn bottom to top: looking along it, its right is the screen's right."""
    line = [[0.5, 1.0], [0.5, 0.0]]
    base: dict[str, object] = {"id": "door", "type": "line_crossing", "camera": "cam1", "line": line}
    return build_rule(LineCrossingRuleConfig.model_validate(base | kw))


def walk(rule: object, xs: list[float], y: float = 300, tid: int = 1) -> list[Measurement]:
    """Feed one track along x positions, 0.2 s apart; return the counts."""
    out: list[Measurement] = []
    for i, x in enumerate(xs):
        out += [m for m in rule.update(frame(i * 0.2, {tid: (x, y)})) if isinstance(m, Measurement)]  # type: ignore[attr-defined]
    return out


def seed_incident(storage: Path, sinks: tuple[str, ...] = ()) -> Incident:
    """A stored loitering incident with a real JPEG snapshot (its explanation holds markup that must be escaped)."""
    snap = storage / "evidence" / "seed.jpg"
    image = np.full((432, 768, 3), 90, np.uint8)
    zone = np.array([[300, 290], [640, 290], [640, 431], [300, 431]], np.int32)
    write_jpeg(snap, draw_snapshot(image, (380, 10, 540, 400), zone, "#3 table-dwell"))
    start = datetime(2026, 11, 29, 14, 3, 5, tzinfo=UTC)
    incident = Incident(
        id=Incident.new_id(), rule_id="table-dwell", type="loitering", camera="cam1", start=start, state="end",
        seq=1, end=start + timedelta(seconds=23), zone="table", track_ids=(3,), snapshot=str(snap),
        explanation="Person #3 stayed 23 s in zone table (threshold 8 s) on cam1, 14:03:05-14:03:28 <b>x</b>",
    )  # fmt: skip
    database = Database(storage / "storesight.db")
    database.save(incident, list(sinks))
    database.close()
    return incident
