"""Tests for the ByteTrack-style tracker in plugin.tracking."""

from __future__ import annotations

import numpy as np
import pytest

from plugin.pipeline.tracking import Tracker, TrackerConfig, greedy_assign, iou_matrix
from plugin.types import Detections

FPS = 30.0
W, H = 50.0, 150.0  # a person-sized box


def box(cx: float, cy: float, w: float = W, h: float = H) -> list[float]:
    """Corner box around a centre."""
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def dets(boxes: list[list[float]], scores: list[float] | None = None) -> Detections:
    """Detections of class 0 with the given boxes and scores (default 0.9)."""
    if scores is None:
        scores = [0.9] * len(boxes)
    return Detections.from_arrays(np.asarray(boxes, np.float32).reshape(-1, 4), scores, [0] * len(boxes))


def ids_of(out: Detections) -> list[int]:
    """Track ids of an update result."""
    assert out.track_ids is not None
    return [int(i) for i in out.track_ids]


# --- helpers ------------------------------------------------------------------------------------------------


def test_iou_matrix_known_values() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float64)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float64)
    expected = np.array([[1.0, 50 / 150, 0.0], [1.0, 50 / 150, 0.0]])
    np.testing.assert_allclose(iou_matrix(a, b), expected)


def test_greedy_assign_prefers_highest_iou_and_respects_threshold() -> None:
    iou = np.array(
        [
            [0.9, 0.8, 0.0],
            [0.85, 0.1, 0.0],
            [0.0, 0.0, 0.2],
        ]
    )
    rows, cols = greedy_assign(iou, min_iou=0.3)
    # row 0 takes col 0 (0.9); row 1 then has only 0.1 left, below threshold; row 2's 0.2 is below threshold
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 0)]
    rows, cols = greedy_assign(np.zeros((0, 3)), min_iou=0.3)
    assert rows.size == 0 and cols.size == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"low_thresh": 0.6, "high_thresh": 0.5},
        {"match_iou": 0.0},
        {"low_match_iou": 1.5},
        {"min_hits": 0},
        {"max_age_s": -1.0},
    ],
)
def test_config_rejects_invalid_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TrackerConfig(**kwargs)  # type: ignore[arg-type]


# --- tracker behaviour --------------------------------------------------------------------------------------


# A 150 px tall person walking at 1.5 m/s moves about 130 px/s; 600 px/s is a sprint at 20 px per frame.
@pytest.mark.parametrize("speed_px_s", [0.0, 60.0, 300.0, 600.0])
def test_steady_motion_keeps_one_id(speed_px_s: float) -> None:
    tracker = Tracker()
    seen: set[int] = set()
    outputs = 0
    for k in range(60):
        t = k / FPS
        d = dets([box(100 + speed_px_s * t, 300)])
        out = tracker.update(d, t)
        if len(out):
            outputs += 1
            seen.update(ids_of(out))
            # outputs are the detection boxes themselves, not the Kalman estimate
            np.testing.assert_array_equal(out.xyxy, d.xyxy)
    assert seen == {1}
    assert outputs == 60 - 2  # everything after confirmation on the third hit


@pytest.mark.parametrize("min_hits", [1, 2, 3, 5])
def test_unconfirmed_track_is_not_output(min_hits: int) -> None:
    tracker = Tracker(TrackerConfig(min_hits=min_hits))
    lengths = [len(tracker.update(dets([box(100 + 2 * k, 300)]), k / FPS)) for k in range(8)]
    assert lengths == [0] * (min_hits - 1) + [1] * (8 - min_hits + 1)


def test_tentative_track_dies_on_a_miss() -> None:
    tracker = Tracker()
    tracker.update(dets([box(100, 300)]), 0.0)
    tracker.update(dets([box(100, 300)]), 1 / FPS)
    tracker.update(Detections.empty(), 2 / FPS)  # noise that did not persist
    outs = [tracker.update(dets([box(100, 300)]), k / FPS) for k in range(3, 6)]
    # the first two hits were forgotten, so confirmation takes three fresh hits under a fresh id
    assert [len(o) for o in outs] == [0, 0, 1]
    assert ids_of(outs[-1]) == [2]


