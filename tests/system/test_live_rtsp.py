"""Live path end to end: a real RTSP server streams the clip, the bridge (as `run` builds it) analyses it with the
real Triton, raises a loitering incident, and serves it through the API, the page, readiness and metrics."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import cv2
import numpy as np
import pytest
from aiohttp import web
from components.rtsp import rtsp_available, start_rtsp_server
from conftest import require
from helpers import example, run_cli, write_config

from plugin.app import build_app
from plugin.config.loader import parse_config
from plugin.inference.server import EmbeddedTriton, free_port
from plugin.web.keys import CAMERAS, DATABASE

pytestmark = [pytest.mark.triton, pytest.mark.rtsp, pytest.mark.slow]

TOKEN = "test-token-0123456789abcdef"


async def test_rtsp_camera_raises_loitering_and_serves_it(triton: EmbeddedTriton, clip: Path, tmp_path: Path) -> None:
    require(rtsp_available())
    with start_rtsp_server({"/store": clip}) as rtsp:
        doc = example()
        doc["storage"] = {"path": str(tmp_path / "data")}
        doc["triton"] = {"url": triton.grpc_url}
        doc["web"] = {"port": free_port(), "token": TOKEN}
        doc["cameras"][0]["source"] = rtsp.url("/store")
        # The first person reaches the table ~7 s into the clip and stays ~11 s; 3 s keeps the test short.
        doc["rules"][0]["min_dwell_s"] = 3
        config = parse_config(doc)
        app = build_app(config)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", config.web.port)
        await site.start()
        base = f"http://127.0.0.1:{config.web.port}"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        try:
            async with aiohttp.ClientSession() as http:
                incidents: list[dict[str, object]] = []
                for _ in range(120):
                    async with http.get(f"{base}/api/incidents", headers=auth) as resp:
                        assert resp.status == 200
                        incidents = await resp.json()
                    if incidents:
                        break
                    await asyncio.sleep(0.5)
                assert len(incidents) == 1, "no loitering incident within 60 s of live video"
                inc = incidents[0]
                assert inc["rule_id"] == "table-dwell" and inc["type"] == "loitering"
                assert isinstance(inc["track_ids"], list) and len(inc["track_ids"]) == 1
                assert await asyncio.to_thread(Path(str(inc["snapshot"])).is_file)

                async with http.get(f"{base}/api/incidents") as resp:
                    assert resp.status == 401
                async with http.get(f"{base}/api/incidents?token=wrong-token") as resp:
                    assert resp.status == 401
                async with http.get(f"{base}{inc['snapshot_url']}") as resp:
                    assert resp.status == 401  # people's pictures need a sign-in or a token
                async with http.get(f"{base}{inc['snapshot_url']}", headers=auth) as resp:
                    assert resp.status == 200 and resp.content_type == "image/jpeg"
                    assert (await resp.read())[:2] == b"\xff\xd8"
                async with http.get(f"{base}/", headers=auth) as resp:
                    page = await resp.text()
                    assert resp.status == 200
                    assert f'id="incident-{inc["id"]}"' in page and "in zone table" in page
                async with http.get(f"{base}/readyz") as resp:
                    assert resp.status == 200 and await resp.json() == {"ready": True}  # a probe: no details
                async with http.get(f"{base}/readyz", headers=auth) as resp:
                    ready = await resp.json()
                    assert resp.status == 200, ready
                    assert ready["triton"]["ready"] and ready["cameras"]["cam1"]["connected"]
                async with http.get(f"{base}/healthz") as resp:
                    assert resp.status == 200
                async with http.get(f"{base}/metrics", headers=auth) as resp:
                    text = await resp.text()
                    assert 'storesight_frames_analysed_total{camera="cam1"}' in text
                    assert 'storesight_incidents_total{camera="cam1",rule="table-dwell"} 1.0' in text
            pipeline = app[CAMERAS].pipelines["cam1"]
            assert pipeline.status.frames > 10
        finally:
            await runner.cleanup()


async def test_readiness_reports_a_dead_camera(triton: EmbeddedTriton, tmp_path: Path) -> None:
    doc = example()
    doc["storage"] = {"path": str(tmp_path / "data")}
    doc["triton"] = {"url": triton.grpc_url}
    doc["web"] = {"port": free_port(), "token": TOKEN}
    doc["cameras"][0]["source"] = f"rtsp://user:secretpw@127.0.0.1:{free_port()}/nothing"
    app = build_app(parse_config(doc))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", doc["web"]["port"])
    await site.start()
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.sleep(1.5)
            auth = {"Authorization": f"Bearer {TOKEN}"}
            async with http.get(f"http://127.0.0.1:{doc['web']['port']}/readyz", headers=auth) as resp:
                body = await resp.text()
                assert resp.status == 503
            assert '"connected": false' in body
            assert "secretpw" not in body and "**REDACTED**" in body
    finally:
        await runner.cleanup()


async def test_camera_outage_raises_one_offline_incident(triton: EmbeddedTriton, clip: Path, tmp_path: Path) -> None:
    require(rtsp_available())
    port = free_port()
    doc = example()
    doc["storage"] = {"path": str(tmp_path / "data")}
    doc["triton"] = {"url": triton.grpc_url}
    doc["web"] = {"port": free_port(), "token": TOKEN}
    doc["cameras"][0].update(source=f"rtsp://127.0.0.1:{port}/store", stall_timeout_s=3, offline_after_s=2)
    doc["rules"] = []
    app = build_app(parse_config(doc))
    runner = web.AppRunner(app)

    async def until(state: str, timeout_s: float) -> None:
        for _ in range(int(timeout_s * 5)):
            health = app[CAMERAS].health.get("cam1")
            if health is not None and health.snapshot.state == state:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"camera never became {state}")

    async def offline_incident(state: str, timeout_s: float) -> None:
        """Until the camera_offline incident's last stored state is `state` (start: opened, end: closed)."""
        for _ in range(int(timeout_s * 5)):
            rows = await app[DATABASE].call(app[DATABASE].sync.incidents)
            if any(r["type"] == "camera_offline" and r["state"] == state for r in rows):
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"no camera_offline incident in state {state}: {rows}")

    try:
        with start_rtsp_server({"/store": clip}, port=port):
            await runner.setup()
            await until("online", 40)
        await until("offline", 20)  # server gone
        await offline_incident("start", 30)  # opened once offline for offline_after_s
        with start_rtsp_server({"/store": clip}, port=port):
            await until("online", 60)
            await offline_incident("end", 30)  # the next health tick closes it
        rows = await app[DATABASE].call(app[DATABASE].sync.incidents)
    finally:
        await runner.cleanup()
    offline = [r for r in rows if r["type"] == "camera_offline"]
    assert len(offline) == 1, rows
    inc = offline[0]
    assert inc["state"] == "end" and inc["track_ids"] == [] and inc["rule_id"] == "camera-offline"
    assert inc["explanation"].startswith("Camera cam1 was offline ")
    assert app[CAMERAS].pipelines["cam1"].source.status.reconnects >= 1


