"""blocked_exit's objects and empty-zone reference: stationary COCO objects from the pipeline's object tracker, and
persistent changes against the learned empty view, on real frames of the demo clip.

The clip's first 18 s leave the right-hand floor (EXIT) empty and still: a person walks in from the bottom edge to
the table at 7-11 s, never into it (YOLOX-nano puts nobody's feet in EXIT before 18.6 s). Boxes are
drawn with OpenCV onto those real frames: a cardboard-brown box with a lit top and a tape line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import MODEL_FILE, REPO_ROOT, require

from plugin.config.cameras import CameraConfig, ZoneConfig
from plugin.config.loader import parse_config
from plugin.config.service import DetectorConfig
from plugin.errors import ConfigError
from plugin.incidents.explain import Explainer
from plugin.inference.naive import OnnxYolox, YoloxSettings, read_model_parameters
from plugin.metrics import Metrics
from plugin.pipeline.camera import CameraPipeline
from plugin.pipeline.tracking import Tracker
from plugin.rules.base import BaseRule, Observation, RuleHit
from plugin.rules.blocked_exit import BlockedExitRule, BlockedExitRuleConfig
from plugin.rules.registry import build_rule
from plugin.rules.zones import PolygonZone
from plugin.types import Detections, Frame, ImageArray

T0 = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
FPS = 5.0
EXIT = [(0.72, 0.62), (0.99, 0.62), (0.99, 0.99), (0.72, 0.99)]  # the floor right of the pillar
TABLE = [(0.39, 0.67), (0.83, 0.67), (0.83, 1.0), (0.39, 1.0)]  # where each person stands (README)
MODEL_CONFIG = REPO_ROOT / "triton_models" / "cpu" / "yolox_nano" / "config.pbtxt"
COCO = YoloxSettings.from_parameters(read_model_parameters(MODEL_CONFIG)).class_names
SUITCASE, CHAIR, BENCH = COCO.index("suitcase"), COCO.index("chair"), COCO.index("bench")
W, H = 768, 432


@cache
def _frames(clip: Path, seconds: float) -> tuple[ImageArray, ...]:
    """The clip's first `seconds` at FPS (every other frame of the 10 fps file)."""
    cap = cv2.VideoCapture(str(clip))
    out: list[ImageArray] = []
    try:
        for k in range(round(seconds * 10)):
            ok, img = cap.read()
            assert ok, f"clip ended at frame {k}"
            if k % 2 == 0:
                out.append(img)
    finally:
        cap.release()
    return tuple(out)


@pytest.fixture(scope="module")
def empty_exit(clip: Path) -> tuple[ImageArray, ...]:
    """0-18 s of the clip: the exit floor is empty throughout."""
    return _frames(clip, 18)


