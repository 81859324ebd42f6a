"""ZoneMinder (API 2.0): the sink's registry entry. Its config is in config.py, the sink in sink.py,
the camera listing in cameras.py."""

from __future__ import annotations

from adapters.sinks.common import SinkSpec
from adapters.sinks.zoneminder.cameras import list_cameras
from adapters.sinks.zoneminder.config import ZoneMinderSinkConfig
from adapters.sinks.zoneminder.sink import ZoneMinderSink

SPEC = SinkSpec(ZoneMinderSinkConfig, ZoneMinderSink, "ZoneMinder", list_cameras)
