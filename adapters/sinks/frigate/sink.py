"""Frigate sink (0.14+): a manual event per incident through Frigate's HTTP API (INTEGRATIONS.md section 5.1).

When an incident starts: `POST /api/events/<camera>/<label>/create` on the Frigate camera it is mapped to
(`cameras: {storesight id: Frigate camera name}`), label `storesight` (configurable), the rule id as sub label, the
score when the incident has one, `include_recording`, and the person's box drawn on the snapshot when the incident's
`details.box` holds one (normalised [x1, y1, x2, y2]). With `duration_s` unset (the default) the event is created
open (`"duration": null`) and the incident's end closes it: `PUT /api/events/<event id>/end` with the end time; then
`POST /api/events/<event id>/description` writes the final explanation, so it shows with the event. With
`duration_s` set, Frigate ends the event itself after that many seconds, and the end writes only the description.
API-created events are alerts in Frigate 0.15+ and keep the recording (with the camera's pre/post capture).

What a retry can do:
- the create: at least once. Frigate's documented API has no lookup by our id, so a create whose reply was lost
  (timeout, dropped connection, a gateway's 502/504) is sent again and Frigate then holds two events; the first
  stays open until someone ends it in Frigate (set `duration_s` where that must not happen). The retry logs a
  warning naming the incident. The event id Frigate returns is stored (SinkRefs) as soon as it answers.
- the end: exactly once, through the stored event id. A retry after its reply was lost ends the same event again
  with the same end time, which changes nothing; an end whose start never reached Frigate creates one event of the
  incident's length, which Frigate ends itself.
- the description: written again on a retry (it replaces itself). A Frigate without event descriptions (404/405
  on that call) is logged once and the end still counts as delivered.
Steps that completed are remembered per incident (`<state>:<seq>:<step>`), so a retry repeats none of them.

StoreSight's own health (system incidents, camera "system": analytics down, a sink dead-lettering, storage low) is
delivered as skipped, said once in the log: Frigate has no event that belongs to no camera.

Frigate stamps an event's start itself when the create arrives (the API takes no start time), so an event created
late (after an outage) starts late; its end is never put before the create, so it stays a valid range.

Auth, as Frigate's ports work: port 5000 takes requests without auth (keep it inside the docker network); port
8971 wants a JWT, which this sink gets from `POST /api/login {"user", "password"}` (the `frigate_token` cookie)
and sends as `Authorization: Bearer`, logging in again once on a 401; or a configured `token` is sent as is. A
refused login, a second 401, and 403 (the user lacks the admin role Frigate requires to create events) are
`SinkAuthError`; connection failures, timeouts, 408/429 (Frigate rate-limits logins) and 5xx are `SinkNotReady`;
other 4xx, such as 404 for a camera Frigate does not have, are `SinkRejected`.

INTEGRATIONS.md marks as [I]nferred, and this adapter assumes: the element format of `draw.boxes`, taken as
`{"box": [x, y, width, height]}` in fractions of the frame with an optional `score` in percent (how Frigate's
external event processor reads it, not a documented contract); `end_time` in epoch seconds. Beyond it: that the
description endpoint may answer 404 for an event created moments ago (Frigate writes events to its database
asynchronously), which is why descriptions are written at the end, not at the start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import quote

from adapters.sinks.common import (
    GATEWAY_STATUSES,
    NoAnswer,
    incident_time,
    normalised_box,
)
from adapters.sinks.frigate.config import FrigateSinkConfig
from adapters.sinks.http import HttpClient, Reply
from plugin.config.base import literal_key
from plugin.errors import SinkAuthError, SinkNotReady, SinkRejected
from plugin.protocols import Receipt, SinkHealth, SinkRefs, is_system_incident
from plugin.redact import redact_url

API = "/api"
TOKEN_COOKIE = "frigate_token"  # Frigate's default auth.cookie_name
TEST_SUB_LABEL = "storesight-test"
# Frigate caps sub labels at 100 characters (its sub_label endpoint refuses longer ones).
SUB_LABEL_MAX = 100
# Enough of an error answer for Frigate's `message`, not a whole HTML page.
ERROR_TEXT_MAX = 200
# An event is never ended before its create was answered plus this: Frigate started it at the create, so an end
# time before that (an incident that ended during an outage) would make a negative range.
MIN_EVENT_S = 1.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Incident:
    """The parts of the incident JSON this sink writes, checked once."""

    id: str
    rule_id: str
    camera: str
    state: str
    seq: int
    start: datetime
    end: datetime | None
    explanation: str
    box: tuple[float, float, float, float] | None
    score: float | None

    @classmethod
    def parse(cls, key: str, doc: Mapping[str, Any]) -> _Incident:
        """From the outbox payload; SinkRejected when it lacks what an event needs."""
        details = doc.get("details")
        details = details if isinstance(details, Mapping) else {}
        score = details.get("score")
        try:
            inc = cls(
                id=str(doc["id"]),
                rule_id=str(doc["rule_id"]),
                camera=str(doc["camera"]),
                state=str(doc.get("state") or "start"),
                seq=int(doc.get("seq") or 0),
                start=incident_time(doc["start"], "start", key),
                end=None if doc.get("end") is None else incident_time(doc["end"], "end", key),
                explanation=str(doc.get("explanation") or doc["rule_id"]),
                box=normalised_box(details),
                score=float(score) if isinstance(score, int | float) and 0 <= score <= 1 else None,
            )
        except KeyError as exc:
            raise SinkRejected(f"incident {key} has no {exc.args[0]!r}") from None
        except (TypeError, ValueError):
            raise SinkRejected(f"incident {key}: seq {doc.get('seq')!r} is not a number") from None
        if inc.state not in ("start", "update", "end"):
            raise SinkRejected(f"incident {key}: unknown state {inc.state!r}")
        if not inc.id or not inc.rule_id:
            raise SinkRejected(f"incident {key} has an empty id or rule_id")
        return inc

    @property
    def description(self) -> str:
        """The event's description: the explanation and the incident id."""
        return f"{self.explanation} (StoreSight incident {self.id})"


