"""Journey, queue and staff rules on synthetic tracks: checkout_bypass, repeat_visit, blocked_exit, queue, staff
handling (StaffFilter, staff_only), their config cross-checks, explanations and the insights `queues` entry."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from plugin.config.loader import parse_config
from plugin.errors import ConfigError
from plugin.incidents.explain import Explainer
from plugin.insights.rollups import summarise
from plugin.rules.base import Measurement, Observation, RuleHit
from plugin.rules.blocked_exit import BlockedExitRuleConfig
from plugin.rules.checkout_bypass import CheckoutBypassRuleConfig
from plugin.rules.loitering import LoiteringRuleConfig
from plugin.rules.queue import QueueRuleConfig
from plugin.rules.registry import build_rule
from plugin.rules.repeat_visit import RepeatVisitRuleConfig
from plugin.rules.staff import StaffFilter
from plugin.rules.staff_only import StaffOnlyRuleConfig
from plugin.rules.zone_intrusion import ZoneIntrusionRuleConfig
from plugin.types import Detections

T0 = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
FPS = 5.0

# A track at one instant: the zones its feet are in, and optionally where its feet are (pixels).
Seen = set[str] | tuple[set[str], tuple[float, float]]
# A stretch of time: (seconds, {track id: what it is}); a track missing from the dict is not detected.
Segment = tuple[float, dict[int, Seen]]
ZONES = ("hv", "hv2", "checkout", "exit", "q", "fire", "staff", "z")


def frame(t_s: float, tracks: dict[int, Seen]) -> Observation:
    """One observation: boxes around the feet, zone masks from the named zones."""
    ids = list(tracks)
    feet = [v[1] if isinstance(v, tuple) else (100.0 + 50 * k, 400.0) for k, v in enumerate(tracks.values())]
    zones = [v[0] if isinstance(v, tuple) else v for v in tracks.values()]
    boxes = [[x - 20, y - 100, x + 20, y] for x, y in feet]
    dets = Detections.from_arrays(boxes, [0.9] * len(ids), [0] * len(ids), ids)
    inside = {z: np.array([z in zs for zs in zones], bool) for z in ZONES}
    return Observation("cam1", T0 + timedelta(seconds=t_s), dets, inside, 1000, 500, ("person",))


def frames(segments: Sequence[Segment], fps: float = FPS) -> list[Observation]:
    """The segments sampled at fps, one after another."""
    out: list[Observation] = []
    t = 0.0
    for seconds, tracks in segments:
        for _ in range(round(seconds * fps)):
            out.append(frame(t, tracks))
            t = round(t + 1 / fps, 6)
    return out


def play(rule: Any, segments: Sequence[Segment], fps: float = FPS) -> list[Any]:
    """Every output of a rule over the segments, then its finish()."""
    out: list[Any] = []
    obs = frames(segments, fps)
    for o in obs:
        out += rule.update(o)
    out += rule.finish(obs[-1].t if obs else T0)
    return out


def hits(outputs: list[Any]) -> list[RuleHit]:
    """Only the incidents."""
    return [o for o in outputs if isinstance(o, RuleHit)]


def at(h: RuleHit) -> float:
    """Seconds after T0."""
    return round((h.at - T0).total_seconds(), 1)


# --- checkout_bypass -------------------------------------------------------------------------------------------


def bypass(**kw: object) -> Any:
    """High-value zones hv and hv2, checkout zone checkout, exit zone exit."""
    base: dict[str, object] = {
        "id": "bypass",
        "type": "checkout_bypass",
        "camera": "cam1",
        "high_value_zones": ["hv", "hv2"],
        "checkout_zones": ["checkout"],
        "exit_zone": "exit",
    }
    return build_rule(CheckoutBypassRuleConfig.model_validate(base | kw))


FLOOR: set[str] = set()
HV, HV2, TILL, EXIT = {"hv"}, {"hv2"}, {"checkout"}, {"exit"}


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        ([], []),  # nobody
        ([(1, {1: FLOOR}), (2, {1: FLOOR})], []),  # never near anything
        ([(1, {1: FLOOR}), (3, {1: HV}), (1, {1: FLOOR}), (0.4, {1: EXIT})], [(1, 5.0, "hv")]),
        ([(1, {1: FLOOR}), (3, {1: HV2}), (0.2, {1: EXIT})], [(1, 4.0, "hv2")]),  # any of the high-value zones
        ([(1, {1: FLOOR}), (3, {1: HV}), (1, {1: TILL}), (1, {1: EXIT})], []),  # paid
        ([(1, {1: TILL}), (3, {1: HV}), (1, {1: EXIT})], [(1, 4.0, "hv")]),  # the checkout came before the visit
        ([(1, {1: FLOOR}), (0.6, {1: HV}), (1, {1: EXIT})], []),  # brushed past: under min_visit_s
        ([(3, {1: HV}), (1, {1: TILL}), (3, {1: FLOOR}), (2, {1: HV2}), (0.2, {1: EXIT})], [(1, 9.0, "hv2")]),
        ([(3, {1: HV | TILL}), (1, {1: EXIT})], []),  # a till inside the high-value area: passing it pays
        ([(1, {1: EXIT}), (3, {1: EXIT | HV})], []),  # first seen in the exit: someone coming in
        ([(1, {1: EXIT}), (1, {1: FLOOR}), (3, {1: HV}), (0.2, {1: EXIT})], [(1, 5.0, "hv")]),  # came in, then left
        ([(1, {1: FLOOR}), (3, {1: HV}), (1, {2: FLOOR}), (1, {2: EXIT})], []),  # identity switch: journey lost
        ([(3, {1: HV}), (0.4, {}), (1, {1: FLOOR}), (1, {1: EXIT})], [(1, 4.4, "hv")]),  # missed frames: same track
        (
            [(1, {1: FLOOR, 2: FLOOR}), (3, {1: HV, 2: HV}), (1, {1: TILL, 2: FLOOR}), (1, {1: EXIT, 2: EXIT})],
            [(2, 5.0, "hv")],
        ),
        ([(3, {1: HV}), (1, {1: EXIT}), (1, {1: FLOOR}), (1, {1: EXIT})], [(1, 3.0, "hv")]),  # one visit, one incident
    ],
)
def test_checkout_bypass_table(segments: list[Segment], expected: list[tuple[int, float, str]]) -> None:
    out = hits(play(bypass(), segments))
    starts = [h for h in out if h.state == "start"]
    assert [(h.track_ids[0], at(h), h.facts["high_value_zone"]) for h in starts] == expected
    assert [h.state for h in out] == ["start", "end"] * len(expected)  # instant: each opens and closes at once
    assert all(h.zone == "exit" and len(h.track_ids) == 1 and h.box is not None for h in out)


def test_checkout_bypass_facts_and_cooldown() -> None:
    segments: list[Segment] = [
        (1, {7: FLOOR}),
        (3, {7: HV}),
        (1, {7: EXIT}),
        (1, {7: FLOOR}),
        (3, {7: HV}),
        (1, {7: EXIT}),
    ]
    first, _ = hits(play(bypass(cooldown_s=0), segments))[:2]
    assert first.started_at == T0 + timedelta(seconds=1)
    assert first.facts["visit_s"] == pytest.approx(2.8)
    assert first.facts["exit_at"] == first.at and first.facts["checkout_zones"] == "checkout"
    assert len(hits(play(bypass(cooldown_s=0), segments))) == 4  # two visits, two bypasses
    assert len(hits(play(bypass(cooldown_s=60), segments))) == 2  # the same person within the cooldown: once


def test_checkout_bypass_respects_its_schedule() -> None:
    closed = {"active": ["22:00-06:00"], "timezone": "UTC"}
    assert hits(play(bypass(schedule=closed), [(3, {1: HV}), (1, {1: EXIT})])) == []


# --- repeat_visit ----------------------------------------------------------------------------------------------


def repeat(**kw: object) -> Any:
    """Three entries into zone hv within 60 s."""
    base: dict[str, object] = {"id": "again", "type": "repeat_visit", "camera": "cam1", "zone": "hv"}
    return build_rule(RepeatVisitRuleConfig.model_validate(base | {"min_entries": 3, "window_s": 60} | kw))


def visits(n: int, inside_s: float = 2, outside_s: float = 4, tid: int = 1) -> list[Segment]:
    """n stays in hv, separated by time on the floor."""
    out: list[Segment] = [(1, {tid: FLOOR})]
    for _ in range(n):
        out += [(inside_s, {tid: HV}), (outside_s, {tid: FLOOR})]
    return out


FLICKER: list[Segment] = [(0.2, {1: HV if k % 2 else FLOOR}) for k in range(60)]  # feet on the edge, 12 s


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        ([], []),
        (visits(2), []),
        (visits(3), [(1, 14.0, 3)]),  # the third entry counts after min_inside_s (1 s)
        (visits(3, inside_s=0.6), []),  # stays shorter than the debounce are not entries
        (visits(3, outside_s=1.0), []),  # gaps under exit_grace_s (2 s): one long stay
        (visits(3, outside_s=30), []),  # 3 entries, but spread over more than the 60 s window
        (visits(6), [(1, 14.0, 3)]),  # then quiet for the cooldown (30 s): six entries are one incident
        (FLICKER, []),  # a box flickering over the edge: one entry at most
        ([(0.2, {1: HV}), (3, {1: FLOOR})] * 4, []),  # single-frame dips in: never an entry
        ([*visits(2), (1, {2: FLOOR}), (2, {2: HV})], []),  # identity switch: the count restarts
        ([(2, {1: HV, 2: FLOOR}), (4, {1: FLOOR, 2: HV})] * 2, []),  # two people taking turns: two entries each
    ],
)
def test_repeat_visit_table(segments: list[Segment], expected: list[tuple[int, float, int]]) -> None:
    out = hits(play(repeat(), segments))
    starts = [h for h in out if h.state == "start"]
    assert [(h.track_ids[0], at(h), h.facts["entries"]) for h in starts] == expected
    assert len(out) == 2 * len(starts)


def test_repeat_visit_reports_the_span_from_the_first_entry() -> None:
    start = hits(play(repeat(), visits(3)))[0]
    assert start.started_at == T0 + timedelta(seconds=1)
    assert start.facts["span_s"] == pytest.approx(13.0) and start.facts["window_s"] == 60


# --- blocked_exit ----------------------------------------------------------------------------------------------


def blocked(**kw: object) -> Any:
    """Fire exit zone `fire`, stationary for 10 s within 10 px."""
    base: dict[str, object] = {"id": "fire-exit", "type": "blocked_exit", "camera": "cam1", "zone": "fire"}
    return build_rule(BlockedExitRuleConfig.model_validate(base | {"min_duration_s": 10, "max_motion_px": 10} | kw))


def still(
    seconds: float, tid: int = 1, x: float = 500, jitter: float = 0.0, zone: frozenset[str] = frozenset({"fire"})
) -> list[Segment]:
    """A person standing at x, feet jittering by +-jitter px, frame by frame."""
    rng = np.random.default_rng(tid)
    n = round(seconds * FPS)
    return [
        (0.2, {tid: (zone, (x + rng.uniform(-jitter, jitter), 400 + rng.uniform(-jitter, jitter)))}) for _ in range(n)
    ]


def moving(seconds: float, px_per_s: float, tid: int = 1, x0: float = 300) -> list[Segment]:
    """A person walking along x through the zone."""
    return [(0.2, {tid: ({"fire"}, (x0 + px_per_s * 0.2 * k, 400.0))}) for k in range(round(seconds * FPS))]


OUTLIER: list[Segment] = [*still(5, jitter=2), (0.2, {1: ({"fire"}, (560.0, 400.0))}), *still(6, jitter=2)]
A, B = ({"fire"}, (500.0, 400.0)), ({"fire"}, (600.0, 400.0))
TAKING_TURNS: list[Segment] = [(5, {1: A}), (9, {1: A, 2: B}), (12, {2: B}), (3, {})]  # 2 arrives before 1 leaves


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        ([], []),
        ([*still(8), (3, {})], []),  # not long enough
        ([*still(14, jitter=3), (4, {})], [("start", 10.0), ("end", 13.8)]),  # detector jitter: still still
        ([*OUTLIER, (4, {})], [("start", 10.0), ("end", 11.0)]),  # one bad box does not break it
        ([*moving(15, px_per_s=40), (3, {})], []),  # walking through
        ([*moving(15, px_per_s=4), (3, {})], []),  # shuffling: 60 px over the window
        ([*still(14, zone=frozenset()), (3, {})], []),  # standing still next to the exit, not in it
        (still(12) + still(5, jitter=30), [("start", 10.0), ("end", 16.8)]),  # fidgeting once blocking: still blocking
        (TAKING_TURNS, [("start", 10.0), ("end", 25.8)]),  # one incident while blocked, whoever blocks it
        (still(14, tid=1) + still(14, tid=2), [("start", 10.0), ("end", 13.8), ("start", 24.0), ("end", 27.8)]),
    ],
)
def test_blocked_exit_table(segments: list[Segment], expected: list[tuple[str, float]]) -> None:
    out = hits(play(blocked(), segments))
    assert [(h.state, at(h)) for h in out] == expected
    assert all(h.key == "blocked" and h.zone == "fire" for h in out)


def test_blocked_exit_names_the_people_and_duration() -> None:
    start, end = hits(play(blocked(), [*still(14, tid=4), (4, {})]))
    assert start.track_ids == (4,) and start.facts["who"] == "#4" and start.facts["threshold_s"] == 10
    assert end.started_at == start.started_at == T0 and end.facts["duration_s"] == pytest.approx(13.8)


# --- queue -----------------------------------------------------------------------------------------------------


def queue(**kw: object) -> Any:
    """A queue on zone q."""
    base: dict[str, object] = {"id": "till-1", "type": "queue", "camera": "cam1", "zone": "q"}
    return build_rule(QueueRuleConfig.model_validate(base | kw))


def gauges(outputs: list[Any], metric: str) -> list[float]:
    """One gauge's samples."""
    return [o.value for o in outputs if isinstance(o, Measurement) and o.metric == metric]


