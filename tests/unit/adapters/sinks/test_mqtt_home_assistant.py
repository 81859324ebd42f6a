"""Home Assistant MQTT discovery (opt-in on the MQTT sink), against the real mosquitto: a subscriber that comes later,
as Home Assistant does after a restart, reads the retained discovery configs, checks each against Home Assistant's
documented discovery schema (written out below from its MQTT, MQTT sensor and MQTT binary sensor docs) and renders
each entity's value template against the retained state it points at, as Home Assistant would."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from aiohttp import web
from components.mqtt import MosquittoBroker
from jinja2.sandbox import SandboxedEnvironment
from test_mqtt_sink import HOST, broker, incident, sink_config, subscriber  # noqa: F401  (broker: a fixture)

from adapters.sinks.mqtt import MqttSink
from plugin.app import database_ctx, live_state_ctx, new_app, sinks_ctx, store_occupancy_ctx
from plugin.config.loader import parse_config
from plugin.incidents.documents import incident_to_json
from plugin.protocols import CameraLive, LiveState
from plugin.types import SYSTEM_CAMERA, Incident

pytestmark = pytest.mark.mqtt

# --- Home Assistant's discovery schema, from its documentation (MQTT integration: "MQTT Discovery") ---------------
# <discovery_prefix>/<component>/[<node_id>/]<object_id>/config, ids from [a-zA-Z0-9_-]
TOPIC = re.compile(
    r"^(?P<prefix>[^/]+)/(?P<component>[a-z_]+)/(?:(?P<node>[a-zA-Z0-9_-]+)/)?(?P<object>[a-zA-Z0-9_-]+)/config$"
)
COMPONENTS = {
    "alarm_control_panel", "binary_sensor", "button", "camera", "climate", "cover", "device_automation",
    "device_tracker", "event", "fan", "humidifier", "image", "lawn_mower", "light", "lock", "notify", "number",
    "scene", "select", "sensor", "siren", "switch", "tag", "text", "update", "vacuum", "valve", "water_heater",
}  # fmt: skip
_ENTITY = {
    "availability", "availability_mode", "availability_template", "availability_topic", "device", "device_class",
    "enabled_by_default", "encoding", "entity_category", "entity_picture", "expire_after", "force_update", "icon",
    "json_attributes_template", "json_attributes_topic", "name", "object_id", "default_entity_id", "origin",
    "payload_available", "payload_not_available", "platform", "qos", "state_topic", "unique_id", "value_template",
}  # fmt: skip
KEYS = {
    "sensor": _ENTITY | {"last_reset_value_template", "options", "state_class", "suggested_display_precision",
                         "unit_of_measurement"},
    "binary_sensor": _ENTITY | {"off_delay", "payload_off", "payload_on"},
}  # fmt: skip
REQUIRED = {"sensor": {"state_topic"}, "binary_sensor": {"state_topic"}}
DEVICE_KEYS = {
    "configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model", "model_id", "name",
    "serial_number", "suggested_area", "sw_version", "via_device",
}  # fmt: skip
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}
BINARY_SENSOR_CLASSES = {
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door", "garage_door", "gas", "heat",
    "light", "lock", "moisture", "motion", "moving", "occupancy", "opening", "plug", "power", "presence", "problem",
    "running", "safety", "smoke", "sound", "tamper", "update", "vibration", "window",
}  # fmt: skip


def check_discovery(topic: str, payload: dict[str, Any], discovery_prefix: str) -> str:
    """Assert one discovery message follows the documented schema; its component."""
    m = TOPIC.match(topic)
    assert m, f"{topic}: not <prefix>/<component>/[<node_id>/]<object_id>/config with ids in [a-zA-Z0-9_-]"
    component = m["component"]
    assert m["prefix"] == discovery_prefix and component in COMPONENTS, topic
    assert component in KEYS, f"{topic}: this test knows the keys of sensor and binary_sensor only"
    assert set(payload) <= KEYS[component], f"{topic}: undocumented keys {set(payload) - KEYS[component]}"
    assert REQUIRED[component] <= set(payload), f"{topic}: missing {REQUIRED[component] - set(payload)}"
    device = payload["device"]
    assert payload.get("unique_id"), f"{topic}: a device works only with a unique_id"
    assert set(device) <= DEVICE_KEYS and (device.get("identifiers") or device.get("connections")), topic
    assert set(payload["origin"]) <= ORIGIN_KEYS and payload["origin"]["name"], topic
    if "state_class" in payload:
        assert payload["state_class"] in STATE_CLASSES, topic
    if component == "binary_sensor" and "device_class" in payload:
        assert payload["device_class"] in BINARY_SENSOR_CLASSES, topic
    for key, value in payload.items():
        if key.endswith("_topic"):
            assert isinstance(value, str) and value and not set(value) & set("+#"), f"{topic}: {key}"
    return component


# --- helpers --------------------------------------------------------------------------------------------------------

TEMPLATES = SandboxedEnvironment()  # Home Assistant's templates are Jinja2, value_json the parsed payload


def render(template: str, payload: bytes) -> str:
    """What Home Assistant would show for this value template and payload."""
    return TEMPLATES.from_string(template).render(value_json=json.loads(payload), value=payload.decode())


async def retained(port: int, topics: list[str], quiet_s: float = 0.5) -> dict[str, bytes]:
    """Every retained message under these filters, as a subscriber that connects now receives them (the broker
    sends them at once on subscribing: read until it has been quiet for `quiet_s`)."""
    got: dict[str, bytes] = {}
    async with aiomqtt.Client(HOST, port, protocol=aiomqtt.ProtocolVersion.V5, timeout=5) as client:
        for t in topics:
            await client.subscribe(t, qos=1)
        messages = aiter(client.messages)
        while True:
            try:
                async with asyncio.timeout(quiet_s):
                    message = await anext(messages)
            except TimeoutError:
                return got
            assert message.retain and isinstance(message.payload, bytes), message.topic
            got[str(message.topic)] = message.payload


STATE = LiveState(
    site="store-042",
    site_name="High Street",
    cameras=(
        CameraLive("cam1", "online", 3, {"till-queue": 2}),
        CameraLive("door.cam", "degraded", 1, {}),  # a "." in an id: not allowed in Home Assistant's ids
    ),
    store_occupancy={"shop": 14},
)


def system_incident() -> Incident:
    """StoreSight's own health: Triton down."""
    return Incident(
        id=Incident.new_id(), rule_id="system-inference", type="system_inference_down", camera=SYSTEM_CAMERA,
        start=datetime(2026, 11, 29, 14, 3, tzinfo=UTC), state="start", seq=0, explanation="Analytics stopped",
        details={"open_conditions": ["inference_down"]},
    )  # fmt: skip


