"""ZoneMinder sink (1.34+, API 2.0): each incident raises an alarm on its camera's monitor, so ZoneMinder records an
event there, and the event carries the incident: Name `StoreSight: <rule id>`, Cause `StoreSight <type>`, and in
Notes a paragraph per incident (`StoreSight incident <id> [active|ended]`, rule, camera, zone, severity, the
explanation, start, end and duration).

How the alarm is raised: `GET /api/monitors/alarm/id:N/command:on.json`, not zmtrigger (TCP 6802). The REST call
goes through ZoneMinder's login like every other call here, needs nothing turned on (zmtrigger needs OPT_TRIGGERS,
its own daemon, and takes unauthenticated commands from anyone who can reach the port, on all interfaces), and its
answer names the event: ZoneMinder runs `zmu -a`, which replies `Alarmed event id: N` once zmc has opened the event
(well under a second on the test rig). A monitor already in alarm answers with the event it is recording, which is
what makes a retry safe (below). `command:off` cancels the alarm; zmc closes the event after the monitor's
post-event frames.

Exactly once: the event id is stored through `SinkRefs` as soon as the alarm answers, before the notes are
written, and every later delivery of that incident (a retry after a lost reply, the end, an update) edits that event.
A retried start whose first attempt raised the alarm but never stored the id finds the monitor still in alarm, and
the alarm call answers with the same event. An update or end without a stored id (a new bridge database) looks the
incident up by its id in the monitor's event Notes (not a start: that search reads every event of the monitor). The
end turns the alarm off before its notes say "ended", so a retry after a failure in between still turns it off.
ZoneMinder cuts an alarm longer than the monitor's section length (600 s by default) into several events: an
update or end then also writes the incident into the event the monitor records now, and turns that alarm off.
Several incidents on one camera at once share the monitor's event: each has its own paragraph in Notes, and the
alarm goes off only when the last of them has ended (their states are read back from Notes, so this survives a
restart). So do incidents whose alarm comes while the monitor still records the post-event frames of the previous
one: ZoneMinder continues that event, and names it in its answer.

StoreSight's own health (system incidents, camera "system": analytics down, a sink dead-lettering, storage low) is
delivered as skipped, said once in the log: ZoneMinder's API has no event that belongs to no monitor.

Errors: a refused login, or a 401 again right after logging in afresh, is `SinkAuthError`; connection failures,
timeouts and 5xx are `SinkNotReady`; a camera missing from `cameras`, a monitor ZoneMinder does not have, and a
monitor that cannot take alarms (Function "Monitor" or "None") are `SinkRejected`, with the reason. The camera map
is checked against ZoneMinder on the first delivery (and by `storesight vms test`), and every unknown monitor is
logged once. Tokens (`?token=`, as ZoneMinder wants them) and the password never reach logs or errors: ZoneMinder
echoes the request URL, token included, in its error bodies, so only their `message` is ever quoted.

Assumed and checked against the real ZoneMinder 1.36.33 (Debian 12, `packaging/dev/zoneminder.sh`): the answers and
status codes above; `PUT /api/events/N.json` with `Event[Notes]`, `Event[Cause]`, `Event[Name]` is kept when zmc
closes the event; a long alarm is split at the section length and `command:on` while in alarm names the current
event. Assumed, not seen: a Modect monitor may rewrite Notes while motion continues (the end writes them again).
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from yarl import URL

from adapters.sinks.http import HttpClient
from adapters.sinks.zoneminder.config import ZoneMinderSinkConfig
from plugin.config.base import literal_key
from plugin.errors import SinkAuthError, SinkNotReady, SinkRejected
from plugin.protocols import Receipt, SinkHealth, SinkRefs, is_system_incident
from plugin.redact import redact_url

log = logging.getLogger(__name__)

# Renew the access token this long before it expires, so no request races the expiry. ZoneMinder issues tokens for
# AUTH_HASH_TTL hours (one at least), so a quarter of a short lifetime is the cap only for odd servers.
REFRESH_MARGIN_S = 300.0
# When a login answer has no lifetime (ZoneMinder without authentication hands out none): ask again after this.
DEFAULT_TOKEN_S = 3600.0
# Column sizes of ZoneMinder's Events table (Cause varchar(32), Name varchar(64)) and a cap for our Notes paragraph.
CAUSE_MAX = 32
NAME_MAX = 64
EXPLANATION_MAX = 2000
ERROR_TEXT_MAX = 200
# Functions whose monitors record events when alarmed; "Monitor" and "None" refuse alarms.
RECORDING_FUNCTIONS = frozenset({"Modect", "Mocord", "Nodect", "Record"})

_HEADER = re.compile(r"^StoreSight incident (?P<id>\S+) \[(?P<state>active|ended)\]$")
_ALARMED = re.compile(r"Alarmed event id:\s*(\d+)")
# Incident ids go into a REGEXP filter in the URL path: only ids made of these are looked up that way.
_SAFE_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
# zmu's note for an alarm forced through the API; the incident's own paragraph replaces it.
_FORCED_PLACEHOLDER = re.compile(r"^Forced Web:?\s*$")


@dataclass(frozen=True)
class _Incident:
    """The fields of an incident payload this sink uses, checked."""

    id: str
    rule_id: str
    type: str
    camera: str
    zone: str | None
    severity: str
    state: str
    start: datetime
    end: datetime | None
    explanation: str


def parse_incident(incident: Mapping[str, Any]) -> _Incident:
    """The outbox payload; SinkRejected when it lacks what an event needs."""
    try:
        state = str(incident["state"])
        if state not in ("start", "update", "end"):
            raise ValueError(f"state {state!r}")
        start = _aware(incident["start"], "start")
        end = incident.get("end")
        parsed = _Incident(
            id=str(incident["id"]),
            rule_id=str(incident.get("rule_id") or ""),
            type=str(incident.get("type") or "incident"),
            camera=str(incident["camera"]),
            zone=None if incident.get("zone") is None else str(incident["zone"]),
            severity=str(incident.get("severity") or "warning"),
            state=state,
            start=start,
            end=None if end is None else _aware(end, "end"),
            explanation=str(incident.get("explanation") or ""),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SinkRejected(f"incident {incident.get('id')!r} cannot go to ZoneMinder: bad or missing {exc}") from None
    if not parsed.id.strip():
        raise SinkRejected("incident with an empty id cannot go to ZoneMinder")
    return parsed


def _aware(value: Any, what: str) -> datetime:
    t = datetime.fromisoformat(str(value))
    if t.tzinfo is None:
        raise ValueError(f"{what} {value!r} (no UTC offset)")
    return t


def incident_paragraph(incident: _Incident, ended: bool) -> str:
    """The incident's paragraph in the event's Notes; its first line is the marker that finds it again."""
    where = f"camera {incident.camera}" + (f", zone {incident.zone}" if incident.zone else "")
    rule = f" by rule {incident.rule_id}" if incident.rule_id else ""
    # one paragraph per incident: blank lines inside the explanation would split it
    explanation = re.sub(r"\n\s*\n+", "\n", incident.explanation.strip())[:EXPLANATION_MAX]
    when = f"started {incident.start.isoformat()}"
    if incident.end is not None:
        seconds = max(0.0, (incident.end - incident.start).total_seconds())
        when += f", ended {incident.end.isoformat()}, lasted {seconds:.1f} s"
    lines = [
        f"StoreSight incident {incident.id} [{'ended' if ended else 'active'}]",
        f"{incident.type}{rule}, {where}, severity {incident.severity}",
        *([explanation] if explanation else []),
        when,
    ]
    return "\n".join(lines)


def incidents_in_notes(notes: str | None) -> dict[str, str]:
    """The incidents recorded in an event's Notes: id -> "active" or "ended"."""
    found = {}
    for part in re.split(r"\n\s*\n", notes or ""):
        header = _HEADER.match(part.strip().split("\n", 1)[0])
        if header:
            found[header["id"]] = header["state"]
    return found