Q = {"q"}


@pytest.mark.parametrize(
    ("segments", "max_length", "last_wait"),
    [
        ([], None, None),
        ([(5, {})], 0, 0.0),  # empty queue: no wait
        ([(1, {1: Q}), (4, {1: FLOOR})], 0, 0.0),  # a passer-by (under min_inside_s) is not queueing
        ([(10, {1: Q})], 1, 9.8),  # nobody served yet: the wait is a floor, how long the first has waited
        # one served while the queue was busy (2.4 s to 19.8 s: queueing after 2 s, then the median's delay)
        ([(10, {1: Q, 2: Q}), (10, {2: Q, 3: Q})], 2, 34.8),
        ([(0.2, {k: Q for k in range(1, 4)}), (10, {1: Q})], 1, 10.0),  # a one-frame crowd is smoothed away
    ],
)
def test_queue_length_and_wait_table(segments: list[Segment], max_length: int | None, last_wait: float | None) -> None:
    out = play(queue(), segments)
    lengths, waits = gauges(out, "queue_length"), gauges(out, "queue_wait_s")
    assert (max(lengths) if lengths else None) == max_length
    assert (waits[-1] if waits else None) == last_wait
    assert all(o.key == "q" and o.kind == "gauge" for o in out if isinstance(o, Measurement))
    assert hits(out) == []  # no thresholds configured


