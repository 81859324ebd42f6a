"""Pose rules (fall, aggression, shelf_sweep) on keypoint sequences built from real MoveNet output.

No shared clip shows a fall, a fight or a shelf sweep, so each sequence starts from the keypoints the real pose
model (on the real tritonserver) gives for the standing person in frame 300 of the indoor clip, and moves them:
rotated to lying (fall), wrists and elbows swung fast next to a second person (aggression), a wrist pushed into a
shelf zone again and again (sweep). The negatives use the same pose: standing still, walking, one reach, slow reaches.
Also here: the pipeline poses only the tracks a pose rule asks for, at most `pose.max_persons` per frame.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from helpers import frame_300, real_pose

from plugin.config.cameras import CameraConfig, ZoneConfig
from plugin.config.root import Config
from plugin.config.service import DetectorConfig, PoseConfig
from plugin.incidents.explain import Explainer
from plugin.inference.pose import L_ELBOW, L_HIP, L_WRIST, R_ELBOW, R_HIP, R_WRIST, PoseClient
from plugin.inference.server import EmbeddedTriton
from plugin.metrics import Metrics
from plugin.pipeline.camera import CameraPipeline
from plugin.rules.aggression import AggressionRuleConfig
from plugin.rules.base import BaseRule, Observation, RuleHit
from plugin.rules.fall import FallRuleConfig
from plugin.rules.registry import build_rule
from plugin.rules.shelf_sweep import ShelfSweepRuleConfig
from plugin.rules.zones import PolygonZone
from plugin.types import Detections, Frame

pytestmark = pytest.mark.triton

T0 = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
W, H = 768, 432
Pose = tuple[np.ndarray, np.ndarray]  # (box x1,y1,x2,y2, keypoints [17,3] x,y,score)


@pytest.fixture(scope="module")
def standing(triton: EmbeddedTriton, clip: Path) -> Pose:
    """The real standing person's box and keypoints (frame 300 of the clip, real detector and pose model)."""

    async def once() -> Pose:
        box, kp, pose = await real_pose(triton, frame_300(clip))
        await pose.close()
        return box.astype(np.float32), kp.astype(np.float32)

    return asyncio.run(once())


def height(p: Pose) -> float:
    return float(p[0][3] - p[0][1])


def moved(p: Pose, dx: float = 0.0, dy: float = 0.0) -> Pose:
    box, kp = p[0].copy(), p[1].copy()
    box += [dx, dy, dx, dy]
    kp[:, 0] += dx
    kp[:, 1] += dy
    return box, kp


def rotated(p: Pose, deg: float) -> Pose:
    """The pose turned by `deg` about the hips' middle (90: lying on the floor); the box turns with it."""
    box, kp = p
    c = kp[[L_HIP, R_HIP], :2].mean(axis=0)
    a = math.radians(deg)
    rot = np.asarray([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], np.float32)
    out = kp.copy()
    out[:, :2] = (kp[:, :2] - c) @ rot.T + c
    corners = np.asarray([[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]]], np.float32)
    turned = (corners - c) @ rot.T + c
    return np.concatenate([turned.min(axis=0), turned.max(axis=0)]).astype(np.float32), out


def with_joints(p: Pose, joints: Sequence[int], dx: float, dy: float = 0.0) -> Pose:
    kp = p[1].copy()
    kp[list(joints), 0] += dx
    kp[list(joints), 1] += dy
    return p[0], kp


def observe(t_s: float, people: Iterable[tuple[int, Pose]], inside: dict[str, list[bool]] | None = None) -> Observation:
    people = list(people)
    boxes = [p[0] for _, p in people] or np.zeros((0, 4), np.float32)
    dets = Detections.from_arrays(boxes, [0.9] * len(people), [0] * len(people), [tid for tid, _ in people])
    masks = {z: np.asarray(m, bool) for z, m in (inside or {}).items()}
    return Observation(
        "cam1", T0 + timedelta(seconds=t_s), dets, masks, W, H, ("person",), {tid: p[1] for tid, p in people}
    )


def run(rule: Any, frames: Iterable[Observation]) -> list[RuleHit]:
    hits: list[RuleHit] = []
    last = T0
    for obs in frames:
        hits.extend(h for h in rule.update(obs) if isinstance(h, RuleHit))
        last = obs.t
    hits.extend(h for h in rule.finish(last) if isinstance(h, RuleHit))
    return hits


