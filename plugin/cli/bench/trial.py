"""`storesight bench`: how many cameras this machine analyses at the target rate, measured against a naive baseline.

One trial runs N cameras for T seconds through the product's own pieces: camera sources (PyAV, or --decoder opencv;
each camera served by the real GStreamer RTSP server at the clip's native rate, or realtime-paced files), one
TritonInferenceClient shared by all cameras, the tracker, a loitering rule and the incident store. The naive
baseline runs the same sources, clip, pipeline and rules with one worker thread per camera calling onnxruntime
in-process, one image at a time, on every frame (no motion gating), with the detector as published: the export
`models fetch` downloads, at its own 416 px (`--baseline-model served`: the file and size Triton serves, 352 px).

Capture-to-result latency runs from `Frame.monotonic` (the frame decoded and handed over) to the end of
`CameraPipeline.process` for that frame (detections, tracking, rules). It includes the time a frame waits for its
camera's previous one to finish. Incident latency runs from the frame on which the loitering threshold was crossed
to the incident stored (snapshot written, SQLite row committed).

Everything is measured around the pipeline rather than inside it: the detector is wrapped to time its round trip,
and the incident manager's `on_saved` callback marks the moment an incident is stored.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from adapters.cameras.registry import DECODERS
from plugin.cli.bench.clip import ClipInfo, staggered_clips
from plugin.cli.bench.monitor import ResourceMonitor
from plugin.cli.bench.rtsp import Children, RtspCameras
from plugin.config.cameras import CameraConfig, Decoder, MotionGatingConfig, ZoneConfig
from plugin.config.service import DetectorConfig
from plugin.errors import InferenceUnavailable, SourceError
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.explain import Explainer
from plugin.incidents.manager import IncidentManager
from plugin.inference.naive import OnnxYolox, YoloxSettings, model_file, read_model_parameters
from plugin.inference.repository import default_model_repository
from plugin.inference.triton import TritonInferenceClient
from plugin.metrics import Metrics
from plugin.pipeline.camera import CameraPipeline
from plugin.protocols import InferenceClient
from plugin.rules.loitering import LoiteringRuleConfig
from plugin.rules.registry import build_rule
from plugin.types import Detections, Frame, ImageArray, Incident

log = logging.getLogger(__name__)

Mode = Literal["triton", "naive"]
# what the naive baseline runs: the detector as published (the export `models fetch` downloads, at its own input
# size: what an integrator who takes the model as it comes runs), or the file and size the embedded Triton serves
BaselineModel = Literal["published", "served"]
SourceKind = Literal["rtsp", "file"]


# The demo clip's table, where each of its six people stands for a while: a loitering rule there gives incidents.
BENCH_ZONE = ZoneConfig(id="table", polygon=[(0.39, 0.67), (0.83, 0.67), (0.83, 1.0), (0.39, 1.0)])
# Short, so a run of tens of seconds sees incidents; no cooldown, so each person standing there counts.
BENCH_DWELL_S = 2.0

# With the OpenCV decoder, RTSP clients see their first frame ~2.8 s after connecting (FFmpeg probing the stream) and
# OpenCV's FFmpeg backend opens one stream at a time per process, so N cameras take ~2.8 N s to all start (PyAV opens
# them all at once in about a second). A camera silent past this is a setup problem, not a measurement.
FIRST_FRAME_BASE_S = 20.0
FIRST_FRAME_PER_CAMERA_S = 4.0


def first_frame_timeout(cameras: int) -> float:
    """How long `cameras` cameras may take until each delivered its first frame."""
    return FIRST_FRAME_BASE_S + FIRST_FRAME_PER_CAMERA_S * cameras


# After every camera delivered: the tracker confirms tracks, Triton and onnxruntime finish their first allocations.
WARMUP_S = 3.0
# After the window: frames still in flight get this long to finish (their latency counts), then are cancelled.
DRAIN_TIMEOUT_S = 10.0
# "Holds the target": every camera at 95% of the target rate (a window edge costs a frame), p95 latency under
# 1 s, and the stream read at its native rate to within 1 s of media over the window (no growing backlog).
HOLD_FPS_SHARE = 0.95
LATENCY_LIMIT_MS = 1000.0
BACKLOG_LIMIT_S = 1.0


@dataclass(frozen=True)
class BenchOptions:
    """What the user asked for."""

    cameras: int = 4
    analysis_fps: float = 5.0
    duration_s: float = 30.0
    clip: Path | None = None
    source: SourceKind = "rtsp"
    triton_url: str | None = None
    model: str = "yolox_nano"
    find_max: bool = False
    max_time_s: float = 900.0
    max_cameras: int = 64
    baseline: bool = True
    baseline_model: BaselineModel = "published"
    # each camera starts the clip at its own point (real cameras do not all see people at the same moment); off,
    # every camera shows the same second at once and motion gating's savings come in bursts all cameras share
    stagger: bool = True
    rules: bool = True
    repeats: int = 3  # --find-max: trials that decide each count next to the boundary (majority)
    decoder: Decoder = "pyav"
    calibrate: bool = True


# --- detectors -----------------------------------------------------------------------------------------------


class NaiveClient:
    """The baseline's detector for one camera: its own worker thread, onnxruntime in-process, one image a call."""

    def __init__(self, detector: OnnxYolox, camera_id: str) -> None:
        self.detector = detector
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"naive-{camera_id}")

    async def ready(self) -> bool:
        """Always ready: the model is in this process."""
        return True

    async def detect(self, images: Sequence[ImageArray]) -> list[Detections]:
        """Detect on the camera's worker thread, never on the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: [self.detector.detect(i) for i in images])

    async def close(self) -> None:
        """Stop the worker thread once its current image is done."""
        await asyncio.to_thread(self._executor.shutdown, True, cancel_futures=True)


class TimedClient:
    """Delegates to a (possibly shared) client and times each round trip: the benchmark's window on detection."""

    def __init__(self, inner: InferenceClient) -> None:
        self.inner = inner
        self.last_s = 0.0

    async def ready(self) -> bool:
        """The inner client's readiness."""
        return await self.inner.ready()

    async def detect(self, images: Sequence[ImageArray]) -> list[Detections]:
        """The inner client's detections, timed."""
        t0 = time.perf_counter()
        try:
            return await self.inner.detect(images)
        finally:
            self.last_s = time.perf_counter() - t0

    async def close(self) -> None:
        """Nothing: the inner client belongs to the caller."""