def merge_notes(existing: str | None, incident_id: str, paragraph: str) -> tuple[str, list[str]]:
    """Notes with this incident's paragraph put in (replacing its earlier one, else appended), other text kept;
    and the ids of the other incidents still active in the event."""
    out: list[str] = []
    others_active: list[str] = []
    placed = False
    for part in re.split(r"\n\s*\n", existing or ""):
        part = part.strip()
        if not part or _FORCED_PLACEHOLDER.match(part):
            continue
        header = _HEADER.match(part.splitlines()[0])
        if header and header["id"] == incident_id:
            if not placed:
                out.append(paragraph)
                placed = True
            continue
        if header and header["state"] == "active":
            others_active.append(header["id"])
        out.append(part)
    if not placed:
        out.append(paragraph)
    return "\n\n".join(out), others_active


@dataclass(frozen=True)
class Monitor:
    """What the sink needs to know about a ZoneMinder monitor."""

    id: str
    name: str
    function: str
    enabled: bool
    path: str = field(default="", repr=False)  # the camera's source URL; may hold its password: never log it

    def describe(self) -> str:
        """`3 'Front door' (Nodect)`."""
        return f"{self.id} {self.name!r} ({self.function}{'' if self.enabled else ', disabled'})"


def _seconds(value: Any, default: float) -> float:
    """A lifetime from a login answer; the default when it is missing or not a positive number."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return default
    return seconds if seconds > 0 else default


def _message(body: Any, fallback: str) -> str:
    """ZoneMinder's error text: `data.message` only (its body also echoes the URL, token and all)."""
    text = fallback
    if isinstance(body, dict):
        data = body.get("data")
        if isinstance(data, dict) and data.get("message"):
            text = str(data["message"])
        elif body.get("message"):
            text = str(body["message"])
    return redact_url(html.unescape(text))[:ERROR_TEXT_MAX]