def test_covered_view_raises_a_tamper_incident(triton: EmbeddedTriton, clip: Path, tmp_path: Path) -> None:
    # 30 s of the real clip, then 20 s with the lens covered (black), then 10 s of the clip again
    video = tmp_path / "covered.mp4"
    cap = cv2.VideoCapture(str(clip))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), 10, (768, 432))
    for i in range(600):
        ok, img = cap.read()
        assert ok
        writer.write(img if not 300 <= i < 500 else np.zeros_like(img))
    writer.release()
    cap.release()
    doc = example()
    doc["storage"] = {"path": str(tmp_path / "data")}
    doc["triton"] = {"url": triton.grpc_url}
    doc["cameras"][0].update(source=str(video), start_time="2026-11-29T14:00:00+00:00",
                             tamper={"learn_s": 20, "min_duration_s": 10})  # fmt: skip
    doc["rules"] = []
    cfg = write_config(tmp_path / "c.yaml", doc)
    res = run_cli("run", "-c", str(cfg), "--once")
    assert res.returncode == 0, res.stderr[-2000:]
    listed = run_cli("incidents", "-c", str(cfg), "--json")
    [inc] = json.loads(listed.stdout)
    assert inc["type"] == "camera_tamper" and inc["details"]["reason"] == "covered"
    assert inc["start"] == "2026-11-29T14:00:30+00:00"
    assert inc["end"].startswith("2026-11-29T14:00:5")  # the view came back at 50 s
    assert inc["explanation"].startswith("Camera cam1 view was covered (tamper), 14:00:30-")
    assert Path(inc["snapshot"]).is_file()