# --- one trial -----------------------------------------------------------------------------------------------


@dataclass
class _FrameRecord:
    captured: float  # Frame.monotonic
    started: float  # the pipeline took it
    done: float  # detections, tracking and rules done
    detect_s: float  # 0 when motion gating skipped the detector
    gated: bool = False  # motion gating skipped the detector on this frame


@dataclass
class Recorder:
    """Per-frame and per-incident timestamps of one trial; filtered to the measurement window afterwards."""

    stop_at: float = math.inf
    first_frame: dict[str, float] = field(default_factory=dict)
    frames: dict[str, list[_FrameRecord]] = field(default_factory=dict)
    current: dict[str, Frame] = field(default_factory=dict)
    incidents: list[tuple[float, float]] = field(default_factory=list)

    def on_incident(self, incident: Incident) -> None:
        """IncidentManager's on_saved: an incident opened on the frame its camera is processing now."""
        frame = self.current.get(incident.camera)
        if incident.state == "start" and frame is not None:
            self.incidents.append((frame.monotonic, time.monotonic()))


@dataclass
class _Trial:
    mode: Mode
    cameras: int
    pipelines: list[CameraPipeline]
    timers: list[TimedClient]
    recorder: Recorder = field(default_factory=Recorder)
    error: str | None = None  # detection failed (requests timed out): the window ends there
    late_start: str | None = None  # some cameras never started: measured all the same, cannot hold


