"""A real ZoneMinder for tests: Debian's 1.36 on 127.0.0.1, set up and started by ``packaging/dev/zoneminder.sh``
(root or passwordless sudo), and a small synchronous admin client that checks what the sink did, independently of
the sink's own code. What the script started for a test session, the session stops again at its end
(`stop_zoneminder`); a ZoneMinder that was running before is left running."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = REPO_ROOT / "packaging" / "dev" / "zoneminder.sh"
# The script's default port; both read STORESIGHT_ZM_PORT / ZM_PORT so a machine where it clashes can move it.
PORT = int(os.environ.get("STORESIGHT_ZM_PORT", "18081"))
BASE_URL = f"http://127.0.0.1:{PORT}/zm"
# ZoneMinder's stock account, which the script enables for the API (loopback only; a test rig).
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin"
# A fresh install is ~40 s on a 2-core machine (apt-get most of it); a running one answers at once.
SETUP_TIMEOUT_S = 600
TEST_MONITOR_PREFIX = "storesight-test-"


class ZoneMinderError(RuntimeError):
    """ZoneMinder could not be set up, or answered unexpectedly."""


def api_answers(base_url: str = BASE_URL) -> bool:
    """True when ZoneMinder's API answers (200, or 401 because authentication is on)."""
    try:
        with urllib.request.urlopen(f"{base_url}/api/host/getVersion.json", timeout=5) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except OSError:
        return False


def _can_be_root() -> bool:
    if os.geteuid() == 0:
        return True
    sudo = shutil.which("sudo")
    if sudo is None:
        return False
    return subprocess.run([sudo, "-n", "true"], capture_output=True, timeout=10, check=False).returncode == 0


def ensure_zoneminder() -> tuple[str | None, float, list[str]]:
    """Set up and start whatever of ZoneMinder is missing: (None or the reason it cannot run, seconds it took, the
    services it started, which the caller stops with `stop_zoneminder` even when the reason is not None)."""
    t0 = time.monotonic()
    if not SETUP_SCRIPT.is_file():
        return f"{SETUP_SCRIPT} not found", 0.0, []
    if not _can_be_root():
        # someone else's ZoneMinder (or one started earlier by hand) will do
        if api_answers():
            return None, 0.0, []
        why = f"ZoneMinder is not running at {BASE_URL} and {SETUP_SCRIPT.name} needs root or passwordless sudo"
        return why, 0.0, []
    # Run it even when the API answers: it is quick then (about a second) and restarts whatever has stopped, such as
    # zmc and the other daemons after a reboot, which the API's answer alone does not show.
    env = {**os.environ, "ZM_PORT": str(PORT)}
    try:
        done = subprocess.run(
            ["bash", str(SETUP_SCRIPT)], capture_output=True, text=True, timeout=SETUP_TIMEOUT_S, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        why = f"{SETUP_SCRIPT.name} did not finish within {SETUP_TIMEOUT_S} s"
        return why, time.monotonic() - t0, _started(out)
    started = _started(done.stdout)
    if done.returncode != 0 or "READY " not in done.stdout:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-5:]
        why = f"{SETUP_SCRIPT.name} failed (exit {done.returncode}): " + " | ".join(tail)
        return why, time.monotonic() - t0, started
    return None, time.monotonic() - t0, started


def _started(stdout: str) -> list[str]:
    """The services the script said it started (`STARTED <service>` lines), in order."""
    return [line.split(None, 1)[1] for line in stdout.splitlines() if line.startswith("STARTED ") and " " in line]


def stop_zoneminder(services: list[str]) -> str | None:
    """Stop the services a start reported (nothing when it started nothing); None, or what went wrong."""
    if not services:
        return None
    env = {**os.environ, "ZM_PORT": str(PORT)}
    try:
        done = subprocess.run(
            ["bash", str(SETUP_SCRIPT), "stop", *services],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"{SETUP_SCRIPT.name} stop {' '.join(services)} did not finish within 120 s"
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-5:]
        return f"{SETUP_SCRIPT.name} stop {' '.join(services)} failed (exit {done.returncode}): " + " | ".join(tail)
    return None


