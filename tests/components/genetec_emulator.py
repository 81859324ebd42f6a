"""A Genetec Security Center Web SDK for tests: an aiohttp server on 127.0.0.1 that takes the requests documented in
INTEGRATIONS.md section 4 and nothing else, and behaves like the product where the sink depends on it.

Checked on every request (a request that fails a check is answered 400, or 404/405 for an unknown endpoint or
method, and recorded in `violations`):
- the endpoint: `GET /WebSdk/` (ping), `POST /WebSdk/action?q=<action>`, `GET /WebSdk/entity?q=entity=<guid>,...`
  (one or several `entity=<guid>,<property>,...` groups), `GET /WebSdk/report/EntityConfiguration?q=EntityTypes@Camera`
  with optional `,Page=<n>,PageSize=<m>`;
- `Accept: text/json` (without it the product answers XML), no request body, `q` as the only query parameter;
- the query DSL as written on the wire: `Name(arg,arg,...)`, GUIDs as 32 hex digits without dashes, times as
  `yyyy-MM-ddTHH:mm:ss`, texts percent-encoded with none of the DSL's characters (`=`, `@`, `\\`, `(`, `)`, `,`),
  no raw space or `+` in them, and valid %-escapes;
- `AddCameraBookmark(<camera guid>,<time>,<text>)` and `RaiseCustomEvent(CustomEventId(<int>)[,<guid>,<text>])`.

The product's side: HTTP Basic with `<user>;<application id>` and the password (401 otherwise), 403 when the licence
lacks the Web SDK part, answers in the `{"Rsp": {"Status": "Ok"|"Fail", ...}}` envelope. What INTEGRATIONS.md does
not document, the emulator does as the product is believed to [I]: a camera or custom event the system does not
have is a "Fail" envelope with HTTP 200; the entity lookup answers the asked properties in `Result` (an object for
one entity, a list for several, as a third-party client reads them [S]); the report answers a list of `{"Guid"}`
rows [S], dashed GUIDs, one page at a time.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from components.http_faults import FaultPlan, Seen, drop_connection

HOST = "127.0.0.1"
DEMO_APP_ID = "KxsD11z743Hf5Gq9mv3+5ekxzemlCiUXkTFY5ba1NOGcLCmGstt2n0zYE9NsNimv"  # a made-up SDK application id
ENTITY_PROPERTIES = frozenset({"Name", "Description", "Guid", "EntityType", "RunningState"})

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GUID32 = re.compile(r"^[0-9a-fA-F]{32}$")
_DASHED = re.compile(r"^\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# DSL syntax that must not appear raw inside an argument, and what HTTP servers may read as a space.
_RAW_FORBIDDEN = set("=@\\ +")


class DslError(ValueError):
    """The query does not follow the DSL."""


@dataclass
class Call:
    """`Name(args)`: each argument a nested call or a literal as sent (still percent-encoded)."""

    name: str
    args: list[Call | str]


def parse_call(raw: str) -> Call:
    """One `Name(arg,...)` spanning the whole text."""
    call, end = _call(raw, 0)
    if end != len(raw):
        raise DslError(f"unexpected {raw[end : end + 10]!r} after the closing parenthesis")
    return call


def _call(raw: str, pos: int) -> tuple[Call, int]:
    m = _NAME.match(raw, pos)
    if m is None or m.end() >= len(raw) or raw[m.end()] != "(":
        raise DslError(f"expected Name( at {raw[pos : pos + 20]!r}")
    pos = m.end() + 1
    args: list[Call | str] = []
    if pos < len(raw) and raw[pos] == ")":
        return Call(m.group(), args), pos + 1
    while True:
        n = _NAME.match(raw, pos)
        if n is not None and n.end() < len(raw) and raw[n.end()] == "(":
            arg, pos = _call(raw, pos)
            args.append(arg)
        else:
            end = pos
            while end < len(raw) and raw[end] not in "(),":
                end += 1
            literal = raw[pos:end]
            if not literal:
                raise DslError(f"empty argument {len(args) + 1} of {m.group()}")
            if end < len(raw) and raw[end] == "(":
                raise DslError(f"a raw '(' inside argument {len(args) + 1} of {m.group()}: encode it as %28")
            args.append(literal)
            pos = end
        if pos >= len(raw):
            raise DslError(f"{m.group()}( is never closed")
        if raw[pos] == ")":
            return Call(m.group(), args), pos + 1
        if raw[pos] != ",":
            raise DslError(f"expected , or ) at {raw[pos : pos + 10]!r}")
        pos += 1


def decode_literal(literal: str, what: str) -> str:
    """A literal's text; DslError when it carries raw DSL characters or broken %-escapes."""
    raw = sorted(c for c in set(literal) if c in _RAW_FORBIDDEN)
    if raw:
        raise DslError(f"{what} has raw {''.join(raw)!r}: percent-encode it (spaces as %20)")
    if _BAD_ESCAPE.search(literal):
        raise DslError(f"{what} has a broken %-escape")
    try:
        return unquote(literal, errors="strict")
    except UnicodeDecodeError:
        raise DslError(f"{what} is not UTF-8 once decoded") from None


