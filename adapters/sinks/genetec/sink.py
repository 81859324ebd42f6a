"""Genetec Security Center sink through the Web SDK role (INTEGRATIONS.md section 4).

Per incident, on the Genetec camera its StoreSight camera is mapped to (`cameras: {storesight id: camera GUID}`):
- when it starts, a camera bookmark at the start time: `StoreSight <rule id>: <explanation> (storesight:<id>)`;
- when it ends, a second bookmark at the end time, `StoreSight <rule id> ended (began HH:MM:SS UTC): ...`, since a
  Genetec bookmark is a point in time with a text, not a range;
- when it starts and `custom_event_id` is set, that custom event raised on the camera with the same text, for
  Security Center event-to-actions (raise an alarm, notify) to act on.
StoreSight's own health (system incidents, camera "system": analytics down, a sink dead-lettering, storage low)
has no camera: when one starts and `system_custom_event_id` is set, that custom event is raised in the documented
form without an entity, `RaiseCustomEvent(CustomEventId(<n>))` [S], which carries no text, so define it with a
name that says it ("StoreSight analytics down") and read the reason in StoreSight; without the setting it is
skipped, said once in the log. No bookmark (it needs a camera).
Both go through the query-string action DSL: `POST <base>/action?q=AddCameraBookmark(<guid>,<time>,<text>)` and
`POST <base>/action?q=RaiseCustomEvent(CustomEventId(<n>),<guid>,<text>)`, GUIDs without dashes, the time as
`yyyy-MM-ddTHH:mm:ss` in UTC, the text percent-encoded (spaces as %20). Answers are the `{"Rsp": {"Status", ...}}`
envelope, asked for as JSON (`Accept: text/json`).

Auth: HTTP Basic on every request with the user name `<username>;<application_id>` (the SDK certificate's
application id) and the user's password; there is no session to renew. 401 is `SinkAuthError` (wrong password, an
Active Directory user, no "Log on using the SDK" privilege), and so is 403 (the licence lacks the Web SDK option or
the certificate's part number: a setup problem no single incident causes, so the sink holds instead of
dead-lettering). Connection failures, timeouts, 408/429/5xx and redirects are `SinkNotReady`; other 4xx and a
`"Status": "Fail"` envelope are `SinkRejected`, with Genetec's error code and message.

At least once, never exactly once: the Web SDK offers no documented way to find a bookmark or custom event by our
id, so a write whose reply was lost (timeout, dropped connection, 502/504 from a proxy) is sent again by the retry
and may then show twice; the retry says so in the log (a warning naming the incident). What did get an answer is
remembered per incident through `SinkRefs` (`<state>:<seq>:<step>`), so a retry after a later step failed (the
custom event after the bookmark) repeats nothing already confirmed. The marker `storesight:<incident id>` in every
text lets an operator tell a duplicate from a second incident.

What this rests on, with INTEGRATIONS.md's marks ([S] secondary: a third-party guide; [I] inferred):
- [S] the `AddCameraBookmark(camera, time, text)` signature and the DSL rules above (GUIDs without dashes, %20);
- [I] the time is read as UTC (the format has no offset; INTEGRATIONS.md section 1 says to treat it as UTC);
- [S] Web SDK sessions idle out after about five minutes: a 401 is retried once before it
  counts as an auth failure (harmless: a request answered 401 did nothing);
- [I] the DSL is parsed before its arguments are percent-decoded, so a `,` or `(` in a text, sent as %2C or %28,
  stays text (the explanation is never cut to suit the DSL);
- [I] `RaiseCustomEvent` takes the source entity and a message after the custom event id, as the documented helper
  `/events/RaiseCustomEvent/{id}/{entity}/{message}` does (the documented DSL example shows only the id, which
  would not tie the event to the camera);
- [I] a camera Security Center does not know is answered with a "Fail" envelope (rejected, not retried);
- [I] the entity lookup `GET <base>/entity?q=entity=<guid>,Name` answers `Result: {"Name": ...}` (self-test only).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from yarl import URL

from adapters.sinks.common import GATEWAY_STATUSES, NoAnswer, incident_time
from adapters.sinks.genetec.config import GenetecSinkConfig, genetec_guid
from adapters.sinks.http import HttpClient
from plugin.config.base import literal_key
from plugin.errors import SinkAuthError, SinkNotReady, SinkRejected
from plugin.protocols import Receipt, SinkHealth, SinkRefs, is_system_incident
from plugin.redact import redact_url

MARKER_PREFIX = "storesight:"
TEST_TEXT = "StoreSight connection test: safe to ignore"

# Longest bookmark or event text sent: the text travels in the URL's query string, percent-encoded (a non-ASCII
# letter costs up to 12 characters), and Windows HTTP stacks commonly refuse URLs past a few KB. A one- or
# two-sentence explanation fits; a longer one is cut (the whole text stays in StoreSight).
TEXT_MAX = 400
# How much of an error answer goes into an error message: Genetec's code and message, not a whole HTML page.
ERROR_TEXT_MAX = 200
# Listing cameras (`storesight discover`): report pages of this many GUIDs, at most LIST_MAX_PAGES of them (a
# runaway server cannot keep us paging), then names looked up LOOKUP_BATCH GUIDs per entity query: each costs
# ~60 characters of URL, and the query string must stay well under the few KB Windows HTTP stacks accept.
LIST_PAGE_SIZE = 500
LIST_MAX_PAGES = 40
LOOKUP_BATCH = 20

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SecurityCenterCamera:
    """A camera entity as the Web SDK lists it (`storesight discover`)."""

    guid: str  # lower-case dashed, as `cameras` in the sink config takes it
    name: str
    running_state: str | None  # Running, NotRunning, Warning... as Security Center says it


def _camera_row(row: Any) -> SecurityCenterCamera | None:
    """A camera from a report row or an entity answer; None without a GUID."""
    guid = genetec_guid(str(_lookup(row, "Guid") or "")) if isinstance(row, dict) else None
    if guid is None:
        return None
    state = _lookup(row, "RunningState")
    return SecurityCenterCamera(guid, str(_lookup(row, "Name") or ""), None if state is None else str(state))


def dsl_guid(guid: str) -> str:
    """A GUID as the query DSL takes it: 32 hex digits, no dashes or braces."""
    return guid.replace("-", "").strip("{}").lower()


def dsl_time(t: datetime) -> str:
    """`yyyy-MM-ddTHH:mm:ss` in UTC."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def dsl_text(text: str) -> str:
    """A text argument: everything but letters, digits and `-._~` percent-encoded, so no character the DSL reads
    (`=`, `(`, `)`, `,`, `@`, `\\`) and no space appears raw; spaces become %20."""
    return quote(text, safe="")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


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

    @classmethod
    def parse(cls, key: str, doc: Mapping[str, Any]) -> _Incident:
        """From the outbox payload; SinkRejected when it lacks what a bookmark needs."""
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

    def text(self, ended: bool) -> str:
        """A bookmark's (and the custom event's) text, the marker last, within TEXT_MAX."""
        head = f"StoreSight {self.rule_id}"
        if ended:
            head += f" ended (began {self.start.astimezone(UTC):%H:%M:%S} UTC)"
        tail = f" ({MARKER_PREFIX}{self.id})"
        room = TEXT_MAX - len(head) - len(tail) - 2
        return f"{head}: {_clip(self.explanation, room)}{tail}"


