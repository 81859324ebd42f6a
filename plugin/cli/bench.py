"""`storesight bench`: how many cameras this machine analyses at the target rate, measured against a naive baseline.

One trial runs N cameras for T seconds through the product's own pieces: OpenCV sources (each camera served by the
real GStreamer RTSP server at the clip's native rate, or realtime-paced files), one TritonInferenceClient shared by
all cameras, the tracker, a loitering rule and the incident store. The naive baseline runs the same sources, clip,
model and rules with one worker thread per camera calling onnxruntime in-process, one image at a time.

Capture-to-result latency runs from `Frame.monotonic` (the frame decoded and handed over) to the end of
`CameraPipeline.process` for that frame (detections, tracking, rules). It includes the time a frame waits for its
camera's previous one to finish. Incident latency runs from the frame on which the loitering threshold was crossed
to the incident stored (snapshot written, SQLite row committed).

Everything is measured around the pipeline rather than inside it: the detector is wrapped to time its round trip,
and the incident manager's `on_saved` callback marks the moment an incident is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import cv2
import numpy as np

from adapters.cameras.opencv import OpenCVSource
from plugin.config.cameras import CameraConfig, MotionGatingConfig, ZoneConfig
from plugin.config.service import DetectorConfig
from plugin.errors import InferenceUnavailable, ModelError, SourceError, StoreSightError
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.explain import Explainer
from plugin.incidents.manager import IncidentManager
from plugin.inference.assets import DEMO_MEDIA
from plugin.inference.naive import OnnxYolox, YoloxSettings, read_model_parameters
from plugin.inference.server import DEFAULT_MODEL_REPOSITORY, REPO_ROOT, EmbeddedTriton
from plugin.inference.triton import TritonInferenceClient
from plugin.metrics import Metrics
from plugin.pipeline.camera import CameraPipeline
from plugin.protocols import InferenceClient
from plugin.rules.loitering import LoiteringRuleConfig
from plugin.rules.registry import build_rule
from plugin.types import Detections, Frame, ImageArray, Incident

log = logging.getLogger(__name__)

Mode = Literal["triton", "naive"]
SourceKind = Literal["rtsp", "file"]

RTSP_SCRIPT = REPO_ROOT / "packaging" / "dev" / "rtsp_server.py"
# Debian's interpreter: PyGObject and the GStreamer typelibs come from apt, not from the virtual environment.
SYSTEM_PYTHON = Path("/usr/bin/python3")

# The demo clip's table, where each of its six people stands for a while: a loitering rule there gives incidents.
BENCH_ZONE = ZoneConfig(id="table", polygon=[(0.39, 0.67), (0.83, 0.67), (0.83, 1.0), (0.39, 1.0)])
# Short, so a run of tens of seconds sees incidents; no cooldown, so each person standing there counts.
BENCH_DWELL_S = 2.0

# RTSP clients see their first frame ~2.8 s after connecting (FFmpeg probing the stream), and OpenCV's FFmpeg
# backend opens one stream at a time per process (a lock around open; reads run in parallel), so N cameras take
# ~2.8 N s to all start. A camera silent past this is a setup problem, not a measurement.
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
# What a trial costs besides its window (server start, first frames, warm-up, drain), for the --find-max budget.
TRIAL_OVERHEAD_S = 12.0
RTSP_READY_TIMEOUT_S = 30.0
# Memory sampling: often enough to catch a peak that lasts a second, rarely enough to cost nothing measurable;
# the process trees (Triton's stubs) are rebuilt from /proc every few samples, the costly part.
MONITOR_INTERVAL_S = 0.5
TREE_REFRESH_SAMPLES = 6


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
    rules: bool = True


# --- the clip ------------------------------------------------------------------------------------------------


def default_clip() -> tuple[Path | None, list[Path]]:
    """The demo clip from $STORESIGHT_MEDIA_DIR or storesight-data/media, and the places looked at."""
    env = os.environ.get("STORESIGHT_MEDIA_DIR")
    dirs = [Path(env)] if env else []
    dirs += [Path("storesight-data") / "media", REPO_ROOT / "storesight-data" / "media"]
    looked = [d / DEMO_MEDIA.name for d in dirs]
    return next((p for p in looked if p.is_file()), None), looked


def resolve_clip(clip: Path | None) -> Path:
    """The clip to serve; a clear error when it is missing."""
    if clip is not None:
        if not clip.is_file():
            raise SourceError(f"--clip: no such video file: {clip}")
        return clip.resolve()
    found, looked = default_clip()
    if found is None:
        places = ", ".join(str(p) for p in dict.fromkeys(looked))
        raise SourceError(
            f"no demo clip found (looked for {places}); run `storesight media fetch`, set STORESIGHT_MEDIA_DIR "
            "or pass --clip PATH"
        )
    return found.resolve()


@dataclass(frozen=True)
class ClipInfo:
    """What the benchmark needs to know about the clip."""

    path: Path
    width: int
    height: int
    fps: float
    duration_s: float


def probe_clip(path: Path) -> ClipInfo:
    """Size, native rate and length of a video file (blocking)."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            raise SourceError(f"--clip: cannot decode {path}")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = float(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0.0)
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    if fps <= 0 or count <= 0:
        raise SourceError(f"--clip: {path} reports no frame rate or length; re-mux it (ffmpeg -i IN -c copy OUT.mp4)")
    return ClipInfo(path, width, height, fps, count / fps)


