"""The real tritonserver with the project's model repository: detection, contract, and clear failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import run_cli, write_config

from plugin.errors import InferenceUnavailable, ModelError
from plugin.inference.server import DEFAULT_MODEL_REPOSITORY, EmbeddedTriton, free_port
from plugin.inference.triton import TritonInferenceClient

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def person_frame(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Frame 300 of the clip: one person standing at the table."""
    cap = cv2.VideoCapture(str(clip))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 300)
    ok, img = cap.read()
    cap.release()
    assert ok
    path = tmp_path_factory.mktemp("frames") / "frame300.jpg"
    cv2.imwrite(str(path), img)
    return path


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_detect_cli_finds_the_person(triton: EmbeddedTriton, person_frame: Path, scheme: str) -> None:
    url = triton.grpc_url if scheme == "grpc" else triton.http_url
    res = run_cli("detect", "--json", "--triton-url", url, str(person_frame))
    assert res.returncode == 0, res.stderr
    [result] = json.loads(res.stdout)
    people = [d for d in result["detections"] if d["class"] == "person" and d["score"] > 0.5]
    assert len(people) == 1
    x1, y1, x2, y2 = people[0]["box"]
    # the person stands right of centre, head near the top, feet in the lower part of the 768x432 frame
    assert 330 < x1 < 430 and 500 < x2 < 600 and y1 < 40 and 330 < y2 <= 432


async def test_batch_follows_the_tensor_contract(triton: EmbeddedTriton, person_frame: Path) -> None:
    client = TritonInferenceClient(triton.grpc_url, "yolox_nano")
    try:
        info = await client.wait_ready(10)
        assert info.input_size == 352 and info.class_names[0] == "person" and len(info.class_names) == 80
        img = cv2.imread(str(person_frame))
        blank = np.full_like(img, 114)
        results = await client.detect([img, blank, img])
        assert [int((r.class_ids == 0).sum() > 0) for r in results] == [1, 0, 1]
        np.testing.assert_allclose(results[0].xyxy, results[2].xyxy, atol=1e-3)
    finally:
        await client.close()


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY, repo, ignore=shutil.ignore_patterns("*.onnx", "__pycache__"))
    server = EmbeddedTriton(model_repository=repo, cache_dir=tmp_path / "cache")
    server.start()
    try:
        with pytest.raises(ModelError, match=r"model file missing: .*yolox_nano.onnx; run `storesight models fetch`"):
            server.wait_ready("yolox_nano", 60)
    finally:
        server.stop()


def test_missing_model_file_via_cli(tmp_path: Path, person_frame: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY, repo, ignore=shutil.ignore_patterns("*.onnx", "__pycache__"))
    cfg = write_config(
        tmp_path / "c.yaml", {"storage": {"path": str(tmp_path / "data")}, "triton": {"model_repository": str(repo)}}
    )
    res = run_cli("detect", "-c", str(cfg), str(person_frame))
    assert res.returncode == 1
    assert "model file missing" in res.stderr and "storesight models fetch" in res.stderr
    assert "Traceback" not in res.stderr


async def test_unreachable_triton_fails_after_a_bounded_wait(tmp_path: Path, person_frame: Path) -> None:
    url = f"grpc://127.0.0.1:{free_port()}"
    client = TritonInferenceClient(url, "yolox_nano")
    try:
        assert await client.ready() is False
        with pytest.raises(InferenceUnavailable, match="unreachable"):
            await client.wait_ready(1.0)
    finally:
        await client.close()
    cfg = write_config(tmp_path / "c.yaml", {"triton": {"url": url, "ready_timeout_s": 2}})
    res = run_cli("detect", "-c", str(cfg), str(person_frame), timeout=60)
    assert res.returncode == 1
    assert f"Triton at {url} is unreachable" in res.stderr
    assert "Traceback" not in res.stderr


def test_unreadable_image_is_a_clear_error(tmp_path: Path, triton: EmbeddedTriton) -> None:
    bad = tmp_path / "not-an-image.jpg"
    bad.write_text("hello")
    res = run_cli("detect", "--triton-url", triton.grpc_url, str(bad))
    assert res.returncode == 1
    assert "not a readable image" in res.stderr and "Traceback" not in res.stderr
