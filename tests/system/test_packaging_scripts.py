"""The shell scripts an admin or IT runs (install, wheel build, GPU sizing) pass shellcheck, and refuse clearly what
they cannot do. The GPU script's run itself needs an NVIDIA GPU, which no test machine here has (docs/triton.md)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import require

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [
    REPO_ROOT / "packaging" / "systemd" / "install.sh",
    REPO_ROOT / "packaging" / "scripts" / "build_wheel.sh",
    REPO_ROOT / "packaging" / "scripts" / "gpu_bench.sh",
]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_finds_nothing(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    require(None if shellcheck else "shellcheck not found (apt-get install shellcheck)")
    assert shellcheck is not None
    res = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout


def test_gpu_bench_says_it_needs_a_gpu(tmp_path: Path) -> None:
    # a PATH with only what the script uses before its first check, so a machine's nvidia-smi cannot be found
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "sed"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    res = subprocess.run(
        ["/bin/bash", str(SCRIPTS[2])], capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": str(bin_dir)},
    )  # fmt: skip
    assert res.returncode == 1 and "nvidia-smi not found: this needs an NVIDIA GPU" in res.stderr


def test_install_refuses_a_missing_wheel_and_unknown_arguments(tmp_path: Path) -> None:
    install = str(SCRIPTS[0])
    missing = subprocess.run([install, "--wheel", str(tmp_path / "nope.whl"), "--root", str(tmp_path)],
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert missing.returncode == 2 and "no such wheel" in missing.stderr
    unknown = subprocess.run([install, "--whee", "x"], capture_output=True, text=True, timeout=60, check=False)
    assert unknown.returncode == 2 and "unknown argument --whee" in unknown.stderr
    assert not any(tmp_path.iterdir())  # nothing half-installed