class ZmAdmin:
    """A blocking ZoneMinder API client for test setup and checks (run it in a thread from async tests)."""

    def __init__(self, base_url: str = BASE_URL, user: str = ADMIN_USER, password: str = ADMIN_PASSWORD) -> None:
        self.base_url = base_url
        self.user = user
        self.password = password
        self._token: str | None = None

    def _request(self, method: str, path: str, data: dict[str, str] | None = None, **query: str) -> Any:
        if self._token is None:
            self._token = self._login()
        q = urllib.parse.urlencode({**query, "token": self._token})
        url = f"{self.base_url}/api/{urllib.parse.quote(path, safe='/:.-_')}?{q}"
        body = None if data is None else urllib.parse.urlencode(data).encode()
        req = urllib.request.Request(url, data=body, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise ZoneMinderError(f"{method} {path}: HTTP {exc.code}") from None

    def _login(self) -> str:
        data = urllib.parse.urlencode({"user": self.user, "pass": self.password}).encode()
        with urllib.request.urlopen(f"{self.base_url}/api/host/login.json", data=data, timeout=30) as resp:
            return str(json.loads(resp.read())["access_token"])

    def monitors(self) -> list[dict[str, Any]]:
        """Every monitor: the `Monitor` record with its `Monitor_Status` merged in."""
        out = []
        for item in self._request("GET", "monitors.json")["monitors"]:
            out.append({**item["Monitor"], "Status": (item.get("Monitor_Status") or {}).get("Status")})
        return out

    def add_monitor(self, name: str, rtsp_url: str, width: int, height: int, **extra: str) -> str:
        """A Nodect monitor pulling an RTSP stream over TCP: it records only when alarmed, which is what the sink
        does; its Id."""
        fields = {
            "Name": name,
            "Type": "Ffmpeg",
            "Function": "Nodect",
            "Enabled": "1",
            "Path": rtsp_url,
            "Method": "rtpRtsp",  # RTP over the RTSP connection (TCP): no UDP ports to open
            "Width": str(width),
            "Height": str(height),
            "Colours": "4",
            # ZoneMinder keeps an event open for at least this many seconds (default 10): a short one lets each
            # test see its event closed about a second after the alarm goes off (10 post-event frames at 10 fps)
            "MinSectionLength": "2",
            # events keep the camera's H.264 as it comes (no JPEG per frame): less CPU and disk for the tests
            "SaveJPEGs": "0",
            "VideoWriter": "2",
            **extra,
        }
        answer = self._request("POST", "monitors.json", {f"Monitor[{k}]": v for k, v in fields.items()})
        if answer.get("message") != "Saved":
            raise ZoneMinderError(f"monitor not added: {answer}")
        for m in self.monitors():
            if m["Name"] == name:
                return str(m["Id"])
        raise ZoneMinderError(f"monitor {name!r} saved but not listed")

    def delete_monitor(self, monitor_id: str) -> None:
        """Remove a monitor and its events (ZoneMinder itself would keep the events, and their files)."""
        for event_id in self.event_ids(monitor_id):
            with contextlib.suppress(ZoneMinderError):
                self._request("DELETE", f"events/{event_id}.json")
        self._request("DELETE", f"monitors/{monitor_id}.json")

    def remove_stale_test_monitors(self) -> None:
        """Monitors left by test sessions whose process is gone (a crash skipped their teardown); their names are
        the prefix, the process id and optionally `-what`."""
        for m in self.monitors():
            name = str(m["Name"])
            pid = name.removeprefix(TEST_MONITOR_PREFIX).split("-", 1)[0]
            if name.startswith(TEST_MONITOR_PREFIX) and pid.isdigit() and not Path(f"/proc/{pid}").exists():
                with contextlib.suppress(ZoneMinderError):
                    self.delete_monitor(str(m["Id"]))

    def wait_capturing(self, monitor_id: str, timeout_s: float = 60) -> None:
        """Until zmc reports the monitor connected to its stream."""
        deadline = time.monotonic() + timeout_s
        status = None
        while time.monotonic() < deadline:
            status = next((m["Status"] for m in self.monitors() if str(m["Id"]) == monitor_id), None)
            if status == "Connected":
                return
            time.sleep(0.5)
        raise ZoneMinderError(f"monitor {monitor_id} not capturing after {timeout_s:g} s (status {status!r})")

    def event(self, event_id: str) -> dict[str, Any]:
        """One Event record."""
        return dict(self._request("GET", f"events/{event_id}.json", noframes="true")["event"]["Event"])

    def event_ids(self, monitor_id: str) -> list[str]:
        """Ids of the monitor's events, oldest first."""
        answer = self._request("GET", f"events/index/MonitorId:{monitor_id}.json", sort="Id", direction="asc")
        return [str(e["Event"]["Id"]) for e in answer["events"]]

    def alarm_state(self, monitor_id: str) -> int:
        """zmu's state of the monitor as the API reports it: 0 idle, 2 alarm, 3 alert (post-event)."""
        return int(self._request("GET", f"monitors/alarm/id:{monitor_id}/command:status.json")["status"])

    def wait_closed(self, event_id: str, timeout_s: float = 30) -> dict[str, Any]:
        """The event once zmc has closed it (EndDateTime set)."""
        deadline = time.monotonic() + timeout_s
        while True:
            event = self.event(event_id)
            if event.get("EndDateTime"):
                return event
            if time.monotonic() > deadline:
                raise ZoneMinderError(f"event {event_id} still open after {timeout_s:g} s")
            time.sleep(0.3)