def test_queue_service_rate_counts_busy_time_only() -> None:
    # a quiet minute before the queue forms does not make the till look slow
    quiet = queue()
    play(quiet, [(60, {}), *[(15, {k: Q, 10: Q, 11: Q}) for k in range(1, 5)], (1.4, {10: Q, 11: Q})])
    busy = queue()
    play(busy, [*[(15, {k: Q, 10: Q, 11: Q}) for k in range(1, 5)], (1.4, {10: Q, 11: Q})])
    assert quiet.state.rate_per_min == busy.state.rate_per_min
    assert quiet.state.wait_s == pytest.approx(busy.state.wait_s)


def test_queue_service_rate_and_wait() -> None:
    rule = queue(rate_window_s=600)
    # four people served one after another, 15 s each, while two more wait; the last observation is at 61.2 s,
    # when the 4th has been gone 1.4 s, under the exit grace: 3 served while the queue was busy (2.4 s to 61.2 s)
    segments: list[Segment] = [(15, {k: Q, 10: Q, 11: Q}) for k in range(1, 5)] + [(1.4, {10: Q, 11: Q})]
    play(rule, segments)
    assert rule.state.basis == "rate" and rule.state.length == 2
    assert rule.state.rate_per_min == pytest.approx(3 / 58.8 * 60, abs=0.01)
    assert rule.state.wait_s == pytest.approx(2 / (3 / 58.8))


