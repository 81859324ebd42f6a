"""The config skeleton `storesight discover` writes from what it found: a camera per device or VMS camera, the sinks'
camera maps, and no password anywhere. Credentials found in stream URLs become `${ENV}` references (one pair of
variables per distinct login), and a sink's secrets that were in clear in its config become references too.

A stream URL is written only where the VMS serves one at a known address: Nx's RTSP, Frigate's go2rtc restream, a
ZoneMinder monitor's source, Genetec's Media Gateway RTSP (INTEGRATIONS.md 4.3 [S], assumed on the Web SDK's host: a
TODO comment says so). XProtect's REST API names no stream, so each XProtect camera gets a
`${STORESIGHT_<ID>_SOURCE}` placeholder and a TODO comment saying what to fill in: loading the skeleton fails, naming
the variable, until the user has.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

import yaml

from adapters.cameras.onvif.device import pick_analysis_profile, pick_evidence_profile
from adapters.cameras.onvif.discovery import PASSWORD_ENV, USER_ENV, FoundDevice
from plugin.errors import StoreSightError
from plugin.protocols import VmsCamera
from plugin.redact import redact_url

_ID_CHARS = re.compile(r"[^a-z0-9_.-]+")


# --- credentials out of URLs --------------------------------------------------------------------------------------


@dataclass
class EnvRefs:
    """Environment variable names for the logins found, one pair per distinct login; the values stay here."""

    prefix: str = "STORESIGHT_CAMERA"
    pairs: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)  # for sink secrets: variable -> what it replaces

    def names(self, user: str, password: str) -> tuple[str, str]:
        """The (user, password) variables for this login."""
        key = (user, password)
        if key not in self.pairs:
            n = len(self.pairs) + 1
            stem = self.prefix if n == 1 else f"{self.prefix}{n}"
            self.pairs[key] = (f"{stem}_USER", f"{stem}_PASSWORD")
        return self.pairs[key]

    def required(self) -> list[str]:
        """Every variable the skeleton refers to."""
        out = [v for pair in self.pairs.values() for v in pair]
        return out + [v for v in self.secrets if v not in out]


def _netloc(parts: SplitResult, userinfo: str | None) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{userinfo}@{host}{port}" if userinfo else f"{host}{port}"


def env_credentials(url: str, refs: EnvRefs, *, require_login: bool = False, login_of: str = "") -> str:
    """`url` with its user:password replaced by ${USER_VAR}:${PASSWORD_VAR} (added when `require_login`; `login_of`
    names whose login that is, so two VMSs that each need one get a variable pair each)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return redact_url(url)
    if parts.username is None and not require_login:
        return url
    if parts.username is None:
        user_var, pass_var = refs.names(f"\x00{login_of}", "")  # a key no real login has
    else:
        user_var, pass_var = refs.names(unquote(parts.username), unquote(parts.password or ""))
    userinfo = f"${{{user_var}}}:${{{pass_var}}}" if parts.password is not None or require_login else f"${{{user_var}}}"
    return urlunsplit(parts._replace(netloc=_netloc(parts, userinfo)))


@dataclass
class VmsListing:
    """One sink's cameras, or why there are none."""

    sink_id: str
    kind: str
    cameras: list[VmsCamera] = field(default_factory=list)
    error: str | None = None


# --- the skeleton -------------------------------------------------------------------------------------------------


class _Quoted(str):
    """A string YAML writes double-quoted: ${VAR} references stay one scalar whatever the value holds."""


class _SkeletonDumper(yaml.SafeDumper):
    pass


_SkeletonDumper.add_representer(
    _Quoted, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style='"')
)


def camera_id(name: str | None, fallback: str, taken: set[str]) -> str:
    """A config id from a name: lower case, [a-z0-9_.-], unique among `taken`."""
    base = _ID_CHARS.sub("-", (name or "").lower()).strip("-._")[:56] or fallback
    if not base[0].isalnum():
        base = f"cam-{base}"
    cid, n = base, 2
    while cid in taken:
        cid, n = f"{base}-{n}", n + 1
    taken.add(cid)
    return cid


_SECRET_KEYS = ("password", "token", "secret")


