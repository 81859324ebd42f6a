"""Nx's REST-only analytics integration (VMS 6.1+), the opt-in part of the Nx sink (`analytics: {enabled: true}`).

Operations, all in Nx's OpenAPI file (`../shared/specs/nx/v4_api_spec.json` next to the checkout):
1. Registration: `POST /rest/v4/analytics/integrations/*/requests` (no login) with the integration manifest
   (`integration_id`, `integration_name`, `vendor`), an engine manifest whose `typeLibrary` declares one object type
   `<integration_id>.person` and one state-dependent event type `<integration_id>.incident`, a device agent manifest
   supporting both, `isRestOnly: true` and the configured 4-digit `pinCode`. The reply's `requestId`, `username` and
   `password` are kept in SinkRefs (key `nx-analytics-registration`, SQLite next to the outbox, never logged), so a
   restart does not register a second time.
2. Approval: an administrator approves the request in Nx. Until then every delivery raises SinkNotReady
   "... waiting for approval in Nx (request <id>, PIN <pin>)" (the outbox retries it and shows the reason in the
   sink health); Nx is asked again at most every `approval_poll_s`. The bridge logs in with the integration's own
   credentials and reads `GET /rest/v4/analytics/integrations/*/requests/{requestId}`: `isApproved`, and once
   approved `integrationId` and `engineId`. A request that has disappeared (404: rejected or deleted) is
   forgotten and a new one is made at the next try.
3. Engine: the `engineId` of the approved request, checked with `GET /rest/v4/analytics/engines/{engineId}`: its
   `integrationId` must be the request's. Device agents: `GET .../engines/{engineId}/deviceAgents/{deviceId}` for each
   camera's Nx device on first use, `PATCH {"isEnabled": true}` when it is off.
4. Per incident on its mapped device: at the start, object metadata (`.../metadata/object`) with one object per
   track id, typed `<integration_id>.person`, carrying the incident's normalised box (details.box `[x1,y1,x2,y2]`
   -> `"x,y,WxH"`), then an analytics event (`.../metadata/event`, caption = the rule id, description = the
   explanation, `isActive: true`, key = the incident id); at the end the same event key with `isActive: false` and
   the end's explanation. Updates send nothing; system incidents (no camera) send nothing here.

Exactly once where Nx allows it: each push (`start:tracks`, `start:event`, `end:event`) is recorded in the
incident's SinkRefs entry once Nx accepted it, so a retry (e.g. the event failed after the tracks went, or approval
came later) never repeats it. Object metadata is keyed
by a track id derived from the incident id and StoreSight's track id (uuid5), so a repeat after a lost reply only
adds the same point to the same Nx track. An analytics event repeated after a lost reply carries the same `key`;
whether Nx folds it into the first is not documented, so that case is at least once.

Assumed, beyond what the OpenAPI file says [I] (INTEGRATIONS.md section 2.8 marks the engine-to-integration link
after approval as inferred):
- the integration user (the credentials in the registration reply) may read its own request and push metadata
  once approved; before approval its login may be refused (401/403), which is read as "still waiting";
- the approved request's `engineId` is the engine created for this integration (checked against the engine's
  `integrationId`), and its device agents are addressed by the Nx device id;
- the analytics event `key` identifies one event across its active and inactive states;
- metadata replies carry no body (the spec documents none); a 2xx means it was taken.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from adapters.sinks.http import Reply
from adapters.sinks.nx.api import API, NxApi, NxIncident
from adapters.sinks.nx.config import NxAnalyticsConfig
from plugin.errors import SinkAuthError, SinkNotReady
from plugin.protocols import SinkRefs

REQUESTS = f"{API}/analytics/integrations/*/requests"
REGISTRATION_KEY = "nx-analytics-registration"  # the SinkRefs key (not an incident id) of the registration
TRACK_NAMESPACE = uuid.UUID("5b0c7f0e-3f5e-4c55-9a59-2f1f7c0e8a11")  # StoreSight's own namespace for Nx track ids
DEFAULT_SESSION_S = 600

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registration:
    """What Nx answered to the registration request."""

    request_id: str
    username: str
    password: str

    def dump(self) -> str:
        """The stored form."""
        return json.dumps({"requestId": self.request_id, "username": self.username, "password": self.password})

    @staticmethod
    def load(text: str | None) -> Registration | None:
        """The stored form read back; None when absent or unreadable (then a new request is made)."""
        try:
            doc = json.loads(text or "")
            return Registration(str(doc["requestId"]), str(doc["username"]), str(doc["password"]))
        except (ValueError, TypeError, KeyError):
            return None


def nx_box(box: Any) -> str | None:
    """`[x1, y1, x2, y2]` in 0..1 as Nx's `"x,y,WxH"`; None when it is not such a box."""
    if not isinstance(box, list | tuple) or len(box) != 4 or not all(isinstance(v, int | float) for v in box):
        return None
    x1, y1, x2, y2 = (min(max(float(v), 0.0), 1.0) for v in box)
    if x2 <= x1 or y2 <= y1:
        return None
    return f"{x1:.4g},{y1:.4g},{x2 - x1:.4g}x{y2 - y1:.4g}"


