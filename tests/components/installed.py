"""StoreSight as an admin installs it: the wheel built from this checkout (packaging/scripts/build_wheel.sh), put in
place by packaging/systemd/install.sh under a staging root in a temporary folder: a fresh virtual environment at
ROOT/opt/storesight/venv made with `python -m venv` and `pip install WHEEL[embedded]`, a config in
ROOT/etc/storesight, models fetched into ROOT/var/lib/storesight, the unit in ROOT/etc/systemd/system.

The wheel test and the systemd test share one installation per session (pip installs ~600 MB, most of a minute
even from pip's cache): tests/conftest.py registers this module as a plugin, so its fixtures are defined once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import MODEL_FILE, require

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_WHEEL = REPO_ROOT / "packaging" / "scripts" / "build_wheel.sh"
INSTALL = REPO_ROOT / "packaging" / "systemd" / "install.sh"
# Checkout paths the unit names, and where they are in the staging root
UNIT_PREFIXES = ("/opt/storesight", "/etc/storesight", "/var/lib/storesight")


def specs_dir() -> Path:
    """Where the build finds Milestone's XSD: $STORESIGHT_SPECS_DIR, else the workplace's ../shared/specs."""
    env = os.environ.get("STORESIGHT_SPECS_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "specs"


def outside_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment with nothing of this checkout in it: no PYTHONPATH or active venv, HOME in a temporary
    folder (the installed defaults write under ~/.local/share), the system's PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "XDG_DATA_HOME")}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env["HOME"] = str(home)
    env.update(extra)
    return env


@dataclass(frozen=True)
class Installed:
    """One staging installation."""

    wheel: Path
    root: Path
    log: str

    @property
    def venv(self) -> Path:
        """The virtual environment install.sh made."""
        return self.root / "opt" / "storesight" / "venv"

    def bin(self, name: str) -> Path:
        """A program of the installed virtual environment."""
        return self.venv / "bin" / name

    def rebase(self, text: str) -> str:
        """A unit's line with its absolute paths moved into the staging root."""
        for prefix in UNIT_PREFIXES:
            text = text.replace(prefix, f"{self.root}{prefix}")
        return text


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from this checkout by the project's own script."""
    xsd = specs_dir() / "milestone" / "AnalyticsEvent.xsd"
    require(None if xsd.is_file() else f"{xsd} not found (set STORESIGHT_SPECS_DIR): the wheel ships it")
    out = tmp_path_factory.mktemp("dist")
    res = subprocess.run(
        [str(BUILD_WHEEL), str(out)], capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "PYTHON": sys.executable},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    wheel = Path(res.stdout.strip().splitlines()[-1])
    assert wheel.is_file() and wheel.parent == out, res.stdout
    return wheel


@pytest.fixture(scope="session")
def installed(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel installed by packaging/systemd/install.sh under a staging root, models from this checkout's copy."""
    require(None if MODEL_FILE.is_file() else f"{MODEL_FILE} missing: run `storesight models fetch`")
    root = tmp_path_factory.mktemp("root")
    home = tmp_path_factory.mktemp("home")
    res = subprocess.run(
        [str(INSTALL), "--wheel", str(built_wheel), "--root", str(root), "--models-from", str(MODEL_FILE.parent)],
        capture_output=True, text=True, timeout=900, check=False, cwd=home,
        env=outside_env(home, PYTHON=shutil.which("python3.11") or "python3"),
    )  # fmt: skip
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    return Installed(built_wheel, root, res.stdout + res.stderr)
