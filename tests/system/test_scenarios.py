"""Scenario harness: real clips through the whole pipeline (`storesight run --once` with the session's
tritonserver), the rule outputs read back with `storesight insights --json` and `incidents --json`, and each
compared with what a person counted by eye.

A scenario is `tests/system/scenarios/<name>.yaml`:
  about   the by-eye reasoning for the whole clip (who does what, at which frames)
  media   a file name, looked for in $STORESIGHT_MEDIA_DIR, storesight-data/media, then ../shared/media
  camera  keys merged into camera `cam1` (fps, zones, staff_zones, ...); source and start time are filled in
  rules   the rules, on camera cam1
  expect  a list of {what, by_eye, tolerance, why}: `what` is `incidents.<rule id>` (the number of stored
          incidents of that rule) or a dotted path into `insights --json` (`lines.<rule>.in`,
          `occupancy.<rule>.max`, `queues.<rule>.max_length`, ...); the test passes when the measured value is
          within `tolerance` of `by_eye`, and `why` says how the by-eye value was counted and why the tolerance.
          A check the pipeline gets wrong today also has `known_gap` (why) and `measured_today` (the wrong value
          it gives): a strict xfail that fails when the gap closes, and fails too when the wrong value changes.

vtest.avi (OpenCV's sample clip, from Debian's opencv-doc: `storesight media fetch --vtest`), counted by eye on
every 5th frame of the lawn (every 10th where nobody is near it) with the zone and line drawn on; frame numbers
are as OpenCV reads them, from 0, at 10 frames/s:
  - frames 505-510: a man in a red-and-black jacket and a woman in a black coat enter from the bottom-right
    corner, straight onto the lawn (inside the zone from ~507);
  - frames 522-527: both cross the line x = 0.6 (segment y 0.8-1.0) leftwards at y ~ 0.96, he overlapping her:
    line "in" 2, "out" 0;
  - frames 545-575: they stand side by side at x ~ 0.25-0.3: 2 people in the zone, the most at any time;
  - frame ~598: he walks up-right onto the pavement, passing x = 0.6 at y ~ 0.73, above the segment's end: no
    crossing; 2 people were on the lawn ~507-598 (9 s): one overcrowding incident over 1 person for 5 s;
  - frames 600-660: she wanders at x 0.4-0.52 (never at 0.6), then walks up-left and leaves the zone at ~725:
    ~22 s on the lawn, one loitering incident at 15 s (his 9 s is not);
  - nobody else's feet enter the zone (frames 0-505 and 725-795): 2 intrusions, 1 group entry of 2 in 5 s.
The road line x = 0.9 (y 0.40-0.82, the whole pavement where it leaves the picture on the right), counted on every
5th frame of the right half (every 3rd at frames 478-538, where five people cross paths): in (walking left, from
the right edge) at frames ~23, 28, 51, 121, 140, 230, 238, 433, 470, 517, 582, 662, 702 = 13; out at ~139, 193,
343, 353, 382, 396, 513, 601 = 8. Not crossings: a man going up the upper road passes x = 0.9 at y ~ 0.3 (frames
100-120); a man stands at x = 0.85 from 520 to 620; three turn back at x 0.86-0.88 (frames 210, 640, 755).
The analysis runs at the clip's 10 frames/s: the two overlap while crossing and the tracker needs every frame.
The shared demo clip's scenario reuses the counts verified for tests/system/test_once.py and
tests/unit/plugin/rules/test_counting_rules.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import require
from helpers import run_cli, write_config

from plugin.config.loader import parse_config
from plugin.inference.server import REPO_ROOT

SCENARIOS = Path(__file__).parent / "scenarios"
START = "2026-11-29T14:00:00+00:00"
WINDOW = ("2026-11-29T14:00", "2026-11-29T15:00")  # every scenario clip is shorter than this hour
SCENARIO_KEYS = {"about", "media", "camera", "rules", "expect"}
CHECK_KEYS = {"what", "by_eye", "tolerance", "why"}
GAP_KEYS = {"known_gap", "measured_today"}  # together or not at all
FETCH_HINT = {"vtest.avi": "storesight media fetch --vtest"}


@dataclass(frozen=True)
class Check:
    """One expectation: a value counted by eye, the tolerance allowed, and how it was counted."""

    what: str
    by_eye: float
    tolerance: float
    why: str
    known_gap: str | None = None  # why the pipeline misses this today: the check is a strict xfail until fixed
    measured_today: float | None = None  # the wrong value it gives today, pinned so a change is noticed


@dataclass(frozen=True)
class Scenario:
    """A clip, the camera settings and rules to run on it, and what should come out."""

    name: str
    media: str
    camera: dict[str, Any]
    rules: list[dict[str, Any]]
    checks: tuple[Check, ...]


def load_scenario(path: Path) -> Scenario:
    """Read and check one scenario file; a mistake names the file and the key."""
    doc = yaml.safe_load(path.read_text())
    where = path.name
    if not isinstance(doc, dict) or set(doc) != SCENARIO_KEYS:
        raise ValueError(f"{where}: keys must be exactly {sorted(SCENARIO_KEYS)}")
    checks = []
    for i, item in enumerate(doc["expect"]):
        if not isinstance(item, dict) or not CHECK_KEYS <= set(item) <= CHECK_KEYS | GAP_KEYS:
            raise ValueError(f"{where}: expect[{i}]: keys must be {sorted(CHECK_KEYS)}, optionally {sorted(GAP_KEYS)}")
        if item["tolerance"] < 0 or not str(item["why"]).strip():
            raise ValueError(f"{where}: expect[{i}]: tolerance must be >= 0 and `why` must say how it was counted")
        gap_keys = GAP_KEYS & set(item)
        if gap_keys and gap_keys != GAP_KEYS:
            missing = ", ".join(sorted(GAP_KEYS - gap_keys))
            raise ValueError(f"{where}: expect[{i}]: a known gap needs {missing} too (known_gap with measured_today)")
        if gap_keys and abs(float(item["measured_today"]) - float(item["by_eye"])) <= float(item["tolerance"]):
            raise ValueError(f"{where}: expect[{i}].measured_today: within tolerance of by_eye, so not a gap")
        checks.append(
            Check(
                str(item["what"]), float(item["by_eye"]), float(item["tolerance"]), str(item["why"]),
                str(item["known_gap"]) if gap_keys else None, float(item["measured_today"]) if gap_keys else None,
            )
        )  # fmt: skip
    return Scenario(path.stem, str(doc["media"]), dict(doc["camera"]), list(doc["rules"]), tuple(checks))


def all_scenarios() -> list[Scenario]:
    """Every scenario file, by name."""
    return [load_scenario(p) for p in sorted(SCENARIOS.glob("*.yaml"))]


def find_media(name: str) -> Path | None:
    """The clip in $STORESIGHT_MEDIA_DIR, storesight-data/media (where `media fetch` puts it) or ../shared/media."""
    env = os.environ.get("STORESIGHT_MEDIA_DIR")
    places = ([Path(env)] if env else []) + [
        REPO_ROOT / "storesight-data" / "media",
        REPO_ROOT.parent / "shared" / "media",
    ]
    return next((d / name for d in places if (d / name).is_file()), None)


def config_doc(scenario: Scenario, source: Path, storage: Path, triton_url: str | None) -> dict[str, Any]:
    """The full config for one scenario run: one camera cam1 reading the clip, stamped from START."""
    camera = {"id": "cam1", "source": str(source), "start_time": START} | scenario.camera
    doc: dict[str, Any] = {"storage": {"path": str(storage)}, "cameras": [camera], "rules": scenario.rules}
    if triton_url:
        doc["triton"] = {"url": triton_url}
    return doc


@dataclass(frozen=True)
class Outcome:
    """What one `run --once` left behind: the insights document and the stored incidents."""

    insights: dict[str, Any]
    incidents: list[dict[str, Any]]

    def measure(self, what: str) -> float:
        """The measured value of an expectation's `what` (0 when the rule produced nothing at all)."""
        head, _, rest = what.partition(".")
        if head == "incidents":
            return float(sum(1 for i in self.incidents if i["rule_id"] == rest))
        node: Any = self.insights
        for key in what.split("."):
            if not isinstance(node, dict) or key not in node:
                return 0.0 if head == "lines" else float("nan")  # a line nobody crossed has no row
            node = node[key]
        return float(node)


