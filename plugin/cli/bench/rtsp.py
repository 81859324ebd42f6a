"""The bench's child processes: the GStreamer RTSP stand-in serving one stream per camera."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from plugin.errors import SourceError
from plugin.resources import shipped

log = logging.getLogger(__name__)

# The GStreamer RTSP stand-in: package data when installed, packaging/dev/ in a checkout.
RTSP_SCRIPT = shipped("packaging/dev/rtsp_server.py")
# Debian's interpreter: PyGObject and the GStreamer typelibs come from apt, not from the virtual environment.
SYSTEM_PYTHON = Path("/usr/bin/python3")
RTSP_READY_TIMEOUT_S = 30.0

# --- child processes -----------------------------------------------------------------------------------------


class Children:
    """Every child process the benchmark starts, so that any way out (Ctrl-C twice included) can end them."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []
        self._lock = threading.Lock()

    def add(self, proc: subprocess.Popen[Any]) -> None:
        """Remember a started process."""
        with self._lock:
            self._procs.append(proc)

    def stop_all(self, timeout_s: float = 5.0) -> None:
        """SIGTERM each live child, then SIGKILL what is left after `timeout_s` (blocking)."""
        with self._lock:
            procs, self._procs = self._procs, []
        live = [p for p in procs if p.poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
        deadline = time.monotonic() + timeout_s
        for p in live:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _child_env() -> dict[str, str]:
    # The venv's PYTHONPATH/PYTHONHOME would point Debian's python3 at the wrong standard library.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}


class RtspCameras:
    """packaging/dev/rtsp_server.py serving one file per camera (one mount each, so no frame is shared)."""

    def __init__(self, clips: Sequence[Path], workdir: Path, children: Children) -> None:
        self.clips = list(clips)
        self.cameras = len(self.clips)
        self.workdir = workdir
        self.children = children
        self.process: subprocess.Popen[str] | None = None
        self.base_url = ""
        self._stderr: IO[str] | None = None

    def url(self, index: int) -> str:
        """The stream of camera `index`."""
        return f"{self.base_url}/cam{index:02d}"

    def start(self) -> None:
        """Launch the server and wait for its READY line (blocking)."""
        if not SYSTEM_PYTHON.exists() or not RTSP_SCRIPT.is_file():
            raise SourceError(
                f"--source rtsp needs {SYSTEM_PYTHON} with python3-gi (apt-get install python3-gi "
                f"gir1.2-gst-rtsp-server-1.0) and {RTSP_SCRIPT}; use --source file otherwise"
            )
        cmd = [str(SYSTEM_PYTHON), str(RTSP_SCRIPT), "--address", "127.0.0.1", "--port", "0"]
        for i, clip in enumerate(self.clips):
            cmd += ["--mount", f"/cam{i:02d}={clip}"]
        # stderr to a file: nothing reads it while the trial runs, and a full pipe would stall the server.
        self._stderr = (self.workdir / "rtsp_server.log").open("w+", encoding="utf-8", errors="replace")
        self.process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=_child_env(),
            start_new_session=True,  # Ctrl-C reaches the benchmark only, which stops the server in order
        )
        self.children.add(self.process)
        line = self._first_line(RTSP_READY_TIMEOUT_S)
        if line is None or not line.startswith("READY "):
            self.stop()
            raise SourceError(f"the RTSP server did not start:\n{self.log_tail()}")
        self.base_url = line.split(maxsplit=1)[1].strip()

    def _first_line(self, timeout_s: float) -> str | None:
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        got: list[str] = []
        # a thread, because a pipe read has no timeout of its own
        reader = threading.Thread(target=lambda: got.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        return got[0] if got else None

    def log_tail(self, lines: int = 10) -> str:
        """The server's last log lines."""
        path = self.workdir / "rtsp_server.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM (the server closes its clients and exits 0), SIGKILL after 5 s (blocking)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