async def _camera_loop(trial: _Trial, index: int) -> None:
    pipeline, timer, rec = trial.pipelines[index], trial.timers[index], trial.recorder
    cam = pipeline.camera.id
    records = rec.frames.setdefault(cam, [])
    frames = pipeline.source.frames()
    try:
        async for frame in frames:
            if frame.monotonic >= rec.stop_at:
                return
            started = time.monotonic()
            rec.first_frame.setdefault(cam, started)
            rec.current[cam] = frame
            detected_before = pipeline.status.frames_detected
            await pipeline.process(frame)
            gated = pipeline.status.frames_detected == detected_before
            detect_s = 0.0 if gated else timer.last_s
            records.append(_FrameRecord(frame.monotonic, started, time.monotonic(), detect_s, gated))
            del rec.current[cam]
    except InferenceUnavailable as exc:
        # overload shows as requests timing out: that trial did not hold, the search goes on
        trial.error = trial.error or f"{cam}: {exc}"
    finally:
        aclose = getattr(frames, "aclose", None)  # an async generator: run its clean-up now, not at GC
        if aclose is not None:
            await aclose()


def _pct(values: Sequence[float], q: float) -> float | None:
    return None if not values else round(float(np.percentile(values, q)), 1)


def _mean_ms(values: Sequence[float]) -> float | None:
    return None if not values else round(1000.0 * statistics.fmean(values), 1)


@dataclass(frozen=True)
class _Counters:
    read: int
    dropped: int


def _counters(trial: _Trial) -> dict[str, _Counters]:
    return {
        p.camera.id: _Counters(p.source.status.frames_read, p.source.status.frames_dropped) for p in trial.pipelines
    }


def _summarise(
    trial: _Trial,
    opts: BenchOptions,
    clip: ClipInfo,
    window: tuple[float, float],
    before: dict[str, _Counters],
    after: dict[str, _Counters],
    monitor: ResourceMonitor,
) -> dict[str, Any]:
    t0, t1 = window
    span = max(t1 - t0, 1e-3)  # a trial cut short by an error still gets a summary
    rec = trial.recorder
    fps, latencies, waits, detects, rests = [], [], [], [], []
    frames = gated = 0
    for p in trial.pipelines:
        done = [r for r in rec.frames.get(p.camera.id, []) if t0 <= r.captured < t1]
        fps.append(len(done) / span)
        frames += len(done)
        gated += sum(1 for r in done if r.gated)
        latencies += [1000.0 * (r.done - r.captured) for r in done]
        waits += [r.started - r.captured for r in done]
        detects += [r.detect_s for r in done if not r.gated]  # the detector's round trip, where it ran
        rests += [r.done - r.started - r.detect_s for r in done]
    # frames of the window still unfinished when the drain ended: at least this late
    now = time.monotonic()
    latencies += [1000.0 * (now - f.monotonic) for f in rec.current.values() if t0 <= f.monotonic < t1]
    read_fps = [(after[c].read - before[c].read) / span for c in before]
    backlog = max((span - (after[c].read - before[c].read) / clip.fps for c in before), default=0.0)
    incident_ms = [1000.0 * (stored - captured) for captured, stored in rec.incidents if t0 <= captured < t1]
    target = opts.analysis_fps
    at_target = sum(1 for f in fps if f >= HOLD_FPS_SHARE * target)
    p95 = _pct(latencies, 95)
    held = (
        trial.error is None
        and trial.late_start is None
        and at_target == trial.cameras
        and p95 is not None
        and p95 < LATENCY_LIMIT_MS
        and backlog <= BACKLOG_LIMIT_S
    )
    return {
        "mode": trial.mode,
        "cameras": trial.cameras,
        "target_fps": target,
        "duration_s": round(span, 1),
        "achieved_fps": {"min": round(min(fps), 2), "median": round(statistics.median(fps), 2)},
        "cameras_at_target": at_target,
        "dropped_frames": sum(after[c].dropped - before[c].dropped for c in before),
        "source_fps": {"min": round(min(read_fps), 2), "median": round(statistics.median(read_fps), 2)},
        "backlog_s": round(max(backlog, 0.0), 2),
        "latency_ms": {"p50": _pct(latencies, 50), "p95": p95, "p99": _pct(latencies, 99)},
        "incident_latency_ms": {"p50": _pct(incident_ms, 50), "p95": _pct(incident_ms, 95)},
        "incidents": len(incident_ms),
        "stage_ms": {"queued": _mean_ms(waits), "detect": _mean_ms(detects), "track_rules": _mean_ms(rests)},
        # share of the window's analysed frames on which motion gating skipped the detector (naive: never gated)
        "gated_share": round(gated / frames, 3) if frames else None,
        "cpu_percent": monitor.cpu_percent(),
        "storesight_cpu_by_thread": monitor.cpu_by_thread(),
        "rss_mb": monitor.rss_mb(),
        "held": held,
        "error": trial.error or trial.late_start,
    }