def test_parallel_people_keep_distinct_ids() -> None:
    tracker = Tracker()
    per_person: list[set[int]] = [set(), set()]
    for k in range(45):
        t = k / FPS
        x = 100 + 120 * t
        out = tracker.update(dets([box(x, 300), box(x + 60, 300)]), t)  # side by side, close but not touching
        if len(out):
            assert len(out) == 2
            for person, track_id in enumerate(ids_of(out)):
                per_person[person].add(track_id)
    assert len(per_person[0]) == 1 and len(per_person[1]) == 1
    assert per_person[0] != per_person[1]


@pytest.mark.parametrize("occlude", [False, True])
def test_crossing_people_keep_their_ids(occlude: bool) -> None:
    """Two people walk past each other; optionally the one behind is not detected while they overlap."""
    tracker = Tracker()
    id_a: set[int] = set()
    id_b: set[int] = set()
    for k in range(60):
        t = k / FPS
        a = box(100 + 240 * t, 300)  # walks right
        b = box(340 - 240 * t, 310)  # walks left, slightly lower (further in front)
        overlap = float(iou_matrix(np.array([a]), np.array([b]))[0, 0])
        hidden_a = occlude and overlap > 0.3
        d = dets([b] if hidden_a else [a, b])
        out = tracker.update(d, t)
        if not len(out):
            continue
        got = dict(zip(map(tuple, out.xyxy.tolist()), ids_of(out), strict=True))
        b_key = tuple(np.float32(v).item() for v in b)
        a_key = tuple(np.float32(v).item() for v in a)
        if b_key in got:
            id_b.add(got[b_key])
        if a_key in got:
            id_a.add(got[a_key])
    assert len(id_a) == 1 and len(id_b) == 1
    assert id_a != id_b


@pytest.mark.parametrize(
    ("gap_s", "feed_empty_frames", "same_id"),
    [
        (0.3, True, True),  # short occlusion, detector keeps reporting nothing
        (1.2, True, True),  # longer occlusion, still within max_age_s
        (1.2, False, True),  # stream stall: no updates at all during the gap
        (2.0, True, False),  # beyond max_age_s: the old track is gone
        (2.0, False, False),
    ],
)
def test_occlusion_gap(gap_s: float, feed_empty_frames: bool, same_id: bool) -> None:
    tracker = Tracker(TrackerConfig(max_age_s=1.5))
    speed = 60.0  # px/s, slow walk
    t = 0.0
    for k in range(10):
        t = k / FPS
        out = tracker.update(dets([box(100 + speed * t, 300)]), t)
    first = ids_of(out)
    assert first == [1]
    resume_at = t + gap_s
    if feed_empty_frames:
        while t + 1 / FPS < resume_at:
            t += 1 / FPS
            assert len(tracker.update(Detections.empty(), t)) == 0
    later: list[int] = []
    for k in range(3):
        t = resume_at + k / FPS
        later += ids_of(tracker.update(dets([box(100 + speed * t, 300)]), t))
    if same_id:
        # a lost confirmed track is output again on its first re-association
        assert later == [1, 1, 1]
    else:
        # a new track must be confirmed again, under a fresh id
        assert later == [2]


def test_low_score_detection_extends_but_never_starts_a_track() -> None:
    tracker = Tracker()
    # low-score only: nothing is ever started
    for k in range(10):
        assert len(tracker.update(dets([box(500, 300)], [0.3]), k / FPS)) == 0
    # a confident person is confirmed, then the detector becomes unsure (partial occlusion)
    for k in range(10, 15):
        out = tracker.update(dets([box(100 + k, 300)], [0.9]), k / FPS)
    assert ids_of(out) == [1]
    for k in range(15, 25):
        out = tracker.update(dets([box(100 + k, 300), box(500, 300)], [0.3, 0.3]), k / FPS)
        assert ids_of(out) == [1]  # the person continues, the low-score stranger never gets an id
        assert out.scores.tolist() == pytest.approx([0.3])


def test_scores_below_low_thresh_are_ignored() -> None:
    tracker = Tracker()
    for k in range(5):
        tracker.update(dets([box(100, 300)]), k / FPS)
    out = tracker.update(dets([box(100, 300)], [0.05]), 5 / FPS)
    assert len(out) == 0


