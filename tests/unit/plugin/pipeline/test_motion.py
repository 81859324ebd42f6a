"""Motion gating on the real clip: a still scene skips the detector, a person walking into a zone does not, the
re-detect interval and camera-native motion force detection, motion outside the analysed zones is ignored; and
end to end through the real Triton, the loitering incidents are the same with gating on and off."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from helpers import example, run_cli, write_config

from plugin.config.cameras import CameraConfig, MotionGatingConfig, ZoneConfig
from plugin.config.loader import parse_config
from plugin.errors import ConfigError
from plugin.pipeline.camera_signals import CameraSignals
from plugin.pipeline.motion import FIRST_FRAMES, GateDecision, MotionGate, analysed_mask, small_gray
from plugin.pipeline.tracking import TrackActivity, Tracker
from plugin.rules.fall import FallRuleConfig
from plugin.rules.line_crossing import LineCrossingRuleConfig
from plugin.rules.loitering import LoiteringRuleConfig
from plugin.types import CameraSignal, Detections, Frame

T0 = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
TABLE = ZoneConfig(id="table", polygon=[(0.39, 0.67), (0.83, 0.67), (0.83, 1.0), (0.39, 1.0)])
# top-left corner: a wall nobody walks along in the clip
CORNER = ZoneConfig(id="corner", polygon=[(0.0, 0.0), (0.15, 0.0), (0.15, 0.3), (0.0, 0.3)])
STILL = TrackActivity(np.zeros(0), 0)  # the tracker follows nobody


def still() -> TrackActivity:
    """The tracker's state with nobody tracked."""
    return STILL


@pytest.fixture(scope="module")
def frames(clip: Path) -> list[Frame]:
    """The clip's first 21 s at 5 fps with media-time stamps. Checked by eye (and by where pixels change): an
    empty room until 5.8 s, the first person walks in from the bottom edge to the table 6-8.4 s, stands there,
    and walks out to the right 18-20.4 s."""
    cap = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG)
    out: list[Frame] = []
    index = 0
    try:
        while index < 210:
            ok, image = cap.read()
            if not ok:
                break
            if index % 2 == 0:
                t = index / 10.0
                out.append(Frame("cam1", index, T0 + timedelta(seconds=t), t, image, pts_s=t))
            index += 1
    finally:
        cap.release()
    assert len(out) == 105
    return out


def at(frames: list[Frame], t: float) -> Frame:
    """The frame at media time t."""
    return frames[round(t * 5)]


def camera(zones: list[ZoneConfig] | None = None, **gating: Any) -> CameraConfig:
    """cam1 with the table zone (or `zones`) and the given gating settings."""
    return CameraConfig(
        id="cam1", source="clip.mp4", zones=[TABLE] if zones is None else zones,
        motion_gating=MotionGatingConfig(**gating),
    )  # fmt: skip


def run_gate(gate: MotionGate, seq: list[Frame], tracks: Any = still) -> list[GateDecision]:
    """Decisions over a sequence of frames, telling the gate whenever it chose to detect (as the pipeline does)."""
    decisions = []
    for frame in seq:
        d = gate.decide(frame, tracks)
        if d.detect:
            gate.detected(frame)
        decisions.append(d)
    return decisions


def test_a_still_scene_skips_all_but_the_first_frames_and_the_minimum_rate(frames: list[Frame]) -> None:
    gate = MotionGate(camera(max_skip_s=1.0))
    empty_room = frames[:29]  # 0-5.6 s
    decisions = run_gate(gate, empty_room)
    reasons = [d.reason for d in decisions]
    assert reasons[:FIRST_FRAMES] == ["first"] * FIRST_FRAMES
    detected_at = [f.pts_s for f, d in zip(empty_room, decisions, strict=True) if d.detect]
    # after the first frames, only the 1 s minimum rate: 0.4 s (the last first frame), then every 5th frame
    assert detected_at == [0.0, 0.2, 0.4, 1.4, 2.4, 3.4, 4.4, 5.4]
    assert set(reasons[FIRST_FRAMES:]) == {"still", "max_skip"}
    # nothing in the table changed: the measured change is sensor noise far below the threshold
    assert max(d.changed_share or 0.0 for d in decisions if d.reason == "still") < 0.0005


