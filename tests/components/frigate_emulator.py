"""A Frigate (0.14+) HTTP API for tests: an aiohttp server on 127.0.0.1 that takes the requests documented in
INTEGRATIONS.md section 5.1 and nothing else, and behaves like the product where the sink depends on it.

Checked on every request (a request that fails a check is answered 400, or 404/405 for an unknown endpoint or
method, and recorded in `violations`; Frigate itself ignores unknown body fields, the emulator does not, so a typo
cannot pass):
- `POST /api/login` `{"user", "password"}` (auth mode only), `GET /api/config`,
  `POST /api/events/<camera>/<label>/create` with the fields of Frigate's `EventsCreateBody` and their types
  (`duration` an integer or null, `score` 0..1, `include_recording` a boolean, `draw.boxes[]` of
  `{"box": [x, y, w, h] fractions, "color"?: [r, g, b], "score"?: percent}`), `PUT /api/events/<id>/end`
  `{"end_time"?: epoch seconds}`, `POST /api/events/<id>/description` `{"description"}`;
- JSON bodies with `Content-Type: application/json`; event ids shaped as Frigate makes them (`<epoch>.<frac>-<6>`).

The product's side: with `auth=True` (port 8971) every call but the login needs the JWT of a login, as a Bearer
header or the `frigate_token` cookie, else 401; a wrong password is 401 `{"message": "Login failed"}`. A camera
Frigate does not have is 404 `{"success": false, "message": "<camera> is not a valid camera."}`. Ending an event id
Frigate never made is answered 200, as Frigate does (recorded in `unknown_ends`). With `descriptions=False` the
description endpoint does not exist (an older Frigate): 404. Events start when the create arrives, less the
camera's pre-capture, as Frigate stamps them.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from components.http_faults import FaultPlan, Seen, drop_connection

HOST = "127.0.0.1"
PRE_CAPTURE_S = 5  # Frigate's default record.events.pre_capture
CREATE_FIELDS = {"source_type", "sub_label", "score", "duration", "include_recording", "draw"}
SUB_LABEL_MAX = 100

_EVENT_ID = re.compile(r"^\d+\.\d+-[a-z0-9]{6}$")
_CREATE = re.compile(r"^/api/events/(?P<camera>[^/]+)/(?P<label>[^/]+)/create$")
_EVENT_OP = re.compile(r"^/api/events/(?P<id>[^/]+)/(?P<op>end|description)$")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_create_body(body: Any) -> list[str]:
    """What Frigate's create body schema (plus the emulator's stricter checks) finds wrong; empty: valid."""
    if not isinstance(body, dict):
        return ["the body must be a JSON object"]
    problems = []
    extra = sorted(set(body) - CREATE_FIELDS)
    if extra:
        problems.append(f"unknown field(s) {', '.join(extra)}")
    for key in ("source_type", "sub_label"):
        if body.get(key) is not None and not isinstance(body[key], str):
            problems.append(f"{key} must be a string")
    if isinstance(body.get("sub_label"), str) and len(body["sub_label"]) > SUB_LABEL_MAX:
        problems.append(f"sub_label is longer than {SUB_LABEL_MAX}")
    score = body.get("score")
    if score is not None and not (_is_number(score) and 0 <= score <= 1):
        problems.append(f"score must be a number 0..1, got {score!r}")
    duration = body.get("duration", 30)
    if duration is not None and not (isinstance(duration, int) and not isinstance(duration, bool) and duration > 0):
        problems.append(f"duration must be a positive integer or null, got {duration!r}")
    if body.get("include_recording") is not None and not isinstance(body["include_recording"], bool):
        problems.append("include_recording must be a boolean")
    if "draw" in body:
        problems.extend(_check_draw(body["draw"]))
    return problems


def _check_draw(draw: Any) -> list[str]:
    if not isinstance(draw, dict) or set(draw) - {"boxes"} or not isinstance(draw.get("boxes", []), list):
        return ['draw must be {"boxes": [...]}']
    problems = []
    for i, item in enumerate(draw.get("boxes", [])):
        where = f"draw.boxes[{i}]"
        if not isinstance(item, dict) or set(item) - {"box", "color", "score"} or "box" not in item:
            problems.append(f'{where} must be {{"box": [x, y, w, h], "color"?, "score"?}}')
            continue
        box = item["box"]
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) and 0 <= v <= 1 for v in box)):
            problems.append(f"{where}.box must be four fractions 0..1 (x, y, width, height), got {box!r}")
        elif box[0] + box[2] > 1 + 1e-9 or box[1] + box[3] > 1 + 1e-9 or box[2] <= 0 or box[3] <= 0:
            problems.append(f"{where}.box {box!r} is not x, y, width, height inside the frame")
        color = item.get("color")
        if color is not None and not (
            isinstance(color, list) and len(color) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in color)
        ):
            problems.append(f"{where}.color must be three integers 0..255")
        score = item.get("score")
        if score is not None and not (_is_number(score) and 0 <= score <= 100):
            problems.append(f"{where}.score must be a percentage")
    return problems


def _not_valid(status: int, message: str) -> web.Response:
    return web.json_response({"success": False, "message": message}, status=status)


@dataclass
class FrigateEmulator:
    """Run with `async with FrigateEmulator(...) as frigate:`; `frigate.url` is its base URL (the API is at /api)."""

    cameras: list[str] = field(default_factory=list)
    auth: bool = False  # True: the authenticated port 8971; False: the internal port 5000
    users: dict[str, str] = field(default_factory=lambda: {"storesight": "correct horse battery"})
    session_length_s: int = 86400
    descriptions: bool = True  # False: a Frigate without the description endpoint
    version: str = "0.14.1-f4f3cfa"

    def __post_init__(self) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.ends: list[tuple[str, float]] = []  # (event id, end time) per end request that was done
        self.unknown_ends: list[str] = []
        self.seen: list[Seen] = []
        self.violations: list[str] = []
        self.tokens: dict[str, float] = {}  # JWT -> expiry (epoch)
        self.logins = 0
        self.plan = FaultPlan()
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://{HOST}:{self._port}"

    def count(self, method: str, contains: str, status: int | None = None) -> int:
        """How many requests matched (path contains `contains`, and got `status` if given)."""
        return sum(
            1
            for s in self.seen
            if s.method == method and contains in s.raw_path and (status is None or s.status == status)
        )

    def revoke_tokens(self) -> None:
        """Every JWT stops working (Frigate restarted with a new secret)."""
        self.tokens.clear()

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def __aenter__(self) -> FrigateEmulator:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/{tail:.*}", self._unreachable)
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

    async def _unreachable(self, request: web.Request) -> web.Response:
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
        body: Any = None
        if raw:
            if request.content_type != "application/json":
                return self._violation(request, 400, f"a body with Content-Type {request.content_type!r}")
            try:
                body = json.loads(raw)
            except ValueError:
                return self._violation(request, 400, "the body is not JSON")
        seen.body = body
        route = self._route(request, body)
        if isinstance(route, tuple):
            return self._violation(request, *route)
        fault = self.plan.take(request)
        if fault is not None and fault.kind == "status":
            return _not_valid(fault.status, "injected failure")
        if fault is not None and fault.kind == "hang":
            await self.plan.wait_hung()
            return _not_valid(503, "hung")
        if self.auth and request.path != "/api/login" and not self._authorized(request, seen):
            # what nginx's auth_request answers in front of the API
            return web.Response(status=401, text="<html><head><title>401 Authorization Required</title></head></html>",
                                content_type="text/html")  # fmt: skip
        response = route()
        if fault is not None and fault.kind == "lose_reply":
            drop_connection(request)
        return response

    def _violation(self, request: web.Request, status: int, why: str) -> web.Response:
        self.violations.append(f"{request.method} {request.raw_path}: {why}")
        return _not_valid(status, why)

    def _authorized(self, request: web.Request, seen: Seen) -> bool:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else request.cookies.get("frigate_token")
        expiry = self.tokens.get(token or "")
        seen.user = None if expiry is None else token
        return expiry is not None and time.time() < expiry

    def _route(self, request: web.Request, body: Any) -> Callable[[], web.Response] | tuple[int, str]:
        """The handler for a valid request, or (status, why) for one the documented API does not take."""
        path, method = request.path, request.method
        if request.query_string:
            return 400, "these endpoints take no query parameters"
        if path == "/api/login" and self.auth:
            if method != "POST":
                return 405, "login takes POST"
            if not (isinstance(body, dict) and set(body) == {"user", "password"}):
                return 400, 'login takes {"user", "password"}'
            if not all(isinstance(v, str) for v in body.values()):
                return 400, "user and password must be strings"
            return lambda: self._login(body)
        if path == "/api/config":
            if method != "GET":
                return 405, "config takes GET here"
            return self._config
        if m := _CREATE.match(request.raw_path.partition("?")[0]):
            if method != "POST":
                return 405, "create takes POST"
            problems = check_create_body(body if body is not None else {})
            if problems:
                return 400, "; ".join(problems)
            camera, label = unquote(m["camera"]), unquote(m["label"])
            return lambda: self._create(camera, label, body or {})
        if m := _EVENT_OP.match(path):
            event_id, op = m["id"], m["op"]
            if op == "description" and not self.descriptions:
                return lambda: web.json_response({"detail": "Not Found"}, status=404)
            if method != ("PUT" if op == "end" else "POST"):
                return 405, f"{op} takes {'PUT' if op == 'end' else 'POST'}"
            if not _EVENT_ID.match(event_id):
                return 400, f"{event_id!r} is not a Frigate event id"
            if op == "end":
                if body is not None and not (isinstance(body, dict) and set(body) <= {"end_time"}):
                    return 400, 'end takes {"end_time"?}'
                end_time = (body or {}).get("end_time")
                if end_time is not None and not _is_number(end_time):
                    return 400, "end_time must be epoch seconds"
                return lambda: self._end(event_id, end_time)
            if not (isinstance(body, dict) and set(body) == {"description"}):
                return 400, 'description takes {"description"}'
            if body["description"] is not None and not isinstance(body["description"], str):
                return 400, "description must be a string or null"
            return lambda: self._describe(event_id, body["description"])
        return 404, f"no such endpoint {method} {path} (INTEGRATIONS.md section 5.1)"

    # -- the product --------------------------------------------------------------------------------------------

    def _login(self, body: dict[str, str]) -> web.Response:
        self.logins += 1
        if self.users.get(body["user"]) != body["password"]:
            return web.json_response({"message": "Login failed"}, status=401)
        token = ".".join(secrets.token_urlsafe(16) for _ in range(3))  # shaped like a JWT
        expiry = time.time() + self.session_length_s
        self.tokens[token] = expiry
        response = web.Response(status=200, text="")
        response.set_cookie("frigate_token", token, httponly=True, expires=time.strftime(
            "%a, %d %b %Y %H:%M:%S GMT", time.gmtime(expiry)))  # fmt: skip
        return response

    def _config(self) -> web.Response:
        cams = {name: {"name": name, "enabled": True, "detect": {"width": 1280, "height": 720},
                       "record": {"enabled": True, "events": {"pre_capture": PRE_CAPTURE_S}}}
                for name in self.cameras}  # fmt: skip
        return web.json_response({"version": self.version, "cameras": cams})

    def _create(self, camera: str, label: str, body: dict[str, Any]) -> web.Response:
        if camera not in self.cameras:
            return _not_valid(404, f"{camera} is not a valid camera.")
        now = time.time()
        event_id = f"{now:.6f}-{''.join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(6))}"
        duration = body.get("duration", 30)
        self.events[event_id] = {
            "id": event_id,
            "camera": camera,
            "label": label,
            "sub_label": body.get("sub_label"),
            "score": body.get("score", 0),
            "type": body.get("source_type", "api"),
            "start_time": now - PRE_CAPTURE_S,
            "end_time": None if duration is None else now + duration,
            "has_clip": body.get("include_recording", True) is not False,
            "draw": body.get("draw", {}),
            "description": None,
            "created": now,
        }
        return web.json_response({"success": True, "message": "Successfully created event.", "event_id": event_id})

    def _end(self, event_id: str, end_time: float | None) -> web.Response:
        end = time.time() if end_time is None else float(end_time)
        if event_id in self.events:
            self.events[event_id]["end_time"] = end
            self.ends.append((event_id, end))
        else:
            self.unknown_ends.append(event_id)  # Frigate publishes the end regardless and answers success
        return web.json_response({"success": True, "message": "Event successfully ended."})

    def _describe(self, event_id: str, text: str | None) -> web.Response:
        event = self.events.get(event_id)
        if event is None:
            return _not_valid(404, f"Event {event_id} not found")
        event["description"] = text or None
        message = (
            f"Event {event_id} description set to {text}" if text else f"Event {event_id} description is now blank"
        )
        return web.json_response({"success": True, "message": message})
