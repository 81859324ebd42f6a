"""Where one camera's time goes, per analysed frame: decode, pre-processing, inference (client round trip and
Triton's own split), tracking, rules; then the product's whole pipeline on the same frames, as CPU per analysed
frame of the bridge and of Triton. `storesight bench` measures them together under load.

    .venv/bin/python packaging/scripts/profile_stages.py [--clip FILE] [--frames N] [--analysis-fps F]
        [--decoder pyav|opencv] [--gating] [--triton-url grpc://HOST:PORT] [--json]

It starts the embedded Triton (or uses --triton-url), reads the clip with the product's own camera source (the
decoder a camera config would use), analyses every frame the analysis rate keeps, and reports:
  - stages: each timed alone, one after the other on one thread: wall ms (mean, p95) and CPU ms of the thread
    that ran it. Decode is the decode thread's CPU over the run per analysed frame (it decodes every frame the
    analysis needs, the dropped ones included). CPU time, unlike wall time, hardly moves when other processes
    compete for the cores, so two runs on a busy machine still compare.
  - pipeline: the product's CameraPipeline (motion gate, the shared-memory Triton client, tracker, zones, a
    loitering rule) on the same clip, one camera, frames as fast as it takes them: the bridge process's CPU per
    analysed frame (every thread: decode, event loop, workers, gRPC) and Triton's (its process tree). Motion
    gating is off unless --gating, so every frame pays the detector, as in a busy scene.
The upper bound is the cores' milliseconds over one camera-second's CPU (bridge + Triton): room if nothing else ran.
"""

from __future__ import annotations

import os

# As plugin/__init__.py does, before numpy loads: OpenBLAS's idle worker threads spin after each of the tracker's
# tiny matrix products. This script imports numpy before plugin, so without this line the bridge's CPU per frame
# measured here was 21.7 ms instead of 7.4 ms, 14 ms of it in spinning BLAS threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from plugin.cli.bench.clip import resolve_clip
from plugin.cli.bench.trial import BENCH_DWELL_S, BENCH_ZONE
from plugin.config.cameras import CameraConfig, MotionGatingConfig
from plugin.config.service import DetectorConfig
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.explain import Explainer
from plugin.incidents.manager import IncidentManager
from plugin.inference.server import EmbeddedTriton
from plugin.inference.triton import TritonInferenceClient, letterbox
from plugin.metrics import Metrics
from plugin.pipeline.camera import CameraPipeline
from plugin.pipeline.motion import small_gray
from plugin.pipeline.tracking import Tracker
from plugin.rules.base import Observation
from plugin.rules.loitering import LoiteringRuleConfig
from plugin.rules.registry import build_rule
from plugin.rules.zones import PolygonZone
from plugin.types import Detections

MODEL = "yolox_nano"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def decoders() -> dict[str, Any]:
    """The camera sources by decoder name (only OpenCV before PyAV came)."""
    try:
        from adapters.cameras.registry import DECODERS
    except ImportError:
        from adapters.cameras.opencv import OpenCVSource

        return {"opencv": OpenCVSource}
    return dict(DECODERS)


