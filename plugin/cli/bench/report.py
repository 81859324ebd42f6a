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
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from plugin.cli.bench.calibrate import calibrate_triton, cpu_facts, model_identity, onnxruntime_fps
from plugin.cli.bench.clip import first_frame, loop_clip, probe_clip, resolve_clip, servable_clip
from plugin.cli.bench.rtsp import Children
from plugin.cli.bench.search import SearchResult, find_max
from plugin.cli.bench.trial import (
    DRAIN_TIMEOUT_S,
    WARMUP_S,
    BenchEnv,
    BenchOptions,
    Mode,
    _load_naive,
    first_frame_timeout,
    naive_model_file,
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


async def _search(env: BenchEnv, mode: Mode, deadline: float) -> SearchResult:
    """--find-max in one mode: the search (plugin/cli/bench/search.py) over this machine's trials."""
    opts = env.opts
    cost = opts.duration_s + WARMUP_S + TRIAL_OVERHEAD_S
    return await find_max(
        lambda n: _trial_logged(env, mode, n), opts.cameras, opts.max_cameras, opts.repeats, cost, deadline
    )


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
    given = resolve_clip(opts.clip)
    clip_path, original = await asyncio.to_thread(servable_clip, given, workdir)
    clip = replace(await asyncio.to_thread(probe_clip, clip_path), converted_from=original)
    if opts.analysis_fps > clip.fps:
        raise StoreSightError(f"--analysis-fps {opts.analysis_fps:g} is above the clip's native {clip.fps:g} fps")
    most = max(opts.cameras, opts.max_cameras) if opts.find_max else opts.cameras
    needed = first_frame_timeout(most) + WARMUP_S + opts.duration_s + DRAIN_TIMEOUT_S
    if opts.stagger:  # a camera may start up to a play into the clip
        needed += clip.duration_s
    served = await asyncio.to_thread(loop_clip, clip, needed, workdir)
    model_dir = default_model_repository() / opts.model
    settings: YoloxSettings | None = None
    naive_file = naive_model_file(opts.model, opts.baseline_model)
    if opts.baseline:  # fail before anything starts when the baseline's model is missing
        settings = YoloxSettings.from_parameters(read_model_parameters(model_dir / "config.pbtxt"))
        if not naive_file.is_file():
            raise ModelError(f"{naive_file} missing: run `storesight models fetch`")
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
            period_s=clip.duration_s,
        )  # fmt: skip
        image = await asyncio.to_thread(first_frame, clip.path)
        calibration: dict[str, Any] = {"cpu": cpu_facts()}
        if opts.calibrate:
            print("bench: calibrating the detector (Triton at concurrency 1 and 8) ...", file=sys.stderr, flush=True)
            calibration["before"] = await calibrate_triton(client, image)
        report = await _measure(env)
        if opts.calibrate:
            calibration["after"] = await calibrate_triton(client, image)
            if env.naive is None and settings is not None:
                env.naive = await asyncio.to_thread(_load_naive, env)
            if env.naive is not None:
                calibration["onnxruntime_fps"] = await asyncio.to_thread(onnxruntime_fps, env.naive, image)
            calibration.update(_per_detector(report, calibration))
    finally:
        await client.close()  # before the server: Triton's shutdown waits on open connections
        if triton is not None:
            await asyncio.to_thread(triton.stop)
    model_file = naive_model_file(opts.model, "served")
    naive_size = env.naive.settings.input_size if env.naive is not None else settings.input_size if settings else 0
    report.update(
        clip={
            "path": str(given),
            "width": clip.width,
            "height": clip.height,
            "native_fps": clip.fps,
            "codec": clip.codec,
            "converted": original is not None,
        },
        source=opts.source,
        staggered=opts.stagger,
        decoder=opts.decoder,
        calibration=calibration,
        models={
            "triton": {"name": opts.model, **model_identity(model_file, info.input_size)},
            "naive": {"name": opts.model, "which": opts.baseline_model, **model_identity(naive_file, naive_size)}
            if settings
            else None,
        },
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
    ours = await _search(env, "triton", start + share)
    theirs = await _search(env, "naive", deadline) if opts.baseline else None
    report = dict(ours.best or _first(ours))
    report["max_cameras"] = ours.max_cameras
    report["baseline_max_cameras"] = theirs.max_cameras if theirs else None
    report["baseline"] = (theirs.best or _first(theirs)) if theirs and theirs.trials else None
    # latency compared where both ran the same count: the largest that both held, else the largest both ran
    common = sorted(set(ours.trials) & set(theirs.trials)) if theirs else []
    both_held = [n for n in common if theirs is not None and _held(ours, n) and _held(theirs, n)]
    at: int | None = (both_held or common)[-1] if common else None
    report["ratio"] = {
        "cameras": _ratio(ours.max_cameras, theirs.max_cameras) if theirs else None,
        "latency_p95": _ratio(_p95(theirs, at), _p95(ours, at)) if theirs and at is not None else None,
        "latency_at_cameras": at,
    }
    report["search"] = {
        "bounded": ours.bounded or bool(theirs and theirs.bounded),
        "max_time_s": opts.max_time_s,
        "took_s": round(time.monotonic() - start, 1),
        "triton": ours.summary(),
        "naive": theirs.summary() if theirs else None,
        "trials": [t for runs in ours.trials.values() for t in runs]
        + ([t for runs in theirs.trials.values() for t in runs] if theirs else []),
    }
    return report


def _first(result: SearchResult) -> dict[str, Any]:
    return result.trials[min(result.trials)][0]


def _held(result: SearchResult, n: int) -> bool:
    held, failed = result.tally(n)
    return held > failed


def _p95(result: SearchResult, n: int) -> float | None:
    """The median p95 latency of the trials at n cameras."""
    value = result.count_summary(n)["p95_ms_median"]
    return None if value is None else float(value)


def _per_detector(report: dict[str, Any], calibration: dict[str, Any]) -> dict[str, Any]:
    """Cameras per detector frame/s: the machine-independent figure (StoreSight against Triton at concurrency 8,
    the naive baseline against in-process onnxruntime)."""
    fps = [calibration[k]["triton_fps_c8"] for k in ("before", "after") if k in calibration]
    triton = sum(fps) / len(fps) if fps else None
    ort = calibration.get("onnxruntime_fps")
    ours = report.get("max_cameras", report.get("cameras_at_target"))
    base = report.get("baseline_max_cameras")
    if base is None and report.get("baseline"):
        base = report["baseline"].get("cameras_at_target")
    return {
        "cameras_per_triton_fps": round(ours / triton, 3) if ours is not None and triton else None,
        "baseline_cameras_per_onnxruntime_fps": round(base / ort, 3) if base is not None and ort else None,
    }


async def run_bench(opts: BenchOptions, children: Children) -> dict[str, Any]:
    """The whole benchmark; SIGTERM cancels it like Ctrl-C, and every child process is stopped on the way out."""
    if opts.cameras < 1 or opts.max_cameras < 1:
        raise StoreSightError("--cameras must be at least 1")
    if opts.repeats < 1:
        raise StoreSightError("--repeats must be at least 1")
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
        f"clip {Path(clip['path']).name} ({clip['width']}x{clip['height']}, {clip['native_fps']:g} fps"
        f"{', converted to H.264 MP4' if clip.get('converted') else ''}"
        f"{', each camera from its own point' if report.get('staggered') else ''}) over {report['source']} "
        f"(decoder {report.get('decoder', '-')}), analysed at {report['target_fps']:g} fps, "
        f"{report['duration_s']:g} s per trial, Triton {report['triton']}"
    )
    models = report.get("models") or {}
    for side, label in (("triton", "StoreSight"), ("naive", "naive baseline")):
        if models.get(side):
            mm = models[side]
            which = f", {mm['which']}" if mm.get("which") else ""
            head += f"\nmodel {label}: {mm['name']} ({mm['file']}{which}, {mm['input_size']} px, sha256 {mm['sha256']})"
    head += _calibration_line(report.get("calibration") or {})

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
        for side, label in (("triton", "StoreSight"), ("naive", "naive baseline")):
            search = report["search"].get(side)
            if search:
                lines.append(f"  {label}: " + _decided_line(search))
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


