#!/usr/bin/env bash
# The main job on the embedded default, on a fresh Debian 12 machine: installs dependencies, builds,
# makes the tiny random-weight checkpoint (configs/models/tiny.json, real DeepSeek vocabulary), validates it
# with `dsv4 inspect`, and runs a forward pass and a short generation on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install_deps.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target dsv4
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

if "$DSV4" --help 2>/dev/null | grep -q " generate"; then
  echo "== generate (random weights: the text is noise; this shows the whole path runs)"
  "$DSV4" generate --checkpoint "$CKPT" --tokenizer "$TOKENIZER" --prompt "Hello, DeepSeek-V4!" --max-tokens 16 --temperature 0
fi
