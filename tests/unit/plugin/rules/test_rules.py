"""Zone rules on synthetic tracked observations: thresholds, exit grace, cooldown, schedules, one track each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from plugin.config.base import ScheduleConfig
from plugin.rules.base import Observation, RuleHit
from plugin.rules.loitering import LoiteringRuleConfig
from plugin.rules.registry import build_rule
from plugin.rules.zone_intrusion import ZoneIntrusionRuleConfig
from plugin.types import Detections

T0 = datetime(2026, 11, 29, 14, 0, 0, tzinfo=UTC)


def obs(t_s: float, inside_ids: list[int], outside_ids: list[int] = (), start: datetime = T0) -> Observation:  # type: ignore[assignment]
    """An observation at T0 + t_s where the given track ids are inside / outside zone 'z'."""
    ids = list(inside_ids) + list(outside_ids)
    dets = Detections.from_arrays(
        [[10 * i, 10, 10 * i + 5, 50] for i in range(len(ids))], [0.9] * len(ids), [0] * len(ids), ids
    )
    mask = np.array([True] * len(inside_ids) + [False] * len(outside_ids), bool)
    return Observation(camera="cam1", t=start + timedelta(seconds=t_s), detections=dets, inside={"z": mask})


def feed(rule_config: object, timeline: list[tuple[float, list[int]]], fps: float = 5.0) -> list[RuleHit]:
    """Run a rule over (time, ids inside) keyframes sampled at fps; each keyframe holds until the next."""
    rule = build_rule(rule_config)  # type: ignore[arg-type]
    hits: list[RuleHit] = []
    end = timeline[-1][0]
    t = 0.0
    k = 0
    while t <= end + 1e-9:
        while k + 1 < len(timeline) and timeline[k + 1][0] <= t + 1e-9:
            k += 1
        hits += rule.update(obs(t, timeline[k][1]))
        t = round(t + 1 / fps, 6)
    hits += rule.finish(T0 + timedelta(seconds=end))
    return hits


def loiter(**kw: object) -> LoiteringRuleConfig:
    """A loitering rule config on zone z."""
    base: dict[str, object] = {"id": "dwell", "type": "loitering", "camera": "cam1", "zone": "z", "min_dwell_s": 8}
    return LoiteringRuleConfig.model_validate(base | kw)


def intrusion(**kw: object) -> ZoneIntrusionRuleConfig:
    """A zone intrusion rule config on zone z."""
    base: dict[str, object] = {"id": "intr", "type": "zone_intrusion", "camera": "cam1", "zone": "z"}
    return ZoneIntrusionRuleConfig.model_validate(base | kw)


@pytest.mark.parametrize(
    ("timeline", "expected"),
    [
        ([(0, [])], []),  # nobody
        ([(0, [1]), (7.8, [])], []),  # just under the threshold
        ([(0, [1]), (8.0, [1]), (12, []), (20, [])], [("start", 1, 8.0), ("end", 1, 11.8)]),
        ([(0, [1, 2]), (10, []), (20, [])], [("start", 1, 8.0), ("start", 2, 8.0), ("end", 1, 9.8), ("end", 2, 9.8)]),
    ],
)
def test_loitering_threshold_and_end(timeline: list[tuple[float, list[int]]], expected: list[tuple]) -> None:  # type: ignore[type-arg]
    hits = feed(loiter(), timeline)
    got = [(h.state, h.track_ids[0], round((h.at - T0).total_seconds(), 1)) for h in hits]
    assert got == expected
    assert all(len(h.track_ids) == 1 for h in hits)


def test_loitering_rides_over_short_gaps_but_not_long_ones() -> None:
    # out of the zone (or undetected) for 1 s < exit_grace_s=2: one incident covering the whole stay
    short = feed(loiter(), [(0, [1]), (5, []), (6, [1]), (15, []), (25, [])])
    assert [h.state for h in short] == ["start", "end"]
    assert short[0].started_at == T0
    # away for 4 s: the dwell restarts, 5 s + 4 s are two short stays, no incident
    long = feed(loiter(), [(0, [1]), (5, []), (9, [1]), (13, []), (25, [])])
    assert long == []


def test_cooldown_suppresses_a_second_incident_for_the_same_person() -> None:
    timeline = [(0, [1]), (10, []), (14, [1]), (30, []), (40, [])]
    assert [h.state for h in feed(loiter(cooldown_s=60), timeline)] == ["start", "end"]
    assert [h.state for h in feed(loiter(cooldown_s=0), timeline)] == ["start", "end", "start", "end"]


def test_end_reports_the_whole_dwell() -> None:
    hits = feed(loiter(), [(0, [7]), (23, []), (30, [])])
    end = hits[-1]
    assert end.state == "end"
    assert end.facts["dwell_s"] == pytest.approx(22.8)
    assert end.facts["threshold_s"] == 8
    assert end.started_at == T0


def test_intrusion_debounces_and_opens_one_incident_per_person() -> None:
    hits = feed(intrusion(min_presence_s=0.5), [(0, [3]), (0.2, []), (5, [4]), (10, []), (15, [])])
    assert [(h.state, h.track_ids) for h in hits] == [("start", (4,)), ("end", (4,))]


def test_intrusion_respects_its_schedule() -> None:
    night = ScheduleConfig(active=["22:00-06:00"], timezone="Europe/London")
    # T0 is 14:00 UTC = 14:00 in London in November: disarmed
    assert feed(intrusion(schedule=night.model_dump()), [(0, [1]), (10, []), (15, [])]) == []
    rule = build_rule(intrusion(schedule=night.model_dump()))
    late = T0.replace(hour=23)
    hits = rule.update(obs(0, [1], start=late)) + rule.update(obs(1, [1], start=late))
    assert [h.state for h in hits] == ["start"]
    assert hits[0].facts["schedule"] == "22:00-06:00 Europe/London"


def test_explanations_render_for_every_rule_type() -> None:
    from plugin.incidents.explain import Explainer

    explainer = Explainer("Europe/London")
    base = {"camera": "cam1", "zone": "z", "start": T0, "end": T0 + timedelta(seconds=23), "ended": True}
    text = explainer.render("loitering", base | {"track_id": 12, "dwell_s": 23.2, "threshold_s": 8.0})
    assert text == "Person #12 stayed 23 s in zone z (threshold 8 s) on cam1, 14:00:00-14:00:23"
    facts = base | {"track_id": 4, "dwell_s": 23.0, "threshold_s": 0.5, "schedule": "22:00-06:00 Europe/London"}
    text = explainer.render("zone_intrusion", facts)
    assert text == "Person #4 was in zone z while armed (22:00-06:00 Europe/London) on cam1, 14:00:00-14:00:23 (23 s)"
    with pytest.raises(Exception, match="track_id"):
        explainer.render("loitering", base)  # StrictUndefined: a missing fact is an error, never a blank


def test_finish_closes_open_incidents() -> None:
    rule = build_rule(loiter())
    hits = []
    for i in range(60):
        hits += rule.update(obs(i * 0.2, [9]))
    hits += rule.finish(T0 + timedelta(seconds=12))
    assert [h.state for h in hits] == ["start", "end"]
    assert hits[1].at == T0 + timedelta(seconds=11.8)
