"""The machine's detector speed, printed with every benchmark so results from two machines (or two hours) compare.

Machines of one kind differ by 2x (Triton compute 8.3 vs 16.8 ms per image on two "identical" 2-core VMs), and so
do the cameras they hold. Detector-only frames/s through Triton at concurrency 1 and 8 and in-process onnxruntime
frames/s say how fast this machine's detector is: dividing cameras by them gives cameras per detector frame/s,
which carries over. Triton is measured before and after the trials; a change between the two says the machine's
speed moved during the run (a noisy neighbour), and the run is worth repeating.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from plugin.inference.naive import OnnxYolox
from plugin.inference.triton import TritonInferenceClient, letterbox
from plugin.types import ImageArray

CALIBRATION_S = 4.0


async def triton_fps(client: TritonInferenceClient, image: ImageArray, concurrency: int, seconds: float) -> float:
    """Frames per second through Triton with `concurrency` requests in flight, one letterboxed frame each."""
    assert client.info is not None
    boxed, _ = letterbox(image, client.info.input_size)  # already the model's size: the bridge only copies it
    done = 0
    end = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < end:
            await client.detect([boxed])
            done += 1

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return round(done / (time.monotonic() - t0), 1)


async def calibrate_triton(client: TritonInferenceClient, image: ImageArray, seconds: float = CALIBRATION_S
                           ) -> dict[str, float]:  # fmt: skip
    """Detector-only frames/s through Triton at concurrency 1 and 8."""
    await client.detect([image])  # warm
    return {
        "triton_fps_c1": await triton_fps(client, image, 1, seconds),
        "triton_fps_c8": await triton_fps(client, image, 8, seconds),
    }


def onnxruntime_fps(detector: OnnxYolox, image: ImageArray, seconds: float = CALIBRATION_S) -> float:
    """In-process onnxruntime forward passes per second, batch 1, its default threads (blocking)."""
    boxed, _ = letterbox(image, detector.settings.input_size)
    x = boxed.transpose(2, 0, 1)[None].astype(np.float32)
    feed = {detector.input_name: x}
    detector.session.run(None, feed)
    done = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        detector.session.run(None, feed)
        done += 1
    return round(done / (time.monotonic() - t0), 1)


def model_identity(onnx_file: Path, input_size: int) -> dict[str, Any]:
    """Which model ran: file name, input size and the first 12 hex digits of its sha256."""
    digest = hashlib.sha256(onnx_file.read_bytes()).hexdigest()[:12] if onnx_file.is_file() else None
    return {"file": onnx_file.name, "input_size": input_size, "sha256": digest}


def cpu_facts() -> dict[str, Any]:
    """What /proc and the environment say about the CPU and the thread settings that change the numbers."""
    facts: dict[str, Any] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "cpu MHz" and "cpu_mhz" not in facts:
            facts["cpu_mhz"] = float(value)
        elif key == "flags" and "vnni" not in facts:
            flags = value.split()
            facts["vnni"] = "avx512_vnni" in flags or "avx_vnni" in flags
            facts["amx_int8"] = "amx_int8" in flags
            facts["hypervisor"] = "hypervisor" in flags
    facts["load_1min"] = round(os.getloadavg()[0], 2)
    facts["thread_env"] = {
        k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ
    }
    return facts
