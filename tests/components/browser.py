"""A real headless Chromium for page tests: Debian's browser driven by Playwright (never a downloaded one).

Screenshots go under the test's tmp_path (never into the repository); a test that wants a person to look at one
writes it with `screenshot(page, tmp_path, name)` and the path is printed.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

CHROMIUM_BINARIES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
# As root Chromium needs --no-sandbox; the others keep it off a closed network (ENVIRONMENT.md, "Driving Chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium_missing() -> str | None:
    """None when Debian's Chromium and Playwright are installed, else why not (for `require`)."""
    if not any(Path(p).is_file() for p in CHROMIUM_BINARIES) and shutil.which("chromium") is None:
        return "chromium is not installed (apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; its own browsers are never downloaded)"
    return None


def _executable() -> str:
    for p in CHROMIUM_BINARIES:
        if Path(p).is_file():
            return p
    found = shutil.which("chromium")
    assert found is not None
    return found


@asynccontextmanager
async def browser_page(**context: Any) -> AsyncIterator[Any]:
    """A fresh page in a fresh browser context (no cookies shared between tests)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=_executable(), args=CHROMIUM_ARGS)
        try:
            ctx = await browser.new_context(**context)
            yield await ctx.new_page()
        finally:
            await browser.close()


async def screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    """Save a full-page PNG under tmp_path and print where, for a person to look at."""
    path = tmp_path / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path
