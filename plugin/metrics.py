"""Prometheus metrics, on a registry per application so tests and several apps never collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Every metric StoreSight exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames = Counter("storesight_frames_analysed", "Frames analysed", ["camera"], registry=r)
        self.frames_dropped = Gauge(
            "storesight_frames_dropped", "Stale frames dropped by latest-frame-wins", ["camera"], registry=r
        )
        self.camera_up = Gauge("storesight_camera_up", "1 when the camera delivers frames", ["camera"], registry=r)
        self.detect_seconds = Histogram(
            "storesight_detect_seconds",
            "Detector round trip per frame",
            ["camera"],
            buckets=(0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56),
            registry=r,
        )
        self.gate_frames = Counter(
            "storesight_motion_gate_frames",
            "Analysed frames by motion gate decision (detect, skip) and why (pixels, tracks, max_skip, camera, first, "
            "disabled; still for a skip)",
            ["camera", "decision", "reason"],
            registry=r,
        )
        self.camera_state = Gauge(
            "storesight_camera_state", "1 for the camera's current health state", ["camera", "state"], registry=r
        )
        self.received_fps = Gauge("storesight_camera_received_fps", "Frames/s from the camera", ["camera"], registry=r)
        self.analysed_fps = Gauge("storesight_camera_analysed_fps", "Frames/s analysed", ["camera"], registry=r)
        self.reconnects = Gauge("storesight_camera_reconnects", "Reconnects since start", ["camera"], registry=r)
        self.people = Gauge("storesight_people", "Confirmed tracked people in view", ["camera"], registry=r)
        self.incidents = Counter("storesight_incidents", "Incidents opened", ["camera", "rule"], registry=r)
        self.deliveries = Counter("storesight_deliveries", "Delivery attempts by outcome", ["sink", "outcome"],
                                  registry=r)  # fmt: skip
        self.outbox_pending = Gauge("storesight_outbox_pending", "Deliveries waiting", ["sink"], registry=r)
        self.outbox_dead = Gauge("storesight_outbox_dead", "Dead-lettered deliveries (retry by hand)", ["sink"],
                                 registry=r)  # fmt: skip
        self.triton_up = Gauge("storesight_triton_ready", "1 when Triton and the model are ready", registry=r)
        self.system_condition = Gauge(
            "storesight_system_condition",
            "Open StoreSight health conditions (system_* incidents) by kind; per sink kinds count the sinks",
            ["kind"],
            registry=r,
        )
