#!/usr/bin/env bash
# Build the StoreSight wheel into DIR (default: dist/) and print its path: the code and its package data (setup.py:
# the model repository configs, the RTSP stand-in, Milestone's AnalyticsEvent.xsd from $STORESIGHT_SPECS_DIR or
# ../shared/specs). Install it with `pip install 'storesight-VERSION-py3-none-any.whl[embedded]'` (docs/install.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-dist}"
py="${PYTHON:-}"
[ -n "$py" ] || { [ -x .venv/bin/python ] && py=.venv/bin/python; } || py=python3
rm -rf build  # setuptools' build folder: a file left there from an older build would go into the wheel
mkdir -p "$out"
"$py" -m pip wheel -q --no-deps --disable-pip-version-check -w "$out" . >&2
version="$("$py" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
ls "$out"/storesight-"$version"-py3-none-any.whl
