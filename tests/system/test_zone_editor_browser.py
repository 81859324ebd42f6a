"""The zone editor in a real browser (Debian's Chromium through Playwright) on the running bridge: the demo clip's
camera starts with its `table` zone drawn in a corner where nobody stands, so its loitering rule never fires; an
admin deletes that zone, draws the table with mouse clicks on the canvas, names it, sees a bad name refused next to
the shape, saves; the camera's pipeline restarts alone with the new zone (the other camera runs on), and the
loitering incidents that need it fire on the clip (six people stand at the table 11-25 s: see
tests/system/scenarios/one-by-one.yaml)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from components.browser import browser_page, chromium_missing, screenshot
from conftest import require

from plugin.app import auth_ctx, build_app, database_ctx, new_app
from plugin.config.loader import load_config
from plugin.inference.server import EmbeddedTriton, free_port
from plugin.rules.line_crossing import LineCrossingRuleConfig
from plugin.web.auth.roles import BRIDGE_ROLES
from plugin.web.auth.users import Actor, add_user
from plugin.web.keys import AUTH, CAMERAS, DATABASE
from plugin.web.routes import setup_routes

# the table as the scenario draws it (normalised), clicked corner by corner
TABLE = [(0.39, 0.67), (0.83, 0.67), (0.83, 0.99), (0.39, 0.99)]

CONFIG = """\
# The demo room (this comment and the ${{DEMO_CLIP}} reference must survive the editor's save)
site:
  id: demo-store
storage:
  path: {storage}
triton:
  url: {triton}
web:
  port: {port}
cameras:
  - id: cam1
    source: ${{DEMO_CLIP}}  # the demo clip, from the environment
    fps: 5
    start_time: "2026-11-29T14:00:00+00:00"
    zones:
      # drawn where nobody stands: the admin moves the table zone onto the table
      - id: table
        polygon: [[0, 0], [0.1, 0], [0.1, 0.1]]
  - id: cam2  # another camera on the same clip, slowly: the save must not restart it
    source: ${{DEMO_CLIP}}
    fps: 1
    realtime: true
rules:
  - {{id: table-dwell, type: loitering, camera: cam1, zone: table, min_dwell_s: 8}}
"""


async def click_at(page: Any, box: dict[str, float], x: float, y: float) -> None:
    """A mouse click at a normalised point of the canvas."""
    await page.mouse.click(box["x"] + x * box["width"], box["y"] + y * box["height"])


@pytest.mark.triton
@pytest.mark.timeout(600)
async def test_draw_a_zone_in_chromium_and_the_camera_uses_it(
    triton: EmbeddedTriton, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require(chromium_missing())
    monkeypatch.setenv("DEMO_CLIP", str(clip))
    storage, port = tmp_path / "data", free_port()
    path = tmp_path / "storesight.yaml"
    written = CONFIG.format(storage=storage, triton=triton.grpc_url, port=port)
    path.write_text(written)
    app = build_app(load_config(path), config_file=path)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    fleet = app[CAMERAS]
    password = (storage / "initial-admin-password").read_text().strip()
    try:
        async with browser_page(viewport={"width": 1400, "height": 900}) as page:
            await page.goto(f"{base}/login?next=/")
            await page.fill("input[name=username]", "admin")
            await page.fill("input[name=password]", password)
            async with page.expect_navigation():
                await page.click("button[type=submit]")
            async with page.expect_navigation():
                await page.click("a.zones")  # the incidents page links each camera to its editor, for admins
            assert page.url == f"{base}/cameras/cam1/zones"
            await page.wait_for_selector("#canvas[data-ready=yes]")  # the picture loaded under the page's CSP
            assert await page.locator("#zone-0 .used-by").text_content() == "rule table-dwell (loitering)"
            await screenshot(page, tmp_path, "zone-editor-before")
            box = await page.locator("#canvas").bounding_box()
            assert box is not None and box["width"] == 768 and box["height"] == 432  # the clip's own size

            await click_at(page, box, 0.05, 0.03)  # inside the corner zone: selects it
            assert "selected" in (await page.locator("#zone-0").get_attribute("class") or "")
            await page.click("#delete")
            await page.click("#add-zone")
            for x, y in TABLE:
                await click_at(page, box, x, y)
            await click_at(page, box, *TABLE[0])  # the first corner again closes the polygon
            assert "Zone zone-1 drawn" in (await page.text_content("#status") or "")

            await page.fill("#zone-0 input.name", "the table")  # not a valid id: refused, said at the shape
            await page.click("#save")
            await page.wait_for_selector("#status.error")
            problem = await page.locator("#zone-0 .problem").text_content()
            assert problem is not None and problem.startswith("cameras[0].zones[0].id: does not match"), problem
            await screenshot(page, tmp_path, "zone-editor-refused")
            assert path.read_text() == written  # nothing written

            old = fleet.pipelines["cam1"]
            other, other_task = fleet.pipelines["cam2"], fleet.tasks["cam2"]
            await page.fill("#zone-0 input.name", "table")
            await page.click("#save")
            await page.wait_for_selector("#status.ok")
            assert "the camera's pipeline restarted with it" in (await page.text_content("#status") or "")
            await page.wait_for_selector("#canvas[data-ready=yes]")
            shot = await screenshot(page, tmp_path, "zone-editor-saved")
            assert (await asyncio.to_thread(shot.read_bytes))[:8] == b"\x89PNG\r\n\x1a\n"
            async with page.expect_navigation():
                await page.click("text=audit log")
            rows = await page.locator("#audit tr.entry").all_text_contents()
            saves = [r for r in rows if "zones-save" in r]
            assert len(saves) == 2 and "422" in saves[1] and "200" in saves[0], saves  # newest first
            assert "zones table; lines" in saves[0] and "cameras[0].zones[0].id" in saves[1]

        new = fleet.pipelines["cam1"]
        assert new is not old and old.status.incidents == 0  # the corner zone never fired
        assert fleet.pipelines["cam2"] is other and fleet.tasks["cam2"] is other_task and not other_task.cancelled()
        polygon = new.zones["table"].config.polygon
        assert len(polygon) == 4
        for (x, y), (ex, ey) in zip(polygon, TABLE, strict=True):
            assert abs(x - ex) < 0.002 and abs(y - ey) < 0.003, polygon  # within a pixel of the clicks
        text = path.read_text()
        assert "# The demo room" in text and "source: ${DEMO_CLIP}  # the demo clip" in text
        await fleet.tasks["cam1"]  # the clip, from its start, through the restarted pipeline
        assert new.status.state == "finished"
        db = app[DATABASE]
        rows = await db.call(db.sync.incidents, 100, "cam1")
        dwell = [r for r in rows if r["rule_id"] == "table-dwell"]
        assert len(dwell) == 6, [(r["start"], r["zone"]) for r in dwell]  # one per person at the table
        assert {r["zone"] for r in dwell} == {"table"}
    finally:
        await runner.cleanup()


EDITING = """\
# lines and corners, edited with the mouse (no camera runs here: the save applies at the next start)
storage:
  path: {storage}