def paste_box(img: ImageArray, x: float, y: float, w: float = 0.12, h: float = 0.2) -> ImageArray:
    """A cardboard box standing on the floor, its bottom-left corner at (x, y) in 0..1 of the frame."""
    out = img.copy()
    x0, y1 = round(x * W), round(y * H)
    x1, y0 = x0 + round(w * W), y1 - round(h * H)
    lid = round(0.25 * (y1 - y0))
    cv2.rectangle(out, (x0, y0 + lid), (x1, y1), (52, 104, 150), -1)  # front, BGR cardboard brown
    cv2.rectangle(out, (x0, y0), (x1, y0 + lid), (90, 150, 196), -1)  # lit top
    cv2.line(out, ((x0 + x1) // 2, y0), ((x0 + x1) // 2, y1), (170, 190, 200), 3)  # tape
    cv2.rectangle(out, (x0, y0), (x1, y1), (30, 60, 90), 2)
    return out


def relit(img: ImageArray, gain: float, offset: float) -> ImageArray:
    """The whole frame brighter or darker, as lights dimming or a camera's auto-exposure do."""
    return np.asarray(cv2.convertScaleAbs(img, alpha=gain, beta=offset), np.uint8)


def exit_rule(polygon: Sequence[tuple[float, float]] = EXIT, **kw: Any) -> BlockedExitRule:
    """A blocked_exit rule on zone `exit` with T = 5 s and a reference learned in 4 s, zone bound as the pipeline
    does."""
    doc: dict[str, Any] = {"id": "fire-exit", "type": "blocked_exit", "camera": "cam1", "zone": "exit"}
    doc |= {"min_duration_s": 5, "reference": {"learn_s": 4}} | kw
    rule = build_rule(BlockedExitRuleConfig.model_validate(doc))
    assert isinstance(rule, BlockedExitRule)
    rule.bind_zones({"exit": PolygonZone(ZoneConfig(id="exit", polygon=polygon))})
    return rule


def observe(k: int, image: ImageArray | None, objects: Detections | None = None) -> Observation:
    """Frame k (at FPS) with no people, the given objects and image."""
    people = Detections.empty().with_track_ids(np.zeros(0, np.int32))
    inside = {"exit": np.zeros(0, bool)}
    return Observation(
        "cam1", T0 + timedelta(seconds=k / FPS), people, inside, W, H, COCO,
        image=image, objects=objects if objects is not None else Detections.empty(),
    )  # fmt: skip


def run(rule: BlockedExitRule, observations: Sequence[Observation]) -> list[RuleHit]:
    """Every incident opening and closing, then finish()."""
    out: list[Any] = []
    for obs in observations:
        out += rule.update(obs)
    out += rule.finish(observations[-1].t)
    return [h for h in out if isinstance(h, RuleHit)]


def secs(t: datetime) -> float:
    """Seconds after T0."""
    return round((t - T0).total_seconds(), 1)


# --- the empty-zone reference on real frames ---------------------------------------------------------------------

BOX_AT = (0.8, 0.92)  # the box's bottom-left corner: well inside EXIT


def edited(frames: Sequence[ImageArray], box: tuple[float, float] | None, light: tuple[float, float] | None) -> list:
    """Frames with the box pasted during box = (from_s, to_s) and relit from 8 s on with light = (gain, offset)."""
    out = []
    for k, img in enumerate(frames):
        t = k / FPS
        if light is not None and t >= 8:
            img = relit(img, *light)
        if box is not None and box[0] <= t < box[1]:
            img = paste_box(img, *BOX_AT)
        out.append(img)
    return out


@pytest.mark.parametrize(
    ("box", "light", "expected"),
    [
        (None, None, []),  # the real empty floor, 18 s: no change
        ((8, 16), None, [("start", 8.0, 13.0), ("end", 8.0, 15.8)]),  # a box for 8 s > T = 5 s
        ((9, 11), None, []),  # carried in and out again within 2 s
        ((9, 13.6), None, []),  # 4.6 s: just short of T
        (None, (0.6, 0.0), []),  # lights dimmed to 60 %
        (None, (1.25, 15.0), []),  # brighter and washed out
        ((8, 16), (0.6, 0.0), [("start", 8.0, 13.0), ("end", 8.0, 15.8)]),  # dimmed does not hide a box
    ],
)
def test_reference_change_is_an_unrecognised_object(
    empty_exit: tuple[ImageArray, ...],
    box: tuple[float, float] | None,
    light: tuple[float, float] | None,
    expected: list[tuple[str, float, float]],
) -> None:
    rule = exit_rule()
    hits = run(rule, [observe(k, img) for k, img in enumerate(edited(empty_exit, box, light))])
    assert [(h.state, secs(h.started_at), secs(h.at)) for h in hits] == expected
    for h in hits:
        assert h.facts["cause"] == "unrecognised object" and h.facts["causes"] == ("unrecognised object",)
        assert h.facts["unrecognised"] is True and h.facts["people"] == 0 and h.track_ids == ()
    if hits:  # the snapshot box is on the pasted box, and a good share of the zone changed
        x0, y0, x1, y1 = hits[0].box or (0, 0, 0, 0)
        bx0, by1 = BOX_AT[0] * W, BOX_AT[1] * H
        assert x0 <= bx0 + 10 and x1 >= bx0 + 0.12 * W - 10 and y0 <= by1 - 0.2 * H + 10 and y1 >= by1 - 10
        assert 0.15 <= hits[0].facts["changed_share"] <= 0.5


def test_reference_waits_until_learned(empty_exit: tuple[ImageArray, ...]) -> None:
    """A box there from the start is part of what the zone looks like; learning takes learn_s of empty, still zone."""
    rule = exit_rule(reference={"learn_s": 30})
    frames = edited(empty_exit, (5, 18), None)
    assert run(rule, [observe(k, img) for k, img in enumerate(frames)]) == []


def test_reference_off_and_without_images(empty_exit: tuple[ImageArray, ...]) -> None:
    frames = edited(empty_exit, (8, 16), None)
    assert run(exit_rule(reference={"enabled": False}), [observe(k, img) for k, img in enumerate(frames)]) == []
    assert run(exit_rule(), [observe(k, None) for k in range(len(frames))]) == []


def test_box_hidden_by_a_detection_is_explained(empty_exit: tuple[ImageArray, ...]) -> None:
    """Pixels behind a detection's box do not count: a detected thing is reported as what it is, not as a change."""
    frames = edited(empty_exit, (8, 16), None)
    x0, y1 = BOX_AT[0] * W, BOX_AT[1] * H
    box = [x0, y1 - 0.2 * H, x0 + 0.12 * W, y1]
    watched = Detections.from_arrays([box], [0.9], [COCO.index("dog")], [7])  # a class this rule does not watch
    obs = [observe(k, img, watched if k / FPS >= 8 else None) for k, img in enumerate(frames)]
    assert run(exit_rule(), obs) == []


# --- a person in the zone, real detections ---------------------------------------------------------------------


def test_person_in_the_zone_is_a_person(clip: Path) -> None:
    """The clip's first person walks in at about 7 s and stands at the table: with the table as the exit,
    YOLOX-nano's boxes and the tracker, the incident names that person, never an unrecognised object."""
    require(None if MODEL_FILE.is_file() else f"{MODEL_FILE} missing: run `storesight models fetch`")
    detector = OnnxYolox(MODEL_FILE, YoloxSettings.from_parameters(read_model_parameters(MODEL_CONFIG)), 2)
    zone = PolygonZone(ZoneConfig(id="exit", polygon=TABLE))
    rule = exit_rule(polygon=TABLE, reference={"learn_s": 3})
    tracker = Tracker()
    out: list[Any] = []
    for k, img in enumerate(_frames(clip, 26)):
        dets = detector.detect(img)
        people = tracker.update(dets[(dets.class_ids == 0) & (dets.scores >= 0.35)], k / FPS)
        obs = replace(observe(k, img), detections=people, inside={"exit": zone.contains(people, W, H)})
        out += rule.update(obs)
    out += rule.finish(T0 + timedelta(seconds=26))
    hits = [h for h in out if isinstance(h, RuleHit)]
    assert [h.state for h in hits] == ["start", "end"]
    start, end = hits
    assert start.facts["causes"] == end.facts["causes"] == ("person",) and start.facts["people"] == 1
    assert 7 <= secs(start.started_at) <= 14 and len(start.track_ids) == 1  # they walk in at about 7 s


# --- objects the detector names ----------------------------------------------------------------------------------


def suitcase(k: int, x: float = 650.0, cls: int = SUITCASE, tid: int = 3) -> Detections:
    """One tracked object with its feet at (x, 400)."""
    return Detections.from_arrays([[x - 30, 340, x + 30, 400]], [0.8], [cls], [tid])


def objects_over(seconds: float, at: Any) -> list[Observation]:
    """Observations at FPS; at(k) gives frame k's objects (None: nothing detected)."""
    return [observe(k, None, at(k)) for k in range(round(seconds * FPS))]


FLIPPING = (CHAIR, CHAIR, BENCH)  # the detector calls one stool a chair twice as often as a bench


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (lambda k: suitcase(k), [("start", 0.0, 5.0, "suitcase"), ("end", 0.0, 11.8, "suitcase")]),
        (lambda k: suitcase(k, x=400 + 8 * k), []),  # a trolley pushed through at 40 px/s
        (lambda k: suitcase(k, x=300), []),  # standing still next to the exit, not in it
        (lambda k: suitcase(k) if k < 15 else None, []),  # taken away after 3 s
        # unseen for 3 s (under OBJECT_GAP_S): the same object, still once its window holds it still again
        (
            lambda k: suitcase(k) if not 20 <= k < 35 else None,
            [("start", 2.0, 7.0, "suitcase"), ("end", 2.0, 11.8, "suitcase")],
        ),
        (lambda k: suitcase(k, cls=FLIPPING[k % 3]), [("start", 0.0, 5.0, "chair"), ("end", 0.0, 11.8, "chair")]),
        (lambda k: suitcase(k, cls=COCO.index("dog")), []),  # a class this rule does not watch
    ],
)  # fmt: skip
def test_stationary_objects_block(at: Any, expected: list[tuple[str, float, float, str]]) -> None:
    hits = run(exit_rule(reference={"enabled": False}), objects_over(12, at))
    assert [(h.state, secs(h.started_at), secs(h.at), h.facts["cause"]) for h in hits] == expected
    assert all(h.track_ids == () and h.facts["objects"] == h.facts["cause"] for h in hits)


