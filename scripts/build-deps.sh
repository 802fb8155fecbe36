#!/usr/bin/env bash
# Build tools `cargo build` needs beyond Rust: cmake, make and nasm, which
# build the vendored libjpeg-turbo (turbojpeg-sys, with SIMD; cmake generates
# Makefiles, and a cmake installed without its recommends comes without make). Installs them with apt-get
# when they are missing (as root, or through sudo); elsewhere prints what to
# install. Does nothing when all are there.
set -euo pipefail
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v make >/dev/null || missing+=(make)
command -v nasm >/dev/null || missing+=(nasm)
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null; then
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  echo "build-deps: installing ${missing[*]} with apt-get" >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "build-deps: install ${missing[*]} (the package manager's packages of the same names; macOS: brew install ${missing[*]})" >&2
  exit 1
fi
