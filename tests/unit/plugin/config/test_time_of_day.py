"""The YAML 1.1 trap: an unquoted `reset_at: 22:00` reads as the number 1320. Every time-of-day field says so and
shows the fix; a walk over every config model (the rule and sink unions included) finds them all."""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, ValidationError

from adapters.sinks.registry import SINKS
from plugin.config.base import TimeOfDay, TimeRange
from plugin.config.loader import load_config
from plugin.config.root import Config
from plugin.errors import ConfigError
from plugin.rules.registry import RULE_CONFIGS

# What a clock-time field looks like by name or description: the walk below insists each such field has the trap.
LOOKS_LIKE_A_CLOCK = re.compile(r"HH:MM|\b\d{1,2}:\d{2}\b|time of day|closing time|opening time")
CLOCK_NAMES = re.compile(r"(_at|_time|^opens|^closes|^open|^close)$")
TRAPS = {id(m) for t in (TimeOfDay, TimeRange) for m in t.__metadata__}


def _models_and_args(annotation: Any) -> Iterator[Any]:
    """Every type inside an annotation (unions, lists, Annotated, dicts), the annotation itself first."""
    yield annotation
    origin = get_origin(annotation)
    if origin is Annotated:
        yield from _models_and_args(get_args(annotation)[0])
        return
    if origin in (Union, types.UnionType, list, tuple, dict, set, frozenset) or origin is not None:
        for arg in get_args(annotation):
            yield from _models_and_args(arg)


def _has_trap(annotation: Any, metadata: list[Any]) -> bool:
    if any(id(m) in TRAPS for m in metadata):
        return True
    return any(
        get_origin(t) is Annotated and any(id(m) in TRAPS for m in t.__metadata__) for t in _models_and_args(annotation)
    )


def _all_models() -> list[type[BaseModel]]:
    seen: dict[type[BaseModel], None] = {}
    todo: list[type[BaseModel]] = [Config]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen[model] = None
        for field in model.model_fields.values():
            for t in _models_and_args(field.annotation):
                if isinstance(t, type) and issubclass(t, BaseModel):
                    todo.append(t)
    return list(seen)


def _clock_fields() -> list[tuple[type[BaseModel], str, bool]]:
    """(model, field, is a list) for every field with the trap; asserts no clock-looking field goes without."""
    found = []
    for model in _all_models():
        for name, field in model.model_fields.items():
            trapped = _has_trap(field.annotation, field.metadata)
            looks = bool(LOOKS_LIKE_A_CLOCK.search(field.description or "")) or bool(CLOCK_NAMES.search(name))
            is_text = any(t is str for t in _models_and_args(field.annotation))
            if looks and is_text:
                assert trapped, f"{model.__name__}.{name} looks like a time of day: type it TimeOfDay or TimeRange"
            if trapped:
                found.append((model, name, get_origin(field.annotation) is list))
    return found


def test_the_walk_reaches_the_unions_and_finds_the_known_clock_fields() -> None:
    models = set(_all_models())
    assert set(RULE_CONFIGS) | {spec.config for spec in SINKS} <= models  # every rule and sink, from the unions
    names = {(m.__name__, f) for m, f, _ in _clock_fields()}
    assert {("StoreOccupancyConfig", "reset_at"), ("ScheduleConfig", "active")} <= names


@pytest.mark.parametrize(("model", "field", "is_list"), _clock_fields(), ids=lambda v: getattr(v, "__name__", str(v)))
def test_every_clock_field_explains_the_yaml_trap(model: type[BaseModel], field: str, is_list: bool) -> None:
    for value in (1320, [1320]) if is_list else (1320,):
        with pytest.raises(ValidationError) as err:
            model.model_validate({field: value})
        ours = [e for e in err.value.errors() if e["loc"][:1] == (field,)]
        assert ours, err.value
        message = str(ours[0]["ctx"]["error"])
        assert "got the number 1320: YAML 1.1 reads an unquoted 22:00 as a base-60 number" in message
        assert f'{field}: "22:00"' in message or f'{field}: ["22:00-06:00"]' in message


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "store_occupancy:\n  - {id: shop, lines: [door-in], reset_at: 22:00}\n",
            "store_occupancy[0].reset_at: got the number 1320: YAML 1.1 reads an unquoted 22:00 as a base-60 number; "
            'quote it: reset_at: "22:00"',
        ),
        (
            "store_occupancy:\n  - {id: shop, lines: [door-in], reset_at: 7:30}\n",
            "store_occupancy[0].reset_at: got the number 450: YAML 1.1 reads an unquoted 7:30 as a base-60 number; "
            'quote it: reset_at: "07:30"',
        ),
        (
            "cameras: [{id: cam1, source: x.mp4, zones: [{id: z, polygon: [[0, 0], [1, 0], [1, 1]]}]}]\n"
            "rules:\n  - {type: zone_intrusion, id: night, camera: cam1, zone: z, schedule: {active: [22:00]}}\n",
            "rules[0].schedule.active[0]: got the number 1320: YAML 1.1 reads an unquoted 22:00 as a base-60 number; "
            'quote it: active: ["22:00-06:00"]',
        ),
        (
            "store_occupancy:\n  - {id: shop, lines: [door-in], reset_at: '25:00'}\n",
            "store_occupancy[0].reset_at: '25:00' is not a time like \"22:00\"",
        ),
    ],
)
def test_the_file_as_an_admin_wrote_it(tmp_path: Path, yaml_text: str, expected: str) -> None:
    path = tmp_path / "store.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}: {expected}" in str(err.value)


def test_quoted_times_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "store.yaml"
    path.write_text(
        "cameras: [{id: cam1, source: x.mp4, zones: [{id: z, polygon: [[0, 0], [1, 0], [1, 1]]}]}]\n"
        "rules:\n"
        '  - {type: zone_intrusion, id: night, camera: cam1, zone: z, schedule: {active: ["22:00-06:00"]}}\n'
        "  - {type: line_crossing, id: door-in, camera: cam1, line: [[0, 0.5], [1, 0.5]]}\n"
        'store_occupancy: [{id: shop, lines: [door-in], reset_at: "22:00"}]\n'
    )
    config = load_config(path)
    assert config.store_occupancy[0].reset_at == "22:00"
    assert config.rules[0].schedule is not None and config.rules[0].schedule.active == ["22:00-06:00"]
