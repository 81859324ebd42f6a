"""Intrusion alarm panels inside the bridge: the armed state rules can follow, and video verification of burglary
and panic alarms, scored on the ANSI/TMA AVS-01 alarm validation levels.

Adapters (adapters/alarm/) turn panel reports into BusinessEvents of kind `alarm.<kind>` whose payload names the
panel, account, panel zone and area. They reach this module through BusinessHub after they are stored.

AVS-01 levels and what StoreSight can honestly assign:
- 2 "human presence confirmed": a person was seen in a camera zone mapped to the alarmed panel zone within the
  window around the alarm. Intent is unknown: the camera saw someone, not what they meant to do.
- 1 "alarm without video confirmation": nobody was seen, or the video was unavailable. An empty view is no proof
  that nobody is there (blind spots, a detector miss, a covered lens), so an unverified alarm stays a real alarm.
- 0 (no call / cancel) needs a person's judgement or a valid user cancel: never assigned here.
- 3 (threat to property) and 4 (threat to life) need evidence of intent, a weapon or violence that person
  detection does not give: never assigned here.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import cv2
import numpy as np

from plugin.config.alarms import AlarmAccountConfig, AlarmPanelConfig, AlarmZoneView
from plugin.config.cameras import CameraConfig
from plugin.fusion.hub import PendingJudgements
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.evidence import NormBox
from plugin.incidents.manager import IncidentManager
from plugin.pipeline.presence import PresenceAnswer, PresenceLog
from plugin.rules.base import RuleHit
from plugin.rules.zones import PolygonZone
from plugin.types import BusinessEvent, Frame, Incident

log = logging.getLogger(__name__)

KIND_PREFIX = "alarm."
ALARM_KINDS = ("burglary", "panic", "fire", "tamper", "arm", "disarm", "trouble", "restore", "test", "other")
VERIFIED_KINDS = ("burglary", "panic")
AVS_LEVELS = {1: "alarm without video confirmation", 2: "human presence confirmed"}
# Analysed video trails the wall clock (decode, detector queue): after the window has passed, wait up to this long
# for every mapped camera's analysis to pass the window's end. A camera that is down does not hold the alarm longer.
VIDEO_LAG_MAX_S = 5.0
LAG_POLL_S = 0.25
HISTORY_PER_AREA = 256  # arm/disarm transitions kept per panel area: weeks of history for forensic reviews


def alarm_kind(event: BusinessEvent) -> str | None:
    """`burglary` for an `alarm.burglary` event; None for events that are not from an alarm panel."""
    return event.kind.removeprefix(KIND_PREFIX) if event.kind.startswith(KIND_PREFIX) else None


class PanelStates:
    """Armed or disarmed per panel, account and area, as a history: a rule asks about the time of its frame, so a
    file analysed later (`run --once`) sees the panel as it was then."""

    def __init__(self) -> None:
        self._history: dict[str, dict[tuple[str, str], list[tuple[datetime, bool]]]] = {}

    def apply(self, panel: str, account: str, area: str, armed: bool, at: datetime) -> None:
        """Record an arm (closing) or disarm (opening) report."""
        series = self._history.setdefault(panel, {}).setdefault((account, area), [])
        bisect.insort(series, (at, armed), key=lambda item: item[0])
        del series[:-HISTORY_PER_AREA]

    def apply_event(self, event: BusinessEvent) -> bool:
        """Record an `alarm.arm` / `alarm.disarm` event; False for other events."""
        kind = alarm_kind(event)
        if kind not in ("arm", "disarm"):
            return False
        p = event.payload
        self.apply(str(p.get("panel", event.source)), str(p.get("account", "")), str(p.get("area") or "0"),
                   kind == "arm", event.time)  # fmt: skip
        return True

    def armed(self, panel: str, at: datetime) -> bool:
        """Whether any area of the panel was armed at `at` (unknown, before any report, counts as disarmed)."""
        for series in self._history.get(panel, {}).values():
            i = bisect.bisect_right(series, at, key=lambda item: item[0])
            if i and series[i - 1][1]:
                return True
        return False

    def state(self, panel: str) -> dict[str, object]:
        """The latest report per account and area, for status pages."""
        return {
            f"{account}/{area}": {"armed": series[-1][1], "since": series[-1][0].isoformat()}
            for (account, area), series in self._history.get(panel, {}).items()
            if series
        }

    async def load(self, db: AsyncDatabase, panels: Iterable[str]) -> int:
        """Replay stored arm/disarm reports of these panels (a restart keeps the armed state); returns how many."""
        wanted = set(panels)
        count = 0
        for kind in ("arm", "disarm"):
            rows = await db.call(db.sync.business_events, "0000", "9999", KIND_PREFIX + kind)
            for row in rows:
                if row["source"] in wanted:
                    event = BusinessEvent(row["source"], row["site"], datetime.fromisoformat(row["time"]),
                                          row["kind"], row["payload"])  # fmt: skip
                    count += self.apply_event(event)
        return count


@dataclass(frozen=True)
class Verification:
    """What video said about an alarm."""

    level: int  # AVS-01: 1 or 2 (see the module docstring)
    reason: str
    camera: str  # the view the incident is filed on: where someone was seen, else the first watching view
    zone: str
    track_ids: tuple[int, ...]
    people: int
    evidence_at: datetime | None  # when the person was seen (the evidence frame)

    @property
    def verified(self) -> bool:
        """Human presence confirmed."""
        return self.level >= 2


def _people(n: int) -> str:
    return "1 person" if n == 1 else f"{n} people"


def score(views: Sequence[tuple[AlarmZoneView, PresenceAnswer]]) -> Verification:
    """The AVS-01 level and its reason from what each mapped camera zone saw over the window."""
    if not views:
        raise ValueError("score() needs at least one camera view")
    seen = [(v, a) for v, a in views if a.max_people > 0]
    if seen:
        view, answer = max(seen, key=lambda va: va[1].max_people)
        ids = tuple(sorted({i for _, a in seen for i in a.track_ids}))
        reason = "; ".join(f"{_people(a.max_people)} seen in zone {v.zone} on {v.camera}" for v, a in seen)
        return Verification(2, reason, view.camera, view.zone, ids, answer.max_people, answer.peak_at)
    watched = [(v, a) for v, a in views if a.watched]
    blind = [(v, a) for v, a in views if not a.watched]
    parts = []
    if watched:
        looked = " or ".join(
            f"zone {v.zone} on {v.camera} (watched {round(a.watched_share * 100)}% of the window)" for v, a in watched
        )
        parts.append(f"no person seen in {looked}")
    if blind:
        missing = ", ".join(
            f"{v.camera} did not analyse zone {v.zone} (watched {round(a.watched_share * 100)}% of the window)"
            for v, a in blind
        )
        parts.append(f"video unavailable: {missing}")
    view = (watched or blind)[0][0]
    return Verification(1, "; ".join(parts), view.camera, view.zone, (), 0, None)


class AlarmVerifier:
    """BusinessHub handler: arm/disarm reports update PanelStates; a burglary or panic alarm is judged on video once
    its window has passed, and sent as an `alarm_verified` / `alarm_unverified` incident to every sink."""

    def __init__(
        self,
        panel_configs: Sequence[AlarmPanelConfig],
        cameras: Sequence[CameraConfig],
        presence: PresenceLog,
        incidents: IncidentManager,
        panels: PanelStates,
        now: Callable[[], datetime] | None = None,
        video_lag_max_s: float = VIDEO_LAG_MAX_S,
    ) -> None:
        self.presence = presence
        self._zones = {(c.id, z.id): z for c in cameras for z in c.zones}  # where the verdict draws its zone
        self.incidents = incidents
        self.panels = panels
        self._now = now or (lambda: datetime.now(UTC))
        self.video_lag_max_s = video_lag_max_s
        self._accounts: dict[tuple[str, str], tuple[AlarmPanelConfig, AlarmAccountConfig]] = {
            (p.id, a.account): (p, a) for p in panel_configs for a in p.accounts
        }
        self._judgements = PendingJudgements("alarm verification")
        self._closing = asyncio.Event()
        self._unmapped: set[tuple[str, str, str]] = set()
        self.verified = 0
        self.unverified = 0

    async def on_event(self, event_id: str, event: BusinessEvent) -> None:
        """Called by BusinessHub after the event is stored; returns at once (verification runs in a task)."""
        kind = alarm_kind(event)
        if kind is None:
            return
        if self.panels.apply_event(event):
            log.info("%s: panel %s (account %s area %s)", event.source, "armed" if kind == "arm" else "disarmed",
                     event.payload.get("account"), event.payload.get("area"))  # fmt: skip
        elif kind in VERIFIED_KINDS:
            self._judgements.start(self._verify_later(event_id, event), f"verify-{event_id[:8]}")

    def _views(self, event: BusinessEvent) -> tuple[AlarmPanelConfig, list[AlarmZoneView]] | None:
        p = event.payload
        found = self._accounts.get((str(p.get("panel")), str(p.get("account"))))
        if found is None:
            return None
        panel, account = found
        zone = str(p.get("zone") or "")
        views = account.zone_map.get(zone, [])
        if not views:
            key = (panel.id, account.account, zone)
            if key not in self._unmapped:  # said once per zone: the event is stored, the VMS just cannot show it
                self._unmapped.add(key)
                log.warning("%s: account %s zone %r has no camera in zone_map: its alarms are stored, not verified",
                            panel.id, account.account, zone)  # fmt: skip
            return None
        return panel, views

    async def _verify_later(self, event_id: str, event: BusinessEvent) -> Incident | None:
        found = self._views(event)
        if found is None:
            return None
        panel, views = found
        end = event.time + timedelta(seconds=panel.verify_after_s)
        # the window includes video after the alarm: wait for it to happen, then for its analysis to catch up
        with suppress(TimeoutError):
            async with asyncio.timeout(max((end - self._now()).total_seconds(), 0.0)):
                await self._closing.wait()
        waited = 0.0
        while not self._closing.is_set() and waited < self.video_lag_max_s:
            analysed = [self.presence.last_sample(v.camera, v.zone) for v in views]
            if all(t is not None and t >= end for t in analysed):
                break
            await asyncio.sleep(LAG_POLL_S)
            waited += LAG_POLL_S
        return await self.verify(event_id, event)

    async def verify(self, event_id: str, event: BusinessEvent) -> Incident | None:
        """Judge the alarm on the video of its window now and send the incident (start, then end)."""
        found = self._views(event)
        if found is None:
            return None
        panel, views = found
        kind = alarm_kind(event) or "alarm"
        start = event.time - timedelta(seconds=panel.verify_before_s)
        end = event.time + timedelta(seconds=panel.verify_after_s)
        verdict = score([(v, self.presence.people_in(v.camera, v.zone, start, end)) for v in views])
        p = event.payload
        facts: dict[str, object] = {
            "alarm": kind.capitalize(),
            "kind": kind,
            "panel": panel.id,
            "account": str(p.get("account")),
            "panel_zone": str(p.get("zone")),
            "code": str(p.get("code")),
            "alarm_at": event.time,
            "avs_level": verdict.level,
            "avs_text": AVS_LEVELS[verdict.level],
            "verified": verdict.verified,
            "reason": verdict.reason,
            "people": verdict.people,
            "business_event_id": event_id,
            "cameras": sorted({v.camera for v in views}),
        }
        hit_type = "alarm_verified" if verdict.verified else "alarm_unverified"
        severity = "critical" if verdict.verified or kind == "panic" else "warning"

        def hit(state: Literal["start", "end"]) -> RuleHit:
            return RuleHit(panel.id, hit_type, event_id, state, verdict.camera, verdict.zone, verdict.track_ids,
                           start, end, severity, facts)  # fmt: skip

        frame, people = await self._evidence(verdict.camera, verdict.evidence_at or event.time)
        zone_config = self._zones.get((verdict.camera, verdict.zone))
        zone = None if zone_config is None else PolygonZone(zone_config)
        opened = await self.incidents.handle(hit("start"), frame, zone, people=people)
        await self.incidents.handle(hit("end"), None, None)  # a point event: the window is the incident
        if verdict.verified:
            self.verified += 1
        else:
            self.unverified += 1
        log.info("%s: %s alarm zone %s: AVS-01 level %d: %s", panel.id, kind, p.get("zone"), verdict.level,
                 verdict.reason)  # fmt: skip
        return opened

    async def _evidence(self, camera: str, t: datetime) -> tuple[Frame | None, Sequence[NormBox] | None]:
        """The kept frame nearest `t`, and where the people were in it (for a blurred copy)."""
        kept = self.presence.frame_near(camera, t)
        if kept is None:
            return None, None
        image = await asyncio.to_thread(cv2.imdecode, np.frombuffer(kept.jpeg, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            return None, None
        return Frame(camera, 0, kept.at, 0.0, np.ascontiguousarray(image, np.uint8)), kept.people

    async def close(self) -> None:
        """Judge pending alarms now, on the video there is (shutdown), rather than drop them."""
        self._closing.set()
        await self._judgements.wait()
