"""Genetec Security Center (Web SDK): the sink's registry entry. Its config is in config.py, the sink in sink.py,
the camera listing in cameras.py."""

from __future__ import annotations

from adapters.sinks.common import SinkSpec
from adapters.sinks.genetec.cameras import list_cameras
from adapters.sinks.genetec.config import GenetecSinkConfig
from adapters.sinks.genetec.sink import GenetecSink

SPEC = SinkSpec(GenetecSinkConfig, GenetecSink, "Genetec Security Center", list_cameras)
