"""ONVIF cameras through onvif-zeep-async: ask the camera what it is and where its streams are, then read the
chosen stream with OpenCV.

`probe()` is the one conversation with the device: device information, media profiles, a stream URI (RTSP over TCP)
and a snapshot URI per profile. `OnvifSource` is the CameraSource for a configured ONVIF camera: it probes at every
(re)start, because a camera may hand out new URIs after a reboot, and then delegates to the camera's decoder
(`PyAVSource` by default).

Library facts this module relies on (onvif-zeep-async 4.3.0, checked in its source):
- `ONVIFCamera.update_xaddrs()` asks GetServices first and falls back to GetCapabilities when the device does not
  answer it (older firmware), so both kinds of device work without code here.
- The library wraps only the *building* of a request in `ONVIFError`; the awaited call surfaces aiohttp, zeep and
  timeout errors as they are, hence the exception tuples below.
- Importing `onvif.client` calls `logging.basicConfig(level=INFO)`, and `ONVIFCamera()` removes `http_proxy` and
  `https_proxy` from `os.environ`. The CLI configures logging with `force=True` for the first; nothing in StoreSight
  reads those variables (aiohttp ignores the environment unless asked), so the second is harmless here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import onvif
import zeep.exceptions
from onvif import ONVIFCamera
from onvif.exceptions import ONVIFAuthError, ONVIFError, ONVIFTimeoutError

from plugin.errors import CameraAuthError, SourceError
from plugin.redact import redact_url

log = logging.getLogger(__name__)

# Passed explicitly: onvif-zeep-async 3.x defaulted to a directory that did not exist, and Home Assistant and
# others pass this path for that reason; 4.3.0 bundles the files here too.
WSDL_DIR = str(Path(onvif.__file__).parent / "wsdl")

PROBE_TIMEOUT_S = 10.0  # a LAN camera answers in well under a second; a VPN link or a busy NVR needs more
ANALYSIS_MIN_WIDTH = 320  # narrower than this and the detector loses people at the far end of a shop floor

# What a probe can raise, by outcome (the same idea as Home Assistant's onvif GET_CAPABILITIES_EXCEPTIONS).
# Nothing else is caught: anything outside these is a bug and must surface as one.
#   not reachable: refused/reset connections, DNS failures, no answer in time (asyncio's timeout is TimeoutError).
UNREACHABLE_EXCEPTIONS: tuple[type[Exception], ...] = (aiohttp.ClientError, TimeoutError, ONVIFTimeoutError)
#   the device answered, but with a SOAP fault, a non-SOAP HTTP error or something zeep cannot parse; an auth
#   failure is one of these and is told apart by `_is_auth_failure`.
PROTOCOL_EXCEPTIONS: tuple[type[Exception], ...] = (
    zeep.exceptions.Fault,
    zeep.exceptions.TransportError,
    zeep.exceptions.XMLParseError,
    ONVIFError,
)


@dataclass(frozen=True, slots=True)
class OnvifProfile:
    """One media profile; sizes and rates are None when the profile has no video encoder configuration."""

    token: str
    name: str
    encoding: str | None
    width: int | None
    height: int | None
    fps: float | None
    stream_uri: str | None  # as the device gave it: no credentials in it
    snapshot_uri: str | None


@dataclass(frozen=True, slots=True)
class OnvifCamera:
    """What `probe()` found. Holds no credentials, so it can be logged and printed as it is."""

    host: str
    port: int
    manufacturer: str
    model: str
    firmware: str
    serial: str
    profiles: tuple[OnvifProfile, ...]
    clock_offset_s: float | None = None  # camera clock minus ours, when the library measured it
    probe_s: float = 0.0
    services: tuple[str, ...] = ()  # service namespaces the device advertised

    def profile(self, token: str) -> OnvifProfile:
        """The profile with this token; SourceError naming the tokens there are when it does not exist."""
        for p in self.profiles:
            if p.token == token:
                return p
        known = ", ".join(p.token for p in self.profiles) or "none"
        raise SourceError(f"ONVIF camera at {self.host}:{self.port} has no profile {token!r} (profiles: {known})")

    def analysis_profile(self, token: str | None = None) -> OnvifProfile:
        """The stream to analyse: `token` when given, else `pick_analysis_profile`."""
        chosen = self.profile(token) if token else pick_analysis_profile(self.profiles)
        if chosen is None or chosen.stream_uri is None:
            what = f"profile {token!r} has no video stream URI" if token else "no profile has a video stream URI"
            raise SourceError(f"ONVIF camera at {self.host}:{self.port}: {what}")
        return chosen

    def evidence_profile(self, token: str | None = None) -> OnvifProfile | None:
        """The stream for evidence clips: `token` when given, else the largest."""
        return self.profile(token) if token else pick_evidence_profile(self.profiles)


def _area(p: OnvifProfile) -> int:
    return (p.width or 0) * (p.height or 0)


def pick_analysis_profile(profiles: Sequence[OnvifProfile]) -> OnvifProfile | None:
    """The smallest video stream at least ANALYSIS_MIN_WIDTH wide (usually the sub stream).

    Smaller streams decode for a fraction of the CPU and the detector letterboxes to its input size anyway. When
    every stream is narrower, the widest one; when no profile states a size, the first with a stream URI.
    """
    video = [p for p in profiles if p.stream_uri is not None]
    sized = [p for p in video if p.width and p.height]
    if not sized:
        return video[0] if video else None
    wide_enough = [p for p in sized if (p.width or 0) >= ANALYSIS_MIN_WIDTH]
    if wide_enough:
        return min(wide_enough, key=_area)
    return max(sized, key=_area)


def pick_evidence_profile(profiles: Sequence[OnvifProfile]) -> OnvifProfile | None:
    """The largest video stream (usually the main stream): evidence should show faces and hands."""
    video = [p for p in profiles if p.stream_uri is not None]
    return max(video, key=_area) if video else None


def _host_key(host: str) -> str:
    """A host as compared: lower case, no IPv6 brackets, an IP address in its canonical form."""
    bare = host.strip().strip("[]").lower()
    try:
        return ipaddress.ip_address(bare.split("%")[0]).compressed
    except ValueError:
        return bare.rstrip(".")


def same_host(uri: str, host: str) -> bool:
    """`uri` points at `host` (by name or address as written: no DNS look-up, which a camera could steer)."""
    try:
        their = urlsplit(uri).hostname
    except ValueError:
        return False
    return their is not None and _host_key(their) == _host_key(host)


def with_credentials(uri: str, username: str | None, password: str | None, host: str) -> str:
    """`uri` with user:password@ for OpenCV/FFmpeg, percent-encoded, only when it points at `host` (the configured
    camera): a camera, or whoever answers for it, cannot have the credentials sent to another machine by naming
    it in a stream URI. Unchanged without a username, for another host, or when the device already put
    credentials in it. Never log the result: log `redact_url(result)`."""
    if not username or not same_host(uri, host):
        return uri
    parts = urlsplit(uri)
    if "@" in parts.netloc:
        return uri
    userinfo = quote(username, safe="") + (":" + quote(password, safe="") if password else "")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))


def _is_auth_failure(exc: BaseException) -> bool:
    """The device rejected the credentials: an HTTP 401/403, or a SOAP fault saying "not authorized".

    ONVIF says ter:NotAuthorized (a subcode); many devices (ipycam among them) send only the reason text
    "Sender not authorized", sometimes with the wrong fault code, so the text counts too.
    """
    if isinstance(exc, ONVIFAuthError):
        return True
    if isinstance(exc, zeep.exceptions.TransportError):
        return exc.status_code in (401, 403)
    if isinstance(exc, zeep.exceptions.Fault):
        words = [str(exc.message or ""), str(exc.code or ""), *(str(s) for s in exc.subcodes or [])]
        return any("notauthorized" in w.replace(" ", "").lower() for w in words)
    return False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | ONVIFTimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ClientConnectorError):
        # asyncio's strerror is "Connect call failed (...)"; the errno says it better ("connection refused").
        # Name-resolution errors carry resolver codes, not errnos: their own text is the right one.
        err = exc.os_error
        if isinstance(err, socket.gaierror) or not err.errno:
            return str(err.strerror or err).lower()
        return os.strerror(err.errno).lower()
    if isinstance(exc, zeep.exceptions.Fault):
        return f"SOAP fault: {exc.message}"
    if isinstance(exc, zeep.exceptions.TransportError):
        return f"HTTP {exc.status_code}" if exc.status_code else str(exc.message)
    return str(exc) or type(exc).__name__


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _profile_video(p: Any) -> tuple[str | None, int | None, int | None, float | None]:
    """Encoding, width, height and frame rate from a Media1 profile (any of them may be missing)."""
    vec = getattr(p, "VideoEncoderConfiguration", None)
    if vec is None:
        return None, None, None, None
    res = getattr(vec, "Resolution", None)
    rate = getattr(vec, "RateControl", None)
    width = getattr(res, "Width", None)
    height = getattr(res, "Height", None)
    fps = getattr(rate, "FrameRateLimit", None)
    encoding = getattr(vec, "Encoding", None)
    return (
        _text(encoding) or None,
        int(width) if width else None,
        int(height) if height else None,
        float(fps) if fps else None,
    )


async def _stream_uri(media: Any, token: str) -> str:
    req = media.create_type("GetStreamUri")
    req.ProfileToken = token
    # Media1 "RTSP" transport is RTP interleaved in the RTSP TCP connection: NAT- and firewall-friendly, and the
    # only transport some devices (ipycam) serve.
    req.StreamSetup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
    result = await media.GetStreamUri(req)
    return _text(getattr(result, "Uri", None))


async def _probe(cam: ONVIFCamera, where: str) -> OnvifCamera:
    started = time.monotonic()
    # adjust_time=True (set by the caller): update_xaddrs() first reads GetSystemDateAndTime (without credentials,
    # then with them when the device insists) and adds the camera-minus-us offset to the Created timestamp of
    # every WS-Security UsernameToken (which the password digest includes). Devices reject tokens whose Created
    # is off by more than a few minutes (ipycam: 300 s), and store cameras are often years off after a power cut
    # without NTP. The device reports whole seconds, so the offset is good to about a second. A device that
    # wants a login even for GetSystemDateAndTime (ipycam does; ONVIF says PRE_AUTH) cannot be helped: its time
    # is unknown until the login works, so probe() says so in the auth error.
    await cam.update_xaddrs()
    devicemgmt = await cam.create_devicemgmt_service()
    info = await devicemgmt.GetDeviceInformation()
    media = await cam.create_media_service()
    profiles = []
    for p in await media.GetProfiles() or []:
        token = _text(getattr(p, "token", None))
        encoding, width, height, fps = _profile_video(p)
        uri: str | None = None
        if encoding is not None:
            try:
                uri = await _stream_uri(media, token) or None
            except zeep.exceptions.Fault as exc:
                if _is_auth_failure(exc):
                    raise
                # one broken profile (ter:IncompleteConfiguration, say) must not hide the others
                log.warning("%s: no stream URI for profile %s: %s", where, token, exc.message)
        # the library asks once per token, turns a fault into None and caches the answer
        snapshot = await cam.get_snapshot_uri(token) if uri else None
        profiles.append(
            OnvifProfile(token, _text(getattr(p, "Name", None)) or token, encoding, width, height, fps, uri, snapshot)
        )
    offset = cam.dt_diff.total_seconds() if cam.dt_diff is not None else None
    return OnvifCamera(
        host=cam.host,
        port=cam.port,
        manufacturer=_text(getattr(info, "Manufacturer", None)),
        model=_text(getattr(info, "Model", None)),
        firmware=_text(getattr(info, "FirmwareVersion", None)),
        serial=_text(getattr(info, "SerialNumber", None)),
        profiles=tuple(profiles),
        clock_offset_s=offset,
        probe_s=time.monotonic() - started,
        services=tuple(sorted(cam.xaddrs)),
    )


async def probe(
    host: str,
    port: int,
    username: str | None,
    password: str | None,
    timeout_s: float = PROBE_TIMEOUT_S,
    *,
    name: str | None = None,
) -> OnvifCamera:
    """Ask an ONVIF device for its identity, profiles and stream URIs.

    Raises CameraAuthError when the device rejects the credentials (do not retry: cameras lock accounts), and
    SourceError when it cannot be reached or does not answer like an ONVIF device (retry later). `name` (the
    camera id) prefixes messages; the password never appears in them.
    """
    where = f"{name}: ONVIF camera at {host}:{port}" if name else f"ONVIF camera at {host}:{port}"
    # zeep builds a UsernameToken for every request and cannot digest None: an open device gets an empty one
    cam = ONVIFCamera(
        host, port, username or "", password or "", wsdl_dir=WSDL_DIR, no_cache=True, adjust_time=True
    )  # no_cache: the WSDL files are local, and zeep's cache would write a SQLite file under $HOME
    try:
        async with asyncio.timeout(timeout_s):
            found = await _probe(cam, where)
    except UNREACHABLE_EXCEPTIONS as exc:
        if isinstance(exc, TimeoutError):
            raise SourceError(f"{where} is not reachable: no answer within {timeout_s:g} s") from None
        raise SourceError(f"{where} is not reachable: {redact_url(_describe(exc))}") from None
    except PROTOCOL_EXCEPTIONS as exc:
        if _is_auth_failure(exc):
            if username:
                # With the camera's time known the digest was signed right, so only the credentials can be wrong.
                # Without it (a device that wants a login even for GetSystemDateAndTime, which ONVIF lists as
                # PRE_AUTH) a clock far off fails the same way, and the user should hear both causes.
                clock = ""
                if cam.dt_diff is None:
                    clock = (
                        "; the camera does not tell its time before login, so a camera clock more than a few "
                        "minutes off would also cause this (check its time or NTP)"
                    )
                raise CameraAuthError(
                    f"{where} rejected the login for user {username!r}: wrong username or password "
                    f"({redact_url(_describe(exc))}){clock}"
                ) from None
            raise CameraAuthError(
                f"{where} requires a login: set onvif.username and onvif.password ({redact_url(_describe(exc))})"
            ) from None
        raise SourceError(f"{where} did not answer as an ONVIF device: {redact_url(_describe(exc))}") from None
    finally:
        await cam.close()
    _log_found(where, found)
    return found


def _log_found(where: str, found: OnvifCamera) -> None:
    log.info(
        "%s: %s %s (firmware %s), %d profile(s), clock offset %s s, probed in %.2f s",
        where, found.manufacturer, found.model, found.firmware, len(found.profiles),
        "unknown" if found.clock_offset_s is None else f"{found.clock_offset_s:+.0f}", found.probe_s,
    )  # fmt: skip
    for p in found.profiles:
        log.debug(
            "%s: profile %s (%s) %s %sx%s @ %s fps: %s",
            where, p.token, p.name, p.encoding, p.width, p.height, p.fps, redact_url(p.stream_uri or "no stream"),
        )  # fmt: skip