def explain(hit: RuleHit) -> str:
    facts = dict(hit.facts) | {"camera": hit.camera, "zone": hit.zone, "start": hit.started_at, "end": hit.at}
    return Explainer().render(hit.type, facts | {"ended": hit.state == "end", "schedule": None})


# --- fall -----------------------------------------------------------------------------------------------------

FPS = 5.0


def fall_rule(**kw: Any) -> Any:
    return build_rule(FallRuleConfig(id="fall", type="fall", camera="cam1", **kw))


def fall_sequence(standing: Pose, up_s: float, down_s: float, get_up: bool = False) -> list[Observation]:
    """Standing `up_s`, falling over 0.6 s, lying `down_s`, optionally standing up again for 2 s."""
    frames, t = [], 0.0
    step = 1.0 / FPS
    while t < up_s:
        frames.append(observe(t, [(7, standing)]))
        t += step
    for deg in (30.0, 60.0, 90.0):
        frames.append(observe(t, [(7, moved(rotated(standing, deg), dy=80))]))
        t += step
    end = t + down_s
    while t < end:
        frames.append(observe(t, [(7, moved(rotated(standing, 90.0), dy=80))]))
        t += step
    if get_up:
        for _ in range(int(2 * FPS)):
            frames.append(observe(t, [(7, standing)]))
            t += step
    return frames


def test_real_standing_pose_is_upright_and_turned_is_lying(standing: Pose) -> None:
    rule = fall_rule()
    from plugin.rules.posture import torso_angle_deg

    upright = torso_angle_deg(standing[1], 0.3)
    assert upright is not None and upright < 15
    box, kp = rotated(standing, 90.0)
    lying = torso_angle_deg(kp, 0.3)
    assert lying is not None and lying > 75
    assert rule.posture(upright, tuple(standing[0])) == "upright"
    assert rule.posture(lying, tuple(box)) == "lying"
    assert rule.posture(torso_angle_deg(rotated(standing, 45.0)[1], 0.3), tuple(rotated(standing, 45.0)[0])) == (
        "unclear"
    )


def test_fall_fires_after_the_person_stays_down(standing: Pose) -> None:
    hits = run(fall_rule(min_down_s=5.0), fall_sequence(standing, up_s=2.0, down_s=8.0))
    assert [h.state for h in hits] == ["start", "end"]
    start = hits[0]
    assert start.track_ids == (7,) and start.severity == "critical"
    fell_at = start.started_at
    assert 2.0 <= (fell_at - T0).total_seconds() <= 2.8
    assert 5.0 <= (start.at - fell_at).total_seconds() <= 5.3
    assert start.facts["torso_deg"] > 75
    text = explain(hits[1])
    assert "Person #7 was lying down after being seen upright" in text and "possible fall" in text
    assert "until no longer tracked" in text  # the file ended while the person was still down


def test_fall_closes_when_the_person_gets_up(standing: Pose) -> None:
    hits = run(fall_rule(min_down_s=3.0), fall_sequence(standing, up_s=2.0, down_s=5.0, get_up=True))
    assert [h.state for h in hits] == ["start", "end"]
    assert hits[1].facts["got_up"] is True and "then got up" in explain(hits[1])