def test_queue_length_incident_opens_and_closes() -> None:
    rule = queue(max_length=2, min_duration_s=3)
    out = hits(play(rule, [(5, {1: Q}), (8, {1: Q, 2: Q, 3: Q}), (5, {1: Q})]))
    assert [h.state for h in out] == ["start", "end"]
    start, end = out
    assert start.facts["length"] == 3 and start.track_ids == (1, 2, 3)
    assert (start.at - start.started_at).total_seconds() >= 3
    assert end.at > start.at and end.key == start.key == "queue"


def test_queue_wait_incident_when_nobody_is_served() -> None:
    out = hits(play(queue(max_wait_s=20, min_duration_s=5), [(30, {1: Q, 2: Q})]))
    assert [h.state for h in out] == ["start", "end"]
    assert out[0].facts["wait_basis"] == "floor" and out[0].facts["wait_s"] > 20
    assert hits(play(queue(max_wait_s=40, min_duration_s=5), [(30, {1: Q, 2: Q})])) == []


# --- staff -----------------------------------------------------------------------------------------------------


def test_staff_filter_keeps_who_started_in_a_staff_zone() -> None:
    staff = StaffFilter(["staff"])
    first = staff.customers(frame(0, {1: {"staff"}, 2: FLOOR}))
    assert first.detections.track_ids is not None and first.detections.track_ids.tolist() == [2]
    assert first.inside["z"].shape == (1,)
    # the employee walks onto the floor, the customer into the staff zone: who is who does not change
    later = staff.customers(frame(5, {1: {"z"}, 2: {"staff", "z"}}))
    assert later.detections.track_ids is not None and later.detections.track_ids.tolist() == [2]
    assert later.inside["z"].tolist() == [True] and later.inside["staff"].tolist() == [True]
    assert staff.is_staff(1) and not staff.is_staff(2)
    # an identity switch makes the employee a new track, a customer (the documented trade-off)
    switched = staff.customers(frame(6, {3: {"z"}}))
    assert switched.detections.track_ids is not None and switched.detections.track_ids.tolist() == [3]
    # forgotten once long gone
    staff.customers(frame(100, {}))
    assert not staff.is_staff(1)


