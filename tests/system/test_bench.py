"""`storesight bench`: the sizing report's shape, its errors, and its clean-up. Speed is measured, never asserted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from components.rtsp import rtsp_available
from conftest import MODEL_FILE, require
from helpers import run_cli

from plugin.inference.assets import DEMO_MEDIA
from plugin.inference.server import REPO_ROOT, EmbeddedTriton

RESULT_KEYS = {
    "cameras",
    "target_fps",
    "achieved_fps",
    "dropped_frames",
    "latency_ms",
    "incident_latency_ms",
    "cpu_percent",
    "rss_mb",
}


def _require_stack() -> None:
    try:
        import onnxruntime  # noqa: F401
        import pytriton  # noqa: F401
    except ImportError as exc:
        require(f"{exc.name} is not installed")
    require(None if MODEL_FILE.is_file() else f"{MODEL_FILE} missing: run `storesight models fetch`")


def _check_result(r: dict[str, Any], mode: str) -> None:
    assert set(r) >= RESULT_KEYS, sorted(RESULT_KEYS - set(r))
    assert r["mode"] == mode and r["cameras"] == 2 and r["target_fps"] == 5.0
    assert set(r["achieved_fps"]) == {"min", "median"}
    assert 0 < r["achieved_fps"]["min"] <= r["achieved_fps"]["median"] <= 5.5
    assert type(r["dropped_frames"]) is int  # present and a count; whether frames drop depends on the machine
    lat = r["latency_ms"]
    assert set(lat) == {"p50", "p95", "p99"}
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
    assert set(r["incident_latency_ms"]) == {"p50", "p95"}
    # the clip's first person reaches the table after ~7 s, so a 5 s window may hold no incident
    for v in r["incident_latency_ms"].values():
        assert v is None or v > 0
    assert {"storesight", "triton"} <= set(r["cpu_percent"]) and {"storesight", "triton"} <= set(r["rss_mb"])
    assert r["cpu_percent"]["storesight"] > 0 and r["rss_mb"]["storesight"] > 50


@pytest.mark.slow
@pytest.mark.triton
def test_short_run_reports_every_key(clip: Path) -> None:
    _require_stack()
    env = dict(os.environ, STORESIGHT_MEDIA_DIR=str(clip.parent))
    res = run_cli("bench", "--cameras", "2", "--duration", "5", "--source", "file", "--json", timeout=240, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    _check_result(report, "triton")
    # the embedded Triton and its python-backend stub are measured as one process tree
    assert report["cpu_percent"]["triton"] > 0 and report["rss_mb"]["triton"] > 20
    base = report["baseline"]
    _check_result(base, "naive")
    assert base["cpu_percent"]["triton"] is None  # no Triton in the naive mode
    assert set(report["ratio"]) >= {"cameras_at_target", "latency_p95"}
    assert report["clip"]["native_fps"] == 10.0 and report["source"] == "file"
    models = report["models"]  # the baseline runs the export as published; StoreSight what Triton serves
    assert models["naive"]["which"] == "published" and models["naive"]["input_size"] == 416
    assert models["naive"]["file"] == "yolox_nano.onnx" and models["triton"]["input_size"] == 352


def test_missing_clip_is_a_clear_error(tmp_path: Path) -> None:
    res = run_cli("bench", "--clip", str(tmp_path / "nope.mp4"), "--cameras", "1", timeout=60)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert f"storesight: error: --clip: no such video file: {tmp_path / 'nope.mp4'}" in res.stderr


def test_missing_default_clip_names_where_it_looked(tmp_path: Path) -> None:
    # the bench also looks in this checkout's storesight-data/media, which no environment variable can hide
    in_checkout = REPO_ROOT / "storesight-data" / "media" / DEMO_MEDIA.name
    require(None if not in_checkout.is_file() else f"{in_checkout} exists, so the bench finds a clip (move it away)")
    empty = tmp_path / "media"
    empty.mkdir()
    env = dict(os.environ, STORESIGHT_MEDIA_DIR=str(empty))
    res = subprocess.run(
        [sys.executable, "-m", "plugin.cli", "bench", "--cameras", "1"],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert "no demo clip found" in res.stderr and str(empty / DEMO_MEDIA.name) in res.stderr
    assert "storesight media fetch" in res.stderr


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"  # a zombie has exited; only its parent (init here) has yet to reap it


@pytest.mark.slow
@pytest.mark.triton
@pytest.mark.rtsp
def test_ctrl_c_stops_triton_and_the_rtsp_server(clip: Path, tmp_path: Path) -> None:
    _require_stack()
    require(rtsp_available())
    env = dict(os.environ, STORESIGHT_MEDIA_DIR=str(clip.parent))
    err_path = tmp_path / "stderr.txt"
    with err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plugin.cli", "bench", "--cameras", "2", "--duration", "60", "--source", "rtsp"],
            stdout=subprocess.DEVNULL, stderr=err, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        # the trial has begun once the RTSP server runs next to Triton
        while len(kids := _children(proc.pid)) < 2:
            assert proc.poll() is None, err_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "bench never started its trial"
            time.sleep(0.2)
        time.sleep(6)  # into the measurement: cameras streaming, frames in flight
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = err_path.read_text()
    assert "Traceback" not in text, text[-3000:]
    deadline = time.monotonic() + 10
    while any(_alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [k for k in kids if _alive(k)], f"children left running: {kids}"


@pytest.mark.triton
def test_stage_profile_splits_the_time(clip: Path, triton: EmbeddedTriton) -> None:
    """packaging/scripts/profile_stages.py times each stage on the real clip through the real Triton."""
    script = REPO_ROOT / "packaging" / "scripts" / "profile_stages.py"
    out = subprocess.run(
        [sys.executable, str(script), "--clip", str(clip), "--frames", "8", "--triton-url", triton.grpc_url, "--json"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert set(report["stage_ms"]) == {"decode", "letterbox", "infer", "gate", "track", "zones_rules"}
    # every stage per analysed frame: wall and the CPU of the thread that ran it; decode as its thread's CPU
    assert all(s["n"] == 8 and s["cpu_mean"] > 0 for s in report["stage_ms"].values()), report["stage_ms"]
    assert report["decoder"] == "pyav"
    server = report["triton_server_ms_per_execution"]
    assert server["compute_infer"] > 0 and report["stage_ms"]["infer"]["mean"] > server["compute_infer"]
    # the product's pipeline on the same clip, every frame detected: the bridge's CPU per frame, by kind of thread
    pipeline = report["pipeline"]
    assert pipeline["gating"] is False and pipeline["detected_share"] == 1.0
    assert pipeline["bridge_cpu_ms_per_frame"] > 0 and "event_loop" in pipeline["bridge_cpu_ms_by_thread"]
    assert pipeline["triton_cpu_ms_per_frame"] is None  # an external Triton: its CPU is not this machine's to read
    assert report["cpu_ms_per_camera_second"] > 0
    # the bound is the cores' milliseconds over one camera's, rounded down (the report's cost is rounded to 0.1 ms)
    room = report["cores"] * 1000.0 / report["cpu_ms_per_camera_second"]
    assert -0.01 < room - report["upper_bound_cameras"] < 1.01, report
