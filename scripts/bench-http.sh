#!/usr/bin/env bash
# HTTP load bench: p50/p95 latency and requests/s of POST /v1/face/compare
# with two ~2.6 MP JPEGs at concurrency 4 (examples/bench_http.rs).
#
#   scripts/bench-http.sh                     # builds (release), starts a throwaway server, benches, stops it
#   BASE_URL=http://host:8080 API_KEY=fck_... scripts/bench-http.sh   # bench a running server instead
#
# Knobs: PROFILE=release|debug (default release), CONCURRENCY (4), REQUESTS (100),
# WARMUP (8), MEGAPIXELS (2.6), FACECOMPARE_WORKERS / FACECOMPARE_INTRA_THREADS for the
# throwaway server, FACECOMPARE_BIN (another server binary, e.g. a previous build, to compare). Needs the fetched fixtures (scripts/fetch-fixtures.sh) and, for the
# throwaway server, models/ and ONNX Runtime (scripts/fetch-onnxruntime.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PROFILE=${PROFILE:-release}
profile_flag=()
[ "$PROFILE" = release ] && profile_flag=(--release)

[ -f tests/fixtures/fetched/obama.jpg ] || scripts/fetch-fixtures.sh >&2

cargo build "${profile_flag[@]}" --quiet --bin facecompare --example bench_http
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
bin=${FACECOMPARE_BIN:-$target_dir/$PROFILE/facecompare}
bench="$target_dir/$PROFILE/examples/bench_http"

server_pid=""
workdir=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [ -n "$workdir" ]; then rm -rf "$workdir"; fi
}
trap cleanup EXIT

if [ -z "${BASE_URL:-}" ]; then
  workdir=$(mktemp -d)
  export FACECOMPARE_DATABASE_URL="sqlite://$workdir/bench.db?mode=rwc"
  export FACECOMPARE_MODELS_DIR=${FACECOMPARE_MODELS_DIR:-$ROOT/models}
  export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$ROOT/.ort/libonnxruntime.so.1.32.0}
  export FACECOMPARE_LISTEN=127.0.0.1:0
  export RUST_LOG=${RUST_LOG:-warn}
  "$bin" migrate >/dev/null
  n=$(( ${REQUESTS:-100} + ${WARMUP:-8} + 10 ))
  "$bin" org create bench --tokens "$n" --rate-limit 100000/min --json >/dev/null
  API_KEY=$("$bin" key create --org bench --json | sed -n 's/.*"key": *"\([^"]*\)".*/\1/p')
  export API_KEY
  "$bin" serve >"$workdir/stdout" 2>"$workdir/stderr" &
  server_pid=$!
  for _ in $(seq 1 300); do
    BASE_URL=$(sed -n 's/^listening on //p' "$workdir/stdout")
    [ -n "$BASE_URL" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$workdir/stderr" >&2; exit 1; }
    sleep 0.2
  done
  [ -n "$BASE_URL" ] || { echo "server did not start" >&2; cat "$workdir/stderr" >&2; exit 1; }
  echo "throwaway server ($PROFILE build) at $BASE_URL, workers=${FACECOMPARE_WORKERS:-$(nproc)}, $(nproc) cores" >&2
fi
: "${API_KEY:?API_KEY is needed with BASE_URL}"
export BASE_URL API_KEY
export CONCURRENCY=${CONCURRENCY:-4}
"$bench"