def _env_name(*parts: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", "_".join(parts).upper())


def sink_skeleton(raw: Mapping[str, Any], refs: EnvRefs) -> dict[str, Any]:
    """A sink section as the user wrote it (not expanded), with secrets written in clear turned into ${ENV}."""
    out: dict[str, Any] = {}
    sink_id = str(raw.get("id") or raw.get("kind") or "sink")
    for key, value in raw.items():
        if key in _SECRET_KEYS and isinstance(value, str):
            if re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}", value.strip()):
                out[key] = _Quoted(value.strip())
            else:
                var = _env_name("STORESIGHT", sink_id, key)
                refs.secrets[var] = f"sinks.{sink_id}.{key}"
                out[key] = _Quoted(f"${{{var}}}")
        elif key == "url" and isinstance(value, str) and "@" in value:
            out[key] = _Quoted(env_credentials(value, refs))
        elif key == "headers" and isinstance(value, Mapping):
            # webhook headers often carry tokens: keep the names, never the values
            out[key] = {h: _Quoted(f"${{{_env_name('STORESIGHT', sink_id, h)}}}") for h in value}
            refs.secrets.update({_env_name("STORESIGHT", sink_id, h): f"sinks.{sink_id}.headers.{h}" for h in value})
        else:
            out[key] = value
    return out


@dataclass
class Skeleton:
    """The document to write, and what the user must set before using it."""

    document: dict[str, Any]
    env: list[str]
    notes: list[str]
    todos: dict[str, str] = field(default_factory=dict)  # camera id -> what to check or fill in (a comment)


# Sink kinds whose restream needs the VMS's own login (a VMS user allowed to stream), not the camera's.
_VMS_LOGIN_STREAMS = ("nx", "genetec")


def _vms_camera(cid: str, vc: VmsCamera, listing: VmsListing, refs: EnvRefs, env: list[str]) -> dict[str, Any]:
    """A camera entry for a VMS camera: its stream with the login as references, else a source placeholder."""
    if vc.stream_url is None:
        var = _env_name("STORESIGHT", cid, "SOURCE")
        if var not in env:
            env.append(var)
        url = f"${{{var}}}"
    else:
        login = listing.kind in _VMS_LOGIN_STREAMS
        url = env_credentials(vc.stream_url, refs, require_login=login, login_of=listing.sink_id)
    return {"id": cid, "name": vc.name or cid, "source": _Quoted(url) if "${" in url else url}


def build_skeleton(
    found: Sequence[FoundDevice],
    listings: Sequence[VmsListing],
    *,
    onvif_username: str | None,
    raw_sinks: Sequence[Mapping[str, Any]] = (),
) -> Skeleton:
    """Cameras from discovery (an onvif section each) and from VMS listings (a source URL each), with each
    VMS camera mapped in its sink's `cameras`; credentials as ${ENV} references."""
    refs = EnvRefs()
    taken: set[str] = set()
    cameras: list[dict[str, Any]] = []
    notes: list[str] = []
    env: list[str] = []
    by_host: dict[str, dict[str, Any]] = {}
    for f in found:
        where = f.device.host_port
        if where is None:
            notes.append(f"{f.device.endpoint}: skipped, no usable device service address")
            continue
        name = f.device.name or (f"{f.camera.manufacturer} {f.camera.model}" if f.camera else None)
        cid = camera_id(name, f"cam-{len(cameras) + 1}", taken)
        onvif: dict[str, Any] = {"host": where[0], "port": where[1]}
        if onvif_username:
            onvif["username"] = _Quoted(f"${{{USER_ENV}}}")
            onvif["password"] = _Quoted(f"${{{PASSWORD_ENV}}}")
            env += [e for e in (USER_ENV, PASSWORD_ENV) if e not in env]
        entry: dict[str, Any] = {"id": cid, "name": name or cid, "onvif": onvif}
        if f.camera is not None:
            analysis = pick_analysis_profile(f.camera.profiles)
            evidence = pick_evidence_profile(f.camera.profiles)
            for role, p in (("analysis", analysis), ("evidence", evidence)):
                if p is not None and p.stream_uri:
                    notes.append(f"{cid}: {role} stream {p.token} {p.width}x{p.height}: "
                                 f"{env_credentials(p.stream_uri, refs)}")  # fmt: skip
        cameras.append(entry)
        by_host[where[0]] = entry
    sink_maps: dict[str, dict[str, str]] = {}
    todos: dict[str, str] = {}
    for listing in listings:
        if listing.error is not None:
            notes.append(f"sink {listing.sink_id} ({listing.kind}): {listing.error}")
            continue
        cam_map = sink_maps.setdefault(listing.sink_id, {})
        for vc in listing.cameras:
            host = urlsplit(vc.stream_url).hostname if vc.stream_url else None
            if host is not None and host in by_host and listing.kind == "zoneminder":
                # the ZoneMinder monitor pulls the same camera discovery found: one camera, mapped to both
                cam_map[by_host[host]["id"]] = vc.ref
                continue
            if vc.stream_url is None and vc.todo is None:
                notes.append(f"sink {listing.sink_id}: {listing.kind} camera {vc.ref} {vc.name!r} skipped: {vc.note}")
                continue
            cid = camera_id(vc.name, f"{listing.kind}-{vc.ref}", taken)
            cameras.append(_vms_camera(cid, vc, listing, refs, env))
            cam_map[cid] = vc.ref
            if vc.todo is not None:
                todos[cid] = vc.todo
    sinks = []
    for raw in raw_sinks:
        sink = sink_skeleton(raw, refs)
        if sink.get("id") in sink_maps:
            sink["cameras"] = sink_maps[str(sink["id"])]
            if not sink["cameras"]:
                notes.append(f"sink {sink['id']}: the VMS listed no camera to map; map at least one (our camera "
                             "id: its VMS id) under the sink's `cameras` before the file loads")  # fmt: skip
        sinks.append(sink)
    document: dict[str, Any] = {"cameras": cameras}
    if sinks:
        document["sinks"] = sinks
    env += [e for e in refs.required() if e not in env]
    return Skeleton(document, env, notes, todos)


