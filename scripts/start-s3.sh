#!/usr/bin/env bash
# Starts a local S3 server (s3s-fs, a real S3 API over a folder) for trying
# S3 inputs by hand, and prints the environment facecompare needs:
#
#   eval "$(scripts/start-s3.sh)"        # starts it, exports FACECOMPARE_S3_* and AWS_*
#   facecompare serve
#   kill "$S3S_FS_PID"                   # stop it (its data folder stays in $S3S_FS_ROOT)
#
# Objects can be put with any S3 client, or copied as plain files:
#   mkdir -p "$S3S_FS_ROOT/$FACECOMPARE_S3_BUCKET/orgs/default" && cp selfie.jpg "$_/"
#
# Settings (environment): S3_PORT (default 9014), S3_BUCKET (default facecompare),
# S3_ROOT (default a new temporary folder), S3S_FS_BIN (default s3s-fs on PATH,
# then the copy .ci/run installs under ${FACECOMPARE_CI_TOOLS:-~/.cache/facecompare-ci}).
# Install the server with
#   cargo install s3s-fs --version 0.14.1 --features binary --locked
# The integration tests (tests/s3_inputs.rs) start their own instance.
set -euo pipefail

port=${S3_PORT:-9014}
bucket=${S3_BUCKET:-facecompare}
root=${S3_ROOT:-$(mktemp -d -t facecompare-s3.XXXXXX)}
access_key=${AWS_ACCESS_KEY_ID:-facecompare}
secret_key=${AWS_SECRET_ACCESS_KEY:-facecompare-secret}

bin=${S3S_FS_BIN:-$(command -v s3s-fs || true)}
ci_bin=${FACECOMPARE_CI_TOOLS:-$HOME/.cache/facecompare-ci}/s3s-fs-0.14.1/bin/s3s-fs
if [ -z "$bin" ] && [ -x "$ci_bin" ]; then bin=$ci_bin; fi
if [ -z "$bin" ]; then
  echo "start-s3: s3s-fs not found; install it: cargo install s3s-fs --version 0.14.1 --features binary --locked" >&2
  exit 1
fi

# A bucket in s3s-fs is a folder under the root.
mkdir -p "$root/$bucket"
log="$root.log"
"$bin" --host 127.0.0.1 --port "$port" --access-key "$access_key" --secret-key "$secret_key" "$root" >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 50); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "start-s3: s3s-fs exited; its log ($log):" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
echo "start-s3: s3s-fs (pid $pid) on http://127.0.0.1:$port, data in $root, log in $log" >&2

cat <<EOF
export S3S_FS_PID=$pid
export S3S_FS_ROOT=$root
export FACECOMPARE_S3_BUCKET=$bucket
export FACECOMPARE_S3_ENDPOINT=http://127.0.0.1:$port
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=$access_key
export AWS_SECRET_ACCESS_KEY=$secret_key
EOF
