"""A real RTSP server (GStreamer gst-rtsp-server, ``packaging/dev/rtsp_server.py``) for tests that need a camera."""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = REPO_ROOT / "packaging" / "dev" / "rtsp_server.py"
# Debian's interpreter, because PyGObject and the GStreamer typelibs come from apt and are not in the venv.
SYSTEM_PYTHON = Path("/usr/bin/python3")
HOST = "127.0.0.1"
# SIGTERM lets the server close its clients and remove its temporary files; past this it is killed.
STOP_TIMEOUT_S = 5.0

_PROBE = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("filesrc", "qtdemux", "h264parse", "rtph264pay") if Gst.ElementFactory.find(e) is None]
if missing:
    raise SystemExit("missing GStreamer elements: " + ", ".join(missing))
"""


class RtspServerError(RuntimeError):
    """The RTSP server did not start, or died."""


def _child_env() -> dict[str, str]:
    # The venv's PYTHONPATH/PYTHONHOME would point Debian's python3 at the wrong standard library or site-packages.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}


@functools.cache
def rtsp_available() -> str | None:
    """Return None when the real RTSP server can run here, else the reason it cannot."""
    if not SYSTEM_PYTHON.exists():
        return f"{SYSTEM_PYTHON} not found (the RTSP server needs Debian's python3 with python3-gi)"
    if not SERVER_SCRIPT.is_file():
        return f"{SERVER_SCRIPT} not found"
    try:
        probe = subprocess.run(
            [str(SYSTEM_PYTHON), "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=30,
            env=_child_env(),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {SYSTEM_PYTHON}: {exc}"
    if probe.returncode != 0:
        detail = probe.stderr.strip().splitlines()[-1:] or [f"exit status {probe.returncode}"]
        return (
            f"GStreamer RTSP server unavailable under {SYSTEM_PYTHON}: {detail[0]} "
            "(apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp "
            "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)"
        )
    return None


class RtspServer:
    """A running rtsp_server.py process; use as a context manager or call stop()."""

    def __init__(self, process: subprocess.Popen[str], base_url: str, stderr_file: IO[str]) -> None:
        self.process = process
        self.base_url = base_url
        self._stderr_file = stderr_file
        self._final_stderr = ""

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return int(self.base_url.rsplit(":", 1)[1])

    def url(self, mount: str) -> str:
        """Return the rtsp:// URL of a mount path such as ``/store``."""
        return self.base_url + (mount if mount.startswith("/") else "/" + mount)

    def stderr(self) -> str:
        """Return what the server has logged so far, or in all once stopped."""
        return self._final_stderr if self._stderr_file.closed else _read_all(self._stderr_file)

    def stop(self) -> int | None:
        """Terminate the server (SIGTERM, then SIGKILL) and return its exit status; safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        if not self._stderr_file.closed:
            self._final_stderr = _read_all(self._stderr_file)
            self._stderr_file.close()
        return self.process.returncode

    def __enter__(self) -> RtspServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _read_all(f: IO[str]) -> str:
    if f.closed:
        return ""
    f.flush()
    f.seek(0)
    return f.read()


def _pump_stdout(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    # Draining stdout for the server's whole life keeps it from ever blocking on a full pipe.
    for line in stream:
        lines.put(line)
    lines.put(None)


def start_rtsp_server(
    mounts: Mapping[str, Path],
    port: int | None = None,
    loop: int = 0,
    timeout_s: float = 20,
) -> RtspServer:
    """Start rtsp_server.py serving ``{"/path": mp4}`` on 127.0.0.1 and wait until it is ready."""
    if not mounts:
        raise ValueError("start_rtsp_server needs at least one mount")
    # Port 0 lets the server bind a free port itself and report it in the READY line, which cannot race with another
    # test the way probing for a free port and then handing it over can.
    cmd = [str(SYSTEM_PYTHON), str(SERVER_SCRIPT), "--address", HOST, "--port", str(port or 0), "--verbose"]
    for path, file in mounts.items():
        cmd += ["--mount", f"{path}={Path(file).resolve()}"]
    if loop:
        cmd += ["--loop", str(loop)]
    # stderr goes to a file, not a pipe: nothing reads it while the test runs, and a full pipe would stall the server.
    stderr_file = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")  # noqa: SIM115
    try:
        process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            text=True,
            env=_child_env(),
        )
    except OSError:
        stderr_file.close()
        raise
    lines: queue.Queue[str | None] = queue.Queue()
    assert process.stdout is not None  # for the type checker: stdout=PIPE always sets it
    threading.Thread(target=_pump_stdout, args=(process.stdout, lines), name="rtsp-server-stdout", daemon=True).start()

    base_url = _wait_ready(process, lines, timeout_s)
    if base_url is not None:
        return RtspServer(process, base_url, stderr_file)
    exited = process.poll() is not None
    if not exited:
        process.kill()
        process.wait()
    log = _read_all(stderr_file).strip() or "(nothing)"
    stderr_file.close()
    what = f"exited with status {process.returncode}" if exited else f"was not ready within {timeout_s:g} s"
    raise RtspServerError(f"RTSP server {what}: {' '.join(cmd)}\n--- its stderr ---\n{log}")


def _wait_ready(process: subprocess.Popen[str], lines: queue.Queue[str | None], timeout_s: float) -> str | None:
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            return None
        if line is None:
            # stdout closes a moment before the process can be reaped; wait so the error shows its exit status.
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_TIMEOUT_S)
            return None
        if line.startswith("READY "):
            return line.split(maxsplit=1)[1].strip()
    return None
