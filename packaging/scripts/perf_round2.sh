#!/usr/bin/env bash
# The measurements behind the second performance round (issue 15), in one run on one machine: everything the note
# needs, before (the checkout this branch started from, in a temporary git worktree) and after (this checkout).
# Run it on a QUIET machine: it prints the load first and stops when the 1-minute load is 1.0 or more (FORCE=1 runs
# anyway; the figures are then not worth comparing). Nothing here asserts a speed; it prints and keeps the JSON.
#
#   packaging/scripts/perf_round2.sh                 # everything (about 2-3 hours on a 2-core machine)
#   SECTIONS="machine accuracy profile startup" packaging/scripts/perf_round2.sh      # a subset (minutes)
#
# Sections: machine, accuracy, profile, startup, bench16, findmax (demo clip), vtest (find-max on OpenCV's vtest.avi
# converted to H.264 MP4 by the bench), base_findmax (the starting checkout's find-max on both clips, for the ratio
# before). Knobs: BASE_REF (default: merge-base with main), OUT (default: a new folder under /tmp),
# FINDMAX_TIME (seconds per --find-max, default 2400), DURATION (seconds per trial, default 20), REPEATS (3),
# BENCH_ARGS (extra `storesight bench` arguments for this checkout's runs). This checkout's bench starts each camera
# at its own point of the clip and gives the naive baseline the published 416 px model; the starting checkout's
# bench played the clip in lock-step with Triton's model on both sides: BENCH_ARGS="--no-stagger --baseline-model
# served" measures this checkout under those conditions.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=$ROOT/.venv/bin/python
SECTIONS=${SECTIONS:-"machine accuracy profile startup bench16 findmax vtest base_findmax"}
BASE_REF=${BASE_REF:-$(git merge-base HEAD main 2>/dev/null || git rev-list --max-parents=0 HEAD | tail -1)}
OUT=${OUT:-$(mktemp -d /tmp/perf_round2.XXXXXX)}
FINDMAX_TIME=${FINDMAX_TIME:-2400}
DURATION=${DURATION:-20}
REPEATS=${REPEATS:-3}
EVAL=${EVAL:-$ROOT/../shared/eval/pets2009-s3mf1}
mkdir -p "$OUT"
if [ -z "${STORESIGHT_MEDIA_DIR:-}" ] && [ -d ../shared/media ]; then
  export STORESIGHT_MEDIA_DIR="$(cd ../shared/media && pwd)"
fi
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
say() { printf '\n== %s (%s, load %s)\n' "$1" "$(date -u +%H:%M:%S)" "$(cut -d' ' -f1-3 /proc/loadavg)"; }

load=$(cut -d' ' -f1 /proc/loadavg)
echo "perf_round2: output in $OUT; 1-minute load $load; base $BASE_REF; head $(git rev-parse --short HEAD)"
if awk "BEGIN{exit !($load >= 1.0)}" && [ "${FORCE:-0}" != 1 ]; then
  echo "perf_round2: the machine is busy (load $load >= 1.0): figures would not be worth comparing; FORCE=1 to run"
  exit 2
fi

