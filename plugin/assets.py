"""Pinned files the project fetches itself: model weights and the demo clip, checked by sha256."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from plugin.errors import ModelError
from plugin.triton_server import REPO_ROOT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Asset:
    """A file with a pinned hash, a local name, a default download URL and where it goes."""

    name: str
    sha256: str
    url: str
    targets: tuple[Path, ...]  # relative to a model repository root (models) or empty (media)


MODELS = (
    Asset(
        name="yolox_nano.onnx",
        sha256="d39bee73564e338080378b0ad567fbb40e818b55bbfaf971de82a0267ed16b8a",
        url="https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/yolox_nano.onnx",
        targets=(Path("yolox_nano") / "1" / "yolox_nano.onnx",),
    ),
)

DEMO_MEDIA = Asset(
    name="one-by-one-person-detection.mp4",
    sha256="a5964aa259099a482a8b360ffc2c57b5a30f84d5919236a4dad01f8e929ac07c",
    url="https://github.com/intel-iot-devkit/sample-videos/raw/master/one-by-one-person-detection.mp4",
    targets=(),
)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check(path: Path, asset: Asset, accept: str | None) -> None:
    got = sha256_of(path)
    allowed = {asset.sha256} | ({accept.lower()} if accept else set())
    if got not in allowed:
        raise ModelError(
            f"{asset.name}: sha256 mismatch: expected {asset.sha256}, got {got} ({path}). If this is another "
            f"export you trust, accept it with --accept-sha256 {got}"
        )


def _download(url: str, dest: Path) -> None:
    log.info("downloading %s", url)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, tmp.open("wb") as out:
            shutil.copyfileobj(resp, out)
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"cannot download {url}: {exc}; use --from DIR with a local copy instead") from None
    tmp.replace(dest)


def fetch(asset: Asset, source_dir: Path | None, dest: Path, url: str | None = None, accept: str | None = None) -> Path:
    """Put `asset` at `dest`, copying from `source_dir` if given, else downloading; verified either way."""
    if dest.is_file():
        try:
            _check(dest, asset, accept)
            return dest
        except ModelError:
            log.warning("%s: existing file fails its checksum, fetching again", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmpdir:
        staged = Path(tmpdir) / asset.name
        if source_dir is not None:
            src = source_dir / asset.name
            if not src.is_file():
                raise ModelError(f"{asset.name} not found in {source_dir}")
            shutil.copyfile(src, staged)
        else:
            _download(url or asset.url, staged)
        _check(staged, asset, accept)
        staged.replace(dest)
    return dest


def default_models_dir() -> Path | None:
    """$STORESIGHT_MODELS_DIR when set."""
    env = os.environ.get("STORESIGHT_MODELS_DIR")
    return Path(env) if env else None


DEFAULT_REPOSITORY = REPO_ROOT / "triton_models" / "cpu"


def fetch_models(
    source_dir: Path | None, url: str | None = None, accept: str | None = None, repository: Path | None = None
) -> list[Path]:
    """Every model into every place the model repository (default: triton_models/cpu) expects it."""
    root = repository or DEFAULT_REPOSITORY
    out = []
    for asset in MODELS:
        for target in asset.targets:
            out.append(fetch(asset, source_dir, root / target, url, accept))
    return out


def fetch_demo_media(source_dir: Path | None, dest_dir: Path) -> Path:
    """The demo clip ($STORESIGHT_MEDIA_DIR or a download), verified."""
    return fetch(DEMO_MEDIA, source_dir, dest_dir / DEMO_MEDIA.name)
