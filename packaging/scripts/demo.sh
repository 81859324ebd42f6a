#!/usr/bin/env bash
# The demo, from nothing: setup, the demo clip, then StoreSight analysing it as a camera with the embedded Triton,
# serving the incidents page at http://127.0.0.1:8080 (STORESIGHT_LISTEN=HOST:PORT to change). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/../.."

packaging/scripts/setup.sh

if [ -z "${STORESIGHT_MEDIA_DIR:-}" ] && [ -d ../shared/media ]; then
  export STORESIGHT_MEDIA_DIR="$(cd ../shared/media && pwd)"
fi
.venv/bin/storesight media fetch --dest storesight-data/media
export STORESIGHT_DEMO_CLIP="$PWD/storesight-data/media/one-by-one-person-detection.mp4"
rm -rf storesight-data/demo  # each demo run starts with an empty incident list
exec .venv/bin/storesight run -c packaging/demo/store-demo.yaml --listen "${STORESIGHT_LISTEN:-127.0.0.1:8080}"
