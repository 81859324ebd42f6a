"""Nx Witness / Nx Meta / DW Spectrum / Hanwha Wave sink over REST v4 (VMS 6.1+; the four brands are one server).

Per incident, on the Nx device its camera is mapped to (`cameras: {storesight id: Nx device id}`):
- a bookmark (`POST /rest/v4/devices/{id}/bookmarks`): name `StoreSight: <rule id>`, description = the explanation,
  `startTimeMs` = the incident start, tags = the configured ones + the rule id + `storesight:<incident id>` (the
  marker that finds it again). While the incident is open it lasts `open_bookmark_s`; the end PATCHes its real
  `durationMs` and the end's explanation.
- at the start, a generic event (`POST /rest/v4/events/generic`, state `instant`, `deviceIds` = the device) with
  source `event_source`, caption `StoreSight: <rule id>` and the explanation plus the incident id as description,
  so Nx rules ("Generic Event" -> Show Notification / Bookmark / HTTP request) can raise an alarm on that camera.

StoreSight's own health (system incidents, camera "system": analytics down, a sink dead-lettering, storage low)
has no camera: it goes out as a generic event bound to no device (`deviceIds` left out, so Nx shows it for the
whole site), source `event_source`, caption the incident's ("StoreSight analytics down" when it starts,
"StoreSight analytics back" when it ends: instant events with captions that share no phrase, so a rule on the
first never fires on the second), the explanation and `(incident <id>, <state>)` as description. No bookmark (it
needs a device). Each state's event is sent once as the camera events are (a pending mark in SinkRefs, the event
log looked up after a lost reply); with `generic_event: false` they are skipped, said once in the log.

Exactly once across retries: what was created is kept through `SinkRefs` (the bookmark id and device, and whether
the generic event went out), written *before* each create as "pending". A retry that finds a pending create (the
reply was lost: timeout, dropped connection, 502 from a proxy) first looks the bookmark up by its marker tag
(`GET .../bookmarks?text=^"storesight:<id>"$`) and the event up in the event log, and creates only what it does not
find. An end without a stored reference also looks up the marker before creating a bookmark of the full length.

Session: `POST /rest/v4/login/sessions` (no cookie) gives a bearer token, renewed before its `expiresInS` runs out
and once on a 401; a second 401, a refused login or a 403 (the Nx user lacks "Manage bookmarks" or "Generate
events") is `SinkAuthError`, as is a server certificate that does not verify (set `ca_bundle`; it will not fix
itself). Connection failures, timeouts, 408/429/5xx and redirects are `SinkNotReady`; other 4xx are `SinkRejected`.
The password and the token never reach logs or errors.

INTEGRATIONS.md section 2 marks as [I]nferred: the API version to VMS version mapping (v4 = 6.1+; this adapter
speaks v4 only, it does not probe v3/v2), HTTPS sharing port 7001 with RTSP (only the configured URL is used), and
per-brand cloud relay hostnames (not supported). This adapter further assumes, beyond what the OpenAPI file says [I]:
- a wrong password answers the login with 401 and a missing permission answers 403 (the spec lists no error
  responses at all); error bodies are read as `{"error", "errorId", "errorString"}` when they are JSON.
- a bookmark on a device Nx does not know is a 4xx (404 expected), hence rejected, not retried.
- the exact-tag search syntax `^"tag"$` on the bookmark list finds the marker tag; the adapter still filters the
  answer by tag itself, so a server that matches more loosely does no harm.
- the event log (`GET /rest/v4/events/log?text=`) lists a generic event (it does when a VMS rule handled it; without
  any rule Nx may log nothing, and then a lost reply on the event can mean a second event).
- lists may arrive as `[...]` or `{"reply": [...]}`; both are accepted.
With `analytics: {enabled: true}`, each incident is also an analytics event with its tracks as object metadata
through Nx's REST-only analytics integration; registration, approval, the engine-to-integration link (inferred [I])
and what it assumes are in `adapters/sinks/nx_analytics.py`. While the integration waits for approval, deliveries
raise SinkNotReady "... waiting for approval in Nx ..." after their bookmark and generic event went out (kept in
SinkRefs, so the retry after approval only adds the analytics part).
Not done yet: cloud-relay URLs (their cross-host redirect is reported, not followed), and the legacy
`/api/createEvent` for servers before 6.1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import quote

from adapters.sinks.http import HttpClient, Reply
from adapters.sinks.nx.analytics import NxAnalytics
from adapters.sinks.nx.api import API, NxApi, NxIncident, error_text, list_items, parse_incident
from adapters.sinks.nx.config import NxSinkConfig, nx_device_id
from plugin.config.base import literal_key
from plugin.errors import SinkAuthError, SinkNotReady, SinkRejected
from plugin.protocols import Receipt, SinkHealth, SinkRefs, is_system_incident, system_caption
from plugin.redact import redact_url

TEST_TAG = "storesight-test"

# Renew the session token this long before Nx says it expires, so a request never races the expiry; a short-lived
# session (a site policy of minutes) renews at 80 % of its life instead.
RENEW_MARGIN_S = 60.0
RENEW_FRACTION = 0.2
# When a login reply has no usable expiresInS: Nx's own default session lifetime is longer, so this only costs an
# extra login now and then.
DEFAULT_SESSION_S = 600
# Logging out at shutdown is a courtesy (the session expires anyway): it must not hold up a SIGTERM drain.
LOGOUT_TIMEOUT_S = 2.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Ref:
    """What this sink created for one incident, kept in SinkRefs as JSON."""

    device: str
    bookmark: str | None = None  # Nx id "{bookmarkId}_{serverId}"; None while a create may be in flight
    event: Literal["pending", "sent"] | None = None  # "pending": a POST went out and its answer is unknown
    analytics: tuple[str, ...] = ()  # the analytics pushes Nx took ("start:tracks", "start:event", "end:event")

    def dump(self) -> str:
        """The stored form."""
        doc = {"device": self.device, "bookmark": self.bookmark, "event": self.event}
        return json.dumps(doc | ({"analytics": list(self.analytics)} if self.analytics else {}))

    @staticmethod
    def load(text: str | None) -> _Ref | None:
        """The stored form read back; None when absent or unreadable (then everything is looked up)."""
        if not text:
            return None
        try:
            doc = json.loads(text)
            ref = _Ref(str(doc["device"]), doc.get("bookmark"), doc.get("event"), tuple(doc.get("analytics", ())))
        except (ValueError, TypeError, KeyError):
            return None
        ok = isinstance(ref.bookmark, str | None) and ref.event in ("pending", "sent", None)
        return ref if ok else None


class NxSink:
    """Bookmarks and generic events in an Nx server, one login session kept and renewed."""

    kind = literal_key(NxSinkConfig, "kind")

    def __init__(self, config: NxSinkConfig, refs: SinkRefs) -> None:
        self.config = config
        self.id = config.id
        self.health = SinkHealth()
        self.refs = refs
        self.base = config.url.rstrip("/")
        # Never credentials in here: it goes into logs, errors and /readyz.
        self.where = redact_url(self.base)
        http = HttpClient(
            self.base, self.where, timeout_s=config.timeout_s, verify_tls=config.verify_tls,
            ca_bundle=config.ca_bundle, ca_hint="set ca_bundle to the Nx server's CA (or its exported certificate)",
            unreachable=SinkNotReady,
        )  # fmt: skip
        self.api = NxApi(http, config.username)
        self._token: str | None = None
        self._renew_at = 0.0  # time.monotonic() after which the token is renewed before use
        self._login_lock = asyncio.Lock()
        self._said: set[str] = set()  # what was logged once
        self.analytics = NxAnalytics(self.api, refs, self.id, config.analytics) if config.analytics.enabled else None

    # -- HTTP and session -------------------------------------------------------------------------------------

    async def _login(self) -> None:
        """A fresh session token; called under the login lock."""
        sent = time.monotonic()
        body = {
            "username": self.config.username,
            "password": self.config.password.get_secret_value(),
            "setCookie": False,
        }
        reply = await self.api.send("POST", f"{API}/login/sessions", body=body)
        if 400 <= reply.status < 500 and reply.status not in (408, 425, 429):
            # a refused login is never the incident's fault: hold deliveries instead of dead-lettering them
            raise SinkAuthError(
                f"{self.where}: login as {self.config.username!r} refused (HTTP {reply.status}): {error_text(reply)}"
            )
        self.api.check(reply, "login")
        data = reply.data if isinstance(reply.data, dict) else {}
        token, expires = data.get("token"), data.get("expiresInS")
        if not isinstance(token, str) or not token:
            raise SinkNotReady(f"{self.where}: the login reply carries no token")
        lifetime = float(expires) if isinstance(expires, int | float) and expires > 0 else float(DEFAULT_SESSION_S)
        # measured from when the login was sent: the server's clock started no later than that
        self._renew_at = sent + lifetime - min(RENEW_MARGIN_S, lifetime * RENEW_FRACTION)
        self._token = token
        log.info("%s: logged in to %s (session valid %.0f s)", self.id, self.where, lifetime)

    async def _current_token(self, stale: str | None = None) -> str:
        """The session token, logging in when there is none, it is due for renewal, or it is `stale` (got a 401)."""
        async with self._login_lock:
            due = self._token is None or time.monotonic() >= self._renew_at
            if due or (stale is not None and self._token == stale):
                if self._token is not None and not due:
                    log.info("%s: %s rejected the session; logging in again", self.id, self.where)
                self._token = None
                await self._login()
            assert self._token is not None
            return self._token

    async def _call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        allow: tuple[int, ...] = (),
    ) -> Reply:
        """An authenticated request: one re-login on 401, then SinkAuthError."""
        token = await self._current_token()
        reply = await self.api.send(method, path, body=body, params=params, token=token)
        if reply.status == 401:
            token = await self._current_token(stale=token)
            reply = await self.api.send(method, path, body=body, params=params, token=token)
            if reply.status == 401:
                self._token = None
                raise SinkAuthError(f"{self.where}: {what}: HTTP 401 again right after a fresh login")
        return self.api.check(reply, what, allow)

    # -- incidents --------------------------------------------------------------------------------------------

    def _device(self, camera: str) -> str:
        device = self.config.cameras.get(camera)
        if device is None:
            mapped = ", ".join(sorted(self.config.cameras)) or "none"
            raise SinkRejected(
                f"{self.where}: camera {camera!r} has no Nx device in sink {self.id!r} "
                f"(add `{camera}: <Nx device id>` under cameras; mapped: {mapped})"
            )
        return device

    async def _save(self, incident_id: str, ref: _Ref) -> _Ref:
        await self.refs.put_ref(self.id, incident_id, ref.dump())
        return ref

    async def publish(self, delivery_key: str, incident: Mapping[str, Any]) -> Receipt:
        """Start: bookmark + generic event; update and end: the bookmark's text and length. Idempotent."""
        inc = parse_incident(incident)
        if is_system_incident(incident):
            return await self._system_event(inc, system_caption(incident))
        device = self._device(inc.camera)
        stored = await self.refs.get_ref(self.id, inc.id)
        known = stored is not None
        ref = _Ref.load(stored)
        if ref is None:
            ref = _Ref(device)
        done = []
        if self.config.bookmark:
            ref = await self._bookmark(inc, ref, known)
            done.append(f"bookmark {ref.bookmark}")
        if self.config.generic_event and inc.state == "start":
            ref = await self._generic_event(inc, ref, device)
            done.append("generic event")
        if self.analytics is not None and inc.state != "update":
            latest = [ref]  # each part is recorded as soon as Nx took it

            async def mark(part: str) -> None:
                latest[0] = await self._save(inc.id, replace(latest[0], analytics=(*latest[0].analytics, part)))

            sent = await self.analytics.push(inc, ref.device, incident, ref.analytics, mark)
            ref = latest[0]
            done.extend([sent] if sent else [])
        return Receipt(f"Nx {inc.state}: {', '.join(done) or 'nothing to change'} on device {ref.device}")

    def _bookmark_body(self, inc: NxIncident) -> dict[str, Any]:
        open_ms = int(self.config.open_bookmark_s * 1000)
        duration = open_ms if inc.end_ms is None else max(1, inc.end_ms - inc.start_ms)
        tags = list(dict.fromkeys([*self.config.tags, inc.rule_id, inc.marker]))
        return {
            "name": inc.title,
            "description": inc.explanation,
            "startTimeMs": inc.start_ms,
            "durationMs": duration,
            "tags": tags,
        }

    async def _bookmark(self, inc: NxIncident, ref: _Ref, known: bool) -> _Ref:
        """Make sure the incident's bookmark exists once, and carries this state's text and length."""
        if ref.bookmark is None:
            # Look before creating when a create may already have happened: an earlier attempt left a pending ref
            # (or an unreadable one), or this is a later state whose start this sink never saw go through.
            found = await self._find_bookmark(ref.device, inc) if known or inc.state != "start" else None
            if found is None:
                ref = await self._save(inc.id, replace(ref, bookmark=None))  # written ahead: a retry looks first
                created = await self._create_bookmark(ref.device, inc)
                return await self._save(inc.id, replace(ref, bookmark=created))
            ref = await self._save(inc.id, replace(ref, bookmark=found))
        if inc.state != "start":
            await self._update_bookmark(ref, inc)
        return ref

    async def _create_bookmark(self, device: str, inc: NxIncident) -> str:
        reply = await self._call(
            "POST",
            f"{API}/devices/{device}/bookmarks",
            f"create the bookmark of incident {inc.id} on device {device}",
            body=self._bookmark_body(inc),
        )
        bookmark = reply.data.get("id") if isinstance(reply.data, dict) else None
        if not isinstance(bookmark, str) or not bookmark:
            # the create may have worked: the pending ref makes the retry look it up by its marker
            raise SinkNotReady(f"{self.where}: the bookmark reply for incident {inc.id} carries no id")
        log.debug("%s: bookmark %s created for incident %s", self.id, bookmark, inc.id)
        return bookmark

    async def _find_bookmark(self, device: str, inc: NxIncident) -> str | None:
        """The id of the bookmark tagged with the incident's marker, if Nx has one."""
        reply = await self._call(
            "GET",
            f"{API}/devices/{device}/bookmarks",
            f"look up the bookmark of incident {inc.id}",
            params={"text": f'^"{inc.marker}"$'},
        )
        # filtered again here: the text search also matches parts of descriptions and tags
        found = [
            b
            for b in list_items(reply.data)
            if inc.marker in (b.get("tags") or []) and isinstance(b.get("id"), str) and b["id"]
        ]
        if not found:
            return None
        found.sort(key=lambda b: (b.get("creationTimeMs") or 0, b["id"]))
        if len(found) > 1:
            log.warning("%s: %d bookmarks carry %s; updating the oldest", self.id, len(found), inc.marker)
        return str(found[0]["id"])

    async def _update_bookmark(self, ref: _Ref, inc: NxIncident) -> None:
        body = self._bookmark_body(inc)
        patch: dict[str, Any] = {"description": body["description"]}
        if inc.end_ms is not None:
            patch["durationMs"] = body["durationMs"]
        assert ref.bookmark is not None
        reply = await self._call(
            "PATCH",
            f"{API}/devices/{ref.device}/bookmarks/{quote(ref.bookmark, safe='')}",
            f"update bookmark {ref.bookmark} of incident {inc.id}",
            body=patch,
            allow=(404,),
        )
        if reply.status == 404:
            # someone removed it in Nx (or the archive rotated): respect that rather than writing it again
            log.warning("%s: bookmark %s of incident %s is gone from Nx; not recreated", self.id, ref.bookmark, inc.id)

    async def _generic_event(self, inc: NxIncident, ref: _Ref, device: str) -> _Ref:
        """Send the incident's generic event once (best effort after a lost reply: see the module docstring)."""
        if ref.event == "sent":
            return ref
        if ref.event == "pending" and await self._event_logged(inc):
            return await self._save(inc.id, replace(ref, event="sent"))
        ref = await self._save(inc.id, replace(ref, event="pending"))
        body = {
            "state": "instant",
            # epoch milliseconds as a string: the other accepted form is the server's local time, which we don't know
            "timestamp": str(inc.start_ms),
            "source": self.config.event_source,
            "caption": inc.title,
            "description": f"{inc.explanation} (incident {inc.id})".lstrip(),
            "deviceIds": [device],
        }
        await self._call("POST", f"{API}/events/generic", f"send the generic event of incident {inc.id}", body=body)
        return await self._save(inc.id, replace(ref, event="sent"))

    async def _event_logged(self, inc: NxIncident, at_ms: int | None = None, marker: str | None = None) -> bool:
        """True when Nx's event log already holds this incident's generic event (the one stamped `at_ms`, default
        the start, whose text carries `marker`, default the incident id)."""
        at = inc.start_ms if at_ms is None else at_ms
        reply = await self._call(
            "GET",
            f"{API}/events/log",
            f"look up the generic event of incident {inc.id}",
            # a minute either side of the event's own timestamp: the log is searched by time first
            params={"text": inc.id, "startTimeMs": str(at - 60_000), "durationMs": "120000"},
        )
        wanted = marker or inc.id
        for entry in list_items(reply.data):
            data = entry.get("eventData")
            if isinstance(data, dict) and any(isinstance(v, str) and wanted in v for v in data.values()):
                return True
        return False

    async def _system_event(self, inc: NxIncident, caption: str) -> Receipt:
        """StoreSight's own health: one generic event per state change, bound to no device (see the docstring)."""
        if not self.config.generic_event:
            if "system" not in self._said:
                self._said.add("system")
                log.warning("%s: generic_event is off, so StoreSight's own health events (analytics down...) do not "
                            "reach Nx", self.id)  # fmt: skip
            return Receipt("Nx: system event skipped (generic_event is off)")
        if inc.state == "update":
            return Receipt("Nx: nothing to send for an update of a system incident")
        at_ms = inc.end_ms if inc.state == "end" and inc.end_ms is not None else inc.start_ms
        key, marker = f"{inc.id}:{inc.state}", f"incident {inc.id}, {inc.state}"
        done = f"Nx {inc.state}: system generic event {caption!r} (no device)"
        sent = await self.refs.get_ref(self.id, key)
        if sent == "sent":
            return Receipt(f"{done}, sent before")
        if sent == "pending" and await self._event_logged(inc, at_ms, marker):
            await self.refs.put_ref(self.id, key, "sent")
            return Receipt(f"{done}, found in the event log")
        await self.refs.put_ref(self.id, key, "pending")
        body = {
            "state": "instant",
            "timestamp": str(at_ms),
            "source": self.config.event_source,
            "caption": caption,
            "description": f"{inc.explanation} ({marker})".lstrip(),
        }
        await self._call("POST", f"{API}/events/generic", f"send the system event of incident {inc.id}", body=body)
        await self.refs.put_ref(self.id, key, "sent")
        return Receipt(done)

    # -- self test and lifecycle ------------------------------------------------------------------------------

    async def devices(self) -> dict[str, str]:
        """Nx device id -> name, for every device the user can see."""
        reply = await self._call("GET", f"{API}/devices", "list the devices", params={"_with": "id,name"})
        out: dict[str, str] = {}
        for item in list_items(reply.data):
            norm = nx_device_id(str(item.get("id", "")))
            if norm is not None:
                out[norm] = str(item.get("name") or "")
        return out

    async def self_test(self) -> str:
        """Log in, check every mapped device exists, then write a test bookmark (or, with bookmarks off, a test
        generic event: a bookmark cannot set off an alarm rule, an event with an empty caption filter can)."""
        devices = await self.devices()
        unknown = {cam: dev for cam, dev in self.config.cameras.items() if dev not in devices}
        if unknown or not self.config.cameras:
            listing = ", ".join(f"{i} ({n})" for i, n in sorted(devices.items(), key=lambda kv: kv[1])[:10])
            problem = (
                "unknown Nx device ids: " + ", ".join(f"{cam} -> {dev}" for cam, dev in sorted(unknown.items()))
                if unknown
                else "no cameras are mapped to Nx devices"
            )
            raise SinkRejected(f"{self.where}: {problem} (devices here: {listing or 'none visible to this user'})")
        camera, device = sorted(self.config.cameras.items())[0]
        now_ms = int(time.time() * 1000)
        text = "StoreSight connection test: safe to delete"
        if self.config.bookmark:
            body = {"name": text, "description": f"written by `storesight vms test` for camera {camera}",
                    "startTimeMs": now_ms, "durationMs": 1000, "tags": [TEST_TAG]}  # fmt: skip
            reply = await self._call("POST", f"{API}/devices/{device}/bookmarks", "write a test bookmark", body=body)
            bookmark = reply.data.get("id") if isinstance(reply.data, dict) else None
            wrote = f"a test bookmark {bookmark} on {camera} -> {device}"
        else:
            body = {"state": "instant", "timestamp": str(now_ms), "source": self.config.event_source,
                    "caption": text, "description": "by storesight vms test", "deviceIds": [device]}  # fmt: skip
            await self._call("POST", f"{API}/events/generic", "send a test generic event", body=body)
            wrote = f"a test generic event on {camera} -> {device}"
        found = f"{self.where}: {len(self.config.cameras)} mapped device(s) found; wrote {wrote}"
        return found if self.analytics is None else f"{found}; {await self.analytics.status()}"

    async def close(self) -> None:
        """End the Nx session (so it does not linger until expiry) and close the HTTP session."""
        if not self.api.http.opened:
            return
        if self.analytics is not None:
            await self.analytics.close()
        if self._token is not None:
            try:
                # "-" = the session whose token is in the Authorization header; keeps the token out of the URL
                await self.api.send("DELETE", f"{API}/login/sessions/-", token=self._token, timeout_s=LOGOUT_TIMEOUT_S)
            except (SinkNotReady, SinkAuthError) as exc:
                log.debug("%s: logout failed: %s", self.id, exc)
            self._token = None
        await self.api.http.close()