def run_scenario(scenario: Scenario, tmp: Path, triton_url: str) -> Outcome:
    """`run --once` on the scenario's clip, then read the outputs back through the CLI."""
    clip = find_media(scenario.media)
    hint = FETCH_HINT.get(scenario.media, "storesight media fetch")
    require(None if clip else f"{scenario.media} not found (run `{hint}` or set STORESIGHT_MEDIA_DIR)")
    assert clip is not None
    cfg = write_config(tmp / "store.yaml", config_doc(scenario, clip, tmp / "data", triton_url))
    res = run_cli("run", "-c", str(cfg), "--once", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    insights = run_cli("insights", "-c", str(cfg), "--from", WINDOW[0], "--to", WINDOW[1], "--json")
    assert insights.returncode == 0, insights.stderr[-3000:]
    listed = run_cli("incidents", "-c", str(cfg), "--json")
    assert listed.returncode == 0, listed.stderr[-3000:]
    return Outcome(json.loads(insights.stdout), json.loads(listed.stdout))


def _cases() -> Iterator[Any]:
    for scenario in all_scenarios():
        for check in scenario.checks:
            # a known gap stays an expectation: strict, so the day the pipeline gets it right the run says so; only
            # the by-eye assertion may fail (a failed run or a moved wrong value fail with pytest.fail instead)
            gap = []
            if check.known_gap:
                gap = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=check.known_gap)]
            yield pytest.param(scenario, check, id=f"{scenario.name}:{check.what}", marks=gap)


