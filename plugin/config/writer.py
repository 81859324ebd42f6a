"""Changing one camera's zones and lines in the config file, as the zone editor saves them: the file is read and
rewritten round-trip (ruamel.yaml: comments, quoting, key order and `${VAR}` references stay as written), the new
text is validated exactly as `check-config` validates a file, and only then written: to a temporary file in the
same folder, fsynced, the previous file kept as `<name>.bak`, then renamed over the original (atomic on POSIX).

A line is a `line_crossing` rule's `line` and `in_side`; a new line is a new rule of that type on the camera."""

from __future__ import annotations

import io
import itertools
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.util import load_yaml_guess_indent

from plugin.config.loader import ConfigProblems, parse_config_text
from plugin.config.root import Config
from plugin.errors import ConfigError

LINE_TYPE = "line_crossing"
DIGITS = 4  # normalised coordinates: 1/10000 of the picture is finer than any camera's pixel

Pt = tuple[float, float]


@dataclass(frozen=True)
class ZoneEdit:
    """A zone as the editor has it: its id, its polygon, and the id it had in the file (None: a new zone)."""

    id: str
    polygon: Sequence[Pt]
    was: str | None = None


@dataclass(frozen=True)
class LineEdit:
    """A line_crossing rule's line as the editor has it (`was`: its rule id in the file; None: a new rule)."""

    id: str
    line: tuple[Pt, Pt]
    in_side: Literal["left", "right"]
    was: str | None = None


@dataclass(frozen=True)
class Saved:
    """A written change: the validated config, the backup of the previous file, and where each shape sits."""

    config: Config
    backup: Path
    shapes: dict[str, str] = field(default_factory=dict)  # key path of a zone or rule -> "zone:<id>" / "line:<id>"


class GeometryRefused(ConfigError):
    """A change the config models refuse: nothing was written. `problems` are (key path, message); `shapes` maps a
    zone's or line's key path to the shape, so the editor shows each problem next to its shape."""

    def __init__(self, text: str, problems: list[tuple[str, str]], shapes: dict[str, str]) -> None:
        super().__init__(text)
        self.problems = problems
        self.shapes = shapes


def _yaml(mapping: int, sequence: int, offset: int) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long line the admin wrote on one
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml


def _flow(items: Sequence[Any]) -> CommentedSeq:
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def _number(v: float) -> float | int:
    r = round(float(v), DIGITS)
    return int(r) if r.is_integer() else r  # 1, not 1.0: as people write the picture's edges


def _point(p: Pt) -> CommentedSeq:
    return _flow([_number(p[0]), _number(p[1])])


_KEY_ONLY = re.compile(r"^( *)[^\s#-][^:#]*:\s*(#.*)?$")


def _mapping_indent(text: str) -> int:
    """How far the file indents a mapping under its key (ruamel guesses only the sequences'): the first key whose
    value is a block mapping, compared with its first child key."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for ln, nxt in itertools.pairwise(lines):
        m = _KEY_ONLY.match(ln)
        if m is None:
            continue
        child = len(nxt) - len(nxt.lstrip(" "))
        if child > len(m.group(1)) and not nxt.lstrip().startswith("-"):
            return child - len(m.group(1))
    return 2


def _like_last(seq: list[Any], item: CommentedMap) -> CommentedMap:
    """A new item in the style of the one before it: `{id: ..., ...}` on one line when that one is."""
    if seq and isinstance(seq[-1], CommentedMap) and seq[-1].fa.flow_style():
        item.fa.set_flow_style()
    return item


def _refused(source: str, path: str, message: str) -> GeometryRefused:
    return GeometryRefused(f"{source}: {path}: {message}", [(path, message)], {})


def _renamed(value: Any, renames: dict[str, str]) -> Any:
    return renames.get(value, value) if isinstance(value, str) else value


def _rename_zone_refs(rule: dict[Any, Any], renames: dict[str, str]) -> None:
    """A renamed zone keeps its rules: every `zone`, `*_zone` and `*_zones` value of the rule follows the rename."""
    for key in list(rule):
        name = str(key)
        if name == "zone" or name.endswith("_zone"):
            rule[key] = _renamed(rule[key], renames)
        elif name.endswith("_zones") and isinstance(rule[key], list):
            for k, v in enumerate(rule[key]):
                rule[key][k] = _renamed(v, renames)


class _Stale(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


def _require_present(edits: Mapping[str, Any], present: set[Any], path: str, what: str) -> None:
    """An edit of a shape the file no longer has (changed by hand since the page loaded) is refused, never dropped."""
    gone = sorted(str(w) for w in edits if w not in present)
    if gone:
        raise _Stale(path, f"no {what} {gone[0]!r} in the file any more (changed since the page was loaded: reload it)")


def _edit_zones(cam: CommentedMap, where: str, zones: Sequence[ZoneEdit], shapes: dict[str, str]) -> dict[str, str]:
    """Apply the zones in place (kept zones keep their comments and other keys); the renames made."""
    seq = cam.get("zones")
    if not isinstance(seq, list):
        seq = CommentedSeq()
        cam["zones"] = seq
    by_was = {z.was: z for z in zones if z.was is not None}
    _require_present(by_was, {item.get("id") for item in seq if isinstance(item, dict)}, f"{where}.zones", "zone")
    for k in reversed(range(len(seq))):  # deleting by index moves the comments of the items after it
        if not isinstance(seq[k], dict) or seq[k].get("id") not in by_was:
            del seq[k]
    renames: dict[str, str] = {}
    for k, item in enumerate(seq):
        edit = by_was[item["id"]]
        if edit.id != edit.was:
            renames[str(edit.was)] = edit.id
        item["id"] = edit.id
        item["polygon"] = _flow([_point(p) for p in edit.polygon])
        shapes[f"{where}.zones[{k}]"] = f"zone:{edit.id}"
    for edit in zones:
        if edit.was is None:
            shapes[f"{where}.zones[{len(seq)}]"] = f"zone:{edit.id}"
            zone = CommentedMap([("id", edit.id), ("polygon", _flow([_point(p) for p in edit.polygon]))])
            seq.append(_like_last(seq, zone))
    if renames:
        staff = cam.get("staff_zones")
        if isinstance(staff, list):
            for k, v in enumerate(staff):
                staff[k] = _renamed(v, renames)
    return renames


def _edit_lines(
    doc: CommentedMap, camera_id: str, lines: Sequence[LineEdit], renames: dict[str, str], shapes: dict[str, str]
) -> None:
    """Apply the lines to the camera's line_crossing rules: kept ones in place, new ones appended, others deleted."""
    rules = doc.get("rules")
    if not isinstance(rules, list):
        rules = CommentedSeq()
        doc["rules"] = rules
    by_was = {e.was: e for e in lines if e.was is not None}
    mine = [r for r in rules if isinstance(r, dict) and r.get("camera") == camera_id and r.get("type") == LINE_TYPE]
    _require_present(by_was, {r.get("id") for r in mine}, "rules", f"{LINE_TYPE} rule")
    for k in reversed(range(len(rules))):
        rule = rules[k]
        ours = isinstance(rule, dict) and rule.get("camera") == camera_id and rule.get("type") == LINE_TYPE
        if ours and rule.get("id") not in by_was:
            del rules[k]
    for k, rule in enumerate(rules):
        if not isinstance(rule, dict) or rule.get("camera") != camera_id:
            continue
        if renames:
            _rename_zone_refs(rule, renames)
        if rule.get("type") == LINE_TYPE:
            edit = by_was[rule["id"]]
            rule["id"] = edit.id
            rule["line"] = _flow([_point(edit.line[0]), _point(edit.line[1])])
            rule["in_side"] = edit.in_side
            shapes[f"rules[{k}]"] = f"line:{edit.id}"
    for edit in lines:
        if edit.was is None:
            shapes[f"rules[{len(rules)}]"] = f"line:{edit.id}"
            rule = CommentedMap([("id", edit.id), ("type", LINE_TYPE), ("camera", camera_id)])
            rule["line"] = _flow([_point(edit.line[0]), _point(edit.line[1])])
            rule["in_side"] = edit.in_side
            rules.append(_like_last(rules, rule))


