#!/usr/bin/env bash
# The Rekognition-compatible endpoint (`POST /`) from boto3 and the AWS CLI,
# both installed from PyPI into a venv (.venv-aws, git-ignored). Not needed by
# the tests (tests/rekognition.rs uses the AWS SDK for Rust).
#
# With FACECOMPARE_URL, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set, it calls
# that server. Otherwise it starts target/debug/facecompare (or $FACECOMPARE_BIN)
# on a free port with a throw-away SQLite database, creates an organisation and
# an AWS key with the CLI, and stops the server at the end.
#
# Usage: scripts/aws-sdk-example.sh [SOURCE.jpg TARGET.jpg OTHER.jpg]
# (default: the fetched fixtures obama.jpg, obama2.jpg, biden.jpg)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FIX="$ROOT/tests/fixtures/fetched"
SRC="${1:-$FIX/obama.jpg}" TGT="${2:-$FIX/obama2.jpg}" OTHER="${3:-$FIX/biden.jpg}"
VENV="$ROOT/.venv-aws"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/aws" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check boto3 awscli
fi
echo "boto3 $("$VENV/bin/python" -c 'import boto3; print(boto3.__version__)'), $("$VENV/bin/aws" --version 2>&1)"

WORK="$(mktemp -d)"
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "${FACECOMPARE_URL:-}" ]; then
  BIN="${FACECOMPARE_BIN:-$ROOT/target/debug/facecompare}"
  export FACECOMPARE_DATABASE_URL="sqlite://$WORK/fc.db?mode=rwc"
  export FACECOMPARE_AWS_SIGNING_KEY_FILE="$WORK/aws-signing.key"
  export FACECOMPARE_MODELS_DIR="${FACECOMPARE_MODELS_DIR:-$ROOT/models}"
  export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$ROOT/.ort/libonnxruntime.so.1.32.0}"
  FACECOMPARE_LISTEN=127.0.0.1:0 RUST_LOG=warn "$BIN" serve >"$WORK/out" 2>"$WORK/log" &
  SERVER_PID=$!
  for _ in $(seq 1 600); do
    grep -q '^listening on ' "$WORK/out" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/log"; exit 1; }
    sleep 0.1
  done
  FACECOMPARE_URL="$(sed -n 's/^listening on //p' "$WORK/out")"
  "$BIN" org create aws-demo --tokens 10 >/dev/null
  KEY="$("$BIN" key create --org aws-demo --aws --json)"
  export AWS_ACCESS_KEY_ID="$(echo "$KEY" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["accessKeyId"])')"
  export AWS_SECRET_ACCESS_KEY="$(echo "$KEY" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["secretAccessKey"])')"
fi
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" AWS_EC2_METADATA_DISABLED=true
echo "server $FACECOMPARE_URL, access key $AWS_ACCESS_KEY_ID"

echo "--- boto3: same person, different people, no face in the source"
"$VENV/bin/python" - "$FACECOMPARE_URL" "$SRC" "$TGT" "$OTHER" <<'PYEOF'
import sys, boto3
from botocore.config import Config
url, src, tgt, other = sys.argv[1:]
rk = boto3.client("rekognition", endpoint_url=url, config=Config(retries={"max_attempts": 1}))
read = lambda p: open(p, "rb").read()
for name, a, b in [("same person", src, tgt), ("different people", src, other)]:
    r = rk.compare_faces(SourceImage={"Bytes": read(a)}, TargetImage={"Bytes": read(b)}, SimilarityThreshold=80)
    print(f"{name}: FaceMatches={[round(m['Similarity'], 2) for m in r['FaceMatches']]} "
          f"UnmatchedFaces={len(r['UnmatchedFaces'])} SourceImageFace.Confidence={r['SourceImageFace']['Confidence']:.1f}")
try:
    import struct, zlib
    # A 64x64 grey PNG: no face.
    raw = b"".join(b"\0" + b"\x80" * 64 for _ in range(64))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 0, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    rk.compare_faces(SourceImage={"Bytes": png}, TargetImage={"Bytes": read(tgt)})
    print("no face: unexpected success")
except rk.exceptions.InvalidParameterException as e:
    print("no face in source:", e.response["Error"]["Code"], "-", e.response["Error"]["Message"])
PYEOF

echo "--- AWS CLI: compare-faces"
"$VENV/bin/aws" rekognition compare-faces --endpoint-url "$FACECOMPARE_URL" \
  --source-image-bytes "fileb://$SRC" --target-image-bytes "fileb://$TGT" \
  --output json
echo "--- AWS CLI: a wrong secret"
AWS_SECRET_ACCESS_KEY=wrong-secret "$VENV/bin/aws" rekognition compare-faces --endpoint-url "$FACECOMPARE_URL" \
  --source-image-bytes "fileb://$SRC" --target-image-bytes "fileb://$TGT" 2>&1 | tail -2 || true
