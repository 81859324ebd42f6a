"""`storesight models verify --url`: against the real embedded tritonserver every check passes; against a server
whose model config breaks the contract, or without the model, or not there at all, it fails naming what is wrong."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
from conftest import MODEL_FILE, require
from helpers import frame_300, run_cli

from plugin.inference.server import EmbeddedTriton, free_port

pytestmark = [pytest.mark.triton]

REPO_ROOT = Path(__file__).resolve().parents[4]


def _lines(stdout: str) -> dict[str, str]:
    """The report's check lines by check name (the last of a name: 'people' has one per frame)."""
    out = {}
    for line in stdout.splitlines()[1:-1]:
        status, name, detail = line.split(maxsplit=2)
        out[name] = f"{status} {detail}"
    return out


def test_the_embedded_server_passes_every_check(triton: EmbeddedTriton, clip: Path) -> None:
    env = {**os.environ, "STORESIGHT_MEDIA_DIR": str(clip.parent)}
    res = run_cli("models", "verify", "--url", triton.grpc_url, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == f"verify {triton.grpc_url}, model yolox_nano"
    assert [line.split()[:2] for line in lines[1:-1]] == [
        ["ok", "server"], ["ok", "model"], ["ok", "input"], ["ok", "outputs"], ["ok", "parameters"],
        ["ok", "people"], ["ok", "people"],
    ]  # fmt: skip
    assert "demo clip frame 300: 1 person, as expected, each where expected" in res.stdout
    assert "demo clip frame 900: 0 people, as expected" in res.stdout
    assert lines[-1] == "all 7 checks passed"
    over_http = run_cli("models", "verify", "--url", triton.http_url, "--json", env=env)
    assert over_http.returncode == 0, over_http.stdout


def test_an_image_with_another_count_of_people_fails(triton: EmbeddedTriton, clip: Path, tmp_path: Path) -> None:
    image = tmp_path / "one-person.png"
    cv2.imwrite(str(image), frame_300(clip))
    ok = run_cli("models", "verify", "--url", triton.grpc_url, "--image", str(image), "--expect-people", "1")
    assert ok.returncode == 0, ok.stdout
    wrong = run_cli("models", "verify", "--url", triton.grpc_url, "--image", str(image), "--expect-people", "2")
    assert wrong.returncode == 1
    assert _lines(wrong.stdout)["people"] == "FAIL one-person.png: 1 person found, 2 expected (person score >= 0.35)"


def test_a_missing_model_and_an_unreachable_server_fail(triton: EmbeddedTriton) -> None:
    missing = run_cli("models", "verify", "--url", triton.grpc_url, "--model", "yolox_large")
    assert missing.returncode == 1
    assert _lines(missing.stdout)["model"].startswith("FAIL no model 'yolox_large' in the server's repository (it has:")
    port = free_port()
    down = run_cli("models", "verify", "--url", f"grpc://127.0.0.1:{port}")
    assert down.returncode == 1 and _lines(down.stdout)["server"].startswith(
        f"FAIL no answer from grpc://127.0.0.1:{port}"
    )
    assert "Traceback" not in missing.stderr + down.stderr


@pytest.fixture
def wrong_server(tmp_path: Path) -> Iterator[EmbeddedTriton]:
    """A real tritonserver whose yolox_nano config says classes are INT64 (the contract: INT32). The python model
    loads (its config is not checked against the code until a request), so only a check of the config finds it."""
    require(None if MODEL_FILE.is_file() else f"{MODEL_FILE} missing: run `storesight models fetch`")
    repo = tmp_path / "repo" / "yolox_nano"
    shutil.copytree(REPO_ROOT / "triton_models" / "cpu" / "yolox_nano", repo, ignore=shutil.ignore_patterns("*.onnx"))
    (repo / "1" / "yolox_nano.onnx").symlink_to(MODEL_FILE)
    # the copy the flavour runs at its 352 px (the shipped file takes 416 only)
    batch_copy = MODEL_FILE.with_name("yolox_nano.batch.onnx")
    require(None if batch_copy.is_file() else f"{batch_copy} missing: run `storesight models fetch`")
    (repo / "1" / batch_copy.name).symlink_to(batch_copy)
    config = repo / "config.pbtxt"
    text = config.read_text()
    wrong = text.replace('{ name: "classes", data_type: TYPE_INT32', '{ name: "classes", data_type: TYPE_INT64')
    assert wrong != text
    config.write_text(wrong)
    server = EmbeddedTriton(model_repository=repo.parent, cache_dir=tmp_path / "cache")
    server.start()
    try:
        server.wait_ready("yolox_nano", 90)
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_a_config_that_breaks_the_contract_fails_naming_the_mismatch(wrong_server: EmbeddedTriton) -> None:
    res = run_cli("models", "verify", "--url", wrong_server.grpc_url)
    assert res.returncode == 1
    lines = _lines(res.stdout)
    assert lines["server"].startswith("ok") and lines["model"].startswith("ok") and lines["input"].startswith("ok")
    assert lines["outputs"] == "FAIL classes is TYPE_INT64, the contract says TYPE_INT32"
    assert lines["people"] == "FAIL not run: the model does not follow the contract (above)"
    assert res.stdout.splitlines()[-1] == "2 of 6 failed"