def _tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) of a process and its descendants (Triton's python-backend stubs)."""
    parents: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
        stats[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, 0.0)
        todo.extend(parents.get(pid, []))
    return total


def _self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _thread_cpu_s(thread: threading.Thread | None) -> float:
    if thread is None or thread.ident is None:
        return 0.0
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (OSError, ProcessLookupError):  # the thread has ended
        return 0.0


def _stats(client: Any) -> dict[str, float]:
    """Triton's cumulative per-model times (ns) and counts: queue, input, infer, output."""
    raw = client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
    inf = raw["inference_stats"]
    out = {k: float(inf[k].get("ns", 0)) for k in ("queue", "compute_input", "compute_infer", "compute_output")}
    out["executions"] = float(raw.get("execution_count", 0))
    return out


def _summary(wall: list[float], cpu: list[float]) -> dict[str, float]:
    return {
        "mean": round(float(np.mean(wall)), 3),
        "p95": round(float(np.percentile(wall, 95)), 3),
        "cpu_mean": round(float(np.mean(cpu)), 3),
        "n": len(wall),
    }


class _Clock:
    """Wall and this thread's CPU milliseconds of each call, per stage."""

    def __init__(self, names: list[str]) -> None:
        self.wall: dict[str, list[float]] = {k: [] for k in names}
        self.cpu: dict[str, list[float]] = {k: [] for k in names}

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        c0, t0 = time.thread_time(), time.perf_counter()
        value = fn()
        self.wall[name].append((time.perf_counter() - t0) * 1000.0)
        self.cpu[name].append((time.thread_time() - c0) * 1000.0)
        return value

    def clear(self) -> None:
        for v in (*self.wall.values(), *self.cpu.values()):
            v.clear()


def _source(decoder: str, clip: Path, fps: float) -> Any:
    return decoders()[decoder]("cam", str(clip), fps, start_time=datetime(2026, 1, 1, tzinfo=UTC))


async def stages(url: str, clip: Path, frames: int, fps: float, decoder: str) -> dict[str, Any]:
    """Each stage alone, one after the other on this thread, on frames from the product's source."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url.removeprefix("grpc://"))
    config = client.get_model_config(MODEL, as_json=True)["config"]
    size = int(config["input"][0]["dims"][0])
    tracker = Tracker()
    zone = PolygonZone(BENCH_ZONE)
    rule = build_rule(LoiteringRuleConfig(
        id="bench-dwell", type="loitering", camera="cam", zone=BENCH_ZONE.id, min_dwell_s=BENCH_DWELL_S,
    ))  # fmt: skip
    clock = _Clock(["letterbox", "infer", "gate", "track", "zones_rules"])
    warmup, analysed = 10, 0
    before: dict[str, float] = {}
    decode_cpu0 = 0.0
    source = _source(decoder, clip, fps)
    frames_iter = source.frames()
    try:
        async for frame in frames_iter:
            image = frame.image
            boxed, lb = clock("letterbox", lambda img=image: letterbox(img, size))
            inp = grpcclient.InferInput("images_u8", [1, size, size, 3], "UINT8")
            inp.set_data_from_numpy(boxed[None])
            outs = [grpcclient.InferRequestedOutput(n) for n in ("boxes", "scores", "classes", "count")]
            result = clock("infer", lambda inp=inp, outs=outs: client.infer(MODEL, [inp], outputs=outs))
            clock("gate", lambda img=image: small_gray(img))
            n = int(result.as_numpy("count").reshape(-1)[0])
            dets = Detections.from_arrays(
                lb.to_frame(result.as_numpy("boxes")[0, :n]), result.as_numpy("scores")[0, :n],
                result.as_numpy("classes")[0, :n],
            )  # fmt: skip
            people = dets[(dets.class_ids == 0) & (dets.scores >= 0.35)]
            t = analysed / fps
            tracked = clock("track", lambda p=people, t=t: tracker.update(p, t))
            h, w = image.shape[:2]

            def rules(tracked: Detections = tracked, t: float = t, w: int = w, h: int = h) -> None:
                inside = {BENCH_ZONE.id: zone.contains(tracked, w, h)}
                rule.update(Observation("cam", datetime.fromtimestamp(1.8e9 + t, UTC), tracked, inside, w, h))

            clock("zones_rules", rules)
            analysed += 1
            if analysed == warmup:  # measure from here: the model and the caches are warm
                before = _stats(client)
                decode_cpu0 = _thread_cpu_s(source._thread)
                clock.clear()
            if analysed == frames + warmup:
                break
        decode_cpu = _thread_cpu_s(source._thread) - decode_cpu0
        after = _stats(client)
    finally:
        await frames_iter.aclose()
        await source.close()
        client.close()
    if analysed < frames + warmup:
        raise SystemExit(f"profile_stages: the clip gave only {analysed} analysed frames; use fewer --frames")
    execs = max(1.0, after["executions"] - before["executions"])
    server_ms = {k: round((after[k] - before[k]) / 1e6 / execs, 3) for k in after if k != "executions"}
    out = {k: _summary(clock.wall[k], clock.cpu[k]) for k in clock.wall}
    decode_ms = 1000.0 * decode_cpu / frames
    out = {"decode": {"mean": round(decode_ms, 3), "p95": None, "cpu_mean": round(decode_ms, 3), "n": frames}, **out}
    return {"stage_ms": out, "triton_server_ms_per_execution": server_ms}


async def pipeline(url: str, clip: Path, frames: int, fps: float, decoder: str, gating: bool, triton_pid: int | None
                   ) -> dict[str, Any]:  # fmt: skip
    """The product's CameraPipeline on the clip: CPU of the bridge and of Triton per analysed frame."""
    from plugin.cli.bench.monitor import _thread_cpu

    with tempfile.TemporaryDirectory(prefix="storesight-profile-") as tmp:
        db = await asyncio.to_thread(AsyncDatabase, Path(tmp) / "profile.db")
        client = TritonInferenceClient(url, MODEL)
        try:
            info = await client.wait_ready(60)
            cam = CameraConfig(
                id="cam", source=str(clip), fps=fps, zones=[BENCH_ZONE],
                motion_gating=MotionGatingConfig(enabled=gating),
            )  # fmt: skip
            rules = [build_rule(LoiteringRuleConfig(
                id="bench-dwell", type="loitering", camera="cam", zone=BENCH_ZONE.id, min_dwell_s=BENCH_DWELL_S,
            ))]  # fmt: skip
            incidents = IncidentManager(db, Path(tmp) / "evidence", Explainer("UTC"), [])
            source = _source(decoder, clip, fps)
            pipe = CameraPipeline(cam, source, client, DetectorConfig(), rules, incidents, Metrics())
            pipe.resolve_classes(info.class_names)
            warmup, analysed = 10, 0
            marks: dict[str, Any] = {}
            frames_iter = source.frames()
            try:
                async for frame in frames_iter:
                    await pipe.process(frame)
                    analysed += 1
                    if analysed in (warmup, warmup + frames):
                        mark = {"self": _self_cpu_s(), "wall": time.monotonic(), "threads": _thread_cpu(),
                                "triton": _tree_cpu_s(triton_pid) if triton_pid else None,
                                "detected": pipe.status.frames_detected}  # fmt: skip
                        marks["before" if analysed == warmup else "after"] = mark
                    if analysed == warmup + frames:
                        break
            finally:
                await frames_iter.aclose()
                await source.close()
        finally:
            await client.close()
            await db.close()
    if "after" not in marks:
        raise SystemExit(f"profile_stages: the clip gave only {analysed} analysed frames; use fewer --frames")
    b, a = marks["before"], marks["after"]
    threads = {g: round(1000.0 * (a["threads"][g] - b["threads"].get(g, 0.0)) / frames, 3) for g in a["threads"]}
    detected = a["detected"] - b["detected"]
    return {
        "gating": gating,
        "detected_share": round(detected / frames, 3),
        "bridge_cpu_ms_per_frame": round(1000.0 * (a["self"] - b["self"]) / frames, 3),
        "bridge_cpu_ms_by_thread": dict(sorted(threads.items(), key=lambda kv: -kv[1])),
        "triton_cpu_ms_per_frame": round(1000.0 * (a["triton"] - b["triton"]) / frames, 3) if triton_pid else None,
        "frames_per_s": round(frames / (a["wall"] - b["wall"]), 1),
    }


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=None)
    parser.add_argument("--frames", type=int, default=300, help="analysed frames (after warm-up)")
    parser.add_argument("--analysis-fps", type=float, default=5.0)
    parser.add_argument("--decoder", choices=sorted(decoders()), default=sorted(decoders())[-1])
    parser.add_argument("--gating", action="store_true", help="pipeline with motion gating (default: every frame)")
    parser.add_argument("--triton-url", default=None, help="grpc://HOST:PORT; default: start the embedded one")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:  # the bridge's malloc settings, as `storesight` sets them (absent from checkouts before round 2)
        from plugin.cli.main import tune_malloc

        tune_malloc()
    except ImportError:
        pass

    clip = resolve_clip(args.clip)
    server = None
    if args.triton_url is None:
        server = EmbeddedTriton()
        server.start()
        server.wait_ready(MODEL)
        url = server.grpc_url
    else:
        url = args.triton_url
    triton_pid = server.process.pid if server is not None and server.process is not None else None
    try:
        staged = asyncio.run(stages(url, clip, args.frames, args.analysis_fps, args.decoder))
        piped = asyncio.run(pipeline(url, clip, args.frames, args.analysis_fps, args.decoder, args.gating, triton_pid))
    finally:
        if server is not None:
            server.stop()
    stage_ms = staged["stage_ms"]
    server_ms = staged["triton_server_ms_per_execution"]
    # one camera-second of CPU: the pipeline's bridge CPU per frame, plus Triton's (its own measure when embedded,
    # else its compute split), times the analysis rate
    triton_ms = piped["triton_cpu_ms_per_frame"]
    if triton_ms is None:
        triton_ms = sum(server_ms[k] for k in ("compute_input", "compute_infer", "compute_output"))
    per_camera_s = (piped["bridge_cpu_ms_per_frame"] + triton_ms) * args.analysis_fps
    cores = os.cpu_count() or 1
    report = {
        "clip": clip.name,
        "decoder": args.decoder,
        "analysis_fps": args.analysis_fps,
        "frames": args.frames,
        "stage_ms": stage_ms,
        "triton_server_ms_per_execution": server_ms,
        "pipeline": piped,
        "cpu_ms_per_camera_second": round(per_camera_s, 1),
        "cores": cores,
        "upper_bound_cameras": int(cores * 1000.0 // per_camera_s) if per_camera_s > 0 else None,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{clip.name}: {args.frames} analysed frames at {args.analysis_fps:g} fps, decoded with {args.decoder}")
    print(f"{'stage (alone)':<28}{'wall mean':>10}{'wall p95':>10}{'CPU mean':>10}  (ms per analysed frame)")
    for name, s in stage_ms.items():
        p95 = "-" if s["p95"] is None else f"{s['p95']:.2f}"
        print(f"{name:<28}{s['mean']:>10.2f}{p95:>10}{s['cpu_mean']:>10.2f}")
    for name, v in server_ms.items():
        print(f"{'  triton ' + name:<28}{v:>10.2f}")
    gate = "with motion gating" if piped["gating"] else "every frame detected"
    print(
        f"pipeline ({gate}, {piped['detected_share']:.0%} detected): bridge CPU {piped['bridge_cpu_ms_per_frame']:.2f} "
        f"ms per analysed frame, Triton CPU {_ms(piped['triton_cpu_ms_per_frame'])} ms, {piped['frames_per_s']} "
        "frames/s"
    )
    print("  bridge CPU ms by thread: " + ", ".join(f"{g} {v:g}" for g, v in piped["bridge_cpu_ms_by_thread"].items()))
    print(f"CPU per camera-second: {per_camera_s:.0f} ms (bridge + Triton, x{args.analysis_fps:g});")
    print(f"{cores} cores leave room for at most {report['upper_bound_cameras']} cameras if nothing else ran")
    return 0


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


if __name__ == "__main__":
    sys.exit(main())