web:
  port: {port}
cameras:
  - id: cam1
    source: rtsp://127.0.0.1:8554/cam1
    zones:
      - id: table
        polygon: [[0.39, 0.67], [0.83, 0.67], [0.83, 1.0], [0.39, 1.0]]
rules:
  - {{id: exit, type: line_crossing, camera: cam1, line: [[0.75, 1], [0.75, 0]], in_side: left}}
"""


async def drag(page: Any, box: dict[str, float], start: tuple[float, float], end: tuple[float, float]) -> None:
    """Press at one normalised point of the canvas, move in steps, release at another."""
    await page.mouse.move(box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"])
    await page.mouse.down()
    await page.mouse.move(box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"], steps=5)
    await page.mouse.up()


def close(points: Any, expected: list[tuple[float, float]]) -> bool:
    """Each point within two pixels (of 768x432) of the expected one."""
    return len(points) == len(expected) and all(
        abs(x - ex) < 0.003 and abs(y - ey) < 0.005 for (x, y), (ex, ey) in zip(points, expected, strict=True)
    )


async def test_corners_and_lines_edited_with_the_mouse(tmp_path: Path) -> None:
    """Drag a corner, add one on an edge (double-click), delete one (right-click), draw a line and set its in side
    by clicking, in Chromium; the saved file says exactly that."""
    require(chromium_missing())
    port, path = free_port(), tmp_path / "storesight.yaml"
    path.write_text(EDITING.format(storage=tmp_path / "data", port=port))
    app = new_app(load_config(path), config_file=path)
    app.cleanup_ctx.extend([database_ctx, auth_ctx])
    setup_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    await add_user(app[AUTH].store, BRIDGE_ROLES, Actor("test", "cli", "local"), "alice", "admin", "alice-password-1")
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with browser_page(viewport={"width": 1400, "height": 900}) as page:
            await page.goto(f"http://127.0.0.1:{port}/login?next=/cameras/cam1/zones")
            await page.fill("input[name=username]", "alice")
            await page.fill("input[name=password]", "alice-password-1")
            async with page.expect_navigation():
                await page.click("button[type=submit]")
            await page.wait_for_selector("#editor[data-loaded=yes]")
            assert await page.locator("#line-0 .used-by li").all_text_contents() == ["rule exit (line_crossing)"]
            box = await page.locator("#canvas").bounding_box()
            assert box is not None

            await drag(page, box, (0.39, 0.67), (0.35, 0.6))  # a corner moved
            edge = (0.59, 0.635)  # the middle of the top edge, as it now runs
            await page.mouse.dblclick(box["x"] + edge[0] * box["width"], box["y"] + edge[1] * box["height"])
            x, y = box["x"] + 0.83 * box["width"], box["y"] + 0.67 * box["height"]
            await page.mouse.click(x, y, button="right")  # that corner deleted

            await page.click("#add-line")
            await click_at(page, box, 0.2, 0.9)
            await click_at(page, box, 0.2, 0.5)  # drawn bottom to top
            await page.click("#set-in")
            await click_at(page, box, 0.1, 0.7)  # the screen's left of it is where people come in
            assert await page.locator("#line-1 .kind").text_content() == "line, in: left"
            await page.fill("#line-1 input.name", "side-door")
            await screenshot(page, tmp_path, "zone-editor-lines")
            await page.click("#save")
            await page.wait_for_selector("#status.ok")
            assert "applies when they start" in (await page.text_content("#status") or "")
    finally:
        await runner.cleanup()
    config = load_config(path)
    polygon = config.camera("cam1").zones[0].polygon
    assert close(polygon, [(0.35, 0.6), (0.59, 0.635), (0.83, 1.0), (0.39, 1.0)]), polygon
    exit_rule, door = config.rules
    assert isinstance(exit_rule, LineCrossingRuleConfig) and exit_rule.line == ((0.75, 1.0), (0.75, 0.0))
    assert isinstance(door, LineCrossingRuleConfig) and door.id == "side-door" and door.in_side == "left"
    assert close(door.line, [(0.2, 0.9), (0.2, 0.5)]), door.line
    assert path.read_text().startswith("# lines and corners, edited with the mouse")