@dataclass
class _Progress:
    """Which steps of which state changes Genetec confirmed, and which went out without an answer (SinkRefs)."""

    done: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, text: str | None) -> _Progress:
        """From the stored reference; nothing (or something unreadable) starts afresh."""
        try:
            doc = json.loads(text) if text else {}
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        return cls(
            done=[str(s) for s in doc.get("done", []) if isinstance(s, str)],
            unanswered=[str(s) for s in doc.get("unanswered", []) if isinstance(s, str)],
        )

    def dump(self) -> str:
        """The reference to store."""
        return json.dumps({"done": self.done, "unanswered": self.unanswered}, separators=(",", ":"))


def _lookup(doc: Mapping[str, Any], key: str) -> Any:
    """A key of a Web SDK answer, whatever its case (`Rsp.Status` in the guide, `Rsp.status` in some answers)."""
    for k, v in doc.items():
        if k.lower() == key.lower():
            return v
    return None


def _envelope(text: str) -> Mapping[str, Any] | None:
    """The `Rsp` object of an answer, or None when the answer is not the Web SDK's JSON."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    rsp = _lookup(data, "Rsp") if isinstance(data, dict) else None
    return rsp if isinstance(rsp, dict) else None


def _error_text(rsp: Mapping[str, Any] | None, text: str) -> str:
    """Genetec's `Error: {Code, Message}`, else the start of the answer."""
    err = _lookup(rsp, "Error") if rsp is not None else None
    if isinstance(err, dict):
        code, message = _lookup(err, "Code"), _lookup(err, "Message")
        return ": ".join(str(p) for p in (code, message) if p not in (None, ""))[:ERROR_TEXT_MAX]
    return " ".join(text.split())[:ERROR_TEXT_MAX]


