"""Cross-object checks of the whole config, each a named function the root validator calls: a reference to a camera,
zone, rule or panel that does not exist names the exact key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from plugin.config.access import AccessConfig
from plugin.config.alarms import AlarmPanelConfig
from plugin.config.base import PathError, require_unique
from plugin.config.cameras import CameraConfig
from plugin.config.occupancy import StoreOccupancyConfig
from plugin.config.pos import PosConfig
from plugin.config.sinks import SinkConfigBase
from plugin.rules.base import RuleBase
from plugin.rules.line_crossing import LineCrossingRuleConfig
from plugin.rules.staff_only import StaffOnlyRuleConfig


class Config(Protocol):
    """What the checks read of the whole config (plugin/config/root.py's model, which calls them)."""

    @property
    def cameras(self) -> Sequence[CameraConfig]:
        """The cameras."""
        ...

    @property
    def rules(self) -> Sequence[RuleBase]:
        """The rules."""
        ...

    @property
    def sinks(self) -> Sequence[SinkConfigBase]:
        """The sinks."""
        ...

    @property
    def pos(self) -> PosConfig | None:
        """The point of sale section."""
        ...

    @property
    def access(self) -> AccessConfig | None:
        """The access-control section."""
        ...

    @property
    def alarm_panels(self) -> Sequence[AlarmPanelConfig]:
        """The alarm panels."""
        ...

    @property
    def store_occupancy(self) -> Sequence[StoreOccupancyConfig]:
        """The store occupancy counts."""
        ...

    def camera(self, camera_id: str) -> CameraConfig:
        """The camera with this id."""
        ...


def verify_pos_lanes(config: Config) -> None:
    """Every POS lane names a camera that exists and zones of that camera."""
    if config.pos is None:
        return
    zones = {c.id: {z.id for z in c.zones} for c in config.cameras}
    for i, lane in enumerate(config.pos.lanes):
        where = f"pos.lanes[{i}]"
        if lane.camera not in zones:
            known = ", ".join(sorted(zones)) or "none"
            raise PathError(f"{where}.camera", f"unknown camera {lane.camera!r} (cameras: {known})")
        for key in ("customer_zone", "staff_zone"):
            zone = getattr(lane, key)
            if zone is not None and zone not in zones[lane.camera]:
                known = ", ".join(sorted(zones[lane.camera])) or "none"
                raise PathError(f"{where}.{key}", f"camera {lane.camera!r} has no zone {zone!r} (zones: {known})")


def verify_access_doors(config: Config) -> None:
    """Every door names a camera that exists, a line_crossing rule on that camera, a zone of it, and an ONVIF
    device with events."""
    if config.access is None:
        return
    cameras = {c.id: c for c in config.cameras}
    for i, door in enumerate(config.access.doors):
        where = f"access.doors[{i}]"
        if door.camera not in cameras:
            known = ", ".join(sorted(cameras)) or "none"
            raise PathError(f"{where}.camera", f"unknown camera {door.camera!r} (cameras: {known})")
        lines = sorted(r.id for r in config.rules if isinstance(r, LineCrossingRuleConfig) and r.camera == door.camera)
        rule = next((r for r in config.rules if r.id == door.line_rule), None)
        if rule is None:
            known = ", ".join(lines) or "none"
            raise PathError(
                f"{where}.line_rule", f"unknown rule {door.line_rule!r} (line_crossing rules on {door.camera}: {known})"
            )
        if not isinstance(rule, LineCrossingRuleConfig):
            raise PathError(f"{where}.line_rule", f"rule {rule.id!r} is a {rule.type} rule, not line_crossing")
        if rule.camera != door.camera:
            raise PathError(f"{where}.line_rule", f"rule {rule.id!r} is on camera {rule.camera!r}, not {door.camera!r}")
        zones = {z.id for z in cameras[door.camera].zones}
        if door.zone is not None and door.zone not in zones:
            known = ", ".join(sorted(zones)) or "none"
            raise PathError(f"{where}.zone", f"camera {door.camera!r} has no zone {door.zone!r} (zones: {known})")
        if door.onvif is not None:
            device = door.onvif.camera or door.camera
            cam = cameras.get(device)
            if cam is None:
                known = ", ".join(sorted(cameras)) or "none"
                raise PathError(f"{where}.onvif.camera", f"unknown camera {device!r} (cameras: {known})")
            if cam.onvif is None or cam.onvif.events is None or not cam.onvif.events.enabled:
                raise PathError(
                    f"{where}.onvif.camera", f"camera {device!r} has no onvif.events: its door events are not read"
                )


def verify_store_occupancy(config: Config) -> None:
    """Store occupancy ids are unique and no rule's (incidents and insights are keyed by it); each line names a
    line_crossing rule."""
    rules = {r.id: r for r in config.rules}
    lines = ", ".join(sorted(r.id for r in config.rules if isinstance(r, LineCrossingRuleConfig))) or "none"
    seen: set[str] = set()
    for i, store in enumerate(config.store_occupancy):
        where = f"store_occupancy[{i}]"
        if store.id in seen:
            raise PathError(f"{where}.id", f"duplicate id {store.id!r}")
        if store.id in rules:
            raise PathError(f"{where}.id", f"{store.id!r} is also a rule id: insights and incidents need it unique")
        seen.add(store.id)
        for k, line in enumerate(store.lines):
            rule = rules.get(line)
            if rule is None:
                raise PathError(f"{where}.lines[{k}]", f"unknown rule {line!r} (line_crossing rules: {lines})")
            if not isinstance(rule, LineCrossingRuleConfig):
                raise PathError(f"{where}.lines[{k}]", f"rule {line!r} is a {rule.type} rule, not line_crossing")


def verify_sink_camera_maps(config: Config) -> None:
    """A VMS sink's camera map names only cameras this config has."""
    known = {c.id for c in config.cameras}
    for i, sink in enumerate(config.sinks):
        for cam in sink.camera_refs():
            if cam not in known:
                names = ", ".join(sorted(known)) or "none"
                raise PathError(f"sinks[{i}].cameras.{cam}", f"unknown camera {cam!r} (cameras: {names})")


def verify_alarm_panels(config: Config) -> None:
    """Panel ids and listening ports are unique; zone maps name existing camera zones; `armed_by` names a panel."""
    require_unique((p.id for p in config.alarm_panels), "alarm_panels")
    zones = {c.id: {z.id for z in c.zones} for c in config.cameras}
    listening: dict[tuple[str, int, str], str] = {}
    for i, panel in enumerate(config.alarm_panels):
        for transport in panel.transports:
            other = listening.setdefault((panel.host, panel.port, transport), panel.id)
            if other != panel.id:
                raise PathError(f"alarm_panels[{i}].port", f"{transport} {panel.port} is taken by panel {other!r}")
        for j, account in enumerate(panel.accounts):
            for panel_zone, views in account.zone_map.items():
                for k, view in enumerate(views):
                    path = f"alarm_panels[{i}].accounts[{j}].zone_map.{panel_zone}[{k}]"
                    if view.camera not in zones:
                        known = ", ".join(sorted(zones)) or "none"
                        raise PathError(f"{path}.camera", f"unknown camera {view.camera!r} (cameras: {known})")
                    if view.zone not in zones[view.camera]:
                        known = ", ".join(sorted(zones[view.camera])) or "none"
                        raise PathError(
                            f"{path}.zone", f"camera {view.camera!r} has no zone {view.zone!r} (zones: {known})"
                        )
    panels = {p.id for p in config.alarm_panels}
    for i, rule in enumerate(config.rules):
        for path, panel_id in rule.panel_refs():
            if panel_id not in panels:
                known = ", ".join(sorted(panels)) or "none"
                raise PathError(f"rules[{i}].{path}", f"unknown alarm panel {panel_id!r} (alarm_panels: {known})")


def verify_rules_reference_cameras_and_zones(config: Config) -> None:
    """Every rule names a camera that exists and only zones of that camera (`zone`, `exit_zone`,
    `high_value_zones[1]`, ...); a staff_only rule needs the camera's staff_zones."""
    zones = {c.id: {z.id for z in c.zones} for c in config.cameras}
    for i, rule in enumerate(config.rules):
        if rule.camera not in zones:
            known = ", ".join(sorted(zones)) or "none"
            raise PathError(f"rules[{i}].camera", f"unknown camera {rule.camera!r} (cameras: {known})")
        for path, zone in rule.zone_refs():
            if zone not in zones[rule.camera]:
                known = ", ".join(sorted(zones[rule.camera])) or "none"
                raise PathError(f"rules[{i}].{path}", f"camera {rule.camera!r} has no zone {zone!r} (zones: {known})")
        if isinstance(rule, StaffOnlyRuleConfig) and not config.camera(rule.camera).staff_zones:
            raise PathError(
                f"rules[{i}].camera",
                f"staff_only needs staff_zones on camera {rule.camera!r}: without them everyone is a customer",
            )
