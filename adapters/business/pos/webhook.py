"""JSON webhooks from POS systems and middleware: `POST /api/pos/events` with one transaction, a list, or
{"transactions": [...]}, each in the normalised shape (plugin/pos.py `Transaction`: id, lane, type, begin, end,
operator, lines, tenders, total, link, receipt). Times need a UTC offset. A bad transaction is reported by its path
and the good ones are stored; 202 comes once they are."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from adapters.business.pos import load_json, read_body, too_many
from plugin.fusion.pos.model import Transaction, TransactionIntake
from plugin.redact import mask_pans

log = logging.getLogger(__name__)

SOURCE = "pos.webhook"


def _problems(exc: ValidationError, where: str) -> list[str]:
    out = []
    for err in exc.errors():
        path = where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        out.append(mask_pans(f"{path}: {err['msg']}"))  # never the input: it may be a card number
    return out


def events_handler(get_service: Callable[[], TransactionIntake | None]) -> Any:
    """`POST /api/pos/events`."""

    async def handle(request: web.Request) -> web.Response:
        """Validate each transaction, store the good ones, then answer."""
        service = get_service()
        if service is None:
            return web.json_response(
                {"error": "POS intake is off: no pos section in the config (or a one-shot run)"}, status=404
            )
        raw = await read_body(request, service.config.max_document_bytes)
        try:
            body = load_json(raw)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if isinstance(body, dict) and set(body) == {"transactions"}:
            items, where = body["transactions"], "transactions"
        elif isinstance(body, dict):
            items, where = [body], ""
        else:
            items, where = body, ""
        if not isinstance(items, list) or not items:
            return web.json_response(
                {"error": 'send a transaction object, a list of them, or {"transactions": [...]}'}, status=400
            )
        limit = service.config.max_transactions_per_request
        if (refused := too_many(len(items), limit, "transactions", "pos.max_transactions_per_request")) is not None:
            return refused
        good: list[Transaction] = []
        errors: list[str] = []
        for i, item in enumerate(items):
            try:
                good.append(Transaction.model_validate(item))
            except ValidationError as exc:
                errors.extend(_problems(exc, f"{where}[{i}]" if len(items) > 1 or where else "body"))
        new = dup = 0
        for txn in good:
            if (await service.submit(txn, SOURCE)).new:
                new += 1
            else:
                dup += 1
        status = 422 if errors and not good else 202
        return web.json_response({"accepted": new, "duplicates": dup, "rejected": errors}, status=status)

    return handle
