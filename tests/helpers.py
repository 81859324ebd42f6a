"""Test helpers: running the real CLI, a real HTTP receiver for webhooks, writing configs, the example config, and a
real pose from the demo clip."""

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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from conftest import require

from plugin.inference.pose import PoseClient
from plugin.inference.server import DEFAULT_MODEL_REPOSITORY, EmbeddedTriton
from plugin.inference.triton import TritonInferenceClient

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
