"""The bench takes any video: an H.264/H.265 MP4 is served as it is, anything else is converted with ffmpeg first."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import require

from plugin.cli.bench.clip import probe_clip, servable_clip, stagger_offset, staggered_clips
from plugin.errors import SourceError
from plugin.inference.server import REPO_ROOT

VTEST = REPO_ROOT / "storesight-data" / "media" / "vtest.avi"


def test_an_h264_mp4_is_served_as_it_is(clip: Path, tmp_path: Path) -> None:
    assert servable_clip(clip, tmp_path) == (clip, None)
    assert not list(tmp_path.iterdir())


def test_vtest_avi_is_converted_to_an_h264_mp4(tmp_path: Path) -> None:
    require(None if VTEST.is_file() else f"{VTEST} missing: storesight media fetch --vtest")
    require(None if shutil.which("ffmpeg") else "ffmpeg is not installed (apt-get install ffmpeg)")
    served, original = servable_clip(VTEST, tmp_path)
    assert original == VTEST and served.parent == tmp_path and served.suffix == ".mp4"
    info = probe_clip(served)
    assert (info.codec, info.width, info.height, info.fps) == ("h264", 768, 576, 10.0)
    assert info.duration_s == pytest.approx(79.5, abs=0.2)  # 795 frames at 10 fps: nothing lost


def test_a_file_that_is_no_video_is_a_clear_error(tmp_path: Path) -> None:
    require(None if shutil.which("ffmpeg") else "ffmpeg is not installed (apt-get install ffmpeg)")
    junk = tmp_path / "notes.avi"
    junk.write_text("not a video")
    with pytest.raises(SourceError, match=r"--clip: ffmpeg could not convert .*notes\.avi to H\.264 MP4"):
        servable_clip(junk, tmp_path)


def test_staggered_cameras_start_the_clip_at_their_own_points(clip: Path, tmp_path: Path) -> None:
    require(None if shutil.which("ffmpeg") else "ffmpeg is not installed (apt-get install ffmpeg)")
    info = probe_clip(clip)
    offsets = [stagger_offset(i, info.duration_s) for i in range(8)]
    assert offsets[0] == 0.0 and len(set(offsets)) == 8
    gaps = np.diff(sorted([*offsets, info.duration_s]))
    assert gaps.max() < info.duration_s / 4  # spread over the clip, not bunched
    files = staggered_clips(info, info.duration_s, 4, tmp_path / "cache")
    assert files[0] == clip and len(set(files)) == 4
    for i, f in enumerate(files[1:], start=1):
        # cut at the keyframe before the offset (the demo clip has one a second), nothing re-encoded
        cut = probe_clip(f)
        assert (cut.codec, cut.width, cut.height) == (info.codec, info.width, info.height)
        assert info.duration_s - offsets[i] <= cut.duration_s <= info.duration_s - offsets[i] + 1.1
    made = [f.stat().st_mtime_ns for f in files[1:]]
    again = staggered_clips(info, info.duration_s, 6, tmp_path / "cache")  # a later trial with more cameras
    assert again[:4] == files and [f.stat().st_mtime_ns for f in again[1:4]] == made  # kept, not cut again