# --- the tests ------------------------------------------------------------------------------------------------------


async def test_discovery_configs_follow_home_assistants_schema_and_point_at_values(broker: MosquittoBroker) -> None:
    sink = MqttSink(sink_config(broker.port, "ha1", home_assistant={"discovery_prefix": "hass1"}))
    assert sink.wants_live_state
    await sink.publish_live(STATE)
    alert = incident(camera="cam1")
    await sink.publish(alert.delivery_key, incident_to_json(alert))
    health = system_incident()
    await sink.publish(health.delivery_key, incident_to_json(health))
    await sink.close()

    messages = await retained(broker.port, ["hass1/#", "ha1/#"])
    discovery = {t: json.loads(p) for t, p in messages.items() if t.startswith("hass1/")}
    components = {t: check_discovery(t, p, "hass1") for t, p in discovery.items()}
    unique_ids = [p["unique_id"] for p in discovery.values()]
    assert len(unique_ids) == len(set(unique_ids))
    # the entities the issue asks for: each camera's state, people and queue, store occupancy, the last incident
    by_id = {p["unique_id"]: p for p in discovery.values()}
    wanted = {
        "storesight_store-042_cam1_state", "storesight_store-042_cam1_people",
        "storesight_store-042_cam1_queue_till-queue", "storesight_store-042_cam1_last_incident",
        "storesight_store-042_door_cam_state", "storesight_store-042_door_cam_people",
        "storesight_store-042_occupancy_shop", "storesight_store-042_last_incident", "storesight_store-042_problem",
    }  # fmt: skip
    assert wanted <= set(by_id), sorted(by_id)
    assert components["hass1/binary_sensor/storesight_store-042/problem/config"] == "binary_sensor"
    # each entity's value, rendered from the retained state it reads, as Home Assistant would show it
    shown = {uid: render(p["value_template"], messages[p["state_topic"]])
             for uid, p in by_id.items() if p["state_topic"] in messages}  # fmt: skip
    # door.cam had no incident yet: Home Assistant shows "unknown" until one comes, every other entity has a value
    assert set(by_id) - set(shown) == {"storesight_store-042_door_cam_last_incident"}
    assert shown["storesight_store-042_cam1_state"] == "online"
    assert shown["storesight_store-042_door_cam_state"] == "degraded"
    assert shown["storesight_store-042_cam1_people"] == "3"
    assert shown["storesight_store-042_cam1_queue_till-queue"] == "2"
    assert shown["storesight_store-042_occupancy_shop"] == "14"
    assert shown["storesight_store-042_cam1_last_incident"].startswith("Person #3 stayed 9 s")
    assert shown["storesight_store-042_last_incident"].startswith("Person #3 stayed 9 s")  # the system one is not it
    assert shown["storesight_store-042_problem"] == "ON"  # payload_on's default: Triton is down
    # devices: one per camera, through the bridge's device; availability is offline after a clean close
    cam_device = by_id["storesight_store-042_cam1_state"]["device"]
    assert cam_device["via_device"] == by_id["storesight_store-042_problem"]["device"]["identifiers"][0]
    assert {p["availability_topic"] for p in discovery.values()} == {"ha1/availability"}
    assert messages["ha1/availability"] == b"offline"


