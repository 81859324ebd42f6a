"""A live camera's wall clock jumping (an NTP step, someone setting the time). File sources carry media time and
never see it. For a live source the rules measure durations on frame times, so StoreSight decides: what is open
ends at the last frame before the jump, and the rules start over (as after a restart), on the new clock. Without
that, a jump back makes durations negative: the open incident never ends and nothing new opens until the clock
has caught up (an hour, for a one-hour step). A jump forward looked like an hour-long gap, in which the tracker
loses every track, so the outcome was already the same; it is now explicit, and the motion gate, the tamper
baseline and the camera's presence series start over too."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from helpers import example

from plugin.config.loader import parse_config
from plugin.config.service import DetectorConfig
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.explain import Explainer
from plugin.incidents.manager import IncidentManager
from plugin.metrics import Metrics
from plugin.pipeline.camera import CameraPipeline
from plugin.pipeline.presence import PresenceLog
from plugin.rules.registry import build_rule
from plugin.types import Detections, Frame

T0 = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
FPS = 5
HOUR = 3600.0


class _StandingPerson:
    """Stands in for the detector: one person standing at the table (feet in zone `table`)."""

    async def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        return [Detections.from_arrays([[410, 200, 510, 400]], [0.9], [0]) for _ in images]


@pytest.fixture
async def camera(tmp_path: Path) -> AsyncIterator[tuple[CameraPipeline, AsyncDatabase]]:
    """A live camera (not a file) with the example's 8 s loitering rule at the table, and a real database."""
    config = parse_config(example())
    cam = config.cameras[0]
    db = AsyncDatabase(tmp_path / "db.sqlite")
    incidents = IncidentManager(db, tmp_path / "evidence", Explainer("UTC"), [])
    rule_configs = [r for r in config.rules if r.id == "table-dwell"]
    source = SimpleNamespace(status=SimpleNamespace(frames_dropped=0), is_file=False)  # frames come from the test
    pipeline = CameraPipeline(cam, source, _StandingPerson(), DetectorConfig(), [build_rule(r) for r in rule_configs],  # type: ignore[arg-type]
                              incidents, Metrics())  # fmt: skip
    pipeline.fresh_rules = lambda: [build_rule(r) for r in rule_configs]
    pipeline.presence = PresenceLog()
    pipeline.resolve_classes(["person"])
    yield pipeline, db
    await db.close()


async def _feed(pipeline: CameraPipeline, frames: range, jump_s: float = 0.0) -> None:
    """Frames at FPS stamped as a live source does: wall clock (plus the jump) and the monotonic clock together."""
    image = np.full((432, 768, 3), 90, np.uint8)
    for k in frames:
        t = k / FPS
        await pipeline.process(Frame("cam1", k, T0 + timedelta(seconds=t + jump_s), 1000.0 + t, image))


async def _incidents(db: AsyncDatabase) -> list[dict[str, Any]]:
    return sorted(await db.call(db.sync.incidents), key=lambda d: d["start"])


async def test_a_jump_forward_ends_what_was_open_and_starts_over_on_the_new_clock(
    camera: tuple[CameraPipeline, AsyncDatabase],
) -> None:
    pipeline, db = camera
    await _feed(pipeline, range(0, 15))  # 3 s at the table
    await _feed(pipeline, range(15, 30), jump_s=HOUR)  # the clock steps an hour ahead; 3 s more
    assert await _incidents(db) == []  # 6 s in all and a restart of the dwell: under the rule's 8 s, nothing
    assert pipeline.status.clock_jumps == 1
    await _feed(pipeline, range(30, 90), jump_s=HOUR)  # the person stays: 12 s more on the new clock
    [incident] = await _incidents(db)
    # the dwell counted from the jump (the rules started over), dated on the new clock
    start = datetime.fromisoformat(incident["start"])
    assert T0 + timedelta(seconds=HOUR + 3) <= start <= T0 + timedelta(seconds=HOUR + 4)


async def test_a_jump_back_ends_the_open_incident_at_its_last_true_frame_and_starts_over(
    camera: tuple[CameraPipeline, AsyncDatabase],
) -> None:
    pipeline, db = camera
    await _feed(pipeline, range(0, 60))  # 12 s at the table: the 8 s rule opens an incident
    [opened] = await _incidents(db)
    assert opened["state"] == "start"
    last_true = T0 + timedelta(seconds=59 / FPS)
    await _feed(pipeline, range(60, 120), jump_s=-HOUR)  # the clock steps an hour back; the person stays 12 s
    docs = await _incidents(db)
    assert len(docs) == 2
    assert pipeline.status.clock_jumps == 1
    first = next(d for d in docs if d["id"] == opened["id"])
    second = next(d for d in docs if d["id"] != opened["id"])
    assert first["state"] == "end"
    assert datetime.fromisoformat(first["end"]) == last_true  # ended at the last frame before the jump
    assert "closed_by" not in first["details"]  # by its own rule's finish, as at the end of a file
    # the rule started over on the new clock: a fresh incident, 8 s after the jump
    start = datetime.fromisoformat(second["start"])
    assert T0 - timedelta(seconds=HOUR - 12) <= start <= T0 - timedelta(seconds=HOUR - 13)
    # presence follows the new clock (fusion looks up windows by time: the old, later entries are gone)
    analysed = pipeline.presence.analysed_until("cam1") if pipeline.presence else None
    assert analysed == T0 + timedelta(seconds=119 / FPS - HOUR)


async def test_a_file_source_is_never_taken_for_a_clock_jump(camera: tuple[CameraPipeline, AsyncDatabase]) -> None:
    """Media time of a file decoded faster than real time differs from the monotonic clock by design."""
    pipeline, _ = camera
    pipeline.source.is_file = True  # type: ignore[misc]
    await _feed(pipeline, range(0, 15))
    await _feed(pipeline, range(15, 30), jump_s=HOUR)  # a gap in the recording: an hour later in the footage
    assert pipeline.status.clock_jumps == 0
