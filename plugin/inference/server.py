"""The embedded Triton Inference Server: the `tritonserver` binary from the nvidia-pytriton wheel, run directly.

Running the binary (not PyTriton's Python API) keeps the per-request overhead near 0.7 ms. The wheel needs a few
environment fixes to run python-backend models; each is applied in `_environment` / `_backend_dir`.

The server dies with StoreSight: it is started with PR_SET_PDEATHSIG (SIGKILL) from a thread of its own that lives
exactly as long as the server (the signal follows the thread that forked, not the process), so a SIGKILLed
StoreSight leaves no orphan holding ports and memory. That thread waits for the server and reports its exit, and
`keep_running` restarts it with backoff on the same ports, so clients and cameras carry on by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from plugin.errors import InferenceUnavailable, ModelError
from plugin.inference.repository import default_model_repository, missing_repository_hint

log = logging.getLogger(__name__)

# The folder two levels above this package: the checkout's root when run from one (tests and scripts use it).
# Installed code finds its files through plugin.resources and plugin.inference.repository instead.
REPO_ROOT = Path(__file__).resolve().parents[2]
# The cpu flavour's repository as the environment said when this module was imported; code that runs later calls
# default_model_repository() so a changed $STORESIGHT_DATA_DIR is seen.
DEFAULT_MODEL_REPOSITORY = default_model_repository("cpu")
PR_SET_PDEATHSIG = 1  # linux/prctl.h
RESTART_START_S = 1.0  # a server that died is started again after this, doubling up to RESTART_MAX_S
RESTART_MAX_S = 60.0
STABLE_S = 60.0  # a server that ran this long before dying starts the backoff over


def _die_with_parent(cmd: list[str]) -> tuple[list[str], Callable[[], None] | None]:
    """The command and preexec_fn that give the server SIGKILL when the thread that started it ends.

    util-linux's `setpriv --pdeathsig KILL` sets it and execs the server: Python then spawns without running Python
    code in the child (vfork), so gRPC's fork handlers never run in a process whose gRPC threads are live (they
    crashed a restarted server with an epoll error, SIGABRT). Without setpriv, a preexec_fn makes the call itself
    (prctl, then exit if the parent is already gone); off Linux, nothing."""
    if not sys.platform.startswith("linux"):
        return cmd, None
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        return [setpriv, "--pdeathsig", "KILL", "--", *cmd], None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded before the fork: the child makes two system calls
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl: nobody would send the signal
            os._exit(1)

    return cmd, preexec


def _pytriton_dir() -> Path:
    try:
        import pytriton
    except ImportError:
        raise InferenceUnavailable(
            "the embedded Triton server needs the nvidia-pytriton wheel (pip install nvidia-pytriton==0.7.0), "
            "or set triton.url to an existing Triton server"
        ) from None
    return Path(pytriton.__file__).resolve().parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _backend_dir(server_root: Path, cache: Path) -> Path:
    """A backend directory whose python backend has the stub for this interpreter next to it.

    The wheel keeps the per-Python stubs apart from the backend; Triton looks for the stub inside the backend
    directory, so we assemble a copy once (1.5 MB) in a cache directory.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise InferenceUnavailable(f"nvidia-pytriton has no python backend stub for Python {version}")
    target = cache / f"backends-py{version}"
    python_dir = target / "python"
    if not (python_dir / "triton_python_backend_stub").is_file():
        tmp = Path(tempfile.mkdtemp(dir=cache))
        shutil.copytree(server_root / "backends" / "python", tmp / "python")
        shutil.copy2(stub, tmp / "python" / "triton_python_backend_stub")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return target


def _environment(server_root: Path) -> dict[str, str]:
    """Environment for tritonserver and its python stubs."""
    env = dict(os.environ)
    # The stub runs `python` models with whatever interpreter is first on PATH: ours has numpy and onnxruntime.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    libs = server_root.parent.parent / "nvidia_pytriton.libs"
    # Our own libpython first, else the stub may load the distribution's libpython against our stdlib and crash;
    # then the wheel's bundled libraries (libcudart and friends) that the server links against even on CPU.
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    parts = [p for p in (libdir, str(libs), env.get("LD_LIBRARY_PATH", "")) if p]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(parts)
    return env


