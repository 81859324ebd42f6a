"""The model repository's flavours (triton_models/cpu, onnx, gpu): each config.pbtxt parses as a Triton model config
(the protobuf text format, through tritonclient's model_config_pb2) and honours the detector contract; the flavours
agree on what the bridge and the graph read; and `models fetch --flavour` fills a repository anywhere."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import MODEL_FILE, require
from google.protobuf import json_format, text_format
from helpers import run_cli
from tritonclient.grpc import model_config_pb2

from plugin.errors import ModelError
from plugin.inference.repository import (
    FLAVOURS,
    default_model_repository,
    install_configs,
    shipped_repository,
)
from plugin.inference.verify import check_contract

REPO_ROOT = Path(__file__).resolve().parents[4]
SHARED_PARAMETERS = (
    "input_size",
    "strides",
    "score_threshold",
    "nms_iou",
    "max_detections",
    "letterbox",
    "class_names",
)


def load_config(flavour: str, model: str = "yolox_nano") -> Any:
    """A shipped config, parsed strictly (an unknown field or a typo is a ParseError)."""
    text = (REPO_ROOT / "triton_models" / flavour / model / "config.pbtxt").read_text()
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def as_json(config: Any) -> dict[str, Any]:
    """The config as Triton's JSON (what get_model_config returns), for the contract check the bridge's verify uses."""
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def parameters(config: Any) -> dict[str, str]:
    return {k: v.string_value for k, v in config.parameters.items()}


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_each_flavour_parses_and_follows_the_contract(flavour: str) -> None:
    config = load_config(flavour)
    assert config.name == "yolox_nano"
    checks = check_contract(as_json(config))
    assert [c.name for c in checks] == ["input", "outputs", "parameters"]
    assert all(c.ok for c in checks), [c.detail for c in checks if not c.ok]


def test_a_typo_in_a_config_is_a_parse_error() -> None:
    # the strict parser is what makes the test above mean something
    text = (REPO_ROOT / "triton_models" / "gpu" / "yolox_nano" / "config.pbtxt").read_text()
    with pytest.raises(text_format.ParseError, match="max_batch_sise"):
        text_format.Parse(text.replace("max_batch_size", "max_batch_sise"), model_config_pb2.ModelConfig())


def test_the_contract_check_names_a_mismatch() -> None:
    config = as_json(load_config("onnx"))
    config["output"][2]["data_type"] = "TYPE_INT64"
    config["input"][0]["dims"] = ["320", "416", "3"]
    outputs = {c.name: c for c in check_contract(config)}
    assert (
        not outputs["outputs"].ok and "classes is TYPE_INT64, the contract says TYPE_INT32" in outputs["outputs"].detail
    )
    assert not outputs["input"].ok and "images_u8 dims [320, 416, 3]" in outputs["input"].detail


def test_the_flavours_agree_on_what_the_bridge_and_the_graph_read() -> None:
    cpu = parameters(load_config("cpu"))
    for flavour in ("onnx", "gpu"):
        other = parameters(load_config(flavour))
        assert {k: other.get(k) for k in SHARED_PARAMETERS} == {k: cpu[k] for k in SHARED_PARAMETERS}, flavour


def test_the_stock_triton_flavours_need_no_python() -> None:
    for flavour in ("onnx", "gpu"):
        config = load_config(flavour)
        assert config.platform == "onnxruntime_onnx" and config.backend == ""
        assert not list((REPO_ROOT / "triton_models" / flavour).rglob("*.py"))
    cpu_groups = load_config("onnx").instance_group
    assert [g.kind for g in cpu_groups] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]


def test_the_gpu_flavour_batches_many_cameras_on_tensorrt_fp16() -> None:
    config = load_config("gpu")
    groups = config.instance_group
    assert groups and all(g.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU for g in groups)
    assert config.max_batch_size >= 32
    batching = config.dynamic_batching
    assert batching.max_queue_delay_microseconds > 0
    assert batching.preferred_batch_size and max(batching.preferred_batch_size) <= config.max_batch_size
    (trt,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
    # one TensorRT engine profile covering every batch Triton may form, and a warm-up inside it
    size = int(parameters(config)["input_size"])
    assert trt.parameters["trt_profile_max_shapes"] == f"images_u8:{config.max_batch_size}x{size}x{size}x3"
    assert trt.parameters["trt_profile_min_shapes"] == f"images_u8:1x{size}x{size}x3"
    assert all(w.batch_size <= config.max_batch_size for w in config.model_warmup)


def test_default_repository_in_a_checkout_and_with_a_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STORESIGHT_DATA_DIR", raising=False)
    assert default_model_repository("gpu") == REPO_ROOT / "triton_models" / "gpu"
    assert shipped_repository("cpu") == REPO_ROOT / "triton_models" / "cpu"
    monkeypatch.setenv("STORESIGHT_DATA_DIR", str(tmp_path))
    assert default_model_repository() == tmp_path / "triton_models" / "cpu"
    with pytest.raises(ModelError, match="unknown model flavour 'tpu'"):
        default_model_repository("tpu")


def test_install_configs_copies_replaces_and_leaves_the_shipped_folder_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = tmp_path / "repo"
    written = install_configs("cpu", repo)
    assert {p.relative_to(repo).as_posix() for p in written} == {
        "yolox_nano/config.pbtxt", "yolox_nano/1/model.py", "movenet/config.pbtxt", "movenet/1/model.py",
    }  # fmt: skip
    (repo / "yolox_nano" / "config.pbtxt").write_text("# tuned by hand\n")
    assert install_configs("cpu", repo) == [repo / "yolox_nano" / "config.pbtxt"]
    assert "differed from the shipped cpu flavour: replaced" in caplog.text
    assert install_configs("cpu", repo) == []
    assert install_configs("cpu", REPO_ROOT / "triton_models" / "cpu") == []
    # only the models asked for: a config without its weights would stop a stock Triton
    detector_only = install_configs("cpu", tmp_path / "repo2", ["yolox_nano"])
    assert {p.relative_to(tmp_path / "repo2").parts[0] for p in detector_only} == {"yolox_nano"}


@pytest.mark.slow
def test_fetch_fills_each_flavour_and_keeps_a_current_graph(tmp_path: Path) -> None:
    require(None if MODEL_FILE.is_file() else f"{MODEL_FILE} missing: run `storesight models fetch`")
    env = {**os.environ, "STORESIGHT_DATA_DIR": str(tmp_path / "data")}
    for flavour in ("onnx", "gpu"):
        res = run_cli("models", "fetch", "--flavour", flavour, "--from", str(MODEL_FILE.parent), env=env)
        assert res.returncode == 0, res.stderr
        graph = tmp_path / "data" / "triton_models" / flavour / "yolox_nano" / "1" / "model.onnx"
        assert f"ok {graph}" in res.stdout and graph.stat().st_size > 3_000_000
    built = graph.stat().st_mtime_ns
    again = run_cli("models", "fetch", "--flavour", "gpu", "--from", str(MODEL_FILE.parent), env=env)
    assert again.returncode == 0 and graph.stat().st_mtime_ns == built  # same source and settings: kept
    graph.write_bytes(b"not a graph")
    rebuilt = run_cli("models", "fetch", "--flavour", "gpu", "--from", str(MODEL_FILE.parent), env=env)
    assert rebuilt.returncode == 0 and graph.stat().st_size > 3_000_000
    pose = run_cli("models", "fetch", "--flavour", "onnx", "--model", "movenet_lightning.onnx", env=env)
    assert pose.returncode == 1 and "the onnx flavour has only the detector" in pose.stderr