def _calibration_line(cal: dict[str, Any]) -> str:
    """The machine's detector speed, before and after the trials."""
    if "before" not in cal:
        return ""
    b, a = cal["before"], cal.get("after") or {}
    cpu = cal.get("cpu") or {}
    return (
        f"\ncalibration: Triton detector-only {b['triton_fps_c1']} / {b['triton_fps_c8']} frames/s at concurrency 1 / 8"
        f" before the trials, {_fmt(a.get('triton_fps_c1'), 1)} / {_fmt(a.get('triton_fps_c8'), 1)} after; "
        f"in-process onnxruntime {_fmt(cal.get('onnxruntime_fps'), 1)} frames/s; load {cpu.get('load_1min')} at "
        f"start; cameras per Triton frame/s {_fmt(cal.get('cameras_per_triton_fps'), 3)}, baseline cameras per "
        f"onnxruntime frame/s {_fmt(cal.get('baseline_cameras_per_onnxruntime_fps'), 3)}"
    )


def _decided_line(search: dict[str, Any]) -> str:
    """How many trials decided the boundary, and how they spread."""
    parts = []
    for d in search["decided_by"]:
        fps = ", ".join(f"{v:.2f}" for v in d["min_fps"])
        parts.append(f"{d['cameras']} cameras held {d['held']} of {d['trials']} trials (slowest camera fps {fps})")
    notes = f"; {'; '.join(search['notes'])}" if search["notes"] else ""
    return "; ".join(parts) + f"; decided by {search['decided_by_trials']} trials{notes}"


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
        baseline_model=args.baseline_model,
        stagger=not args.no_stagger,
        rules=not args.no_rules,
        repeats=args.repeats,
        decoder=args.decoder,
        calibrate=not args.no_calibration,
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
