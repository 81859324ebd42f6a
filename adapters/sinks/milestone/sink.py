"""Milestone XProtect sink: bookmarks and alarms over the API Gateway's REST APIs, Analytics Events (XML over TCP)
and Generic Events (a TCP string) to the Event Server.

Log-in: an OAuth password grant for an XProtect basic user from the identity provider behind the API Gateway
(`/API/IDP/connect/token`, client `GrantValidatorClient`); the token is renewed before `expires_in` runs out and
once more when XProtect answers 401 anyway (a second 401 with a fresh token is an auth failure).

What a retry can do, per mode (`mode` lists which run, in that order):
- `bookmark` (REST): exactly once. The bookmark carries the marker `storesight:<incident id>` (as its reference and
  on the last line of its description); its id is stored (SinkRefs) as soon as XProtect answers. A retry after a
  reply was lost finds the bookmark by the marker with the `searchTime` task before creating one. The incident's
  end updates the same bookmark (PATCH: end time, final explanation).
- `alarm` (REST, on the incident's start): once while replies arrive; a reply lost after XProtect stored the alarm
  means a second alarm on the retry (alarms cannot be searched by our marker): at least once.
- `analytics_event` (XML, TCP 9090): at least once. The document is checked against Milestone's AnalyticsEvent.xsd
  before it leaves; its ID is derived from the delivery key, so a resend carries the same ID.
- `generic_event` (a string over TCP, port 1234): at least once; TCP is the only acknowledgement.
Steps that completed are remembered per incident (SinkRefs), so a retry after a later step failed repeats none.

StoreSight's own health (system incidents, camera "system": analytics down, a sink dead-lettering, storage low)
concerns no camera. `alarm` raises it as an alarm named by its caption ("StoreSight analytics down") with the
explanation as message, when it starts, with `system_source` as source, else none [I: INTEGRATIONS.md section 3.4
shows a camera GUID as source; that XProtect takes an alarm without one is not confirmed]; `analytics_event` sends
it with `Source/Name` "StoreSight" and no camera reference (the XSD allows both); `generic_event` sends its string
as for any incident (camera field `system`); `bookmark` skips it (a bookmark needs a camera), said once in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from lxml import etree
from yarl import URL

from adapters.sinks.http import HttpClient
from adapters.sinks.milestone.config import MilestoneSinkConfig
from adapters.sinks.milestone.events import (
    VENDOR,
    IncidentView,
    build_analytics_event,
    generic_event_text,
    iso,
    load_schema,
    marker,
)
from plugin.config.base import literal_key
from plugin.errors import SinkAuthError, SinkNotReady, SinkRejected
from plugin.protocols import Receipt, SinkHealth, SinkRefs
from plugin.redact import redact_url

log = logging.getLogger(__name__)

CLIENT_ID = "GrantValidatorClient"  # the identity provider's client for user log-ins (Milestone's samples)
# Renew the token this long before it expires (at most a fifth of its life): a request started just before the
# deadline, or a gateway whose clock runs ahead, never meets an expired token.
TOKEN_EARLY_S = 60.0
# A bookmark searched for after a lost reply began at the incident's start less the pre-roll; look this far either
# side of that, for clock rounding on the server.
SEARCH_SLACK_S = 60.0
SEARCH_COUNT = 100
REST = "/api/rest/v1"
TOKEN_PATH = "/API/IDP/connect/token"  # the identity provider, for bearer tokens
TCP_EXCEPTIONS = (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


def default_xsd() -> Path:
    """Milestone's AnalyticsEvent.xsd: the wheel ships it in this package's schema/ folder (MIT, licence beside it);
    a source checkout reads the workplace's copy at ../shared/specs. The `analytics_xsd` key overrides both."""
    packaged = Path(str(resources.files("adapters.sinks.milestone"))) / "schema" / "AnalyticsEvent.xsd"
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[3].parent / "shared" / "specs" / "milestone" / "AnalyticsEvent.xsd"


