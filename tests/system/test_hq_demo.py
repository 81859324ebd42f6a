"""`storesight hq demo`, as demo.sh starts it: a throwaway PostgreSQL, the demo's stores with their token files, sample
stores with history, the first admin with $STORESIGHT_ADMIN_PASSWORD, loopback only; stopping it stops its
PostgreSQL. And the demo's two store configs are valid."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from conftest import require

from adapters.sinks.hq import HqSink, HqSinkConfig
from plugin.cli.hq_bench import sign_in
from plugin.cli.pg_local import postgres_missing
from plugin.config.loader import load_config
from plugin.inference.server import REPO_ROOT, free_port

pytestmark = pytest.mark.slow
ADMIN_PASSWORD = "demo admin password 42"


async def test_demo_head_office_signs_in_once_serves_the_chain_and_stops_its_database(tmp_path: Path) -> None:
    require(postgres_missing())
    port, data = free_port(), tmp_path / "hq"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "plugin.cli", "hq", "demo", "--listen", f"127.0.0.1:{port}", "--data", str(data),
        "--store", "demo-store:Demo store:Europe/London", "--sample-stores", "2", "--sample-days", "2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=REPO_ROOT,
        env={**os.environ, "STORESIGHT_ADMIN_PASSWORD": ADMIN_PASSWORD},
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(120):
            while not (line := (await proc.stdout.readline()).decode()).startswith("head office: open "):
                assert line, "the demo's head office exited before it was ready"
        link = line.split("open ", 1)[1].strip()
        assert link == (data / "ready").read_text().strip()
        token_file = data / "demo-store.token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as anonymous, anonymous.get(url + "/", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"].startswith("/login")
        assert link == url + "/"
        person = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # cookies from an IP host
        async with person:
            await sign_in(person, url, "admin", ADMIN_PASSWORD)
            async with person.get(url + "/") as r:
                html = await r.text()
                assert r.status == 200 and "Chain overview" in html and "(sample)" in html
        sink = HqSink(
            HqSinkConfig(kind="hq", id="hq", url=url, store="demo-store", token=token_file.read_text().strip())
        )
        try:
            assert "accepts store demo-store's token" in await sink.self_test()
        finally:
            await sink.close()
        postgres_pids = _children(proc.pid)
        assert postgres_pids, "the demo's PostgreSQL runs as its child"
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            await proc.wait()
    assert not [pid for pid in postgres_pids if _alive(pid)]  # its PostgreSQL went with it


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.parametrize("name", ["store-demo.yaml", "store-vtest.yaml"])
def test_demo_store_configs_with_the_hq_sink_are_valid(name: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    demo = REPO_ROOT / "packaging" / "demo"
    derived = tmp_path / name  # as demo.sh makes it: the store's config with the head-office sink appended
    derived.write_text((demo / name).read_text() + (demo / "hq-sink.yaml").read_text())
    for var in ("STORESIGHT_DEMO_CLIP", "STORESIGHT_VTEST_CLIP"):
        monkeypatch.setenv(var, "/nonexistent/clip")
    monkeypatch.setenv("STORESIGHT_HQ_URL", "http://127.0.0.1:8090")
    monkeypatch.setenv("STORESIGHT_HQ_STORE", "demo-store")
    monkeypatch.setenv("STORESIGHT_HQ_TOKEN", "t" * 40)
    config = load_config(derived)
    [sink] = config.sinks
    assert (sink.kind, sink.id) == ("hq", "head-office")
    assert "demo.sh" in (demo / "hq-sink.yaml").read_text()
