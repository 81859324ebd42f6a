"""plugin/cli/pg_local.py: a cluster's folder whose starter died is swept by the next start; a live one is kept."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import require

from plugin.cli.pg_local import OWNER_FILE, PREFIX, postgres_missing, process_alive, sweep_stale
from plugin.inference.server import REPO_ROOT


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_the_folders_of_dead_starters_are_swept(tmp_path: Path) -> None:
    dead, live, unknown = (tmp_path / f"{PREFIX}{n}" for n in ("dead", "live", "unknown"))
    for folder in (dead, live, unknown):
        (folder / "data").mkdir(parents=True)
    (dead / OWNER_FILE).write_text(f"{_dead_pid()}\n")
    (live / OWNER_FILE).write_text(f"{os.getpid()}\n")
    other = tmp_path / "storesight-other"  # not a cluster folder at all
    other.mkdir()
    (other / OWNER_FILE).write_text(f"{_dead_pid()}\n")
    assert sweep_stale(tmp_path) == [dead]
    assert not dead.exists() and live.is_dir() and unknown.is_dir() and other.is_dir()


def test_a_starter_killed_hard_leaves_a_folder_the_next_start_sweeps() -> None:
    require(postgres_missing())
    code = "from plugin.cli.pg_local import LocalPostgres\np = LocalPostgres()\np.start()\nprint(p.root, flush=True)\n"
    code += "import time\ntime.sleep(120)\n"
    starter = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        assert starter.stdout is not None
        root = Path(starter.stdout.readline().strip())
        assert root.name.startswith(PREFIX) and (root / "data" / "postmaster.pid").is_file()
    finally:
        starter.kill()  # SIGKILL: no stop(), no clean-up
        starter.wait()
    assert root.is_dir()  # what a killed run left behind
    server = int((root / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
    deadline = time.monotonic() + 20
    while process_alive(server) and time.monotonic() < deadline:  # SIGQUIT from its parent's death
        time.sleep(0.05)
    assert not process_alive(server), "the server outlived its starter"
    assert root in sweep_stale(root.parent)
    assert not root.exists()
