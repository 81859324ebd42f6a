"""The zone editor's config writer: a round trip that keeps comments, quoting and ${VAR} references, validates as
check-config does (a refused change names the key and leaves the file alone), writes atomically with a backup."""

from __future__ import annotations

import difflib
import os
import stat
from pathlib import Path

import pytest

from plugin.config.loader import load_config
from plugin.config.writer import GeometryRefused, LineEdit, ZoneEdit, save_camera_geometry
from plugin.errors import ConfigError
from plugin.rules.line_crossing import LineCrossingRuleConfig

TABLE = [(0.39, 0.67), (0.83, 0.67), (0.83, 1.0), (0.39, 1.0)]
CORNER = [(0, 0), (0.1, 0), (0.1, 0.1)]
SPARE = [(0.5, 0), (0.6, 0), (0.6, 0.1)]
EXIT = ((0.75, 1.0), (0.75, 0.0))

CONFIG = """\
# Store 42: the front room (hand-written; the zone editor must keep every comment)
site:
  id: store-42  # as head office names it
  name: "Store 42"
storage:
  path: {storage}
web:
  token: ${{STORE_TOKEN}}
cameras:
  - id: cam1
    source: ${{CAM1_SOURCE:-rtsp://127.0.0.1:8554/cam1}}  # the door camera
    fps: 5
    staff_zones: [corner]
    zones:
      # the table, feet inside
      - id: table
        polygon: [[0.39, 0.67], [0.83, 0.67], [0.83, 1.0], [0.39, 1.0]]
        anchor: bottom_center  # feet
      - id: corner
        polygon: [[0, 0], [0.1, 0], [0.1, 0.1]]
      # kept for the summer layout
      - id: spare
        polygon: [[0.5, 0], [0.6, 0], [0.6, 0.1]]
  - id: cam2
    source: 'rtsp://127.0.0.1:8554/cam2'
    zones:
      - {{id: till, polygon: [[0, 0], [1, 0], [1, 1]]}}
rules:
  # drawn bottom to top, so its right is the screen's right
  - {{id: exit, type: line_crossing, camera: cam1, line: [[0.75, 1], [0.75, 0]], in_side: left}}
  - {{id: table-dwell, type: loitering, camera: cam1, zone: table, min_dwell_s: 8}}  # six people
  - {{id: till-intrusion, type: zone_intrusion, camera: cam2, zone: till}}
"""


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STORE_TOKEN", "a-token-of-twenty-chars")
    path = tmp_path / "storesight.yaml"
    path.write_text(CONFIG.format(storage=tmp_path / "data"), encoding="utf-8")
    path.chmod(0o600)
    return path


def zones(table: list[tuple[float, float]] = TABLE) -> list[ZoneEdit]:
    return [ZoneEdit("table", table, "table"), ZoneEdit("corner", CORNER, "corner"), ZoneEdit("spare", SPARE, "spare")]


def lines(line: tuple[tuple[float, float], tuple[float, float]] = EXIT, in_side: str = "left") -> list[LineEdit]:
    return [LineEdit("exit", line, in_side, "exit")]  # type: ignore[arg-type]


def changed_lines(before: str, after: str) -> list[str]:
    return [d for d in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if d[:1] in "+-" and not d.startswith(("+++", "---"))]  # fmt: skip