def test_staff_filter_without_staff_zones_changes_nothing() -> None:
    obs = frame(0, {1: {"staff"}})
    assert StaffFilter([]).customers(obs) is obs
    assert StaffFilter(["staff"]).customers(frame(0, {})).detections.track_ids is not None


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (LoiteringRuleConfig(id="a", type="loitering", camera="c", zone="z", min_dwell_s=5), True),
        (
            LoiteringRuleConfig(id="a", type="loitering", camera="c", zone="z", min_dwell_s=5, exclude_staff=False),
            False,
        ),
        (ZoneIntrusionRuleConfig(id="a", type="zone_intrusion", camera="c", zone="z"), False),
        (
            CheckoutBypassRuleConfig.model_validate(
                {
                    "id": "a",
                    "type": "checkout_bypass",
                    "camera": "c",
                    "high_value_zones": ["h"],
                    "checkout_zones": ["t"],
                    "exit_zone": "e",
                }
            ),
            True,
        ),
        (RepeatVisitRuleConfig(id="a", type="repeat_visit", camera="c", zone="z"), True),
        (QueueRuleConfig(id="a", type="queue", camera="c", zone="z"), False),
        (QueueRuleConfig(id="a", type="queue", camera="c", zone="z", exclude_staff=True), True),
        (BlockedExitRuleConfig(id="a", type="blocked_exit", camera="c", zone="z"), False),  # staff block exits too
        (StaffOnlyRuleConfig(id="a", type="staff_only", camera="c", zone="z"), True),
    ],
)
def test_which_rules_exclude_staff(config: Any, expected: bool) -> None:
    assert config.excludes_staff() is expected


