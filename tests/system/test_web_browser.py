"""The incidents page in a real browser (headless Chromium): it renders the incident and loads its snapshot."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from conftest import require

from plugin.app import build_app
from plugin.config.loader import parse_config
from plugin.incidents.database import Database
from plugin.incidents.evidence import draw_snapshot, write_jpeg
from plugin.inference.server import EmbeddedTriton, free_port
from plugin.types import Incident

pytestmark = [pytest.mark.triton]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--virtual-time-budget=5000",
]


def _seed(storage: Path) -> Incident:
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
    database.save(incident, [])
    database.close()
    return incident


async def test_page_renders_in_chromium(triton: EmbeddedTriton, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    require(None if chromium else "chromium is not installed")
    assert chromium is not None
    storage = tmp_path / "data"
    incident = _seed(storage)
    port = free_port()
    doc = {"storage": {"path": str(storage)}, "triton": {"url": triton.grpc_url}, "web": {"port": port}}
    config = parse_config(doc)
    app = build_app(config)
    requested: list[str] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        requested.append(request.path)

    app.on_response_prepare.append(record)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        profile = tmp_path / "profile"
        shot = tmp_path / "page.png"
        url = f"http://127.0.0.1:{port}/"
        proc = await asyncio.create_subprocess_exec(
            chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        dom, _ = await asyncio.wait_for(proc.communicate(), 60)
        html = dom.decode()
        assert f'id="incident-{incident.id}"' in html
        assert "Person #3 stayed 23 s in zone table" in html
        assert "&lt;b&gt;x&lt;/b&gt;" in html  # explanation text is escaped, never markup
        assert f"/snapshots/{incident.id}.jpg" in requested  # the browser fetched the evidence image
        proc = await asyncio.create_subprocess_exec(
            chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1280,800",
            url, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.wait_for(proc.wait(), 60)
        data = await asyncio.to_thread(shot.read_bytes)
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    finally:
        await runner.cleanup()


async def test_outbox_api_lists_and_requeues_dead_letters(triton: EmbeddedTriton, tmp_path: Path) -> None:
    import aiohttp

    from plugin.incidents.database import Delivery

    storage = tmp_path / "data"
    incident = _seed(storage)
    database = Database(storage / "storesight.db")
    database.save(incident, ["vms"])
    [due] = database.due("vms", 1e12)
    database.mark_dead(Delivery(due.delivery_key, "vms", due.incident_id, {}, 0), "rejected: HTTP 422")
    database.close()
    port = free_port()
    token = "api-token-0123456789"
    doc = {"storage": {"path": str(storage)}, "triton": {"url": triton.grpc_url}, "web": {"port": port, "token": token}}
    runner = web.AppRunner(build_app(parse_config(doc)))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/outbox?state=dead", headers=auth) as resp:
                [row] = await resp.json()
                assert row["delivery_key"] == due.delivery_key and row["state"] == "dead"
            async with http.get(f"{base}/api/incidents/{incident.id}", headers=auth) as resp:
                doc_ = await resp.json()
                assert doc_["deliveries"][0]["state"] == "dead"
            async with http.post(f"{base}/api/outbox/retry", json={"sink": "vms"}) as resp:
                assert resp.status == 401
            async with http.post(f"{base}/api/outbox/retry", json={"bogus": 1}, headers=auth) as resp:
                assert resp.status == 400
            async with http.post(f"{base}/api/outbox/retry", json={"sink": "vms"}, headers=auth) as resp:
                assert (await resp.json()) == {"requeued": 1}
            async with http.get(f"{base}/api/outbox?state=pending", headers=auth) as resp:
                assert [r["delivery_key"] for r in await resp.json()] == [due.delivery_key]
    finally:
        await runner.cleanup()
