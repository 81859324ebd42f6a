"""Access control: door events in, fused with the door cameras.

Door events come from access-control software by webhook (adapters/access_webhook.py) and from ONVIF Profile A/C
devices (door alarms and access decisions parsed by adapters/onvif_events.py). Each becomes a business event
`access.<kind>` (granted, denied, forced, held, closed), stored through the hub before anyone hears back. Once
stored:

- `tailgating`: after an access grant, more people crossed the door line in the "in" direction within
  `tailgate_window_s` than there were grants. Grants whose windows overlap are judged together (two badges, two
  people: fine). The people over the count are named by their track ids.
- a forced or held door raises an incident with the door camera's frame of the moment and the people count at the
  door zone (and across the door line).

Video lags the door controller, and a line crossing is confirmed a little after it happens, so judging waits (outside
the sender's acknowledgement) until the door camera's analysed video has passed the window, at most `wait_max_s`.

Badge ids are personal data: the database keeps only their HMAC under the install key (`badge_digest`), logs and
incidents a short prefix of it (`badge_ref`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from plugin.config.access import AccessConfig, AccessDoorConfig
from plugin.fusion.access.model import AccessEventIn, badge_digest
from plugin.fusion.hub import BusinessHub, PendingJudgements
from plugin.incidents.manager import IncidentManager
from plugin.metrics import Metrics
from plugin.pipeline.presence import PresenceLog
from plugin.private import install_key
from plugin.protocols import SubmitResult
from plugin.rules.base import RuleHit
from plugin.rules.line_crossing import FORGET_AFTER_S
from plugin.types import BusinessEvent, CameraSignal

log = logging.getLogger(__name__)

POLL_S = 0.25  # how often a waiting judgement looks at how far video has been analysed
# a crossing is confirmed min_frames after it, or, when the person walks out of view first, when the track is
# forgotten (FORGET_AFTER_S later, dated when it was last seen): video must be this far past a window to have it all
SETTLE_S = FORGET_AFTER_S + 1.0
# grants of one burst (two badges in a row) or of one late batch (a replay after an outage) arrive together: a grant
# is judged no sooner than this after it arrived, so the others of its group are in by then
GATHER_S = 0.5
GRANT_MEMORY_S = 900.0  # grants kept per door for grouping (windows are seconds long)
ALARM_LABELS = {"forced": "forced open", "held": "held open"}
# ONVIF door alarm causes (adapters/onvif_events.py) and access-decision causes that are door events here
_ONVIF_ALARMS = {"forced open": "forced", "held open": "held"}
_ONVIF_ACCESS = {"granted": "granted", "denied": "denied"}
_ONVIF_BADGE_ITEMS = ("CredentialToken", "Card", "CardNumber", "CredentialHolderName")


class AccessService:
    """The one entry for door events; subscribes to the business hub for what follows storage."""

    def __init__(
        self,
        config: AccessConfig,
        site: str,
        hub: BusinessHub,
        presence: PresenceLog,
        incidents: IncidentManager | None,
        metrics: Metrics | None = None,
        key: bytes | None = None,
    ) -> None:
        self.config = config
        # the install key for badge digests: it lives next to the database (the data folder) unless given
        self.key = key if key is not None else install_key(hub.db.sync.path.parent)
        self.site = site
        self.hub = hub
        self.presence = presence
        self.incidents = incidents
        self.metrics = metrics
        self._grants: dict[str, list[tuple[datetime, int]]] = defaultdict(list)  # per door: (time, arrival no.)
        self._arrivals = 0
        self._judgements = PendingJudgements("access")
        self.counts = {"events": 0, "duplicates": 0, "incidents": 0, "unverified": 0}
        hub.subscribe(self._on_event)

    async def close(self) -> None:
        """Stop judgements still waiting for video."""
        await self._judgements.cancel()

    async def idle(self, timeout_s: float = 60.0) -> None:
        """Wait until no judgement is pending (tests)."""
        await self._judgements.idle(timeout_s)

    # -- intake

    async def submit(self, event: AccessEventIn, source: str, origin: str) -> SubmitResult:
        """Store one door event (returns after it is committed: acknowledge the sender then). The door must be
        configured (the webhook checks before)."""
        door = self.config.door(event.door)
        assert door is not None, f"unknown door {event.door!r}"
        digest = badge_digest(self.key, event.badge)
        ref = digest[:8] if digest else ""
        payload = {
            "door": door.id, "kind": event.kind, "badge_digest": digest, "badge_ref": ref, "camera": door.camera,
            "origin": origin, "sender_id": event.id,
        }  # fmt: skip
        at = event.time
        key = f"{source}:{event.id}" if event.id else f"{door.id}:{event.kind}:{at.isoformat()}:{ref}"
        event_id, new = await self.hub.ingest(
            BusinessEvent(source, self.site, at, f"access.{event.kind}", payload), key
        )
        self.counts["events" if new else "duplicates"] += 1
        if new:
            log.info("access: door %s %s at %s (badge %s, %s)", door.id, event.kind, at.isoformat(), ref or "none",
                     origin)  # fmt: skip
        return SubmitResult(event_id, new)

    async def on_signal(self, signal: CameraSignal) -> None:
        """An ONVIF signal from a camera or access controller: door alarms and access decisions of configured
        doors become door events; everything else is not ours."""
        if signal.initialized:
            return  # a state reported as the subscription started, not something that happened now
        kind: str | None = None
        if signal.kind == "door_alarm" and signal.topic == "Door/State/DoorAlarm":
            kind = "closed" if signal.active is False else _ONVIF_ALARMS.get(signal.cause or "")
        elif signal.kind == "access":
            kind = _ONVIF_ACCESS.get(signal.cause or "")
        if kind is None:
            return
        tokens = {signal.source.get("DoorToken"), signal.source.get("AccessPointToken")} - {None}
        for door in self.config.doors:
            if door.onvif is None or (door.onvif.camera or door.camera) != signal.camera:
                continue
            if door.onvif.token not in tokens:
                continue
            badge = next((signal.data[k] for k in _ONVIF_BADGE_ITEMS if signal.data.get(k)), None)
            event = AccessEventIn(door=door.id, kind=kind, time=signal.at, badge=badge)  # type: ignore[arg-type]
            await self.submit(event, "access.onvif", signal.origin or signal.topic)

    # -- after storage

    async def _on_event(self, event_id: str, event: BusinessEvent) -> None:
        if event.kind not in ("access.granted", "access.forced", "access.held"):
            return
        door = self.config.door(str(event.payload.get("door")))
        if door is None:
            return  # stored by a config that had the door
        if event.kind == "access.granted":
            self._arrivals += 1
            grant = (event.time, self._arrivals)
            grants = sorted([*self._grants[door.id], grant])
            horizon = grants[-1][0] - timedelta(seconds=GRANT_MEMORY_S)
            self._grants[door.id] = [g for g in grants if g[0] >= horizon]
            work = self._judge_grant(door, grant)
        else:
            work = self._judge_alarm(door, event.kind.removeprefix("access."), event.time, event_id, event.payload)
        if self.incidents is None:
            work.close()
            return
        self._judgements.start(work, f"access-{door.id}-{event_id[:8]}")

    async def _video_until(self, camera: str, t: datetime) -> bool:
        """Wait until the camera's analysed video has passed `t` (True), or wait_max_s has gone by (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.wait_max_s
        while True:
            last = self.presence.analysed_until(camera)
            if last is not None and last >= t:
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(POLL_S)

    def _session(self, door: AccessDoorConfig, grant: tuple[datetime, int]) -> list[datetime]:
        """The grants judged together with `grant`, each within the window of the one before; empty unless
        `grant` is the last of them (that one judges the group)."""
        window = timedelta(seconds=door.tailgate_window_s)
        grants = self._grants[door.id]
        if grant not in grants:
            return []  # forgotten: far older than the others
        lo = hi = grants.index(grant)
        while lo > 0 and grants[lo][0] - grants[lo - 1][0] <= window:
            lo -= 1
        while hi + 1 < len(grants) and grants[hi + 1][0] - grants[hi][0] <= window:
            hi += 1
        return [g[0] for g in grants[lo : hi + 1]] if grants[hi] == grant else []

    async def _judge_grant(self, door: AccessDoorConfig, grant: tuple[datetime, int]) -> None:
        at = grant[0]
        window = timedelta(seconds=door.tailgate_window_s)
        await asyncio.sleep(GATHER_S)
        covered = await self._video_until(door.camera, at + window + timedelta(seconds=SETTLE_S))
        session = self._session(door, grant)
        if not session:
            return  # a later grant judges the group
        start, end = session[0] - timedelta(seconds=self.config.lead_s), session[-1] + window
        if not covered:
            last = self.presence.analysed_until(door.camera)
            if last is None or last < end:
                self.counts["unverified"] += 1
                log.info("access: door %s grant at %s not checked for tailgating: %s has not analysed the window",
                         door.id, at.isoformat(), door.camera)  # fmt: skip
                return
        entered = self.presence.crossings(door.camera, door.line_rule, start, end, "in")
        extra = entered[len(session) :]
        if not extra:
            return
        payload = {
            "door": door.id, "camera": door.camera, "line_rule": door.line_rule, "grants": len(session),
            "people": len(entered), "grant_times": [g.isoformat() for g in session],
            "track_ids": [c.track_id for c in entered], "extra_track_ids": [c.track_id for c in extra],
            "window": [start.isoformat(), end.isoformat()],
        }  # fmt: skip
        key = f"{door.id}:{session[-1].isoformat()}:tailgating"
        await self.hub.ingest(BusinessEvent("access.fusion", self.site, session[-1], "access.tailgating", payload), key)
        facts = {
            "door": door.id, "people": len(entered), "grants": len(session), "extra": len(extra),
            "grant_times": list(session), "line_rule": door.line_rule,
            "extra_tracks": ", ".join(f"#{c.track_id}" for c in extra),
        }  # fmt: skip
        await self._incident(
            "tailgating", door, key, tuple(sorted({c.track_id for c in extra})), start, end, extra[0].t, facts
        )

    async def _judge_alarm(
        self, door: AccessDoorConfig, kind: str, at: datetime, event_id: str, payload: Mapping[str, Any]
    ) -> None:
        pad = timedelta(seconds=self.config.alarm_window_s)
        await self._video_until(door.camera, at + pad)
        start, end = at - pad, at + pad
        both = self.presence.crossings(door.camera, door.line_rule, start, end)
        ins = [c for c in both if c.direction == "in"]
        people, watched, tracks = -1, False, tuple(sorted({c.track_id for c in both}))
        if door.zone is not None:
            answer = self.presence.people_in(door.camera, door.zone, start, end)
            watched = answer.watched
            if watched:
                people = answer.max_people
                tracks = tuple(sorted({*tracks, *answer.track_ids}))
        else:
            last = self.presence.analysed_until(door.camera)
            watched = last is not None and last >= end
        facts = {
            "door": door.id, "label": ALARM_LABELS[kind], "alarm_at": at, "people": people, "watched": watched,
            "door_zone": door.zone or "", "line_rule": door.line_rule, "crossed_in": len(ins),
            "crossed_out": len(both) - len(ins), "badge_ref": str(payload.get("badge_ref") or ""),
            "door_event": event_id, "window_start": start, "window_end": end,
        }  # fmt: skip
        await self._incident(kind, door, f"{door.id}:{at.isoformat()}:{kind}", tracks, start, end, at, facts)

    async def _incident(
        self, name: str, door: AccessDoorConfig, key: str, track_ids: tuple[int, ...], start: datetime,
        end: datetime, moment: datetime, facts: dict[str, Any],
    ) -> None:  # fmt: skip
        setting = getattr(self.config.incidents, name)
        if setting == "off" or self.incidents is None:
            return
        hit = RuleHit(
            rule_id=f"access.{name}", type=f"access_{name}", key=key, state="start", camera=door.camera,
            zone=door.zone, track_ids=track_ids, started_at=start, at=end, severity=setting, facts=facts,
        )  # fmt: skip
        near = self.presence.frame_near(door.camera, moment)
        opened = await self.incidents.handle(
            hit, None, None, jpeg=None if near is None else near.jpeg, people=None if near is None else near.people
        )
        await self.incidents.handle(replace(hit, state="end"), None, None)
        if opened is not None:
            self.counts["incidents"] += 1
            if self.metrics is not None:
                self.metrics.incidents.labels(camera=door.camera, rule=hit.rule_id).inc()