@dataclass
class BenchEnv:
    """What lives for the whole benchmark: the clip, Triton, the naive detector, the child processes."""

    opts: BenchOptions
    clip: ClipInfo
    workdir: Path
    children: Children
    client: TritonInferenceClient
    class_names: tuple[str, ...]
    triton_pid: int | None
    naive_settings: YoloxSettings | None
    naive: OnnxYolox | None = None
    period_s: float = 0.0  # one play of the clip (the served clip may be several joined)
    trials_run: int = 0
    progress: list[str] = field(default_factory=list)


def naive_model_file(model: str, which: BaselineModel) -> Path:
    """The ONNX file the baseline runs: `served`, the one the embedded Triton's model.py runs (the derived copy when
    it is there); `published`, the file as fetched (the config's onnx_file)."""
    model_dir = default_model_repository() / model
    params = read_model_parameters(model_dir / "config.pbtxt")
    if which == "served":
        return model_file(model_dir / "1", params)
    return model_dir / "1" / params.get("onnx_file", "yolox_nano.onnx")


def _load_naive(env: BenchEnv) -> OnnxYolox:
    """The baseline's session, loaded only when its first trial starts so Triton trials' memory excludes it."""
    assert env.naive_settings is not None
    which = env.opts.baseline_model
    detector = OnnxYolox(naive_model_file(env.opts.model, which), env.naive_settings, own_size=which == "published")
    detector.detect(np.zeros((env.clip.height, env.clip.width, 3), np.uint8))  # first-run allocations
    return detector


def _camera_config(env: BenchEnv, index: int, source: str, mode: Mode) -> CameraConfig:
    return CameraConfig(
        id=f"cam{index:02d}",
        source=source,
        fps=env.opts.analysis_fps,
        realtime=True,
        zones=[BENCH_ZONE],
        # StoreSight gates detection as a camera config does by default; the naive baseline detects every frame
        motion_gating=MotionGatingConfig(enabled=mode == "triton"),
        decoder=env.opts.decoder,
    )


def _rules(env: BenchEnv, camera_id: str) -> list[Any]:
    if not env.opts.rules:
        return []
    config = LoiteringRuleConfig(
        id="bench-dwell", type="loitering", camera=camera_id, zone=BENCH_ZONE.id, min_dwell_s=BENCH_DWELL_S,
        cooldown_s=0.0,
    )  # fmt: skip
    return [build_rule(config)]


async def _wait_started(trial: _Trial, tasks: list[asyncio.Task[None]], rtsp: RtspCameras | None) -> None:
    ids = [p.camera.id for p in trial.pipelines]
    timeout_s = first_frame_timeout(len(ids))
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [c for c in ids if c not in trial.recorder.first_frame]
        if not missing:
            return
        _raise_failed(tasks)
        if trial.error is not None:
            return
        if time.monotonic() > deadline:
            what = (
                f"{len(missing)} camera(s) delivered no frame within {timeout_s:.0f} s "
                f"({', '.join(missing[:4])}{'...' if len(missing) > 4 else ''})"
            )
            if len(missing) < len(ids):
                # the others run: this machine is too busy to start them all, so this count does not hold
                trial.late_start = what
                return
            why = "; ".join(
                f"{p.camera.id}: {p.source.status.last_error}" for p in trial.pipelines if p.source.status.last_error
            )
            tail = f"\nRTSP server log:\n{rtsp.log_tail()}" if rtsp is not None else ""
            raise SourceError(f"{what}{': ' + why if why else ''}{tail}")
        await asyncio.sleep(0.1)