def test_staff_only_fires_for_customers_not_staff() -> None:
    rule = build_rule(StaffOnlyRuleConfig(id="back", type="staff_only", camera="cam1", zone="staff"))
    staff = StaffFilter(["staff"])
    out: list[Any] = []
    # track 1 comes out of the stockroom (staff) and goes back in; track 2 walks in from the floor
    for obs in frames([(1, {1: {"staff"}, 2: FLOOR}), (2, {1: FLOOR, 2: FLOOR}), (3, {1: {"staff"}, 2: {"staff"}})]):
        out += rule.update(staff.customers(obs))
    out += rule.finish(T0 + timedelta(seconds=6))
    assert [(h.state, h.track_ids) for h in hits(out)] == [("start", (2,)), ("end", (2,))]


# --- config cross-checks ---------------------------------------------------------------------------------------


def config_doc(*rules: dict[str, Any], staff_zones: list[str] | None = None) -> dict[str, Any]:
    """One camera with zones table, till, door, exit, fire and the given rules."""
    zones = [{"id": z, "polygon": [[0, 0], [1, 0], [1, 1]]} for z in ("table", "till", "door", "exit", "fire")]
    camera: dict[str, Any] = {"id": "cam1", "source": "rtsp://127.0.0.1/x", "zones": zones}
    if staff_zones is not None:
        camera["staff_zones"] = staff_zones
    return {"cameras": [camera], "rules": list(rules)}


LOITER = {"id": "dwell", "type": "loitering", "camera": "cam1", "zone": "table", "min_dwell_s": 8}
BYPASS = {
    "id": "bypass",
    "type": "checkout_bypass",
    "camera": "cam1",
    "high_value_zones": ["table"],
    "checkout_zones": ["till"],
    "exit_zone": "exit",
}


def rule(kind: str, zone: str = "table", **kw: Any) -> dict[str, Any]:
    """A rule document of `kind` on cam1."""
    return {"id": f"r-{kind}", "type": kind, "camera": "cam1", "zone": zone} | kw


NO_ZONE = "camera 'cam1' has no zone"


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        (config_doc(LOITER, BYPASS, staff_zones=["door"]), None),
        (config_doc(LOITER, LOITER | {"id": "b"}, BYPASS | {"exit_zone": "st"}), f"rules[2].exit_zone: {NO_ZONE} 'st'"),
        (config_doc(BYPASS | {"high_value_zones": ["table", "x"]}), f"rules[0].high_value_zones[1]: {NO_ZONE} 'x'"),
        (config_doc(BYPASS | {"checkout_zones": ["till", "x"]}), f"rules[0].checkout_zones[1]: {NO_ZONE} 'x'"),
        (config_doc(BYPASS | {"checkout_zones": []}), "rules[0].checkout_zones: needs at least 1 item"),
        (config_doc(BYPASS | {"checkout_zones": ["table"]}), "rules[0].checkout_zones[0]: 'table' is also"),
        (config_doc(BYPASS | {"exit_zone": "till"}), "rules[0].exit_zone: 'till' is also a high-value"),
        (config_doc(staff_zones=["stockroom"]), f"cameras[0].staff_zones[0]: {NO_ZONE} 'stockroom'"),
        (config_doc(rule("staff_only", "door")), "rules[0].camera: staff_only needs staff_zones on camera 'cam1'"),
        (config_doc(rule("staff_only", "door"), staff_zones=["door"]), None),
        (config_doc(rule("queue", "till", max_wait_s=0)), "rules[0].max_wait_s: must be > 0"),
        (config_doc(rule("queue", "tills")), f"rules[0].zone: {NO_ZONE} 'tills'"),
        (config_doc(rule("repeat_visit", min_entries=1)), "rules[0].min_entries: must be >= 2"),
        (config_doc(rule("blocked_exit", "fire", max_motion_px=0)), "rules[0].max_motion_px: must be > 0"),
        (config_doc(rule("occupancy", exclude_staff=True)), "rules[0].exclude_staff: unknown key"),
    ],
)  # fmt: skip
def test_journey_configs_name_the_bad_path(doc: dict[str, Any], error: str | None) -> None:
    if error is None:
        parse_config(doc)
        return
    with pytest.raises(ConfigError) as exc:
        parse_config(doc)
    assert f"config: {error}" in str(exc.value)


