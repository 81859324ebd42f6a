"""Head office as people use it, in a real headless Chromium (Debian's, driven by Playwright): the chain overview, a
store, an incident with its evidence picture, a verdict given and seen in precision, the ROI report and its PDF.
Screenshots of each go under the test's tmp_path (printed), never into the repository. The person signs in through
the shared login's form, as anyone does."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import cv2
import pytest
from components.browser import browser_page, chromium_missing, screenshot
from components.hq_server import PASSWORD, RunningHq, hq_server, seed
from conftest import media_dir, require

from plugin.cli.hq_synth import SynthStore

START = datetime(2026, 11, 23, tzinfo=UTC)
PERIOD = "from=2026-11-23&to=2026-11-28"


def evidence_jpeg() -> bytes:
    """A frame of the real demo clip, as a store's evidence picture."""
    clip = media_dir() / "one-by-one-person-detection.mp4"
    require(None if clip.is_file() else f"demo clip not found at {clip} (set STORESIGHT_MEDIA_DIR)")
    cap = cv2.VideoCapture(str(clip))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 300)
    ok, frame = cap.read()
    cap.release()
    assert ok
    return cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()


async def test_head_office_in_chromium(fresh_database: str, tmp_path: Path) -> None:
    require(chromium_missing())
    jpeg = evidence_jpeg()
    async with hq_server(fresh_database, {"lena": ("analyst", [])}) as hq:
        console: list[str] = []
        await seed(hq, [SynthStore.make(n) for n in range(1, 4)], START, 24 * 5, jpeg)
        async with browser_page(viewport={"width": 1300, "height": 900}) as page:
            failed: list[str] = []
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.on("console", lambda m: console.append(m.text))
            outside: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(hq.url) else outside.append(r.url))

            await page.goto(f"{hq.url}/?{PERIOD}")  # not signed in: the sign-in form, then back here
            await page.get_by_label("User name").fill("lena")
            await page.get_by_label("Password").fill(PASSWORD)
            await screenshot(page, tmp_path, "0-sign-in")
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_selector("h1:has-text('Chain overview')")
            assert await page.locator("svg.chart").count() == 2
            await screenshot(page, tmp_path, "1-chain")

            await page.get_by_role("link", name="Paris 001").first.click()
            await page.wait_for_selector("h1:has-text('Paris 001')")
            assert await page.locator("svg.chart").count() == 8
            await screenshot(page, tmp_path, "2-store")

            # an incident of a type nobody judged yet on this page: open it, see its picture, judge it
            row = page.locator("table tr", has=page.locator("span.pill", has_text="sweep")).first
            camera = (await row.locator("td").nth(2).inner_text()).strip()
            await row.locator("a").first.click()
            await page.wait_for_function("document.querySelector('img.evidence')?.complete === true")
            width = await page.locator("img.evidence").evaluate("img => img.naturalWidth")
            assert width == 768, console  # the store's JPEG, decoded by the browser
            await screenshot(page, tmp_path, "3-incident")

            precision_csv = f"{hq.url}/precision?{PERIOD}&store=store-001&csv=precision_by_camera"
            before = await _judged(hq, precision_csv, camera)
            await page.goto(page.url)
            await page.get_by_label("false alarm").check()
            await page.locator("select[name=reason]").select_option("staff_activity")
            await page.get_by_role("textbox", name="Comment").fill("Shelf restocked by staff")
            await page.get_by_role("button", name="Save verdict").click()
            await page.wait_for_selector("text=Shelf restocked by staff")
            assert "lena" in await page.locator("table").last.inner_text()
            await screenshot(page, tmp_path, "4-verdict")
            assert await _judged(hq, precision_csv, camera) == before + 1

            await page.goto(f"{hq.url}/precision?{PERIOD}&store=store-001")
            await page.wait_for_selector("h1:has-text('Precision from feedback')")
            await screenshot(page, tmp_path, "5-precision")

            await page.goto(f"{hq.url}/roi?period=week&at=2026-11-23")
            await page.wait_for_selector("td:has-text('Estimated loss prevented')")
            await screenshot(page, tmp_path, "6-roi")
            assert failed == [] and outside == []  # every picture and chart came from head office itself
            assert not [m for m in console if "Content Security Policy" in m]  # nothing the pages need is refused
            async with page.expect_download() as download:  # (a download shows as an aborted navigation)
                await page.click("#pdf")
            pdf = tmp_path / "roi.pdf"
            await (await download.value).save_as(pdf)
            assert pdf.read_bytes().startswith(b"%PDF")


async def _judged(hq: RunningHq, url: str, camera: str) -> int:
    """The judged count of store-001's camera, from the precision CSV (read by lena, signed in)."""
    http, _ = await hq.session("lena")
    async with http.get(url) as r:
        text = await r.text()
    for line in text.splitlines()[1:]:
        cells = line.split(",")
        if cells[0] == "store-001" and cells[1] == camera:
            return int(cells[2])
    return 0


def test_no_screenshot_lands_in_the_repository() -> None:
    root = Path(__file__).resolve().parents[2]
    tracked = [p for p in root.rglob("*.png") if ".venv" not in p.parts and "storesight-data" not in p.parts]
    assert not [
        p for p in tracked if re.search(r"\d-(sign-in|chain|store|incident|verdict|precision|roi)\.png$", p.name)
    ]


pytestmark = pytest.mark.slow
