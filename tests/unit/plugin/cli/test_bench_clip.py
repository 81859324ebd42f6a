"""The bench takes any video: an H.264/H.265 MP4 is served as it is, anything else is converted with ffmpeg first."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import require

from plugin.cli.bench.clip import probe_clip, servable_clip
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