def test_moving_a_zone_and_a_line_changes_only_their_values(config_file: Path) -> None:
    before = config_file.read_text()
    moved = [(0.4, 0.6), (0.9, 0.6), (0.9, 1.0), (0.4, 1.0)]
    saved = save_camera_geometry(config_file, "cam1", zones(moved), lines(((0.7, 1.0), (0.7, 0.0)), "right"))
    after = config_file.read_text()
    assert changed_lines(before, after) == [
        "-        polygon: [[0.39, 0.67], [0.83, 0.67], [0.83, 1.0], [0.39, 1.0]]",
        "+        polygon: [[0.4, 0.6], [0.9, 0.6], [0.9, 1], [0.4, 1]]",
        "-  - {id: exit, type: line_crossing, camera: cam1, line: [[0.75, 1], [0.75, 0]], in_side: left}",
        "+  - {id: exit, type: line_crossing, camera: cam1, line: [[0.7, 1], [0.7, 0]], in_side: right}",
    ]  # every comment, the ${VAR} references, the quoting and the other camera are as they were
    assert "${STORE_TOKEN}" in after and "${CAM1_SOURCE:-rtsp://127.0.0.1:8554/cam1}" in after
    assert saved.backup == config_file.with_name("storesight.yaml.bak")
    assert saved.backup.read_text() == before
    reread = load_config(config_file)  # as the bridge reads it at its next start
    assert reread.camera("cam1").zones[0].polygon == moved
    exit_rule = reread.rules[0]
    assert isinstance(exit_rule, LineCrossingRuleConfig)
    assert exit_rule.line == ((0.7, 1.0), (0.7, 0.0)) and exit_rule.in_side == "right"
    assert saved.config.camera("cam1").zones[0].polygon == moved
    assert saved.shapes == {"cameras[0].zones[0]": "zone:table", "cameras[0].zones[1]": "zone:corner",
                            "cameras[0].zones[2]": "zone:spare", "rules[0]": "line:exit"}  # fmt: skip


def test_new_zone_and_line_are_added_in_the_files_style_and_a_deleted_zone_goes(config_file: Path) -> None:
    new_zone = ZoneEdit("door", [(0.1, 0.5), (0.3, 0.5), (0.3, 0.9)])
    new_line = LineEdit("door-line", ((0.1, 0.9), (0.3, 0.9)), "left")
    kept = [ZoneEdit("table", TABLE, "table"), ZoneEdit("corner", CORNER, "corner")]
    save_camera_geometry(config_file, "cam1", [*kept, new_zone], [*lines(), new_line])
    after = config_file.read_text()
    assert "id: spare" not in after
    config = load_config(config_file)
    assert [z.id for z in config.camera("cam1").zones] == ["table", "corner", "door"]
    assert "      - id: door\n        polygon: [[0.1, 0.5], [0.3, 0.5], [0.3, 0.9]]\n" in after
    line = "  - {id: door-line, type: line_crossing, camera: cam1, line: [[0.1, 0.9], [0.3, 0.9]], in_side: left}"
    assert line in after
    assert "# the table, feet inside" in after and "# six people" in after and "# drawn bottom to top" in after
    rule = next(r for r in config.rules if r.id == "door-line")
    assert isinstance(rule, LineCrossingRuleConfig) and rule.camera == "cam1" and rule.in_side == "left"


def test_a_renamed_zone_takes_its_rules_and_staff_zones_along(config_file: Path) -> None:
    renamed = [
        ZoneEdit("counter", TABLE, "table"),
        ZoneEdit("back", CORNER, "corner"),
        ZoneEdit("spare", SPARE, "spare"),
    ]
    saved = save_camera_geometry(config_file, "cam1", renamed, lines())
    rule = next(r for r in saved.config.rules if r.id == "table-dwell")
    assert rule.zone_refs() == [("zone", "counter")]
    assert saved.config.camera("cam1").staff_zones == ["back"]
    assert saved.config.camera("cam2").zones[0].id == "till"  # the other camera's zones are not touched


def unchanged(path: Path, before: bytes) -> None:
    assert path.read_bytes() == before
    assert not path.with_name(path.name + ".bak").exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ["storesight.yaml"]  # no temporary file left


def test_a_polygon_of_two_points_is_refused_by_key_and_the_file_is_untouched(config_file: Path) -> None:
    before = config_file.read_bytes()
    with pytest.raises(GeometryRefused) as refused:
        save_camera_geometry(config_file, "cam1", zones([(0.1, 0.1), (0.2, 0.2)]), lines())
    assert refused.value.problems == [("cameras[0].zones[0].polygon", "needs at least 3 item(s)")]
    assert refused.value.shapes["cameras[0].zones[0]"] == "zone:table"
    assert str(refused.value).startswith(f"{config_file}: cameras[0].zones[0].polygon: needs at least 3 item(s)")
    unchanged(config_file, before)


