"""An Nx Witness server (REST v4) for tests: an aiohttp server on 127.0.0.1 that checks EVERY request against Nx's
own OpenAPI file (`../shared/specs/nx/v4_api_spec.json`, with openapi-core) and behaves like the product where the
sink depends on it: session tokens that expire, 401 on a bad or expired token, bookmarks and generic events kept so
tests can read them back, and faults on demand (an error status, a hang, a reply lost after the write was stored).

A request the spec does not allow (unknown path or method, a bad parameter, a body missing a required field, a field
the schema does not name) is answered 400 and recorded in `violations`; so is a reply of ours that does not match the
spec's response schema (`response_violations`), so the emulator cannot drift from the product's documented shapes.

What the spec leaves open, the emulator does as the product is believed to [I]: error bodies are
`{"error", "errorId", "errorString"}`; a bookmark on an unknown device is 404; the event log lists every generic
event (the product logs those that a rule handled).

The REST-only analytics integration: a registration request creates the integration user at once (whose login is
refused until approval when `integration_login_before_approval` is off); `approve()` is the administrator's click
(as is `POST .../approve`), creating the integration and its engine and filling in the request's `integrationId`
and `engineId`; metadata pushed to an enabled device agent lands in `object_metadata` and `analytics_events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

HOST = "127.0.0.1"
API = "/rest/v4"
REPO_ROOT = Path(__file__).resolve().parents[2]


def spec_path() -> Path:
    """$STORESIGHT_SPECS_DIR/nx/v4_api_spec.json, else the workplace's shared specs next to the checkout."""
    base = os.environ.get("STORESIGHT_SPECS_DIR")
    return (Path(base) if base else REPO_ROOT.parent / "shared" / "specs") / "nx" / "v4_api_spec.json"


def nx_emulator_available() -> str | None:
    """None when the emulator can run here (spec file, openapi-core, openssl for its certificate), else why not."""
    if not spec_path().is_file():
        return f"Nx OpenAPI spec not found at {spec_path()} (set STORESIGHT_SPECS_DIR)"
    try:
        import openapi_core  # noqa: F401
    except ImportError:
        return "openapi-core is not installed (pip install -e '.[dev]')"
    if shutil.which("openssl") is None:
        return "openssl is not installed (it makes the emulator's TLS certificate)"
    return None


@functools.cache
def _openapi(path: Path) -> Any:
    from openapi_core import Config, OpenAPI

    spec = json.loads(path.read_text(encoding="utf-8"))
    # Spec validation off: Nx's file has a `default: null` on a non-nullable field; requests still validate.
    return OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None))


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA, as an Nx server's default one is) and its key."""
    cert, key = directory / "nx-cert.pem", directory / "nx-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def _error(status: int, error_id: str, text: str) -> web.Response:
    return web.json_response({"error": str(status), "errorId": error_id, "errorString": text}, status=status)


@dataclass
class Fault:
    """What to do to the next `remaining` requests matching method and path (a substring)."""

    kind: Literal["status", "hang", "lose_reply"]
    remaining: int
    method: str | None = None
    path: str | None = None
    status: int = 503
    how: Literal["disconnect", "502"] = "disconnect"

    def matches(self, request: web.Request) -> bool:
        """Whether this fault applies to `request`."""
        return (self.method is None or request.method == self.method) and (
            self.path is None or self.path in request.path
        )


@dataclass
class Seen:
    """One request as received, with the status it got."""

    method: str
    path: str
    query: dict[str, str]
    status: int = 0
    authorized_with: str | None = None


