"""Totals kept by a camera source (dropped frames, reconnects) become Prometheus counters: each look adds what the
total grew by, and a restarted pipeline's fresh source counts on from zero instead of going backwards."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from plugin.metrics import Metrics


def _value(metrics: Metrics, family: str, camera: str) -> float:
    text = generate_latest(metrics.registry).decode()
    fam = next(f for f in text_string_to_metric_families(text) if f.name == family)
    assert fam.type == "counter"
    return next(s.value for s in fam.samples if s.name == f"{family}_total" and s.labels == {"camera": camera})


def test_a_total_feeds_a_counter_across_a_restart() -> None:
    metrics = Metrics()
    first, second = object(), object()
    metrics.advance(metrics.frames_dropped, "cam1", 0, first)
    assert _value(metrics, "storesight_frames_dropped", "cam1") == 0  # the series exists from the first look
    metrics.advance(metrics.frames_dropped, "cam1", 5, first)
    metrics.advance(metrics.frames_dropped, "cam1", 5, first)  # unchanged: nothing added
    metrics.advance(metrics.frames_dropped, "cam1", 7, first)
    assert _value(metrics, "storesight_frames_dropped", "cam1") == 7
    # the pipeline restarted: its new source counts from 0, and only what it adds is added
    metrics.advance(metrics.frames_dropped, "cam1", 3, second)
    assert _value(metrics, "storesight_frames_dropped", "cam1") == 10
    # another counter and another camera keep their own totals
    metrics.advance(metrics.reconnects, "cam1", 2, second)
    metrics.advance(metrics.frames_dropped, "cam2", 1, object())
    assert _value(metrics, "storesight_camera_reconnects", "cam1") == 2
    assert _value(metrics, "storesight_frames_dropped", "cam2") == 1
    assert _value(metrics, "storesight_frames_dropped", "cam1") == 10


def test_the_process_collector_is_on_the_apps_registry() -> None:
    names = {f.name for f in text_string_to_metric_families(generate_latest(Metrics().registry).decode())}
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds"} <= names
