"""The benchmark's in-process detector (plugin/inference/naive.py): which file and size the naive baseline runs."""

from __future__ import annotations

import numpy as np
from conftest import MODEL_FILE, require

from plugin.cli.bench.trial import naive_model_file
from plugin.inference.naive import OnnxYolox, YoloxSettings, read_model_parameters
from plugin.inference.repository import default_model_repository


def _settings() -> YoloxSettings:
    config = default_model_repository() / "yolox_nano" / "config.pbtxt"
    return YoloxSettings.from_parameters(read_model_parameters(config))


def test_the_baseline_runs_the_export_as_published_at_its_own_size_unless_told_served() -> None:
    require(None if MODEL_FILE.is_file() else f"{MODEL_FILE} missing: run `storesight models fetch`")
    settings = _settings()
    assert settings.input_size == 352  # what Triton serves
    published = naive_model_file("yolox_nano", "published")
    assert published.name == "yolox_nano.onnx"
    detector = OnnxYolox(published, settings, intra_op_threads=1, own_size=True)
    assert detector.settings.input_size == 416  # the export declares 1x3x416x416
    image = np.full((432, 768, 3), 114, np.uint8)
    assert len(detector.detect(image)) == 0  # runs at 416 (at 352 onnxruntime refuses the shape)
    served = naive_model_file("yolox_nano", "served")
    if served.name != published.name:  # the derived copy takes any size: it stays at the config's
        assert OnnxYolox(served, settings, intra_op_threads=1, own_size=True).settings.input_size == 352


def test_without_own_size_the_settings_decide() -> None:
    require(None if MODEL_FILE.is_file() else f"{MODEL_FILE} missing: run `storesight models fetch`")
    detector = OnnxYolox(naive_model_file("yolox_nano", "published"), _settings(), intra_op_threads=1)
    assert detector.settings.input_size == 352
