"""`storesight config schema`: the JSON Schema an editor uses accepts the configs we ship and document, and rejects
the mistakes an editor should underline (a typo'd key, a wrong rule type, a number where a time of day belongs)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from adapters.sinks.registry import SINKS
from plugin.cli.main import main
from plugin.config.loader import parse_config
from plugin.config.root import Config
from plugin.config.schema import config_schema
from plugin.rules.registry import BY_KEY as RULE_KEYS

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = config_schema()
    Draft202012Validator.check_schema(schema)  # the schema itself is valid draft 2020-12
    return Draft202012Validator(schema)


def _as_an_editor_reads_it(text: str) -> Any:
    """The YAML as JSON data: dates and times the YAML 1.1 reader turned into objects are text again (YAML 1.2, which
    editors speak, keeps them as strings)."""
    return json.loads(json.dumps(yaml.safe_load(text), default=str))


def _documented_configs() -> list[tuple[str, str]]:
    """Every ```yaml block in the README and docs/ that is a whole config file (only top-level config keys)."""
    blocks = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for k, match in enumerate(YAML_BLOCK.finditer(page.read_text(encoding="utf-8"))):
            data = yaml.safe_load(match.group(1))
            if isinstance(data, dict) and set(data) <= set(Config.model_fields):
                blocks.append((f"{page.relative_to(ROOT)}#{k}", match.group(1)))
    return blocks


SHIPPED = [ROOT / "packaging/demo/store-demo.yaml"]  # (tests/system/scenarios hold scenarios, not configs)


def test_enough_documented_configs_are_checked() -> None:
    names = [name for name, _ in _documented_configs()]
    assert len(names) >= 15, names  # the README's, configuration.md's and every sink page's example at least
    assert "docs/configuration.md#0" in names and "README.md#0" in names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_are_valid(validator: Draft202012Validator, path: Path) -> None:
    errors = list(validator.iter_errors(_as_an_editor_reads_it(path.read_text(encoding="utf-8"))))
    assert not errors, best_match(errors)


@pytest.mark.parametrize(("name", "text"), _documented_configs(), ids=lambda v: v if "#" in v else "")
def test_documented_configs_are_valid(validator: Draft202012Validator, name: str, text: str) -> None:
    errors = list(validator.iter_errors(_as_an_editor_reads_it(text)))
    assert not errors, f"{name}: {best_match(errors).message}"


DEMO = (ROOT / "packaging/demo/store-demo.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda d: d["cameras"][0].update(fsp=5), "'fsp' was unexpected"),  # a typo'd key
        (lambda d: d.update(camera=d.pop("cameras")), "'camera' was unexpected"),  # at the top level
        (lambda d: d["rules"][0].update(type="loiter"), "loiter"),  # a rule type that does not exist
        (lambda d: d["rules"][0].update(min_dwell_s="long"), "long"),  # text where a number goes
        (lambda d: d.update(store_occupancy=[{"id": "s", "lines": ["x"], "reset_at": 1320}]), "1320"),
        (lambda d: d.update(sinks=[{"kind": "mqtt", "id": "m", "hots": "broker"}]), "'hots' was unexpected"),
    ],
)
def test_mistakes_are_rejected(validator: Draft202012Validator, edit: Any, says: str) -> None:
    doc = _as_an_editor_reads_it(DEMO)
    assert not list(validator.iter_errors(doc))
    edit(doc)
    errors = list(validator.iter_errors(doc))
    assert errors
    assert says in " ".join(e.message for e in errors) + " ".join(c.message for e in errors for c in (e.context or []))


def test_environment_references_may_stand_for_numbers(validator: Draft202012Validator) -> None:
    doc = {"web": {"port": "${STORESIGHT_PORT}"}, "sinks": [{"kind": "mqtt", "id": "m", "port": "${MQTT_PORT:-1883}"}]}
    assert not list(validator.iter_errors(doc))
    assert list(validator.iter_errors({"web": {"port": "eighty"}}))


def test_the_schema_carries_titles_descriptions_and_every_rule_and_sink() -> None:
    schema = config_schema()
    assert schema["title"] == "StoreSight configuration" and schema["$schema"].endswith("2020-12/schema")
    defs = schema["$defs"]
    reset_at = defs["StoreOccupancyConfig"]["properties"]["reset_at"]
    assert "closing time" in reset_at["description"]
    rule_types = set(schema["properties"]["rules"]["items"]["discriminator"]["mapping"])
    assert rule_types == set(RULE_KEYS)
    sink_kinds = set(schema["properties"]["sinks"]["items"]["discriminator"]["mapping"])
    assert sink_kinds == {spec.key for spec in SINKS}
    demo = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", DEMO.replace("${STORESIGHT_DEMO_CLIP}", "demo.mp4"))  # defaults
    assert parse_config(_as_an_editor_reads_it(demo))


def test_the_command_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "schema"]) == 0
    assert json.loads(capsys.readouterr().out) == config_schema()
