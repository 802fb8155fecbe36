#!/usr/bin/env bash
# The speed figures of the README in one run (release build):
#   1. `facecompare bench`: per-image stage ms (decode/detect/embed/age) for the
#      two phone photos as they are, re-encoded at 12 MP and at 0.4 MP; with and
#      without the age pass;
#   2. HTTP, the same two photos as they are: concurrency 1 (p50/p95) and
#      concurrency 4 (compares/s, p50/p99), through scripts/bench-http.sh;
#   3. face_recognition (PyPI, dlib) on the same pair, when .venv-fr exists
#      (see scripts/bench-face-recognition.py for its setup).
#
#   scripts/bench-speed.sh                 # SOURCE/TARGET default to ../shared/eval/deepface/img1.jpg, img2.jpg
#
# Knobs: SOURCE, TARGET, ITERATIONS (bench runs per image, 20), REQUESTS (HTTP, 100).
# Run it on a quiet machine: the figures are wall-clock.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SOURCE=${SOURCE:-$ROOT/../shared/eval/deepface/img1.jpg}
TARGET=${TARGET:-$ROOT/../shared/eval/deepface/img2.jpg}
ITERATIONS=${ITERATIONS:-20}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$ROOT/.ort/libonnxruntime.so.1.32.0}
export FACECOMPARE_MODELS_DIR=${FACECOMPARE_MODELS_DIR:-$ROOT/models}

cargo build --release --quiet --bin facecompare --example bench_http
bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/facecompare"

echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for age in with without; do
  flag=()
  [ "$age" = without ] && flag=(--no-age)
  echo "== facecompare bench, age pass: $age"
  "$bin" bench --iterations "$ITERATIONS" "${flag[@]}" "$SOURCE" "$TARGET"
  "$bin" bench --iterations "$ITERATIONS" "${flag[@]}" --megapixels 12,0.4 "$SOURCE" "$TARGET" | tail -n +3
done

for c in 1 4; do
  echo "== HTTP, concurrency $c, the two photos as they are"
  CONCURRENCY=$c MEGAPIXELS=0 SOURCE="$SOURCE" TARGET="$TARGET" REQUESTS=${REQUESTS:-100} \
    scripts/bench-http.sh 2>&1 | grep -v '^\(throwaway\|/\)'
done

if [ -x .venv-fr/bin/python ]; then
  echo "== face_recognition (PyPI), same pair"
  .venv-fr/bin/python scripts/bench-face-recognition.py "$SOURCE" "$TARGET" 3
else
  echo "== face_recognition: skipped (no .venv-fr; see scripts/bench-face-recognition.py)"
fi
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
