"""Webhook sink: HTTP POST of the incident JSON, with the delivery key as Idempotency-Key header."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from plugin.config import WebhookSinkConfig
from plugin.redact import redact_url
from plugin.sinks import Receipt, SinkAuthError, SinkHealth, SinkNotReady, SinkRejected

SINK_KEY = "webhook"


class WebhookSink:
    """POST {"delivery_key": ..., "incident": {...}} to a URL; 2xx = delivered."""

    kind = SINK_KEY

    def __init__(self, config: WebhookSinkConfig) -> None:
        self.config = config
        self.id = config.id
        self.health = SinkHealth()
        self._session: aiohttp.ClientSession | None = None

    def _session_(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout_s))
        return self._session

    async def publish(self, delivery_key: str, incident: Mapping[str, Any]) -> Receipt:
        """One POST; status codes map to delivered / auth / retry / rejected."""
        body = json.dumps({"delivery_key": delivery_key, "incident": dict(incident)})
        headers = {"Content-Type": "application/json", "Idempotency-Key": delivery_key, **self.config.headers}
        where = redact_url(self.config.url)
        try:
            async with self._session_().post(self.config.url, data=body, headers=headers) as resp:
                text = (await resp.text())[:200]
                if 200 <= resp.status < 300:
                    return Receipt(f"HTTP {resp.status}")
                if resp.status in (401, 403):
                    raise SinkAuthError(f"{where}: HTTP {resp.status} {text}")
                if resp.status in (408, 425, 429) or resp.status >= 500:
                    raise SinkNotReady(f"{where}: HTTP {resp.status} {text}")
                raise SinkRejected(f"{where}: HTTP {resp.status} {text}")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise SinkNotReady(f"{where}: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