@dataclass
class _Ref:
    """What this sink created for one incident and which steps are done (kept in SinkRefs as JSON)."""

    event: str | None = None
    created_at: float | None = None  # epoch seconds (our clock) when Frigate answered the create
    creating: bool = False  # a create went out without an answer: the retry may duplicate it
    done: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, text: str | None) -> _Ref:
        """From the stored reference; nothing (or something unreadable) starts afresh."""
        try:
            doc = json.loads(text) if text else {}
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        event, created = doc.get("event"), doc.get("created_at")
        return cls(
            event=event if isinstance(event, str) and event else None,
            created_at=float(created) if isinstance(created, int | float) else None,
            creating=doc.get("creating") is True,
            done=[s for s in doc.get("done", []) if isinstance(s, str)],
        )

    def dump(self) -> str:
        """The reference to store."""
        doc = {"event": self.event, "created_at": self.created_at, "creating": self.creating, "done": self.done}
        return json.dumps(doc, separators=(",", ":"))


def _error_text(data: Any, text: str) -> str:
    """Frigate's `{"success": false, "message"}` (or FastAPI's `detail`), else the start of the answer."""
    if isinstance(data, Mapping):
        for key in ("message", "detail"):
            if data.get(key):
                return str(data[key])[:ERROR_TEXT_MAX]
    return " ".join(text.split())[:ERROR_TEXT_MAX]


def _jwt_cookie(headers: Any) -> str | None:
    """The JWT a login answer sets: the `frigate_token` cookie, else any cookie that holds a JWT (a renamed one)."""
    found: str | None = None
    for raw in headers.getall("Set-Cookie", []):
        try:
            cookie: SimpleCookie = SimpleCookie(raw)
        except CookieError:
            continue
        for name, morsel in cookie.items():
            if name == TOKEN_COOKIE and morsel.value:
                return morsel.value
            if morsel.value.count(".") == 2:
                found = found or morsel.value
    return found