@dataclass
class _Progress:
    """What this sink created for one incident, and which steps of which state change are done (kept in SinkRefs)."""

    bookmark: str | None = None
    alarm: str | None = None
    creating: list[str] = field(default_factory=list)  # a create was sent: after a failure, look before creating
    done: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, text: str | None) -> _Progress:
        """From the stored reference (none yet: empty)."""
        if not text:
            return cls()
        try:
            doc = json.loads(text)
        except ValueError:
            return cls(bookmark=text)  # a bare bookmark id
        if not isinstance(doc, dict):
            return cls(bookmark=str(doc))
        return cls(
            bookmark=doc.get("bookmark"),
            alarm=doc.get("alarm"),
            creating=list(doc.get("creating", [])),
            done=list(doc.get("done", [])),
        )

    def dump(self) -> str:
        """The reference to store."""
        return json.dumps(
            {"bookmark": self.bookmark, "alarm": self.alarm, "creating": self.creating, "done": self.done},
            separators=(",", ":"),
        )


Save = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


@dataclass(frozen=True)
class XProtectCamera:
    """A camera as the Configuration REST API lists it (`storesight discover`)."""

    id: str  # the camera GUID, what `cameras` in the sink config maps to
    name: str  # displayName, else name
    enabled: bool


def _error_text(data: Any) -> str:
    """Milestone's error body `{"httpCode", "details": [{"errorText", "property"}]}`, else the start of the reply."""
    if isinstance(data, Mapping) and isinstance(data.get("details"), list):
        parts = []
        for d in data["details"]:
            if isinstance(d, Mapping):
                prop = f"{d['property']}: " if d.get("property") else ""
                parts.append(f"{prop}{d.get('errorText', '')}")
        if parts:
            return "; ".join(parts)[:300]
    return str(data or "")[:200]


def _id_of(data: Any) -> str | None:
    """The id in a create reply: `{"data": {"id"}}` (alarms, events), `{"result": {"id"}}` (configuration)."""
    if isinstance(data, Mapping):
        for key in ("data", "result"):
            inner = data.get(key)
            if isinstance(inner, Mapping) and inner.get("id"):
                return str(inner["id"])
        if data.get("id"):
            return str(data["id"])
    return None


