"""The zone editor's HTTP side over the real application (database, sign-in, audit; no cameras running, so a save
is written and applies at the next start): admins only, CSRF on the browser's save, problems by key next to their
shape, the file untouched when refused, every save in the audit log, and the page's script served from here."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from plugin.app import auth_ctx, database_ctx, new_app
from plugin.config.loader import load_config
from plugin.inference.server import free_port
from plugin.web.auth.roles import BRIDGE_ROLES
from plugin.web.auth.users import Actor, add_user
from plugin.web.keys import AUTH
from plugin.web.routes import setup_routes

ADMIN_TOKEN = "admin-token-0123456789"
VIEWER_TOKEN = "viewer-token-0123456789"
PASSWORDS = {"alice": "alice-password-1", "victor": "victor-password-1"}
CSRF_VALUE = re.compile(r'name="csrf_token" value="([^"]*)"')
TABLE = [[0.39, 0.67], [0.83, 0.67], [0.83, 1], [0.39, 1]]

CONFIG = """\
# the front room
storage:
  path: {storage}
web:
  port: {port}
  token: ${{ADMIN_TOKEN}}  # from the environment
  tokens:
    - {{name: grafana, role: viewer, token: {viewer}}}
cameras:
  - id: cam1
    source: rtsp://127.0.0.1:8554/cam1
    zones:
      - id: table  # where people stand
        polygon: [[0.39, 0.67], [0.83, 0.67], [0.83, 1.0], [0.39, 1.0]]
rules:
  - {{id: exit, type: line_crossing, camera: cam1, line: [[0.75, 1], [0.75, 0]], in_side: left}}
  - {{id: table-dwell, type: loitering, camera: cam1, zone: table, min_dwell_s: 8}}
store_occupancy:
  - {{id: front, lines: [exit]}}
"""


@dataclass
class Served:
    app: web.Application
    base: str
    file: Path


@asynccontextmanager
async def serve(tmp_path: Path) -> AsyncIterator[Served]:
    """The bridge's web side read from a config file, with alice (admin) and victor (viewer)."""
    path = tmp_path / "storesight.yaml"
    path.write_text(CONFIG.format(storage=tmp_path / "data", port=free_port(), viewer=VIEWER_TOKEN))
    config = load_config(path)
    app = new_app(config, config_file=path)
    app.cleanup_ctx.extend([database_ctx, auth_ctx])
    setup_routes(app)
    runner = web.AppRunner(app)
    try:
        await runner.setup()
        actor = Actor("test", "cli", "local")
        await add_user(app[AUTH].store, BRIDGE_ROLES, actor, "alice", "admin", PASSWORDS["alice"])
        await add_user(app[AUTH].store, BRIDGE_ROLES, actor, "victor", "viewer", PASSWORDS["victor"])
        await web.TCPSite(runner, "127.0.0.1", config.web.port).start()
        yield Served(app, f"http://127.0.0.1:{config.web.port}", path)
    finally:
        await runner.cleanup()


@pytest.fixture(autouse=True)
def admin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", ADMIN_TOKEN)


def browser() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_in(http: aiohttp.ClientSession, base: str, name: str) -> str:
    """Sign in through the form; the CSRF token the editor page carries."""
    async with http.get(f"{base}/login") as resp:
        [form_csrf] = CSRF_VALUE.findall(await resp.text())
    form = {"username": name, "password": PASSWORDS[name], "csrf_token": form_csrf, "next": "/"}
    async with http.post(f"{base}/login", data=form, allow_redirects=False) as resp:
        assert resp.status == 303
    return form_csrf


def change(polygon: list[list[float]] = TABLE, in_side: str = "right") -> dict[str, Any]:
    return {
        "zones": [{"id": "table", "polygon": polygon, "was": "table"}],
        "lines": [{"id": "exit", "line": [[0.7, 1], [0.7, 0]], "in_side": in_side, "was": "exit"}],
    }


async def audit_rows(served: Served) -> list[tuple[str, str, str, str | None]]:
    entries = await served.app[AUTH].store.audit_entries(100)
    return [(e.actor, e.action, e.outcome, e.detail) for e in reversed(entries) if "zones" in e.action]