def loop_clip(clip: ClipInfo, needed_s: float, workdir: Path) -> ClipInfo:
    """A copy of the clip joined end to end (no re-encoding) when one play is shorter than a trial (blocking)."""
    loops = math.ceil(needed_s / clip.duration_s) - 1
    if loops <= 0:
        return clip
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SourceError(
            f"a {needed_s:.0f} s trial is longer than the clip ({clip.duration_s:.0f} s) and looping it needs ffmpeg "
            "on PATH (apt-get install ffmpeg); or pass a shorter --duration"
        )
    dst = workdir / f"{clip.path.stem}-x{loops + 1}.mp4"
    # A long file rather than looping in the reader or in GStreamer: timestamps keep rising, nothing restarts.
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", str(loops)]
    cmd += ["-i", str(clip.path), "-map", "0:v:0", "-c", "copy", "-f", "mp4", str(dst)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SourceError(f"ffmpeg could not loop {clip.path}: {result.stderr.strip()}")
    return ClipInfo(dst, clip.width, clip.height, clip.fps, clip.duration_s * (loops + 1))


# --- child processes -----------------------------------------------------------------------------------------


class Children:
    """Every child process the benchmark starts, so that any way out (Ctrl-C twice included) can end them."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []
        self._lock = threading.Lock()

    def add(self, proc: subprocess.Popen[Any]) -> None:
        """Remember a started process."""
        with self._lock:
            self._procs.append(proc)

    def stop_all(self, timeout_s: float = 5.0) -> None:
        """SIGTERM each live child, then SIGKILL what is left after `timeout_s` (blocking)."""
        with self._lock:
            procs, self._procs = self._procs, []
        live = [p for p in procs if p.poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
        deadline = time.monotonic() + timeout_s
        for p in live:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _child_env() -> dict[str, str]:
    # The venv's PYTHONPATH/PYTHONHOME would point Debian's python3 at the wrong standard library.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}


class RtspCameras:
    """packaging/dev/rtsp_server.py serving the clip once per camera (one mount each, so no frame is shared)."""

    def __init__(self, clip: Path, cameras: int, workdir: Path, children: Children) -> None:
        self.clip = clip
        self.cameras = cameras
        self.workdir = workdir
        self.children = children
        self.process: subprocess.Popen[str] | None = None
        self.base_url = ""
        self._stderr: IO[str] | None = None

    def url(self, index: int) -> str:
        """The stream of camera `index`."""
        return f"{self.base_url}/cam{index:02d}"

    def start(self) -> None:
        """Launch the server and wait for its READY line (blocking)."""
        if not SYSTEM_PYTHON.exists() or not RTSP_SCRIPT.is_file():
            raise SourceError(
                f"--source rtsp needs {SYSTEM_PYTHON} with python3-gi and {RTSP_SCRIPT} (a source checkout); "
                "use --source file otherwise"
            )
        cmd = [str(SYSTEM_PYTHON), str(RTSP_SCRIPT), "--address", "127.0.0.1", "--port", "0"]
        for i in range(self.cameras):
            cmd += ["--mount", f"/cam{i:02d}={self.clip}"]
        # stderr to a file: nothing reads it while the trial runs, and a full pipe would stall the server.
        self._stderr = (self.workdir / "rtsp_server.log").open("w+", encoding="utf-8", errors="replace")
        self.process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=_child_env(),
            start_new_session=True,  # Ctrl-C reaches the benchmark only, which stops the server in order
        )
        self.children.add(self.process)
        line = self._first_line(RTSP_READY_TIMEOUT_S)
        if line is None or not line.startswith("READY "):
            self.stop()
            raise SourceError(f"the RTSP server did not start:\n{self.log_tail()}")
        self.base_url = line.split(maxsplit=1)[1].strip()

    def _first_line(self, timeout_s: float) -> str | None:
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        got: list[str] = []
        # a thread, because a pipe read has no timeout of its own
        reader = threading.Thread(target=lambda: got.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        return got[0] if got else None

    def log_tail(self, lines: int = 10) -> str:
        """The server's last log lines."""
        path = self.workdir / "rtsp_server.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM (the server closes its clients and exits 0), SIGKILL after 5 s (blocking)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


# --- CPU and memory from /proc -------------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(path: Path) -> tuple[int, float, str] | None:
    """(parent pid, CPU seconds user+system, command name) from a /proc stat file, None when it is gone."""
    try:
        raw = path.read_text()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: the fields start after the last ')'
    fields = raw[raw.rfind(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _CLK_TCK, raw[raw.find("(") + 1 : raw.rfind(")")]


def _machine_busy_s() -> float:
    """CPU seconds every process on the machine has used since boot (all cores), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return 0.0
    ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLK_TCK


def _thread_group(name: str | None, comm: str) -> str:
    """What a thread of this process does, from its Python name (native threads have none)."""
    if name is None:
        # gRPC's C core names its threads; the rest are FFmpeg's and onnxruntime's pools
        return "grpc" if comm.startswith(("grpc", "event_engine", "lifeguard")) else "native"
    if name == "MainThread":
        return "event_loop"
    prefixes = {"decode-": "decode", "naive-": "naive_detect", "database": "database", "bench-": "benchmark"}
    return next((g for p, g in prefixes.items() if name.startswith(p)), "other_python")


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads, grouped by what they do."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        st = _stat(task / "stat")
        if st is not None:
            group = _thread_group(names.get(int(task.name)), st[2])
            out[group] = out.get(group, 0.0) + st[1]
    return out


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tree(root: int) -> list[int]:
    """`root` and its descendants (Triton's python-backend stubs run as its children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(entry / "stat")
            if st is not None:
                children.setdefault(st[0], []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


@dataclass
class _Watched:
    pid: int
    tree: bool
    peak_rss: int = 0
    cpu_marks: list[float] = field(default_factory=list)
    _pids: list[int] = field(default_factory=list)
    _age: int = 0

    def pids(self, fresh: bool = True) -> list[int]:
        if not self.tree:
            return [self.pid]
        if fresh or not self._pids or self._age >= TREE_REFRESH_SAMPLES:
            self._pids, self._age = _tree(self.pid), 0
        self._age += 1
        return self._pids

    def cpu_seconds(self) -> float:
        return sum(st[1] for p in self.pids() if (st := _stat(Path(f"/proc/{p}/stat"))) is not None)


class ResourceMonitor:
    """Peak RSS sampled in a thread (nothing of it on the event loop) and CPU seconds at marked instants."""

    def __init__(self, watched: dict[str, tuple[int, bool] | None]) -> None:
        self._watched = {name: _Watched(*spec) for name, spec in watched.items() if spec is not None}
        self.names = list(watched)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-monitor", daemon=True)
        self._mark_times: list[float] = []
        self._thread_marks: list[dict[str, float]] = []
        self._machine_marks: list[float] = []

    def start(self) -> None:
        """Begin sampling memory."""
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            for w in self._watched.values():
                w.peak_rss = max(w.peak_rss, sum(_rss_bytes(p) for p in w.pids(fresh=False)))
            self._stop.wait(MONITOR_INTERVAL_S)

    def mark(self) -> None:
        """Read every process's CPU time now (blocking, a few ms: call it off the loop)."""
        self._mark_times.append(time.monotonic())
        for w in self._watched.values():
            w.cpu_marks.append(w.cpu_seconds())
        self._thread_marks.append(_thread_cpu())
        self._machine_marks.append(_machine_busy_s())

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)

    def cpu_percent(self) -> dict[str, float | None]:
        """CPU between the first two marks, in % of one core (200 = both cores of a 2-core machine)."""
        out: dict[str, float | None] = dict.fromkeys(self.names)
        if len(self._mark_times) < 2:
            return out
        wall = self._mark_times[1] - self._mark_times[0]
        for name, w in self._watched.items():
            out[name] = round(100.0 * (w.cpu_marks[1] - w.cpu_marks[0]) / wall, 1)
        # everything else on the machine over the same window: what makes numbers on a shared box noisy
        busy = 100.0 * (self._machine_marks[1] - self._machine_marks[0]) / wall
        out["others"] = round(max(0.0, busy - sum(v for v in out.values() if v is not None)), 1)
        return out

    def cpu_by_thread(self) -> dict[str, float]:
        """StoreSight's own CPU between the first two marks by kind of thread, in % of one core."""
        if len(self._mark_times) < 2:
            return {}
        wall = self._mark_times[1] - self._mark_times[0]
        first, last = self._thread_marks[0], self._thread_marks[1]
        share = {g: round(100.0 * (last[g] - first.get(g, 0.0)) / wall, 1) for g in last}
        return dict(sorted(share.items(), key=lambda kv: -kv[1]))

    def rss_mb(self) -> dict[str, float | None]:
        """Peak resident memory of each watched process (tree) over the trial, MB."""
        out: dict[str, float | None] = dict.fromkeys(self.names)
        for name, w in self._watched.items():
            out[name] = round(w.peak_rss / 2**20, 1)
        return out


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
    trials_run: int = 0
    progress: list[str] = field(default_factory=list)


def _load_naive(env: BenchEnv) -> OnnxYolox:
    """The baseline's session, loaded only when its first trial starts so Triton trials' memory excludes it."""
    assert env.naive_settings is not None
    model_dir = DEFAULT_MODEL_REPOSITORY / env.opts.model
    detector = OnnxYolox(model_dir / "1" / f"{env.opts.model}.onnx", env.naive_settings)
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
        if opts.source == "rtsp":
            rtsp = RtspCameras(env.clip.path, cameras, workdir, env.children)
            await asyncio.to_thread(rtsp.start)
            sources = [rtsp.url(i) for i in range(cameras)]
        else:
            sources = [str(env.clip.path)] * cameras
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
            source = OpenCVSource(cam.id, src, cam.fps, realtime=True, start_time=datetime.now(UTC))
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


# --- the search and the report -------------------------------------------------------------------------------


def _line(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    verdict = "held" if r["held"] else f"not held{': ' + r['error'] if r['error'] else ''}"
    return (
        f"{r['mode']:>6} {r['cameras']:>3} camera(s): {r['achieved_fps']['min']:.2f}/{r['achieved_fps']['median']:.2f}"
        f" fps (min/median), p95 {lat['p95']} ms, backlog {r['backlog_s']} s, storesight CPU "
        f"{r['cpu_percent']['storesight']}%: {verdict}"
    )


async def _trial_logged(env: BenchEnv, mode: Mode, cameras: int) -> dict[str, Any]:
    print(f"bench: {mode} with {cameras} camera(s) for {env.opts.duration_s:g} s ...", file=sys.stderr, flush=True)
    result = await run_trial(env, mode, cameras)
    print(f"bench: {_line(result)}", file=sys.stderr, flush=True)
    return result


@dataclass
class SearchResult:
    """The largest camera count that held, with every trial on the way."""

    max_cameras: int
    best: dict[str, Any] | None
    trials: dict[int, dict[str, Any]]
    bounded: bool


async def find_max(env: BenchEnv, mode: Mode, deadline: float) -> SearchResult:
    """Double from --cameras until a count fails (or halve until one holds), then bisect; stops at `deadline`."""
    opts = env.opts
    trials: dict[int, dict[str, Any]] = {}
    cost = opts.duration_s + WARMUP_S + TRIAL_OVERHEAD_S
    bounded = False

    async def held(n: int) -> bool | None:
        nonlocal bounded
        if n not in trials:
            if time.monotonic() + cost > deadline:
                bounded = True
                return None
            trials[n] = await _trial_logged(env, mode, n)
        return bool(trials[n]["held"])

    lo, hi = 0, opts.max_cameras + 1  # lo held (0: none yet), hi failed
    n = min(opts.cameras, opts.max_cameras)
    ok = await held(n)
    while ok is not None:
        if ok:
            lo = n
            if n >= opts.max_cameras:
                break
            n = min(n * 2, opts.max_cameras)
        else:
            hi = n
            if n == 1 or lo > 0:
                break
            n = max(1, n // 2)
        if hi - lo <= 1:
            break
        ok = await held(n)
    while not bounded and hi - lo > 1:
        mid = (lo + hi) // 2
        ok = await held(mid)
        if ok is None:
            break
        lo, hi = (mid, hi) if ok else (lo, mid)
    return SearchResult(lo, trials.get(lo), trials, bounded)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 2)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }


async def _setup_and_run(opts: BenchOptions, children: Children, workdir: Path) -> dict[str, Any]:
    clip_path = resolve_clip(opts.clip)
    clip = await asyncio.to_thread(probe_clip, clip_path)
    if opts.analysis_fps > clip.fps:
        raise StoreSightError(f"--analysis-fps {opts.analysis_fps:g} is above the clip's native {clip.fps:g} fps")
    most = max(opts.cameras, opts.max_cameras) if opts.find_max else opts.cameras
    needed = first_frame_timeout(most) + WARMUP_S + opts.duration_s + DRAIN_TIMEOUT_S
    served = await asyncio.to_thread(loop_clip, clip, needed, workdir)
    model_dir = DEFAULT_MODEL_REPOSITORY / opts.model
    settings: YoloxSettings | None = None
    if opts.baseline:  # fail before anything starts when the baseline's model is missing
        settings = YoloxSettings.from_parameters(read_model_parameters(model_dir / "config.pbtxt"))
        if not (model_dir / "1" / f"{opts.model}.onnx").is_file():
            raise ModelError(f"{model_dir / '1' / opts.model}.onnx missing: run `storesight models fetch`")
    triton: EmbeddedTriton | None = None
    url = opts.triton_url
    if url is None:
        triton = EmbeddedTriton(model_repository=DEFAULT_MODEL_REPOSITORY.resolve(), cache_dir=workdir / "triton")
        await asyncio.to_thread(triton.start)
        assert triton.process is not None
        children.add(triton.process)
        print(f"bench: embedded tritonserver starting (pid {triton.process.pid})", file=sys.stderr, flush=True)
        await asyncio.to_thread(triton.wait_ready, opts.model, 120.0)
        url = triton.grpc_url
    client = TritonInferenceClient(url, opts.model, request_timeout_s=10.0)
    try:
        info = await client.wait_ready(60.0)
        if settings is not None and settings.class_names != info.class_names:
            raise ModelError(f"the naive baseline's model ({model_dir}) is not the one Triton serves at {url}")
        blank = np.zeros((clip.height, clip.width, 3), np.uint8)
        for _ in range(3):  # Triton's first executions allocate; keep that out of the first trial
            await client.detect([blank])
        env = BenchEnv(
            opts, served, workdir, children, client, info.class_names,
            triton.process.pid if triton is not None and triton.process is not None else None, settings,
        )  # fmt: skip
        report = await _measure(env)
    finally:
        await client.close()  # before the server: Triton's shutdown waits on open connections
        if triton is not None:
            await asyncio.to_thread(triton.stop)
    report.update(
        clip={"path": str(clip.path), "width": clip.width, "height": clip.height, "native_fps": clip.fps},
        source=opts.source,
        triton=url if opts.triton_url else "embedded",
        machine=machine(),
        date=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return report


async def _measure(env: BenchEnv) -> dict[str, Any]:
    opts = env.opts
    if not opts.find_max:
        main = await _trial_logged(env, "triton", opts.cameras)
        base = await _trial_logged(env, "naive", opts.cameras) if opts.baseline else None
        report = dict(main)
        report["baseline"] = base
        report["ratio"] = {
            "cameras_at_target": _ratio(main["cameras_at_target"], base["cameras_at_target"]) if base else None,
            "latency_p95": _ratio(base["latency_ms"]["p95"], main["latency_ms"]["p95"]) if base else None,
        }
        return report
    start = time.monotonic()
    deadline = start + opts.max_time_s
    share = opts.max_time_s / 2 if opts.baseline else opts.max_time_s
    ours = await find_max(env, "triton", start + share)
    theirs = await find_max(env, "naive", deadline) if opts.baseline else None
    best = ours.best or ours.trials[min(ours.trials)]
    report = dict(best)
    report["max_cameras"] = ours.max_cameras
    report["baseline_max_cameras"] = theirs.max_cameras if theirs else None
    report["baseline"] = (theirs.best or theirs.trials[min(theirs.trials)]) if theirs and theirs.trials else None
    # latency compared where both ran the same count: the largest that both held, else the largest both ran
    common = sorted(set(ours.trials) & set(theirs.trials)) if theirs else []
    both_held = [n for n in common if ours.trials[n]["held"] and theirs is not None and theirs.trials[n]["held"]]
    at: int | None = (both_held or common)[-1] if common else None
    report["ratio"] = {
        "cameras": _ratio(ours.max_cameras, theirs.max_cameras) if theirs else None,
        "latency_p95": _ratio(theirs.trials[at]["latency_ms"]["p95"], ours.trials[at]["latency_ms"]["p95"])
        if theirs and at is not None
        else None,
        "latency_at_cameras": at,
    }
    report["search"] = {
        "bounded": ours.bounded or bool(theirs and theirs.bounded),
        "max_time_s": opts.max_time_s,
        "took_s": round(time.monotonic() - start, 1),
        "trials": [t for t in ours.trials.values()] + ([t for t in theirs.trials.values()] if theirs else []),
    }
    return report


async def run_bench(opts: BenchOptions, children: Children) -> dict[str, Any]:
    """The whole benchmark; SIGTERM cancels it like Ctrl-C, and every child process is stopped on the way out."""
    if opts.cameras < 1 or opts.max_cameras < 1:
        raise StoreSightError("--cameras must be at least 1")
    if opts.duration_s <= 0 or opts.analysis_fps <= 0:
        raise StoreSightError("--duration and --analysis-fps must be positive")
    if opts.triton_url is not None and not re.match(r"^(grpc|http|https)://[^/\s]+$", opts.triton_url):
        raise StoreSightError(f"--triton-url: {opts.triton_url!r} must look like grpc://host:port or http://host:port")
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    with tempfile.TemporaryDirectory(prefix="storesight-bench-") as tmp:
        try:
            return await _setup_and_run(opts, children, Path(tmp))
        finally:
            await asyncio.to_thread(children.stop_all)


# --- output --------------------------------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def format_table(report: dict[str, Any]) -> str:
    """The report for people."""
    clip, m = report["clip"], report["machine"]
    base = report.get("baseline")
    head = (
        f"StoreSight sizing benchmark, {report['date']}, {m['cpus']} CPU(s) {m['cpu_model']}\n"
        f"clip {Path(clip['path']).name} ({clip['width']}x{clip['height']}, {clip['native_fps']:g} fps) "
        f"over {report['source']}, analysed at {report['target_fps']:g} fps, {report['duration_s']:g} s per trial, "
        f"Triton {report['triton']}"
    )

    def row(label: str, get: Any) -> str:
        ours = get(report)
        theirs = get(base) if base else "-"
        return f"  {label:<36} {ours:>24} {theirs:>24}"

    def pair(key: str, a: str, b: str, digits: int = 0) -> Any:
        return lambda r: f"{_fmt(r[key][a], digits)} / {_fmt(r[key][b], digits)}"

    lines = [head, f"  {'':<36} {'StoreSight (Triton)':>24} {'naive baseline':>24}"]
    lines += [
        row("cameras", lambda r: str(r["cameras"])),
        row("achieved fps per camera min / median", pair("achieved_fps", "min", "median", 2)),
        row("cameras at target fps", lambda r: f"{r['cameras_at_target']} of {r['cameras']}"),
        row("frames dropped", lambda r: str(r["dropped_frames"])),
        row("stream backlog over the window (s)", lambda r: _fmt(r["backlog_s"], 2)),
        row("capture->result ms p50 / p95", pair("latency_ms", "p50", "p95")),
        row("capture->result ms p99", lambda r: _fmt(r["latency_ms"]["p99"])),
        row("incident stored ms p50 / p95", pair("incident_latency_ms", "p50", "p95")),
        row("incidents in the window", lambda r: str(r["incidents"])),
        row("% frames motion gating skipped", lambda r: _fmt(r.get("gated_share") and 100.0 * r["gated_share"])),
        row("mean ms queued / detect / track+rules", lambda r: " / ".join(_fmt(v) for v in r["stage_ms"].values())),
        row("CPU % storesight / triton", pair("cpu_percent", "storesight", "triton")),
        row("peak RSS MB storesight / triton", pair("rss_mb", "storesight", "triton")),
        row("holds target", lambda r: "yes" if r["held"] else "no" + (f" ({r['error']})" if r["error"] else "")),
    ]
    ratio = report.get("ratio") or {}
    if "max_cameras" in report:
        bounded = "; the search stopped at --max-time, so these are lower bounds" if report["search"]["bounded"] else ""
        lines.append(
            f"  max cameras held: StoreSight {report['max_cameras']}, naive baseline "
            f"{_fmt(report['baseline_max_cameras'])} (ratio {_fmt(ratio.get('cameras'), 2)}); p95 latency ratio "
            f"naive/StoreSight {_fmt(ratio.get('latency_p95'), 2)} at {_fmt(ratio.get('latency_at_cameras'))} "
            f"camera(s){bounded}"
        )
    elif base:
        lines.append(
            f"  ratio StoreSight/naive: cameras at target {_fmt(ratio.get('cameras_at_target'), 2)}; "
            f"p95 latency naive/StoreSight {_fmt(ratio.get('latency_p95'), 2)}"
        )
    for r in (report, base):
        if r and r.get("storesight_cpu_by_thread"):
            parts = ", ".join(f"{g} {v:g}" for g, v in r["storesight_cpu_by_thread"].items())
            label = "naive baseline" if r["mode"] == "naive" else "Triton"
            lines.append(f"  StoreSight CPU % by thread ({label}): {parts}")
    cpu = report.get("cpu_percent") or {}
    if cpu.get("cameras") is not None:
        lines.append(f"  (the RTSP server standing in for the cameras used {cpu['cameras']}% CPU on the same machine)")
    if cpu.get("others") is not None:
        lines.append(
            f"  (other processes used {cpu['others']}% of the machine's {100 * (report['machine']['cpus'] or 1)}% "
            "during the StoreSight window: more than a few % makes these numbers noisy)"
        )
    return "\n".join(lines)
