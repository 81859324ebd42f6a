"""MQTT sink (aiomqtt, MQTT v5): each incident state change as JSON, plus a retained per-camera state message.

Topics, under the configured prefix:
- `{prefix}/incidents/{camera}/{rule_id}`: `{"delivery_key": ..., "incident": {...}}`, QoS 1 (or 2), not retained.
- `{prefix}/cameras/{camera}/state`: the camera's latest incident (id, rule, state, explanation, time), retained,
  so a dashboard that subscribes later sees it at once.
- StoreSight's own health (system incidents, camera "system"): the state change goes to
  `{prefix}/incidents/system/{rule_id}` like any incident, and `{prefix}/system/state` is retained with `ok`, the
  conditions open after this change (`open`: `inference_down`, `sink_dead_letters:<sink>`...) and the change itself.
Delivery is at least once (the outbox retries until the broker acknowledges), so a receiver may see a state change
twice; the delivery key is in the body, in the v5 correlation data and in a `delivery_key` user property.

With `home_assistant:` set (adapters/sinks/home_assistant.py) the sink also publishes Home Assistant discovery
configs, the live state the app hands it (`{prefix}/cameras/{camera}/live`, `{prefix}/store_occupancy/{id}`), the
site's latest incident (`{prefix}/last_incident`) and `{prefix}/availability` (`online`; the will says `offline`),
all retained. Live state is best effort, outside the outbox: each state supersedes the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.sinks.common import SinkSpec
from adapters.sinks.home_assistant import (
    AVAILABLE,
    NOT_AVAILABLE,
    HomeAssistantConfig,
    Topics,
    discovery_messages,
    live_messages,
)
from plugin.config.base import literal_key
from plugin.config.sinks import SinkConfigBase
from plugin.errors import SinkAuthError, SinkNotReady, SinkRejected
from plugin.protocols import LiveState, Receipt, SinkHealth, is_system_incident


class MqttSinkConfig(SinkConfigBase):
    """MQTT: each incident state change to `{topic_prefix}/incidents/{camera}/{rule_id}` and the camera's latest
    incident, retained, to `{topic_prefix}/cameras/{camera}/state` (MQTT v5)."""

    kind: Literal["mqtt"]
    host: str = Field(default="127.0.0.1", min_length=1, description="broker host name or address")
    port: int = Field(default=1883, ge=1, le=65535, description="1883 plain; brokers usually take TLS on 8883")
    username: str | None = Field(default=None, min_length=1)
    password: SecretStr | None = Field(default=None, description="never logged; use ${VAR} to keep it out of the file")
    topic_prefix: str = Field(default="storesight", description="first topic level(s), e.g. retail/store-042")
    qos: Literal[1, 2] = Field(
        default=1, description="1: at least once (receivers dedupe by delivery_key); 2 costs two more round trips"
    )
    client_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="default: random, so two bridges never collide"
    )
    tls: bool = Field(default=False, description="TLS with the system's CA certificates")
    keepalive_s: int = Field(
        default=60, ge=5, le=65535, description="ping interval; shorter notices a dead link sooner"
    )
    timeout_s: float = Field(default=10.0, gt=0, description="wait for CONNACK / PUBACK before retrying later")
    home_assistant: HomeAssistantConfig | None = Field(
        default=None,
        description="opt-in: Home Assistant MQTT discovery, so each camera's state, people and queues, the store "
        "occupancy counts and the last incident appear as entities (docs/vms/mqtt.md)",
    )

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or v.startswith(("/", "$")) or v.endswith("/") or "//" in v:
            raise ValueError("must be topic levels like storesight or retail/store-042 (no leading $ or /)")
        if any(c in v for c in "+#\x00") or any(c.isspace() for c in v):
            raise ValueError("must not contain MQTT wildcards (+ #), spaces or NUL")
        return v

    @model_validator(mode="after")
    def _password_needs_username(self) -> MqttSinkConfig:
        if self.password is not None and self.username is None:
            raise ValueError("password is set without username (MQTT sends a password only with a user name)")
        return self


log = logging.getLogger(__name__)

T = TypeVar("T")

# CONNACK reason codes (MQTT v5; paho maps the v3.1.1 return codes 4 and 5 onto 134 and 135) that mean the broker
# refuses these credentials: retrying will not help until an admin changes the config or the broker's user list.
AUTH_REFUSED = {
    134: "bad user name or password",
    135: "not authorised",
    138: "banned",
    140: "bad authentication method",
}
# PUBACK reason codes that no retry can fix: the message itself is wrong for this broker.
PUBLISH_REJECTED = {144: "topic name invalid", 149: "packet too large", 153: "payload format invalid"}
# Characters that would turn a topic level into a wildcard or an extra level.
_BAD_LEVEL_CHARS = frozenset("/+#\x00")


class _Client(aiomqtt.Client):
    """aiomqtt's client, keeping the failure reason codes of PUBACKs, which aiomqtt 2.x drops.

    A broker that refuses a QoS 1 publish (mosquitto answers an ACL denial with PUBACK "Not authorized") still
    acknowledges it; without this the sink would call the delivery done and the incident would be lost. paho
    ignores the reason code of a QoS 2 PUBREC, so with qos 2 such a refusal still goes unnoticed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused: list[ReasonCode] = []

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Properties
    ) -> None:
        if reason_code.is_failure:
            self.refused.append(reason_code)
        super()._on_publish(client, userdata, mid, reason_code, properties)