def test_the_same_frame_repeated_is_still(frames: list[Frame]) -> None:
    image = at(frames, 3.0).image
    seq = [Frame("cam1", k, T0 + timedelta(seconds=k / 5), k / 5, image) for k in range(8)]
    decisions = run_gate(MotionGate(camera(zones=[], max_skip_s=5.0)), seq)  # the whole frame, no re-detect
    assert [d.detect for d in decisions] == [True] * FIRST_FRAMES + [False] * 5
    assert all(d.changed_share == 0.0 for d in decisions[FIRST_FRAMES:])


def test_a_person_walking_into_the_zone_is_detected(frames: list[Frame]) -> None:
    gate = MotionGate(camera(max_skip_s=10.0))  # no minimum rate: only motion can make it detect
    run_gate(gate, frames[:30])  # the empty room, 0-5.8 s
    walking = frames[30:43]  # 6.0-8.4 s: from the bottom edge into the table zone
    decisions = run_gate(gate, walking)
    assert all(d.reason in ("pixels", "still") for d in decisions)
    # once the person reaches the (widened) zone every frame is detected, while they walk
    first = next(k for k, d in enumerate(decisions) if d.detect)
    assert walking[first].pts_s is not None and walking[first].pts_s <= 6.4
    assert all(d.detect for d in decisions[first:]), [(f.pts_s, d) for f, d in zip(walking, decisions, strict=True)]
    assert min(d.changed_share or 0.0 for d in decisions[first:]) >= 0.0005


def test_motion_outside_the_analysed_zones_is_ignored(frames: list[Frame]) -> None:
    start = frames[88 - FIRST_FRAMES : 88]  # the first frames, so the gate has a reference
    leaving = frames[88:103]  # 17.6-20.4 s: the person walks from the table out of the right edge
    corner = MotionGate(camera(zones=[CORNER], max_skip_s=10.0))
    run_gate(corner, start)
    assert not any(d.detect for d in run_gate(corner, leaving))
    whole = MotionGate(camera(zones=[], max_skip_s=10.0))  # no zone: the whole view counts
    run_gate(whole, start)
    assert sum(d.reason == "pixels" for d in run_gate(whole, leaving)) >= 10


def test_moving_or_unsettled_tracks_keep_detection_on(frames: list[Frame]) -> None:
    empty_room = frames[:20]
    walking = TrackActivity(np.asarray([0.0, 0.6]), 0)  # one person still, one walking (heights per second)
    decisions = run_gate(MotionGate(camera(max_skip_s=10.0)), empty_room, lambda: walking)
    assert [d.reason for d in decisions[FIRST_FRAMES:]] == ["tracks"] * (20 - FIRST_FRAMES)
    lost = TrackActivity(np.asarray([0.0]), 1)  # a lost or tentative track: the tracker needs the next frames
    decisions = run_gate(MotionGate(camera(max_skip_s=10.0)), empty_room, lambda: lost)
    assert {d.reason for d in decisions[FIRST_FRAMES:]} == {"tracks"}
    slow = TrackActivity(np.asarray([0.05]), 0)  # below min_track_speed (0.1): a person standing still
    decisions = run_gate(MotionGate(camera(max_skip_s=10.0)), empty_room, lambda: slow)
    assert not any(d.detect for d in decisions[FIRST_FRAMES:])


def test_tracker_speeds_read_walking_and_standing() -> None:
    tracker = Tracker()
    box = np.asarray([[100.0, 100.0, 180.0, 300.0]])  # 200 px tall
    for k in range(10):  # walking right at 100 px/s, half a height per second
        tracker.update(Detections.from_arrays(box + np.asarray([20.0 * k, 0, 20.0 * k, 0]), [0.9], [0]), k / 5)
    assert tracker.activity().uncertain == 0
    assert float(tracker.activity().speeds[0]) > 0.2
    standing = Tracker()
    for k in range(10):
        standing.update(Detections.from_arrays(box, [0.9], [0]), k / 5)
    assert float(standing.activity().speeds[0]) < 0.01