def test_object_classes_are_the_rules_own() -> None:
    rule = exit_rule(reference={"enabled": False}, object_classes=["chair"])
    assert rule.object_classes == ("chair",)
    assert run(rule, objects_over(12, lambda k: suitcase(k))) == []


def test_person_and_object_together_are_both_named() -> None:
    rule = exit_rule(reference={"enabled": False})
    out: list[Any] = []
    zone = PolygonZone(ZoneConfig(id="exit", polygon=EXIT))
    for k in range(round(12 * FPS)):
        person = Detections.from_arrays([[580, 250, 620, 420]], [0.9], [0], [3])  # same id as the suitcase's track
        obs = replace(observe(k, None, suitcase(k)), detections=person, inside={"exit": zone.contains(person, W, H)})
        out += rule.update(obs)
    out += rule.finish(T0 + timedelta(seconds=12))
    start, _ = (h for h in out if isinstance(h, RuleHit))
    assert start.facts["causes"] == ("person", "suitcase") and start.track_ids == (3,)
    assert start.facts["who"] == "#3" and start.facts["objects"] == "suitcase"
    text = Explainer("UTC").render("blocked_exit", dict(start.facts) | {"camera": "cam1", "zone": "exit",
                                   "start": start.started_at, "end": start.at, "ended": False})  # fmt: skip
    assert text == (
        "Exit zone exit is blocked by a person standing still (#3) and a suitcase left in it for 5 s "
        "(threshold 5 s) on cam1, 14:00:00-14:00:05"
    )


