#!/usr/bin/env bash
# Cameras per GPU, measured: on a machine with an NVIDIA GPU, start NVIDIA's Triton with the gpu flavour
# (triton_models/gpu: TensorRT FP16, dynamic batching) on GPU 0, prove it with `storesight models verify`, run
# `storesight bench --find-max` against it and print how many cameras one GPU takes at the target rate.
#
#   packaging/scripts/gpu_bench.sh [--analysis-fps 5] [--max-cameras 256] [--max-time 1800] [--source rtsp|file]
#
# Needs nvidia-smi and curl, and either docker with the NVIDIA Container Toolkit (TRITON_IMAGE, default NVIDIA's
# 24.10 image: Triton 2.51, as embedded) or TRITONSERVER=/path/to/tritonserver (an install whose onnxruntime backend
# has TensorRT). StoreSight from STORESIGHT (default: this checkout's .venv/bin/storesight, else `storesight`), the
# demo clip where `storesight media fetch` puts it (or STORESIGHT_MEDIA_DIR). The bench's own host decodes every
# stream: the script records the GPU's busiest second, and says when the GPU was not the limit.
# Not run yet: no GPU where it was written (docs/triton.md).
set -euo pipefail
cd "$(dirname "$0")/../.."

fps=5 max_cameras=256 max_time=1800 source=rtsp
while [ $# -gt 0 ]; do
  case "$1" in
    --analysis-fps) fps="$2"; shift 2 ;;
    --max-cameras) max_cameras="$2"; shift 2 ;;
    --max-time) max_time="$2"; shift 2 ;;
    --source) source="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_bench: unknown argument $1" >&2; exit 2 ;;
  esac
done

storesight="${STORESIGHT:-}"
[ -n "$storesight" ] || { [ -x .venv/bin/storesight ] && storesight=.venv/bin/storesight; } || storesight=storesight
command -v nvidia-smi >/dev/null || { echo "gpu_bench: nvidia-smi not found: this needs an NVIDIA GPU" >&2; exit 1; }
command -v curl >/dev/null || { echo "gpu_bench: curl not found" >&2; exit 1; }
gpu="$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader -i 0)"
echo "gpu_bench: GPU 0: $gpu"

work="$(mktemp -d "${TMPDIR:-/tmp}/storesight-gpu-bench.XXXXXX")"
http_port=18000 grpc_port=18001
container="" server_pid="" smi_pid=""
cleanup() {
  if [ -n "$smi_pid" ]; then kill "$smi_pid" 2>/dev/null || true; fi
  if [ -n "$container" ]; then docker stop "$container" >/dev/null 2>&1 || true; fi
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  echo "gpu_bench: logs and the report are in $work" >&2
}
trap cleanup EXIT

"$storesight" models fetch --flavour gpu --repository "$work/models"
mkdir -p "$work/trt-cache"
if [ -n "${TRITONSERVER:-}" ]; then
  # a local server: the gpu config caches TensorRT engines in /var/cache/storesight-trt, which must be writable
  CUDA_VISIBLE_DEVICES=0 "$TRITONSERVER" --model-repository="$work/models" --strict-readiness=true \
    --http-address=127.0.0.1 --http-port=$http_port --grpc-address=127.0.0.1 --grpc-port=$grpc_port \
    --allow-metrics=false >"$work/tritonserver.log" 2>&1 &
  server_pid=$!
else
  command -v docker >/dev/null || { echo "gpu_bench: neither docker nor TRITONSERVER=/path/to/tritonserver" >&2; exit 1; }
  container="storesight-gpu-bench-$$"
  docker run -d --rm --name "$container" --gpus device=0 --shm-size=1g \
    -p 127.0.0.1:$http_port:8000 -p 127.0.0.1:$grpc_port:8001 \
    -v "$work/models:/models:ro" -v "$work/trt-cache:/var/cache/storesight-trt" \
    "${TRITON_IMAGE:-nvcr.io/nvidia/tritonserver:24.10-py3}" \
    tritonserver --model-repository=/models --strict-readiness=true >/dev/null
fi

echo "gpu_bench: waiting for Triton (the first start builds the TensorRT engine: minutes)"
for _ in $(seq 1 360); do
  curl -fsS "http://127.0.0.1:$http_port/v2/health/ready" >/dev/null 2>&1 && break
  sleep 5
done
curl -fsS "http://127.0.0.1:$http_port/v2/health/ready" >/dev/null || {
  echo "gpu_bench: Triton did not become ready in 30 min" >&2
  [ -n "$container" ] && docker logs --tail 40 "$container" >&2
  [ -n "$server_pid" ] && tail -40 "$work/tritonserver.log" >&2
  exit 1
}

"$storesight" models verify --url "grpc://127.0.0.1:$grpc_port"

nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -i 0 -l 1 >"$work/gpu-utilisation.csv" &
smi_pid=$!
"$storesight" bench --triton-url "grpc://127.0.0.1:$grpc_port" --find-max --no-baseline --source "$source" \
  --analysis-fps "$fps" --cameras 8 --max-cameras "$max_cameras" --max-time "$max_time" --json >"$work/bench.json"

python3 - "$work/bench.json" "$work/gpu-utilisation.csv" "$gpu" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
busy = [int(v) for v in open(sys.argv[2]).read().split() if v.strip().isdigit()]
peak = max(busy, default=0)
bound = " (a lower bound: the search stopped at --max-time)" if report["search"]["bounded"] else ""
print(f"cameras per GPU: {report['max_cameras']} at {report['target_fps']:g} analysed fps each{bound}")
print(f"  GPU {sys.argv[3]}; busiest second {peak}% utilised; p95 capture->result {report['latency_ms']['p95']} ms")
print(f"  bench host: {report['machine']['cpus']} CPUs {report['machine']['cpu_model']}, "
      f"storesight CPU {report['cpu_percent']['storesight']}%")
if peak < 90:
    print("  the GPU was not the limit: the bench host's decoding was; more bridges (hosts) would put more on it")
PY
