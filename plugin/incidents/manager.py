"""Turns rule hits into Incidents: id, sequence, explanation, snapshot; stores them and queues deliveries."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from plugin.incidents.database import AsyncDatabase, incident_from_json
from plugin.incidents.evidence import draw_snapshot, write_jpeg
from plugin.incidents.explain import Explainer
from plugin.rules.base import RuleHit
from plugin.rules.zones import PolygonZone
from plugin.types import Frame, Incident

log = logging.getLogger(__name__)


def _details(hit: RuleHit, frame: Frame | None) -> dict[str, Any]:
    """The hit's facts that JSON can carry, plus the box normalised to 0..1 (VMS overlays need it so)."""
    details: dict[str, Any] = {k: v for k, v in hit.facts.items() if isinstance(v, int | float | str)}
    # lists of names (the open system conditions) travel too; anything else is for the explanation only
    details.update(
        (k, list(v)) for k, v in hit.facts.items() if isinstance(v, list | tuple) and all(isinstance(x, str) for x in v)
    )
    if hit.box is not None and frame is not None:
        x1, y1, x2, y2 = hit.box
        w, h = frame.width, frame.height
        details["box"] = [round(min(max(v, 0.0), 1.0), 4) for v in (x1 / w, y1 / h, x2 / w, y2 / h)]
    return details


class IncidentManager:
    """One per process; owns the mapping from (rule, key) to the open incident."""

    def __init__(
        self,
        db: AsyncDatabase,
        evidence_dir: Path,
        explainer: Explainer,
        sink_ids: Sequence[str],
        on_saved: Callable[[Incident], None] | None = None,
    ) -> None:
        self.db = db
        self.evidence_dir = evidence_dir
        self.explainer = explainer
        self.sink_ids = list(sink_ids)
        self.on_saved = on_saved
        self._open: dict[tuple[str, str, str], Incident] = {}
        self.count = 0

    def _facts(self, hit: RuleHit, ended: bool) -> dict[str, object]:
        facts = dict(hit.facts)
        facts.update(camera=hit.camera, zone=hit.zone, start=hit.started_at, end=hit.at, ended=ended)
        facts.setdefault("schedule", None)
        return facts

    def adopt(self, incident: Incident, key: str) -> None:
        """Take over an incident an earlier run left open (keyed as its hits are), so the next end hit closes it."""
        self._open[(incident.camera, incident.rule_id, key)] = incident

    async def close_left_open(self, now: datetime, keep_cameras: Collection[str] = ()) -> list[Incident]:
        """End the camera incidents a run that stopped (crash, kill, power cut) left open.

        Rule state does not survive a restart, so nothing would ever end them: they would stay open in every VMS.
        Each gets its end now, saying so; a condition that still holds opens a fresh incident once its rule has
        seen it again. `keep_cameras` (StoreSight's own health camera) are left to whoever adopts them."""
        docs = await self.db.call(self.db.sync.open_incidents)
        closed: list[Incident] = []
        for doc in docs:
            if doc["camera"] in keep_cameras:
                continue
            opened = incident_from_json(doc)
            note = (
                f" Closed at restart: StoreSight stopped while this was open and ended it at {now:%Y-%m-%d %H:%M:%S} "
                "UTC; if the condition still holds, a new incident opens."
            )
            incident = replace(
                opened,
                state="end",
                seq=opened.seq + 1,
                end=max(now, opened.start),
                explanation=opened.explanation + note,
                details={**opened.details, "closed_by": "restart"},
            )
            await self.db.call(self.db.sync.save, incident, self.sink_ids)
            log.warning(
                "%s: incident %s (%s) was left open by the last run; closed at restart", incident.camera,
                incident.id[:8], incident.rule_id,
            )  # fmt: skip
            if self.on_saved is not None:
                self.on_saved(incident)
            closed.append(incident)
        return closed

    async def handle(
        self,
        hit: RuleHit,
        frame: Frame | None,
        zone: PolygonZone | None,
        exclude_sinks: Collection[str] = (),
        jpeg: bytes | None = None,
    ) -> Incident | None:
        """Open or close the incident for `hit`; returns what was stored. `exclude_sinks` get no delivery of it
        (a health incident about a sink is not sent to that sink: it would only fail there too). `jpeg`: a ready
        snapshot for an opening without a frame (business-event fusion takes its moment from the presence log)."""
        key = (hit.camera, hit.rule_id, hit.key)
        if hit.state == "start":
            incident = Incident(
                id=Incident.new_id(),
                rule_id=hit.rule_id,
                type=hit.type,
                camera=hit.camera,
                start=hit.started_at,
                state="start",
                seq=0,
                explanation=self.explainer.render(hit.type, self._facts(hit, ended=False)),
                severity=hit.severity,
                zone=hit.zone,
                track_ids=hit.track_ids,
                details=_details(hit, frame),
            )
            if frame is not None:
                incident = replace(incident, snapshot=str(await self._snapshot(incident, hit, frame, zone)))
            elif jpeg:
                incident = replace(incident, snapshot=str(await self._snapshot_bytes(incident, jpeg)))
            self._open[key] = incident
            self.count += 1
        else:
            opened = self._open.pop(key, None)
            if opened is None:
                log.warning("%s: end of unknown incident %s/%s ignored", hit.camera, hit.rule_id, hit.key)
                return None
            incident = replace(
                opened,
                state="end",
                seq=opened.seq + 1,
                end=hit.at,
                explanation=self.explainer.render(hit.type, self._facts(hit, ended=True)),
                details={**_details(hit, None), **({"box": opened.details["box"]} if "box" in opened.details else {})},
            )
        sink_ids = [s for s in self.sink_ids if s not in exclude_sinks]
        await self.db.call(self.db.sync.save, incident, sink_ids)
        log.info("%s: incident %s %s: %s", incident.camera, incident.id[:8], incident.state, incident.explanation)
        if self.on_saved is not None:
            self.on_saved(incident)
        return incident

    async def _snapshot_bytes(self, incident: Incident, jpeg: bytes) -> Path:
        path = self.evidence_dir / incident.start.strftime("%Y-%m-%d") / f"{incident.id}.jpg"

        def work() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(jpeg)
            tmp.replace(path)  # a reader never sees half a file

        await asyncio.to_thread(work)
        return path.resolve()

    async def _snapshot(self, incident: Incident, hit: RuleHit, frame: Frame, zone: PolygonZone | None) -> Path:
        path = self.evidence_dir / incident.start.strftime("%Y-%m-%d") / f"{incident.id}.jpg"
        zone_px = None if zone is None else zone.polygon_px(frame.width, frame.height)
        label = f"#{hit.track_ids[0]} {hit.rule_id}" if hit.track_ids else hit.rule_id

        def work() -> None:
            write_jpeg(path, draw_snapshot(frame.image, hit.box, zone_px, label))

        await asyncio.to_thread(work)
        return path.resolve()
