"""`storesight models fetch` and MoveNet: no upstream download exists, so only a local directory provides it."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from conftest import require
from helpers import run_cli

from plugin.inference.server import REPO_ROOT

SHARED_MODELS = REPO_ROOT.parent / "shared" / "models"
MOVENET_SHA256 = "8d38bf70b637c919c3ec147a955648538a399a7e53f9b880e505b3966f191fe8"


def test_movenet_from_a_local_directory_is_verified_and_placed(tmp_path: Path) -> None:
    src = SHARED_MODELS / "movenet_lightning.onnx"
    require(None if src.is_file() else f"{src} missing")
    res = run_cli("models", "fetch", "--from", str(SHARED_MODELS), "--repository", str(tmp_path / "repo"))
    assert res.returncode == 0, res.stderr
    placed = tmp_path / "repo" / "movenet" / "1" / "movenet_lightning.onnx"
    assert hashlib.sha256(placed.read_bytes()).hexdigest() == MOVENET_SHA256
    assert f"ok {placed}" in res.stdout
    # a different file under the name is refused, naming both hashes
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "movenet_lightning.onnx").write_bytes(b"some other conversion")
    res = run_cli(
        "models", "fetch", "--from", str(bad), "--model", "movenet_lightning.onnx", "--repository", str(tmp_path / "r2")
    )
    assert res.returncode == 1 and MOVENET_SHA256 in res.stderr and "--accept-sha256" in res.stderr


def test_movenet_without_a_directory_is_a_clear_error_when_asked_for(tmp_path: Path) -> None:
    res = run_cli(
        "models", "fetch", "--model", "movenet_lightning.onnx", "--repository", str(tmp_path / "repo"), env=_no_dir()
    )
    assert res.returncode == 1
    assert "movenet_lightning.onnx has no download" in res.stderr and "--from DIR" in res.stderr
    assert "tf2onnx" in res.stderr and "Traceback" not in res.stderr
    unknown = run_cli("models", "fetch", "--model", "nope.onnx", "--repository", str(tmp_path / "repo"), env=_no_dir())
    assert unknown.returncode == 1 and "unknown model 'nope.onnx'" in unknown.stderr


def test_fetching_everything_skips_movenet_with_a_warning_when_no_directory_has_it(tmp_path: Path) -> None:
    src = SHARED_MODELS / "yolox_nano.onnx"
    require(None if src.is_file() else f"{src} missing")
    only_yolox = tmp_path / "models"
    only_yolox.mkdir()
    shutil.copyfile(src, only_yolox / "yolox_nano.onnx")
    res = run_cli("models", "fetch", "--from", str(only_yolox), "--repository", str(tmp_path / "repo"))
    assert res.returncode == 0, res.stderr
    assert "movenet_lightning.onnx skipped" in res.stderr and "pose rules cannot run" in res.stderr
    assert (tmp_path / "repo" / "yolox_nano" / "1" / "yolox_nano.onnx").is_file()
    assert not (tmp_path / "repo" / "movenet").exists()


def _no_dir() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("STORESIGHT_MODELS_DIR", None)
    return env
