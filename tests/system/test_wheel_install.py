"""The wheel is all an admin needs: built from this checkout, installed into a fresh virtual environment in a
temporary folder (tests/components/installed.py), and run from another folder with nothing of the checkout in
reach, `storesight` checks the demo config, fetches the models into its data directory and analyses the demo clip.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import aiohttp
import pytest
import yaml
from components.installed import Installed, outside_env
from components.rtsp import rtsp_available
from conftest import MODEL_FILE, require

from plugin.cli.hq_bench import sign_in
from plugin.inference.server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.triton]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO = REPO_ROOT / "packaging" / "demo" / "store-demo.yaml"


def test_the_wheel_carries_its_data_and_no_weights(built_wheel: Path) -> None:
    names = set(zipfile.ZipFile(built_wheel).namelist())
    for flavour in ("cpu", "onnx", "gpu"):
        assert f"plugin/_data/triton_models/{flavour}/yolox_nano/config.pbtxt" in names
    assert "plugin/_data/triton_models/cpu/yolox_nano/1/model.py" in names
    assert "plugin/_data/triton_models/cpu/movenet/1/model.py" in names
    assert "plugin/_data/packaging/dev/rtsp_server.py" in names
    assert {"adapters/sinks/milestone/schema/AnalyticsEvent.xsd", "adapters/sinks/milestone/schema/LICENSE.md"} <= names
    assert {"plugin/incidents/templates/explanations.j2", "plugin/web/templates/incidents.html"} <= names
    weights = sorted(n for n in names if n.endswith((".onnx", ".plan")))
    assert not weights, f"model weights are fetched, never shipped: {weights}"


def _run(
    inst: Installed, home: Path, cwd: Path, *args: str, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(inst.bin("storesight")), *args], capture_output=True, text=True, timeout=timeout, check=False,
        cwd=cwd, env=outside_env(home, **env),
    )  # fmt: skip


@pytest.mark.timeout(1200)
def test_installed_storesight_runs_the_demo_from_anywhere(installed: Installed, clip: Path, tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    where = subprocess.run(
        [str(installed.bin("python")), "-c", "import plugin, plugin.resources as r; print(plugin.__file__); "
         "print(r.checkout_root()); print(r.shipped('triton_models/cpu'))"],
        capture_output=True, text=True, check=False, cwd=work, env=outside_env(home),
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    module, checkout, shipped = where.stdout.split("\n")[:3]
    assert Path(module).is_relative_to(installed.venv) and checkout == "None"
    assert Path(shipped).is_relative_to(installed.venv) and (Path(shipped) / "yolox_nano" / "config.pbtxt").is_file()

    config = work / "store-demo.yaml"
    shutil.copyfile(DEMO, config)
    clip_env = {"STORESIGHT_DEMO_CLIP": str(clip)}
    checked = _run(installed, home, work, "check-config", str(config), **clip_env)
    assert checked.returncode == 0, checked.stderr
    assert "OK (1 camera(s), 2 rule(s), 0 sink(s))" in checked.stdout

    fetched = _run(installed, home, work, "models", "fetch", STORESIGHT_MODELS_DIR=str(MODEL_FILE.parent))
    assert fetched.returncode == 0, fetched.stderr
    repository = home / ".local" / "share" / "storesight" / "triton_models" / "cpu"  # the installed default
    for placed in ("yolox_nano/config.pbtxt", "yolox_nano/1/model.py", "yolox_nano/1/yolox_nano.onnx"):
        assert (repository / placed).is_file(), fetched.stdout
        assert f"ok {repository / placed}" in fetched.stdout

    ran = _run(installed, home, work, "run", "--once", "-c", str(config), timeout=900, **clip_env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "6 incident(s)" in ran.stderr  # six people stand at the table in turn (tests/system/test_once.py)
    listed = _run(installed, home, work, "incidents", "-c", str(config), "--json", **clip_env)
    incidents = json.loads(listed.stdout)
    assert len(incidents) == 6 and {i["type"] for i in incidents} == {"loitering"}
    storage = yaml.safe_load(config.read_text())["storage"]["path"]
    assert (work / storage / "storesight.db").is_file()  # relative to where it ran, as the config says


def test_installed_bench_finds_its_rtsp_stand_in(installed: Installed, clip: Path, tmp_path: Path) -> None:
    require(rtsp_available())
    code = "from plugin.cli.bench.rtsp import RTSP_SCRIPT; print(RTSP_SCRIPT)"
    res = subprocess.run([str(installed.bin("python")), "-c", code], capture_output=True, text=True, check=False,
                         cwd=tmp_path, env=outside_env(tmp_path))  # fmt: skip
    script = Path(res.stdout.strip())
    assert script.is_file() and script.is_relative_to(installed.venv), res.stderr
    # the installed copy serves a stream, as the bench starts it (Debian's python3 with GStreamer's bindings)
    server = subprocess.Popen(
        ["/usr/bin/python3", str(script), "--address", "127.0.0.1", "--port", "0", "--mount", f"/cam00={clip}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=outside_env(tmp_path),
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("READY rtsp://127.0.0.1:"), server.stderr.read() if server.stderr else line
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_installed_milestone_sink_checks_against_the_shipped_xsd(installed: Installed, tmp_path: Path) -> None:
    code = (
        "from adapters.sinks.milestone.events import load_schema; from adapters.sinks.milestone.sink import "
        "default_xsd; p = default_xsd(); load_schema(p); print(p)"
    )
    res = subprocess.run([str(installed.bin("python")), "-c", code], capture_output=True, text=True, check=False,
                         cwd=tmp_path, env=outside_env(tmp_path))  # fmt: skip
    assert res.returncode == 0, res.stderr
    xsd = Path(res.stdout.strip())
    assert xsd.is_relative_to(installed.venv) and (xsd.parent / "LICENSE.md").is_file()


def test_installed_models_fetch_builds_the_stock_triton_graph(installed: Installed, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    res = subprocess.run(
        [str(installed.bin("storesight")), "models", "fetch", "--flavour", "onnx", "--repository", str(repo),
         "--from", str(MODEL_FILE.parent)],
        capture_output=True, text=True, check=False, cwd=tmp_path, env=outside_env(tmp_path), timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (repo / "yolox_nano" / "config.pbtxt").is_file() and (repo / "yolox_nano" / "1" / "model.onnx").is_file()
    assert not (repo / "yolox_nano" / "1" / "model.py").exists()  # nothing for a python backend


def test_installed_head_office_migrates_signs_in_and_serves_the_chain(
    installed: Installed, fresh_database: str, tmp_path: Path
) -> None:
    """`storesight hq serve` from the wheel alone: its SQL migrations and page templates are package data."""
    port, password = free_port(), "installed head office 42"
    env = outside_env(tmp_path, STORESIGHT_HQ_DATABASE_URL=fresh_database, STORESIGHT_ADMIN_PASSWORD=password)
    server = subprocess.Popen(
        [str(installed.bin("storesight")), "hq", "serve", "--listen", f"127.0.0.1:{port}"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        async def visit() -> tuple[int, str]:
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                for _ in range(600):  # until it listens (or died: then the assert below shows why)
                    if server.poll() is not None:
                        return -1, ""
                    try:
                        async with http.get(f"{base}/healthz") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
                await sign_in(http, base, "admin", password)
                async with http.get(f"{base}/") as resp:
                    return resp.status, await resp.text()

        status, page = asyncio.run(visit())
        assert status == 200, server.stderr.read() if server.poll() is not None and server.stderr else status
        assert "Chain overview" in page  # signed in: the chain page, from the installed templates
        versions = subprocess.run(
            [str(installed.bin("storesight")), "hq", "migrate"], capture_output=True, text=True, check=False,
            cwd=tmp_path, env=env, timeout=120,
        )  # fmt: skip
        assert versions.returncode == 0 and "head-office schema at version" in versions.stdout, versions.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
