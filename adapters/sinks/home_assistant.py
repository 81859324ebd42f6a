"""Home Assistant MQTT discovery for the MQTT sink (opt-in): the retained config messages that make each camera's
state, people in view and queues, each store occupancy count, the last incident and StoreSight's own health appear
in Home Assistant as entities, and the live-state topics those entities read.

One Home Assistant device per camera (via the bridge's device) and one for the bridge itself; every entity shares the
bridge's availability topic, which the MQTT will sets to `offline` when the bridge's connection dies.
Discovery topic: `{discovery_prefix}/{component}/{node_id}/{object_id}/config`, node_id `storesight_<site>`."""

from __future__ import annotations

import json
import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import Field, field_validator

from plugin.config.base import Strict
from plugin.protocols import LiveState

AVAILABLE, NOT_AVAILABLE = "online", "offline"
_NOT_AN_ID = re.compile(r"[^a-zA-Z0-9_-]")  # Home Assistant's node_id and object_id: [a-zA-Z0-9_-] only


class HomeAssistantConfig(Strict):
    """Publish Home Assistant MQTT discovery messages, so the store's cameras and counts appear as entities."""

    discovery_prefix: str = Field(
        default="homeassistant", description="Home Assistant's discovery prefix (its MQTT integration's setting)"
    )

    @field_validator("discovery_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or v.startswith(("/", "$")) or v.endswith("/") or any(c in v for c in "+#\x00 "):
            raise ValueError("must be topic levels like homeassistant (no wildcards, spaces, leading $ or /)")
        return v


def ha_id(text: str) -> str:
    """A node_id or object_id Home Assistant accepts."""
    return _NOT_AN_ID.sub("_", text)


def software_version() -> str:
    """StoreSight's version, shown on the devices."""
    try:
        return version("storesight")
    except PackageNotFoundError:
        return "unknown"


class Topics:
    """The topics of one MQTT sink, under its prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.availability = f"{prefix}/availability"
        self.last_incident = f"{prefix}/last_incident"
        self.system = f"{prefix}/system/state"

    def camera_state(self, camera: str) -> str:
        """The camera's latest incident (retained)."""
        return f"{self.prefix}/cameras/{camera}/state"

    def camera_live(self, camera: str) -> str:
        """The camera's health, people in view and queues now (retained)."""
        return f"{self.prefix}/cameras/{camera}/live"

    def store_occupancy(self, occupancy_id: str) -> str:
        """People in the store (or floor) now (retained)."""
        return f"{self.prefix}/store_occupancy/{occupancy_id}"


def live_messages(topics: Topics, state: LiveState) -> dict[str, str]:
    """The live-state topics and their JSON payloads."""
    out = {
        topics.camera_live(c.camera): json.dumps(
            {"state": c.state, "people": c.people, "queues": dict(c.queues)}, sort_keys=True
        )
        for c in state.cameras
    }
    for occupancy_id, people in state.store_occupancy.items():
        out[topics.store_occupancy(occupancy_id)] = json.dumps({"people": people})
    return out


def discovery_messages(config: HomeAssistantConfig, topics: Topics, state: LiveState) -> dict[str, dict[str, Any]]:
    """Every discovery config message (topic -> payload) for the entities of this state."""
    node = ha_id(f"storesight_{state.site}")
    sw = software_version()
    bridge = {
        "identifiers": [node],
        "name": f"StoreSight {state.site_name or state.site}",
        "manufacturer": "StoreSight",
        "model": "StoreSight bridge",
        "sw_version": sw,
    }
    common = {
        "availability_topic": topics.availability,
        "payload_available": AVAILABLE,
        "payload_not_available": NOT_AVAILABLE,
        "origin": {"name": "StoreSight", "sw_version": sw},
    }
    out: dict[str, dict[str, Any]] = {}

    def entity(component: str, object_id: str, device: dict[str, Any], **fields: Any) -> None:
        unique_id = f"{node}_{ha_id(object_id)}"
        topic = f"{config.discovery_prefix}/{component}/{node}/{ha_id(object_id)}/config"
        out[topic] = {**fields, "unique_id": unique_id, "device": device, **common}

    for cam in state.cameras:
        device = {
            "identifiers": [f"{node}_{ha_id(cam.camera)}"],
            "name": f"{cam.camera} (StoreSight)",
            "manufacturer": "StoreSight",
            "model": "analysed camera",
            "via_device": node,
        }
        live, last = topics.camera_live(cam.camera), topics.camera_state(cam.camera)
        entity("sensor", f"{cam.camera}_state", device, name="State", state_topic=live,
               value_template="{{ value_json.state }}", icon="mdi:cctv")  # fmt: skip
        entity("sensor", f"{cam.camera}_people", device, name="People in view", state_topic=live,
               value_template="{{ value_json.people }}", state_class="measurement", unit_of_measurement="people",
               icon="mdi:account-multiple")  # fmt: skip
        for queue in cam.queues:
            entity("sensor", f"{cam.camera}_queue_{queue}", device, name=f"Queue {queue}", state_topic=live,
                   value_template="{{ value_json.queues[" + json.dumps(queue) + "] }}", state_class="measurement",
                   unit_of_measurement="people", icon="mdi:human-queue")  # fmt: skip
        entity("sensor", f"{cam.camera}_last_incident", device, name="Last incident", state_topic=last,
               value_template="{{ value_json.explanation[:255] }}", json_attributes_topic=last,
               icon="mdi:alert-circle-outline")  # fmt: skip
    for occupancy_id in state.store_occupancy:
        entity("sensor", f"occupancy_{occupancy_id}", bridge, name=f"People in {occupancy_id}",
               state_topic=topics.store_occupancy(occupancy_id), value_template="{{ value_json.people }}",
               state_class="measurement", unit_of_measurement="people", icon="mdi:store")  # fmt: skip
    entity("sensor", "last_incident", bridge, name="Last incident", state_topic=topics.last_incident,
           value_template="{{ value_json.explanation[:255] }}", json_attributes_topic=topics.last_incident,
           icon="mdi:alert-circle-outline")  # fmt: skip
    entity("binary_sensor", "problem", bridge, name="Problem", state_topic=topics.system, device_class="problem",
           value_template="{{ 'OFF' if value_json.ok else 'ON' }}", json_attributes_topic=topics.system)  # fmt: skip
    return out
