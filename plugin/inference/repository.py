"""The Triton model repository: the flavours StoreSight ships (configs and python-backend code, no weights) and the
writable copy that `storesight models fetch` fills with weights and the embedded server serves."""

from __future__ import annotations

import filecmp
import logging
import os
import shutil
from collections.abc import Collection
from pathlib import Path

from plugin.errors import ModelError
from plugin.resources import checkout_root, data_dir, shipped

log = logging.getLogger(__name__)

# Which flavour for which server (docs/triton.md): `cpu` runs in the embedded server and any Triton with a Python
# environment for the python backend; `onnx` and `gpu` are one ONNX graph each for NVIDIA's stock Triton images.
FLAVOURS = ("cpu", "onnx", "gpu")
# What a model folder may hold besides the weights: the files StoreSight ships and copies into a repository.
SHIPPED_FILES = ("config.pbtxt", "*/model.py")


def shipped_repository(flavour: str) -> Path:
    """The shipped configs of a flavour (package data installed, `triton_models/<flavour>` in a checkout)."""
    if flavour not in FLAVOURS:
        raise ModelError(f"unknown model flavour {flavour!r} (flavours: {', '.join(FLAVOURS)})")
    return shipped(f"triton_models/{flavour}")


def default_model_repository(flavour: str = "cpu") -> Path:
    """Where a flavour's weights go and the embedded server looks: $STORESIGHT_DATA_DIR/triton_models/<flavour> when
    set; else a checkout's own `triton_models/<flavour>` (weights beside the configs, gitignored); else (installed)
    the data directory's `triton_models/<flavour>` (~/.local/share/storesight/...)."""
    if flavour not in FLAVOURS:
        raise ModelError(f"unknown model flavour {flavour!r} (flavours: {', '.join(FLAVOURS)})")
    root = checkout_root()
    if root is not None and not os.environ.get("STORESIGHT_DATA_DIR"):
        return root / "triton_models" / flavour
    return data_dir() / "triton_models" / flavour


def _same_place(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve() if a.exists() and b.exists() else False


def install_configs(flavour: str, repository: Path, models: Collection[str] | None = None) -> list[Path]:
    """Copy the flavour's shipped configs and python-backend code into `repository` (nothing when it is the shipped
    folder itself, as in a checkout), for `models` (folder names) or all. Only models whose weights are there belong
    in a repository: a stock Triton stops at a model it cannot load. A file that differs from the shipped one is
    replaced, and said so: the configs belong to the installed StoreSight (its contract and parameters); a tuned copy
    lives in a repository of its own."""
    source = shipped_repository(flavour)
    if not source.is_dir():
        raise ModelError(f"the {flavour} model configs are missing from this installation ({source}); reinstall")
    if _same_place(source, repository):
        return []
    written = []
    for pattern in SHIPPED_FILES:
        for src in sorted(source.glob(f"*/{pattern}")):
            if models is not None and src.relative_to(source).parts[0] not in models:
                continue
            dest = repository / src.relative_to(source)
            if dest.is_file() and filecmp.cmp(src, dest, shallow=False):
                continue
            if dest.is_file():
                log.warning("%s differed from the shipped %s flavour: replaced", dest, flavour)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            shutil.copyfile(src, tmp)
            tmp.replace(dest)
            written.append(dest)
    return written


def missing_repository_hint(repository: Path) -> str:
    """The sentence an error about a missing or empty repository ends with."""
    return f"run `storesight models fetch` (it fills {repository}), or set triton.model_repository"