def guid_arg(arg: Call | str, what: str) -> str:
    """A GUID argument as 32 lower-case hex digits."""
    if not isinstance(arg, str):
        raise DslError(f"{what} must be a GUID, not {arg.name}(...)")
    if _DASHED.match(arg):
        raise DslError(f"{what} {arg!r}: GUIDs go without dashes or braces in the DSL")
    if not _GUID32.match(arg):
        raise DslError(f"{what} {arg!r} is not a GUID (32 hex digits)")
    return arg.lower()


def _guid32(value: str) -> str:
    return value.replace("-", "").strip("{}").lower()


def _dashed(guid32: str) -> str:
    """A GUID as Security Center writes it in answers: 8-4-4-4-12 [I]."""
    g = guid32
    return f"{g[:8]}-{g[8:12]}-{g[12:16]}-{g[16:20]}-{g[20:]}"


def rsp_ok(result: Any = None) -> web.Response:
    """The success envelope."""
    rsp: dict[str, Any] = {"Status": "Ok"}
    if result is not None:
        rsp["Result"] = result
    return web.json_response({"Rsp": rsp}, content_type="text/json")


def rsp_fail(code: str, message: str, status: int = 200) -> web.Response:
    """The failure envelope."""
    return web.json_response(
        {"Rsp": {"Status": "Fail", "Error": {"Code": code, "Message": message}}},
        status=status,
        content_type="text/json",
    )


