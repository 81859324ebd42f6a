"""Turns rule hits into Incidents: id, sequence, explanation, snapshot; stores them and queues deliveries."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from plugin.evidence import draw_snapshot, write_jpeg
from plugin.explain import Explainer
from plugin.rules import RuleHit
from plugin.store import AsyncStore
from plugin.types import Frame, Incident
from plugin.zones import PolygonZone

log = logging.getLogger(__name__)


def _details(hit: RuleHit, frame: Frame | None) -> dict[str, Any]:
    """The hit's facts that JSON can carry, plus the box normalised to 0..1 (VMS overlays need it so)."""
    details: dict[str, Any] = {k: v for k, v in hit.facts.items() if isinstance(v, int | float | str)}
    if hit.box is not None and frame is not None:
        x1, y1, x2, y2 = hit.box
        w, h = frame.width, frame.height
        details["box"] = [round(min(max(v, 0.0), 1.0), 4) for v in (x1 / w, y1 / h, x2 / w, y2 / h)]
    return details


class IncidentManager:
    """One per process; owns the mapping from (rule, key) to the open incident."""

    def __init__(
        self,
        store: AsyncStore,
        evidence_dir: Path,
        explainer: Explainer,
        sink_ids: Sequence[str],
        on_saved: Callable[[Incident], None] | None = None,
    ) -> None:
        self.store = store
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

    async def handle(self, hit: RuleHit, frame: Frame | None, zone: PolygonZone | None) -> Incident | None:
        """Open or close the incident for `hit`; returns what was stored."""
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
        await self.store.call(self.store.sync.save, incident, self.sink_ids)
        log.info("%s: incident %s %s: %s", incident.camera, incident.id[:8], incident.state, incident.explanation)
        if self.on_saved is not None:
            self.on_saved(incident)
        return incident

    async def _snapshot(self, incident: Incident, hit: RuleHit, frame: Frame, zone: PolygonZone | None) -> Path:
        path = self.evidence_dir / incident.start.strftime("%Y-%m-%d") / f"{incident.id}.jpg"
        zone_px = None if zone is None else zone.polygon_px(frame.width, frame.height)
        label = f"#{hit.track_ids[0]} {hit.rule_id}" if hit.track_ids else hit.rule_id

        def work() -> None:
            write_jpeg(path, draw_snapshot(frame.image, hit.box, zone_px, label))

        await asyncio.to_thread(work)
        return path.resolve()
