"""Property tests (hypothesis) for the config loader: any text, any YAML document, a full config with values
replaced or removed at random places, YAML alias bombs and deep nesting. Each must give a Config or a ConfigError
whose every line names the file, never another exception, a hang or a tree expanded without bound.

The quick tier runs a few hundred examples each; the `slow` variants ten times as many.
`pytest --hypothesis-show-statistics` prints how many each ran."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest
import yaml
from helpers import example
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin.config.loader import MAX_DEPTH, MAX_VALUES, parse_config_text
from plugin.config.root import Config
from plugin.errors import ConfigError

FAST = settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
DEEP = settings(max_examples=2000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
SOURCE = "fuzz.yaml"


def full_document() -> dict[str, Any]:
    """The example config with every business section: POS, an alarm panel, access control and a sink."""
    doc = example()
    doc["cameras"][0]["zones"].append({"id": "counter", "polygon": [[0.4, 0.6], [0.9, 0.6], [0.9, 1.0], [0.4, 1.0]]})
    line = [[0.1, 0.5], [0.9, 0.5]]
    doc["rules"].append({"id": "door-line", "type": "line_crossing", "camera": "cam1", "line": line})
    doc["pos"] = {
        "lanes": [{"id": 3, "camera": "cam1", "customer_zone": "counter"}],
        "text": [{"port": 9100, "host": "0.0.0.0", "allow_from": ["10.0.0.0/24"], "patterns": {"end": "^END"}}],
        "transact": [{"port": 9200, "lanes": ["3"]}],
    }
    doc["alarm_panels"] = [
        {"id": "panel", "protocol": "sia_dc09", "port": 12000,
         "accounts": [{"account": "1234", "zone_map": {"15": {"camera": "cam1", "zone": "stockroom-door"}}}]}
    ]  # fmt: skip
    doc["access"] = {"doors": [{"id": "D1", "camera": "cam1", "line_rule": "door-line", "zone": "counter"}]}
    doc["sinks"] = [{"kind": "webhook", "id": "wh", "url": "http://127.0.0.1:9/hook"}]
    return doc


FULL = full_document()


def _paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at] if at else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*at, i))
    return out


PATHS = _paths(FULL)
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=20),
    st.sampled_from(["0.0.0.0", "::", "${NOT_SET_ANYWHERE}", "${HOME:-x}", "10.0.0.0/33", "(unclosed", "UTC", "cam1"]),
)  # fmt: skip
_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip
_edits = st.lists(st.tuples(st.sampled_from(PATHS), st.one_of(st.just("<delete>"), _values)), min_size=1, max_size=4)


def _edited(edits: list[tuple[tuple[Any, ...], Any]]) -> str:
    doc = copy.deepcopy(FULL)
    for path, value in edits:
        parent: Any = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            if value == "<delete>":
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced the way there
    return yaml.safe_dump(doc, sort_keys=False)


def _bomb(width: int, levels: int) -> str:
    names = [f"l{i}" for i in range(levels + 1)]
    lines = [f"{names[0]}: &{names[0]} [{', '.join(['x'] * width)}]"]
    for prev, name in itertools.pairwise(names):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * width)}]")
    return "\n".join(lines) + "\n"


documents = st.one_of(
    st.text(max_size=400),
    _values.map(lambda v: yaml.safe_dump(v)),
    st.builds(_edited, _edits),
    st.builds(_bomb, st.integers(2, 8), st.integers(1, 6)),  # up to 262,144 values: over the limit, cut short
    st.integers(1, 200).map(lambda n: "cameras: " + "[" * n + "]" * n),  # thousands deep: the table below
    st.integers(1, 300).map(lambda n: "site: " + "{a: " * n + "1" + "}" * n),
)


def _loads(text: str) -> None:
    try:
        config = parse_config_text(text, SOURCE)
    except ConfigError as exc:
        message = str(exc)
        assert message
        for line in message.splitlines():
            assert line.startswith(f"{SOURCE}: "), message
        return
    assert isinstance(config, Config)


@FAST
@given(documents)
def test_the_loader_gives_a_config_or_errors_naming_the_file(text: str) -> None:
    _loads(text)


@pytest.mark.slow
@DEEP
@given(documents)
def test_the_loader_gives_a_config_or_errors_naming_the_file_many(text: str) -> None:
    _loads(text)


def test_the_full_document_loads() -> None:
    """The document the edits start from is a good config."""
    config = parse_config_text(yaml.safe_dump(FULL), SOURCE)
    assert config.pos is not None and config.access is not None and len(config.alarm_panels) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_bomb(9, 8), f"holds over {MAX_VALUES} values once its YAML aliases are expanded"),  # 9^9: 387 million
        ("cameras: " + "[" * 3000 + "]" * 3000, f"nested deeper than {MAX_DEPTH} levels"),  # the parser's recursion
        ("site: " + "{a: " * 100 + "1" + "}" * 100, f"nested deeper than {MAX_DEPTH} levels"),
        ("site: !!python/object:os.system {}", "not valid YAML at line 1"),
    ],
)
def test_hostile_documents_are_refused_with_a_reason(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_config_text(text, SOURCE)
