"""Prometheus metrics, on a registry per application so tests and several apps never collide."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass(frozen=True)
class ModelStats:
    """Triton's cumulative statistics for one model (its statistics extension), in seconds and counts."""

    model: str
    requests: int  # successful inference requests
    failures: int
    inferences: int  # images inferred (a batched request counts each of its images)
    executions: int  # model executions (one per batch Triton formed)
    queue_s: float  # time requests waited in Triton's scheduler queue
    compute_input_s: float
    compute_infer_s: float
    compute_output_s: float


class TritonStatsCollector(Collector):
    """Exports the latest Triton statistics as counters; refreshed by the /metrics handler before each scrape, so
    the queue and compute times sit beside StoreSight's own numbers with no second scrape job (and no metrics port
    on the embedded server)."""

    def __init__(self) -> None:
        self.latest: dict[str, ModelStats] = {}

    def update(self, stats: Sequence[ModelStats]) -> None:
        """Replace the numbers of the models in `stats` (Triton's totals only grow while it runs)."""
        for s in stats:
            self.latest[s.model] = s

    def collect(self) -> Iterator[Metric]:
        """The counters, one sample per model."""
        families = {
            "requests": CounterMetricFamily(
                "storesight_triton_requests", "Successful Triton requests", labels=["model"]
            ),
            "failures": CounterMetricFamily("storesight_triton_failures", "Failed Triton requests", labels=["model"]),
            "inferences": CounterMetricFamily(
                "storesight_triton_inferences", "Images inferred (each image of a batch counts)", labels=["model"]
            ),
            "executions": CounterMetricFamily(
                "storesight_triton_executions", "Model executions (one per batch Triton formed)", labels=["model"]
            ),
            "queue_s": CounterMetricFamily(
                "storesight_triton_queue_seconds", "Time requests waited in Triton's queue", labels=["model"]
            ),
        }
        compute = CounterMetricFamily(
            "storesight_triton_compute_seconds", "Triton compute time by phase", labels=["model", "phase"]
        )
        for s in self.latest.values():
            for attr, family in families.items():
                family.add_metric([s.model], float(getattr(s, attr)))
            for phase in ("input", "infer", "output"):
                compute.add_metric([s.model, phase], getattr(s, f"compute_{phase}_s"))
        yield from families.values()
        yield compute


class Metrics:
    """Every metric StoreSight exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames = Counter("storesight_frames_analysed", "Frames analysed", ["camera"], registry=r)
        self.frames_dropped = Counter(
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
        self.reconnects = Counter("storesight_camera_reconnects", "Camera reconnects", ["camera"], registry=r)
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
        self.triton_stats = TritonStatsCollector()
        r.register(self.triton_stats)
        ProcessCollector(registry=r)  # CPU seconds, resident memory, open files of this process
        # the running totals that sources keep, as they were at the last look, and whose total it was (held, not
        # its id: a restarted pipeline's new source may reuse a freed one's id)
        self._totals: dict[tuple[int, str], tuple[object, float]] = {}

    def advance(self, counter: Counter, camera: str, total: float, owner: object) -> None:
        """Feed a counter from a running total that `owner` keeps (a camera source's dropped frames or reconnects):
        add what the total grew by since the last look. A new owner (the source of a restarted pipeline) starts
        again from zero."""
        key = (id(counter), camera)
        seen_owner, last = self._totals.get(key, (owner, 0.0))
        if seen_owner is not owner:
            last = 0.0
        child = counter.labels(camera=camera)  # the series exists from the first look, at 0
        if total > last:
            child.inc(total - last)
            last = total
        self._totals[key] = (owner, last)
