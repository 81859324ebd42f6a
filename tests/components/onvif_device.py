"""A real ONVIF device for tests: ipycam 1.3.0 (a pure-Python virtual IP camera with ONVIF device, media and
WS-Security, and its own RTSP server), run in a child process bound to 127.0.0.1 only.

Out of the box ipycam multicasts a WS-Discovery Hello to 239.255.255.250 and binds 0.0.0.0. The child replaces
its discovery server with a no-op, binds HTTP (ONVIF) and RTSP to 127.0.0.1 on ports the kernel picks, and refuses
any multicast send or group join at the socket level, so a future ipycam that multicasts elsewhere fails loudly
instead of reaching the network. The parent side of this module never imports ipycam.

Run as a script it is the child: ``python onvif_device.py`` prints ``READY <onvif port> <rtsp port>`` and streams
a synthetic 640x360 picture (sub stream 320x180) until SIGTERM. Credentials come from the environment
(``IPYCAM_USERNAME``/``IPYCAM_PASSWORD``), not argv, so they do not show in process listings. With
``IPYCAM_CLOCK_OFFSET_S`` its ONVIF service lives that far from our clock, like a camera that lost its time; with
``IPYCAM_PREAUTH_TIME=1`` it answers GetSystemDateAndTime without a login, as ONVIF requires (PRE_AUTH) and
ipycam does not.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import ipaddress
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from types import TracebackType
from typing import IO, Any

HOST = "127.0.0.1"
MAIN = (640, 360)
SUB = (320, 180)
FPS = 10
# SIGTERM lets ipycam stop its RTSP encoders (ffmpeg children); past this the whole process group is killed.
STOP_TIMEOUT_S = 5.0


@functools.cache
def onvif_device_available() -> str | None:
    """Return None when ipycam can run here, else the reason it cannot."""
    if importlib.util.find_spec("ipycam") is None:
        return "ipycam is not installed (packaging/scripts/setup.sh --test installs it with --no-deps)"
    if shutil.which("ffmpeg") is None:
        return "ffmpeg is not installed (ipycam's RTSP server encodes with it)"
    return None


class OnvifDeviceError(RuntimeError):
    """The device did not start, or died."""


class OnvifDevice:
    """A running ipycam child; use as a context manager or call stop()."""

    def __init__(
        self, process: subprocess.Popen[str], port: int, rtsp_port: int, username: str, password: str, log: IO[str]
    ) -> None:
        self.process = process
        self.host = HOST
        self.port = port
        self.rtsp_port = rtsp_port
        self.username = username
        self.password = password
        self._log = log
        self._final_log = ""

    def stderr(self) -> str:
        """What the device has logged so far, or in all once stopped."""
        return self._final_log if self._log.closed else _read_all(self._log)

    def stop(self) -> int | None:
        """Stop the device (SIGTERM, then SIGKILL to its process group) and return its exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                # The child leads its own session (start_new_session): this reaches its ffmpeg encoders too.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        if not self._log.closed:
            self._final_log = _read_all(self._log)
            self._log.close()
        return self.process.returncode

    def __enter__(self) -> OnvifDevice:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _read_all(f: IO[str]) -> str:
    if f.closed:
        return ""
    f.flush()
    f.seek(0)
    return f.read()


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def start_onvif_device(
    username: str = "",
    password: str = "",
    clock_offset_s: float = 0,
    preauth_time: bool = False,
    timeout_s: float = 30,
) -> OnvifDevice:
    """Start ipycam on 127.0.0.1 (with credentials when both are given) and wait until it answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPYCAM_")}
    env |= {"IPYCAM_USERNAME": username, "IPYCAM_PASSWORD": password, "IPYCAM_CLOCK_OFFSET_S": str(clock_offset_s)}
    env |= {"IPYCAM_PREAUTH_TIME": "1" if preauth_time else "0"}
    log = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")  # noqa: SIM115
    try:
        process = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
            start_new_session=True,
        )
    except OSError:
        log.close()
        raise
    lines: queue.Queue[str | None] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(target=_pump, args=(process.stdout, lines), name="ipycam-stdout", daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        if line is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_TIMEOUT_S)
            break
        if line.startswith("READY "):
            _, port, rtsp_port = line.split()
            return OnvifDevice(process, int(port), int(rtsp_port), username, password, log)
    device = OnvifDevice(process, 0, 0, username, password, log)
    exited = process.poll() is not None
    device.stop()
    what = f"exited with status {process.returncode}" if exited else f"was not ready within {timeout_s:g} s"
    raise OnvifDeviceError(f"ipycam {what}\n--- its stderr ---\n{device.stderr().strip() or '(nothing)'}")


# --- the child ----------------------------------------------------------------------------------------------------


def _forbid_multicast() -> None:
    """Make any multicast send or group join in this process an error."""
    import socket

    def _is_multicast(address: Any) -> bool:
        try:
            return isinstance(address, tuple) and ipaddress.ip_address(address[0]).is_multicast
        except ValueError:
            return False

    original_sendto = socket.socket.sendto
    original_setsockopt = socket.socket.setsockopt

    def sendto(self: socket.socket, data: Any, *args: Any) -> int:
        if _is_multicast(args[-1]):
            raise OSError(f"test device: multicast to {args[-1]} is forbidden")
        return original_sendto(self, data, *args)

    def setsockopt(self: socket.socket, level: int, option: int, *args: Any) -> None:
        if level == socket.IPPROTO_IP and option in (socket.IP_ADD_MEMBERSHIP, socket.IP_MULTICAST_IF):
            raise OSError("test device: joining a multicast group is forbidden")
        original_setsockopt(self, level, option, *args)

    socket.socket.sendto = sendto
    socket.socket.setsockopt = setsockopt


def _skew_clock(offset_s: float) -> None:
    """Move ipycam's ONVIF clock: what GetSystemDateAndTime reports and what WS-Security Created is checked against."""
    import types
    from datetime import datetime, tzinfo

    import ipycam.onvif as ipycam_onvif

    class SkewedDatetime(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> SkewedDatetime:
            return cls.fromtimestamp(time.time() + offset_s, tz)

    ipycam_onvif.datetime = SkewedDatetime
    ipycam_onvif.time = types.SimpleNamespace(gmtime=lambda: time.gmtime(time.time() + offset_s))


def _allow_time_before_login() -> None:
    """Answer GetSystemDateAndTime without credentials, as ONVIF's PRE_AUTH access class requires: a client needs
    the camera's time to sign its login. Stock ipycam checks the login on every SOAP request."""
    from ipycam.onvif import ONVIFService

    verify = ONVIFService.verify_usernametoken

    def verify_usernametoken(self: Any, soap_body: str) -> bool:
        return "GetSystemDateAndTime" in soap_body or bool(verify(self, soap_body))

    ONVIFService.verify_usernametoken = verify_usernametoken


def _child() -> int:  # pragma: no cover - runs in the child process
    _forbid_multicast()
    import logging

    import cv2
    import numpy as np
    from ipycam import CameraConfig, IPCamera, configure_logging
    from ipycam import camera as ipycam_camera
    from ipycam.rtsp import NativeRTSPServer

    configure_logging(level=logging.INFO)
    config = CameraConfig(
        name="StoreSight test camera",
        local_ip=HOST,  # also keeps ipycam from probing the network for its address
        onvif_port=0,
        rtsp_port=0,
        go2rtc_api_port=0,  # never look for a go2rtc on the machine: use ipycam's own RTSP server
        main_width=MAIN[0],
        main_height=MAIN[1],
        main_fps=FPS,
        sub_width=SUB[0],
        sub_height=SUB[1],
        sub_fps=FPS,
        username=os.environ.get("IPYCAM_USERNAME", ""),
        password=os.environ.get("IPYCAM_PASSWORD", ""),
    )

    class NoDiscovery:
        """Stands in for ipycam's WSDiscoveryServer: no socket, no Hello, no Bye."""

        def __init__(self, *_: Any) -> None:
            pass

        def start(self) -> None:
            pass

        def stop(self) -> None:
            pass

    class LoopbackHTTPServer(ipycam_camera.ReusableThreadingTCPServer):
        def __init__(self, _address: Any, handler: Any) -> None:
            super().__init__((HOST, 0), handler)
            config.onvif_port = self.server_address[1]  # the XAddrs ipycam advertises use it

    class LoopbackRTSPServer(NativeRTSPServer):
        def __init__(self, port: int = 0) -> None:
            super().__init__(port=port, host=HOST)

        def start(self) -> bool:
            ok = bool(super().start())
            if ok:
                self.port = self._server_socket.getsockname()[1]
                config.rtsp_port = self.port  # the stream URIs ipycam advertises use it
            return ok

    ipycam_camera.WSDiscoveryServer = NoDiscovery
    ipycam_camera.ReusableThreadingTCPServer = LoopbackHTTPServer
    ipycam_camera.NativeRTSPServer = LoopbackRTSPServer
    if offset_s := float(os.environ.get("IPYCAM_CLOCK_OFFSET_S") or 0):
        _skew_clock(offset_s)
    if os.environ.get("IPYCAM_PREAUTH_TIME") == "1":
        _allow_time_before_login()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    camera = IPCamera(config)
    camera.start()
    if camera.streaming_mode not in ("native_rtsp", "native_rtsp_webrtc"):
        print(f"ipycam did not start its RTSP server (mode {camera.streaming_mode})", file=sys.stderr)
        camera.stop()
        return 1
    print(f"READY {config.onvif_port} {config.rtsp_port}", flush=True)
    frame = np.zeros((MAIN[1], MAIN[0], 3), np.uint8)
    n = 0
    try:
        while not stop.is_set():
            frame[:] = (40, 90, 40)
            x = (n * 8) % (MAIN[0] - 80)
            cv2.rectangle(frame, (x, 120), (x + 80, 300), (200, 200, 200), -1)
            camera.stream(frame)  # paces itself to main_fps
            n += 1
    finally:
        camera.stop()
    return 0


if __name__ == "__main__":
    sys.exit(_child())
