"""The browser component itself: Debian's Chromium through Playwright renders a page, runs its script and takes
mouse input on a canvas (what the console's page tests rely on)."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from conftest import require

from components.browser import browser_page, chromium_missing, screenshot

PAGE = b"""<!doctype html><title>probe</title><canvas id=c width=200 height=100></canvas><p id=out>none</p>
<script>
const c = document.getElementById('c');
c.addEventListener('mousedown', e => { document.getElementById('out').textContent = e.offsetX + ',' + e.offsetY; });
</script>"""


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: object) -> None:
        pass


async def test_chromium_renders_runs_script_and_takes_a_click_on_a_canvas(tmp_path: Path) -> None:
    require(chromium_missing())
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        async with browser_page() as page:
            await page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
            assert await page.title() == "probe"
            box = await page.locator("#c").bounding_box()
            await page.mouse.click(box["x"] + 30, box["y"] + 40)
            assert await page.text_content("#out") == "30,40"
            shot = await screenshot(page, tmp_path, "probe")
            assert (await asyncio.to_thread(shot.read_bytes))[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        server.shutdown()