def test_low_score_detection_does_not_revive_lost_track() -> None:
    tracker = Tracker()
    for k in range(5):
        tracker.update(dets([box(100, 300)]), k / FPS)
    tracker.update(Detections.empty(), 5 / FPS)
    assert len(tracker.update(dets([box(100, 300)], [0.3]), 6 / FPS)) == 0
    # a confident detection does revive it, under the same id
    assert ids_of(tracker.update(dets([box(100, 300)], [0.9]), 7 / FPS)) == [1]


def test_empty_input() -> None:
    tracker = Tracker()
    out = tracker.update(Detections.empty(), 0.0)
    assert len(out) == 0 and out.track_ids is not None and out.track_ids.dtype == np.int32
    for k in range(1, 4):
        tracker.update(dets([box(100, 300)]), k / FPS)
    out = tracker.update(Detections.empty(), 4 / FPS)
    assert len(out) == 0 and out.xyxy.shape == (0, 4)


def test_degenerate_boxes_are_ignored() -> None:
    tracker = Tracker(TrackerConfig(min_hits=1))
    out = tracker.update(dets([[10, 10, 10, 50], [0, 0, float("nan"), 5], box(100, 300)]), 0.0)
    assert ids_of(out) == [1]
    np.testing.assert_array_equal(out.xyxy, dets([box(100, 300)]).xyxy)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_variable_dt_keeps_one_id(seed: int) -> None:
    """Irregular frame intervals up to 0.3 s; at 400 px/s that is a jump of 2.4 box widths between frames."""
    rng = np.random.default_rng(seed)
    tracker = Tracker()
    speed = 400.0
    t = 0.0
    seen: set[int] = set()
    for k in range(80):
        # a few regular frames first so the filter learns the velocity
        t += 1 / FPS if k < 8 else float(rng.uniform(0.01, 0.3))
        out = tracker.update(dets([box(100 + speed * t, 300)]), t)
        seen.update(ids_of(out))
    assert seen == {1}


def test_time_based_prediction_survives_dropped_frames() -> None:
    """Without time-based prediction, skipping 5 frames of a fast walker would lose the track."""
    tracker = Tracker()
    speed = 300.0
    times = [k / FPS for k in range(10)] + [(10 + 6 * k) / FPS for k in range(1, 10)]
    results = [ids_of(tracker.update(dets([box(100 + speed * t, 300)]), t)) for t in times]
    assert all(r == [1] for r in results[2:])


def test_ids_are_never_reused() -> None:
    """People come and go (and the tracker is reset once); every person gets a fresh, larger id."""
    tracker = Tracker(TrackerConfig(max_age_s=0.2))
    ids_per_person: list[set[int]] = []
    t = 0.0
    for person in range(6):
        ids: set[int] = set()
        for _ in range(5):
            t += 1 / FPS
            ids.update(ids_of(tracker.update(dets([box(100, 300)]), t)))  # same place: only time separates them
        ids_per_person.append(ids)
        t += 1.0  # the person leaves long enough to be forgotten
        if person == 3:
            tracker.reset()
    assert ids_per_person == [{1}, {2}, {3}, {4}, {5}, {6}]


def test_clock_going_backwards_starts_over_with_fresh_ids() -> None:
    tracker = Tracker()
    for k in range(5):
        out = tracker.update(dets([box(100, 300)]), 10 + k / FPS)
    assert ids_of(out) == [1]
    outs = [tracker.update(dets([box(100, 300)]), k / FPS) for k in range(3)]
    assert [ids_of(o) for o in outs] == [[], [], [2]]
    with pytest.raises(ValueError):
        tracker.update(Detections.empty(), float("nan"))


def test_many_people_each_keep_their_id() -> None:
    rng = np.random.default_rng(7)
    n = 50
    starts = np.stack([np.arange(n) % 10 * 120 + 50, np.arange(n) // 10 * 200 + 100], axis=1).astype(float)
    velocities = rng.uniform(-40, 40, size=(n, 2))
    tracker = Tracker()
    ids_per_person: list[set[int]] = [set() for _ in range(n)]
    for k in range(40):
        t = k / FPS
        centres = starts + velocities * t
        out = tracker.update(dets([box(x, y, 40, 120) for x, y in centres]), t)
        if len(out):
            assert len(out) == n
            for person, track_id in enumerate(ids_of(out)):
                ids_per_person[person].add(track_id)
    assert all(len(s) == 1 for s in ids_per_person)
    assert len(set.union(*ids_per_person)) == n
