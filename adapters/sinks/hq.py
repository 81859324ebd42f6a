"""The head-office sink (`kind: hq`): the store's incidents, with their evidence JPEG, and its keyed records
(roll-up hours, POS hours, camera health, feedback) pushed to `storesight hq` through the outbox, each as one POST
to /api/ingest with the store's own token. Head office answers a replay of a stored key with 200, so a retry after
a lost reply is harmless; a refused record (4xx) is dead-lettered with head office's reason."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from adapters.sinks.common import SinkSpec
from adapters.sinks.http import HttpClient, raise_for_status
from plugin.config.base import ID_PATTERN, literal_key
from plugin.config.sinks import SinkConfigBase
from plugin.errors import SinkNotReady, SinkRejected
from plugin.protocols import Receipt, SinkHealth
from plugin.redact import redact_url

INCIDENT_FIELDS = ("id", "rule_id", "type", "camera", "zone", "severity", "state", "seq", "start", "end",
                   "explanation", "track_ids", "details")  # fmt: skip


class HqSinkConfig(SinkConfigBase):
    """This store's connection to head office."""

    kind: Literal["hq"]
    url: str = Field(pattern=r"^https?://", description="head office's base URL, e.g. https://hq.example:8090")
    store: str = Field(pattern=ID_PATTERN, description="this store's id at head office (`storesight hq add-store`)")
    token: str = Field(min_length=24, description="this store's token from `storesight hq add-store`")
    timeout_s: float = Field(default=15.0, gt=0)
    snapshot_max_bytes: int = Field(default=2 * 1024 * 1024, ge=0, description="larger evidence is not sent")
    verify_tls: bool = Field(default=True, description="turn off only for a lab; prefer ca_bundle")
    ca_bundle: Path | None = Field(default=None, description="PEM file of CAs to trust")


def _read_snapshot(path: str | None, limit: int) -> str | None:
    if not path:
        return None
    try:
        p = Path(path)
        if not p.is_file() or p.stat().st_size > limit:
            return None
        return base64.b64encode(p.read_bytes()).decode("ascii")
    except OSError:
        return None  # evidence removed by retention: the incident still goes


class HqSink:
    """POST each incident state change and record to head office's /api/ingest."""

    kind = literal_key(HqSinkConfig, "kind")

    def __init__(self, config: HqSinkConfig) -> None:
        self.config = config
        self.id = config.id
        self.health = SinkHealth()
        self._endpoint = config.url.rstrip("/") + "/api/ingest"
        self._http = HttpClient(
            self._endpoint, redact_url(self._endpoint), timeout_s=config.timeout_s, verify_tls=config.verify_tls,
            ca_bundle=config.ca_bundle, unreachable=SinkNotReady, follow_redirects=True,
        )  # fmt: skip

    async def publish(self, delivery_key: str, incident: Mapping[str, Any]) -> Receipt:
        """One incident state change, with the evidence JPEG when the file is still there."""
        data = {k: incident.get(k) for k in INCIDENT_FIELDS}
        data["track_ids"] = list(incident.get("track_ids") or [])
        data["details"] = dict(incident.get("details") or {})
        snapshot = incident.get("snapshot")
        data["snapshot_jpeg"] = await asyncio.to_thread(
            _read_snapshot, str(snapshot) if snapshot else None, self.config.snapshot_max_bytes
        )
        return await self._post(delivery_key, "incident", data)

    async def publish_record(self, delivery_key: str, kind: str, record: Mapping[str, Any]) -> Receipt:
        """One keyed record."""
        return await self._post(delivery_key, kind, dict(record))

    async def _post(self, key: str, kind: str, data: dict[str, Any]) -> Receipt:
        body = json.dumps({"store": self.config.store, "key": key, "kind": kind, "data": data}, default=str).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.config.token}"}
        reply = await self._http.request("POST", "", what="POST", body=body, headers=headers)
        raise_for_status(reply, self._http.where, 300)
        status = reply.data.get("status", "stored") if isinstance(reply.data, dict) else "stored"
        return Receipt(f"HTTP {reply.status} {status}")

    async def self_test(self) -> str:
        """Prove head office knows this store's token without storing anything: an empty incident is refused as
        malformed (422) only after the token and the store id were accepted."""
        try:
            await self._post("storesight-connection-test", "incident", {})
        except SinkRejected as exc:
            if "HTTP 422" in str(exc):
                return f"head office at {redact_url(self.config.url)} accepts store {self.config.store}'s token"
            raise
        raise SinkRejected("head office stored an empty incident: it is not a StoreSight head office")

    async def close(self) -> None:
        """Close the HTTP session."""
        await self._http.close()


SPEC = SinkSpec(HqSinkConfig, lambda config, _refs: HqSink(config), "StoreSight head office")
