"""Turns rule hits into Incidents: id, sequence, explanation, snapshot; stores them and queues deliveries.

A snapshot that cannot be written (disk full, out of file handles) leaves the incident stored without one. An
incident the database cannot take (disk full, locked by another process) waits in memory, in order, and is stored
by the next attempt or the retry loop (`run`): the cameras and their rule state carry on meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from plugin.incidents.database import AsyncDatabase
from plugin.incidents.documents import incident_from_json
from plugin.incidents.evidence import (
    NormBox,
    blur_people,
    blurred_path,
    decode_jpeg,
    draw_snapshot,
    write_jpeg,
)
from plugin.incidents.explain import Explainer
from plugin.private import private_dir, write_private
from plugin.rules.base import RuleHit
from plugin.rules.zones import PolygonZone
from plugin.types import Frame, Incident

log = logging.getLogger(__name__)

RETRY_S = 2.0  # how often incidents the database did not take are tried again
MAX_UNSAVED = 10_000  # incidents kept in memory while the database fails (~2 KB each); beyond, the oldest go


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
        blurred_copies: bool = False,
    ) -> None:
        self.db = db
        self.evidence_dir = evidence_dir
        self.explainer = explainer
        self.sink_ids = list(sink_ids)
        self.on_saved = on_saved
        # a sink says `privacy: blur`: each snapshot also gets a copy with the people blurred (evidence.blurred_path)
        self.blurred_copies = blurred_copies
        self._open: dict[tuple[str, str, str], Incident] = {}
        self.count = 0
        # incidents the database did not take yet, oldest first, with the sinks each goes to
        self._unsaved: deque[tuple[Incident, list[str]]] = deque()
        self._saving = asyncio.Lock()
        self.store_error: str | None = None  # why the oldest unsaved incident is waiting
        self.dropped = 0  # unsaved incidents dropped beyond MAX_UNSAVED
        self.snapshot_failures = 0

    @property
    def unsaved(self) -> int:
        """Incidents waiting in memory for the database."""
        return len(self._unsaved)

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
        people: Sequence[NormBox] | None = None,
    ) -> Incident | None:
        """Open or close the incident for `hit`; returns what was stored (or waits to be: `unsaved`).
        `exclude_sinks` get no delivery of it (a health incident about a sink is not sent to that sink: it would only
        fail there too). `jpeg`: a ready snapshot for an opening without a frame (business-event fusion takes its
        moment from the presence log). `people`: the people's boxes (0..1) in the frame or jpeg, for the blurred
        copy; None when unknown (the whole copy is blurred)."""
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
            if frame is not None or jpeg:
                incident = await self._with_snapshot(incident, hit, frame, zone, jpeg, people)
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
        if len(self._unsaved) >= MAX_UNSAVED:
            lost, _ = self._unsaved.popleft()
            self.dropped += 1
            log.error("%s: incident %s %s dropped: the database has failed for %d incidents", lost.camera,
                      lost.id[:8], lost.state, MAX_UNSAVED)  # fmt: skip
        self._unsaved.append((incident, sink_ids))
        await self.flush_unsaved()
        return incident

    async def flush_unsaved(self) -> bool:
        """Store the incidents waiting for the database, oldest first (an end never before its start); True when
        none is left. A database failure leaves them waiting, for the next incident or the retry loop."""
        async with self._saving:
            while self._unsaved:
                incident, sink_ids = self._unsaved[0]
                try:
                    await self.db.call(self.db.sync.save, incident, sink_ids)
                except sqlite3.Error as exc:
                    if self.store_error is None:
                        log.error(
                            "%s: incident %s %s not stored yet, kept in memory and retried: %s", incident.camera,
                            incident.id[:8], incident.state, exc,
                        )  # fmt: skip
                    self.store_error = f"{type(exc).__name__}: {exc}"
                    return False
                self._unsaved.popleft()
                log.info("%s: incident %s %s: %s", incident.camera, incident.id[:8], incident.state,
                         incident.explanation)  # fmt: skip
                if self.on_saved is not None:
                    self.on_saved(incident)
            if self.store_error is not None:
                log.warning("incidents: the database takes incidents again; every waiting incident is stored")
                self.store_error = None
            return True

    async def run(self, interval_s: float = RETRY_S) -> None:
        """Retry what the database did not take, until cancelled (the app runs it while sinks run)."""
        while True:
            await asyncio.sleep(interval_s)
            if self._unsaved:
                await self.flush_unsaved()

    def _path(self, incident: Incident) -> Path:
        return self.evidence_dir / incident.start.strftime("%Y-%m-%d") / f"{incident.id}.jpg"

    async def _with_snapshot(
        self,
        incident: Incident,
        hit: RuleHit,
        frame: Frame | None,
        zone: PolygonZone | None,
        jpeg: bytes | None,
        people: Sequence[NormBox] | None,
    ) -> Incident:
        """The incident with its snapshot written (and the blurred copy); without one when it cannot be written
        (disk full, out of file handles): the incident matters more than its picture."""
        path = self._path(incident)
        t0 = time.perf_counter()
        try:
            if frame is not None:
                await asyncio.to_thread(self._write_frame, path, hit, frame, zone, people)
            else:
                assert jpeg is not None
                await asyncio.to_thread(self._write_bytes, path, jpeg, people)
        except Exception as exc:
            self.snapshot_failures += 1
            why = f"{type(exc).__name__}: {exc}"
            log.warning("%s: incident %s stored without its snapshot: %s", incident.camera, incident.id[:8], why,
                        exc_info=not isinstance(exc, OSError))  # fmt: skip
            return replace(incident, details={**incident.details, "snapshot_error": why})
        log.debug("%s: snapshot of %s in %.1f ms", incident.camera, incident.id[:8], 1e3 * (time.perf_counter() - t0))
        return replace(incident, snapshot=str(path.resolve()))

    def _write_frame(
        self, path: Path, hit: RuleHit, frame: Frame, zone: PolygonZone | None, people: Sequence[NormBox] | None
    ) -> None:
        """The frame with the zone and the box drawn (worker thread); then the copy with the people blurred."""
        zone_px = None if zone is None else zone.polygon_px(frame.width, frame.height)
        label = f"#{hit.track_ids[0]} {hit.rule_id}" if hit.track_ids else hit.rule_id
        if self.blurred_copies:  # written first: a sink never finds the original without its blurred copy
            write_jpeg(blurred_path(path), draw_snapshot(blur_people(frame.image, people), hit.box, zone_px, label))
        write_jpeg(path, draw_snapshot(frame.image, hit.box, zone_px, label))

    def _write_bytes(self, path: Path, jpeg: bytes, people: Sequence[NormBox] | None) -> None:
        """A ready JPEG as the snapshot (worker thread), and the copy with the people blurred. With a copy, both are
        encoded from the same decoded pixels, so they differ only where the people are."""
        if self.blurred_copies:
            image = decode_jpeg(jpeg)
            write_jpeg(blurred_path(path), blur_people(image, people))
            write_jpeg(path, image)
            return
        private_dir(path.parent)
        write_private(path, jpeg)
