"""The Grafana dashboard (packaging/grafana/storesight.json) queries only metrics StoreSight exports: every panel's
PromQL is parsed and each metric name it selects is looked up in a real /metrics scrape of the running app (a camera
analysing the demo clip through a real tritonserver), which also shows the counters and the process collector."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import promql_parser
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from plugin.app import build_app
from plugin.config.loader import parse_config
from plugin.inference.server import EmbeddedTriton, free_port
from plugin.web.keys import CAMERAS

pytestmark = [pytest.mark.triton, pytest.mark.slow]

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
DASHBOARD = ROOT / "packaging" / "grafana" / "storesight.json"
WAIT_S = 120.0
# Grafana's own variables, replaced as Grafana would before the query reaches Prometheus
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "6h"}
USER_VARIABLE = re.compile(r"\$(\w+)")


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _selected_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression selects, parsed (not guessed with a regex)."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    expr = USER_VARIABLE.sub(".*", expr)  # $instance, $camera, $job: regex matchers (=~) in every query
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr!r}"
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit, None)
    return names


def _exported(text: str) -> dict[str, str]:
    """Every series name the exposition offers (counters' _total, histograms' _bucket/_sum/_count), and its type."""
    names: dict[str, str] = {}
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
    for family in text_string_to_metric_families(text):
        for suffix in suffixes.get(family.type, ("",)):
            names[family.name + suffix] = family.type
        for sample in family.samples:
            names[sample.name] = family.type
    return names


def test_every_panel_has_a_query_and_the_parser_sees_the_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = [p for p in _panels(dashboard) if p["type"] != "row"]
    assert len(panels) >= 12
    for panel in panels:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"
    used = {name for p in panels for t in p["targets"] for name in _selected_metrics(t["expr"])}
    # what the issue asks the dashboard to show
    for wanted in [
        "storesight_camera_state",  # cameras by state
        "storesight_frames_analysed_total",
        "storesight_motion_gate_frames_total",  # analysed and gated frames
        "storesight_detect_seconds_bucket",  # latency
        "storesight_outbox_pending",
        "storesight_outbox_dead",  # deliveries pending and dead by sink
        "storesight_triton_queue_seconds_total",
        "storesight_triton_compute_seconds_total",  # Triton queue and compute
        "storesight_incidents_total",  # incidents by rule
        "storesight_frames_dropped_total",
        "storesight_camera_reconnects_total",  # the totals that are counters now
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ]:
        assert wanted in used, wanted


async def test_every_metric_the_dashboard_queries_is_exported(
    triton: EmbeddedTriton, clip: Path, tmp_path: Path
) -> None:
    port = free_port()
    config = parse_config({
        "storage": {"path": str(tmp_path / "data")},
        "triton": {"url": triton.grpc_url},
        "web": {"port": port, "token": "t" * 24},
        "system_health": {"enabled": False},
        "cameras": [{"id": "cam1", "source": str(clip), "fps": 2, "realtime": True}],
        "sinks": [{"kind": "webhook", "id": "soc", "url": f"http://127.0.0.1:{free_port()}/hook"}],
    })  # fmt: skip
    app = build_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        deadline = time.monotonic() + WAIT_S
        while not (pipeline := app[CAMERAS].pipelines.get("cam1")) or pipeline.status.frames_detected < 2:
            assert time.monotonic() < deadline, "the camera analysed no frame"
            await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    finally:
        await runner.cleanup()

    exported = _exported(text)
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            missing = _selected_metrics(target["expr"]) - set(exported)
            assert not missing, f"panel {panel['title']!r} queries {sorted(missing)}, which StoreSight does not export"
    # totals are counters now, the process collector is there, and Triton's statistics arrived from the real server
    assert exported["storesight_frames_dropped_total"] == exported["storesight_camera_reconnects_total"] == "counter"
    assert exported["process_resident_memory_bytes"] == "gauge"
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {s.labels["model"]: s.value for s in families["storesight_triton_requests"].samples}
    assert requests.get("yolox_nano", 0) >= 2  # this app's detections at least (the session's server is shared)
    queue = {s.labels["model"]: s.value for s in families["storesight_triton_queue_seconds"].samples}
    compute = {
        (s.labels["model"], s.labels["phase"]): s.value for s in families["storesight_triton_compute_seconds"].samples
    }
    assert queue["yolox_nano"] > 0 and compute[("yolox_nano", "infer")] > 0
    analysed = [s for s in families["storesight_frames_analysed"].samples if s.name.endswith("_total")]
    assert analysed and analysed[0].labels == {"camera": "cam1"} and analysed[0].value >= 2
