"""A real MQTT broker for tests: Debian's mosquitto (2.x), started with its own config in its own temporary
directory, listening on 127.0.0.1 only, no persistence; never the system service or its files."""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

MOSQUITTO = Path("/usr/sbin/mosquitto")
HOST = "127.0.0.1"
# SIGTERM lets mosquitto close its clients cleanly; past this it is killed.
STOP_TIMEOUT_S = 5.0
START_TIMEOUT_S = 10.0


class BrokerError(RuntimeError):
    """mosquitto did not start, or died."""


def _mosquitto_passwd() -> str | None:
    return shutil.which("mosquitto_passwd") or next(
        (p for p in ("/usr/bin/mosquitto_passwd", "/usr/sbin/mosquitto_passwd") if os.access(p, os.X_OK)), None
    )


@functools.cache
def mosquitto_available() -> str | None:
    """Return None when mosquitto (and mosquitto_passwd) can run here, else the reason it cannot."""
    if not os.access(MOSQUITTO, os.X_OK):
        return f"{MOSQUITTO} not found (apt-get install mosquitto)"
    if _mosquitto_passwd() is None:
        return "mosquitto_passwd not found (it comes with the mosquitto package)"
    try:
        probe = subprocess.run([str(MOSQUITTO), "-h"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {MOSQUITTO}: {exc}"
    if "mosquitto version 2." not in probe.stdout + probe.stderr:
        return f"{MOSQUITTO} is not mosquitto 2.x: {(probe.stdout + probe.stderr).strip()[:200]}"
    return None


def write_password_file(path: Path, users: Mapping[str, str]) -> Path:
    """A mosquitto password file (hashed with mosquitto_passwd) for `{user: password}`."""
    tool = _mosquitto_passwd()
    if tool is None:
        raise BrokerError("mosquitto_passwd not found")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    for user, password in users.items():
        # -b takes the password from argv: fine for a throwaway test password, never for a real one.
        subprocess.run([tool, "-b", str(path), user, password], check=True, capture_output=True, timeout=30)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
        return True
    return False


class MosquittoBroker:
    """A running mosquitto; use as a context manager or call stop()."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, workdir: tempfile.TemporaryDirectory[str]) -> None:
        self.process = process
        self.host = HOST
        self.port = port
        self._workdir = workdir
        self._final_log = ""

    def log(self) -> str:
        """What mosquitto has logged so far (or in all, once stopped), its own stderr included."""
        if self._final_log:
            return self._final_log
        root = Path(self._workdir.name)
        text = ""
        for name in ("stderr.log", "mosquitto.log"):
            with contextlib.suppress(OSError):
                text += (root / name).read_text(errors="replace")
        return text

    def stop(self) -> int | None:
        """Terminate mosquitto (SIGTERM, then SIGKILL), remove its directory; returns its exit status. Idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self._final_log:
            self._final_log = self.log() or "(nothing)"
        self._workdir.cleanup()
        return self.process.returncode

    def __enter__(self) -> MosquittoBroker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_mosquitto(
    port: int | None = None,
    password_file: Path | None = None,
    acl_file: Path | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> MosquittoBroker:
    """Start mosquitto on 127.0.0.1 (`port`, else a free one) and wait until it accepts connections.

    With `password_file`, anonymous clients are refused and users must log in; without, anyone may connect.
    With `acl_file` (mosquitto's `topic read|write|readwrite PATTERN` lines), clients may use only those topics.
    """
    if port is not None:
        return _start(port, password_file, acl_file, timeout_s)
    # mosquitto cannot report a port the kernel picked, so a free port is probed first; another process may take
    # it in between, hence a few tries.
    for attempt in range(3):
        try:
            return _start(free_port(), password_file, acl_file, timeout_s)
        except BrokerError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start(chosen: int, password_file: Path | None, acl_file: Path | None, timeout_s: float) -> MosquittoBroker:
    # The directory lives as long as the broker: MosquittoBroker.stop() removes it.
    workdir = tempfile.TemporaryDirectory(prefix="storesight-mosquitto-")
    root = Path(workdir.name)
    lines = [
        f"listener {chosen} {HOST}",
        "persistence false",
        # Its own log file: a pipe nobody reads could fill and stall the broker.
        f"log_dest file {root / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        # Started as root, mosquitto switches to the user named here (default "mosquitto", who could not read this
        # directory); naming the current user keeps it as is.
        f"user {pwd.getpwuid(os.getuid()).pw_name}",
    ]
    if password_file is not None:
        lines += ["allow_anonymous false", f"password_file {Path(password_file).resolve()}"]
    else:
        lines += ["allow_anonymous true"]
    if acl_file is not None:
        lines += [f"acl_file {Path(acl_file).resolve()}"]
    conf = root / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    try:
        # Errors before logging is set up (a bad config line, a port in use) go to stderr: keep them in a file.
        with (root / "stderr.log").open("wb") as err:
            process = subprocess.Popen(
                [str(MOSQUITTO), "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                cwd=root,
            )
    except OSError:
        workdir.cleanup()
        raise
    broker = MosquittoBroker(process, chosen, workdir)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _accepts(chosen):
            return broker
        time.sleep(0.05)
    exited = process.poll() is not None
    broker.stop()
    what = f"exited with status {process.returncode}" if exited else f"did not accept within {timeout_s:g} s"
    raise BrokerError(f"mosquitto on {HOST}:{chosen} {what}\n--- its log ---\n{broker.log()}")
