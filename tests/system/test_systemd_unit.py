"""The systemd unit and its install script: `systemd-analyze verify` passes with nothing to say, the hardening is
scored by `systemd-analyze security --offline`, and the unit's ExecStart line runs for real (paths moved into the
staging root install.sh filled, the unit's environment and working directory, the demo camera, --once).

systemd is not PID 1 here, so the sandboxing itself (ProtectSystem, PrivateTmp, ...) is scored, not exercised;
NoNewPrivileges is applied to the run with setpriv.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from components.installed import Installed, outside_env
from conftest import require

REPO_ROOT = Path(__file__).resolve().parents[2]
UNIT = REPO_ROOT / "packaging" / "systemd" / "storesight.service"
DEMO = REPO_ROOT / "packaging" / "demo" / "store-demo.yaml"
MAX_EXPOSURE = 2.0  # systemd-analyze's "OK" band ends here; the unit scores 1.4 today
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file's sections as key -> values (a key may repeat, as SystemCallFilter does)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _analyze() -> str:
    path = shutil.which("systemd-analyze")
    require(None if path else "systemd-analyze not found (apt-get install systemd)")
    require(None if SYSTEM_UNITS.is_dir() else f"{SYSTEM_UNITS} not found")
    assert path is not None
    return path


def _verify_root(installed: Installed, tmp_path: Path, unit_text: str) -> Path:
    """A root for `systemd-analyze verify --root`: the installed unit (or a variant), the ExecStart binary where the
    unit names it, and the system's own units for the targets it orders against (ENVIRONMENT.md)."""
    root = tmp_path / "verify-root"
    shutil.copytree(SYSTEM_UNITS, root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    (root / "etc" / "systemd" / "system" / "storesight.service").write_text(unit_text)
    exec_start = parse_unit(unit_text)["Service"]["ExecStart"][0].split()[0]
    target = root / exec_start.lstrip("/")
    target.parent.mkdir(parents=True)
    shutil.copy2(installed.bin("storesight"), target)  # a copy: systemd reads a link's target inside the root
    return root


def test_install_sh_put_the_unit_config_and_models_in_place(installed: Installed) -> None:
    unit = installed.root / "etc" / "systemd" / "system" / "storesight.service"
    assert unit.read_text() == UNIT.read_text()
    assert (installed.root / "etc" / "storesight" / "storesight.yaml").stat().st_mode & 0o777 == 0o640
    repo = installed.root / "var" / "lib" / "storesight" / "triton_models" / "cpu" / "yolox_nano"
    assert (repo / "config.pbtxt").is_file() and (repo / "1" / "yolox_nano.onnx").is_file()


def test_systemd_analyze_verify_has_nothing_to_say(installed: Installed, tmp_path: Path) -> None:
    analyze = _analyze()
    root = _verify_root(installed, tmp_path, UNIT.read_text())
    res = subprocess.run([analyze, "verify", f"--root={root}", "storesight.service"], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert res.returncode == 0 and res.stdout + res.stderr == "", res.stdout + res.stderr


def test_a_misspelt_key_is_caught_by_the_same_check(installed: Installed, tmp_path: Path) -> None:
    # systemd only warns about an unknown key (exit 0): the check above must look at the output, as this shows
    analyze = _analyze()
    root = _verify_root(installed, tmp_path, UNIT.read_text().replace("ProtectSystem=", "ProtectSytem="))
    res = subprocess.run([analyze, "verify", f"--root={root}", "storesight.service"], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert res.returncode == 0 and "Unknown key 'ProtectSytem'" in res.stdout + res.stderr


def test_hardening_score(installed: Installed, tmp_path: Path) -> None:
    analyze = _analyze()
    root = _verify_root(installed, tmp_path, UNIT.read_text())
    res = subprocess.run(
        [analyze, "security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}", f"--root={root}",
         "--no-pager", "storesight.service"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for storesight\.service: (\d+\.\d+)", res.stdout)
    assert found, res.stdout[-2000:] + res.stderr
    print(f"systemd-analyze security: exposure {found.group(1)} (at most {MAX_EXPOSURE})")
    assert res.returncode == 0 and float(found.group(1)) <= MAX_EXPOSURE
    service = parse_unit(UNIT.read_text())["Service"]
    for key, want in (("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"), ("PrivateTmp", "yes"),
                      ("ProtectHome", "yes"), ("User", "storesight"), ("CapabilityBoundingSet", "")):  # fmt: skip
        assert service.get(key) == [want], f"{key}={service.get(key)}"


def test_the_installed_example_config_checks(installed: Installed, tmp_path: Path) -> None:
    config = installed.root / "etc" / "storesight" / "storesight.yaml"
    res = subprocess.run(
        [str(installed.bin("storesight")), "check-config", str(config)], capture_output=True, text=True, check=False,
        env=outside_env(tmp_path, CAM1_USER="viewer", CAM1_PASSWORD="secret"), timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr


@pytest.mark.slow
@pytest.mark.triton
@pytest.mark.timeout(1200)
def test_exec_start_runs_as_the_unit_would(installed: Installed, clip: Path, ffmpeg: str, tmp_path: Path) -> None:
    service = parse_unit(UNIT.read_text())["Service"]
    # the demo's camera and rules in the installed config (its site and storage lines kept: data in the state dir)
    config_path = installed.root / "etc" / "storesight" / "storesight.yaml"
    config = yaml.safe_load(config_path.read_text())
    demo = yaml.safe_load(DEMO.read_text())
    config.update(cameras=demo["cameras"], rules=demo["rules"])
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    # the first 25 s of the clip: one person stands at the table from 8 s to 19 s
    short = tmp_path / "short.mp4"
    cut_cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-i", str(clip), "-t", "25", "-c", "copy", str(short)]
    cut = subprocess.run(cut_cmd, capture_output=True, text=True, check=False)
    assert cut.returncode == 0, cut.stderr

    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "STORESIGHT_DEMO_CLIP": str(short)}
    for assignment in service.get("Environment", []):
        key, _, value = assignment.partition("=")
        env[key] = installed.rebase(value)
    workdir = Path(installed.rebase(service["WorkingDirectory"][0]))
    command = installed.rebase(service["ExecStart"][0]).split()
    setpriv = shutil.which("setpriv")
    prefix = [setpriv, "--no-new-privs"] if setpriv else []
    res = subprocess.run([*prefix, *command, "--once"], capture_output=True, text=True, cwd=workdir, env=env,
                         timeout=900, check=False)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "analysed 1 source(s)" in res.stderr and "1 incident(s)" in res.stderr
    data = installed.root / "var" / "lib" / "storesight"
    assert (data / "storesight.db").is_file() and any((data / "evidence").rglob("*.jpg"))