def render_skeleton(skeleton: Skeleton, source: str) -> str:
    """The YAML text, with a header saying what to set and what was found."""
    lines = [
        f"# StoreSight config skeleton written by `storesight discover` at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"# from {source}.",
        "# Review it: add zones and rules, remove cameras you do not want analysed.",
        "# No password is in this file: set these environment variables before `storesight run -c` (values that",
        "# go into a URL must be percent-encoded, e.g. @ as %40):",
    ]
    lines += [f"#   {name}" for name in skeleton.env] or ["#   (none)"]
    if skeleton.todos:
        lines.append(
            f"# TODO: {len(skeleton.todos)} camera(s) below carry a TODO comment: check or fill in the source."
        )
    if skeleton.notes:
        lines.append("# Found:")
        lines += [f"#   {redact_url(n)}" for n in skeleton.notes]
    body = yaml.dump(skeleton.document, Dumper=_SkeletonDumper, sort_keys=False, allow_unicode=True, width=120)
    return "\n".join(lines) + "\n" + _with_todos(body, skeleton.todos)


def _with_todos(body: str, todos: Mapping[str, str]) -> str:
    """`body` with a `# TODO <id>: ...` comment above each camera in `todos` (YAML writers drop comments, so they
    go in afterwards: above the `- id: <id>` item that starts the camera, in the top-level cameras list only)."""
    out: list[str] = []
    in_cameras = False
    for line in body.splitlines():
        if line and not line.startswith((" ", "-")):
            in_cameras = line.startswith("cameras:")
        elif in_cameras and line.startswith("- id: "):
            item = yaml.safe_load(line[2:])
            cid = str(item.get("id")) if isinstance(item, dict) else ""
            if cid in todos:
                text = f"TODO {cid}: {todos[cid]}"
                out += [f"# {part}" for part in textwrap.wrap(text, 116)]
        out.append(line)
    return "\n".join(out) + "\n"


def write_skeleton(skeleton: Skeleton, path: Path, source: str) -> None:
    """Write the skeleton (never over an existing file: it may be the user's real config)."""
    text = render_skeleton(skeleton, source)
    try:
        with path.open("x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise StoreSightError(f"--write-config {path}: the file exists; give a new name") from None
    except OSError as exc:
        raise StoreSightError(f"--write-config {path}: {exc.strerror or exc}") from None


def raw_sinks(path: Path) -> list[dict[str, Any]]:
    """The sinks section of a config file as written (${VAR} references not expanded)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    sinks = doc.get("sinks") if isinstance(doc, dict) else None
    return [s for s in sinks if isinstance(s, dict)] if isinstance(sinks, list) else []
