"""The console in a real browser (Debian's Chromium through Playwright): signing in, the incidents page with its
snapshot, signing out; and the outbox API with a token."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web
from components.browser import browser_page, chromium_missing, screenshot
from conftest import require
from helpers import seed_incident

from plugin.app import build_app
from plugin.config.loader import parse_config
from plugin.incidents.database import Database
from plugin.inference.server import EmbeddedTriton, free_port

pytestmark = [pytest.mark.triton]


async def test_sign_in_see_incidents_and_sign_out_in_chromium(triton: EmbeddedTriton, tmp_path: Path) -> None:
    require(chromium_missing())
    storage = tmp_path / "data"
    incident = seed_incident(storage)
    port = free_port()
    doc = {"storage": {"path": str(storage)}, "triton": {"url": triton.grpc_url}, "web": {"port": port}}
    app = build_app(parse_config(doc))
    requested: list[tuple[str, int]] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        requested.append((request.path, response.status))

    app.on_response_prepare.append(record)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    password = (storage / "initial-admin-password").read_text().strip()  # the first admin, made at start
    try:
        async with browser_page(viewport={"width": 1280, "height": 800}) as page:
            await page.goto(f"http://127.0.0.1:{port}/")
            assert page.url.endswith("/login?next=/")  # nothing is shown before signing in
            await screenshot(page, tmp_path, "login")
            await page.fill("input[name=username]", "admin")
            await page.fill("input[name=password]", "not-the-password")
            await page.click("button[type=submit]")
            assert await page.text_content("p.error") == "Wrong user name or password."
            await page.fill("input[name=username]", "admin")
            await page.fill("input[name=password]", password)
            async with page.expect_navigation():
                await page.click("button[type=submit]")
            assert page.url == f"http://127.0.0.1:{port}/"
            card = page.locator(f"#incident-{incident.id}")
            assert "Person #3 stayed 23 s in zone table" in await card.locator(".explanation").text_content()
            assert "<b>x</b>" in await card.locator(".explanation").text_content()  # shown as text, never markup
            assert await card.locator("b").count() == 0
            await page.wait_for_function(
                f"document.querySelector('#incident-{incident.id} img').naturalWidth > 0"
            )  # the browser loaded the evidence image with the session cookie, under the page's CSP
            assert (f"/snapshots/{incident.id}.jpg", 200) in requested
            assert await page.text_content("#user") == "admin (admin)"
            shot = await screenshot(page, tmp_path, "incidents")
            assert (await asyncio.to_thread(shot.read_bytes))[:8] == b"\x89PNG\r\n\x1a\n"
            async with page.expect_navigation():
                await page.click("text=audit log")  # admins see who signed in and what changed
            rows = await page.locator("#audit tr.entry").all_text_contents()
            assert any("sign-in" in r and "wrong password" in r for r in rows), rows
            await screenshot(page, tmp_path, "audit")
            await page.go_back()
            async with page.expect_navigation():
                await page.click("#sign-out")
            assert page.url == f"http://127.0.0.1:{port}/login"
            await page.goto(f"http://127.0.0.1:{port}/")
            assert "/login" in page.url  # signed out: back to the sign-in page
            assert await page.locator(f"#incident-{incident.id}").count() == 0
    finally:
        await runner.cleanup()
    audit = [(e.action, e.outcome) for e in reversed(await _audit(storage))]
    assert audit[-3:] == [("sign-in", "wrong password"), ("sign-in", "ok"), ("sign-out", "ok")]


async def _audit(storage: Path) -> list[object]:
    from plugin.incidents.database import AsyncDatabase
    from plugin.web.auth.sqlite import SqliteAuthStore

    db = AsyncDatabase(storage / "storesight.db")
    try:
        return list(await SqliteAuthStore(db).audit_entries(20))
    finally:
        await db.close()


async def test_outbox_api_lists_and_requeues_dead_letters(triton: EmbeddedTriton, tmp_path: Path) -> None:
    import aiohttp

    from plugin.incidents.database import Delivery

    storage = tmp_path / "data"
    incident = seed_incident(storage)
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
