"""Point-of-sale intake, one module per format: ARTS POSLog XML (poslog), receipt text over TCP (receipt_text), JSON
webhooks (webhook); and the XProtect Transact receipt feed (transact)."""

from __future__ import annotations

from aiohttp import web


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