@dataclass
class GenetecEmulator:
    """Run with `async with GenetecEmulator(...) as sc:`; `sc.url` is the Web SDK base (…/WebSdk)."""

    username: str = "storesight"
    password: str = "correct horse battery"
    application_id: str = DEMO_APP_ID
    cameras: dict[str, str] = field(default_factory=dict)  # camera GUID (any form) -> name
    custom_event_ids: set[int] = field(default_factory=lambda: {5001})
    licensed: bool = True  # False: the licence lacks the Web SDK part (every request 403)
    base_uri: str = "WebSdk"

    def __post_init__(self) -> None:
        self.cameras = {_guid32(g): n for g, n in self.cameras.items()}
        self.bookmarks: list[dict[str, Any]] = []  # {"camera": guid32, "time": aware UTC, "text": str}
        self.custom_events: list[dict[str, Any]] = []  # {"id": int, "entity": guid32 | None, "message": str | None}
        self.running_states: dict[str, str] = {}  # guid32 -> RunningState other than Running
        self.report_pages = 0  # EntityConfiguration report pages served
        self.seen: list[Seen] = []
        self.violations: list[str] = []
        self.plan = FaultPlan()
        self._runner: web.AppRunner | None = None
        self._port = 0

    # -- control ------------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT/WebSdk"""
        return f"http://{HOST}:{self._port}/{self.base_uri}"

    @property
    def root(self) -> str:
        """http://127.0.0.1:PORT (no baseUri)."""
        return f"http://{HOST}:{self._port}"

    def count(self, method: str, contains: str, status: int | None = None) -> int:
        """How many requests matched (their raw path and query contains `contains`, and got `status` if given)."""
        return sum(
            1
            for s in self.seen
            if s.method == method and contains in s.raw_path and (status is None or s.status == status)
        )

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def __aenter__(self) -> GenetecEmulator:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/{tail:.*}", self._not_found)  # every request passes the middleware's checks
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here when asked for port 0
        assert server is not None and server.sockets
        self._port = int(server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.plan.released.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _not_found(self, request: web.Request) -> web.Response:
        raise AssertionError("the middleware answers every request")

    # -- every request ------------------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        seen = Seen(request.method, request.raw_path)
        self.seen.append(seen)
        response = await self._handle(request, seen)
        seen.status = response.status
        return response

    async def _handle(self, request: web.Request, seen: Seen) -> web.Response:
        raw = await request.read()
        route, problem = self._route(request, raw)
        if problem is not None:
            status, text = problem
            self.violations.append(f"{request.method} {request.raw_path}: {text}")
            return rsp_fail("InvalidRequest", text, status=status)
        assert route is not None
        fault = self.plan.take(request)
        if fault is not None and fault.kind == "status":
            return rsp_fail("ServiceUnavailable", "injected failure", status=fault.status)
        if fault is not None and fault.kind == "hang":
            await self.plan.wait_hung()
            return rsp_fail("ServiceUnavailable", "hung", status=503)
        denied = self._auth(request, seen)
        if denied is not None:
            return denied
        response = route()
        if fault is not None and fault.kind == "lose_reply":
            drop_connection(request)
        return response

    def _auth(self, request: web.Request, seen: Seen) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        user = password = None
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                user = None
        seen.user = user
        if user != f"{self.username};{self.application_id}" or password != self.password:
            response = rsp_fail("Unauthorized", "Invalid credentials", status=401)
            response.headers["WWW-Authenticate"] = f'Basic realm="{self.base_uri}"'
            return response
        if not self.licensed:
            return rsp_fail("Forbidden", "The license does not include the Web SDK", status=403)
        return None

    def _route(
        self, request: web.Request, raw: bytes
    ) -> tuple[Callable[[], web.Response] | None, tuple[int, str] | None]:
        """The handler for a valid request, or (status, why) for one the documented API does not take."""
        base = f"/{self.base_uri}"
        path, _, query = request.raw_path.partition("?")
        report = f"{base}/report/EntityConfiguration"
        endpoints = {f"{base}/": "GET", f"{base}/action": "POST", f"{base}/entity": "GET", report: "GET"}
        if path not in endpoints:
            return None, (404, f"no such endpoint {path!r} (INTEGRATIONS.md section 4.2)")
        if request.method != endpoints[path]:
            return None, (405, f"{path} takes {endpoints[path]}, not {request.method}")
        if "text/json" not in request.headers.get("Accept", ""):
            return None, (400, "no 'Accept: text/json': the Web SDK would answer XML")
        if raw:
            return None, (400, "a request body: the Web SDK takes everything in the query string")
        if path == f"{base}/":
            if query:
                return None, (400, "the ping takes no query")
            return (lambda: rsp_ok()), None
        if not query.startswith("q=") or "&" in query:
            return None, (400, "the query must be q=<DSL> and nothing else")
        try:
            if path == f"{base}/action":
                return self._action(parse_call(query[2:])), None
            if path == report:
                return self._report(query[2:]), None
            return self._entity(query[2:]), None
        except DslError as exc:
            return None, (400, str(exc))

    # -- the product --------------------------------------------------------------------------------------------

    def _action(self, call: Call) -> Callable[[], web.Response]:
        if call.name == "AddCameraBookmark":
            if len(call.args) != 3:
                raise DslError(f"AddCameraBookmark takes (camera, time, text), got {len(call.args)} argument(s)")
            camera = guid_arg(call.args[0], "camera")
            when = call.args[1]
            if not isinstance(when, str) or not _TIME.match(when):
                raise DslError(f"time {when!r} is not yyyy-MM-ddTHH:mm:ss")
            try:
                at = datetime.strptime(when, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
            except ValueError:
                raise DslError(f"time {when!r} is not a date") from None
            if not isinstance(call.args[2], str):
                raise DslError("the bookmark text must be text")
            text = decode_literal(call.args[2], "the bookmark text")

            def add() -> web.Response:
                if camera not in self.cameras:
                    return rsp_fail("UnknownEntity", f"Camera {camera} was not found")
                self.bookmarks.append({"camera": camera, "time": at, "text": text})
                return rsp_ok()

            return add
        if call.name == "RaiseCustomEvent":
            if len(call.args) not in (1, 3):
                raise DslError("RaiseCustomEvent takes (CustomEventId(n)) or (CustomEventId(n), entity, message)")
            first = call.args[0]
            if not (isinstance(first, Call) and first.name == "CustomEventId" and len(first.args) == 1):
                raise DslError("the first argument of RaiseCustomEvent must be CustomEventId(<number>)")
            number = first.args[0]
            if not isinstance(number, str) or not number.isdigit():
                raise DslError(f"CustomEventId takes a number, got {number!r}")
            entity = guid_arg(call.args[1], "entity") if len(call.args) == 3 else None
            message = None
            if len(call.args) == 3:
                if not isinstance(call.args[2], str):
                    raise DslError("the message must be text")
                message = decode_literal(call.args[2], "the message")

            def raise_event() -> web.Response:
                if int(number) not in self.custom_event_ids:
                    return rsp_fail("UnknownCustomEvent", f"Custom event {number} is not defined")
                if entity is not None and entity not in self.cameras:
                    return rsp_fail("UnknownEntity", f"Entity {entity} was not found")
                self.custom_events.append({"id": int(number), "entity": entity, "message": message})
                return rsp_ok()

            return raise_event
        raise DslError(f"unknown action {call.name!r} (AddCameraBookmark, RaiseCustomEvent)")

    def _entity(self, q: str) -> Callable[[], web.Response]:
        groups: list[tuple[str, list[str]]] = []
        for part in q.split(","):
            if part.startswith("entity="):
                groups.append((guid_arg(part[len("entity=") :], "entity"), []))
            elif not groups:
                raise DslError("the entity query starts with entity=<guid>")
            elif part not in ENTITY_PROPERTIES:
                raise DslError(f"unknown entity property {part!r}")
            else:
                groups[-1][1].append(part)
        if any(not props for _, props in groups):
            raise DslError("an entity in the query names no property")

        def lookup() -> web.Response:
            results = []
            for guid, props in groups:
                if guid not in self.cameras:
                    return rsp_fail("UnknownEntity", f"Entity {guid} was not found")
                values = {"Name": self.cameras[guid], "Description": "", "Guid": _dashed(guid), "EntityType": "Camera",
                          "RunningState": self.running_states.get(guid, "Running")}  # fmt: skip
                results.append({p: values[p] for p in props})
            return rsp_ok(results[0] if len(results) == 1 else results)

        return lookup

    def _report(self, q: str) -> Callable[[], web.Response]:
        parts = q.split(",")
        if parts[0] != "EntityTypes@Camera":
            raise DslError(f"the report query must start with EntityTypes@Camera, not {parts[0]!r}")
        paging = {"Page": 1, "PageSize": 1000}
        for part in parts[1:]:
            name, eq, value = part.partition("=")
            if name not in paging or not eq or not value.isdigit() or int(value) < 1:
                raise DslError(f"report option {part!r}: only Page=<n> and PageSize=<n>, n >= 1")
            paging[name] = int(value)
        size, start = paging["PageSize"], (paging["Page"] - 1) * paging["PageSize"]

        def rows() -> web.Response:
            self.report_pages += 1
            return rsp_ok([{"Guid": _dashed(g)} for g in list(self.cameras)[start : start + size]])

        return rows
