"""Journeys, queues and staff on the real clip: `storesight run --once` with the session's tritonserver.

What the clip shows (checked frame by frame with the zones drawn on, see the README): six people, one at a time,
walk in from the bottom edge straight into the table zone, stand there for 11-25 s facing the table, and walk out
of the picture to the right. Their feet cross x = 0.65..0.85 only on the way out (2-5 analysed frames each), reach
the right strip x > 0.85 in the last 1-3 frames before they leave, and never go near the top-left corner.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import example, run_cli, write_config

pytestmark = [pytest.mark.triton, pytest.mark.slow]

START = "2026-11-29T14:00:00+00:00"
ZONES = [
    {"id": "exit", "polygon": [[0.85, 0], [1, 0], [1, 1], [0.85, 1]]},  # the right edge everyone leaves by
    {"id": "way-out", "polygon": [[0.65, 0.5], [0.85, 0.5], [0.85, 1], [0.65, 1]]},  # crossed on the way out
    {"id": "nowhere", "polygon": [[0, 0], [0.2, 0], [0.2, 0.2], [0, 0.2]]},  # the wall: nobody stands there
]
BYPASS = {"type": "checkout_bypass", "high_value_zones": ["table"], "exit_zone": "exit"}


@pytest.fixture(scope="module")
def journey_run(clip: Path, triton: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The clip as two cameras: cam1 with journey rules, cam2 where the table is a staff zone (so all are staff)."""
    tmp = tmp_path_factory.mktemp("journeys")
    doc = example()
    doc["storage"] = {"path": str(tmp / "data")}
    doc["triton"] = {"url": triton.grpc_url}
    cam1 = doc["cameras"][0]
    cam1.update(source=str(clip), start_time=START, staff_zones=["stockroom-door"])  # nobody starts there
    cam1["zones"] += ZONES
    cam2 = dict(cam1, id="cam2", staff_zones=["table"])  # everyone is first seen at the table: staff
    doc["cameras"].append(cam2)
    doc["rules"] = [
        BYPASS | {"id": "unpaid", "camera": "cam1", "checkout_zones": ["nowhere"]},
        BYPASS | {"id": "paid", "camera": "cam1", "checkout_zones": ["way-out"]},
        {"id": "table-queue", "type": "queue", "camera": "cam1", "zone": "table", "max_length": 1},
        {"id": "back-again", "type": "repeat_visit", "camera": "cam1", "zone": "table", "min_entries": 2},
        {"id": "exit-blocked", "type": "blocked_exit", "camera": "cam1", "zone": "exit", "min_duration_s": 5},
        {"id": "table-blocked", "type": "blocked_exit", "camera": "cam1", "zone": "table", "min_duration_s": 5},
        BYPASS | {"id": "staff-unpaid", "camera": "cam2", "checkout_zones": ["nowhere"]},
        {"id": "staff-dwell", "type": "loitering", "camera": "cam2", "zone": "table", "min_dwell_s": 8},
        {"id": "all-dwell", "type": "loitering", "camera": "cam2", "zone": "table", "min_dwell_s": 8},
        {"id": "back-office", "type": "staff_only", "camera": "cam2", "zone": "exit"},
    ]
    doc["rules"][8]["exclude_staff"] = False
    cfg = write_config(tmp / "store.yaml", doc)
    res = run_cli("run", "-c", str(cfg), "--once", timeout=300)
    listed = run_cli("incidents", "-c", str(cfg), "--json")
    insights = run_cli("insights", "-c", str(cfg), "--from", "2026-11-29T14:00", "--to", "2026-11-29T15:00", "--json")
    return {"run": res, "incidents": listed, "insights": insights}


def _incidents(run: dict[str, Any], rule_id: str) -> list[dict[str, Any]]:
    assert run["run"].returncode == 0, run["run"].stderr[-3000:]
    return [i for i in json.loads(run["incidents"].stdout) if i["rule_id"] == rule_id]


def test_checkout_bypass_on_the_clip(journey_run: dict[str, Any]) -> None:
    # checkout nobody visits: each of the six people visited the table and left by the right edge unpaid
    unpaid = _incidents(journey_run, "unpaid")
    assert len(unpaid) == 6
    assert len({i["track_ids"][0] for i in unpaid}) == 6 and all(len(i["track_ids"]) == 1 for i in unpaid)
    for inc in unpaid:
        assert inc["type"] == "checkout_bypass" and inc["state"] == "end" and inc["zone"] == "exit"
        assert inc["severity"] == "critical"
        assert inc["explanation"].startswith(f"Person #{inc['track_ids'][0]} was in high-value zone table 14:0")
        assert "then reached exit zone exit at 14:0" in inc["explanation"]
        assert inc["explanation"].endswith("without passing checkout zone nowhere on cam1")
        assert inc["details"]["visit_s"] > 8  # each stood at the table 11-25 s
        assert inc["details"]["box"][2] > 0.85  # the snapshot shows them at the right edge
        assert Path(inc["snapshot"]).is_file()
    # a checkout everyone crosses on the way out: nobody bypassed it
    assert _incidents(journey_run, "paid") == []


def test_queue_blocked_exit_and_repeat_visit_on_the_clip(journey_run: dict[str, Any]) -> None:
    assert journey_run["insights"].returncode == 0, journey_run["insights"].stderr
    doc = json.loads(journey_run["insights"].stdout)
    queue = doc["queues"]["table-queue"]
    # one person at a time at the table: never longer than one, so no "open another lane"
    assert queue["zone"] == "table" and queue["max_length"] == 1
    assert 0 < queue["avg_length"] < 1
    assert 0 < queue["max_wait_s"] < 140
    assert _incidents(journey_run, "table-queue") == []
    assert set(doc["lines"]) == set() and "occupancy" in doc  # existing keys stay
    # everyone stands still at the table for more than 5 s, one after another: six obstructions, one each
    table = _incidents(journey_run, "table-blocked")
    assert len(table) == 6 and len({i["track_ids"][0] for i in table}) == 6
    assert all("blocked by a person standing still" in i["explanation"] for i in table)
    # people only walk through the right edge: never an obstruction there
    assert _incidents(journey_run, "exit-blocked") == []
    # each person goes to the table once
    assert _incidents(journey_run, "back-again") == []


def test_staff_are_left_out_of_customer_rules(journey_run: dict[str, Any]) -> None:
    # cam2: the table is a staff zone and everyone is first seen there, so all six are staff
    assert _incidents(journey_run, "staff-unpaid") == []
    assert _incidents(journey_run, "staff-dwell") == []
    assert _incidents(journey_run, "back-office") == []  # staff walking into the exit strip are allowed there
    assert len(_incidents(journey_run, "all-dwell")) == 6  # exclude_staff: false sees them as before
