"""Config: the issue's example is accepted; every kind of mistake names its exact path; the CLI exits 2."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import EXAMPLE, example

from plugin.config.base import ScheduleConfig, literal_key
from plugin.config.loader import load_config, parse_config
from plugin.config.root import Config
from plugin.errors import ConfigError
from plugin.rules.registry import BY_KEY, RULES


def test_example_from_the_issue_is_accepted() -> None:
    config = parse_config(example())
    assert [c.id for c in config.cameras] == ["cam1"]
    assert [r.type for r in config.rules] == ["loitering", "zone_intrusion"]
    assert config.rules[0].min_dwell_s == 8  # type: ignore[union-attr]
    assert config.triton.url is None  # embedded by default


def test_every_registered_rule_is_a_config_type_with_its_own_key() -> None:
    keys = [rule.type_key for rule in RULES]
    assert len(set(keys)) == len(keys) == len(BY_KEY)  # no two rule modules claim one key
    for rule in RULES:
        assert rule.type_key == literal_key(rule.config_model, "type") and rule.type_key
        doc = {
            "cameras": [{"id": "cam1", "source": "x.mp4"}],
            "rules": [{"type": rule.type_key, "id": "r", "camera": "cam1"}],
        }
        try:
            parse_config(doc)
        except ConfigError as exc:  # missing fields of that rule's own model, never an unknown type
            assert "unknown type" not in str(exc)


def _set(path: list[Any], value: Any) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_set(["rules", 1, "min_dwell_s"], 0), None),  # wrong type key for intrusion: unknown key
        (_set(["rules", 0, "min_dwell_s"], 0), "rules[0].min_dwell_s: must be > 0"),
        (_set(["rules", 0, "min_dwell_s"], -3), "rules[0].min_dwell_s: must be > 0 (got -3)"),
        (_set(["rules", 0, "zonee"], "table"), "rules[0].zonee: unknown key"),
        (_set(["rules", 0, "type"], "teleport"), "rules[0]: unknown type 'teleport'"),
        (_set(["rules", 0, "zone"], "till"), "rules[0].zone: camera 'cam1' has no zone 'till'"),
        (_set(["rules", 1, "camera"], "cam9"), "rules[1].camera: unknown camera 'cam9'"),
        (_set(["cameras", 0, "zones", 0, "polygon"], [[0, 0], [1, 1]]), "cameras[0].zones[0].polygon: needs at least"),
        (_set(["cameras", 0, "zones", 1, "polygon", 2, 0], 1.2), "cameras[0].zones[1].polygon[2][0]: must be <= 1"),
        (_set(["rules", 1, "schedule", "timezone"], "Mars/Olympus"), "rules[1].schedule.timezone: unknown time zone"),
        (_set(["rules", 1, "schedule", "active"], ["9-17"]), "rules[1].schedule.active[0]: '9-17' is not a range"),
        (_set(["cameras", 0, "fps"], 0), "cameras[0].fps: must be > 0"),
        (_set(["triton"], {"url": "localhost:8001"}), "triton.url: must look like grpc://host:port"),
        (_set(["storage", "pathh"], "x"), "storage.pathh: unknown key"),
        (_set(["cameras", 0, "zones", 1, "id"], "table"), "zones: duplicate id 'table'"),
        (_set(["sinks"], [{"kind": "webhook", "id": "w", "url": "ftp://x"}]), "sinks[0].url: does not match"),
        (_set(["cameras", 0, "source"], None), "cameras[0].source: required: a URL or file, or an onvif section"),
        (_set(["cameras", 0, "onvif"], {"host": "10.0.0.5"}), "cameras[0].source: give source or onvif, not both"),
        (_set(["cameras", 0, "onvif"], {"host": "http://10.0.0.5/onvif"}), "cameras[0].onvif.host: 'http://10.0"),
        (_set(["cameras", 0, "onvif"], {"host": "h", "port": 0}), "cameras[0].onvif.port: must be >= 1 (got 0)"),
        (_set(["cameras", 0, "onvif"], {"host": "h", "password": "x"}), "cameras[0].onvif.password: set without"),
    ],
)
def test_bad_values_are_named_by_path(mutate: Any, expected: str | None) -> None:
    doc = example()
    mutate(doc)
    with pytest.raises(ConfigError) as err:
        parse_config(doc, "store.yaml")
    message = str(err.value)
    assert message.startswith("store.yaml: ")
    if expected is None:
        assert "rules[1].min_dwell_s: unknown key" in message
    else:
        assert expected in message


def test_empty_file_is_a_valid_empty_config(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == Config()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cameras: [", "not valid YAML at line 1"),
        ("- a\n- b\n", "the top level must be a mapping"),
        ("storage:\n  path: ${STORESIGHT_TEST_UNSET_VAR}", "environment variable STORESIGHT_TEST_UNSET_VAR is not set"),
    ],
)
def test_unparseable_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert expected in str(err.value)


def test_environment_references_are_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORESIGHT_TEST_DIR", "/srv/ss")
    path = tmp_path / "env.yaml"
    path.write_text("storage:\n  path: ${STORESIGHT_TEST_DIR}/data\nsite: {timezone: '${TZ_UNSET_X:-Europe/Paris}'}\n")
    config = load_config(path)
    assert config.storage.path == Path("/srv/ss/data")
    assert config.site.timezone == "Europe/Paris"


def test_secrets_with_yaml_syntax_stay_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORESIGHT_TEST_SECRET", 'p"a: ss #1\\')
    path = tmp_path / "env.yaml"
    path.write_text(
        "# ${NOT_EXPANDED_IN_COMMENTS}\n"
        "sinks:\n  - {kind: webhook, id: w, url: 'http://127.0.0.1:9/x',\n"
        '     secret: "${STORESIGHT_TEST_SECRET}-0123456789"}\n'
    )
    sink = load_config(path).sinks[0]
    assert sink.secret == 'p"a: ss #1\\-0123456789'  # type: ignore[union-attr]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("active", "local", "expected"),
    [
        (["22:00-06:00"], "23:30", True),
        (["22:00-06:00"], "05:59", True),
        (["22:00-06:00"], "06:00", False),
        (["22:00-06:00"], "14:00", False),
        (["09:00-17:00"], "09:00", True),
        (["09:00-17:00"], "17:00", False),
        (["20:00-24:00"], "23:59", True),
        (["08:00-09:00", "18:00-19:00"], "18:30", True),
    ],
)
def test_schedule_ranges_in_local_time(active: list[str], local: str, expected: bool) -> None:
    schedule = ScheduleConfig(active=active, timezone="Europe/London")
    h, m = (int(x) for x in local.split(":"))
    # 2026-07-01: London is UTC+1 (BST), so local HH:MM is UTC HH-1
    at = datetime(2026, 7, 1, h, m, tzinfo=UTC).replace(hour=(h - 1) % 24)
    if h == 0:
        at = at.replace(day=at.day - 1)
    assert schedule.is_active(at) is expected


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(EXAMPLE)
    ok = subprocess.run([sys.executable, "-m", "plugin.cli", "check-config", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "OK (1 camera(s), 2 rule(s)" in ok.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.replace("min_dwell_s: 8", "min_dwell_s: -1"))
    res = subprocess.run([sys.executable, "-m", "plugin.cli", "check-config", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2
    assert "rules[0].min_dwell_s: must be > 0" in res.stderr
    assert "Traceback" not in res.stderr