Step = Callable[[_Incident, _Ref], Awaitable[str]]


class FrigateSink:
    """Manual events in one Frigate; see the module docstring for what each step guarantees."""

    kind = literal_key(FrigateSinkConfig, "kind")

    def __init__(self, config: FrigateSinkConfig, refs: SinkRefs) -> None:
        self.config = config
        self.id = config.id
        self.health = SinkHealth()
        self.refs = refs
        self.base = config.url.rstrip("/")
        self.where = redact_url(self.base)  # never credentials: this goes into logs, errors and /readyz
        # the JWT goes in as Bearer, under this sink's control: no cookies are kept
        self.http = HttpClient(
            self.base, self.where, timeout_s=config.timeout_s, verify_tls=config.verify_tls,
            ca_bundle=config.ca_bundle, ca_hint="set ca_bundle to the CA of Frigate's certificate",
        )  # fmt: skip
        self._token: str | None = config.token.get_secret_value() if config.token is not None else None
        self._login_lock = asyncio.Lock()
        self._said: set[str] = set()

    # --- publishing ---------------------------------------------------------------------------------------------

    async def publish(self, delivery_key: str, incident: Mapping[str, Any]) -> Receipt:
        """Start: create the event; end: end it and write the explanation. Steps done before are skipped."""
        if is_system_incident(incident):
            # unsupported: degrade, say so once (every event in Frigate belongs to a camera)
            if "system" not in self._said:
                self._said.add("system")
                log.info("%s: Frigate has no system events: StoreSight's own health incidents are not sent", self.id)
            return Receipt("Frigate: skipped, Frigate has no events without a camera")
        inc = _Incident.parse(delivery_key, incident)
        camera = self.config.cameras.get(inc.camera)
        if camera is None:
            mapped = ", ".join(sorted(self.config.cameras)) or "none"
            raise SinkRejected(
                f"{self.where}: camera {inc.camera!r} has no Frigate camera in sink {self.id!r} "
                f"(add `{inc.camera}: <Frigate camera name>` under cameras; mapped: {mapped})"
            )
        ref = _Ref.load(await self.refs.get_ref(self.id, inc.id))
        out: list[str] = []
        if inc.state == "start":
            if ref.event is None:
                await self._create(inc, camera, ref, self.config.duration_s)
                out.append(f"event {ref.event} created")
            else:
                out.append(f"event {ref.event} created before")
        elif inc.state == "end":
            if ref.event is None:
                # the start never reached Frigate (or this bridge lost its references): one complete event
                length = 1 if inc.end is None else max(1, math.ceil((inc.end - inc.start).total_seconds()))
                await self._create(inc, camera, ref, length)
                ref.done.append(f"{inc.state}:{inc.seq}:end")  # Frigate ends it: a redelivery must not
                await self._save(inc.id, ref)
                out.append(f"event {ref.event} created for {length} s")
            elif self.config.duration_s is None:
                out.append(await self._once(inc, ref, "end", self._end))
            out.append(await self._once(inc, ref, "description", self._describe))
        return Receipt(f"Frigate {inc.state}: {'; '.join(out) or 'nothing to write'} on camera {camera}")

    async def _save(self, incident_id: str, ref: _Ref) -> None:
        await self.refs.put_ref(self.id, incident_id, ref.dump())

    async def _once(self, inc: _Incident, ref: _Ref, step: str, run: Step) -> str:
        """Run a step unless an earlier attempt completed it; remember it once it has."""
        key = f"{inc.state}:{inc.seq}:{step}"
        if key in ref.done:
            return f"{step} done before"
        detail: str = await run(inc, ref)
        ref.done.append(key)
        await self._save(inc.id, ref)
        return detail

    async def _create(self, inc: _Incident, camera: str, ref: _Ref, duration: int | None) -> None:
        """Create the event and store its id; a create left unanswered before is sent again (and said so)."""
        if ref.creating:
            log.warning("%s: the create of incident %s's event got no answer last time; creating it again, so "
                        "Frigate may now hold two events (the first stays open unless it has a duration)",
                        self.id, inc.id)  # fmt: skip
        else:
            ref.creating = True
            await self._save(inc.id, ref)
        body: dict[str, Any] = {
            "source_type": "api",
            "sub_label": inc.rule_id[:SUB_LABEL_MAX],
            "duration": duration,
            "include_recording": self.config.include_recording,
        }
        if inc.score is not None:
            body["score"] = inc.score
        if inc.box is not None:
            x1, y1, x2, y2 = inc.box
            box: dict[str, Any] = {"box": [x1, y1, x2 - x1, y2 - y1]}
            if inc.score is not None:
                box["score"] = round(inc.score * 100)
            body["draw"] = {"boxes": [box]}
        path = f"{API}/events/{quote(camera, safe='')}/{quote(self.config.label, safe='')}/create"
        try:
            reply = await self._call("POST", path, f"create the event of incident {inc.id}", body)
        except NoAnswer:
            raise  # still creating: the retry warns that it may duplicate
        except (SinkNotReady, SinkRejected, SinkAuthError):
            ref.creating = False  # Frigate answered: it created nothing
            await self._save(inc.id, ref)
            raise
        event = reply.data.get("event_id") if isinstance(reply.data, Mapping) else None
        if not isinstance(event, str) or not event:
            # it may have been created: stay "creating", so the retry says it may duplicate
            raise SinkNotReady(f"{self.where}: the create for incident {inc.id} answered without an event_id")
        ref.event, ref.created_at, ref.creating = event, time.time(), False
        await self._save(inc.id, ref)
        log.debug("%s: event %s created for incident %s", self.id, event, inc.id)

    async def _end(self, inc: _Incident, ref: _Ref) -> str:
        assert ref.event is not None
        end = (inc.end or datetime.now(UTC)).timestamp()
        if ref.created_at is not None:
            end = max(end, ref.created_at + MIN_EVENT_S)
        path = f"{API}/events/{quote(ref.event, safe='')}/end"
        await self._call("PUT", path, f"end event {ref.event} of incident {inc.id}", {"end_time": end})
        return f"event {ref.event} ended"

    async def _describe(self, inc: _Incident, ref: _Ref) -> str:
        assert ref.event is not None
        path = f"{API}/events/{quote(ref.event, safe='')}/description"
        what = f"describe event {ref.event} of incident {inc.id}"
        reply = await self._call("POST", path, what, {"description": inc.description}, allow=(404, 405))
        if reply.status in (404, 405):
            if "description" not in self._said:
                self._said.add("description")
                log.warning("%s: %s keeps no description for event %s (HTTP %d: %s); explanations are not written "
                            "to Frigate", self.id, self.where, ref.event, reply.status,
                            _error_text(reply.data, reply.text))  # fmt: skip
            return "no description (not supported)"
        return "description written"

    # --- HTTP -----------------------------------------------------------------------------------------------------

    async def _send(self, method: str, path: str, what: str, body: Any, token: str | None) -> Reply:
        """One request as JSON, with the JWT as Bearer when there is one; no reply at all raises NoAnswer."""
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self.http.request(method, path, what=what, json_body=body, headers=headers)

    async def _bearer(self, stale: str | None = None) -> str | None:
        """The JWT to send: none without auth, the configured token, or one from a login (again when `stale`)."""
        if self.config.username is None or self.config.password is None:
            return self._token
        async with self._login_lock:
            if self._token is None or self._token == stale:
                body = {"user": self.config.username, "password": self.config.password.get_secret_value()}
                reply = await self._send("POST", f"{API}/login", "log in", body, None)
                if 400 <= reply.status < 500 and reply.status not in (408, 425, 429):
                    raise SinkAuthError(
                        f"{self.where}: login as {self.config.username!r} refused (HTTP {reply.status}): "
                        f"{_error_text(reply.data, reply.text)}"
                    )
                self._check(reply, "log in")
                token = _jwt_cookie(reply.headers)
                if token is None:
                    raise SinkNotReady(f"{self.where}: the login answer set no {TOKEN_COOKIE} cookie")
                self._token = token
                log.info("%s: logged in to %s as %s", self.id, self.where, self.config.username)
            return self._token

    async def _call(self, method: str, path: str, what: str, body: Any = None, allow: tuple[int, ...] = ()) -> Reply:
        """An authenticated request: one new login on a 401 (when logging in is configured), then the outcome."""
        token = await self._bearer()
        reply = await self._send(method, path, what, body, token)
        if reply.status == 401 and self.config.username is not None:
            token = await self._bearer(stale=token)
            reply = await self._send(method, path, what, body, token)
        return self._check(reply, what, allow)

    def _check(self, reply: Reply, what: str, allow: tuple[int, ...] = ()) -> Reply:
        """Map a status to the three outcomes; 2xx and `allow` pass."""
        if 200 <= reply.status < 300 or reply.status in allow:
            return reply
        why = f"{self.where}: {what}: HTTP {reply.status} {_error_text(reply.data, reply.text)}".rstrip()
        if reply.status == 401:
            if self.config.username is not None:
                self._token = None  # the next delivery logs in afresh
                raise SinkAuthError(f"{why} again after a fresh login")
            raise SinkAuthError(f"{why} (Frigate wants auth here: set username/password, or a token that is valid)")
        if reply.status == 403:
            raise SinkAuthError(f"{why} (the Frigate user needs the admin role to create events)")
        if reply.status in GATEWAY_STATUSES:
            raise NoAnswer(why)
        if reply.status in (408, 425, 429) or reply.status >= 500:
            raise SinkNotReady(why)
        if 300 <= reply.status < 400:
            raise SinkNotReady(f"{why}: redirected; point url at Frigate itself")
        raise SinkRejected(why)

    # --- self-test and lifecycle ----------------------------------------------------------------------------------

    async def cameras(self) -> list[str]:
        """The camera names in Frigate's configuration."""
        reply = await self._call("GET", f"{API}/config", "read Frigate's configuration")
        cams = reply.data.get("cameras") if isinstance(reply.data, Mapping) else None
        if not isinstance(cams, Mapping):
            raise SinkNotReady(f"{self.where}: /api/config has no cameras section")
        return sorted(str(c) for c in cams)

    async def self_test(self) -> str:
        """Log in, check every mapped camera exists in Frigate, then create and end a labelled test event."""
        names = await self.cameras()
        missing = {cam: name for cam, name in self.config.cameras.items() if name not in names}
        if missing:
            listed = ", ".join(f"{cam} -> {name}" for cam, name in sorted(missing.items()))
            known = ", ".join(names) or "none"
            raise SinkRejected(f"{self.where}: cameras Frigate does not have: {listed} (Frigate's cameras: {known})")
        camera, name = sorted(self.config.cameras.items())[0]
        body = {"source_type": "api", "sub_label": TEST_SUB_LABEL, "duration": None, "include_recording": False}
        path = f"{API}/events/{quote(name, safe='')}/{quote(self.config.label, safe='')}/create"
        reply = await self._call("POST", path, "create a test event", body)
        event = reply.data.get("event_id") if isinstance(reply.data, Mapping) else None
        if not isinstance(event, str) or not event:
            raise SinkNotReady(f"{self.where}: the test event's create answered without an event_id")
        end = {"end_time": time.time() + MIN_EVENT_S}
        await self._call("PUT", f"{API}/events/{quote(event, safe='')}/end", "end the test event", end)
        return (
            f"{self.where}: {len(self.config.cameras)} mapped camera(s) found; created and ended test event {event} "
            f"(label {self.config.label}, sub label {TEST_SUB_LABEL}) on {camera} -> {name}"
        )

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.http.close()
