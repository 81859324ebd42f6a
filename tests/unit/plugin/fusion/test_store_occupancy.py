"""Store occupancy fused from entrance lines: the count (never below zero, drift recorded), the closing reset,
overcrowding incidents, state that survives a restart, insights, config errors; and `run --once` on the real clip."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import example, line_rule, run_cli, walk, write_config

from plugin.config.loader import parse_config
from plugin.config.occupancy import StoreOccupancyConfig
from plugin.errors import ConfigError
from plugin.fusion.store_occupancy import StoreOccupancy, StoreOccupancyService
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.explain import Explainer
from plugin.incidents.manager import IncidentManager
from plugin.insights.rollups import InsightsRecorder, summarise
from plugin.rules.base import Measurement, RuleHit
from plugin.types import Frame

T0 = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)  # a Sunday afternoon; London is on UTC in November
LINES = {"front": "cam1", "back": "cam2"}  # two entrances, each seen by its own camera


def cfg(**kw: Any) -> StoreOccupancyConfig:
    """Store occupancy over the front and back doors."""
    return StoreOccupancyConfig.model_validate({"id": "store", "lines": ["front", "back"]} | kw)


def crossing(line: str, metric: str, t_s: float, track_id: int = 1) -> Measurement:
    """What the pipeline passes on for a crossing of `line` (on its camera) at T0 + t_s."""
    return Measurement(line, LINES.get(line, "cam9"), T0 + timedelta(seconds=t_s), metric, 1.0, "count", "person",
                       track_id=track_id)  # fmt: skip


def counts(occ: StoreOccupancy, events: list[tuple[str, str, float]]) -> list[float]:
    """Feed crossings (line, in/out, seconds) in order; the gauge samples they give."""
    samples: list[float] = []
    for line, metric, t_s in events:
        m = crossing(line, metric, t_s)
        if occ.feeds(m):
            samples += [o.value for o in occ.crossing(m) if isinstance(o, Measurement) and o.metric == "store_people"]
    return samples


@pytest.mark.parametrize(
    ("events", "expected", "drift"),
    [
        ([], [], 0),
        ([("front", "in", 0), ("back", "in", 1), ("front", "out", 2)], [1, 2, 1], 0),
        ([("front", "in", 0), ("back", "out", 1)], [1, 0], 0),  # in at one door, out at the other
        ([("back", "out", 0)], [0], 1),  # nobody inside: never below zero, the out is drift
        ([("front", "in", 0), ("front", "out", 1), ("back", "out", 2), ("back", "in", 3)], [1, 0, 0, 1], 1),
        ([("side", "in", 0), ("side", "in", 1)], [], 0),  # a line this count does not name
        ([("front", "people", 0)], [], 0),  # not a crossing
    ],
)
def test_count_from_two_entrances(events: list[tuple[str, str, float]], expected: list[float], drift: int) -> None:
    occ = StoreOccupancy(cfg(), "UTC")
    assert counts(occ, events) == expected
    assert occ.state.out_at_zero == drift
    assert occ.state.people == (expected[-1] if expected else 0)


def test_out_at_zero_is_recorded_per_line_and_camera() -> None:
    occ = StoreOccupancy(cfg(), "UTC")
    outs = occ.crossing(crossing("back", "out", 5))
    drift = [o for o in outs if isinstance(o, Measurement) and o.metric == "out_at_zero"]
    assert [(d.rule_id, d.camera, d.key, d.value, d.kind) for d in drift] == [("store", "cam2", "back", 1.0, "count")]


@pytest.mark.parametrize(
    ("reset_at", "timezone", "at", "expected"),
    [
        (None, None, T0, None),
        ("22:00", None, T0, datetime(2026, 11, 28, 22, 0, tzinfo=UTC)),  # before today's closing: yesterday's
        ("13:00", None, T0, datetime(2026, 11, 29, 13, 0, tzinfo=UTC)),
        ("14:00", None, T0, T0),  # exactly at closing
        ("22:00", "America/New_York", T0, datetime(2026, 11, 29, 3, 0, tzinfo=UTC)),  # 22:00 EST is 03:00 UTC
        ("22:00", "Europe/Berlin", T0, datetime(2026, 11, 28, 21, 0, tzinfo=UTC)),
    ],
)
def test_last_closing_in_local_time(reset_at: str | None, timezone: str | None, at: datetime, expected: Any) -> None:
    occ = StoreOccupancy(cfg(reset_at=reset_at, timezone=timezone), "Europe/London")
    assert occ.last_closing(at) == expected


def test_reset_at_closing_records_the_drift() -> None:
    occ = StoreOccupancy(cfg(reset_at="22:00"), "Europe/London")
    counts(occ, [("front", "in", 0), ("front", "in", 1), ("back", "out", 2), ("back", "in", 3), ("front", "out", 4)])
    counts(occ, [("back", "out", 5), ("back", "out", 6)])  # one more out than ins: the second is drift
    assert (occ.state.people, occ.state.out_at_zero) == (0, 1)
    counts(occ, [("front", "in", 7), ("front", "in", 8)])  # two people never seen leaving
    assert occ.advance(T0 + timedelta(hours=7, minutes=59)) == []  # 21:59: still open
    closing = datetime(2026, 11, 29, 22, 0, tzinfo=UTC)
    outs = occ.advance(closing + timedelta(seconds=3))
    metrics = {o.metric: (o.value, o.t, o.camera) for o in outs if isinstance(o, Measurement)}
    assert metrics == {
        "resets": (1.0, closing, ""),
        "reset_removed": (2.0, closing, ""),
        "store_people": (0, closing, ""),
    }
    assert [(r.at, r.removed, r.out_at_zero) for r in occ.resets] == [(closing, 2, 1)]
    assert (occ.state.people, occ.state.out_at_zero, occ.state.last_reset) == (0, 0, closing)
    assert occ.advance(closing + timedelta(hours=1)) == []  # one reset per closing
    # a camera lagging behind reports a crossing from before the reset: its day is over, not counted
    assert counts(occ, [("front", "in", 7.5 * 3600)]) == []


@pytest.mark.parametrize(
    ("events", "ticks", "expected"),
    [
        ([], [10], []),
        # 3 people from t=2 (limit 2); ticks judge the duration; an out at 12 brings it back to the limit
        (
            [("front", "in", 0), ("back", "in", 1), ("back", "in", 2), ("front", "out", 12)],
            [4, 7.5],
            [("start", "cam2", 2, 7.5), ("end", "cam2", 2, 12)],
        ),
        ([("front", "in", 0), ("back", "in", 1), ("back", "in", 2), ("front", "out", 5)], [4], []),  # 3 s only
        # no tick: the next crossing (still over) judges it
        (
            [("front", "in", 0), ("front", "in", 1), ("front", "in", 2), ("back", "in", 9)],
            [],
            [("start", "cam1", 2, 9)],
        ),
    ],
)
def test_overcrowding_opens_after_the_duration(
    events: list[tuple[str, str, float]], ticks: list[float], expected: list[tuple[str, str, float, float]]
) -> None:
    occ = StoreOccupancy(cfg(max_people=2, min_duration_s=5), "UTC")
    timeline = sorted([(t, ev) for ev in events for t in [ev[2]]] + [(t, None) for t in ticks], key=lambda x: x[0])
    hits: list[RuleHit] = []
    for t, ev in timeline:
        outs = occ.crossing(crossing(ev[0], ev[1], t)) if ev else occ.advance(T0 + timedelta(seconds=t))
        hits += [o for o in outs if isinstance(o, RuleHit)]
    got = [(h.state, h.camera, (h.started_at - T0).total_seconds(), (h.at - T0).total_seconds()) for h in hits]
    assert got == expected
    for h in hits:
        assert h.type == "store_occupancy" and h.zone is None and h.track_ids == () and h.facts["peak"] == 3


def test_overcrowding_explanation() -> None:
    occ = StoreOccupancy(cfg(max_people=1, min_duration_s=0), "UTC")
    counts(occ, [("front", "in", 0)])
    start = [o for o in occ.crossing(crossing("back", "in", 1)) if isinstance(o, RuleHit)]
    end = [o for o in occ.finish(T0 + timedelta(seconds=61)) if isinstance(o, RuleHit)]
    explainer = Explainer("Europe/London")
    texts = []
    for hit, ended in ((start[0], False), (end[0], True)):
        facts = dict(hit.facts) | {"camera": hit.camera, "zone": None, "start": hit.started_at, "end": hit.at}
        texts.append(explainer.render(hit.type, facts | {"ended": ended}))
    assert texts == [
        "2 people are in store (limit 1; counted in and out at lines front, back), 14:00:01-14:00:01 (0 s); "
        "over the limit since a crossing on cam2",
        "2 people were in store (limit 1; counted in and out at lines front, back), 14:00:01-14:01:01 (60 s); "
        "over the limit since a crossing on cam2",
    ]


def test_a_crowd_that_lasts_to_the_end_of_the_footage_is_reported() -> None:
    occ = StoreOccupancy(cfg(max_people=0, min_duration_s=5), "UTC")
    occ.crossing(crossing("back", "in", 0))  # nobody crosses again before the end
    hits = [o for o in occ.finish(T0 + timedelta(seconds=30)) if isinstance(o, RuleHit)]
    assert [(h.state, h.camera, h.started_at, h.at) for h in hits] == [
        ("start", "cam2", T0, T0 + timedelta(seconds=30)),
        ("end", "cam2", T0, T0 + timedelta(seconds=30)),
    ]
    facts = dict(hits[1].facts) | {"camera": "cam2", "zone": None, "start": T0, "end": hits[1].at, "ended": True}
    assert Explainer("UTC").render("store_occupancy", facts).startswith("1 person was in store (limit 0;")
    assert occ.state.people == 1  # finishing keeps the count: the next run carries on from it


async def test_the_clock_resets_at_closing_without_crossings(tmp_path: Path) -> None:
    service, database, _ = await _service(tmp_path / "storesight.db", reset_at="22:00")
    await service.on_measurement(crossing("front", "in", 0), None)
    clock = [T0 + timedelta(hours=1), datetime(2026, 11, 29, 22, 0, 5, tzinfo=UTC)]
    task = asyncio.create_task(service.run(lambda: clock[0] if len(clock) == 1 else clock.pop(0), every_s=0.001))
    for _ in range(2000):  # until the clock has passed closing (a bound, not a timing assertion)
        if service.counts[0].state.last_reset == datetime(2026, 11, 29, 22, 0, tzinfo=UTC):
            break
        await asyncio.sleep(0.005)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    saved = await database.call(database.sync.occupancy_state, "store")
    await database.close()
    assert saved is not None and (saved["people"], saved["last_reset"]) == (0, "2026-11-29T22:00:00+00:00")


def test_an_identity_switch_after_a_crossing_counts_once() -> None:
    rule = line_rule(id="front")
    occ = StoreOccupancy(cfg(), "UTC")
    # track 1 walks in; the tracker then swaps its id to 2 on the same side, and 2 walks on: one crossing
    crossings = walk(rule, [300, 400, 600, 650, 700, 750], tid=1) + walk(rule, [760, 780, 800], tid=2)
    for m in crossings:
        occ.crossing(m)
    assert [m.metric for m in crossings] == ["in"] and occ.state.people == 1


async def _service(db: Path, **kw: Any) -> tuple[StoreOccupancyService, AsyncDatabase, InsightsRecorder]:
    database = AsyncDatabase(db)
    incidents = IncidentManager(database, db.parent / "evidence", Explainer("Europe/London"), [])
    insights = InsightsRecorder(database)
    service = StoreOccupancyService([cfg(**kw)], "Europe/London", database, incidents, insights)
    await service.load()
    return service, database, insights


async def test_state_survives_a_restart_and_a_closing_missed_while_down_resets(tmp_path: Path) -> None:
    db = tmp_path / "storesight.db"
    service, database, insights = await _service(db, reset_at="22:00", max_people=5)
    image = np.zeros((48, 64, 3), np.uint8)
    for k, (line, metric) in enumerate([("front", "in"), ("back", "in"), ("back", "in"), ("front", "out")]):
        m = crossing(line, metric, k)
        await service.on_measurement(m, Frame(m.camera, k, m.t, float(k), image))
    await service.on_measurement(crossing("side", "in", 5), None)  # not one of its lines
    await insights.flush()
    await database.close()  # stopped (a crash would lose nothing more: every change is saved as it happens)

    service, database, insights = await _service(db, reset_at="22:00", max_people=5)
    occ = service.counts[0]
    assert (occ.state.people, occ.state.out_at_zero) == (2, 0)
    assert occ.state.last_reset == datetime(2026, 11, 28, 22, 0, tzinfo=UTC)
    await service.on_measurement(crossing("back", "out", 60), None)
    await service.on_measurement(crossing("back", "out", 61), None)
    await service.on_measurement(crossing("front", "out", 62), None)  # one out too many: drift
    await service.on_measurement(crossing("front", "in", 63), None)
    await insights.flush()  # the app's store context does this at shutdown
    await database.close()

    # down over closing: the first time seen after the restart (the next morning) resets at the closing
    service, database, insights = await _service(db, reset_at="22:00", max_people=5)
    assert (service.counts[0].state.people, service.counts[0].state.out_at_zero) == (1, 1)
    await service.tick(datetime(2026, 11, 30, 8, 0, tzinfo=UTC))
    await insights.flush()
    saved = await database.call(database.sync.occupancy_state, "store")
    resets = await database.call(database.sync.occupancy_resets, "2026-11-29T00:00:00", "2026-12-01T00:00:00")
    rows = await database.call(database.sync.rollups, "2026-11-29T00:00:00+00:00", "2026-12-01T00:00:00+00:00")
    await database.close()
    assert saved is not None and (saved["people"], saved["out_at_zero"]) == (0, 0)
    assert saved["last_reset"] == "2026-11-29T22:00:00+00:00"
    assert resets == [{"id": "store", "at": "2026-11-29T22:00:00+00:00", "removed": 1, "out_at_zero": 1}]
    doc = summarise(rows, [], resets)["store_occupancy"]["store"]
    assert doc == {
        "max": 3, "samples": 9, "last": 0, "out_at_zero": 1, "resets": 1, "removed_at_reset": 1, "avg": 1.111,
        "reset_log": [{"at": "2026-11-29T22:00:00+00:00", "removed": 1, "out_at_zero": 1}],
    }  # fmt: skip


async def test_overcrowding_incident_through_the_incident_manager(tmp_path: Path) -> None:
    service, database, _ = await _service(tmp_path / "storesight.db", max_people=1, min_duration_s=2)
    image = np.zeros((48, 64, 3), np.uint8)
    for k, line in enumerate(["front", "back"]):
        m = crossing(line, "in", k)
        await service.on_measurement(m, Frame(m.camera, k, m.t, float(k), image))
    await service.tick(T0 + timedelta(seconds=4))
    await service.on_measurement(crossing("front", "out", 9), None)
    stored = await database.call(database.sync.incidents)
    await database.close()
    assert [(i["rule_id"], i["type"], i["camera"], i["state"], i["zone"]) for i in stored] == [
        ("store", "store_occupancy", "cam2", "end", None)
    ]
    inc = stored[0]
    assert (inc["start"], inc["end"]) == (
        (T0 + timedelta(seconds=1)).isoformat(),
        (T0 + timedelta(seconds=9)).isoformat(),
    )
    assert inc["details"]["peak"] == 2 and inc["details"]["lines"] == "front, back"
    assert inc["snapshot"] and await asyncio.to_thread(Path(inc["snapshot"]).is_file)  # the crossing's frame


async def test_footfall_rollups_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "storesight.db"
    database = AsyncDatabase(db)
    rec = InsightsRecorder(database)
    for k in range(5):
        rec.add(crossing("front", "in" if k < 4 else "out", 60 * k))
    await rec.flush()
    await database.close()
    database = AsyncDatabase(db)  # the next run: a new process reads the same database
    rec = InsightsRecorder(database)
    rec.add(crossing("front", "in", 600))
    await rec.flush()
    rows = await database.call(database.sync.rollups, "2026-11-29T00:00:00+00:00", "2026-11-30T00:00:00+00:00")
    await database.close()
    assert summarise(rows, [])["lines"] == {"front": {"in": 5, "out": 1}}


def _doc(store_occupancy: list[dict[str, Any]], rules: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    doc = example()
    doc["rules"] = rules if rules is not None else [
        {"id": "front", "type": "line_crossing", "camera": "cam1", "line": [[0.5, 1], [0.5, 0]]},
        {"id": "dwell", "type": "loitering", "camera": "cam1", "zone": "table", "min_dwell_s": 8},
    ]  # fmt: skip
    doc["store_occupancy"] = store_occupancy
    return doc


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"lines": ["front", "nope"]}, "store_occupancy[0].lines[1]: unknown rule 'nope' (line_crossing rules: front)"),
        ({"lines": ["dwell"]}, "store_occupancy[0].lines[0]: rule 'dwell' is a loitering rule, not line_crossing"),
        ({"lines": ["front", "front"]}, "store_occupancy[0].lines: lists a line twice"),
        ({"lines": []}, "store_occupancy[0].lines: needs at least 1 item(s)"),
        ({"id": "dwell"}, "store_occupancy[0].id: 'dwell' is also a rule id"),
        ({"reset_at": "25:00"}, "store_occupancy[0].reset_at: '25:00' is not a time like \"22:00\""),
        ({"timezone": "Mars/Base"}, "store_occupancy[0].timezone: unknown time zone 'Mars/Base'"),
        ({"max_people": -1}, "store_occupancy[0].max_people: must be >= 0"),
        ({"colour": "red"}, "store_occupancy[0].colour: unknown key"),
    ],
)
def test_config_errors_name_the_key(entry: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_config(_doc([{"id": "store", "lines": ["front"]} | entry]))


def test_config_duplicate_ids_and_a_good_config() -> None:
    with pytest.raises(ConfigError, match=re.escape("store_occupancy[1].id: duplicate id 'store'")):
        parse_config(_doc([{"id": "store", "lines": ["front"]}, {"id": "store", "lines": ["front"]}]))
    config = parse_config(_doc([{"id": "store", "lines": ["front"], "reset_at": "22:00", "max_people": 40}]))
    assert config.store_occupancy[0].reset_at == "22:00" and config.store_occupancy[0].timezone is None
    assert parse_config(example()).store_occupancy == []  # optional


@pytest.mark.triton
@pytest.mark.slow
def test_store_occupancy_on_the_clip(clip: Path, triton: Any, tmp_path: Path) -> None:
    """The clip's six people leave right past x = 0.75 (tests/system/test_once.py): with that exit as the store's only
    line, each out finds the count at zero: it stays at zero and all six are drift."""
    doc = example()
    doc["storage"] = {"path": str(tmp_path / "data")}
    doc["triton"] = {"url": triton.grpc_url}
    doc["cameras"][0].update(source=str(clip), start_time="2026-11-29T14:00:00+00:00")
    doc["rules"] = [
        {"id": "exit", "type": "line_crossing", "camera": "cam1", "line": [[0.75, 1], [0.75, 0]], "in_side": "left"},
    ]
    doc["store_occupancy"] = [{"id": "store", "lines": ["exit"], "max_people": 0, "min_duration_s": 0,
                               "reset_at": "22:00"}]  # fmt: skip
    cfg_path = write_config(tmp_path / "store.yaml", doc)
    res = run_cli("run", "-c", str(cfg_path), "--once", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    ins = run_cli("insights", "-c", str(cfg_path), "--from", "2026-11-29T14:00", "--to", "2026-11-29T15:00", "--json")
    assert ins.returncode == 0, ins.stderr
    out = json.loads(ins.stdout)
    assert out["lines"] == {"exit": {"in": 0, "out": 6}}
    database = out["store_occupancy"]["store"]
    assert database["out_at_zero"] == 6 and database["max"] == 0 and database["last"] == 0 and database["samples"] == 6
    assert database["resets"] == 0 and database["reset_log"] == []
    assert out["incidents"] == {}  # never over zero people