def test_hold_keeps_a_still_person_tracked_across_skipped_frames() -> None:
    box = Detections.from_arrays([[100.0, 100.0, 180.0, 300.0]], [0.9], [0])

    def run(hold: bool) -> list[int]:
        tracker = Tracker()  # drops a track unseen for 1.5 s
        ids: list[int] = []
        for k in range(3):
            out = tracker.update(box, k / 5)
        ids += out.track_ids.tolist() if out.track_ids is not None else []
        for k in range(3, 18):  # 3 s of skipped frames
            if hold:
                tracker.hold(k / 5)
        out = tracker.update(box, 18 / 5)
        return ids + (out.track_ids.tolist() if out.track_ids is not None else [])

    assert run(hold=True) == [1, 1]  # the same person, the same id
    assert run(hold=False) == [1]  # without hold the track aged out: a new tentative track, not yet shown


def test_max_skip_forces_detection(frames: list[Frame]) -> None:
    empty_room = frames[:29]
    # frames come every 0.2 s: 0.5 s has passed on the 3rd frame after a detection, 2 s on the 10th
    for max_skip_s, every in ((0.5, 3), (2.0, 10)):
        decisions = run_gate(MotionGate(camera(max_skip_s=max_skip_s)), empty_room)
        detected = [k for k, d in enumerate(decisions) if d.detect]
        assert detected[FIRST_FRAMES:] == list(range(FIRST_FRAMES - 1 + every, len(empty_room), every)), detected
        assert {d.reason for d in decisions if d.detect} == {"first", "max_skip"}


def test_camera_native_motion_source(frames: list[Frame]) -> None:
    onvif = {"host": "192.0.2.10", "events": {}}
    cam = CameraConfig.model_validate(
        {"id": "cam1", "onvif": onvif, "zones": [TABLE.model_dump()],
         "motion_gating": {"source": "camera", "max_skip_s": 10, "camera_hold_s": 1.0}}
    )  # fmt: skip
    state: dict[str, CameraSignals | None] = {"signals": None}
    gate = MotionGate(cam, signals=lambda: state["signals"])
    seq = frames[:20]  # the empty room: no pixel motion at all, and the camera source does not look at pixels
    decisions = run_gate(gate, seq[:6])
    assert [d.reason for d in decisions[FIRST_FRAMES:]] == ["camera"] * 3  # no camera state yet: detect to be safe
    signals = state["signals"] = CameraSignals("cam1")
    assert [d.detect for d in run_gate(gate, seq[6:8])] == [False, False]  # the camera says nothing moves
    motion = {"camera": "cam1", "kind": "motion", "topic": "VideoSource/MotionAlarm", "key": "motion/vs0"}
    signals.update(CameraSignal(**motion, at=seq[8].captured_at, active=True))
    assert [d.reason for d in run_gate(gate, seq[8:12])] == ["camera"] * 4  # while motion lasts
    signals.update(CameraSignal(**motion, at=seq[11].captured_at, active=False))
    after = run_gate(gate, seq[12:20])  # 2.4-3.8 s: held for camera_hold_s (1 s) after the motion ended at 2.2 s
    assert [d.detect for d in after] == [True] * 5 + [False] * 3  # 2.4-3.2 s detected, 3.4-3.8 s skipped


def test_camera_source_needs_onvif_events_and_errors_name_the_key() -> None:
    doc = example()
    doc["cameras"][0]["motion_gating"] = {"source": "both"}
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.motion_gating\.source: 'both' needs onvif\.events"):
        parse_config(doc)
    for bad, expected in (
        ({"max_skip_s": 0}, "cameras[0].motion_gating.max_skip_s: must be > 0"),
        ({"source": "radar"}, "cameras[0].motion_gating.source: input should be 'pixels', 'camera' or 'both'"),
        ({"treshold": 3}, "cameras[0].motion_gating.treshold: unknown key"),
        ({"min_changed_share": 2}, "cameras[0].motion_gating.min_changed_share: must be <= 1"),
    ):
        doc["cameras"][0]["motion_gating"] = bad
        with pytest.raises(ConfigError) as err:
            parse_config(doc)
        assert expected in str(err.value)
    doc["cameras"][0]["motion_gating"] = {"enabled": False, "source": "camera"}  # off: nothing to check
    assert parse_config(doc).cameras[0].motion_gating.enabled is False
    assert parse_config(example()).cameras[0].motion_gating.enabled is True  # on by default


