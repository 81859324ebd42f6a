"""Milestone XProtect stand-ins for tests (XProtect runs only on Windows, so it cannot run here).

- `XProtectEmulator`: an aiohttp server on 127.0.0.1 with the identity provider's token endpoint and the REST
  endpoints the sink uses (cameras, bookmarks with the searchTime task, alarms) in the formats of
  shared/design/INTEGRATIONS.md section 3; tokens expire, and 5xx answers and lost replies can be injected.
- `AnalyticsEventServer`: the Event Server's Analytics Events port (HTTP over a plain TCP socket); every document
  is checked against Milestone's own AnalyticsEvent.xsd and recorded as valid or invalid.
- `GenericEventServer`: the Generic Events data source; records each string it receives.
Everything each one received is kept for the test to inspect.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from lxml import etree

from plugin.inference.server import REPO_ROOT

HOST = "127.0.0.1"
CLIENT_ID = "GrantValidatorClient"
REST = "/api/rest/v1"
BOOKMARK_KEYS = {"header", "description", "timeBegin", "timeEnd", "timeTriggered", "reference", "devicePath"}
ALARM_KEYS = {"name", "message", "source", "priority", "state"}
BODY = web.RequestKey("milestone_body", object)  # the JSON body, read once by the middleware


def specs_dir() -> Path:
    """$STORESIGHT_SPECS_DIR, else the workplace's vendor specs next to the checkout (never copied into it)."""
    env = os.environ.get("STORESIGHT_SPECS_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "specs"


XSD = specs_dir() / "milestone" / "AnalyticsEvent.xsd"


def xsd_available() -> str | None:
    """None when Milestone's AnalyticsEvent.xsd is there, else why not."""
    return None if XSD.is_file() else f"{XSD} not found (set STORESIGHT_SPECS_DIR)"


def _error(status: int, text: str, prop: str | None = None) -> web.Response:
    """An error in XProtect's REST shape."""
    detail: dict[str, Any] = {"errorText": text, "errorTextId": "VMO61008"}
    if prop:
        detail["property"] = prop
    return web.json_response({"httpCode": str(status), "details": [detail]}, status=status)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.endswith("Z"):
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(value[:-1] + "+00:00")
    return None


def _span(value: Any) -> timedelta | None:
    """A .NET TimeSpan as JSON writes it: [d.]hh:mm:ss."""
    if not isinstance(value, str):
        return None
    days, _, clock = value.rpartition(".") if value.count(":") == 2 and "." in value.split(":")[0] else ("", "", value)
    try:
        h, m, s = (int(x) for x in clock.split(":"))
        return timedelta(days=int(days or 0), hours=h, minutes=m, seconds=s)
    except ValueError:
        return None


@dataclass
class Received:
    """One REST request as the emulator saw it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int | None  # None: the reply was dropped


@dataclass
class _Injection:
    method: str
    path: str
    status: int | None  # None: process the request, then drop the connection before replying
    times: int


@dataclass
class XProtectEmulator:
    """The API Gateway of one XProtect site: identity provider and REST, on 127.0.0.1."""

    username: str = "storesight"
    password: str = "Correct-Horse-7"
    cameras: Mapping[str, str] = field(default_factory=dict)  # GUID -> display name
    disabled: set[str] = field(default_factory=set)  # GUIDs of cameras disabled in XProtect
    token_lifetime_s: float = 3600.0
    received: list[Received] = field(default_factory=list)
    bookmarks: dict[str, dict[str, Any]] = field(default_factory=dict)
    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)
    logins: int = 0
    refused_logins: int = 0
    reject_tokens: bool = False  # every REST call answers 401, as for a user whose rights were withdrawn
    _tokens: dict[str, float] = field(default_factory=dict)
    _injections: list[_Injection] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        """The API Gateway base, as the sink's `url`."""
        return f"http://{HOST}:{self.port}"

    def fail(self, method: str, path: str, status: int = 503, times: int = 1) -> None:
        """Answer the next `times` requests to `path` (after /api/rest/v1) with `status`, doing nothing."""
        self._injections.append(_Injection(method, REST + path, status, times))

    def lose_reply(self, method: str, path: str, times: int = 1) -> None:
        """Carry out the next `times` requests to `path`, then drop the connection instead of answering."""
        self._injections.append(_Injection(method, REST + path, None, times))

    def expire_tokens(self) -> None:
        """Every token issued so far stops working now (the gateway restarted, or its clock ran ahead)."""
        self._tokens.clear()

    def requests(self, method: str | None = None, path: str | None = None) -> list[Received]:
        """What was received, optionally only one method and path (after /api/rest/v1)."""
        return [
            r
            for r in self.received
            if (method is None or r.method == method) and (path is None or r.path == REST + path)
        ]

    # --- lifecycle ---

    async def __aenter__(self) -> Self:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/API/IDP/connect/token", self._token)
        app.router.add_get(f"{REST}/cameras", self._cameras)
        app.router.add_get(REST + "/cameras/{id}", self._camera)
        app.router.add_post(f"{REST}/bookmarks", self._bookmarks_post)
        app.router.add_get(REST + "/bookmarks/{id}", self._bookmark_get)
        app.router.add_patch(REST + "/bookmarks/{id}", self._bookmark_patch)
        app.router.add_delete(REST + "/bookmarks/{id}", self._bookmark_delete)
        app.router.add_post(f"{REST}/alarms", self._alarm_post)
        app.router.add_get(REST + "/alarms/{id}", self._alarm_get)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- plumbing ---

    def _take(self, method: str, path: str) -> _Injection | None:
        for inj in self._injections:
            if inj.times > 0 and inj.method == method and inj.path == path:
                inj.times -= 1
                return inj
        return None

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    return _error(400, "body is not JSON")
            else:
                body = raw.decode()
        request[BODY] = body
        entry = Received(request.method, request.path, dict(request.query), body, None)
        self.received.append(entry)
        if request.path.startswith(REST + "/"):
            auth = request.headers.get("Authorization", "")
            token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
            expiry = self._tokens.get(token or "")
            if self.reject_tokens or expiry is None or time.monotonic() >= expiry:
                entry.status = 401
                return web.Response(status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        inj = self._take(request.method, request.path)
        if inj is not None and inj.status is not None:
            entry.status = inj.status
            return _error(inj.status, "injected failure")
        response = await handler(request)
        if inj is not None:
            # the work is done and stored; the client never hears of it
            assert request.transport is not None
            request.transport.abort()
        else:
            entry.status = response.status
        return response

    # --- identity provider ---

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_id") != CLIENT_ID:
            return web.json_response({"error": "invalid_client"}, status=400)
        if form.get("grant_type") != "password":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if form.get("username") != self.username or form.get("password") != self.password:
            self.refused_logins += 1
            return web.json_response(
                {"error": "invalid_grant", "error_description": "invalid_username_or_password"}, status=400
            )
        self.logins += 1
        token = secrets.token_urlsafe(24)
        self._tokens[token] = time.monotonic() + self.token_lifetime_s
        return web.json_response(
            {
                "access_token": token,
                "expires_in": int(self.token_lifetime_s) if self.token_lifetime_s >= 1 else self.token_lifetime_s,
                "token_type": "Bearer",
                "scope": "managementserver",
            }
        )

    # --- configuration: cameras ---

    def _camera_doc(self, guid: str) -> dict[str, Any]:
        # the documented fields (id, displayName: Milestone's samples) and, as third-party clients read them [S],
        # name, enabled and the parent hardware relation
        hardware = str(uuid.uuid5(uuid.NAMESPACE_OID, guid))
        return {
            "id": guid,
            "displayName": self.cameras[guid],
            "name": self.cameras[guid],
            "enabled": guid not in self.disabled,
            "relations": {"self": {"type": "cameras", "id": guid}, "parent": {"type": "hardware", "id": hardware}},
        }

    def _known(self, guid: Any) -> str | None:
        if not isinstance(guid, str):
            return None
        return next((g for g in self.cameras if g.lower() == guid.lower()), None)

    async def _cameras(self, request: web.Request) -> web.Response:
        # the listing as the sink asks for it: no body, no query (paging and filters are not used)
        if request.query:
            return _error(400, "unexpected query parameter", sorted(request.query)[0])
        if request[BODY] is not None:
            return _error(400, "GET takes no body")
        return web.json_response({"array": [self._camera_doc(g) for g in self.cameras]})

    async def _camera(self, request: web.Request) -> web.Response:
        guid = self._known(request.match_info["id"])
        if guid is None:
            return _error(404, "Item not found")
        return web.json_response({"data": self._camera_doc(guid)})

    # --- bookmarks ---

    def _check_bookmark(self, body: Any, create: bool) -> web.Response | None:
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        unknown = set(body) - BOOKMARK_KEYS - (set() if create else {"id"})
        if unknown:
            return _error(400, "unknown property", sorted(unknown)[0])
        if create:
            for key in ("header", "timeBegin", "timeEnd", "devicePath"):
                if key not in body:
                    return _error(400, "required", key)
            path = body["devicePath"]
            if not isinstance(path, dict) or path.get("type") != "cameras" or self._known(path.get("id")) is None:
                return _error(400, "no such camera", "devicePath")
        for key in ("timeBegin", "timeEnd", "timeTriggered"):
            if key in body and _time(body[key]) is None:
                return _error(400, "not a UTC time like 2024-06-16T16:02:31Z", key)
        for key in ("header", "description", "reference"):
            if key in body and not isinstance(body[key], str):
                return _error(400, "must be a string", key)
        if create and not body["header"]:
            return _error(400, "must not be empty", "header")
        return None

    async def _bookmarks_post(self, request: web.Request) -> web.Response:
        body: Any = request[BODY]
        task = request.query.get("task")
        if task == "searchTime":
            return self._search_time(body)
        if task == "newReference":
            return web.json_response({"data": {"reference": f"No. {len(self.bookmarks) + 1:05d}"}})
        if task is not None:
            return _error(400, f"unknown task {task}")
        problem = self._check_bookmark(body, create=True)
        if problem is not None:
            return problem
        begin, end, triggered = _time(body["timeBegin"]), _time(body["timeEnd"]), _time(body.get("timeTriggered"))
        assert begin is not None and end is not None
        if end < begin or (triggered is not None and not begin <= triggered <= end):
            return _error(400, "timeBegin <= timeTriggered <= timeEnd does not hold", "timeEnd")
        bookmark_id = str(uuid.uuid4())
        self.bookmarks[bookmark_id] = {"id": bookmark_id, **body, "user": self.username}
        return web.json_response({"data": {"id": bookmark_id}}, status=201)

    def _search_time(self, body: Any) -> web.Response:
        if not isinstance(body, dict) or set(body) - {"time", "timeSpan", "count", "deviceIds"}:
            return _error(400, "searchTime takes time, timeSpan, count, deviceIds")
        start, span = _time(body.get("time")), _span(body.get("timeSpan"))
        if start is None or span is None:
            return _error(400, "time and timeSpan are required", "time")
        devices = {d.lower() for d in body.get("deviceIds") or []}
        hits = []
        for b in self.bookmarks.values():
            begin = _time(b["timeBegin"])
            assert begin is not None
            if start <= begin <= start + span and (not devices or b["devicePath"]["id"].lower() in devices):
                hits.append(b)
        return web.json_response({"array": hits[: int(body.get("count") or 100)]})

    async def _bookmark_get(self, request: web.Request) -> web.Response:
        b = self.bookmarks.get(request.match_info["id"])
        return _error(404, "Item not found") if b is None else web.json_response({"data": b})

    async def _bookmark_patch(self, request: web.Request) -> web.Response:
        b = self.bookmarks.get(request.match_info["id"])
        if b is None:
            return _error(404, "Item not found")
        body: Any = request[BODY]
        problem = self._check_bookmark(body, create=False)
        if problem is not None:
            return problem
        b.update(body)
        return web.json_response({"data": b})

    async def _bookmark_delete(self, request: web.Request) -> web.Response:
        if self.bookmarks.pop(request.match_info["id"], None) is None:
            return _error(404, "Item not found")
        return web.json_response({}, status=200)

    # --- alarms ---

    async def _alarm_post(self, request: web.Request) -> web.Response:
        body: Any = request[BODY]
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        if set(body) - ALARM_KEYS:
            return _error(400, "unknown property", sorted(set(body) - ALARM_KEYS)[0])
        if not isinstance(body.get("name"), str) or not body["name"]:
            return _error(400, "required", "name")
        if "source" in body and self._known(body["source"]) is None:
            return _error(400, "no such source", "source")
        alarm_id = str(uuid.uuid4())
        self.alarms[alarm_id] = {"id": alarm_id, **body, "state": 1}
        return web.json_response({"data": {"id": alarm_id}}, status=202)

    async def _alarm_get(self, request: web.Request) -> web.Response:
        a = self.alarms.get(request.match_info["id"])
        return _error(404, "Item not found") if a is None else web.json_response({"data": a})


class _TcpServer:
    """A plain asyncio TCP server on 127.0.0.1 and a free port."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client went away mid-request: nothing to record
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._client, HOST, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None


@dataclass
class Invalid:
    """A document the schema refused, and why."""

    raw: bytes
    error: str


class AnalyticsEventServer(_TcpServer):
    """The Event Server's Analytics Events port: HTTP requests over a TCP socket carrying AnalyticsEvent XML.

    Answers 200 for a valid document (with "Warning: Event message not known" when its Message names no analytics
    event in `known_messages`), 400 with the schema error for an invalid one.
    """

    def __init__(self, xsd: Path = XSD, known_messages: set[str] | None = None) -> None:
        super().__init__()
        self.schema = etree.XMLSchema(etree.parse(str(xsd)))
        self.known_messages = known_messages
        self.valid: list[etree._Element] = []
        self.invalid: list[Invalid] = []
        self.requests: list[tuple[str, dict[str, str]]] = []

    def check(self, raw: bytes) -> str | None:
        """None when `raw` is a well-formed AnalyticsEvent document that the XSD accepts, else the error."""
        try:
            doc = etree.fromstring(raw)
        except etree.XMLSyntaxError as exc:
            return f"not XML: {exc}"
        if not self.schema.validate(doc):
            return "; ".join(f"line {e.line}: {e.message}" for e in self.schema.error_log)  # type: ignore[attr-defined]
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while request_line := (await reader.readline()).decode("latin-1").strip():
            headers: dict[str, str] = {}
            while line := (await reader.readline()).decode("latin-1").strip():
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append((request_line, headers))
            error = None if request_line.startswith("POST ") else f"method not allowed: {request_line}"
            error = error or self.check(raw)
            if error is None:
                doc = etree.fromstring(raw)
                self.valid.append(doc)
                message = doc.findtext("{urn:milestone-systems}EventHeader/{urn:milestone-systems}Message")
                known = self.known_messages is None or message in self.known_messages
                status, text = "200 OK", "" if known else "Warning: Event message not known"
            else:
                self.invalid.append(Invalid(raw, error))
                status, text = "400 Bad Request", error
            body = text.encode()
            writer.write(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                break


class GenericEventServer(_TcpServer):
    """A Generic Events data source: each connection's bytes, until the client closes, are one string."""

    def __init__(self) -> None:
        super().__init__()
        self.strings: list[str] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        if data:
            self.strings.append(data.decode("ascii"))
