"""The whole config file: every section, with the `rules` and `sinks` unions assembled from their registries (a new
rule or sink is one module and one registry line, never an edit here)."""

from __future__ import annotations

import operator
from functools import reduce
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, model_validator

from adapters.sinks.registry import SINKS
from plugin.config.access import AccessConfig
from plugin.config.alarms import AlarmPanelConfig
from plugin.config.base import Strict, require_unique
from plugin.config.cameras import CameraConfig
from plugin.config.occupancy import StoreOccupancyConfig
from plugin.config.pos import PosConfig
from plugin.config.service import (
    DetectorConfig,
    OutboxConfig,
    PoseConfig,
    SiteConfig,
    StorageConfig,
    SystemHealthConfig,
    TritonConfig,
    WebConfig,
)
from plugin.config.sinks import SinkConfigBase
from plugin.config.verify import (
    verify_access_doors,
    verify_alarm_panels,
    verify_pos_lanes,
    verify_rules_reference_cameras_and_zones,
    verify_sink_camera_maps,
    verify_store_occupancy,
)
from plugin.rules.base import RuleBase
from plugin.rules.registry import RULE_CONFIGS

if TYPE_CHECKING:  # type checkers see the bases; pydantic picks the concrete model by its key
    RuleConfig = RuleBase
    SinkConfig = SinkConfigBase
else:
    RuleConfig = Annotated[reduce(operator.or_, RULE_CONFIGS), Field(discriminator="type")]
    SinkConfig = Annotated[reduce(operator.or_, (spec.config for spec in SINKS)), Field(discriminator="kind")]


class Config(Strict):
    """The whole file."""

    site: SiteConfig = Field(default_factory=SiteConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    triton: TritonConfig = Field(default_factory=TritonConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    pose: PoseConfig = Field(default_factory=PoseConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    cameras: list[CameraConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)
    sinks: list[SinkConfig] = Field(default_factory=list)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    system_health: SystemHealthConfig = Field(default_factory=SystemHealthConfig)
    pos: PosConfig | None = Field(default=None, description="point of sale: intake, exceptions, lane cameras")
    alarm_panels: list[AlarmPanelConfig] = Field(
        default_factory=list, description="intrusion alarm panels reporting over SIA DC-09 (verified by video)"
    )
    access: AccessConfig | None = Field(default=None, description="access control: doors, tailgating, door alarms")
    store_occupancy: list[StoreOccupancyConfig] = Field(
        default_factory=list, description="people in the store, fused from the entrance lines' in/out counts"
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        require_unique((c.id for c in self.cameras), "cameras")
        require_unique((r.id for r in self.rules), "rules")
        require_unique((s.id for s in self.sinks), "sinks")
        verify_rules_reference_cameras_and_zones(self)
        verify_sink_camera_maps(self)
        verify_pos_lanes(self)
        verify_alarm_panels(self)
        verify_access_doors(self)
        verify_store_occupancy(self)
        return self

    def camera(self, camera_id: str) -> CameraConfig:
        """The camera with this id."""
        return next(c for c in self.cameras if c.id == camera_id)
