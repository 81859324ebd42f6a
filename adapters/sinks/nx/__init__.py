"""Nx Witness, Nx Meta, DW Spectrum and Hanwha Wave (REST v4): the sink's registry entry. Its config is in
config.py, the sink in sink.py, the analytics integration in analytics.py, the camera listing in cameras.py."""

from __future__ import annotations

from adapters.sinks.common import SinkSpec
from adapters.sinks.nx.cameras import list_cameras
from adapters.sinks.nx.config import NxSinkConfig
from adapters.sinks.nx.sink import NxSink

SPEC = SinkSpec(NxSinkConfig, NxSink, "Nx Witness", list_cameras)