@dataclass
class EmbeddedTriton:
    """A tritonserver child process bound to 127.0.0.1 on free ports."""

    model_repository: Path = field(default_factory=default_model_repository)
    cache_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "storesight-triton")
    log_path: Path | None = None
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0  # times keep_running started it again
    last_exit: str | None = None  # how the last server process ended, when it ended by itself
    _log_offset: int = field(default=0, repr=False)  # where this process's lines begin in the (appended) log
    _stopping: bool = field(default=False, repr=False)
    _exits: list[Callable[[subprocess.Popen[bytes]], None]] = field(default_factory=list, repr=False)

    @property
    def grpc_url(self) -> str:
        """The server's gRPC endpoint."""
        return f"grpc://127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """The server's HTTP endpoint."""
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        """Launch the process (returns at once; see `wait_ready`)."""
        if not self.model_repository.is_dir():
            raise ModelError(
                f"Triton model repository not found: {self.model_repository}; "
                + missing_repository_hint(self.model_repository)
            )
        root = _pytriton_dir() / "tritonserver"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        backends = _backend_dir(root, self.cache_dir)
        self.http_port = self.http_port or free_port()
        self.grpc_port = self.grpc_port or free_port()
        self.metrics_port = self.metrics_port or free_port()
        if self.log_path is None:
            self.log_path = self.cache_dir / f"tritonserver-{os.getpid()}-{self.grpc_port}.log"
        cmd = [
            str(root / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            # A model that fails to load must not keep the server from serving the others, nor hide: readiness
            # reports it per model.
            "--exit-on-error=false",
            "--strict-readiness=true",
            "--exit-timeout-secs=5",
        ]
        log.info("starting embedded tritonserver (repository %s, grpc %s)", self.model_repository, self.grpc_url)
        self._stopping = False
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.process = self._launch(cmd, _environment(root), self.log_path)

    def _launch(self, cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
        """Fork the server from a thread that then waits for it: PR_SET_PDEATHSIG fires when the forking thread
        ends, so that thread must outlive the server (an event loop's worker thread would kill it when idle)."""
        launched: list[subprocess.Popen[bytes] | BaseException] = []
        ready = threading.Event()

        def keeper() -> None:
            try:
                argv, preexec = _die_with_parent(cmd)
                with log_path.open("ab") as out:
                    # its own session: a Ctrl-C to StoreSight's terminal does not kill it before clients close
                    process = subprocess.Popen(
                        argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                        preexec_fn=preexec,
                    )  # fmt: skip
            except BaseException as exc:
                launched.append(exc)
                ready.set()
                return
            launched.append(process)
            ready.set()
            process.wait()
            self._exited(process)

        threading.Thread(target=keeper, name=f"tritonserver-{self.grpc_port}", daemon=True).start()
        ready.wait()
        if isinstance(launched[0], BaseException):
            raise launched[0]
        return launched[0]

    def _exited(self, process: subprocess.Popen[bytes]) -> None:
        """The keeper thread saw the server end: clean up its python-backend stubs (its process group) and tell
        whoever watches (keep_running), unless `stop` asked for it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if self._stopping:
            return
        code = process.returncode
        self.last_exit = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        log.error("embedded tritonserver (pid %d) ended by itself: %s", process.pid, self.last_exit)
        for callback in list(self._exits):
            callback(process)

    def on_exit(self, callback: Callable[[subprocess.Popen[bytes]], None]) -> None:
        """Call `callback(process)` (from the keeper thread) whenever the server ends without `stop`."""
        self._exits.append(callback)

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the server's log, for error messages."""
        text = self._log_text().splitlines()
        return "\n".join(text[-lines:])

    def _log_text(self) -> str:
        """This server process's part of the log (restarts append to the same file)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(self._log_offset)
            return f.read().decode(errors="replace")

    def model_load_error(self, model: str) -> str | None:
        """The server's reason for failing to load `model`, if its log has one."""
        for line in self._log_text().splitlines():
            if "failed to load" in line and f"'{model}'" in line:
                return line.split("failed to load", 1)[1].strip(" :")
        return None

    def wait_ready(self, model: str, timeout_s: float = 60.0) -> None:
        """Block until the server answers and `model` is ready, or raise with the server's own reason."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise InferenceUnavailable(f"embedded tritonserver exited during start:\n{self.log_tail()}")
            reason = self.model_load_error(model)
            if reason:
                raise ModelError(f"Triton could not load model {model!r}: {reason}")
            try:
                url = f"{self.http_url}/v2/models/{model}/ready"
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise InferenceUnavailable(f"embedded tritonserver not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    async def keep_running(self, model: str, ready_timeout_s: float) -> None:
        """Start the server again whenever it ends by itself (crash, OOM kill, kill -9), with backoff, on the same
        ports (clients reconnect by themselves); until cancelled. Started after the first `wait_ready`."""
        loop = asyncio.get_running_loop()
        ended = asyncio.Event()

        def exited(_process: subprocess.Popen[bytes]) -> None:
            loop.call_soon_threadsafe(ended.set)

        self.on_exit(exited)
        if self.process is not None and self.process.poll() is not None:
            ended.set()  # it died before we watched
        backoff = RESTART_START_S
        up_since = time.monotonic()
        try:
            while True:
                await ended.wait()
                ended.clear()
                if time.monotonic() - up_since >= STABLE_S:
                    backoff = RESTART_START_S
                log.warning("embedded tritonserver: restarting in %.0f s (%s)", backoff, self.last_exit)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RESTART_MAX_S)
                try:
                    await asyncio.to_thread(self.start)
                    self.restarts += 1
                    await asyncio.to_thread(self.wait_ready, model, ready_timeout_s)
                except Exception as exc:  # ports taken, model gone: try again later, saying why
                    log.error("embedded tritonserver: restart failed: %s", exc)
                    if self.process is None or self.process.poll() is None:
                        await asyncio.to_thread(self.stop)  # half-started: stop it, and try again after backoff
                        ended.set()
                    continue
                up_since = time.monotonic()
                log.warning("embedded tritonserver: back (restart %d)", self.restarts)
        finally:
            self._exits.clear()

    def stop(self) -> None:
        """Terminate the server and wait for it (clients should be closed first: open ones delay exit)."""
        self._stopping = True
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
