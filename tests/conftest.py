"""Shared fixtures: real components (tritonserver, RTSP server) started once per test session.

In CI (CI=true) a missing component fails the test; on a developer machine it skips with the reason.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugin.inference.server import DEFAULT_MODEL_REPOSITORY, REPO_ROOT, EmbeddedTriton

# Session fixtures that several test modules share and that must exist once (a fixture imported into two modules
# is two fixtures): the wheel and its staging installation, and the PostgreSQL server head office tests use.
pytest_plugins = ["components.installed", "components.postgres"]

IN_CI = os.environ.get("CI") == "true"
log = logging.getLogger(__name__)
MODEL_FILE = DEFAULT_MODEL_REPOSITORY / "yolox_nano" / "1" / "yolox_nano.onnx"


def require(reason: str | None) -> None:
    """Fail (CI) or skip (elsewhere) when a component is missing."""
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"required component missing in CI: {reason}")
    pytest.skip(reason)


def media_dir() -> Path:
    """$STORESIGHT_MEDIA_DIR, else the workplace's shared media next to the checkout."""
    env = os.environ.get("STORESIGHT_MEDIA_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "media"


@pytest.fixture(scope="session")
def clip() -> Path:
    """The real indoor clip: six people, one at a time, stand at a table (768x432, 10 fps, 139 s)."""
    path = media_dir() / "one-by-one-person-detection.mp4"
    require(None if path.is_file() else f"demo clip not found at {path} (set STORESIGHT_MEDIA_DIR)")
    return path


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedTriton]:
    """A real tritonserver serving the project's triton_models/cpu repository."""
    try:
        import pytriton  # noqa: F401
    except ImportError:
        require("nvidia-pytriton is not installed")
    require(None if MODEL_FILE.is_file() else f"{MODEL_FILE} missing: run `storesight models fetch`")
    server = EmbeddedTriton(cache_dir=tmp_path_factory.mktemp("triton"))
    server.start()
    try:
        server.wait_ready("yolox_nano", 90)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def zoneminder() -> Iterator[None]:
    """A running ZoneMinder on 127.0.0.1 (packaging/dev/zoneminder.sh sets up and starts what is missing). What this
    session started is stopped at its end, even when tests failed; a ZoneMinder that ran before is left running.
    Run `-m zoneminder` tests under `flock /tmp/storesight-zoneminder.lock`: the service is machine-wide."""
    from components.zoneminder import ensure_zoneminder, stop_zoneminder

    reason, took, started = ensure_zoneminder()
    try:
        require(reason)
        log.info("ZoneMinder checked in %.1f s; started by this session: %s", took, ", ".join(started) or "nothing")
        yield
    finally:
        problem = stop_zoneminder(started)
        if problem is not None:
            pytest.fail(f"ZoneMinder started by this session was not stopped: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    """Path of the ffmpeg binary."""
    path = shutil.which("ffmpeg")
    require(None if path else "ffmpeg is not installed")
    assert path is not None
    return path