def track_uuid(incident_id: str, track_id: Any) -> str:
    """The Nx track id of one StoreSight track within one incident (the same on every retry)."""
    return str(uuid.uuid5(TRACK_NAMESPACE, f"{incident_id}/{track_id}"))


class NxAnalytics:
    """Registration, approval, engine and device agents, and the metadata pushes, for one Nx sink."""

    def __init__(self, api: NxApi, refs: SinkRefs, sink_id: str, config: NxAnalyticsConfig) -> None:
        self.api = api
        self.refs = refs
        self.sink_id = sink_id  # the log prefix, and whose SinkRefs keep the registration
        self.where = api.where
        self.config = config
        self.object_type = f"{config.integration_id}.person"
        self.event_type = f"{config.integration_id}.incident"
        self.engine: str | None = None
        self.waiting: str | None = None  # why deliveries wait, while they do
        self._next_poll = 0.0
        self._token: str | None = None
        self._renew_at = 0.0
        self._agents: set[str] = set()  # devices whose agent is known to be enabled

    # -- registration and approval ------------------------------------------------------------------------------

    def _request_body(self) -> dict[str, Any]:
        c = self.config
        return {
            "integrationManifest": {"id": c.integration_id, "name": c.integration_name,
                                    "description": "StoreSight retail video analytics: incidents and their tracks",
                                    "version": "1.0.0", "vendor": c.vendor},
            "engineManifest": {"typeLibrary": {
                "objectTypes": [{"id": self.object_type, "name": "Person"}],
                "eventTypes": [{"id": self.event_type, "name": "StoreSight incident", "flags": "stateDependent"}],
            }},
            "deviceAgentManifest": {"supportedTypes": [{"objectTypeId": self.object_type},
                                                       {"eventTypeId": self.event_type}]},
            "isRestOnly": True,
            "pinCode": c.pin_code,
        }  # fmt: skip

    async def _registration(self) -> Registration:
        """The stored registration, or a new request sent now (kept before anything else happens)."""
        reg = Registration.load(await self.refs.get_ref(self.sink_id, REGISTRATION_KEY))
        if reg is not None:
            return reg
        reply = await self.api.send("POST", REQUESTS, body=self._request_body())
        self.api.check(reply, "register the analytics integration")
        data = reply.data if isinstance(reply.data, dict) else {}
        try:
            reg = Registration(str(data["requestId"]), str(data["username"]), str(data["password"]))
        except KeyError as exc:
            raise SinkNotReady(f"{self.where}: the registration reply lacks {exc}") from None
        await self.refs.put_ref(self.sink_id, REGISTRATION_KEY, reg.dump())
        log.warning("%s: registered analytics integration %r with %s as request %s (PIN %s): approve it in Nx",
                    self.sink_id, self.config.integration_id, self.where, reg.request_id,
                    self.config.pin_code)  # fmt: skip
        return reg

    async def _login(self, reg: Registration) -> str | None:
        """A session of the integration user; None when Nx refuses it (before approval)."""
        if self._token is not None and time.monotonic() < self._renew_at:
            return self._token
        sent = time.monotonic()
        body = {"username": reg.username, "password": reg.password, "setCookie": False}
        reply = await self.api.send("POST", f"{API}/login/sessions", body=body)
        if reply.status in (401, 403):
            return None
        self.api.check(reply, "log in as the analytics integration")
        data = reply.data if isinstance(reply.data, dict) else {}
        token, expires = data.get("token"), data.get("expiresInS")
        if not isinstance(token, str) or not token:
            raise SinkNotReady(f"{self.where}: the integration login reply carries no token")
        lifetime = float(expires) if isinstance(expires, int | float) and expires > 0 else float(DEFAULT_SESSION_S)
        self._renew_at = sent + lifetime * 0.8
        self._token = token
        return token

    async def _call(
        self, method: str, path: str, what: str, body: Mapping[str, Any] | None = None, allow: tuple[int, ...] = ()
    ) -> Reply:
        """A request as the integration user, logging in again once on a 401; 403 names the integration's user."""
        reg = await self._registration()
        for attempt in (1, 2):
            token = await self._login(reg)
            if token is None:
                raise SinkAuthError(f"{self.where}: {what}: Nx refused the integration's login")
            reply = await self.api.send(method, path, body=body, token=token)
            if reply.status == 401 and attempt == 1:
                self._token = None
                continue
            if reply.status == 403:
                raise SinkAuthError(f"{self.where}: {what}: HTTP 403: the analytics integration's user "
                                    f"{reg.username!r} lacks a permission this needs")  # fmt: skip
            return self.api.check(reply, what, allow)
        raise AssertionError("unreachable")

    def _wait(self, why: str) -> SinkNotReady:
        self.waiting = why
        self._next_poll = time.monotonic() + self.config.approval_poll_s
        return SinkNotReady(why)

    async def ready(self) -> str:
        """The engine id once the integration is approved; SinkNotReady saying why while it is not."""
        if self.engine is not None:
            return self.engine
        if self.waiting is not None and time.monotonic() < self._next_poll:
            raise SinkNotReady(self.waiting)
        reg = await self._registration()
        waiting = (f"{self.where}: analytics integration {self.config.integration_id!r} is waiting for approval "
                   f"in Nx (request {reg.request_id}, PIN {self.config.pin_code})")  # fmt: skip
        if await self._login(reg) is None:
            raise self._wait(waiting)
        reply = await self._call("GET", f"{REQUESTS}/{reg.request_id}", "read the registration request", allow=(404,))
        if reply.status == 404:
            await self.refs.put_ref(self.sink_id, REGISTRATION_KEY, "")
            self._token = None
            raise self._wait(f"{self.where}: registration request {reg.request_id} is gone from Nx (rejected or "
                             "deleted); a new one is made at the next try")  # fmt: skip
        data = reply.data if isinstance(reply.data, dict) else {}
        engine, integration = data.get("engineId"), data.get("integrationId")
        if data.get("isApproved") is not True or not isinstance(engine, str) or not engine:
            raise self._wait(waiting)
        found = await self._call(
            "GET", f"{API}/analytics/engines/{engine}", "read the integration's engine", allow=(404,)
        )
        record = found.data if isinstance(found.data, dict) else {}
        if found.status == 404 or record.get("integrationId") != integration:
            raise self._wait(f"{self.where}: the approved request names engine {engine}, but Nx has no such "
                             f"engine of integration {integration}")  # fmt: skip
        log.info("%s: analytics integration approved in Nx: engine %s", self.sink_id, engine)
        self.engine, self.waiting = engine, None
        return engine

    async def status(self) -> str:
        """One line for `storesight vms test`."""
        try:
            engine = await self.ready()
        except SinkNotReady as exc:
            return f"analytics: {exc}"
        return f"analytics: integration approved, engine {engine}"

    # -- metadata -----------------------------------------------------------------------------------------------

    async def _agent(self, engine: str, device: str) -> None:
        if device in self._agents:
            return
        path = f"{API}/analytics/engines/{engine}/deviceAgents/{device}"
        reply = await self._call("GET", path, f"read the device agent on {device}", allow=(404,))
        if reply.status == 404 or not (isinstance(reply.data, dict) and reply.data.get("isEnabled") is True):
            await self._call("PATCH", path, f"enable the device agent on {device}", {"isEnabled": True})
            log.info("%s: analytics device agent enabled on device %s", self.sink_id, device)
        self._agents.add(device)

    async def push(
        self,
        inc: NxIncident,
        device: str,
        incident: Mapping[str, Any],
        done: tuple[str, ...],
        mark: Callable[[str], Awaitable[None]],
    ) -> str:
        """This state's object metadata and analytics event on `device`, each unless `done` holds it (`<state>:tracks`,
        `<state>:event`); `mark` records each once Nx took it. What was sent."""
        if f"{inc.state}:event" in done:
            return ""
        engine = await self.ready()
        await self._agent(engine, device)
        base = f"{API}/analytics/engines/{engine}/deviceAgents/{device}/metadata"
        details = incident.get("details")
        box = nx_box(details.get("box")) if isinstance(details, Mapping) else None
        tracks = [t for t in incident.get("track_ids") or [] if isinstance(t, int | str)]
        sent = []
        at_ms = inc.end_ms if inc.state == "end" and inc.end_ms is not None else inc.start_ms
        if inc.state == "start" and box is not None and tracks and "start:tracks" not in done:
            objects = [{"trackId": track_uuid(inc.id, t), "typeId": self.object_type, "boundingBox": box}
                       for t in tracks]  # fmt: skip
            body = {"timestampMs": at_ms, "durationMs": 0, "flags": "none", "objects": objects}
            await self._call("POST", f"{base}/object", f"push the tracks of incident {inc.id}", body)
            await mark("start:tracks")
            sent.append(f"{len(objects)} track(s)")
        event: dict[str, Any] = {"typeId": self.event_type, "caption": inc.rule_id, "description": inc.explanation,
                                 "isActive": inc.state == "start", "key": inc.id}  # fmt: skip
        if tracks:
            event["trackId"] = track_uuid(inc.id, tracks[0])
        body = {"timestampMs": at_ms, "flags": "none", "events": [event]}
        await self._call("POST", f"{base}/event", f"push the analytics event of incident {inc.id}", body)
        await mark(f"{inc.state}:event")
        sent.append("analytics event")
        return " and ".join(sent)

    async def close(self) -> None:
        """End the integration's session."""
        if self._token is not None:
            try:
                await self.api.send("DELETE", f"{API}/login/sessions/-", token=self._token, timeout_s=2.0)
            except (SinkNotReady, SinkAuthError) as exc:
                log.debug("%s: integration logout failed: %s", self.sink_id, exc)
            self._token = None