def test_causes_at_the_end_include_what_came_later(empty_exit: tuple[ImageArray, ...]) -> None:
    """A suitcase blocks first; a box is put down next to it: the end names both."""
    frames = edited(empty_exit, (8, 18), None)
    obs = [observe(k, img, suitcase(k, x=575) if k / FPS >= 6 else None) for k, img in enumerate(frames)]
    start, end = run(exit_rule(), obs)
    assert start.facts["cause"] == "suitcase" and end.facts["cause"] == "suitcase, unrecognised object"


# --- explanations, config and the pipeline ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "text"),
    [
        ({"objects": "suitcase", "object_count": 1}, "blocked by a suitcase left in it for 40 s"),
        ({"objects": "potted plant", "object_count": 1}, "blocked by a potted plant left in it for 40 s"),
        ({"objects": "chair, bench", "object_count": 2}, "blocked by 2 objects (chair, bench) left in it for 40 s"),
        (
            {"unrecognised": True, "changed_share": 0.234},
            "blocked by an unrecognised object (23 % of the zone differs from its empty view) for 40 s",
        ),
    ],
)
def test_explanations_name_what_blocks(facts: dict[str, Any], text: str) -> None:
    base = {"camera": "cam1", "zone": "fire", "start": T0, "end": T0 + timedelta(seconds=40), "ended": True}
    base |= {"people": 0, "who": "", "objects": "", "object_count": 0, "unrecognised": False, "changed_share": 0.0}
    base |= {"duration_s": 40.0, "threshold_s": 30.0}
    assert Explainer("UTC").render("blocked_exit", base | facts) == (
        f"Exit zone fire was {text} (threshold 30 s) on cam1, 14:00:00-14:00:40"
    )


def _doc(**rule: Any) -> dict[str, Any]:
    zones = [{"id": "fire", "polygon": [[0, 0], [1, 0], [1, 1]]}]
    r = {"id": "fire-exit", "type": "blocked_exit", "camera": "cam1", "zone": "fire"} | rule
    return {"cameras": [{"id": "cam1", "source": "rtsp://127.0.0.1/x", "zones": zones}], "rules": [r]}


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ({}, None),
        ({"object_classes": []}, None),
        ({"object_classes": ["chair", "person"]}, "rules[0].object_classes[1]: people are always watched"),
        ({"object_classes": ["chair", "bench", "chair"]}, "rules[0].object_classes[2]: lists 'chair' twice"),
        ({"object_classes": "chair"}, "rules[0].object_classes: "),
        ({"reference": {"change_share": 0}}, "rules[0].reference.change_share: must be > 0"),
        ({"reference": {"change_share": 1}}, "rules[0].reference.change_share: must be < 1"),
        ({"reference": {"learn_s": -1}}, "rules[0].reference.learn_s: must be > 0"),
        ({"reference": {"pixel_delta": 0}}, "rules[0].reference.pixel_delta: must be > 0"),
        ({"reference": {"learn": 5}}, "rules[0].reference.learn: unknown key"),
    ],
)
def test_config_errors_name_the_key(rule: dict[str, Any], error: str | None) -> None:
    if error is None:
        parse_config(_doc(**rule))
        return
    with pytest.raises(ConfigError) as exc:
        parse_config(_doc(**rule))
    assert f"config: {error}" in str(exc.value)


