"""Frigate (HTTP API): the sink's registry entry. Its config is in config.py, the sink in sink.py,
the camera listing in cameras.py."""

from __future__ import annotations

from adapters.sinks.common import SinkSpec
from adapters.sinks.frigate.cameras import list_cameras
from adapters.sinks.frigate.config import FrigateSinkConfig
from adapters.sinks.frigate.sink import FrigateSink

SPEC = SinkSpec(FrigateSinkConfig, FrigateSink, "Frigate", list_cameras)