async def test_only_what_changed_is_sent_again_and_a_new_connection_sends_all(broker: MosquittoBroker) -> None:
    sink = MqttSink(sink_config(broker.port, "ha2", home_assistant={"discovery_prefix": "hass2"}))
    async with subscriber(broker.port, "ha2/#") as live, subscriber(broker.port, "hass2/#") as configs:
        await sink.publish_live(STATE)
        first = await configs.until(lambda ms: len(ms) >= 9, "the discovery configs")
        await live.until(lambda ms: any(str(m.topic) == "ha2/store_occupancy/shop" for m in ms), "the live values")
        await sink.publish_live(STATE)  # nothing changed: nothing sent
        fewer = LiveState(STATE.site, STATE.site_name, STATE.cameras, {"shop": 13})
        await sink.publish_live(fewer)
        await live.until(lambda ms: [m.payload for m in ms if str(m.topic) == "ha2/store_occupancy/shop"]
                         == [b'{"people": 14}', b'{"people": 13}'], "one message per change")  # fmt: skip
        assert len(configs.messages) == len(first)
        cam1 = [m for m in live.messages if str(m.topic) == "ha2/cameras/cam1/live"]
        assert len(cam1) == 1 and json.loads(cam1[0].payload) == {"state": "online", "people": 3,  # type: ignore[arg-type]
                                                                  "queues": {"till-queue": 2}}  # fmt: skip
        assert [m.payload for m in live.messages if str(m.topic) == "ha2/availability"] == [b"online"]
        # a broker that lost its retained messages gets everything again from the next connection
        await sink.close()
        sink2 = MqttSink(sink_config(broker.port, "ha2", home_assistant={"discovery_prefix": "hass2"}))
        await sink2.publish_live(fewer)
        await configs.until(lambda ms: len(ms) == 2 * len(first), "the discovery configs again")
        await sink2.close()


async def test_without_the_option_nothing_of_it_is_published(broker: MosquittoBroker) -> None:
    sink = MqttSink(sink_config(broker.port, "ha3"))
    assert not sink.wants_live_state
    await sink.publish_live(STATE)
    alert = incident(camera="cam1")
    await sink.publish(alert.delivery_key, incident_to_json(alert))
    await sink.close()
    messages = await retained(broker.port, ["homeassistant/#", "ha3/#"])
    assert set(messages) == {"ha3/cameras/cam1/state"}


async def test_the_app_hands_its_live_state_to_the_sink(broker: MosquittoBroker, tmp_path: Path) -> None:
    """Where the values come from: the app's live_state_ctx reads the cameras and the store occupancy counts (no
    camera runs here: each camera is `starting` with its queue rule at 0, the count carries on from the database)."""
    config = parse_config({
        "site": {"id": "store-7"},
        "storage": {"path": str(tmp_path)},
        "cameras": [{"id": "cam1", "source": "x.mp4", "zones": [{"id": "q", "polygon": [[0, 0], [1, 0], [1, 1]]}]}],
        "rules": [
            {"type": "queue", "id": "till-queue", "camera": "cam1", "zone": "q", "max_length": 4},
            {"type": "line_crossing", "id": "door-in", "camera": "cam1", "line": [[0, 0.5], [1, 0.5]]},
        ],
        "store_occupancy": [{"id": "shop", "lines": ["door-in"]}],
        "sinks": [{"kind": "mqtt", "id": "mq", "host": HOST, "port": broker.port, "topic_prefix": "ha4",
                   "home_assistant": {"discovery_prefix": "hass4"}}],
    })  # fmt: skip
    app = new_app(config)
    app.cleanup_ctx.extend([database_ctx, sinks_ctx, store_occupancy_ctx, live_state_ctx])
    runner = web.AppRunner(app)
    async with subscriber(broker.port, "ha4/#") as live:
        await runner.setup()
        try:
            got = await live.until(
                lambda ms: {"ha4/cameras/cam1/live", "ha4/store_occupancy/shop"} <= {str(m.topic) for m in ms},
                "the app's live state",
            )
        finally:
            await runner.cleanup()
        values = {str(m.topic): json.loads(m.payload) for m in got if str(m.topic) != "ha4/availability"}  # type: ignore[arg-type]
        assert values["ha4/cameras/cam1/live"] == {"state": "starting", "people": 0, "queues": {"till-queue": 0}}
        assert values["ha4/store_occupancy/shop"] == {"people": 0}
        await live.until(lambda ms: ms[-1].payload == b"offline", "offline when the app stops")