async def test_an_admin_sees_the_page_and_saves_with_csrf(tmp_path: Path) -> None:
    async with serve(tmp_path) as served, browser() as http:
        base = served.base
        await sign_in(http, base, "alice")
        async with http.get(f"{base}/cameras/cam1/zones") as resp:
            page = await resp.text()
            assert resp.status == 200
            csp = resp.headers["Content-Security-Policy"]
        [csrf] = re.findall(r'data-csrf="([^"]+)"', page)
        assert '<script src="/static/zone-editor.js" defer></script>' in page
        assert len(re.findall(r"<script", page)) == 1  # no inline script: the CSP allows none
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        async with http.get(f"{base}/static/zone-editor.js") as resp:
            assert resp.status == 200 and resp.content_type == "text/javascript"
            assert "function draw()" in await resp.text()
        async with http.get(f"{base}/api/cameras/cam1/zones") as resp:
            doc = await resp.json()
        assert doc["editable"] is True
        assert doc["zones"] == [{"id": "table", "polygon": [[0.39, 0.67], [0.83, 0.67], [0.83, 1.0], [0.39, 1.0]],
                                 "used_by": ["rule table-dwell (loitering)"]}]  # fmt: skip
        assert doc["lines"] == [{"id": "exit", "line": [[0.75, 1.0], [0.75, 0.0]], "in_side": "left",
                                 "used_by": ["rule exit (line_crossing)", "store occupancy front"]}]  # fmt: skip

        before = served.file.read_text()
        async with http.post(f"{base}/api/cameras/cam1/zones", json=change()) as resp:
            assert resp.status == 403  # no CSRF token: refused before anything is read
            assert "CSRF" in (await resp.json())["error"]
        assert served.file.read_text() == before
        headers = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
        async with http.post(f"{base}/api/cameras/cam1/zones", json=change(), headers=headers) as resp:
            assert resp.status == 403  # another site's page cannot save through the admin's browser
        assert served.file.read_text() == before

        async with http.post(f"{base}/api/cameras/cam1/zones", json=change(), headers={"X-CSRF-Token": csrf}) as resp:
            saved = await resp.json()
            assert resp.status == 200, saved
        assert saved["applied"] == "the cameras are not running here: it applies when they start"
        assert saved["lines"][0]["in_side"] == "right"
        after = served.file.read_text()
        assert "in_side: right" in after and "${ADMIN_TOKEN}  # from the environment" in after
        assert "- id: table  # where people stand" in after
        assert await asyncio.to_thread(Path(saved["backup"]).read_text) == before
        rows = await audit_rows(served)
    assert [r[:3] for r in rows] == [
        ("alice", "POST /api/cameras/{camera}/zones", "403"),
        ("alice", "POST /api/cameras/{camera}/zones", "403"),
        ("alice", "zones-save", "200"),
    ]
    assert rows[-1][3] == "zones table; lines exit"


async def test_a_refused_change_names_the_key_next_to_its_shape_and_leaves_the_file(tmp_path: Path) -> None:
    async with serve(tmp_path) as served, aiohttp.ClientSession() as http:
        before = served.file.read_bytes()
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}  # a token needs no CSRF: no browser holds it
        url = f"{served.base}/api/cameras/cam1/zones"
        async with http.post(url, json=change([[0.1, 0.1], [0.2, 0.2]]), headers=admin) as resp:
            assert resp.status == 422
            body = await resp.json()
        assert body["problems"] == [{"path": "cameras[0].zones[0].polygon", "message": "needs at least 3 item(s)",
                                     "shape": "zone:table"}]  # fmt: skip
        delete_used = {"zones": [], "lines": change()["lines"]}
        async with http.post(url, json=delete_used, headers=admin) as resp:
            body = await resp.json()
        assert resp.status == 422
        assert body["problems"] == [{"path": "rules[1].zone", "message": "camera 'cam1' has no zone 'table' "
                                     "(zones: none)", "shape": None}]  # fmt: skip
        async with http.post(url, json={"zones": [{"id": "table", "polygon": "all"}], "lines": []}, headers=admin) as r:
            assert r.status == 400
            assert (await r.json())["error"] == "zones[0].polygon: a list of 0 to 64 [x, y] points"
        async with http.post(url, data=b"{not json", headers=admin) as resp:
            assert resp.status == 400
        async with http.post(f"{served.base}/api/cameras/cam9/zones", json=change(), headers=admin) as resp:
            assert resp.status == 404
        assert served.file.read_bytes() == before
        assert not served.file.with_name("storesight.yaml.bak").exists()
        rows = await audit_rows(served)
    assert [(r[0], r[1], r[2]) for r in rows] == [("api-token", "zones-save", s) for s in
                                                  ("422", "422", "400", "400", "404")]  # fmt: skip
    assert "refused" in str(rows[0][3]) and "cameras[0].zones[0].polygon" in str(rows[0][3])


async def test_viewers_and_anonymous_callers_are_refused(tmp_path: Path) -> None:
    async with serve(tmp_path) as served, browser() as http, aiohttp.ClientSession() as plain:
        before = served.file.read_bytes()
        base = served.base
        csrf = await sign_in(http, base, "victor")
        async with http.get(f"{base}/cameras/cam1/zones", allow_redirects=False) as resp:
            assert resp.status == 403
        for path in ("/api/cameras/cam1/zones", "/cameras/cam1/picture.jpg", "/static/zone-editor.js"):
            async with http.get(base + path) as resp:
                assert resp.status == 403, path
        async with http.post(f"{base}/api/cameras/cam1/zones", json=change(), headers={"X-CSRF-Token": csrf}) as r:
            assert r.status == 403
        viewer = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
        async with plain.post(f"{base}/api/cameras/cam1/zones", json=change(), headers=viewer) as resp:
            assert resp.status == 403
        async with plain.post(f"{base}/api/cameras/cam1/zones", json=change()) as resp:
            assert resp.status == 401
        async with plain.get(f"{base}/cameras/cam1/zones", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/login?next=/cameras/cam1/zones"
        assert served.file.read_bytes() == before
        rows = await audit_rows(served)
    assert [(r[0], r[2]) for r in rows] == [("victor", "403"), ("grafana", "403"), ("anonymous", "401")]