@pytest.fixture(scope="module")
def outcome_of(triton: Any, tmp_path_factory: pytest.TempPathFactory) -> Callable[[Scenario], Outcome]:
    """Runs each scenario once (on first use) and hands out its outcome."""
    done: dict[str, Outcome | AssertionError] = {}

    def get(scenario: Scenario) -> Outcome:
        if scenario.name not in done:
            try:
                done[scenario.name] = run_scenario(scenario, tmp_path_factory.mktemp(scenario.name), triton.grpc_url)
            except AssertionError as exc:  # a run that failed fails each of its checks, without running again
                done[scenario.name] = exc
        got = done[scenario.name]
        if isinstance(got, AssertionError):  # not an AssertionError: a known gap's xfail must not swallow it
            pytest.fail(f"{scenario.name}: the run failed: {got}", pytrace=False)
        return got

    return get


@pytest.mark.triton
@pytest.mark.slow
@pytest.mark.parametrize(("scenario", "check"), list(_cases()))
def test_scenario(scenario: Scenario, check: Check, outcome_of: Callable[[Scenario], Outcome]) -> None:
    measured = outcome_of(scenario).measure(check.what)
    print(f"{scenario.name}: {check.what}: measured {measured:g}, by eye {check.by_eye:g} +- {check.tolerance:g}")
    judge(scenario, check, measured)