@dataclass
class _Connection:
    """One connected client and the task that finishes when its link to the broker drops."""

    client: _Client
    lost: asyncio.Task[None]


async def _until_lost(client: aiomqtt.Client) -> None:
    # The sink never subscribes, so the message iterator yields nothing and only ends (with MqttError) when the
    # connection drops: aiomqtt's public way to notice a broker that went away while we were idle.
    with contextlib.suppress(aiomqtt.MqttError):
        async for _ in client.messages:
            pass


def _level(value: Any, what: str) -> str:
    """A topic level from an incident field; anything that would change the topic's shape is rejected."""
    text = str(value) if value is not None else ""
    if not text or _BAD_LEVEL_CHARS & set(text):
        raise SinkRejected(f"incident {what} {value!r} cannot be an MQTT topic level")
    return text


def _order(incident: Mapping[str, Any]) -> tuple[datetime, int]:
    """When this state change happened (end, else start) and its sequence: the order of the retained state."""
    at = datetime.fromisoformat(str(incident.get("end") or incident["start"]))
    return at, int(incident.get("seq", 0))


class MqttSink:
    """Publishes incidents to an MQTT broker over one long-lived connection (lazy connect, reconnect on failure)."""

    kind = literal_key(MqttSinkConfig, "kind")

    def __init__(self, config: MqttSinkConfig) -> None:
        self.config = config
        self.id = config.id
        self.health = SinkHealth()
        # Never any credentials in here: it goes into logs, errors and /readyz.
        self.where = f"{'mqtts' if config.tls else 'mqtt'}://{config.host}:{config.port}"
        self._conn: _Connection | None = None
        # One publish (and connect) at a time: a refused PUBACK is then known to answer the publish in flight.
        self._publish_lock = asyncio.Lock()
        self._tls_context: ssl.SSLContext | None = None
        # Latest state change published as retained, per camera: an older delivery retried after a newer one
        # (each outbox row backs off on its own) must not overwrite the camera's state. Kept for this process only.
        self._retained: dict[str, tuple[datetime, int]] = {}
        self.topics = Topics(config.topic_prefix)
        self.wants_live_state = config.home_assistant is not None
        # what this connection has published of discovery and live state: unchanged payloads are not sent again,
        # and a new connection sends them all (a broker restarted without persistence lost its retained messages)
        self._discovered: dict[str, str] = {}
        self._live_sent: dict[str, str] = {}

    def incident_topic(self, camera: str, rule_id: str) -> str:
        """Where each state change of this camera's rule goes."""
        return f"{self.config.topic_prefix}/incidents/{camera}/{rule_id}"

    def state_topic(self, camera: str) -> str:
        """The retained latest-incident topic of one camera."""
        return f"{self.config.topic_prefix}/cameras/{camera}/state"

    def system_topic(self) -> str:
        """The retained topic of StoreSight's own health."""
        return f"{self.config.topic_prefix}/system/state"

    async def publish(self, delivery_key: str, incident: Mapping[str, Any]) -> Receipt:
        """Publish the state change, then the camera's retained state; done once the broker acknowledged both."""
        camera = _level(incident.get("camera"), "camera")
        rule_id = _level(incident.get("rule_id"), "rule_id")
        try:
            order = _order(incident)
        except (KeyError, TypeError, ValueError) as exc:
            raise SinkRejected(f"{self.where}: incident {delivery_key} has no usable start/end/seq: {exc}") from None
        body = json.dumps({"delivery_key": delivery_key, "incident": dict(incident)}).encode()
        topic = self.incident_topic(camera, rule_id)
        async with self._publish_lock:
            conn = await self._connection()
            await self._send(conn, topic, body, delivery_key, retain=False)
            await self._publish_state(conn, camera, rule_id, order, delivery_key, incident)
        return Receipt(f"MQTT {topic}")

    async def _publish_state(
        self,
        conn: _Connection,
        camera: str,
        rule_id: str,
        order: tuple[datetime, int],
        delivery_key: str,
        incident: Mapping[str, Any],
    ) -> None:
        system = is_system_incident(incident)  # camera "system", which the config keeps from real cameras
        previous = self._retained.get(camera)
        if previous is None or order >= previous:
            state: dict[str, Any] = {
                "id": incident.get("id"),
                "rule_id": rule_id,
                "type": incident.get("type"),
                "state": incident.get("state"),
                "severity": incident.get("severity"),
                "zone": incident.get("zone"),
                "explanation": incident.get("explanation"),
                "time": order[0].isoformat(),
                "delivery_key": delivery_key,
            }
            topic = self.state_topic(camera)
            if system:
                details = incident.get("details")
                open_ = details.get("open_conditions") if isinstance(details, Mapping) else None
                names = [str(c) for c in open_] if isinstance(open_, list) else []
                ok = not names if isinstance(open_, list) else incident.get("state") == "end"
                state = {"ok": ok, "open": names, **state}
                topic = self.system_topic()
            await self._send(conn, topic, json.dumps(state).encode(), delivery_key, retain=True)
            self._retained[camera] = order
        if self.wants_live_state and not system:
            # the site's latest incident, one Home Assistant entity for the whole store ("" is no camera id)
            latest = self._retained.get("")
            if latest is None or order >= latest:
                body = {"camera": camera, "rule_id": rule_id, "type": incident.get("type"),
                        "state": incident.get("state"), "severity": incident.get("severity"),
                        "explanation": incident.get("explanation"), "time": order[0].isoformat()}  # fmt: skip
                await self._send(conn, self.topics.last_incident, json.dumps(body).encode(), delivery_key, retain=True)
                self._retained[""] = order

    async def publish_live(self, state: LiveState) -> None:
        """Home Assistant discovery configs for the entities of this state, then the live values that changed."""
        ha = self.config.home_assistant
        if ha is None:
            return
        async with self._publish_lock:
            conn = await self._connection()
            for topic, payload in discovery_messages(ha, self.topics, state).items():
                text = json.dumps(payload, sort_keys=True)
                if self._discovered.get(topic) != text:
                    await self._send(conn, topic, text.encode(), "storesight-discovery", retain=True)
                    self._discovered[topic] = text
            for topic, text in live_messages(self.topics, state).items():
                if self._live_sent.get(topic) != text:
                    await self._send(conn, topic, text.encode(), "storesight-live", retain=True)
                    self._live_sent[topic] = text

    async def self_test(self) -> str:
        """Connect and publish a clearly labelled test message to `{topic_prefix}/test`."""
        key = f"storesight-test:{uuid.uuid4()}"
        topic = f"{self.config.topic_prefix}/test"
        body = json.dumps({"delivery_key": key, "test": True, "message": "StoreSight connection test"}).encode()
        async with self._publish_lock:
            await self._send(await self._connection(), topic, body, key, retain=False)
        return f"published a test message to {topic}"

    def _properties(self, delivery_key: str) -> Properties:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho leaves __init__ unannotated
        props.PayloadFormatIndicator = 1  # UTF-8 text
        props.ContentType = "application/json"
        props.CorrelationData = delivery_key.encode()
        props.UserProperty = [("delivery_key", delivery_key)]
        return props

    async def _send(self, conn: _Connection, topic: str, body: bytes, delivery_key: str, *, retain: bool) -> None:
        conn.client.refused.clear()
        try:
            await self._unless_lost(
                conn,
                conn.client.publish(
                    topic, body, qos=self.config.qos, retain=retain, properties=self._properties(delivery_key)
                ),
            )
        except aiomqtt.MqttError as exc:
            # The link is suspect (refused write, no PUBACK in time, dropped): start afresh on the next attempt.
            # A fresh client also forgets what paho queued for resending, so a retry is the outbox's job alone.
            await self._drop(conn)
            raise SinkNotReady(f"{self.where}: publish to {topic} failed: {exc}") from None
        if conn.client.refused:
            code = conn.client.refused[-1]
            why = f"{self.where}: broker refused the publish to {topic}: {code}"
            if code.value == 135:
                raise SinkAuthError(why + " (the broker's ACL does not let this user write there)")
            if code.value in PUBLISH_REJECTED:
                raise SinkRejected(why)
            raise SinkNotReady(why)

    async def _unless_lost(self, conn: _Connection, call: Awaitable[T]) -> T:
        """Await `call`, but give up at once when the connection drops (instead of waiting out the timeout)."""
        task = asyncio.ensure_future(call)
        try:
            await asyncio.wait({task, conn.lost}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # asyncio.wait leaves its tasks running when the caller is cancelled (the outbox's attempt timeout)
            task.cancel()
            raise
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise aiomqtt.MqttError("connection to the broker lost")
        return task.result()

    async def _connection(self) -> _Connection:
        """The live connection, made (again) when there is none; called under the publish lock."""
        conn = self._conn
        if conn is not None and conn.lost.done():
            log.warning("%s: connection to %s was lost; reconnecting", self.id, self.where)
            await self._drop(conn)
            conn = None
        if conn is None:
            conn = self._conn = await self._connect()
            if self.wants_live_state:
                self._discovered.clear()
                self._live_sent.clear()
                await self._send(conn, self.topics.availability, AVAILABLE.encode(), "storesight-online", retain=True)
        return conn

    async def _connect(self) -> _Connection:
        cfg = self.config
        if cfg.tls and self._tls_context is None:
            # Loading the CA bundle reads files: not on the event loop.
            self._tls_context = await asyncio.to_thread(ssl.create_default_context)
        client = _Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=None if cfg.password is None else cfg.password.get_secret_value(),
            identifier=cfg.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=cfg.keepalive_s,
            timeout=cfg.timeout_s,
            tls_context=self._tls_context,
            # Home Assistant shows the entities unavailable when the bridge's connection dies without a goodbye
            will=aiomqtt.Will(self.topics.availability, NOT_AVAILABLE, qos=1, retain=True)
            if self.wants_live_state
            else None,
        )
        try:
            await client.__aenter__()
        except aiomqtt.MqttCodeError as exc:
            code = getattr(exc.rc, "value", exc.rc)
            if isinstance(code, int) and code in AUTH_REFUSED:
                raise SinkAuthError(f"{self.where}: broker refused the connection: {AUTH_REFUSED[code]}") from None
            raise SinkNotReady(f"{self.where}: broker refused the connection: {exc}") from None
        except aiomqtt.MqttError as exc:
            raise SinkNotReady(f"{self.where}: cannot connect: {exc}") from None
        log.info("%s: connected to %s", self.id, self.where)
        return _Connection(client, asyncio.create_task(_until_lost(client), name=f"mqtt-{self.id}-link"))

    async def _drop(self, conn: _Connection) -> None:
        """Forget a connection: stop watching it and disconnect if it still can."""
        if self._conn is conn:
            self._conn = None
        if not conn.lost.done():
            with contextlib.suppress(aiomqtt.MqttError):
                await conn.client.__aexit__(None, None, None)
        conn.lost.cancel()
        await asyncio.gather(conn.lost, return_exceptions=True)

    async def close(self) -> None:
        """Disconnect cleanly (a DISCONNECT, so the broker does not treat it as a failure)."""
        conn = self._conn
        if conn is None:
            return
        if self.wants_live_state and not conn.lost.done():
            # a clean DISCONNECT does not send the will: say `offline` first (best effort, we are leaving anyway)
            async with self._publish_lock:
                with contextlib.suppress(SinkNotReady, SinkAuthError, SinkRejected):
                    await self._send(conn, self.topics.availability, NOT_AVAILABLE.encode(), "storesight-offline",
                                     retain=True)  # fmt: skip
        if self._conn is not None:
            await self._drop(self._conn)


SPEC = SinkSpec(MqttSinkConfig, lambda config, _refs: MqttSink(config), "MQTT broker")  # keeps no references
