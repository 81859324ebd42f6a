"""The sink registry: one line per sink module. A sink's key is its config model's `kind` literal, declared once in
its module; the root config's `sinks` union, the app's wiring and `storesight discover` read this list."""

from __future__ import annotations

from adapters.sinks import frigate, genetec, hq, milestone, mqtt, nx, webhook, zoneminder
from adapters.sinks.common import SinkSpec

SINKS: tuple[SinkSpec, ...] = (
    webhook.SPEC,
    mqtt.SPEC,
    milestone.SPEC,
    nx.SPEC,
    zoneminder.SPEC,
    genetec.SPEC,
    frigate.SPEC,
    hq.SPEC,
)
BY_KEY: dict[str, SinkSpec] = {spec.key: spec for spec in SINKS}
