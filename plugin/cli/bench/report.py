"""The search for the most cameras held, the machine it ran on, and the report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from plugin.cli.bench.clip import loop_clip, probe_clip, resolve_clip
from plugin.cli.bench.rtsp import Children
from plugin.cli.bench.trial import (
    DRAIN_TIMEOUT_S,
    WARMUP_S,
    BenchEnv,
    BenchOptions,
    Mode,
    first_frame_timeout,
    run_trial,
)
from plugin.errors import ModelError, StoreSightError
from plugin.inference.naive import YoloxSettings, read_model_parameters
from plugin.inference.repository import default_model_repository
from plugin.inference.server import EmbeddedTriton
from plugin.inference.triton import TritonInferenceClient

log = logging.getLogger(__name__)

# What a trial costs besides its window (server start, first frames, warm-up, drain), for the --find-max budget.
TRIAL_OVERHEAD_S = 12.0

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
    model_dir = default_model_repository() / opts.model
    settings: YoloxSettings | None = None
    if opts.baseline:  # fail before anything starts when the baseline's model is missing
        settings = YoloxSettings.from_parameters(read_model_parameters(model_dir / "config.pbtxt"))
        if not (model_dir / "1" / f"{opts.model}.onnx").is_file():
            raise ModelError(f"{model_dir / '1' / opts.model}.onnx missing: run `storesight models fetch`")
    triton: EmbeddedTriton | None = None
    url = opts.triton_url
    if url is None:
        triton = EmbeddedTriton(model_repository=default_model_repository().resolve(), cache_dir=workdir / "triton")
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


def cmd_bench(args: argparse.Namespace) -> int:
    """Sizing: how many cameras this machine analyses at the target rate, against a naive baseline."""
    from plugin.cli.bench.report import format_table, run_bench
    from plugin.cli.bench.rtsp import Children
    from plugin.cli.bench.trial import BenchOptions

    if not args.verbose:
        # per-camera "connected" and per-incident lines would bury the report; progress goes to stderr anyway
        for name in ("plugin", "adapters"):
            logging.getLogger(name).setLevel(logging.WARNING)
    opts = BenchOptions(
        cameras=args.cameras,
        analysis_fps=args.analysis_fps,
        duration_s=args.duration,
        clip=Path(args.clip) if args.clip else None,
        source=args.source,
        triton_url=args.triton_url,
        model=args.model,
        find_max=args.find_max,
        max_time_s=args.max_time,
        max_cameras=args.max_cameras,
        baseline=not args.no_baseline,
        rules=not args.no_rules,
    )
    children = Children()
    try:
        report = asyncio.run(run_bench(opts, children))
    except asyncio.CancelledError:  # SIGTERM
        return 128 + signal.SIGTERM
    finally:
        children.stop_all()  # a second Ctrl-C can cut the async clean-up short
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0
