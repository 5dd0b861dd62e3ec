#!/usr/bin/env bash
# The main job on the embedded default, on a fresh Debian 12 machine: installs dependencies, builds,
# makes the tiny random-weight checkpoint (configs/models/tiny.json, real DeepSeek vocabulary), validates it
# with `dsv4 inspect`, runs a forward pass and a short generation, then starts the 4-rank gRPC server
# (configs/deployments/tiny-cpu.yaml) with `dsv4-launch run`, streams a chat reply with `dsv4 client`, and
# shuts the server down cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install_deps.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target dsv4 dsv4-server dsv4-launch
DSV4="$BUILD_DIR/launcher/dsv4"

SHARED=${DSV4_SHARED_DIR:-$(cd .. && pwd)/shared}
TOKENIZER="$SHARED/data/deepseek-v3-tokenizer/tokenizer.json"
CKPT=${CKPT:-$BUILD_DIR/tiny-checkpoint}

echo "== make-checkpoint: configs/models/tiny.json -> $CKPT"
"$DSV4" make-checkpoint --config configs/models/tiny.json --seed 1 --out "$CKPT" --shards 2 --tokenizer "$TOKENIZER"

echo "== inspect"
"$DSV4" inspect --checkpoint "$CKPT"

echo "== forward (8 tokens, reference numerics)"
"$DSV4" forward --checkpoint "$CKPT" --tokens 0,19923,3,223,5464,16,30594,7624 --logits-out "$BUILD_DIR/logits.f32"
echo "logits: $(stat -c %s "$BUILD_DIR/logits.f32") bytes = 8 x 129280 x 4"

echo "== generate (random weights: the text is noise; this shows the whole path runs)"
"$DSV4" generate --checkpoint "$CKPT" --prompt "Hello, DeepSeek-V4!" --max-tokens 16 --temperature 0

# The embedded default deployment: 4 CPU ranks under mpirun (configs/deployments/tiny-cpu.yaml), rank 0 serving
# gRPC. Free ports are chosen by the server and written to a port file, so a busy 50051 does not matter.
echo "== serve: dsv4-launch run configs/deployments/tiny-cpu.yaml (4 ranks)"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
PORT_FILE=$(mktemp -u /tmp/dsv4-ports.XXXXXX)
"$BUILD_DIR/launcher/dsv4-launch" run configs/deployments/tiny-cpu.yaml \
  --server-arg=--checkpoint="$CKPT" --server-arg=--address=127.0.0.1:0 \
  --server-arg=--metrics-address=127.0.0.1:0 --server-arg=--port-file="$PORT_FILE" &
LAUNCH_PID=$!
cleanup() { kill -KILL "$LAUNCH_PID" 2>/dev/null || true; rm -f "$PORT_FILE"; }
trap cleanup EXIT

for _ in $(seq 1 120); do
  [[ -s "$PORT_FILE" ]] && break
  kill -0 "$LAUNCH_PID" 2>/dev/null || { echo "server exited during start-up" >&2; exit 1; }
  sleep 0.5
done
[[ -s "$PORT_FILE" ]] || { echo "server did not start listening within 60 s" >&2; exit 1; }
read -r GRPC METRICS PIDS < <(tr ' ' '\n' <"$PORT_FILE" | cut -d= -f2 | paste -sd' ')
ADDRESS=127.0.0.1:$GRPC
# Health turns SERVING once every rank has loaded its model; GetModelInfo answers only then.
for _ in $(seq 1 120); do
  "$DSV4" client --address "$ADDRESS" --info >/dev/null 2>&1 && break
  sleep 0.5
done
"$DSV4" client --address "$ADDRESS" --info

echo "== client: streamed chat reply"
"$DSV4" client --address "$ADDRESS" --system "You are a helpful assistant." --prompt "What is expert parallelism?" \
  --max-tokens 24 --temperature 0.7 --seed 7
echo "== metrics (excerpt)"
curl -s "127.0.0.1:$METRICS/metrics" | grep -E '^dsv4_(requests_total|generated_tokens_total|running_sequences)' || true

echo "== shutdown: SIGTERM to rank 0 drains the server and every rank exits 0"
kill -TERM "${PIDS%%,*}"
wait "$LAUNCH_PID"
trap - EXIT
rm -f "$PORT_FILE"
echo "== done"
