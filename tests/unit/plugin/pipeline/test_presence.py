"""Presence log (what fusion asks of video) and the business-event hub (durable before fusion, deduplicated)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from plugin.fusion.hub import BusinessHub
from plugin.incidents.database import AsyncDatabase
from plugin.pipeline.presence import PresenceLog
from plugin.types import BusinessEvent, Frame

T0 = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)


def feed(log: PresenceLog, seconds: list[float], inside_by_second: dict[int, list[int]]) -> None:
    """Analysed frames at the given times; track ids inside zone 'counter' per whole second."""
    image = np.full((432, 768, 3), 80, np.uint8)
    for s in seconds:
        ids = inside_by_second.get(int(s), [])
        track_ids = np.asarray([*ids, 99], np.int32)  # 99 is always elsewhere
        mask = np.array([True] * len(ids) + [False], bool)
        log.record(Frame("lane3", int(s * 10), T0 + timedelta(seconds=s), 0.0, image), {"counter": mask}, track_ids)


def test_people_in_a_window_with_coverage() -> None:
    log = PresenceLog()
    feed(log, [i * 0.2 for i in range(0, 300)], {10: [4], 11: [4, 5], 12: [5]})  # 60 s at 5 fps
    busy = log.people_in("lane3", "counter", T0 + timedelta(seconds=9), T0 + timedelta(seconds=13))
    assert busy.watched and busy.max_people == 2 and busy.track_ids == (4, 5) and busy.watched_share == 1.0
    empty = log.people_in("lane3", "counter", T0 + timedelta(seconds=30), T0 + timedelta(seconds=40))
    assert empty.watched and empty.max_people == 0 and empty.track_ids == ()


def test_a_window_the_camera_did_not_watch_is_unknown_not_empty() -> None:
    log = PresenceLog()
    feed(log, [i * 0.2 for i in range(0, 50)] + [i * 0.2 for i in range(200, 250)], {})  # 0-10 s, then 40-50 s
    gap = log.people_in("lane3", "counter", T0 + timedelta(seconds=15), T0 + timedelta(seconds=35))
    assert not gap.watched and gap.watched_share == 0.0
    assert not log.people_in("lane9", "counter", T0, T0 + timedelta(seconds=5)).watched  # unknown camera
    frame = log.frame_near("lane3", T0 + timedelta(seconds=5.4))
    assert frame is not None and frame[1][:2] == b"\xff\xd8"
    assert log.frame_near("lane3", T0 + timedelta(seconds=25)) is None  # nothing near the gap


async def test_hub_stores_before_fusion_and_dedupes(tmp_path: Path) -> None:
    database = AsyncDatabase(tmp_path / "db.sqlite")
    try:
        hub = BusinessHub(database)
        seen: list[tuple[str, str, int]] = []

        async def fusion(event_id: str, event: BusinessEvent) -> None:
            stored = await database.call(database.sync.business_events, "2026-01-01", "2027-01-01")
            seen.append((event_id, event.kind, len(stored)))  # the event is already committed when fusion runs

        async def broken(event_id: str, event: BusinessEvent) -> None:
            raise RuntimeError("bug in a fusion rule")

        hub.subscribe(broken)
        hub.subscribe(fusion)
        refund = BusinessEvent("pos", "store-42", T0, "pos.refund", {"lane": 3, "amount": 59.99})
        first = await hub.ingest(refund, dedupe_key="pos:lane3:txn-1001")
        again = await hub.ingest(refund, dedupe_key="pos:lane3:txn-1001")
        assert first[1] is True and again[1] is False
        assert seen == [(first[0], "pos.refund", 1)]  # fused once, after storage, despite the broken handler
        [row] = await database.call(database.sync.business_events, "2026-11-29", "2026-11-30", "pos.refund")
        assert row["payload"] == {"lane": 3, "amount": 59.99} and row["site"] == "store-42"
    finally:
        await database.close()