# --- explanations and insights ---------------------------------------------------------------------------------


def test_explanations_for_journey_incidents() -> None:
    ex = Explainer("UTC")
    base = {"camera": "cam1", "start": T0, "end": T0 + timedelta(seconds=40), "ended": True}
    facts = base | {
        "zone": "exit",
        "track_id": 3,
        "high_value_zone": "table",
        "visit_start": T0,
        "visit_end": T0 + timedelta(seconds=21),
        "visit_s": 21.0,
        "exit_at": T0 + timedelta(seconds=22),
        "exit_zone": "exit",
        "checkout_zones": "till",
        "checkouts": 1,
    }
    assert ex.render("checkout_bypass", facts) == (
        "Person #3 was in high-value zone table 14:00:00-14:00:21 (21 s), then reached exit zone exit at 14:00:22 "
        "without passing checkout zone till on cam1"
    )
    facts = base | {"zone": "q", "length": 5, "wait_s": 312.4, "wait_basis": "rate", "rate_per_min": 1.5}
    facts |= {"max_length": 4, "max_wait_s": 240.0, "duration_s": 40.0}
    assert ex.render("queue", facts) == (
        "Queue in zone q was 5 people, estimated wait 312 s (served 1.5 per min; limit 4 people, 240 s wait) "
        "on cam1, 14:00:00-14:00:40 (40 s): open another lane"
    )
    facts |= {"length": 1, "wait_basis": "floor", "rate_per_min": None, "max_length": None, "ended": False}
    assert ex.render("queue", facts) == (
        "Queue in zone q is 1 person, estimated wait 312 s (nobody served yet: the longest wait so far; "
        "limit 240 s wait) on cam1, 14:00:00-14:00:40 (40 s): open another lane"
    )
    facts = base | {"zone": "hv", "track_id": 2, "entries": 3, "span_s": 95.2, "min_entries": 3, "window_s": 300.0}
    assert ex.render("repeat_visit", facts) == (
        "Person #2 entered zone hv 3 times within 95 s (threshold 3 in 300 s) on cam1, 14:00:00-14:00:40"
    )
    facts = base | {"zone": "fire", "people": 1, "who": "#4", "duration_s": 40.0, "threshold_s": 30.0}
    facts |= {"objects": "", "object_count": 0, "unrecognised": False, "changed_share": 0.0}  # a person only
    assert ex.render("blocked_exit", facts) == (
        "Exit zone fire was blocked by a person standing still (#4) for 40 s (threshold 30 s) on cam1, "
        "14:00:00-14:00:40"
    )
    facts = base | {"zone": "stockroom", "track_id": 9, "dwell_s": 40.0, "threshold_s": 1.0}
    assert (
        ex.render("staff_only", facts)
        == "Customer #9 was in staff-only zone stockroom on cam1, 14:00:00-14:00:40 (40 s)"
    )


def test_summarise_adds_queues_without_changing_other_keys() -> None:
    def row(metric: str, n: int, total: float, peak: float) -> dict[str, Any]:
        return {"bucket": "2026-11-29T14:00:00+00:00", "camera": "cam1", "rule_id": "till-1", "metric": metric,
                "key": "q", "count": 0.0, "n": n, "total": total, "peak": peak}  # fmt: skip

    doc = summarise([row("queue_length", 4, 6.0, 3.0), row("queue_wait_s", 4, 100.0, 60.0)], [])
    assert doc["queues"] == {
        "till-1": {"zone": "q", "max_length": 3, "max_wait_s": 60.0, "avg_length": 1.5, "avg_wait_s": 25.0}
    }
    assert set(doc) == {"lines", "occupancy", "queues", "incidents", "dwell", "hourly", "store_occupancy"}
    assert doc["occupancy"] == {} and doc["lines"] == {} and doc["store_occupancy"] == {}
    assert summarise([], [])["queues"] == {}
