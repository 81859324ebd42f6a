"""Nx's REST v4 as both Nx sink parts speak it (the bookmarks and events of sink.py, the analytics integration of
analytics.py): the incident fields they send, requests through the shared HTTP client, and what a status means."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from adapters.sinks.http import HttpClient, Reply
from plugin.errors import SinkAuthError, SinkNotReady, SinkRejected
from plugin.redact import redact_url

API = "/rest/v4"
MARKER_PREFIX = "storesight:"
# How much of an error body goes into an error message: enough for Nx's errorString, not a whole HTML page.
ERROR_TEXT_MAX = 200

IncidentState = Literal["start", "update", "end"]


@dataclass(frozen=True)
class NxIncident:
    """The fields of an incident payload this sink uses, checked."""

    id: str
    rule_id: str
    type: str
    camera: str
    state: IncidentState
    start_ms: int
    end_ms: int | None
    explanation: str

    @property
    def marker(self) -> str:
        """The tag that carries the incident id."""
        return f"{MARKER_PREFIX}{self.id}"

    @property
    def title(self) -> str:
        """Bookmark name and event caption."""
        return f"StoreSight: {self.rule_id}"


def _epoch_ms(value: Any, what: str) -> int:
    t = datetime.fromisoformat(str(value))
    if t.tzinfo is None:
        raise ValueError(f"{what} {value!r} has no UTC offset")
    return int(t.timestamp() * 1000)


def parse_incident(incident: Mapping[str, Any]) -> NxIncident:
    """The incident payload from the outbox; SinkRejected when it lacks what a bookmark needs."""
    try:
        state = incident["state"]
        if state not in ("start", "update", "end"):
            raise ValueError(f"state {state!r}")
        end = incident.get("end")
        parsed = NxIncident(
            id=str(incident["id"]),
            rule_id=str(incident["rule_id"]),
            type=str(incident.get("type") or ""),
            camera=str(incident["camera"]),
            state=state,
            start_ms=_epoch_ms(incident["start"], "start"),
            end_ms=None if end is None else _epoch_ms(end, "end"),
            explanation=str(incident.get("explanation") or ""),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SinkRejected(f"incident {incident.get('id')!r} cannot be delivered to Nx: bad or missing {exc}") from None
    if not parsed.id or not parsed.rule_id:
        raise SinkRejected(f"incident {incident.get('id')!r} has an empty id or rule_id")
    return parsed


def list_items(data: Any) -> list[dict[str, Any]]:
    """The objects of a list reply in either shape Nx sends: `[...]` or `{"reply": [...]}`."""
    if isinstance(data, dict) and "reply" in data:
        data = data["reply"]
    if not isinstance(data, list):
        raise SinkNotReady(f"expected a list from Nx, got {type(data).__name__}")
    return [item for item in data if isinstance(item, dict)]


def error_text(reply: Reply) -> str:
    """Nx's own error text from a reply, cut short."""
    if isinstance(reply.data, dict):
        text = reply.data.get("errorString") or reply.data.get("error") or reply.text
    else:
        text = reply.text
    return str(text).strip()[:ERROR_TEXT_MAX]


class NxApi:
    """Requests to one Nx server: JSON in and out, a bearer token when given, statuses mapped to the outcomes."""

    def __init__(self, http: HttpClient, username: str) -> None:
        self.http = http
        self.where = http.where
        self.username = username  # named when a 403 says the user lacks a permission

    async def send(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        token: str | None = None,
        timeout_s: float | None = None,
    ) -> Reply:
        """One request; a failure with no reply is SinkNotReady (SinkAuthError for an untrusted certificate)."""
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self.http.request(
            method, path, json_body=body, params=params, headers=headers, timeout_s=timeout_s
        )

    def check(self, reply: Reply, what: str, allow: tuple[int, ...] = ()) -> Reply:
        """Map a status to the three outcomes; 2xx and `allow` pass."""
        if 200 <= reply.status < 300 or reply.status in allow:
            return reply
        why = f"{self.where}: {what}: HTTP {reply.status} {error_text(reply)}".rstrip()
        if reply.status == 401:
            raise SinkAuthError(why)
        if reply.status == 403:
            raise SinkAuthError(f"{why} (the Nx user {self.username!r} lacks a permission this needs)")
        if reply.status in (408, 425, 429) or reply.status >= 500:
            raise SinkNotReady(why)
        if 300 <= reply.status < 400:
            # e.g. a cloud relay sending us to another host: following it would hand the bearer token over
            raise SinkNotReady(f"{why}: redirected to {redact_url(reply.location or '?')}; point url there")
        raise SinkRejected(why)