def _pipeline(*rules: Any) -> CameraPipeline:
    cam = CameraConfig(id="cam1", source="x.mp4", zones=[ZoneConfig(id="exit", polygon=EXIT)])
    source = SimpleNamespace(status=SimpleNamespace(frames_dropped=0), is_file=True)  # frames come from the test
    return CameraPipeline(cam, source, None, DetectorConfig(), list(rules), None, Metrics())  # type: ignore[arg-type]


def test_pipeline_checks_object_classes_against_the_model() -> None:
    good, bad = exit_rule(object_classes=["suitcase", "chair"]), exit_rule(object_classes=["chair", "trolley"])
    pipeline = _pipeline(good)
    pipeline.resolve_classes(COCO)
    assert sorted(pipeline.object_ids.tolist()) == sorted([SUITCASE, CHAIR])
    with pytest.raises(ConfigError, match=r"rule 'fire-exit': object_classes\[1\]: the model has no class 'trolley'"):
        _pipeline(good, bad).resolve_classes(COCO)


class _Spy(BaseRule):
    """Passes observations to a rule and keeps them."""

    def __init__(self, rule: BaseRule) -> None:
        super().__init__(rule.config)
        self.rule, self.seen = rule, []  # type: list[Observation]
        self.object_classes = rule.object_classes

    def bind_zones(self, zones: Any) -> None:
        self.rule.bind_zones(zones)

    def update(self, obs: Observation) -> list[Any]:
        self.seen.append(obs)
        return list(self.rule.update(obs))

    def finish(self, t: datetime) -> list[Any]:
        return list(self.rule.finish(t))


class _Hits:
    """Stands in for the incident manager: keeps what the rules raised."""

    def __init__(self) -> None:
        self.hits: list[RuleHit] = []

    async def handle(self, hit: RuleHit, frame: Any, zone: Any, people: Any = None) -> None:
        self.hits.append(hit)


@pytest.mark.triton
async def test_pipeline_on_real_detections(triton: Any, empty_exit: tuple[ImageArray, ...]) -> None:
    """Through the real pipeline and Triton: a box pasted into the exit for 8 s raises one incident with the cause
    "unrecognised object"; every rule gets the frame; a loitering rule still sees people only, and the blocked_exit
    rule's objects come only from its classes."""
    from plugin.inference.triton import TritonInferenceClient
    from plugin.rules.loitering import LoiteringRuleConfig

    blocked = _Spy(exit_rule())
    loiter = _Spy(build_rule(LoiteringRuleConfig(id="l", type="loitering", camera="cam1", zone="exit", min_dwell_s=1)))
    cam = CameraConfig(id="cam1", source="x.mp4", zones=[ZoneConfig(id="exit", polygon=EXIT)])
    source = SimpleNamespace(status=SimpleNamespace(frames_dropped=0), is_file=True)
    client = TritonInferenceClient(triton.grpc_url, "yolox_nano")
    incidents = _Hits()
    pipeline = CameraPipeline(cam, source, client, DetectorConfig(), [blocked, loiter], incidents, Metrics())  # type: ignore[arg-type]
    try:
        info = await client.wait_ready(30)
        pipeline.resolve_classes(info.class_names)
        for k, img in enumerate(edited(empty_exit, (8, 16), None)):
            await pipeline.process(Frame("cam1", k, T0 + timedelta(seconds=k / FPS), float(k), img))
    finally:
        await client.close()
    person = info.class_names.index("person")
    assert all(o.image is not None for o in blocked.seen + loiter.seen)
    assert all((o.detections.class_ids == person).all() for o in loiter.seen)
    watched = {info.class_names.index(c) for c in blocked.object_classes}
    assert all(set(o.objects.class_ids.tolist()) <= watched for o in blocked.seen)
    starts = [h for h in incidents.hits if h.rule_id == "fire-exit" and h.state == "start"]
    assert [(secs(h.at), h.facts["cause"]) for h in starts] == [(13.0, "unrecognised object")]
