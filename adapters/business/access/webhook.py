"""Door events from access-control software: `POST /api/access/events` with one event, a list, or
{"events": [...]}, each {"door", "kind" (granted, denied, forced, held, closed), "time" (with a UTC offset),
"badge"?, "id"?}. A bad event is reported by its path and the good ones are stored; 202 comes once they are, 400 when
none is good. Badge ids never appear in answers or logs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from adapters.business.pos import load_json, read_body, too_many
from plugin.fusion.access.model import AccessEventIn, DoorEventIntake

log = logging.getLogger(__name__)

SOURCE = "access.webhook"


def _problems(exc: ValidationError, where: str) -> list[str]:
    out = []
    for err in exc.errors():
        path = where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        out.append(f"{path}: {err['msg']}")  # never the input: it may be a badge id
    return out


def events_handler(get_service: Callable[[], DoorEventIntake | None]) -> Any:
    """`POST /api/access/events`."""

    async def handle(request: web.Request) -> web.Response:
        """Validate each event, store the good ones, then answer."""
        service = get_service()
        if service is None:
            return web.json_response({"error": "access control is off: no access section in the config"}, status=404)
        raw = await read_body(request, service.config.max_body_bytes)
        try:
            body = load_json(raw)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if isinstance(body, dict) and set(body) == {"events"}:
            items, where = body["events"], "events"
        elif isinstance(body, dict):
            items, where = [body], ""
        else:
            items, where = body, ""
        if not isinstance(items, list) or not items:
            return web.json_response({"error": 'send a door event object, a list of them, or {"events": [...]}'},
                                     status=400)  # fmt: skip
        limit = service.config.max_events_per_request
        if (refused := too_many(len(items), limit, "door events", "access.max_events_per_request")) is not None:
            return refused
        good: list[AccessEventIn] = []
        errors: list[str] = []
        for i, item in enumerate(items):
            at = f"{where}[{i}]" if len(items) > 1 or where else "body"
            try:
                event = AccessEventIn.model_validate(item)
            except ValidationError as exc:
                errors.extend(_problems(exc, at))
                continue
            if service.config.door(event.door) is None:
                known = ", ".join(d.id for d in service.config.doors)
                errors.append(f"{at}.door: unknown door {event.door!r} (access.doors: {known})")
                continue
            good.append(event)
        new = dup = 0
        for event in good:
            if (await service.submit(event, SOURCE, "webhook")).new:
                new += 1
            else:
                dup += 1
        if errors:
            log.warning("access webhook: rejected %d event(s): %s", len(errors), "; ".join(errors[:5]))
        status = 400 if errors and not good else 202
        return web.json_response({"accepted": new, "duplicates": dup, "rejected": errors}, status=status)

    return handle
