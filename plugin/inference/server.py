"""The embedded Triton Inference Server: the `tritonserver` binary from the nvidia-pytriton wheel, run directly.

Running the binary (not PyTriton's Python API) keeps the per-request overhead near 0.7 ms. The wheel needs a few
environment fixes to run python-backend models; each is applied in `_environment` / `_backend_dir`.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
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
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=_environment(root), start_new_session=True
            )

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the server's log, for error messages."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def model_load_error(self, model: str) -> str | None:
        """The server's reason for failing to load `model`, if its log has one."""
        if self.log_path is None or not self.log_path.exists():
            return None
        for line in self.log_path.read_text(errors="replace").splitlines():
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

    def stop(self) -> None:
        """Terminate the server and wait for it (clients should be closed first: open ones delay exit)."""
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