class GenetecSink:
    """Bookmarks and custom events in Security Center through the Web SDK; see the module docstring."""

    kind = literal_key(GenetecSinkConfig, "kind")

    def __init__(self, config: GenetecSinkConfig, refs: SinkRefs) -> None:
        self.config = config
        self.id = config.id
        self.health = SinkHealth()
        self.refs = refs
        self.base = config.url.rstrip("/")
        self.where = redact_url(self.base)  # never credentials: this goes into logs, errors and /readyz
        credentials = f"{config.username};{config.application_id}:{config.password.get_secret_value()}"
        # built here rather than with aiohttp.BasicAuth, which aiohttp deprecates
        self._auth = "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")
        # Basic auth on every request: no session, no cookies to keep
        self.http = HttpClient(
            self.base, self.where, timeout_s=config.timeout_s, verify_tls=config.verify_tls,
            ca_bundle=config.ca_bundle, ca_hint="set ca_bundle to Security Center's CA",
        )  # fmt: skip
        self._said_system = False

    # --- publishing ---------------------------------------------------------------------------------------------

    async def publish(self, delivery_key: str, incident: Mapping[str, Any]) -> Receipt:
        """The bookmark (and custom event) of this state change; steps confirmed by an earlier attempt are skipped."""
        inc = _Incident.parse(delivery_key, incident)
        if is_system_incident(incident):
            return await self._publish_system(inc)
        guid = self.config.cameras.get(inc.camera)
        if guid is None:
            mapped = ", ".join(sorted(self.config.cameras)) or "none"
            raise SinkRejected(
                f"{self.where}: camera {inc.camera!r} has no Genetec camera in sink {self.id!r} "
                f"(add `{inc.camera}: <camera GUID>` under cameras; mapped: {mapped})"
            )
        steps: list[str] = []
        if inc.state in ("start", "end"):
            steps.append("bookmark")
        if inc.state == "start" and self.config.custom_event_id is not None:
            steps.append("custom_event")
        progress = _Progress.load(await self.refs.get_ref(self.id, inc.id))
        out = []
        for step in steps:
            key = f"{inc.state}:{inc.seq}:{step}"
            if key in progress.done:
                out.append(f"{step} done before")
                continue
            out.append(await self._step(inc, guid, step, key, progress))
        detail = "; ".join(out) or f"nothing to write for {inc.state}"
        return Receipt(f"Genetec {inc.state}: {detail} on camera {guid}")

    async def _publish_system(self, inc: _Incident) -> Receipt:
        """StoreSight's own health: the system custom event, raised without a camera when a condition starts."""
        event_id = self.config.system_custom_event_id
        if event_id is None:
            if not self._said_system:
                self._said_system = True
                log.warning("%s: system_custom_event_id is not set, so StoreSight's own health events (analytics "
                            "down...) do not reach Security Center", self.id)  # fmt: skip
            return Receipt("Genetec: system event skipped (no system_custom_event_id)")
        if inc.state != "start":
            return Receipt(f"Genetec {inc.state}: nothing to write for a system incident")
        key = f"{inc.state}:{inc.seq}:system_event"
        progress = _Progress.load(await self.refs.get_ref(self.id, inc.id))
        if key in progress.done:
            return Receipt(f"Genetec start: system custom event {event_id} done before")
        detail = await self._step(inc, None, "system_event", key, progress)
        return Receipt(f"Genetec start: {detail} (no camera)")

    async def _step(self, inc: _Incident, guid: str | None, step: str, key: str, progress: _Progress) -> str:
        """One write, noted as unanswered before it leaves and as done once Security Center confirms it."""
        if key in progress.unanswered:
            log.warning("%s: the %s of incident %s (%s) got no answer last time; sending it again, so Security "
                        "Center may show it twice", self.id, step, inc.id, inc.state)  # fmt: skip
        else:
            progress.unanswered.append(key)
            await self._save(inc.id, progress)
        text = dsl_text(inc.text(ended=inc.state == "end"))
        if guid is None:  # a system incident: the documented form without an entity, which takes no text either
            event_id = self.config.system_custom_event_id
            dsl = f"RaiseCustomEvent(CustomEventId({event_id}))"
            what = f"raise system custom event {event_id} for incident {inc.id}"
            done = f"system custom event {event_id}"
        elif step == "bookmark":
            at = inc.end if inc.state == "end" and inc.end is not None else inc.start
            dsl = f"AddCameraBookmark({dsl_guid(guid)},{dsl_time(at)},{text})"
            what, done = f"add the bookmark of incident {inc.id}", f"bookmark at {dsl_time(at)}Z"
        else:
            event_id = self.config.custom_event_id
            dsl = f"RaiseCustomEvent(CustomEventId({event_id}),{dsl_guid(guid)},{text})"
            what, done = f"raise custom event {event_id} for incident {inc.id}", f"custom event {event_id}"
        try:
            await self._call("POST", "/action", dsl, what)
        except NoAnswer:
            raise  # stays unanswered: the retry warns that it may duplicate
        except (SinkNotReady, SinkRejected, SinkAuthError):
            progress.unanswered.remove(key)  # Security Center answered: it wrote nothing
            await self._save(inc.id, progress)
            raise
        progress.unanswered.remove(key)
        progress.done.append(key)
        await self._save(inc.id, progress)
        return done

    async def _save(self, incident_id: str, progress: _Progress) -> None:
        await self.refs.put_ref(self.id, incident_id, progress.dump())

    # --- HTTP -----------------------------------------------------------------------------------------------------

    async def _send(self, method: str, url: URL, what: str) -> tuple[int, str, str | None]:
        """One request with Basic auth: status, body and Location; no reply at all raises NoAnswer."""
        headers = {"Accept": "text/json", "Authorization": self._auth}
        reply = await self.http.request(method, url, what=what, headers=headers)
        return reply.status, reply.text, reply.location

    async def _call(self, method: str, path: str, q: str | None, what: str) -> Any:
        """One Web SDK request; its `Result` when the envelope says Ok, else one of the three outcomes."""
        # encoded=True: the query is sent exactly as built; requoting would turn %2C back into a DSL comma
        url = URL(self.base + path + ("" if q is None else f"?q={q}"), encoded=True)
        status, text, location = await self._send(method, url, what)
        if status == 401:
            log.info("%s: %s answered 401; signing in again once", self.id, self.where)
            status, text, location = await self._send(method, url, what)
        rsp = _envelope(text)
        why = f"{self.where}: {what}: HTTP {status} {_error_text(rsp, text)}".rstrip()
        if status == 401:
            raise SinkAuthError(
                f"{why} twice (user {self.config.username!r} with this application_id: check the password, that it is "
                "not an Active Directory user, and its 'Log on using the SDK' privilege)"
            )
        if status == 403:
            raise SinkAuthError(f"{why} (the licence lacks the Web SDK option or this SDK certificate's part number)")
        if status in GATEWAY_STATUSES:
            raise NoAnswer(why)
        if status in (408, 425, 429) or status >= 500:
            raise SinkNotReady(why)
        if 300 <= status < 400:
            raise SinkNotReady(f"{why}: redirected to {redact_url(location or '?')}; point url there")
        if status >= 400:
            raise SinkRejected(why)
        state = _lookup(rsp, "Status") if rsp is not None else None
        if isinstance(state, str) and state.lower() == "ok":
            return _lookup(rsp, "Result") if rsp is not None else None
        if isinstance(state, str) and state.lower() == "fail":
            raise SinkRejected(f"{self.where}: {what}: Security Center refused it: {_error_text(rsp, text)}")
        raise SinkNotReady(f"{self.where}: {what}: not a Web SDK answer (HTTP {status}): {text[:ERROR_TEXT_MAX]!r}")

    # --- self-test and lifecycle ----------------------------------------------------------------------------------

    async def camera_name(self, guid: str) -> str | None:
        """The camera's name in Security Center; None when it does not know the GUID."""
        try:
            result = await self._call("GET", "/entity", f"entity={dsl_guid(guid)},Name", f"look up camera {guid}")
        except SinkRejected:
            return None
        name = _lookup(result, "Name") if isinstance(result, dict) else None
        return str(name) if name else guid

    async def cameras(self) -> list[SecurityCenterCamera]:
        """Every camera entity this user may see: the GUIDs from the EntityConfiguration report, paged
        (`GET <base>/report/EntityConfiguration?q=EntityTypes@Camera,Page=<n>,PageSize=<m>`), then their names and
        running states from entity queries, several entities per request (`entity=<guid>,Guid,Name,RunningState,
        entity=<guid>,...`).

        [S] both shapes are a third-party Web SDK client's (Result: a list of `{"Guid"}` rows; for several entities
        a list of property objects); [I] one entity may come back as a single object, as the sink's lookup reads it,
        so both are accepted, and a report row that carries Name already needs no lookup.
        """
        rows: list[Any] = []
        for page in range(1, LIST_MAX_PAGES + 1):
            q = f"EntityTypes@Camera,Page={page},PageSize={LIST_PAGE_SIZE}"
            result = await self._call("GET", "/report/EntityConfiguration", q, "list the cameras")
            batch = result if isinstance(result, list) else []
            rows += batch
            if len(batch) < LIST_PAGE_SIZE:
                break
        found = {c.guid: c for c in map(_camera_row, rows) if c is not None}
        todo = [g for g, c in found.items() if not c.name]
        for i in range(0, len(todo), LOOKUP_BATCH):
            q = ",".join(f"entity={dsl_guid(g)},Guid,Name,RunningState" for g in todo[i : i + LOOKUP_BATCH])
            result = await self._call("GET", "/entity", q, "read the cameras' names")
            for item in result if isinstance(result, list) else [result]:
                cam = _camera_row(item)
                if cam is not None and cam.guid in found:
                    found[cam.guid] = cam
        return list(found.values())

    async def self_test(self) -> str:
        """Sign in, check every mapped camera exists, and write a labelled test bookmark on the first one."""
        await self._call("GET", "/", None, "sign in")
        found, missing = [], []
        for camera, guid in sorted(self.config.cameras.items()):
            name = await self.camera_name(guid)
            if name is None:
                missing.append(f"{camera} -> {guid}")
            else:
                found.append(f"{camera} = {name!r}")
        if missing:
            raise SinkRejected(f"{self.where}: cameras Security Center does not know: {', '.join(missing)}")
        camera, guid = sorted(self.config.cameras.items())[0]
        now = datetime.now(UTC)
        dsl = f"AddCameraBookmark({dsl_guid(guid)},{dsl_time(now)},{dsl_text(TEST_TEXT)})"
        await self._call("POST", "/action", dsl, "write a test bookmark")
        return (
            f"{self.where}: signed in as {self.config.username}; cameras: {', '.join(found)}; "
            f"wrote a test bookmark on {camera} at {dsl_time(now)}Z"
        )

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.http.close()
