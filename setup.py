"""Build step: the files StoreSight ships beside its code go into the wheel as package data (pyproject.toml holds
everything else).

A wheel gets, laid out as in the checkout under `plugin/_data/` (plugin/resources.py finds them):
- `triton_models/<flavour>/<model>/config.pbtxt` and `*/model.py`: the model repository configs, never weights;
- `packaging/dev/rtsp_server.py`: the RTSP stand-in `storesight bench` serves its cameras with;
and, in `adapters/sinks/milestone/schema/`, Milestone's `AnalyticsEvent.xsd` with its MIT licence: the schema the
Milestone sink checks each document against. It is not this project's file and is never committed here: the build
copies it from $STORESIGHT_SPECS_DIR, else the workplace's ../shared/specs, and checks its sha256. Its upstream is
github.com/milestonesys/mipsdk-samples-protocol (TriggerAnalyticsEventXML/). An editable install copies nothing: a
checkout reads these files where they are.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
MODEL_FILES = ("*/*/config.pbtxt", "*/*/*/model.py")  # under triton_models/: <flavour>/<model>/...
STAND_IN = Path("packaging") / "dev" / "rtsp_server.py"
XSD = "AnalyticsEvent.xsd"
XSD_SHA256 = "2e13695c4f9222d5ad55912fda50d4909551d468ca6b47b4373e01a3f6da5f6b"


def _specs_dir() -> Path:
    env = os.environ.get("STORESIGHT_SPECS_DIR")
    return Path(env) if env else HERE.parent / "shared" / "specs"


class BuildWithData(build_py):
    """setuptools' build_py, then the shipped data files into the build folder."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        out = Path(self.build_lib)
        data = out / "plugin" / "_data"
        for pattern in MODEL_FILES:
            for src in sorted((HERE / "triton_models").glob(pattern)):
                self._copy(src, data / src.relative_to(HERE))
        self._copy(HERE / STAND_IN, data / STAND_IN)
        specs = _specs_dir() / "milestone"
        xsd = specs / XSD
        if not xsd.is_file():
            raise SystemExit(
                f"build: {xsd} not found. The wheel ships Milestone's {XSD} (MIT): set STORESIGHT_SPECS_DIR to a "
                "folder holding milestone/AnalyticsEvent.xsd and milestone/LICENSE.md (from github.com/milestonesys/"
                "mipsdk-samples-protocol, TriggerAnalyticsEventXML/)"
            )
        got = hashlib.sha256(xsd.read_bytes()).hexdigest()
        if got != XSD_SHA256:
            raise SystemExit(
                f"build: {xsd} has sha256 {got}, expected {XSD_SHA256} (the schema the sink was tested with)"
            )
        schema = out / "adapters" / "sinks" / "milestone" / "schema"
        self._copy(xsd, schema / XSD)
        self._copy(specs / "LICENSE.md", schema / "LICENSE.md")

    def _copy(self, src: Path, dest: Path) -> None:
        if not src.is_file():
            raise SystemExit(f"build: {src} is missing")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)


setup(cmdclass={"build_py": BuildWithData})