class MilestoneSink:
    """Writes incidents to one XProtect site; see the module docstring for what each mode guarantees."""

    kind = literal_key(MilestoneSinkConfig, "kind")

    def __init__(self, config: MilestoneSinkConfig, refs: SinkRefs) -> None:
        self.config = config
        self.id = config.id
        self.health = SinkHealth()
        self.refs = refs
        self.base = config.url.rstrip("/")
        self.event_server = config.event_server_host or URL(self.base).host or "localhost"
        self.where = redact_url(self.base)  # never credentials: this goes into logs, errors and /readyz
        # the API Gateway's own session cookie and redirects, as a browser would see them
        self.http = HttpClient(
            self.base, self.where, timeout_s=config.timeout_s, verify_tls=config.verify_tls,
            ca_bundle=config.ca_bundle, unreachable=SinkNotReady, keep_cookies=True, follow_redirects=True,
        )  # fmt: skip
        self._token: str | None = None
        self._renew_at = 0.0
        self._token_lock = asyncio.Lock()
        self._schema: etree.XMLSchema | None = None
        self._schema_note: str | None = None
        self._schema_loaded = False
        self._said: set[str] = set()

    def _say_once(self, what: str, message: str, *args: Any) -> None:
        if what not in self._said:
            self._said.add(what)
            log.warning(message, *args)

    # --- publishing ---------------------------------------------------------------------------------------------

    async def publish(self, delivery_key: str, incident: Mapping[str, Any]) -> Receipt:
        """Run each configured mode for this state change, skipping steps an earlier attempt completed."""
        inc = IncidentView.parse(delivery_key, incident)
        guid = self.config.cameras.get(inc.camera)
        if guid is None and inc.system_caption is None:
            raise SinkRejected(
                f"{self.where}: camera {inc.camera!r} has no Milestone camera in sinks[{self.id}].cameras"
            )
        progress = _Progress.load(await self.refs.get_ref(self.id, inc.id))

        async def save() -> None:
            await self.refs.put_ref(self.id, inc.id, progress.dump())

        done: list[str] = []
        for mode in self.config.mode:
            step = f"{inc.state}:{inc.seq}:{mode}"
            if step in progress.done:
                done.append(f"{mode}: done before")
                continue
            detail = await self._step(mode, inc, guid, progress, save)
            if detail is None:
                continue
            progress.done.append(step)
            await save()
            done.append(detail)
        return Receipt("; ".join(done) or "nothing to write for this state")

    async def _step(
        self, mode: str, inc: IncidentView, guid: str | None, progress: _Progress, save: Save
    ) -> str | None:
        if guid is None:
            return await self._system_step(mode, inc, progress, save)
        if mode == "bookmark":
            return await self._bookmark(inc, guid, progress, save)
        if mode == "alarm":
            return None if inc.state != "start" else await self._alarm(inc, guid, progress, save)
        if mode == "analytics_event":
            return await self._analytics_event(inc, guid)
        if mode == "generic_event":
            return await self._generic_event(inc)
        raise AssertionError(f"unknown mode {mode!r}")  # the config's Literal allows no other

    async def _system_step(self, mode: str, inc: IncidentView, progress: _Progress, save: Save) -> str | None:
        """One mode for a system incident (no camera); None when the mode has nothing for it."""
        if mode == "bookmark":
            self._say_once(
                "system-bookmark",
                "%s: StoreSight's own health events have no camera, so no bookmark: add alarm, analytics_event or "
                "generic_event to mode to see them in XProtect",
                self.id,
            )
            return None
        if mode == "alarm":
            return None if inc.state != "start" else await self._alarm(inc, self.config.system_source, progress, save)
        if mode == "analytics_event":
            return await self._analytics_event(inc, None)
        if mode == "generic_event":
            return await self._generic_event(inc)
        raise AssertionError(f"unknown mode {mode!r}")  # the config's Literal allows no other

    async def _bookmark(self, inc: IncidentView, guid: str, progress: _Progress, save: Save) -> str:
        pre, post = timedelta(seconds=self.config.pre_roll_s), timedelta(seconds=self.config.post_roll_s)
        if progress.bookmark is None and ("bookmark" in progress.creating or inc.state != "start"):
            # an earlier create may have reached XProtect with its reply lost: look before creating a second one
            progress.bookmark = await self._find_bookmark(inc, guid)
            if progress.bookmark is not None:
                log.info("%s: found bookmark %s of incident %s by its marker", self.id, progress.bookmark, inc.id)
                with contextlib.suppress(ValueError):
                    progress.creating.remove("bookmark")
                await save()
        if progress.bookmark is None:
            end = (inc.end if inc.end is not None and inc.state != "start" else inc.start) + post
            body = {
                "header": inc.rule_id,
                "description": inc.description,
                "timeBegin": iso(inc.start - pre),
                "timeEnd": iso(end),
                "timeTriggered": iso(inc.start),
                "reference": marker(inc.id),
                "devicePath": {"type": "cameras", "id": guid},
            }
            progress.bookmark = await self._create("bookmark", "/bookmarks", body, progress, save)
            await save()
            return f"bookmark {progress.bookmark}"
        if inc.state == "start":
            return f"bookmark {progress.bookmark}"
        patch = {"description": inc.description, "timeEnd": iso(inc.at + post)}
        status, _ = await self._request("PATCH", f"/bookmarks/{progress.bookmark}", json_body=patch, ok=(404,))
        if status == 404:
            # an operator deleted it: their decision stands, the other modes still run
            log.warning("%s: bookmark %s of incident %s is gone; not recreated", self.id, progress.bookmark, inc.id)
            return f"bookmark {progress.bookmark} gone"
        return f"bookmark {progress.bookmark} updated"

    async def _find_bookmark(self, inc: IncidentView, guid: str) -> str | None:
        """The incident's bookmark on this camera, by its marker; None when there is none."""
        # [I] The body of the `searchTime` task is not among what INTEGRATIONS.md verified: its names follow the
        # MIP SDK's BookmarkSearchTime(time, timeSpan, count, devices), with timeSpan as .NET writes a TimeSpan.
        begin = inc.start - timedelta(seconds=self.config.pre_roll_s + SEARCH_SLACK_S)
        span = int(self.config.pre_roll_s + 2 * SEARCH_SLACK_S)
        body = {
            "time": iso(begin),
            "timeSpan": f"{span // 3600:02d}:{span % 3600 // 60:02d}:{span % 60:02d}",
            "count": SEARCH_COUNT,
            "deviceIds": [guid],
        }
        try:
            data = await self._call("POST", "/bookmarks", json_body=body, params={"task": "searchTime"})
        except SinkRejected as exc:
            # a server that takes the search differently must not turn a lost reply into a dead letter
            if "search" not in self._said:
                self._said.add("search")
                log.warning("%s: bookmark search refused, so a retry may duplicate a bookmark: %s", self.id, exc)
            return None
        items: Any = data.get("array") if isinstance(data, Mapping) else None
        if items is None and isinstance(data, Mapping):
            items = data.get("data")
        wanted = marker(inc.id)
        for b in items if isinstance(items, list) else []:
            if not isinstance(b, Mapping) or not b.get("id"):
                continue
            lines = str(b.get("description") or "").splitlines()
            if b.get("reference") == wanted or (lines and lines[-1].strip() == wanted):
                return str(b["id"])
        return None

    async def _alarm(self, inc: IncidentView, guid: str | None, progress: _Progress, save: Save) -> str:
        if progress.alarm is not None:
            return f"alarm {progress.alarm}"
        if "alarm" in progress.creating:
            log.warning("%s: alarm of incident %s may exist already (a reply was lost); creating it again",
                        self.id, inc.id)  # fmt: skip
        body = {"name": inc.system_caption or inc.rule_id, "message": inc.description}
        if guid is not None:
            body["source"] = guid
        progress.alarm = await self._create("alarm", "/alarms", body, progress, save)
        await save()
        return f"alarm {progress.alarm}"

    async def _analytics_event(self, inc: IncidentView, guid: str | None) -> str:
        message = self.config.analytics_message or inc.rule_id
        try:
            doc = build_analytics_event(inc, guid, message)
        except ValueError as exc:  # lxml refuses text that XML cannot carry (control characters)
            raise SinkRejected(f"incident {inc.delivery_key}: cannot be written as XML: {exc}") from None
        schema = await self._analytics_schema()
        if schema is not None:
            try:
                schema.assertValid(doc)
            except etree.DocumentInvalid as exc:
                # built by this module, so a document the schema refuses is a bug: keep it for inspection
                raise SinkRejected(f"Analytics Event XML does not match AnalyticsEvent.xsd: {exc}") from None
        body = etree.tostring(doc, xml_declaration=True, encoding="utf-8")
        status, text = await self._post_xml(body)
        where = f"{self.event_server}:{self.config.analytics_event_port}"
        if status == 200:
            if "not known" in text and message not in self._said:
                self._said.add(message)
                log.warning("%s: XProtect has no analytics event named %r: create it (Management Client, Rules "
                            "and Events > Analytics Events) or events go nowhere", self.id, message)  # fmt: skip
            return "analytics event sent"
        if status == 403:
            raise SinkAuthError(f"{where}: HTTP 403: this address is not on the Event Server's analytics allow-list")
        if status >= 500:
            raise SinkNotReady(f"{where}: HTTP {status} {text[:200]}")
        raise SinkRejected(f"{where}: HTTP {status} {text[:200]}")

    async def _analytics_schema(self) -> etree.XMLSchema | None:
        """The XSD, loaded once; without one, documents go unchecked and the log says so once."""
        if not self._schema_loaded:
            self._schema_loaded = True
            path = self.config.analytics_xsd or default_xsd()
            try:
                self._schema = await asyncio.to_thread(load_schema, path)
            except (OSError, etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
                self._schema_note = f"not checked against AnalyticsEvent.xsd ({path}: {exc})"
                log.warning("%s: Analytics Event XML is %s; set analytics_xsd", self.id, self._schema_note)
        return self._schema

    async def _post_xml(self, body: bytes) -> tuple[int, str]:
        """One HTTP request over a plain TCP connection, as the Event Server takes it; the status and the body."""
        host, port = self.event_server, self.config.analytics_event_port
        head = (
            f"POST / HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: text/xml; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        try:
            async with asyncio.timeout(self.config.timeout_s):
                reader, writer = await asyncio.open_connection(host, port)
                try:
                    writer.write(head + body)
                    await writer.drain()
                    status_line = (await reader.readline()).decode("latin-1").strip()
                    length = None
                    while line := (await reader.readline()).decode("latin-1").strip():
                        name, _, value = line.partition(":")
                        if name.strip().lower() == "content-length":
                            length = int(value.strip())
                    raw = await (reader.readexactly(length) if length is not None else reader.read(4096))
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except TCP_EXCEPTIONS as exc:
            raise SinkNotReady(f"{host}:{port}: analytics event not sent: {type(exc).__name__}: {exc}") from None
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise SinkNotReady(f"{host}:{port}: not an HTTP reply: {status_line[:80]!r}")
        return int(parts[1]), raw.decode("utf-8", "replace")

    async def _generic_event(self, inc: IncidentView) -> str:
        return await self._send_generic(generic_event_text(inc))

    async def _send_generic(self, text: str) -> str:
        """Open, send, close: how both data sources take a string (International also accepts CR LF records)."""
        host, port = self.event_server, self.config.generic_event_port
        try:
            async with asyncio.timeout(self.config.timeout_s):
                _, writer = await asyncio.open_connection(host, port)
                try:
                    writer.write(text.encode("ascii", "replace"))
                    await writer.drain()
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except (TimeoutError, OSError) as exc:
            raise SinkNotReady(f"{host}:{port}: generic event not sent: {type(exc).__name__}: {exc}") from None
        return "generic event sent"

    # --- REST ---------------------------------------------------------------------------------------------------

    async def _bearer(self) -> str:
        """A valid token: the current one, or a new one when it is missing or close to expiring."""
        async with self._token_lock:
            if self._token is None or time.monotonic() >= self._renew_at:
                await self._login()
            assert self._token is not None
            return self._token

    async def _login(self) -> None:
        form = {
            "grant_type": "password",
            "username": self.config.username,
            "password": self.config.password.get_secret_value(),
            "client_id": CLIENT_ID,
        }
        reply = await self.http.request("POST", TOKEN_PATH, what="identity provider unreachable", form=form)
        status, data = reply.status, reply.data
        if status in (400, 401, 403):
            # OAuth errors are codes like invalid_grant / invalid_client: safe to show, unlike what was sent
            err = data.get("error") if isinstance(data, Mapping) else None
            raise SinkAuthError(
                f"{self.where}: the identity provider refused user {self.config.username!r}: HTTP {status} {err or ''}"
            )
        if status != 200 or not isinstance(data, Mapping) or not data.get("access_token"):
            raise SinkNotReady(f"{self.where}: no token from the identity provider: HTTP {status}")
        lifetime = float(data.get("expires_in") or 3600)
        self._token = str(data["access_token"])
        self._renew_at = time.monotonic() + lifetime - min(TOKEN_EARLY_S, lifetime / 5)
        log.debug("%s: logged in to %s as %s; token valid %.0f s", self.id, self.where, self.config.username, lifetime)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (),
        check: bool = True,
    ) -> tuple[int, Any]:
        """One REST call with a bearer token (renewed once on 401): the status and the reply (JSON, else text).

        2xx and `ok` statuses return; others raise (SinkNotReady, SinkRejected, SinkAuthError) unless `check` is
        off. No reply at all (connection lost, timeout) is always SinkNotReady.
        """
        for attempt in (1, 2):
            token = await self._bearer()
            reply = await self.http.request(
                method, REST + path, what=f"{method} {path}", json_body=json_body, params=params,
                headers={"Authorization": f"Bearer {token}"},
            )  # fmt: skip
            status = reply.status
            if status != 401 or attempt == 2:
                break
            async with self._token_lock:
                if self._token == token:
                    self._token = None  # expired or revoked before its time: log in again, once
        data: Any = reply.text if reply.data is None and reply.text.strip() else reply.data  # JSON, else text
        if check and not (200 <= status < 300 or status in ok):
            self._raise_for(f"{method} {path}", status, data)
        return status, data

    def _raise_for(self, what: str, status: int, data: Any) -> None:
        """The outcome of an error status."""
        what = f"{self.where}: {what}"
        detail = _error_text(data)
        if status == 401:
            raise SinkAuthError(f"{what}: HTTP 401 with a fresh token")
        if status == 403:
            raise SinkAuthError(f"{what}: HTTP 403: user {self.config.username!r} may not do this: {detail}")
        if status in (408, 425, 429) or status >= 500:
            raise SinkNotReady(f"{what}: HTTP {status} {detail}")
        raise SinkRejected(f"{what}: HTTP {status} {detail}")

    async def _call(
        self, method: str, path: str, *, json_body: Any = None, params: Mapping[str, str] | None = None
    ) -> Any:
        """A REST call that must succeed; its reply."""
        return (await self._request(method, path, json_body=json_body, params=params))[1]

    async def _create(self, what: str, path: str, body: Any, progress: _Progress, save: Save) -> str:
        """POST a new object, noting first that a create is under way: if no reply comes, XProtect may have it."""
        if what not in progress.creating:
            progress.creating.append(what)
            await save()
        status, data = await self._request("POST", path, json_body=body, check=False)
        if not 200 <= status < 300:
            progress.creating.remove(what)  # XProtect answered: it created nothing
            await save()
            self._raise_for(f"POST {path}", status, data)
        created = _id_of(data)
        if created is None:
            raise SinkNotReady(f"{self.where}: {what} created, but the reply has no id: {str(data)[:200]}")
        progress.creating.remove(what)
        return created

    # --- self-test and lifecycle --------------------------------------------------------------------------------

    async def cameras(self) -> list[XProtectCamera]:
        """Every camera this user may see: `GET /api/rest/v1/cameras` answers `{"array": [{"id", "displayName",
        ...}]}` (Milestone's RestfulCommunicationPython sample); `name` and `enabled` are read when present [S]."""
        data = await self._call("GET", "/cameras")
        items = data.get("array") if isinstance(data, Mapping) else None
        if not isinstance(items, list):
            raise SinkNotReady(f"{self.where}: GET /cameras: the reply has no array: {str(data)[:200]}")
        found = []
        for item in items:
            if isinstance(item, Mapping) and item.get("id"):
                name = item.get("displayName") or item.get("name") or ""
                found.append(XProtectCamera(str(item["id"]), str(name), item.get("enabled") is not False))
        return found

    async def self_test(self) -> str:
        """Log in, check every mapped camera exists, and write a labelled test entry in each configured mode."""
        await self._bearer()
        lines = [f"logged in to {self.where} as {self.config.username}"]
        names = []
        missing = []
        for cam, cam_guid in self.config.cameras.items():
            status, data = await self._request("GET", f"/cameras/{cam_guid}", ok=(404,))
            if status == 404:
                missing.append(f"{cam} -> {cam_guid}")
                continue
            inner = data.get("data") if isinstance(data, Mapping) else None
            shown = inner.get("displayName") if isinstance(inner, Mapping) else None
            names.append(f"{cam} = {shown or cam_guid!r}")
        if missing:
            raise SinkRejected(f"{self.where}: mapped cameras not found in XProtect: {', '.join(missing)}")
        lines.append(f"cameras: {', '.join(names) or 'none mapped'}")
        test_id = str(uuid.uuid4())
        camera: str = "storesight-test"
        guid: str | None = None
        if self.config.cameras:
            camera, guid = next(iter(self.config.cameras.items()))
        inc = IncidentView(
            delivery_key=f"storesight-test:{test_id}",
            id=test_id,
            rule_id="storesight-test",
            type="test",
            camera=camera,
            state="start",
            seq=0,
            start=datetime.now(UTC),
            end=None,
            explanation="StoreSight connection test: no incident, safe to delete",
            severity="info",
            zone=None,
            box=None,
            confidence=None,
        )
        for mode in self.config.mode:
            if mode == "generic_event":
                lines.append(f"{mode}: {await self._send_generic(f'{VENDOR}|test|{test_id}')}")
            elif guid is None:
                lines.append(f"{mode}: skipped (no camera mapped)")
            else:
                detail = await self._step(mode, inc, guid, _Progress(), _nothing)
                note = f" ({self._schema_note})" if mode == "analytics_event" and self._schema_note else ""
                lines.append(f"{mode}: {detail}{note}")
        return "; ".join(lines)

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.http.close()