# The starting checkout, for every "before" figure: its own code, this checkout's model files and venv.
BASE=$OUT/base
cleanup() { git -C "$ROOT" worktree remove --force "$BASE" >/dev/null 2>&1 || true; }
trap cleanup EXIT
git worktree add -q --detach "$BASE" "$BASE_REF"
for f in triton_models/cpu/*/1/*.onnx; do ln -sf "$ROOT/$f" "$BASE/$f"; done
mkdir -p "$BASE/storesight-data/media"
[ -f storesight-data/media/vtest.avi ] || .venv/bin/storesight media fetch --vtest --dest storesight-data/media
ln -sf "$ROOT/storesight-data/media/vtest.avi" "$BASE/storesight-data/media/vtest.avi"
base_py() { PYTHONPATH=$BASE "$PY" "$@"; }

if want machine; then
  say "machine"
  grep -m1 "model name" /proc/cpuinfo; grep -m1 "cpu MHz" /proc/cpuinfo; nproc
  grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx512_vnni|avx_vnni|amx_int8|hypervisor)$' | tr '\n' ' '; echo
  env | grep -E '^(OMP|OPENBLAS|MKL|MALLOC)_' || echo "(no thread or malloc variables set)"
  top -bn1 | head -15
fi

if want accuracy; then
  say "accuracy: detector precision/recall (IoU 0.5) and tracking IDF1/MOTA on PETS 2009 S3-MF1"
  echo "-- before ($BASE_REF: 416 px, area letterbox)"; base_py packaging/scripts/evaluate.py --data "$EVAL" --json | tee "$OUT/accuracy-before.json"
  echo "-- after"; "$PY" packaging/scripts/evaluate.py --data "$EVAL" --json | tee "$OUT/accuracy-after.json"
fi

if want profile; then
  say "stage profile, 300 analysed frames, one camera, every frame detected (CPU ms per analysed frame)"
  echo "-- before ($BASE_REF, OpenCV)"; base_py packaging/scripts/profile_stages.py --frames 300 --decoder opencv | tee "$OUT/profile-before.txt"
  echo "-- after, OpenCV decoder (the decoder's share)"; "$PY" packaging/scripts/profile_stages.py --frames 300 --decoder opencv | tee "$OUT/profile-after-opencv.txt"
  echo "-- after (PyAV)"; "$PY" packaging/scripts/profile_stages.py --frames 300 | tee "$OUT/profile-after.txt"
  "$PY" packaging/scripts/profile_stages.py --frames 300 --json > "$OUT/profile-after.json"
fi

if want startup; then
  say "startup: first frames of RTSP cameras started at once"
  "$PY" packaging/scripts/startup_time.py --cameras 50 --json 2>/dev/null | tee "$OUT/startup-pyav-50.json"
  "$PY" packaging/scripts/startup_time.py --cameras 8 --decoder opencv --json 2>/dev/null | tee "$OUT/startup-opencv-8.json"
fi

bench() { .venv/bin/storesight bench "$@"; }
if want bench16; then
  say "16 cameras, demo clip over RTSP, 30 s, StoreSight then the naive baseline"
  bench --cameras 16 --duration 30 --json > "$OUT/bench16.json"; "$PY" -c "
import json,sys; from plugin.cli.bench.report import format_table; print(format_table(json.load(open(sys.argv[1]))))" "$OUT/bench16.json"
  echo "-- before ($BASE_REF)"
  PYTHONPATH=$BASE "$PY" -m plugin.cli bench --cameras 16 --duration 30 --json > "$OUT/bench16-before.json" || true
  "$PY" -c "
import json,sys; r=json.load(open(sys.argv[1])); print('before: p95', r['latency_ms'], 'cpu', r['cpu_percent'], 'rss', r['rss_mb'], 'fps', r['achieved_fps'])" "$OUT/bench16-before.json" || true
fi

findmax() {  # name, extra args
  local name=$1; shift
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
  bench --find-max --duration "$DURATION" --repeats "$REPEATS" --max-time "$FINDMAX_TIME" --json ${BENCH_ARGS:-} "$@" \
    > "$OUT/$name.json"
  "$PY" -c "
import json,sys; from plugin.cli.bench.report import format_table; print(format_table(json.load(open(sys.argv[1]))))" "$OUT/$name.json"
}
if want findmax; then
  say "find-max, demo clip (people one at a time)"
  findmax findmax-demo --cameras 16
fi
if want vtest; then
  say "find-max, OpenCV's vtest.avi (a busy plaza, converted to H.264 MP4 by the bench)"
  findmax findmax-vtest --cameras 8 --clip storesight-data/media/vtest.avi
fi
if want base_findmax; then
  say "before ($BASE_REF): find-max on both clips (single trials, OpenCV, 416 px)"
  (cd "$BASE" && ffmpeg -nostdin -loglevel error -y -i "$ROOT/storesight-data/media/vtest.avi" -c:v libx264 -preset veryfast \
     -crf 18 -bf 0 -g 20 -pix_fmt yuv420p "$OUT/vtest-h264.mp4")
  for clip in default "$OUT/vtest-h264.mp4"; do
    args=(--find-max --cameras 8 --duration "$DURATION" --max-time "$FINDMAX_TIME" --json)
    [ "$clip" = default ] || args+=(--clip "$clip")
    tag=$([ "$clip" = default ] && echo demo || echo vtest)
    PYTHONPATH=$BASE "$PY" -m plugin.cli bench "${args[@]}" > "$OUT/findmax-$tag-before.json" || true
    "$PY" -c "
import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], 'before: StoreSight', r['max_cameras'], 'naive', r['baseline_max_cameras'], 'ratio', r['ratio'])" \
      "$OUT/findmax-$tag-before.json" "$tag" || true
  done
fi
say "done: $OUT"