class ZoneMinderSink:
    """Raises alarms on ZoneMinder monitors and writes the incident into the recorded event."""

    kind = literal_key(ZoneMinderSinkConfig, "kind")

    def __init__(self, config: ZoneMinderSinkConfig, refs: SinkRefs) -> None:
        self.config = config
        self.id = config.id
        self.health = SinkHealth()
        self.refs = refs
        # Never any credentials in here: it goes into logs, errors and /readyz.
        self.where = redact_url(config.url)
        self._api = config.url + "/api"
        # ZoneMinder's web server may set its session cookie and redirect: both as a browser would see them
        self.http = HttpClient(
            config.url, self.where, timeout_s=config.timeout_s, verify_tls=config.verify_tls,
            ca_bundle=config.ca_bundle, unreachable=SinkNotReady, keep_cookies=True, follow_redirects=True,
        )  # fmt: skip
        self._access: str | None = None  # "" when ZoneMinder runs without authentication
        self._access_until = 0.0
        self._refresh: str | None = None
        self._refresh_until = 0.0
        self._login_lock = asyncio.Lock()
        # Notes are read, merged and written back: one delivery at a time keeps that from losing a paragraph.
        self._publish_lock = asyncio.Lock()
        self._monitors: dict[str, Monitor] | None = None
        self._said_system = False

    # --- HTTP, login and tokens ------------------------------------------------------------------------------

    async def _http(
        self, method: str, path: str, params: Mapping[str, str], data: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        """One request below /api; (status, parsed JSON or None). Unreachable, timeouts and 5xx: SinkNotReady."""
        # The path is quoted here (named parameters hold spaces) and handed over as is.
        url = URL(self._api + "/" + quote(path, safe="/:.-_"), encoded=True)
        reply = await self.http.request(method, url, what=f"{method} {path}", params=params, form=data)
        status, body = reply.status, reply.data
        if status >= 500 or status in (408, 429):
            raise SinkNotReady(f"{self.where}: {method} {path}: HTTP {status} {_message(body, '')}".rstrip())
        if body is None and (200 <= status < 300 or status == 404):
            # ZoneMinder's API answers JSON, its own 404s included: anything else is the wrong URL, or a web server
            # without the API's rewrite rules. Not this delivery's fault: retried until the config or server is fixed.
            raise SinkNotReady(f"{self.where}: {method} {path}: HTTP {status} without JSON: no ZoneMinder API at "
                               f"{self.where}/api (check url)")  # fmt: skip
        return status, body

    async def _token(self, fresh: bool = False) -> str | None:
        """A valid access token (None: no login configured); `fresh` logs in with the password whatever we hold."""
        if self.config.username is None:
            return None
        if not fresh and self._access is not None and time.monotonic() < self._access_until:
            return self._access
        async with self._login_lock:
            now = time.monotonic()
            if not fresh and self._access is not None and now < self._access_until:
                return self._access  # another caller logged in while this one waited
            if not fresh and self._refresh and now < self._refresh_until:
                status, body = await self._http("POST", "host/login.json", {}, {"token": self._refresh})
                if status == 200 and isinstance(body, dict) and body.get("access_token"):
                    self._take_tokens(body)
                    log.debug("%s: access token renewed", self.id)
                    return self._access
                self._refresh = None  # refused or expired early: log in with the password below
            password = "" if self.config.password is None else self.config.password.get_secret_value()
            status, body = await self._http(
                "POST", "host/login.json", {}, {"user": self.config.username, "pass": password}
            )
            if status == 401:
                raise SinkAuthError(f"{self.where}: login refused: {_message(body, 'HTTP 401')}")
            if status != 200 or not isinstance(body, dict):
                raise SinkNotReady(f"{self.where}: login answered HTTP {status} {_message(body, '')}".rstrip())
            self._take_tokens(body)
            log.info("%s: logged in to ZoneMinder %s at %s", self.id, body.get("version", "?"), self.where)
            return self._access

    def _take_tokens(self, body: Mapping[str, Any]) -> None:
        now = time.monotonic()
        access = body.get("access_token")
        life = _seconds(body.get("access_token_expires"), DEFAULT_TOKEN_S)
        self._access = str(access) if access else ""  # none issued: authentication is off on that server
        self._access_until = now + life - min(REFRESH_MARGIN_S, life / 4)
        if body.get("refresh_token"):
            rlife = _seconds(body.get("refresh_token_expires"), 0.0)
            self._refresh = str(body["refresh_token"])
            self._refresh_until = now + rlife - min(REFRESH_MARGIN_S, rlife / 4)

    async def _call(
        self,
        method: str,
        path: str,
        data: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """An API call with the token; a 401 logs in afresh and tries once more, a second 401 is SinkAuthError."""
        for attempt in (1, 2):
            token = await self._token(fresh=attempt == 2)
            params = {**(query or {}), **({"token": token} if token else {})}
            status, body = await self._http(method, path, params, data)
            if status != 401:
                return status, body
            if self.config.username is None:
                raise SinkAuthError(f"{self.where}: ZoneMinder wants a login: set username and password")
            if attempt == 1:
                log.info("%s: %s refused the token (%s); logging in again", self.id, path, _message(body, "401"))
        raise SinkAuthError(f"{self.where}: {method} {path}: {_message(body, 'HTTP 401')} (after logging in again)")

    async def _ok(
        self,
        method: str,
        path: str,
        data: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> Any:
        """`_call` that expects 2xx: a 404 or other 4xx is SinkRejected with ZoneMinder's reason."""
        status, body = await self._call(method, path, data, query)
        if 200 <= status < 300:
            return body
        raise SinkRejected(f"{self.where}: {method} {path}: HTTP {status} {_message(body, '')}".rstrip())

    # --- monitors --------------------------------------------------------------------------------------------

    async def monitors(self) -> dict[str, Monitor]:
        """Every monitor this user may see, by Id."""
        body = await self._ok("GET", "monitors.json")
        found: dict[str, Monitor] = {}
        for item in body.get("monitors", []) if isinstance(body, dict) else []:
            m = item.get("Monitor", {}) if isinstance(item, dict) else {}
            if "Id" in m:
                found[str(m["Id"])] = Monitor(
                    str(m["Id"]),
                    str(m.get("Name") or ""),
                    str(m.get("Function") or "?"),
                    str(m.get("Enabled")) == "1",
                    path=str(m.get("Path") or ""),
                )
        return found

    def _listing(self, monitors: Mapping[str, Monitor]) -> str:
        return ", ".join(m.describe() for m in sorted(monitors.values(), key=lambda m: int(m.id))) or "none"

    async def _monitor_for(self, camera: str) -> str:
        """The camera's monitor Id, checked against ZoneMinder (the whole map is checked on first use)."""
        monitor = self.config.cameras.get(camera)
        if monitor is None:
            mapped = ", ".join(sorted(self.config.cameras))
            raise SinkRejected(
                f"camera {camera!r} has no ZoneMinder monitor in sink {self.id!r} (cameras mapped: {mapped})"
            )
        if self._monitors is None or monitor not in self._monitors:
            # first delivery, or a monitor added in ZoneMinder since: ask again
            first = self._monitors is None
            self._monitors = await self.monitors()
            missing = {c: m for c, m in self.config.cameras.items() if m not in self._monitors}
            if first and missing:
                log.warning("%s: ZoneMinder at %s has no monitor %s; their incidents will be rejected (monitors: %s)",
                            self.id, self.where, ", ".join(f"{m} (camera {c})" for c, m in sorted(missing.items())),
                            self._listing(self._monitors))  # fmt: skip
        if monitor not in self._monitors:
            raise SinkRejected(
                f"{self.where}: camera {camera!r} is mapped to ZoneMinder monitor {monitor}, which does not exist "
                f"(monitors: {self._listing(self._monitors)}); fix cameras in sink {self.id!r}"
            )
        return monitor

    async def _alarm(self, monitor: str, command: str) -> str:
        """`on` or `off` on a monitor; ZoneMinder's (zmu's) answer."""
        status, body = await self._call("GET", f"monitors/alarm/id:{monitor}/command:{command}.json")
        if status == 404:
            self._monitors = None  # it was there when checked: look again next time
            raise SinkRejected(f"{self.where}: ZoneMinder has no monitor {monitor}: {_message(body, 'HTTP 404')}")
        if not 200 <= status < 300 or not isinstance(body, dict):
            raise SinkRejected(
                f"{self.where}: alarm {command} on monitor {monitor}: HTTP {status} {_message(body, '')}"
            )
        if body.get("status") == "false":  # zmu failed: its exit code and output
            raise SinkNotReady(
                f"{self.where}: alarm {command} on monitor {monitor} failed: {body.get('error', '')}"[:300]
            )
        return f"{body.get('status', '')}\n{body.get('output', '')}"

    async def _raise_alarm(self, monitor: str) -> str:
        """Alarm on; the id of the event the monitor records (a monitor already in alarm names its current one)."""
        answer = await self._alarm(monitor, "on")
        found = _ALARMED.search(answer)
        if found:
            return found.group(1)
        said = " ".join(line.strip() for line in answer.splitlines() if line.strip())[:ERROR_TEXT_MAX]
        if "cannot handle alarms" in said:
            raise SinkRejected(f"{self.where}: monitor {monitor} takes no alarms: {said} (set its Function to Nodect, "
                               "Modect, Mocord or Record)")  # fmt: skip
        raise SinkNotReady(f"{self.where}: monitor {monitor} opened no event ({said}); is it enabled and capturing?")

    # --- events ----------------------------------------------------------------------------------------------

    async def _event(self, event_id: str) -> dict[str, Any] | None:
        """The Event record, None when ZoneMinder no longer has it (purged or deleted)."""
        # noframes: the record alone, not a row per recorded frame
        status, body = await self._call("GET", f"events/{event_id}.json", query={"noframes": "true"})
        if status == 404:
            return None
        if not 200 <= status < 300 or not isinstance(body, dict):
            raise SinkRejected(f"{self.where}: event {event_id}: HTTP {status} {_message(body, '')}".rstrip())
        event = body.get("event", {}).get("Event")
        return event if isinstance(event, dict) else None

    async def find_event(self, monitor: str, incident_id: str) -> str | None:
        """The newest event of the monitor whose Notes carry this incident, if any."""
        if not _SAFE_ID.match(incident_id):
            return None
        path = f"events/index/MonitorId:{monitor}/Notes REGEXP:StoreSight incident {incident_id}.json"
        body = await self._ok("GET", path, query={"sort": "Id", "direction": "desc"})
        ids = []
        for item in body.get("events", []) if isinstance(body, dict) else []:
            event = item.get("Event", {}) if isinstance(item, dict) else {}
            # REGEXP matched a substring: keep events with this exact incident's paragraph
            if "Id" in event and incident_id in incidents_in_notes(event.get("Notes")):
                ids.append(str(event["Id"]))
        return max(ids, key=int) if ids else None

    async def _write_event(self, event_id: str, event: Mapping[str, Any], incident: _Incident, notes: str) -> None:
        data = {"Event[Notes]": notes}
        if not str(event.get("Cause") or "").startswith("StoreSight"):
            # the first incident names the event; later ones sharing it only add their paragraph
            data["Event[Cause]"] = f"StoreSight {incident.type}"[:CAUSE_MAX]
            data["Event[Name]"] = f"StoreSight: {incident.rule_id or incident.type}"[:NAME_MAX]
        body = await self._ok("PUT", f"events/{event_id}.json", data)
        if not (isinstance(body, dict) and body.get("message") == "Saved"):
            raise SinkNotReady(f"{self.where}: event {event_id} not saved: {_message(body, 'no answer')}")

    # --- the sink --------------------------------------------------------------------------------------------

    async def publish(self, delivery_key: str, incident: Mapping[str, Any]) -> Receipt:
        """Start: alarm on and the incident into the event it records; update: the notes; end: alarm off (unless
        another incident shares the event), then the notes, which mark it ended only once the alarm is off."""
        if is_system_incident(incident):
            # unsupported: degrade, say so once (an event in ZoneMinder always belongs to a monitor)
            if not self._said_system:
                self._said_system = True
                log.info("%s: ZoneMinder has no system events: StoreSight's own health incidents are not sent", self.id)
            return Receipt("ZoneMinder: skipped, ZoneMinder has no events without a monitor")
        parsed = parse_incident(incident)
        async with self._publish_lock:
            monitor = await self._monitor_for(parsed.camera)
            event_id = await self.refs.get_ref(self.id, parsed.id)
            if event_id is None and parsed.state != "start":
                # A start needs no search: retried after a lost reply, its monitor is still in alarm and names the
                # same event. A later state without a stored id (a new database) finds the incident in the notes.
                event_id = await self.find_event(monitor, parsed.id)
            first = None if event_id is None else await self._event(event_id)
            if event_id is None or first is None:
                if event_id is not None:
                    log.warning("%s: event %s of incident %s is gone from ZoneMinder; recording a new one",
                                self.id, event_id, parsed.id)  # fmt: skip
                # an end whose start never got here (dead-lettered, or the sink was added since) still leaves an event
                event_id = await self._raise_alarm(monitor)
                await self.refs.put_ref(self.id, parsed.id, event_id)
                first = await self._event(event_id) or {}
            target_id, target = event_id, first
            if first.get("EndDateTime") and incidents_in_notes(first.get("Notes")).get(parsed.id) == "active":
                # ZoneMinder cuts an alarm longer than the monitor's section length (600 s by default) into several
                # events: while the alarm is on, the incident goes on in the event the monitor records now
                current = await self._current_event(monitor)
                if current is not None and current != event_id:
                    target_id, target = current, await self._event(current) or {}
            paragraph = incident_paragraph(parsed, parsed.state == "end")
            notes, others = merge_notes(target.get("Notes"), parsed.id, paragraph)
            detail = f"ZoneMinder event {event_id}"
            detail += f" (continued in {target_id})" if target_id != event_id else ""
            detail += f" on monitor {monitor}"
            if parsed.state == "end":
                first_states = incidents_in_notes(first.get("Notes"))
                others = sorted({*others, *(i for i, s in first_states.items() if s == "active" and i != parsed.id)})
                if others:
                    detail += f"; alarm kept on for {len(others)} other incident(s)"
                elif target.get("EndDateTime"):
                    # closed already (this end is a retry, or ZoneMinder ended it): the monitor may be recording
                    # another event by now, which an alarm off must not cut short
                    detail += " (closed)"
                else:
                    await self._alarm(monitor, "off")
                    detail += "; alarm off"
            await self._write_event(target_id, target, parsed, notes)
            if target_id != event_id:
                await self._write_event(
                    event_id, first, parsed, merge_notes(first.get("Notes"), parsed.id, paragraph)[0]
                )
            return Receipt(detail)

    async def _current_event(self, monitor: str) -> str | None:
        """The event a monitor in alarm is recording; None when it is not in alarm."""
        status, body = await self._call("GET", f"monitors/alarm/id:{monitor}/command:status.json")
        # 2 is ALARM in the numbering the API reports (0 idle, 1 pre-alarm, 2 alarm, 3 alert, 4 tape)
        if status != 200 or not isinstance(body, dict) or str(body.get("status")) != "2":
            return None
        # in alarm already, "on" changes nothing and names the event being recorded; the monitor could leave the
        # alarm between the two calls (and "on" then start an event), a window of milliseconds
        found = _ALARMED.search(await self._alarm(monitor, "on"))
        return found.group(1) if found else None

    async def self_test(self) -> str:
        """Log in, read the version and check that every mapped monitor exists and can record alarm events."""
        body = await self._ok("GET", "host/getVersion.json")
        version = f"{body.get('version', '?')} (API {body.get('apiversion', '?')})" if isinstance(body, dict) else "?"
        self._monitors = monitors = await self.monitors()
        good, bad = [], []
        for camera, monitor in sorted(self.config.cameras.items()):
            m = monitors.get(monitor)
            if m is None:
                bad.append(f"camera {camera}: no monitor {monitor}")
            elif m.function not in RECORDING_FUNCTIONS or not m.enabled:
                bad.append(f"camera {camera}: monitor {m.describe()} records no alarm events (needs Enabled and "
                           "Function Nodect, Modect, Mocord or Record)")  # fmt: skip
            else:
                good.append(f"{camera} -> monitor {m.describe()}")
        if bad:
            raise SinkRejected(f"{self.where}: " + "; ".join(bad) + f" (monitors: {self._listing(monitors)})")
        who = f" as {self.config.username}" if self.config.username else " (no login)"
        return f"ZoneMinder {version} at {self.where}{who}: " + ", ".join(good)

    async def close(self) -> None:
        """Close the HTTP session (tokens expire by themselves)."""
        await self.http.close()
