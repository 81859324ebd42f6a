"""Reading a config file: YAML, ${VAR} references expanded after parsing, validation, and one line per problem
starting with the exact path of the bad value."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from adapters.sinks.registry import BY_KEY as SINK_KEYS
from plugin.config.base import PathError
from plugin.config.root import Config
from plugin.errors import ConfigError
from plugin.rules.registry import BY_KEY as RULE_KEYS

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# A real config has a few thousand values nested a dozen deep. YAML aliases let a short file stand for a huge tree
# ("billion laughs": each level repeats the one before), and deep nesting exhausts the recursion of every step
# after the parser: both are refused with a message before anything walks the tree recursively.
MAX_VALUES = 200_000
MAX_DEPTH = 64


def _expand_env(text: str, source: str) -> str:
    """Replace ${VAR} and ${VAR:-default}; an unset variable without default is an error."""

    def repl(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value is None:
            if m.group(2) is None:
                raise ConfigError(f"{source}: environment variable {m.group(1)} is not set (or use ${{VAR:-default}})")
            return m.group(2)
        return value

    return _ENV.sub(repl, text)


def _check_size(data: Any, source: str) -> None:
    """ConfigError when the document, with its aliases expanded, holds over MAX_VALUES values or nests deeper than
    MAX_DEPTH; iterative, and it stops at the limit, so a bomb costs no more than a large honest file."""
    count = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(f"{source}: the document holds over {MAX_VALUES} values once its YAML aliases are "
                              "expanded: refused (an alias bomb?)")  # fmt: skip
        if isinstance(node, dict | list):
            if depth > MAX_DEPTH:
                raise ConfigError(f"{source}: values nested deeper than {MAX_DEPTH} levels: refused")
            items = [*node.keys(), *node.values()] if isinstance(node, dict) else node
            stack.extend((v, depth + 1) for v in items)


def _expand_tree(node: Any, source: str) -> Any:
    """Expand ${VAR} in every string value after YAML parsing, so a secret with quotes, colons or '#' in it
    cannot change the document's structure (keys and comments are never expanded)."""
    if isinstance(node, str):
        return _expand_env(node, source)
    if isinstance(node, list):
        return [_expand_tree(v, source) for v in node]
    if isinstance(node, dict):
        return {k: _expand_tree(v, source) for k, v in node.items()}
    return node


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    prev: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(prev, int) and (part in RULE_KEYS or part in SINK_KEYS):
            pass  # pydantic puts the discriminator's value in the path; users never wrote it
        else:
            # a key as written, quoted when it would not read as one (empty, spaces around it, a line break)
            text = str(part) if str(part).isprintable() and str(part).strip() == str(part) != "" else repr(part)
            out += f".{text}" if out else text
        prev = part
    return out or "(top level)"


def _num(v: Any) -> Any:
    """0.0 reads as 0 in messages."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _is_secret(loc: tuple[int | str, ...]) -> bool:
    """A value never echoed in an error (a token or password that is too short is still mostly the secret)."""
    name = str(loc[-1]).lower() if loc else ""
    return name.endswith(("token", "password", "secret", "passphrase"))


def _message(err: Any) -> str:
    ctx = err.get("ctx") or {}
    kind = err["type"]
    simple = {
        "greater_than": "must be > {gt}",
        "greater_than_equal": "must be >= {ge}",
        "less_than": "must be < {lt}",
        "less_than_equal": "must be <= {le}",
        "extra_forbidden": "unknown key (not allowed here)",
        "missing": "required key is missing",
        "too_short": "needs at least {min_length} item(s)",
        "string_pattern_mismatch": "does not match {pattern}",
    }
    if kind in simple:
        msg = simple[kind].format(**{k: _num(v) for k, v in ctx.items()})
    elif kind == "value_error":
        msg = str(ctx.get("error", err["msg"]))
    elif kind == "union_tag_invalid":
        msg = f"unknown type {ctx.get('tag')!r} (expected one of {ctx.get('expected_tags')})"
    else:
        msg = err["msg"][0].lower() + err["msg"][1:]
    if _is_secret(err["loc"]):
        return msg
    if kind not in ("missing", "extra_forbidden", "value_error") and not isinstance(err.get("input"), dict | list):
        msg += f" (got {err.get('input')!r})"
    return msg


class ConfigProblems(ConfigError):
    """An invalid config, with each problem as (key path, message) for a caller that shows them by key (the zone
    editor); its text is the same lines `check-config` prints."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        super().__init__("\n".join(f"{source}: {path}: {message}" for path, message in problems))
        self.problems = problems


def validation_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """(exact key path, message) for each problem ("(top level)" for the root's own)."""
    problems = []
    for err in exc.errors():
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, PathError):
            # pydantic's loc says where the model that raised it sits (empty for the root)
            where = f"{_format_loc(err['loc'])}." if err["loc"] else ""
            problems.append((f"{where}{inner.path}", str(inner).removeprefix(f"{inner.path}: ")))
            continue
        problems.append((_format_loc(err["loc"]), _message(err)))
    return problems


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem, each starting with the exact path of the bad value."""
    return "\n".join(f"{source}: {path}: {message}" for path, message in validation_problems(exc))


def parse_config(data: Any, source: str = "config") -> Config:
    """Validate an already-parsed document."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigProblems(source, validation_problems(exc)) from None


def parse_config_text(text: str, source: str = "config") -> Config:
    """Parse YAML text, expand ${ENV} references and validate: a Config, or ConfigError saying what is wrong."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow: no mark, a position
            where = f" at character {exc.position + 1}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]  # one line, as every config error
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    except RecursionError:  # the parser's own recursion, on thousands of nested brackets
        raise ConfigError(f"{source}: values nested deeper than {MAX_DEPTH} levels: refused") from None
    _check_size(data, source)
    return parse_config(_expand_tree(data, source), source)


def load_config(path: str | Path) -> Config:
    """Read, expand ${ENV} references, parse and validate a YAML config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start}): save the config as UTF-8") from None
    return parse_config_text(text, str(p))