def test_mask_covers_zones_and_lines_widened_or_the_whole_view() -> None:
    cam = camera(zones=[CORNER])
    line = LineCrossingRuleConfig(id="door", type="line_crossing", camera="cam1", line=((0.5, 1.0), (0.5, 0.5)))
    mask = analysed_mask(cam, [line], (160, 90), margin=0.1)
    assert mask is not None and mask.shape == (90, 160)
    assert mask[10, 10] and mask[80, 80]  # inside the corner zone, on the line
    assert mask[10, 35] and mask[80, 94]  # within 16 px (0.1 of the width) of them
    assert not mask[10, 60] and not mask[80, 110] and not mask[20, 80]  # farther away, and past the line's end
    loiter = LoiteringRuleConfig(id="l", type="loitering", camera="cam1", zone="corner", min_dwell_s=5)
    assert analysed_mask(cam, [loiter], (160, 90), margin=0.0) is not None
    fall = FallRuleConfig(id="f", type="fall", camera="cam1")  # a fall anywhere: the whole view
    assert analysed_mask(cam, [loiter, fall], (160, 90), margin=0.1) is None
    assert analysed_mask(camera(zones=[]), [], (160, 90), margin=0.1) is None


def test_small_gray_is_160_wide_and_keeps_the_aspect(frames: list[Frame]) -> None:
    small = small_gray(frames[0].image)
    assert small.shape == (90, 160) and small.dtype == np.uint8


# --- end to end: `run --once` on the clip with the real Triton, gating on and off ---------------------------------


def _once(tmp: Path, triton_url: str, clip: Path, gating: bool) -> dict[str, Any]:
    tmp.mkdir()
    doc = example()
    doc["storage"] = {"path": str(tmp / "data")}
    doc["triton"] = {"url": triton_url}
    doc["cameras"][0]["source"] = str(clip)
    doc["cameras"][0]["start_time"] = "2026-11-29T14:00:00+00:00"
    if not gating:
        doc["cameras"][0]["motion_gating"] = {"enabled": False}
    cfg = write_config(tmp / "store.yaml", doc)
    res = run_cli("run", "-c", str(cfg), "--once", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    listed = run_cli("incidents", "-c", str(cfg), "--json")
    m = re.search(r"cam1: detector on (\d+) of (\d+) frames, (\d+) skipped \((\d+)%\), gate ([\d.]+) ms", res.stderr)
    assert m is not None, res.stderr[-2000:]
    detected, frames, skipped = int(m[1]), int(m[2]), int(m[3])
    return {"incidents": json.loads(listed.stdout), "detected": detected, "frames": frames, "skipped": skipped,
            "gate_ms": float(m[5])}  # fmt: skip


@pytest.mark.triton
@pytest.mark.slow
def test_gating_keeps_the_loitering_incidents_and_skips_detector_calls(triton: Any, clip: Path, tmp_path: Path) -> None:
    on = _once(tmp_path / "on", triton.grpc_url, clip, gating=True)
    off = _once(tmp_path / "off", triton.grpc_url, clip, gating=False)
    print(
        f"motion gating on the clip: detector on {on['detected']} of {on['frames']} frames, {on['skipped']} "
        f"skipped ({100 * on['skipped'] / on['frames']:.0f}%), gate {on['gate_ms']:.2f} ms/frame; off: "
        f"{off['detected']} of {off['frames']}"
    )
    assert off["skipped"] == 0 and off["detected"] == off["frames"]
    assert on["frames"] == off["frames"] and on["detected"] + on["skipped"] == on["frames"]
    assert on["skipped"] > 0.3 * on["frames"]  # the clip is mostly one person standing still, or nobody

    def key(i: dict[str, Any]) -> tuple[Any, ...]:
        return i["rule_id"], i["start"], i["end"], tuple(i["track_ids"])

    assert len(off["incidents"]) == 6  # one per person at the table (tests/system/test_once.py)
    assert sorted(map(key, on["incidents"])) == sorted(map(key, off["incidents"]))