def test_a_point_off_the_picture_and_a_bad_name_are_refused_by_key(config_file: Path) -> None:
    before = config_file.read_bytes()
    with pytest.raises(GeometryRefused) as refused:
        save_camera_geometry(config_file, "cam1", [ZoneEdit("table", [(0, 0), (1.5, 0), (1, 1)], "table"),
                                                   ZoneEdit("has space", CORNER, "corner")], lines())  # fmt: skip
    paths = [p for p, _ in refused.value.problems]
    assert paths[0].startswith("cameras[0].zones[0].polygon[1]"), refused.value.problems
    assert "cameras[0].zones[1].id" in paths, refused.value.problems
    unchanged(config_file, before)


def test_deleting_a_zone_a_rule_or_staff_zones_use_is_refused_naming_the_key(config_file: Path) -> None:
    before = config_file.read_bytes()
    with pytest.raises(GeometryRefused) as refused:
        save_camera_geometry(config_file, "cam1", [ZoneEdit("corner", CORNER, "corner")], lines())
    assert refused.value.problems == [("rules[1].zone", "camera 'cam1' has no zone 'table' (zones: corner)")]
    with pytest.raises(GeometryRefused) as refused:
        save_camera_geometry(config_file, "cam1", [ZoneEdit("table", TABLE, "table")], lines())
    assert refused.value.problems == [
        ("cameras[0].staff_zones[0]", "camera 'cam1' has no zone 'corner' (zones: table)")
    ]
    unchanged(config_file, before)


def test_a_line_of_one_point_is_refused_by_key(config_file: Path) -> None:
    before = config_file.read_bytes()
    with pytest.raises(GeometryRefused) as refused:
        save_camera_geometry(config_file, "cam1", zones(), lines(((0.5, 0.5), (0.5, 0.5))))
    assert refused.value.problems == [("rules[0].line", "the two points of a line must differ")]
    assert refused.value.shapes["rules[0]"] == "line:exit"
    unchanged(config_file, before)


def test_an_edit_of_a_shape_no_longer_in_the_file_is_refused(config_file: Path) -> None:
    before = config_file.read_bytes()
    with pytest.raises(GeometryRefused) as refused:
        save_camera_geometry(config_file, "cam1", [*zones(), ZoneEdit("gone", CORNER, "gone")], lines())
    assert refused.value.problems[0][0] == "cameras[0].zones"
    assert "no zone 'gone' in the file any more" in refused.value.problems[0][1]
    with pytest.raises(GeometryRefused, match="cameras: no camera 'cam9' in the file"):
        save_camera_geometry(config_file, "cam9", [], [])
    unchanged(config_file, before)


def test_an_unset_variable_is_refused_as_check_config_refuses_it(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = config_file.read_bytes()
    monkeypatch.delenv("STORE_TOKEN")
    with pytest.raises(GeometryRefused, match="environment variable STORE_TOKEN is not set"):
        save_camera_geometry(config_file, "cam1", zones(), lines())
    unchanged(config_file, before)


def test_the_write_is_one_rename_keeping_the_files_mode(config_file: Path) -> None:
    old_inode = config_file.stat().st_ino
    with config_file.open(encoding="utf-8") as reader:  # a reader that opened the old file keeps reading it whole
        saved = save_camera_geometry(config_file, "cam1", zones([(0.5, 0.5), (0.6, 0.5), (0.6, 0.6)]), lines())
        assert "0.39, 0.67" in reader.read()
    assert saved.backup.stat().st_ino == old_inode  # the previous file itself became the backup
    assert config_file.stat().st_ino != old_inode
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600  # the config may hold secrets
    assert sorted(p.name for p in config_file.parent.iterdir()) == ["storesight.yaml", "storesight.yaml.bak"]


def test_a_failed_rename_leaves_the_file_and_no_temporary(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = config_file.read_bytes()

    def full_disk(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(
        ConfigError, match=r"storesight.yaml: cannot write the config: No space left on device \(nothing"
    ):
        save_camera_geometry(config_file, "cam1", zones([(0.5, 0.5), (0.6, 0.5), (0.6, 0.6)]), lines())
    assert config_file.read_bytes() == before
    assert not any(p.name.endswith(".tmp") for p in config_file.parent.iterdir())
