#!/usr/bin/env bash
# The demo, from nothing: setup, the demo clip, then StoreSight analysing it as a camera with the embedded Triton,
# serving the incidents page at http://127.0.0.1:8080 (STORESIGHT_LISTEN=HOST:PORT to change). Ctrl-C stops it.
# Sign in as admin with the password printed below ($STORESIGHT_ADMIN_PASSWORD, when set, is used instead).
set -euo pipefail
cd "$(dirname "$0")/../.."

packaging/scripts/setup.sh

if [ -z "${STORESIGHT_MEDIA_DIR:-}" ] && [ -d ../shared/media ]; then
  export STORESIGHT_MEDIA_DIR="$(cd ../shared/media && pwd)"
fi
.venv/bin/storesight media fetch --dest storesight-data/media
export STORESIGHT_DEMO_CLIP="$PWD/storesight-data/media/one-by-one-person-detection.mp4"
rm -rf storesight-data/demo  # each demo run starts with an empty incident list (and no console user)
if [ -z "${STORESIGHT_ADMIN_PASSWORD:-}" ]; then
  # the bridge creates its first user, admin, with this password when the database has none
  STORESIGHT_ADMIN_PASSWORD="$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')"
  export STORESIGHT_ADMIN_PASSWORD
fi
echo "demo: console at http://${STORESIGHT_LISTEN:-127.0.0.1:8080}/ - sign in as admin, password: $STORESIGHT_ADMIN_PASSWORD"
exec .venv/bin/storesight run -c packaging/demo/store-demo.yaml --listen "${STORESIGHT_LISTEN:-127.0.0.1:8080}"