def judge(scenario: Scenario, check: Check, measured: float) -> None:
    """AssertionError when the measured value is off the by-eye count (a known gap's xfail expects exactly that);
    pytest.fail when a known gap's wrong value is no longer the pinned one."""
    gap_moved = (
        check.measured_today is not None
        and measured != check.measured_today
        and not abs(measured - check.by_eye) <= check.tolerance
    )
    if gap_moved:  # still wrong, but not as pinned: the known gap's explanation may no longer hold
        pytest.fail(
            f"{scenario.name}: {check.what}: measured {measured:g}, pinned wrong value {check.measured_today:g}, "
            f"by eye {check.by_eye:g}: the known gap changed; look again and update known_gap and measured_today"
        )
    assert abs(measured - check.by_eye) <= check.tolerance, (
        f"{scenario.name}: {check.what}: measured {measured:g}, by eye {check.by_eye:g} "
        f"(tolerance {check.tolerance:g}): {check.why}"
    )


@pytest.mark.parametrize("scenario", all_scenarios(), ids=lambda s: s.name)
def test_scenario_file_is_a_valid_config(scenario: Scenario, tmp_path: Path) -> None:
    # without Triton: the zones and rules of every scenario pass the real config validation, and every
    # expectation names a rule of the scenario, so a typo fails here rather than as a puzzling count of 0
    parse_config(config_doc(scenario, tmp_path / "clip.avi", tmp_path / "data", None))
    rule_ids = {r["id"] for r in scenario.rules}
    assert scenario.checks, f"{scenario.name}: no expectations"
    for check in scenario.checks:
        section, _, rest = check.what.partition(".")
        assert section in {"incidents", "lines", "occupancy", "queues"}, check.what
        assert rest.split(".")[0] in rule_ids, f"{scenario.name}: {check.what} names no rule of the scenario"


def test_a_known_gap_fails_when_it_closes_or_moves(tmp_path: Path) -> None:
    [scenario] = [s for s in all_scenarios() if s.name == "vtest"]
    [gap] = [c for c in scenario.checks if c.what == "incidents.keep-off-lawn"]
    assert gap.known_gap and gap.measured_today == 3 and gap.by_eye == 2
    with pytest.raises(AssertionError, match="measured 3, by eye 2"):
        judge(scenario, gap, 3.0)  # today's wrong value: the xfail (raises=AssertionError) holds
    judge(scenario, gap, 2.0)  # fixed: passes, and the strict xfail turns that into a failure
    with pytest.raises(pytest.fail.Exception, match="pinned wrong value 3") as moved:
        judge(scenario, gap, 4.0)  # wrong another way: not an AssertionError, so no xfail hides it
    assert not isinstance(moved.value, AssertionError)
    # the loader: a gap comes with its pinned value, and that value must be a gap
    good = yaml.safe_load((SCENARIOS / "vtest.yaml").read_text())
    i = next(k for k, c in enumerate(good["expect"]) if c["what"] == "incidents.keep-off-lawn")
    for change, message in [
        ({"measured_today": None}, rf"expect\[{i}\]: a known gap needs measured_today too"),
        ({"measured_today": 2}, rf"expect\[{i}\]\.measured_today: within tolerance of by_eye"),
    ]:
        doc = yaml.safe_load((SCENARIOS / "vtest.yaml").read_text())
        doc["expect"][i].update(change)
        doc["expect"][i] = {k: v for k, v in doc["expect"][i].items() if v is not None}
        (tmp_path / "gap.yaml").write_text(yaml.safe_dump(doc))
        with pytest.raises(ValueError, match=message):
            load_scenario(tmp_path / "gap.yaml")


def test_scenario_loader_names_the_bad_key(tmp_path: Path) -> None:
    good = yaml.safe_load((SCENARIOS / "one-by-one.yaml").read_text())
    bad = dict(good, expect=[{"what": "lines.exit.in", "by_eye": 0, "tolerance": 0}])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match=r"bad\.yaml: expect\[0\]: keys must be \['by_eye'"):
        load_scenario(tmp_path / "bad.yaml")
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(dict(good, rule=[])))
    with pytest.raises(ValueError, match=r"typo\.yaml: keys must be exactly"):
        load_scenario(tmp_path / "typo.yaml")
