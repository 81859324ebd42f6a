#!/usr/bin/env bash
# Sets up everything StoreSight needs on Debian 12 / Python 3.11: system packages (with --test: the real
# components the tests run), a virtual environment in .venv with the project installed, and the model files.
# Safe to run again: each step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/../.."

want_test=0
want_demo=0
[ "${1:-}" = "--test" ] && want_test=1
[ "${1:-}" = "--demo" ] && want_demo=1  # the demo's head office needs PostgreSQL

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_pkgs=(python3-venv)
[ "$want_demo" = 1 ] && apt_pkgs+=(postgresql)
if [ "$want_test" = 1 ]; then
  # GStreamer's RTSP server (a real RTSP camera for tests) and ffmpeg
  apt_pkgs+=(gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp python3-gi gstreamer1.0-plugins-base
             gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
             gstreamer1.0-tools ffmpeg
             mosquitto  # a real MQTT broker; the tests start their own on a free port (the service is not needed)
             chromium  # a real browser for the console page
             strace  # shows that an acknowledged write is synced to disk before the sender hears back
             postgresql  # head office's database; the tests start their own cluster on a free port
             poppler-utils  # pdftotext / pdftoppm: the ROI report's PDF read back in tests
             shellcheck)  # the install and packaging scripts are linted by a test
fi
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  sudo_ apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
extras="embedded"
[ "$want_test" = 1 ] && extras="embedded,dev"
stamp=".venv/.storesight-installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages ($extras)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$extras]"
  touch "$stamp"
fi
if [ "$want_test" = 1 ] && ! .venv/bin/python -m pip show -q ipycam >/dev/null 2>&1; then
  # ipycam, a real ONVIF device for the tests, requires the GUI opencv-python, which would shadow the headless
  # build: install it alone (its other need, numpy, is already here), so it cannot be a `dev` extra
  echo "setup: installing ipycam (ONVIF test device) without its dependencies"
  .venv/bin/python -m pip install -q --no-deps "ipycam==1.3.0"
fi

# Models: $STORESIGHT_MODELS_DIR, else the workplace's shared copy next to the checkout, else the upstream release.
if [ -z "${STORESIGHT_MODELS_DIR:-}" ] && [ -d ../shared/models ]; then
  export STORESIGHT_MODELS_DIR="$(cd ../shared/models && pwd)"
fi
.venv/bin/storesight models fetch

if [ "$want_test" = 1 ]; then
  # vtest.avi for the scenario tests: from $STORESIGHT_MEDIA_DIR when it holds it, else unpacked from Debian's
  # opencv-doc package into storesight-data/media (gitignored). A stale or missing apt package list is the usual
  # reason `apt-get download` fails, so refresh it once and try again.
  if ! .venv/bin/storesight media fetch --vtest --dest storesight-data/media; then
    sudo_ apt-get update -qq
    .venv/bin/storesight media fetch --vtest --dest storesight-data/media
  fi
fi
