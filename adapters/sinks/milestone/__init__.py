"""Milestone XProtect: the sink's registry entry. Its config is in config.py, the sink in sink.py,
the camera listing in cameras.py."""

from __future__ import annotations

from adapters.sinks.common import SinkSpec
from adapters.sinks.milestone.cameras import list_cameras
from adapters.sinks.milestone.config import MilestoneSinkConfig
from adapters.sinks.milestone.sink import MilestoneSink

SPEC = SinkSpec(MilestoneSinkConfig, MilestoneSink, "Milestone XProtect", list_cameras)
