#!/usr/bin/env bash
# The demo, from nothing: setup, the demo footage, then a small chain: head office (its own throwaway PostgreSQL,
# a few clearly named sample stores with weeks of history) and two store bridges analysing real footage with the
# embedded Triton (the demo clip at http://127.0.0.1:8080, OpenCV's vtest.avi at :8081), each pushing its incidents
# and hourly figures to head office through its outbox. Ctrl-C stops all.
# Sign in everywhere as admin with the password printed below ($STORESIGHT_ADMIN_PASSWORD, when set, is used instead).
# STORESIGHT_LISTEN, STORESIGHT_VTEST_LISTEN, STORESIGHT_HQ_LISTEN change the addresses (head office: loopback only).
set -euo pipefail
cd "$(dirname "$0")/../.."

packaging/scripts/setup.sh --demo

if [ -z "${STORESIGHT_MEDIA_DIR:-}" ] && [ -d ../shared/media ]; then
  STORESIGHT_MEDIA_DIR="$(cd ../shared/media && pwd)"
  export STORESIGHT_MEDIA_DIR
fi
.venv/bin/storesight media fetch --dest storesight-data/media
if ! .venv/bin/storesight media fetch --vtest --dest storesight-data/media; then
  # a stale apt package list is the usual reason `apt-get download` fails: refresh it once and try again
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi
  .venv/bin/storesight media fetch --vtest --dest storesight-data/media
fi
export STORESIGHT_DEMO_CLIP="$PWD/storesight-data/media/one-by-one-person-detection.mp4"
export STORESIGHT_VTEST_CLIP="$PWD/storesight-data/media/vtest.avi"
rm -rf storesight-data/demo storesight-data/demo-vtest storesight-data/demo-hq  # each run starts afresh
if [ -z "${STORESIGHT_ADMIN_PASSWORD:-}" ]; then
  # the bridges and head office create their first user, admin, with this password when their database has none
  STORESIGHT_ADMIN_PASSWORD="$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')"
  export STORESIGHT_ADMIN_PASSWORD
fi

pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_all EXIT INT TERM

hq_listen="${STORESIGHT_HQ_LISTEN:-127.0.0.1:8090}"
.venv/bin/storesight hq demo --listen "$hq_listen" --data storesight-data/demo-hq \
  --store "demo-store:Demo store:Europe/London" --store "vtest-store:Plaza store:Europe/London" &
pids+=($!)
echo "demo: starting head office (PostgreSQL, sample stores)..."
for _ in $(seq 1 600); do  # the sample history takes a few seconds to load
  [ -f storesight-data/demo-hq/ready ] && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "demo: head office did not start" >&2; exit 1; }
  sleep 0.2
done
[ -f storesight-data/demo-hq/ready ] || { echo "demo: head office not ready after 2 minutes" >&2; exit 1; }

# each store's config with the head-office sink appended (packaging/demo/hq-sink.yaml)
cat packaging/demo/store-demo.yaml packaging/demo/hq-sink.yaml > storesight-data/demo-hq/store-demo.yaml
cat packaging/demo/store-vtest.yaml packaging/demo/hq-sink.yaml > storesight-data/demo-hq/store-vtest.yaml
export STORESIGHT_HQ_URL="http://$hq_listen"
STORESIGHT_HQ_STORE=demo-store STORESIGHT_HQ_TOKEN="$(cat storesight-data/demo-hq/demo-store.token)" \
  .venv/bin/storesight run -c storesight-data/demo-hq/store-demo.yaml --listen "${STORESIGHT_LISTEN:-127.0.0.1:8080}" &
pids+=($!)
STORESIGHT_HQ_STORE=vtest-store STORESIGHT_HQ_TOKEN="$(cat storesight-data/demo-hq/vtest-store.token)" \
  .venv/bin/storesight run -c storesight-data/demo-hq/store-vtest.yaml \
  --listen "${STORESIGHT_VTEST_LISTEN:-127.0.0.1:8081}" &
pids+=($!)

echo "demo: head office at $(cat storesight-data/demo-hq/ready)"
echo "demo: store consoles at http://${STORESIGHT_LISTEN:-127.0.0.1:8080}/ and http://${STORESIGHT_VTEST_LISTEN:-127.0.0.1:8081}/"
echo "demo: sign in everywhere as admin, password: $STORESIGHT_ADMIN_PASSWORD"
wait -n "${pids[@]}"  # one of them ended (or Ctrl-C): stop the others
