"""Point-of-sale intake, one module per format: ARTS POSLog XML (poslog), receipt text over TCP (receipt_text), JSON
webhooks (webhook); and the XProtect Transact receipt feed (transact)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

MAX_JSON_DEPTH = 32  # a transaction nests 4 deep (lines, their fields); the model's validators recurse


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refused with 413 past `limit` bytes before more of it is read."""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        chunks.append(chunk)
    return b"".join(chunks)


def load_json(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON document in `raw`; ValueError with the reason when it is not JSON or nests deeper than `max_depth`
    (deeper documents exhaust the recursion of the decoder and of the validators: an error, never a crash)."""
    try:
        doc = json.loads(raw or b"null")
    except RecursionError:
        raise ValueError(f"body nests deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise ValueError("body is not JSON") from None
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > max_depth:
                raise ValueError(f"body nests deeper than {max_depth} levels")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return doc


def too_many(count: int, limit: int, what: str, key: str) -> web.Response | None:
    """413 when a request carries more than `limit` items (each is validated and answered: the answer is bounded)."""
    if count <= limit:
        return None
    return web.json_response({"error": f"{count} {what} in one request, over the limit of {limit} ({key})"},
                             status=413)  # fmt: skip
