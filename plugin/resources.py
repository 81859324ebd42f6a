"""Files StoreSight ships beside its code, found the same way whether it runs installed or from a source checkout.

The wheel carries them as package data under `plugin/_data/`, laid out as in the checkout (`triton_models/...`,
`packaging/dev/rtsp_server.py`); setup.py's build step puts them there. From a checkout (an editable install
included) they are read where they are in the source tree. Writable things (model weights, the database) never go
here: see `data_dir`.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

BUNDLE = "_data"  # the folder inside the `plugin` package that setup.py fills


def _package_dir() -> Path:
    """The `plugin` package's folder (always a real folder: pip installs wheels unpacked)."""
    return Path(str(resources.files("plugin")))


def checkout_root() -> Path | None:
    """The source checkout this code runs from, or None when it is an installed package."""
    root = _package_dir().parent
    return root if (root / "pyproject.toml").is_file() and (root / "triton_models").is_dir() else None


def shipped(relative: str) -> Path:
    """The shipped file or folder at `relative` (a checkout path such as `triton_models/cpu`): the wheel's copy when
    installed, else the checkout's. The path may not exist (a build without it): callers say what is missing."""
    bundled = _package_dir() / BUNDLE / relative
    if bundled.exists():
        return bundled
    root = checkout_root()
    return (root / relative) if root is not None else bundled


def data_dir() -> Path:
    """Where StoreSight keeps what it fetches or writes when no config says otherwise: $STORESIGHT_DATA_DIR, else
    $XDG_DATA_HOME/storesight (~/.local/share/storesight). The systemd unit and the image set /var/lib/storesight."""
    env = os.environ.get("STORESIGHT_DATA_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "storesight"
