#!/usr/bin/env bash
# The whole test suite, from nothing: setup (system packages, venv, models), lint, types, then pytest with the
# real components (tritonserver, GStreamer RTSP server) started by fixtures. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."

packaging/scripts/setup.sh --test

if [ -z "${STORESIGHT_MEDIA_DIR:-}" ] && [ -d ../shared/media ]; then
  export STORESIGHT_MEDIA_DIR="$(cd ../shared/media && pwd)"
fi

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy (strict: plugin, adapters)"
.venv/bin/mypy
echo "== import-linter (the layering in docs/architecture.md)"
.venv/bin/lint-imports
echo "== pytest"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
