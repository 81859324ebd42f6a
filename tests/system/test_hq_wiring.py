"""The bridge's app with a `kind: hq` sink: the sink is a record sink, the hourly records run for it alone, and a
bridge without one runs no hourly records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from plugin.app import database_ctx, hourly_records_ctx, new_app, sinks_ctx
from plugin.config.loader import parse_config
from plugin.web.keys import HOURLY, RECORD_SINKS


def config(tmp_path: Path, sinks: list[dict[str, Any]]) -> Any:
    """A small store's config with these sinks."""
    return parse_config({
        "site": {"id": "berlin-1", "timezone": "Europe/Berlin"},
        "storage": {"path": str(tmp_path / "data")},
        "cameras": [{"id": "cam1", "source": str(tmp_path / "none.mp4"), "zones": [
            {"id": "q", "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]]}]}],
        "rules": [{"id": "queue-1", "type": "queue", "camera": "cam1", "zone": "q", "max_length": 4}],
        "sinks": sinks,
    })  # fmt: skip


HQ = {"kind": "hq", "id": "head-office", "url": "http://127.0.0.1:9", "store": "berlin-1", "token": "t" * 32}
HOOK = {"kind": "webhook", "id": "hook", "url": "http://127.0.0.1:9/hook"}


async def test_hq_sink_gets_the_hourly_records_with_queue_limits(tmp_path: Path) -> None:
    app = new_app(config(tmp_path, [HQ, HOOK]))
    app.cleanup_ctx.extend([database_ctx, sinks_ctx, hourly_records_ctx])
    async with TestClient(TestServer(app)):
        assert app[RECORD_SINKS] == ["head-office"]
        hourly = app[HOURLY]
        assert hourly is not None and hourly.sink_ids == ["head-office"]
        assert hourly.limits == {"queue-1": {"max_length": 4, "max_wait_s": None}}
        assert hourly.rules["queue-1"]["type"] == "queue"


async def test_no_record_sink_no_hourly_records(tmp_path: Path) -> None:
    app = new_app(config(tmp_path, [HOOK]))
    app.cleanup_ctx.extend([database_ctx, sinks_ctx, hourly_records_ctx])
    async with TestClient(TestServer(app)):
        assert app[RECORD_SINKS] == [] and app[HOURLY] is None
