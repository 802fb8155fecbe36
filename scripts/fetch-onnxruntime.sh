#!/usr/bin/env bash
# Fetches the pinned ONNX Runtime shared library from the PyPI `onnxruntime`
# wheel (pip is the only download channel we rely on) and extracts
# libonnxruntime.so* into ./.ort (git-ignored). The server finds it there, or
# wherever ORT_DYLIB_PATH points.
#
#   scripts/fetch-onnxruntime.sh [DEST_DIR]
set -euo pipefail

ORT_VERSION=1.32.0
# The wheel's native library does not depend on the Python ABI; pin one wheel.
WHEEL=onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl
WHEEL_SHA256=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
LIB=libonnxruntime.so.${ORT_VERSION}

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/.ort}

if [ -f "$dest/$LIB" ] && [ -f "$dest/.wheel-sha256" ] && [ "$(cat "$dest/.wheel-sha256")" = "$WHEEL_SHA256" ]; then
  echo "ONNX Runtime $ORT_VERSION already in $dest"
  exit 0
fi

if [ "$(uname -m)" != "x86_64" ]; then
  echo "fetch-onnxruntime: only the x86_64 wheel is pinned; set ORT_DYLIB_PATH to your own libonnxruntime.so" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 311 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 \
  "onnxruntime==${ORT_VERSION}" -d "$tmp"
got=$(sha256sum "$tmp/$WHEEL" | cut -d' ' -f1)
if [ "$got" != "$WHEEL_SHA256" ]; then
  echo "fetch-onnxruntime: $WHEEL has sha256 $got, expected $WHEEL_SHA256; refusing it" >&2
  exit 1
fi
mkdir -p "$dest"
python3 - "$tmp/$WHEEL" "$dest" "$LIB" <<'PY'
import sys, zipfile, os
wheel, dest, lib = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in ("onnxruntime/capi/" + lib, "onnxruntime/capi/libonnxruntime_providers_shared.so"):
        with z.open(name) as src, open(os.path.join(dest, os.path.basename(name)), "wb") as out:
            out.write(src.read())
PY
ln -sf "$LIB" "$dest/libonnxruntime.so"
echo "$WHEEL_SHA256" > "$dest/.wheel-sha256"
echo "ONNX Runtime $ORT_VERSION extracted to $dest (ORT_DYLIB_PATH=$dest/$LIB)"