@dataclass
class NxEmulator:
    """Run with `async with NxEmulator(...) as nx:`; `nx.url` is the server's base URL."""

    username: str = "storesight"
    password: str = "correct horse battery"
    devices: dict[str, str] = field(default_factory=dict)  # Nx device id -> name
    token_lifetime_s: int = 3600
    tls: tuple[Path, Path] | None = None  # (certificate, key); None = plain HTTP
    wrap_lists: bool = False  # answer lists as {"reply": [...]} like some versions do
    server_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    integration_login_before_approval: bool = True

    def __post_init__(self) -> None:
        self.sessions: dict[str, float] = {}  # token -> monotonic expiry
        self.bookmarks: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.seen: list[Seen] = []
        self.violations: list[str] = []
        self.response_violations: list[str] = []
        self.logins = 0
        self.faults: list[Fault] = []
        self.reject_all_tokens = False  # every authenticated request gets 401, even right after a login
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._api = _openapi(spec_path())
        self.user_id = str(uuid.uuid4())
        self.integration_requests: dict[str, dict[str, Any]] = {}  # requestId -> the request as GET shows it
        self.integration_users: dict[str, tuple[str, str]] = {}  # username -> (password, requestId)
        self.engines: dict[str, dict[str, Any]] = {}  # engineId -> {id, name, integrationId}
        self.device_agents: dict[tuple[str, str], bool] = {}  # (engineId, deviceId) -> isEnabled
        self.object_metadata: list[dict[str, Any]] = []  # bodies pushed, with "engineId" and "deviceId" added
        self.analytics_events: list[dict[str, Any]] = []

    # -- control ------------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """https://127.0.0.1:PORT (or http:// without TLS)."""
        return f"{'https' if self.tls else 'http'}://{HOST}:{self._port}"

    def fail(self, n: int, status: int = 503, method: str | None = None, path: str | None = None) -> None:
        """Answer the next n matching requests with `status` (before doing anything)."""
        self.faults.append(Fault("status", n, method, path, status=status))

    def hang(self, n: int, method: str | None = None, path: str | None = None) -> None:
        """Let the next n matching requests wait without an answer until the emulator closes."""
        self.faults.append(Fault("hang", n, method, path))

    def lose_reply(
        self,
        n: int,
        method: str | None = None,
        path: str | None = None,
        how: Literal["disconnect", "502"] = "disconnect",
    ) -> None:
        """Do the next n matching requests, then drop the connection (or answer 502 as a proxy would)."""
        self.faults.append(Fault("lose_reply", n, method, path, how=how))

    def expire_sessions(self) -> None:
        """Every session token expires now (a server restart, an admin revoking sessions)."""
        self.sessions.clear()

    def approve(self, request_id: str | None = None) -> None:
        """An administrator approves the registration request (every pending one when None)."""
        for rid, req in self.integration_requests.items():
            if (request_id is None or rid == request_id) and not req["isApproved"]:
                integration, engine = str(uuid.uuid4()), str(uuid.uuid4())
                req.update(isApproved=True, integrationId=integration, engineId=engine)
                self.engines[engine] = {"id": engine, "name": req["integrationManifest"]["name"],
                                        "integrationId": integration}  # fmt: skip

    def count(self, method: str, path_contains: str, status: int | None = None) -> int:
        """How many requests matched (and got `status`, when given)."""
        return sum(
            1
            for s in self.seen
            if s.method == method and path_contains in s.path and (status is None or s.status == status)
        )

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def __aenter__(self) -> NxEmulator:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_post(f"{API}/login/sessions", self._login)
        r.add_delete(f"{API}/login/sessions/{{token}}", self._logout)
        r.add_get(f"{API}/devices", self._devices)
        r.add_get(f"{API}/devices/{{deviceId}}/bookmarks", self._list_bookmarks)
        r.add_post(f"{API}/devices/{{deviceId}}/bookmarks", self._create_bookmark)
        r.add_get(f"{API}/devices/{{deviceId}}/bookmarks/{{id}}", self._get_bookmark)
        r.add_patch(f"{API}/devices/{{deviceId}}/bookmarks/{{id}}", self._patch_bookmark)
        r.add_post(f"{API}/events/generic", self._generic_event)
        r.add_get(f"{API}/events/log", self._event_log)
        requests = f"{API}/analytics/integrations/*/requests"
        r.add_post(requests, self._integration_request)
        r.add_get(f"{requests}/{{requestId}}", self._get_integration_request)
        r.add_post(f"{requests}/{{requestId}}/approve", self._approve_request)
        r.add_get(f"{API}/analytics/engines/{{id}}", self._get_engine)
        agent = f"{API}/analytics/engines/{{engineId}}/deviceAgents/{{id}}"
        r.add_get(agent, self._device_agent)
        r.add_patch(agent, self._device_agent)
        metadata = f"{API}/analytics/engines/{{id}}/deviceAgents/{{deviceId}}/metadata"
        r.add_post(f"{metadata}/object", functools.partial(self._metadata, self.object_metadata))
        r.add_post(f"{metadata}/event", functools.partial(self._metadata, self.analytics_events))
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0, ssl_context=context)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here when asked for port 0
        assert server is not None and server.sockets
        self._port = int(server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the checks every request goes through ------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        seen = Seen(request.method, request.path, dict(request.query))
        self.seen.append(seen)
        response = await self._handle(request, handler, seen)
        seen.status = response.status
        return response

    async def _handle(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], seen: Seen
    ) -> web.StreamResponse:
        raw = await request.read()
        problems = self._validate(request, raw)
        if problems:
            self.violations.append(f"{request.method} {request.path}: {'; '.join(problems)}")
            status = 404 if any(p.startswith("no such") for p in problems) else 400
            return _error(status, "invalidParameter" if status == 400 else "notFound", "; ".join(problems))
        fault = next((f for f in self.faults if f.remaining > 0 and f.matches(request)), None)
        if fault is not None:
            fault.remaining -= 1
            if fault.kind == "status":
                return _error(fault.status, "serviceUnavailable", "injected failure")
            if fault.kind == "hang":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._released.wait(), 60)
                return _error(503, "serviceUnavailable", "hung")
        if not self._public(request):
            token = self._bearer(request)
            seen.authorized_with = token
            expiry = self.sessions.get(token or "")
            if self.reject_all_tokens or expiry is None or time.monotonic() >= expiry:
                self.sessions.pop(token or "", None)
                return _error(401, "unauthorized", "Session expired or invalid. Please log in again.")
        response = await handler(request)
        # The spec documents only the success reply (as "default"), so errors have nothing to be checked against; nor
        # can it describe a reply trimmed by `_with` (its required fields go): such handlers check the full one.
        checkable = response.status < 300 and not self.wrap_lists and "_with" not in request.query
        if isinstance(response, web.Response) and checkable:
            self._validate_response(request, raw, response)
        if fault is not None and fault.kind == "lose_reply":
            if fault.how == "502":
                return _error(502, "badGateway", "the reply was lost on the way back")
            assert request.transport is not None
            request.transport.close()  # the write happened; the client only sees the connection drop
        return response

    @staticmethod
    def _public(request: web.Request) -> bool:
        # the spec: "Authorization is not required" for creating and deleting a session, and for registering
        registering = request.method == "POST" and request.path == f"{API}/analytics/integrations/*/requests"
        return request.path.startswith(f"{API}/login/sessions") or registering

    @staticmethod
    def _bearer(request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else None

    def _openapi_request(self, request: web.Request, raw: bytes) -> Any:
        from openapi_core.contrib.aiohttp import AIOHTTPOpenAPIWebRequest

        return AIOHTTPOpenAPIWebRequest(request, body=raw or None)

    def _validate(self, request: web.Request, raw: bytes) -> list[str]:
        """What the spec finds wrong with this request (empty: valid)."""
        from openapi_core.templating.paths.exceptions import PathError

        oreq = self._openapi_request(request, raw)
        try:
            self._api.validate_request(oreq)
        except PathError as exc:
            return [f"no such operation in the Nx spec: {exc}"]
        except Exception as exc:  # openapi-core's validation errors share no useful base class
            return [_describe(exc)]
        return self._unknown_fields(oreq, raw)

    def _unknown_fields(self, oreq: Any, raw: bytes) -> list[str]:
        """Body fields the operation's schema does not name: Nx ignores them, so a typo would pass silently."""
        if not raw:
            return []
        spec = _raw_spec(spec_path())
        template = _path_template(spec, oreq.path, oreq.method)
        if template is None:
            return []
        schema = (
            spec["paths"][template][oreq.method].get("requestBody", {}).get("content", {}).get("application/json", {})
        ).get("schema", {})
        props = schema.get("properties")
        body = json.loads(raw)
        if not isinstance(props, dict) or not isinstance(body, dict) or "additionalProperties" in schema:
            return []
        extra = sorted(set(body) - set(props))
        return [f"body field(s) not in the spec: {', '.join(extra)}"] if extra else []

    def _validate_response(self, request: web.Request, raw: bytes, response: web.Response) -> None:
        from openapi_core.contrib.aiohttp import AIOHTTPOpenAPIWebResponse

        try:
            self._api.validate_response(self._openapi_request(request, raw), AIOHTTPOpenAPIWebResponse(response))
        except Exception as exc:  # as above: recorded, and tests assert there are none
            self.response_violations.append(f"{request.method} {request.path}: {_describe(exc)}")

    def _list(self, items: list[dict[str, Any]]) -> web.Response:
        return web.json_response({"reply": items} if self.wrap_lists else items)

    # -- the product --------------------------------------------------------------------------------------------

    async def _login(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.logins += 1
        integration = self.integration_users.get(body.get("username", ""))
        if integration is not None and body.get("password") == integration[0]:
            if not (self.integration_login_before_approval or self.integration_requests[integration[1]]["isApproved"]):
                return _error(401, "unauthorized", "The integration is not approved yet.")
        elif body.get("username") != self.username or body.get("password") != self.password:
            return _error(401, "unauthorized", "Wrong user name or password.")
        lifetime = self.token_lifetime_s
        if "durationS" in body and str(body["durationS"]).isdigit():
            lifetime = min(lifetime, max(5, int(body["durationS"])))
        token = "vms-" + secrets.token_hex(16)
        self.sessions[token] = time.monotonic() + lifetime
        return web.json_response(
            {"id": str(uuid.uuid4()), "username": body["username"], "token": token, "ageS": 0, "expiresInS": lifetime}
        )

    async def _logout(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        if token in ("-", "current"):
            token = self._bearer(request) or ""
        self.sessions.pop(token, None)
        return web.Response(status=200)

    async def _devices(self, request: web.Request) -> web.Response:
        items = [
            {"id": i, "physicalId": f"92-61-00-00-{n:02X}-9F", "url": f"192.168.0.{n}", "typeId": _ONVIF_TYPE,
             "name": name, "serverId": self.server_id, "vendor": "Emulated", "model": "NX-EMU"}
            for n, (i, name) in enumerate(self.devices.items(), start=10)
        ]  # fmt: skip
        with_ = request.query.get("_with")
        if with_:
            self._validate_response(request, b"", web.json_response(items))
            keep = set(with_.split(","))
            items = [{k: v for k, v in d.items() if k in keep} for d in items]
        return self._list(items)

    def _device_or_404(self, request: web.Request) -> str | web.Response:
        device = request.match_info["deviceId"].strip("{}").lower()
        if device not in self.devices:
            return _error(404, "notFound", f"Device '{request.match_info['deviceId']}' not found")
        return device

    async def _create_bookmark(self, request: web.Request) -> web.Response:
        device = self._device_or_404(request)
        if isinstance(device, web.Response):
            return device
        body = await request.json()
        try:
            duration = int(body["durationMs"])
            start = int(body.get("startTimeMs", int(time.time() * 1000)))
        except ValueError:
            return _error(400, "invalidParameter", "startTimeMs and durationMs must be integers")
        now = int(time.time() * 1000)
        bookmark = {
            "id": f"{uuid.uuid4()}_{self.server_id}",
            "deviceId": device,
            "name": body["name"],
            "description": body.get("description", ""),
            "startTimeMs": start,
            "durationMs": duration,
            "tags": list(body.get("tags", [])),
            "creatorUserId": self.user_id,
            "creationTimeMs": now,
        }
        self.bookmarks[bookmark["id"]] = bookmark
        return web.json_response(bookmark)

    async def _list_bookmarks(self, request: web.Request) -> web.Response:
        device = self._device_or_404(request)
        if isinstance(device, web.Response):
            return device
        text = request.query.get("text")
        try:
            items = [b for b in self.bookmarks.values() if b["deviceId"] == device and (not text or _matches(text, b))]
        except ValueError as exc:
            return _error(400, "invalidParameter", str(exc))
        items.sort(key=lambda b: b["startTimeMs"], reverse=request.query.get("order") == "desc")
        if "limit" in request.query:
            items = items[: int(request.query["limit"])]
        return self._list(items)

    def _bookmark_or_404(self, request: web.Request) -> dict[str, Any] | web.Response:
        device = self._device_or_404(request)
        if isinstance(device, web.Response):
            return device
        bookmark = self.bookmarks.get(request.match_info["id"])
        if bookmark is None or bookmark["deviceId"] != device:
            return _error(404, "notFound", f"Bookmark '{request.match_info['id']}' not found")
        return bookmark

    async def _get_bookmark(self, request: web.Request) -> web.Response:
        bookmark = self._bookmark_or_404(request)
        return bookmark if isinstance(bookmark, web.Response) else web.json_response(bookmark)

    async def _patch_bookmark(self, request: web.Request) -> web.Response:
        bookmark = self._bookmark_or_404(request)
        if isinstance(bookmark, web.Response):
            return bookmark
        body = await request.json()
        for key in ("name", "description", "tags"):
            if key in body:
                bookmark[key] = body[key]
        try:
            for key in ("startTimeMs", "durationMs"):
                if key in body:
                    bookmark[key] = int(body[key])
        except ValueError:
            return _error(400, "invalidParameter", "startTimeMs and durationMs must be integers")
        return web.json_response(bookmark)

    async def _generic_event(self, request: web.Request) -> web.Response:
        body = await request.json()
        unknown = [d for d in body.get("deviceIds", []) if d.strip("{}").lower() not in self.devices]
        if unknown:
            return _error(400, "invalidParameter", f"Unknown device ids: {', '.join(unknown)}")
        stamp = body.get("timestamp", "now")
        received = int(time.time() * 1000)
        at = int(stamp) if stamp.isdigit() else received
        self.events.append({**body, "receivedMs": received, "timestampMs": at})
        return web.Response(status=200)

    async def _event_log(self, request: web.Request) -> web.Response:
        q = request.query
        start = int(q.get("startTimeMs", "0"))
        end = start + int(q["durationMs"]) if "durationMs" in q else None
        text = q.get("text")
        out = []
        for e in self.events:
            data = {"type": "nx.events.generic", **{k: e[k] for k in ("source", "caption", "description") if k in e}}
            data["deviceIds"] = json.dumps(e.get("deviceIds", []))
            if e["timestampMs"] < start or (end is not None and e["timestampMs"] > end):
                continue
            if text and not any(text in str(v) for v in data.values()):
                continue
            out.append({"timestampMs": e["timestampMs"], "eventData": data, "actionData": {}})
        return self._list(out)

    # -- the REST-only analytics integration ----------------------------------------------------------------------

    async def _integration_request(self, request: web.Request) -> web.Response:
        body = await request.json()
        rid, username, password = str(uuid.uuid4()), f"integration-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
        self.integration_requests[rid] = {**body, "requestId": rid, "timestampMs": int(time.time() * 1000),
                                          "requestAddress": HOST, "isApproved": False}  # fmt: skip
        self.integration_users[username] = (password, rid)
        return web.json_response({"requestId": rid, "username": username, "password": password})

    def _request_or_404(self, request: web.Request) -> dict[str, Any] | web.Response:
        req = self.integration_requests.get(request.match_info["requestId"])
        return _error(404, "notFound", "No such integration request") if req is None else req

    async def _get_integration_request(self, request: web.Request) -> web.Response:
        req = self._request_or_404(request)
        return req if isinstance(req, web.Response) else web.json_response(req)

    async def _approve_request(self, request: web.Request) -> web.Response:
        req = self._request_or_404(request)
        if isinstance(req, web.Response):
            return req
        self.approve(req["requestId"])
        return web.Response(status=200)

    async def _get_engine(self, request: web.Request) -> web.Response:
        engine = self.engines.get(request.match_info["id"])
        return _error(404, "notFound", "No such engine") if engine is None else web.json_response(engine)

    async def _device_agent(self, request: web.Request) -> web.Response:
        engine, device = request.match_info["engineId"], request.match_info["id"].strip("{}").lower()
        if engine not in self.engines or device not in self.devices:
            return _error(404, "notFound", "No such engine or device")
        if request.method == "PATCH":
            self.device_agents[(engine, device)] = bool((await request.json())["isEnabled"])
        enabled = self.device_agents.get((engine, device), False)
        return web.json_response({"id": device, "engineId": engine, "isEnabled": enabled})

    async def _metadata(self, into: list[dict[str, Any]], request: web.Request) -> web.Response:
        engine, device = request.match_info["id"], request.match_info["deviceId"].strip("{}").lower()
        if engine not in self.engines or device not in self.devices:
            return _error(404, "notFound", "No such engine or device")
        if not self.device_agents.get((engine, device)):
            return _error(400, "invalidParameter", "The Device Agent is disabled on this device")
        into.append({**await request.json(), "engineId": engine, "deviceId": device})
        return web.Response(status=200)


_ONVIF_TYPE = "1b7181ce-0227-d3f7-9443-c86aab922d96"  # the spec's example driver id
_TAG_TOKEN = re.compile(r'"([^"]*)"|(\S+)')


def _matches(text: str, bookmark: dict[str, Any]) -> bool:
    """The bookmark list's `text` filter as the spec describes it: `^"a" AND "b"$` for exact tags, else words."""
    text = text.strip()
    tags = set(bookmark.get("tags", []))
    if text.startswith("^") and text.endswith("$"):
        words, ops = [], set()
        for quoted, bare in _TAG_TOKEN.findall(text[1:-1]):
            if bare in ("AND", "OR"):
                ops.add(bare)
            else:
                words.append(quoted or bare)
        if len(ops) > 1:
            raise ValueError("AND and OR cannot be mixed in an exact tag filter")
        return any(w in tags for w in words) if ops == {"OR"} else all(w in tags for w in words)
    fields = [bookmark.get("name", ""), bookmark.get("description", ""), *tags]
    return any(
        all(any(word in f for f in fields) for word in group.split()) for group in text.split(" OR ") if group.strip()
    )


@functools.cache
def _raw_spec(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _path_template(spec: dict[str, Any], path: str, method: str) -> str | None:
    """The spec's path template matching a concrete path (literal segments first, as openapi-core does)."""
    parts = path.strip("/").split("/")
    best = None
    for template, ops in spec["paths"].items():
        if method not in ops:
            continue
        tparts = template.strip("/").split("/")
        if len(tparts) != len(parts):
            continue
        if all(t == p or (t.startswith("{") and t.endswith("}")) for t, p in zip(tparts, parts, strict=True)):
            literal = sum(1 for t in tparts if not t.startswith("{"))
            if best is None or literal > best[0]:
                best = (literal, template)
    return None if best is None else best[1]


def _describe(exc: BaseException) -> str:
    """openapi-core's error with the schema errors under it (they name the field)."""
    parts = [f"{type(exc).__name__}: {exc}"]
    cause = exc.__cause__
    while cause is not None:
        errors = getattr(cause, "schema_errors", None)
        if errors:
            parts.extend(getattr(e, "message", str(e)) for e in errors)
        else:
            parts.append(str(cause))
        cause = cause.__cause__
    return " | ".join(parts)
