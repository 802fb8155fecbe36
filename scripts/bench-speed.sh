#!/usr/bin/env bash
# The speed figures of docs/performance.md in one run (release build):
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
# Knobs: SOURCE, TARGET, ITERATIONS (bench runs per image, 20), REQUESTS (HTTP, 100),
# BASELINE (a previous build's `facecompare` binary, in a checkout's target/release:
# every figure is measured for it too, right after this build's, so both come from the
# same machine state; it loads that checkout's models/, or BASELINE_MODELS_DIR).
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

bins=("$bin")
[ -n "${BASELINE:-}" ] && bins+=("$BASELINE")
label() { [ "$1" = "$bin" ] && echo "this build" || echo "baseline $1"; }
# Each binary with its own checkout's models (a model file may have changed since).
models_for() {
  local m
  m="$(cd "$(dirname "$1")/../.." && pwd)/models"
  if [ "$1" != "$bin" ] && [ -d "$m" ]; then echo "${BASELINE_MODELS_DIR:-$m}"; else echo "$FACECOMPARE_MODELS_DIR"; fi
}

echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for age in with without; do
  flag=()
  [ "$age" = without ] && flag=(--no-age)
  for b in "${bins[@]}"; do
    echo "== facecompare bench, age pass: $age ($(label "$b"))"
    FACECOMPARE_MODELS_DIR=$(models_for "$b") "$b" bench --iterations "$ITERATIONS" "${flag[@]}" "$SOURCE" "$TARGET"
    FACECOMPARE_MODELS_DIR=$(models_for "$b") "$b" bench --iterations "$ITERATIONS" "${flag[@]}" --megapixels 12,0.4 "$SOURCE" "$TARGET" | tail -n +3
  done
done

for c in 1 4; do
  for b in "${bins[@]}"; do
    echo "== HTTP, concurrency $c, the two photos as they are ($(label "$b"))"
    FACECOMPARE_BIN="$b" FACECOMPARE_MODELS_DIR=$(models_for "$b") CONCURRENCY=$c MEGAPIXELS=0 SOURCE="$SOURCE" TARGET="$TARGET" REQUESTS=${REQUESTS:-100} \
      scripts/bench-http.sh 2>&1 | grep -v '^\(throwaway\|/\)'
  done
done

# Overload: 64 clients against a queue of 2 images, so most compares are
# refused; how long a refusal (503 overloaded) takes while the workers are busy
# (the body is still received: a refused client gets its answer, not a reset).
for mp in 0.4 0; do
  echo "== HTTP overload: 64 clients, queue capacity 2, MEGAPIXELS=$mp (this build)"
  FACECOMPARE_QUEUE_CAPACITY=2 CONCURRENCY=64 WARMUP=2 REQUESTS=${OVERLOAD_REQUESTS:-640} MEGAPIXELS=$mp \
    SOURCE="$SOURCE" TARGET="$TARGET" scripts/bench-http.sh 2>&1 | grep -v '^\(throwaway\|/\|HTTP 503\)'
done

if [ -x .venv-fr/bin/python ]; then
  echo "== face_recognition (PyPI), same pair"
  .venv-fr/bin/python scripts/bench-face-recognition.py "$SOURCE" "$TARGET" 3
else
  echo "== face_recognition: skipped (no .venv-fr; see scripts/bench-face-recognition.py)"
fi
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