@pytest.mark.parametrize(
    "case",
    ["standing still", "walking", "short time down", "born lying", "bending over", "no torso keypoints"],
)
def test_fall_stays_quiet(standing: Pose, case: str) -> None:
    rule = fall_rule(min_down_s=5.0)
    frames: list[Observation]
    n = int(20 * FPS)
    if case == "standing still":
        frames = [observe(k / FPS, [(7, standing)]) for k in range(n)]
    elif case == "walking":
        frames = [observe(k / FPS, [(7, moved(standing, dx=-300 + 6 * k))]) for k in range(n)]
    elif case == "short time down":
        frames = fall_sequence(standing, up_s=2.0, down_s=3.0, get_up=True)
    elif case == "born lying":  # nobody saw this person upright: already on the floor when the track starts
        frames = [observe(k / FPS, [(7, moved(rotated(standing, 90.0), dy=80))]) for k in range(n)]
    elif case == "bending over":  # torso at 45 degrees for 10 s: not lying
        frames = [observe(k / FPS, [(7, standing)]) for k in range(10)]
        frames += [observe(2 + k / FPS, [(7, rotated(standing, 45.0))]) for k in range(n // 2)]
    else:
        box, kp = rotated(standing, 90.0)
        kp = kp.copy()
        kp[5:13, 2] = 0.05  # shoulders, elbows, wrists and hips unseen
        frames = [observe(k / FPS, [(7, standing)]) for k in range(10)]
        frames += [observe(2 + k / FPS, [(7, (box, kp))]) for k in range(n)]
    assert run(rule, frames) == []


def test_fall_config_is_strict() -> None:
    with pytest.raises(ValueError, match="must be below lying_min_deg"):
        FallRuleConfig(id="f", type="fall", camera="c", upright_max_deg=70)
    with pytest.raises(ValueError, match="Extra inputs"):
        FallRuleConfig.model_validate({"id": "f", "type": "fall", "camera": "c", "down_s": 3})


# --- aggression -----------------------------------------------------------------------------------------------

AFPS = 10.0


def aggression_rule(**kw: Any) -> Any:
    return build_rule(AggressionRuleConfig(id="fight", type="aggression", camera="cam1", **kw))


def two_people(standing: Pose, gap_heights: float, seconds: float, arm: Any, walk_px: float = 0.0) -> list[Observation]:
    """Person 1 (the real pose) and person 2 (the same pose `gap_heights` person heights to the left); `arm(k)`
    gives person 1's wrist and elbow offset in pixels at frame k."""
    h = height(standing)
    frames = []
    for k in range(int(seconds * AFPS)):
        a = moved(standing, dx=walk_px * k)
        b = moved(standing, dx=walk_px * k - gap_heights * h)
        dx, dy = arm(k)
        a = with_joints(a, (L_WRIST, R_WRIST), dx, dy)
        a = with_joints(a, (L_ELBOW, R_ELBOW), dx / 2, dy / 2)
        frames.append(observe(k / AFPS, [(1, a), (2, b)]))
    return frames


def test_aggression_fires_on_fast_arms_next_to_someone(standing: Pose) -> None:
    h = height(standing)
    # wrists thrown 0.3 person heights back and forth every frame at 10 fps: 3 person heights per second
    frames = two_people(standing, 0.6, 3.0, lambda k: (-0.3 * h * (k % 2), 0.0))
    hits = run(aggression_rule(), frames)
    assert [h_.state for h_ in hits] == ["start", "end"]
    start = hits[0]
    assert start.track_ids == (1, 2)
    assert 1.0 <= (start.at - start.started_at).total_seconds() <= 1.2
    assert start.facts["peak_speed"] >= 2.5
    assert "People #1 and #2 are close together with fast arm movement" in explain(start)


@pytest.mark.parametrize("case", ["standing still", "fast arms far apart", "walking together", "one quick move"])
def test_aggression_stays_quiet(standing: Pose, case: str) -> None:
    h = height(standing)
    rng = np.random.default_rng(0)
    jitter = lambda k: tuple(rng.normal(0, 2.0, 2))  # noqa: E731 - keypoint noise of a few pixels
    if case == "standing still":
        frames = two_people(standing, 0.6, 5.0, jitter)
    elif case == "fast arms far apart":
        frames = two_people(standing, 3.0, 5.0, lambda k: (-0.3 * h * (k % 2), 0.0))
    elif case == "walking together":  # 0.4 heights/s along, arms swinging 0.1 heights at 1 Hz
        frames = two_people(
            standing, 0.6, 5.0, lambda k: (0.1 * h * math.sin(2 * math.pi * k / AFPS), 0.0), walk_px=0.04 * h
        )
    else:  # two fast frames, then calm
        frames = two_people(standing, 0.6, 5.0, lambda k: (-0.3 * h if k in (10, 11) else 0.0, 0.0))
    assert run(aggression_rule(), frames) == []


def test_aggression_asks_pose_only_for_people_with_someone_close(standing: Pose) -> None:
    rule = aggression_rule()
    h = height(standing)
    far = observe(0, [(1, standing), (2, moved(standing, dx=-3 * h))])
    near = observe(0, [(1, standing), (2, moved(standing, dx=-0.6 * h)), (3, moved(standing, dx=4 * h))])
    assert rule.pose_tracks(far) == []
    assert rule.pose_tracks(near) == [1, 2]


# --- shelf sweep ----------------------------------------------------------------------------------------------


def shelf(standing: Pose) -> ZoneConfig:
    """A shelf front just right of the person's right-hand side wrist, at wrist height."""
    kp = standing[1]
    x = float(max(kp[L_WRIST, 0], kp[R_WRIST, 0])) + 40
    y = float(kp[[L_WRIST, R_WRIST], 1].mean())
    x0, x1, y0, y1 = x / W, min(x + 200, W - 1) / W, (y - 80) / H, (y + 80) / H
    return ZoneConfig(id="shelf", polygon=[(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def sweep_rule(standing: Pose, **kw: Any) -> Any:
    rule = build_rule(ShelfSweepRuleConfig(id="sweep", type="shelf_sweep", camera="cam1", shelf_zone="shelf", **kw))
    zone = shelf(standing)
    rule.bind_zones({"shelf": PolygonZone(zone)})
    return rule


def reaches(standing: Pose, count: int, frames_in: int, seconds: float = 8.0) -> list[Observation]:
    """`count` reaches of the outer wrist into the shelf, each taking `frames_in` frames to get there."""
    kp = standing[1]
    outer = L_WRIST if kp[L_WRIST, 0] > kp[R_WRIST, 0] else R_WRIST
    elbow = L_ELBOW if outer == L_WRIST else R_ELBOW
    depth = 120.0  # pixels past the wrist's rest position: 80 px into the shelf zone
    frames, k = [], 0
    period = 2 * frames_in + 4
    for k in range(int(seconds * AFPS)):
        r, phase = divmod(k, period)
        if r < count and phase < frames_in:  # reaching in
            dx = depth * (phase + 1) / frames_in
        elif r < count and phase < frames_in + 2:  # in the shelf
            dx = depth
        elif r < count and phase < 2 * frames_in + 2:  # coming back
            dx = depth * (2 * frames_in + 1 - phase) / frames_in
        else:
            dx = 0.0
        p = with_joints(standing, (outer,), dx)
        p = with_joints(p, (elbow,), dx / 2)
        frames.append(observe(k / AFPS, [(4, p)]))
    return frames


def test_shelf_sweep_fires_on_repeated_fast_reach_ins(standing: Pose) -> None:
    rule = sweep_rule(standing)
    assert rule.pose_tracks(observe(0, [(4, standing)])) == [4]
    hits = run(rule, reaches(standing, count=5, frames_in=1))
    assert [h.state for h in hits] == ["start", "end"]
    assert hits[0].facts["reaches"] == 4 and hits[0].zone == "shelf"
    assert (hits[0].at - hits[0].started_at).total_seconds() < 10
    assert "Person #4 reached into shelf zone shelf 4 times" in explain(hits[0])


@pytest.mark.parametrize("case", ["standing still", "one reach", "slow reaches", "walking past"])
def test_shelf_sweep_stays_quiet(standing: Pose, case: str) -> None:
    rule = sweep_rule(standing)
    if case == "standing still":
        frames = reaches(standing, count=0, frames_in=1)
    elif case == "one reach":
        frames = reaches(standing, count=1, frames_in=1)
    elif case == "slow reaches":  # five reaches taking 1.2 s each way: browsing, not sweeping
        frames = reaches(standing, count=5, frames_in=12, seconds=20.0)
    else:  # the whole person walks past the shelf's edge, wrists and all, at an ordinary pace
        frames = [observe(k / AFPS, [(4, moved(standing, dx=-200 + 4 * k))]) for k in range(100)]
    assert run(rule, frames) == []


def test_pose_rule_configs_reference_zones() -> None:
    doc: dict[str, Any] = {
        "cameras": [{"id": "cam1", "source": "x.mp4", "zones": [{"id": "z", "polygon": [[0, 0], [1, 0], [1, 1]]}]}],
        "rules": [{"id": "s", "type": "shelf_sweep", "camera": "cam1", "shelf_zone": "nope"}],
    }
    with pytest.raises(ValueError, match="shelf_zone"):
        Config.model_validate(doc)
    doc["rules"] = [{"id": "a", "type": "aggression", "camera": "cam1", "zone": "nope"}]
    with pytest.raises(ValueError, match="zone"):
        Config.model_validate(doc)
    doc["rules"] = [
        {"id": "s", "type": "shelf_sweep", "camera": "cam1", "shelf_zone": "z"},
        {"id": "f", "type": "fall", "camera": "cam1"},
        {"id": "a", "type": "aggression", "camera": "cam1"},
    ]
    assert [r.type for r in Config.model_validate(doc).rules] == ["shelf_sweep", "fall", "aggression"]


# --- pipeline: pose only where a rule needs it, at most max_persons -----------------------------------------


class _FixedDetector:
    """Stands in for the detector: the same boxes every frame (the pose model behind it is the real one)."""

    def __init__(self, boxes: np.ndarray) -> None:
        self.boxes = boxes

    async def ready(self) -> bool:
        return True

    async def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        n = len(self.boxes)
        return [Detections.from_arrays(self.boxes, [0.9] * n, [0] * n) for _ in images]

    async def close(self) -> None:
        pass


class _CountingPose(PoseClient):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.calls: list[int] = []

    async def estimate(self, image_bgr: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        self.calls.append(len(boxes))
        return await super().estimate(image_bgr, boxes)


class _Spy(BaseRule):
    """Wraps a rule and keeps the keypoints it was given."""

    def __init__(self, rule: BaseRule) -> None:
        super().__init__(rule.config)
        self.rule = rule
        self.needs_pose = rule.needs_pose  # type: ignore[misc]
        self.seen: list[set[int]] = []

    def pose_tracks(self, obs: Observation) -> list[int]:
        return list(self.rule.pose_tracks(obs))

    def bind_zones(self, zones: Any) -> None:
        self.rule.bind_zones(zones)

    def update(self, obs: Observation) -> list[Any]:
        self.seen.append(set(obs.keypoints))
        return list(self.rule.update(obs))

    def finish(self, t: datetime) -> list[Any]:
        return list(self.rule.finish(t))


async def test_pipeline_poses_only_what_pose_rules_need(triton: EmbeddedTriton, clip: Path, standing: Pose) -> None:
    img = frame_300(clip)
    box = standing[0]
    small = np.asarray([10, 10, 30, 40], np.float32)  # too small to pose
    boxes = np.stack([box, moved(standing, dx=-250)[0], small])
    far_shelf = ZoneConfig(id="shelf", polygon=[(0.0, 0.9), (0.05, 0.9), (0.05, 1.0)])
    cam = CameraConfig(id="cam1", source="x.mp4", zones=[far_shelf])

    async def frames_through(rules: list[Any], max_persons: int) -> _CountingPose:
        pose = _CountingPose(triton.grpc_url)
        source = SimpleNamespace(status=SimpleNamespace(frames_dropped=0), is_file=True)  # frames come from the test
        pipeline = CameraPipeline(cam, source, _FixedDetector(boxes), DetectorConfig(), rules, None, Metrics())  # type: ignore[arg-type]
        pipeline.resolve_classes(["person"])
        pipeline.pose, pipeline.pose_config = pose, PoseConfig(max_persons=max_persons)
        try:
            for k in range(6):
                await pipeline.process(Frame("cam1", k, T0 + timedelta(seconds=k / 5), float(k), img))
        finally:
            await pose.close()
        return pose

    # a shelf sweep rule whose shelf nobody is near: no pose at all; a rule without pose never gets keypoints
    sweep = _Spy(build_rule(ShelfSweepRuleConfig(id="s", type="shelf_sweep", camera="cam1", shelf_zone="shelf")))
    pose = await frames_through([sweep], max_persons=4)
    assert pose.calls == [] and all(s == set() for s in sweep.seen)
    # a fall rule wants everyone: the two tall people, never the tiny box, and only max_persons of them
    fall = _Spy(fall_rule())
    pose = await frames_through([fall], max_persons=4)
    assert pose.calls and set(pose.calls) == {2}
    assert fall.seen[-1] and len(fall.seen[-1]) == 2
    fall = _Spy(fall_rule())
    pose = await frames_through([fall], max_persons=1)
    assert set(pose.calls) == {1} and len(fall.seen[-1]) == 1


# --- the real clip through the real pipeline: pose runs, and nothing fires ---------------------------------------


class _Hits:
    """Stands in for the incident manager: keeps what the rules raised."""

    def __init__(self) -> None:
        self.hits: list[RuleHit] = []

    async def handle(self, hit: RuleHit, frame: Any, zone: Any, people: Any = None) -> None:
        self.hits.append(hit)


async def test_real_clip_poses_people_and_raises_no_pose_incident(triton: EmbeddedTriton, clip: Path) -> None:
    """Six people in turn stand at a table and handle things on it: nobody falls, fights or sweeps the table."""
    from adapters.cameras.opencv import OpenCVSource
    from plugin.inference.triton import TritonInferenceClient
    from plugin.rules.posture import torso_angle_deg

    await asyncio.to_thread(triton.wait_ready, "movenet", 60)
    tabletop = ZoneConfig(id="tabletop", polygon=[(0.3, 0.45), (0.9, 0.45), (0.9, 0.8), (0.3, 0.8)])
    cam = CameraConfig(id="cam1", source=str(clip), zones=[tabletop], fps=5.0)
    fall = _Spy(fall_rule())
    rules = [
        fall,
        _Spy(aggression_rule()),
        _Spy(build_rule(ShelfSweepRuleConfig(id="s", type="shelf_sweep", camera="cam1", shelf_zone="tabletop"))),
    ]
    angles: list[float] = []
    original = fall.update

    def record(obs: Observation) -> list[Any]:
        for kp in obs.keypoints.values():
            a = torso_angle_deg(kp, 0.3)
            if a is not None:
                angles.append(a)
        return original(obs)

    fall.update = record  # type: ignore[method-assign]
    detector = TritonInferenceClient(triton.grpc_url, "yolox_nano")
    pose = PoseClient(triton.grpc_url)
    incidents = _Hits()
    source = OpenCVSource("cam1", str(clip), 5.0, start_time=T0)
    pipeline = CameraPipeline(cam, source, detector, DetectorConfig(), rules, incidents, Metrics())  # type: ignore[arg-type]
    pipeline.pose = pose
    try:
        info = await detector.wait_ready(30)
        pipeline.resolve_classes(info.class_names)
        await pipeline.run()
    finally:
        await pipeline.close()
        await pose.close()
        await detector.close()
    posed_frames = sum(1 for s in fall.seen if s)
    print(
        f"real clip: {pipeline.status.frames} frames, {posed_frames} with keypoints, {len(angles)} torso angles, "
        f"95th percentile {np.percentile(angles, 95):.1f} deg, max {max(angles):.1f} deg"
    )
    assert pipeline.status.frames > 600 and posed_frames > 300  # people are at the table most of the clip
    assert np.percentile(angles, 95) < 30  # standing people read as upright
    assert incidents.hits == []


async def test_pose_down_pauses_pose_rules_only(standing: Pose, caplog: pytest.LogCaptureFixture) -> None:
    from plugin.inference.server import free_port

    cam = CameraConfig(id="cam1", source="x.mp4")
    fall = _Spy(fall_rule())
    source = SimpleNamespace(status=SimpleNamespace(frames_dropped=0), is_file=True)
    boxes = standing[0][None]
    pipeline = CameraPipeline(cam, source, _FixedDetector(boxes), DetectorConfig(), [fall], None, Metrics())  # type: ignore[arg-type]
    pipeline.resolve_classes(["person"])
    pipeline.pose = PoseClient(f"grpc://127.0.0.1:{free_port()}", request_timeout_s=2)
    img = np.zeros((H, W, 3), np.uint8)
    try:
        with caplog.at_level("WARNING"):
            for k in range(5):
                await pipeline.process(Frame("cam1", k, T0 + timedelta(seconds=k / 5), float(k), img))
    finally:
        await pipeline.pose.close()
    assert pipeline.status.frames == 5 and all(s == set() for s in fall.seen)
    warnings = [r for r in caplog.records if "pose unavailable, pose rules paused" in r.getMessage()]
    assert len(warnings) == 1


def test_pose_rules_refuse_to_start_without_the_pose_model(tmp_path: Path, clip: Path) -> None:
    import shutil

    from helpers import run_cli, write_config

    from plugin.inference.server import DEFAULT_MODEL_REPOSITORY

    repo = tmp_path / "repo"
    shutil.copytree(
        DEFAULT_MODEL_REPOSITORY, repo, ignore=shutil.ignore_patterns("movenet_lightning.onnx", "__pycache__")
    )
    doc = {
        "storage": {"path": str(tmp_path / "data")},
        "triton": {"model_repository": str(repo)},
        "cameras": [{"id": "cam1", "source": str(clip)}],
        "rules": [{"id": "fall", "type": "fall", "camera": "cam1"}],
    }
    res = run_cli("run", "-c", str(write_config(tmp_path / "c.yaml", doc)), "--once", timeout=120)
    assert res.returncode == 1
    assert "movenet" in res.stderr and "model file missing" in res.stderr and "storesight models fetch" in res.stderr
    assert "Traceback" not in res.stderr
