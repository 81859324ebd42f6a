"""Incidents a stopped run left open are ended at the next start, delivered once, and system incidents are kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from plugin.incidents.database import AsyncDatabase
from plugin.incidents.explain import Explainer
from plugin.incidents.manager import IncidentManager
from plugin.rules.base import RuleHit
from plugin.types import SYSTEM_CAMERA

T0 = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)


def _hit(camera: str, rule: str, kind: str, key: str, state: str = "start", at: datetime = T0) -> RuleHit:
    return RuleHit(
        rule_id=rule, type=kind, key=key, state=state, camera=camera, zone=None, track_ids=(), started_at=T0, at=at,
        severity="warning", facts={"reason": "covered", "duration_s": 30.0, "offline_s": 40.0, "threshold_s": 30.0,
                                   "site": "store-1", "free_mb": 10.0, "free_percent": 1.0, "path": "/data",
                                   "threshold": "5 %"},
    )  # fmt: skip


async def test_left_open_camera_incidents_end_once_at_restart(tmp_path: Path) -> None:
    database = AsyncDatabase(tmp_path / "db.sqlite")
    try:
        first = IncidentManager(database, tmp_path / "ev", Explainer("UTC"), ["nx", "hook"])
        still_open = await first.handle(_hit("cam1", "tamper", "camera_tamper", "cam1"), None, None)
        done = await first.handle(_hit("cam2", "offline", "camera_offline", "cam2"), None, None)
        ended = _hit("cam2", "offline", "camera_offline", "cam2", "end", T0 + timedelta(minutes=2))
        await first.handle(ended, None, None)
        low = _hit(SYSTEM_CAMERA, "system_storage_low", "system_storage_low", "storage")
        system = await first.handle(low, None, None)
        assert still_open is not None and done is not None and system is not None
        # the process dies here: the next run starts with a fresh manager over the same database
        now = T0 + timedelta(hours=1)
        second = IncidentManager(database, tmp_path / "ev", Explainer("UTC"), ["nx", "hook"])
        closed = await second.close_left_open(now, keep_cameras=(SYSTEM_CAMERA,))

        assert [(i.id, i.state, i.seq, i.end) for i in closed] == [(still_open.id, "end", 1, now)]
        assert "Closed at restart" in closed[0].explanation
        assert closed[0].details["closed_by"] == "restart"
        doc = await database.call(database.sync.incident, still_open.id)
        assert doc is not None and doc["state"] == "end" and doc["end"] == now.isoformat()
        system_doc = await database.call(database.sync.incident, system.id)
        assert system_doc is not None and system_doc["state"] == "start"  # the system health monitor adopts it
        for sink in ("nx", "hook"):
            keys = [d.delivery_key for d in await database.call(database.sync.due, sink, 1e12)]
            assert keys.count(closed[0].delivery_key) == 1
        # a second restart finds nothing left open on cameras and delivers nothing again
        third = IncidentManager(database, tmp_path / "ev", Explainer("UTC"), ["nx", "hook"])
        assert await third.close_left_open(now + timedelta(minutes=1), keep_cameras=(SYSTEM_CAMERA,)) == []
    finally:
        await database.close()
