"""Webhook sink: HTTP POST of the incident JSON, with the delivery key as Idempotency-Key header.

With a `secret`, each request is signed: `X-StoreSight-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>">`. Signing the timestamp with the body lets a receiver reject replays outside a tolerance window.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from adapters.sinks.common import SinkSpec
from adapters.sinks.http import HttpClient, raise_for_status
from plugin.config.base import literal_key
from plugin.config.sinks import SinkConfigBase
from plugin.errors import SinkNotReady
from plugin.protocols import Receipt, SinkHealth
from plugin.redact import redact_url


class WebhookSinkConfig(SinkConfigBase):
    """HTTP POST of each incident state change as JSON."""

    kind: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0)
    secret: str | None = Field(
        default=None, min_length=16, description="HMAC-SHA256 key: the receiver checks X-StoreSight-Signature"
    )
    verify_tls: bool = Field(default=True, description="turn off only for a lab; prefer ca_bundle")
    ca_bundle: Path | None = Field(default=None, description="PEM file of CAs to trust (a VMS's self-signed CA)")


SIGNATURE_HEADER = "X-StoreSight-Signature"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header value for a body sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, tolerance_s: float = 300.0, now: float | None = None) -> bool:
    """Receiver side: True when `header` signs `body` with `secret` within the time tolerance."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


class WebhookSink:
    """POST {"delivery_key": ..., "incident": {...}} to a URL; 2xx = delivered."""

    kind = literal_key(WebhookSinkConfig, "kind")

    def __init__(self, config: WebhookSinkConfig) -> None:
        self.config = config
        self.id = config.id
        self.health = SinkHealth()
        self._http = HttpClient(
            config.url, redact_url(config.url), timeout_s=config.timeout_s, verify_tls=config.verify_tls,
            ca_bundle=config.ca_bundle, unreachable=SinkNotReady, follow_redirects=True,
        )  # fmt: skip

    async def publish(self, delivery_key: str, incident: Mapping[str, Any]) -> Receipt:
        """One POST; status codes map to delivered / auth / retry / rejected."""
        body = json.dumps({"delivery_key": delivery_key, "incident": dict(incident)}).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": delivery_key, **self.config.headers}
        if self.config.secret:
            headers[SIGNATURE_HEADER] = sign(self.config.secret, body, int(time.time()))
        reply = await self._http.request("POST", "", what="POST", body=body, headers=headers)
        raise_for_status(reply, self._http.where, 200)
        return Receipt(f"HTTP {reply.status}")

    async def self_test(self) -> str:
        """POST a clearly labelled test message (`"test": true`, its own delivery key) and expect 2xx."""
        key = f"storesight-test:{uuid.uuid4()}"
        receipt = await self.publish(key, {"test": True, "message": "StoreSight connection test"})
        return f"POST {redact_url(self.config.url)}: {receipt.detail}"

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._http.close()


SPEC = SinkSpec(WebhookSinkConfig, lambda config, _refs: WebhookSink(config), "webhook")  # keeps no references
