"""MQTT sink against a real mosquitto and a real aiomqtt subscriber: topics and bodies, the retained camera state,
a broker that is down (the outbox retries, nothing is lost), wrong credentials; plus its config."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from components.mqtt import MosquittoBroker, free_port, mosquitto_available, start_mosquitto, write_password_file
from conftest import require

from adapters.sinks.mqtt import SPEC, MqttSink, MqttSinkConfig
from plugin.app import build_sink
from plugin.config.loader import parse_config
from plugin.errors import ConfigError, SinkAuthError, SinkNotReady, SinkRejected
from plugin.incidents.database import AsyncDatabase
from plugin.incidents.documents import incident_to_json
from plugin.incidents.outbox import OutboxWorker
from plugin.metrics import Metrics
from plugin.types import Incident

HOST = "127.0.0.1"
WAIT_S = 15.0  # upper bound for anything to arrive; typical is milliseconds
T0 = datetime(2026, 11, 29, 14, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def broker() -> Iterator[MosquittoBroker]:
    """One anonymous broker for the tests that do not stop it; each test uses its own topic prefix."""
    require(mosquitto_available())
    with start_mosquitto() as b:
        yield b


def sink_config(port: int, prefix: str, **extra: Any) -> MqttSinkConfig:
    """An mqtt sink config for the local broker."""
    return MqttSinkConfig.model_validate(
        {"kind": "mqtt", "id": "mq", "host": HOST, "port": port, "topic_prefix": prefix, "timeout_s": 5, **extra}
    )


def incident(camera: str = "cam1", rule_id: str = "table-dwell", ended: bool = False, **extra: Any) -> Incident:
    """A loitering incident, open or ended."""
    inc = Incident(
        id=extra.pop("id", Incident.new_id()),
        rule_id=rule_id,
        type="loitering",
        camera=camera,
        start=T0,
        state="start",
        seq=0,
        explanation="Person #3 stayed 9 s in zone table (threshold 8 s) on cam1",
        zone="table",
        track_ids=(3,),
        **extra,
    )
    if ended:
        inc = Incident(**{**_fields(inc), "state": "end", "seq": 1, "end": T0 + timedelta(seconds=12)})
    return inc


def _fields(inc: Incident) -> dict[str, Any]:
    return {name: getattr(inc, name) for name in Incident.__dataclass_fields__}


@dataclass
class Received:
    """What a real subscriber got."""

    messages: list[aiomqtt.Message] = field(default_factory=list)

    async def collect(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self.messages.append(message)

    async def until(self, done: Callable[[list[aiomqtt.Message]], bool], what: str) -> list[aiomqtt.Message]:
        """Wait (bounded) until `done(messages)`; fail naming what was expected and what came."""
        deadline = time.monotonic() + WAIT_S
        while not done(self.messages):
            if time.monotonic() > deadline:
                got = [(str(m.topic), m.payload) for m in self.messages]
                raise AssertionError(f"within {WAIT_S:g} s: expected {what}; received {got}")
            await asyncio.sleep(0.02)
        return list(self.messages)


@contextlib.asynccontextmanager
async def subscriber(
    port: int, topic: str, username: str | None = None, password: str | None = None
) -> AsyncIterator[Received]:
    """A real aiomqtt v5 client subscribed (QoS 1) to `topic` on the local broker."""
    async with aiomqtt.Client(
        HOST, port, username=username, password=password, protocol=aiomqtt.ProtocolVersion.V5, timeout=5
    ) as client:
        await client.subscribe(topic, qos=1)
        received = Received()
        task = asyncio.create_task(received.collect(client))
        try:
            yield received
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def body(message: aiomqtt.Message) -> dict[str, Any]:
    """The JSON payload."""
    assert isinstance(message.payload, bytes | str)
    parsed: dict[str, Any] = json.loads(message.payload)
    return parsed


def user_properties(message: aiomqtt.Message) -> dict[str, str]:
    """The v5 user properties as a dict."""
    assert message.properties is not None
    return dict(getattr(message.properties, "UserProperty", []))


def keys_of(messages: list[aiomqtt.Message]) -> list[str]:
    """Delivery keys in the bodies of incident messages."""
    return [body(m)["delivery_key"] for m in messages if "/incidents/" in str(m.topic)]


# --- with a real broker ----------------------------------------------------------------------------------------------


@pytest.mark.mqtt
async def test_incidents_arrive_with_topic_body_and_delivery_key(broker: MosquittoBroker) -> None:
    sink = MqttSink(sink_config(broker.port, "t1/store-042"))
    opened = incident()
    ended = incident(ended=True, id=opened.id)
    async with subscriber(broker.port, "t1/store-042/#") as sub:
        for inc in (opened, ended):
            receipt = await sink.publish(inc.delivery_key, incident_to_json(inc))
            assert receipt.detail == "MQTT t1/store-042/incidents/cam1/table-dwell"
        messages = await sub.until(lambda ms: len(ms) == 4, "two incident and two state messages")
    await sink.close()

    events = [m for m in messages if str(m.topic) == "t1/store-042/incidents/cam1/table-dwell"]
    assert [body(m)["delivery_key"] for m in events] == [opened.delivery_key, ended.delivery_key]
    for message, inc in zip(events, (opened, ended), strict=True):
        assert body(message) == {"delivery_key": inc.delivery_key, "incident": incident_to_json(inc)}
        assert message.qos == 1 and message.retain is False
        assert message.properties is not None
        assert message.properties.CorrelationData == inc.delivery_key.encode()
        assert user_properties(message) == {"delivery_key": inc.delivery_key}
        assert message.properties.ContentType == "application/json"
    assert body(events[1])["incident"]["end"] == "2026-11-29T14:00:12+00:00"

    states = [body(m) for m in messages if str(m.topic) == "t1/store-042/cameras/cam1/state"]
    assert [s["state"] for s in states] == ["start", "end"]
    assert states[-1] == {
        "id": opened.id,
        "rule_id": "table-dwell",
        "type": "loitering",
        "state": "end",
        "severity": "warning",
        "zone": "table",
        "explanation": opened.explanation,
        "time": "2026-11-29T14:00:12+00:00",
        "delivery_key": ended.delivery_key,
    }


@pytest.mark.mqtt
async def test_retained_state_reaches_a_later_subscriber_and_never_goes_back(broker: MosquittoBroker) -> None:
    sink = MqttSink(sink_config(broker.port, "t2"))
    a = incident(camera="cam1")
    a_end = incident(camera="cam1", ended=True, id=a.id)
    b = incident(camera="cam2", rule_id="stockroom-after-hours")
    for inc in (a, a_end, b):
        await sink.publish(inc.delivery_key, incident_to_json(inc))
    # the outbox retried an older state change after the newer one went out: it is delivered again as an event,
    # but the camera's state must stay at the newer one
    await sink.publish(a.delivery_key, incident_to_json(a))
    await sink.close()

    async with subscriber(broker.port, "t2/cameras/+/state") as late:
        messages = await late.until(lambda ms: len(ms) >= 2, "the retained state of cam1 and cam2")
        await asyncio.sleep(0.3)  # anything else retained would have arrived with these
    assert len(late.messages) == 2
    by_topic = {str(m.topic): m for m in messages}
    assert set(by_topic) == {"t2/cameras/cam1/state", "t2/cameras/cam2/state"}
    assert all(m.retain for m in messages)
    cam1, cam2 = body(by_topic["t2/cameras/cam1/state"]), body(by_topic["t2/cameras/cam2/state"])
    assert (cam1["id"], cam1["state"], cam1["delivery_key"]) == (a.id, "end", a_end.delivery_key)
    assert (cam2["id"], cam2["state"], cam2["rule_id"]) == (b.id, "start", "stockroom-after-hours")


def _outbox_rows(database: AsyncDatabase) -> dict[str, tuple[str | None, str | None]]:
    rows = database.sync.conn.execute("SELECT delivery_key, delivered, last_error FROM outbox").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


async def _until_delivered(database: AsyncDatabase, keys: set[str]) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        rows = await database.call(_outbox_rows, database)
        if all(rows[k][0] is not None for k in keys):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"outbox not delivered within {WAIT_S:g} s: {rows}")
        await asyncio.sleep(0.05)


@pytest.mark.mqtt
async def test_broker_down_then_up_outbox_retries_without_loss(tmp_path: Path) -> None:
    require(mosquitto_available())
    port = free_port()
    database = AsyncDatabase(tmp_path / "storesight.db")
    sink = MqttSink(sink_config(port, "t3", timeout_s=30))
    worker = OutboxWorker(database, {"mq": sink}, Metrics())
    first = incident()
    first_end = incident(ended=True, id=first.id)
    running: asyncio.Task[None] | None = None
    try:
        # 1. nothing listens yet: both state changes stay in the outbox with the reason
        for inc in (first, first_end):
            await database.call(database.sync.save, inc, ["mq"])
        with pytest.raises(SinkNotReady, match=f"mqtt://127.0.0.1:{port}: cannot connect"):
            await sink.publish(first.delivery_key, incident_to_json(first))
        # head-of-line: the start fails and waits; its end is not tried before it
        assert await worker.deliver_due() == 1
        rows = await database.call(_outbox_rows, database)
        assert all(delivered is None for delivered, _ in rows.values())
        assert "cannot connect" in (rows[first.delivery_key][1] or "") and rows[first_end.delivery_key][1] is None
        assert sink.health.ok is False and sink.health.auth_failed is False

        # 2. the broker comes up: the outbox's own retries deliver both to a subscriber, in stored order.
        broker = start_mosquitto(port=port)
        try:
            async with subscriber(port, "t3/#") as sub:
                running = asyncio.create_task(worker.run())
                await sub.until(lambda ms: len(keys_of(ms)) >= 2, "both state changes after the broker came up")
                await _until_delivered(database, {first.delivery_key, first_end.delivery_key})
            assert keys_of(sub.messages) == [first.delivery_key, first_end.delivery_key]
            states = [body(m) for m in sub.messages if str(m.topic) == "t3/cameras/cam1/state"]
            assert states and states[-1]["state"] == "end" and states[-1]["delivery_key"] == first_end.delivery_key
            assert sink.health.ok is True
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            running = None
        finally:
            broker.stop()

        # 3. the broker goes away under a connected sink: noticed at once (not after the 30 s PUBACK timeout),
        # then the sink reconnects by itself once the broker is back
        second = incident(camera="cam2")
        await database.call(database.sync.save, second, ["mq"])
        async with asyncio.timeout(10):
            await worker.deliver_due()
        rows = await database.call(_outbox_rows, database)
        assert rows[second.delivery_key][0] is None and rows[second.delivery_key][1]
        assert sink.health.ok is False
        broker = start_mosquitto(port=port)
        try:
            async with subscriber(port, "t3/#") as sub:
                running = asyncio.create_task(worker.run())
                await sub.until(lambda ms: second.delivery_key in keys_of(ms), "the state change stored while down")
                await _until_delivered(database, {second.delivery_key})
            # the retained state of cam1 set before the restart is gone (no persistence); cam2's arrives now
            assert keys_of(sub.messages) == [second.delivery_key]
            assert sink.health.ok is True
        finally:
            broker.stop()
    finally:
        if running is not None:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        await sink.close()
        await database.close()


@pytest.mark.mqtt
async def test_wrong_password_is_an_auth_error_and_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    require(mosquitto_available())
    secret, wrong = "right-horse-battery", "wrong-staple-7781"
    passwords = write_password_file(tmp_path / "passwd", {"storesight": secret})
    with start_mosquitto(password_file=passwords) as broker:
        caplog.set_level(logging.DEBUG)
        inc = incident()
        bad = MqttSink(sink_config(broker.port, "t4", username="storesight", password=wrong))
        with pytest.raises(SinkAuthError, match=r"bad user name or password|not authorised") as err:
            await bad.publish(inc.delivery_key, incident_to_json(inc))
        assert wrong not in str(err.value)

        anonymous = MqttSink(sink_config(broker.port, "t4"))
        with pytest.raises(SinkAuthError):
            await anonymous.publish(inc.delivery_key, incident_to_json(inc))

        # through the outbox: held as an auth failure, shown in health, and the password is nowhere in the logs
        database = AsyncDatabase(tmp_path / "storesight.db")
        try:
            await database.call(database.sync.save, inc, ["mq"])
            await OutboxWorker(database, {"mq": bad}, Metrics()).deliver_due()
            assert bad.health.auth_failed is True and bad.health.ok is False
            assert bad.health.last_error is not None and wrong not in bad.health.last_error
            assert (await database.call(_outbox_rows, database))[inc.delivery_key][0] is None
        finally:
            await database.close()
        assert "authentication failed" in caplog.text
        assert wrong not in caplog.text and secret not in caplog.text

        good = MqttSink(sink_config(broker.port, "t4", username="storesight", password=secret))
        async with subscriber(broker.port, "t4/#", "storesight", secret) as sub:
            await good.publish(inc.delivery_key, incident_to_json(inc))
            await sub.until(lambda ms: keys_of(ms) == [inc.delivery_key], "the delivery with the right password")
        for s in (bad, anonymous, good):
            await s.close()


@pytest.mark.mqtt
async def test_publish_refused_by_the_broker_acl_is_not_a_delivery(tmp_path: Path) -> None:
    require(mosquitto_available())
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite granted/#\n")  # anonymous clients may use granted/... only
    with start_mosquitto(acl_file=acl) as broker:
        inc = incident()
        denied = MqttSink(sink_config(broker.port, "denied"))
        # mosquitto acknowledges the publish with PUBACK "Not authorized" and drops it: that must not count as done
        with pytest.raises(SinkAuthError, match="broker refused the publish to denied/incidents/cam1/table-dwell"):
            await denied.publish(inc.delivery_key, incident_to_json(inc))
        granted = MqttSink(sink_config(broker.port, "granted"))
        async with subscriber(broker.port, "granted/#") as sub:
            await granted.publish(inc.delivery_key, incident_to_json(inc))
            await sub.until(lambda ms: len(ms) == 2, "the event and the state under the granted prefix")
        for s in (denied, granted):
            await s.close()


# --- no broker needed ------------------------------------------------------------------------------------------------


async def test_incident_fields_that_would_change_the_topic_are_rejected() -> None:
    # port 9 (discard) is never contacted: the check happens before connecting
    sink = MqttSink(sink_config(9, "t5"))
    for camera, rule in (("cam/1", "r"), ("cam1", "r+"), ("cam#", "r"), ("", "r")):
        inc = incident_to_json(incident())
        inc.update(camera=camera, rule_id=rule)
        with pytest.raises(SinkRejected, match="cannot be an MQTT topic level"):
            await sink.publish("k:start:0", inc)
    await sink.close()


def test_config_defaults_and_build_sink(tmp_path: Path) -> None:
    config = parse_config({"sinks": [{"kind": "mqtt", "id": "broker"}]})
    mq = config.sinks[0]
    assert isinstance(mq, MqttSinkConfig)
    assert (mq.host, mq.port, mq.topic_prefix, mq.qos, mq.tls, mq.username, mq.password) == (
        "127.0.0.1",
        1883,
        "storesight",
        1,
        False,
        None,
        None,
    )
    sink = build_sink(mq, AsyncDatabase(tmp_path / "refs.db"))
    assert isinstance(sink, MqttSink) and sink.kind == SPEC.key == "mqtt" and sink.id == "broker"
    assert sink.incident_topic("cam1", "r1") == "storesight/incidents/cam1/r1"
    assert sink.state_topic("cam1") == "storesight/cameras/cam1/state"


def test_password_never_shows_in_config_repr_or_sink_address() -> None:
    mq = sink_config(1883, "x", username="u", password="hunter2-very-secret")
    assert "hunter2-very-secret" not in repr(mq) and "hunter2-very-secret" not in str(mq)
    assert mq.password is not None and mq.password.get_secret_value() == "hunter2-very-secret"
    assert MqttSink(mq).where == "mqtt://127.0.0.1:1883"


@pytest.mark.parametrize(
    ("sink", "expected"),
    [
        ({"topic_prefix": "store/#"}, "sinks[0].topic_prefix: must not contain MQTT wildcards"),
        ({"topic_prefix": "/store"}, "sinks[0].topic_prefix: must be topic levels"),
        ({"topic_prefix": "$SYS"}, "sinks[0].topic_prefix: must be topic levels"),
        ({"qos": 0}, "sinks[0].qos: "),
        ({"port": 0}, "sinks[0].port: must be >= 1"),
        ({"password": "p"}, "sinks[0]: password is set without username"),
        ({"topic": "x"}, "sinks[0].topic: unknown key"),
        ({"keepalive_s": 1}, "sinks[0].keepalive_s: must be >= 5"),
    ],
)
def test_bad_mqtt_config_is_named_by_path(sink: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"sinks": [{"kind": "mqtt", "id": "mq", **sink}]}, "store.yaml")
    assert f"store.yaml: {expected}" in str(err.value)