def _raise_failed(tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]


async def _sleep_watching(seconds: float, tasks: list[asyncio.Task[None]], trial: _Trial) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0 and trial.error is None:
        _raise_failed(tasks)
        await asyncio.sleep(min(0.25, left))


async def run_trial(env: BenchEnv, mode: Mode, cameras: int) -> dict[str, Any]:
    """N cameras for the configured duration in one mode; the summary of the measurement window."""
    opts = env.opts
    env.trials_run += 1
    workdir = env.workdir / f"trial-{env.trials_run:02d}-{mode}-{cameras}"
    workdir.mkdir(parents=True)
    rtsp: RtspCameras | None = None
    db: AsyncDatabase | None = None
    naive_clients: list[NaiveClient] = []
    tasks: list[asyncio.Task[None]] = []
    monitor: ResourceMonitor | None = None
    trial: _Trial | None = None
    try:
        clips = [env.clip.path] * cameras
        if opts.stagger:
            cache = env.workdir / "staggered"
            clips = await asyncio.to_thread(staggered_clips, env.clip, env.period_s, cameras, cache)
        if opts.source == "rtsp":
            rtsp = RtspCameras(clips, workdir, env.children)
            await asyncio.to_thread(rtsp.start)
            sources = [rtsp.url(i) for i in range(cameras)]
        else:
            sources = [str(c) for c in clips]
        if mode == "naive" and env.naive is None:
            env.naive = await asyncio.to_thread(_load_naive, env)
        db = await asyncio.to_thread(AsyncDatabase, workdir / "bench.db")
        recorder = Recorder()
        incidents = IncidentManager(db, workdir / "evidence", Explainer("UTC"), [], on_saved=recorder.on_incident)
        metrics = Metrics()
        pipelines, timers = [], []
        for i, src in enumerate(sources):
            cam = _camera_config(env, i, src, mode)
            inner: InferenceClient
            if mode == "triton":
                inner = env.client
            else:
                assert env.naive is not None
                naive_clients.append(NaiveClient(env.naive, cam.id))
                inner = naive_clients[-1]
            timer = TimedClient(inner)
            decoder = DECODERS[cam.decoder]
            source = decoder(cam.id, src, cam.fps, realtime=True, start_time=datetime.now(UTC))
            pipeline = CameraPipeline(cam, source, timer, DetectorConfig(), _rules(env, cam.id), incidents, metrics)
            pipeline.resolve_classes(env.class_names)
            pipelines.append(pipeline)
            timers.append(timer)
        trial = _Trial(mode, cameras, pipelines, timers, recorder)
        monitor = ResourceMonitor(
            {
                "storesight": (os.getpid(), False),
                "triton": (env.triton_pid, True) if env.triton_pid is not None and mode == "triton" else None,
                "cameras": (rtsp.process.pid, True) if rtsp is not None and rtsp.process is not None else None,
            }
        )
        monitor.start()
        tasks = [asyncio.create_task(_camera_loop(trial, i), name=f"bench-{mode}-{i}") for i in range(cameras)]
        await _wait_started(trial, tasks, rtsp)
        await _sleep_watching(WARMUP_S, tasks, trial)
        before = _counters(trial)
        await asyncio.to_thread(monitor.mark)
        t0 = time.monotonic()
        await _sleep_watching(opts.duration_s, tasks, trial)
        t1 = time.monotonic()
        await asyncio.to_thread(monitor.mark)
        after = _counters(trial)
        recorder.stop_at = t1
        _, pending = await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT_S)
        for t in pending:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        _raise_failed(tasks)
        return _summarise(trial, opts, env.clip, (t0, t1), before, after, monitor)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if trial is not None:
            for p in trial.pipelines:
                await p.close()
        for c in naive_clients:
            await c.close()
        if monitor is not None:
            monitor.stop()
        if db is not None:
            await db.close()
        if rtsp is not None:
            await asyncio.to_thread(rtsp.stop)
