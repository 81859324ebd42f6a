"""`storesight models fetch` and `media fetch`: local copy or download, always checked by sha256."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import MODEL_FILE, require
from helpers import run_cli

PINNED = "d39bee73564e338080378b0ad567fbb40e818b55bbfaf971de82a0267ed16b8a"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving a directory (stands in for the upstream release host)."""
    require(None if MODEL_FILE.is_file() else "model file missing: run `storesight models fetch`")
    root = tmp_path / "www"
    root.mkdir()
    (root / "yolox_nano.onnx").write_bytes(MODEL_FILE.read_bytes())
    (root / "other.onnx").write_bytes(b"not the pinned export")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_download_is_verified_and_placed(served: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = served
    repo = tmp_path / "repo"
    res = run_cli("models", "fetch", "--url", f"{base}/yolox_nano.onnx", "--repository", str(repo))
    assert res.returncode == 0, res.stderr
    placed = repo / "yolox_nano" / "1" / "yolox_nano.onnx"
    assert hashlib.sha256(placed.read_bytes()).hexdigest() == PINNED
    assert f"ok {placed}" in res.stdout


def test_another_export_is_refused_naming_both_hashes_unless_accepted(served: tuple[str, Path], tmp_path: Path) -> None:
    base, root = served
    other = hashlib.sha256((root / "other.onnx").read_bytes()).hexdigest()
    repo = tmp_path / "repo"
    res = run_cli("models", "fetch", "--url", f"{base}/other.onnx", "--repository", str(repo))
    assert res.returncode == 1
    assert PINNED in res.stderr and other in res.stderr and "--accept-sha256" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (repo / "yolox_nano" / "1" / "yolox_nano.onnx").exists()  # nothing half-written left behind
    ok = run_cli("models", "fetch", "--url", f"{base}/other.onnx", "--repository", str(repo), "--accept-sha256", other)
    assert ok.returncode == 0, ok.stderr


def test_local_directory_and_unreachable_download(tmp_path: Path, served: tuple[str, Path]) -> None:
    _, root = served
    res = run_cli("models", "fetch", "--from", str(root), "--repository", str(tmp_path / "r1"))
    assert res.returncode == 0, res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = run_cli("models", "fetch", "--from", str(empty), "--repository", str(tmp_path / "r2"))
    assert missing.returncode == 1 and "yolox_nano.onnx not found in" in missing.stderr
    down = run_cli("models", "fetch", "--url", "http://127.0.0.1:9/nothing.onnx", "--repository", str(tmp_path / "r3"))
    assert down.returncode == 1 and "cannot download" in down.stderr and "--from DIR" in down.stderr


def test_media_fetch_from_a_directory(clip: Path, tmp_path: Path) -> None:
    res = run_cli("media", "fetch", "--from", str(clip.parent), "--dest", str(tmp_path / "media"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "media" / clip.name).stat().st_size == clip.stat().st_size


VTEST_SHA256 = "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf"


def test_vtest_from_a_directory_must_match_its_hash(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "vtest.avi").write_bytes(b"RIFF but not the clip")
    dest = tmp_path / "media"
    res = run_cli("media", "fetch", "--vtest", "--from", str(src), "--dest", str(dest))
    assert res.returncode == 1
    assert VTEST_SHA256 in res.stderr and "sha256 mismatch" in res.stderr and "Traceback" not in res.stderr
    assert not (dest / "vtest.avi").exists()


@pytest.mark.slow
def test_vtest_is_unpacked_from_debians_opencv_doc(tmp_path: Path) -> None:
    # the real path CI takes: apt-get download (about 96 MB) and dpkg-deb -x, then the pinned hash
    require(None if shutil.which("apt-get") and shutil.which("dpkg-deb") else "apt-get/dpkg-deb not available")
    empty = tmp_path / "empty"  # a media directory without the clip: the package is the fallback
    empty.mkdir()
    # a relative --dest, as setup.sh passes it (the tools run inside the temporary directory)
    dest = os.path.relpath(tmp_path / "media")
    res = run_cli("media", "fetch", "--vtest", "--from", str(empty), "--dest", dest, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    placed = tmp_path / "media" / "vtest.avi"
    assert hashlib.sha256(placed.read_bytes()).hexdigest() == VTEST_SHA256
    assert Path(res.stdout.strip()).resolve() == placed.resolve()
    assert [p.name for p in (tmp_path / "media").iterdir()] == ["vtest.avi"]  # no package or temp dir left behind