def _write_atomically(path: Path, text: str) -> Path:
    """Write `text` over `path`: a temporary file beside it, fsynced; the old file kept as `<name>.bak`; then one
    rename, so a reader (or a crash) sees the old file or the new one, never half of one."""
    backup = path.with_name(path.name + ".bak")
    mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the config may hold secrets: the new file is as private as the old one
        if backup.exists():
            backup.unlink()
        try:
            os.link(path, backup)  # the previous file itself, under the backup's name
        except OSError:  # a file system without hard links: a copy
            shutil.copy2(path, backup)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)
    return backup


def save_camera_geometry(path: Path, camera_id: str, zones: Sequence[ZoneEdit], lines: Sequence[LineEdit]) -> Saved:
    """Rewrite one camera's zones and line_crossing lines in the config file at `path`, validated as check-config
    validates it; GeometryRefused (naming each key) and the file untouched when the result is not a valid config.
    A renamed zone's references in that camera's rules and `staff_zones` follow it."""
    source = str(path)
    try:
        original = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config: {exc.strerror or exc}") from None
    try:
        _, indent, block_seq_indent = load_yaml_guess_indent(original)  # the layout only: it drops quotes
        doc = _yaml(2, 2, 0).load(original)
    except YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, CommentedMap):
        raise _refused(source, "(top level)", "must be a mapping of keys")
    cameras = doc.get("cameras")
    found = [k for k, c in enumerate(cameras or []) if isinstance(c, dict) and c.get("id") == camera_id]
    if not found:
        raise _refused(source, "cameras", f"no camera {camera_id!r} in the file")
    where = f"cameras[{found[0]}]"
    shapes: dict[str, str] = {}
    try:
        renames = _edit_zones(cameras[found[0]], where, zones, shapes)
        _edit_lines(doc, camera_id, lines, renames, shapes)
    except _Stale as exc:
        raise _refused(source, exc.path, str(exc)) from None
    out = io.StringIO()
    _yaml(_mapping_indent(original), indent or 2, block_seq_indent or 0).dump(doc, out)
    text = out.getvalue()
    try:
        config = parse_config_text(text, source)  # check-config's own reading: YAML, ${VAR}s, models, cross-checks
    except ConfigProblems as exc:
        raise GeometryRefused(str(exc), exc.problems, shapes) from None
    except ConfigError as exc:
        raise GeometryRefused(str(exc), [("(top level)", str(exc))], shapes) from None
    try:
        backup = _write_atomically(path, text)
    except OSError as exc:  # a read-only folder, a full disk: the file is as it was
        raise ConfigError(f"{source}: cannot write the config: {exc.strerror or exc} (nothing was changed)") from None
    return Saved(config, backup, shapes)
