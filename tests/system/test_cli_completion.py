"""Shell completion: `storesight completion bash` registers argcomplete's completer, and a TAB in bash (the
completion function run as bash runs it, calling the installed `storesight`) offers the subcommands and options."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

BIN = Path(sys.executable).parent  # the venv's bin, where pip put the `storesight` entry point


def _complete(line: str) -> list[str]:
    """What bash offers for `line` (the cursor at its end), as the completion function registered by the script."""
    if shutil.which("bash") is None:
        require("bash is not installed")
    words = line.split(" ")
    script = (
        'eval "$(storesight completion bash)"\n'
        'COMP_LINE="$LINE"; COMP_POINT=${#COMP_LINE}; read -ra COMP_WORDS <<< "$LINE"\n'
        '[[ "$LINE" == *" " ]] && COMP_WORDS+=("")\n'
        "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
        '_python_argcomplete storesight "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "LINE": line}
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert words[0] == "storesight"
    return [w.strip() for w in out.stdout.splitlines() if w.strip()]


def test_the_script_registers_the_completer() -> None:
    script = subprocess.run(
        [BIN / "storesight", "completion", "bash"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "complete " in script and "-F _python_argcomplete storesight" in script


def test_tab_offers_every_subcommand() -> None:
    offered = set(_complete("storesight "))
    expected = {
        "run", "detect", "incidents", "outbox", "onvif", "discover", "insights", "vms", "bench", "check-config",
        "config", "models", "media", "completion",
    }  # fmt: skip
    assert expected <= offered, offered


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("storesight c", {"check-config", "config", "completion"}),
        ("storesight config ", {"schema"}),
        ("storesight outbox ", {"list", "retry"}),
        ("storesight outbox list --st", {"--state"}),
        ("storesight outbox list --state ", {"pending", "delivered", "dead"}),
        ("storesight completion ", {"bash", "zsh", "fish"}),
    ],
)
def test_tab_offers_what_fits_here(line: str, expected: set[str]) -> None:
    assert set(_complete(line)) - {"-h", "--help"} == expected  # argcomplete offers help where a word may start


@pytest.mark.parametrize(("shell", "registers"), [("zsh", "#compdef storesight"), ("fish", "complete --command")])
def test_other_shells_get_their_own_script(shell: str, registers: str) -> None:
    script = subprocess.run(
        [BIN / "storesight", "completion", shell], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert registers in script and "storesight" in script
