# facecompare image (SPEC §6).
#
#   docker build -t facecompare .                  # the server (runtime stage, the default)
#   docker build --target tests -t facecompare-tests .   # the integration suite (used by docker compose)
#
# Stages: builder (release binary) · ort (ONNX Runtime library from the pinned
# PyPI wheel) · fixtures (test images) · tests (toolchain + sources +
# fixtures) · runtime (debian slim, non-root; last, so the default target).

ARG RUST_IMAGE=rust:1.95-slim-bookworm

# ---------------------------------------------------------------- builder ---
FROM ${RUST_IMAGE} AS builder
# cmake, make and nasm build the vendored libjpeg-turbo (turbojpeg-sys) with
# SIMD. `make` is named: cmake's recommends (which carry it) are not installed.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake make nasm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole context (see .dockerignore): the manifest may name benches, examples
# or files that the sources include.
COPY . .
# Cache mounts keep the registry and target/ between builds; the binary is
# copied out in the same step because the cache is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin facecompare \
    && install -D -m 0755 target/release/facecompare /out/facecompare

# -------------------------------------------------------------------- ort ---
# The same script and sha256 pin as a developer checkout uses (pip is the only
# download channel), so the image and `cargo test` load the same library.
FROM python:3.11-slim-bookworm AS ort
COPY scripts/fetch-onnxruntime.sh /fetch-onnxruntime.sh
RUN bash /fetch-onnxruntime.sh /ort

# --------------------------------------------------------------- fixtures ---
# Face images for the tests stage, from the same pinned, sha256-checked script.
# The third-party models it also fetches (InsightFace's non-commercial w600k_mbf
# for tests/packs.rs) stay out of every image: removed here, and that suite
# skips against a running stack.
FROM python:3.11-slim-bookworm AS fixtures
COPY scripts/fetch-fixtures.sh /fetch-fixtures.sh
RUN FIXTURES_DIR=/fixtures bash /fetch-fixtures.sh \
    && rm -rf /fixtures/.cache /fixtures/*.onnx /fixtures/*.zip

# ------------------------------------------------------------------ tests ---
# The integration suite, run by `docker compose --profile tests run --rm tests`
# against the running stack over HTTP (FACECOMPARE_TEST_BASE_URL). Test
# binaries are compiled at build time so that `run` starts testing at once.
FROM ${RUST_IMAGE} AS tests
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake make nasm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY --from=ort /ort/libonnxruntime.so.1.32.0 /app/lib/libonnxruntime.so.1.32.0
ENV ORT_DYLIB_PATH=/app/lib/libonnxruntime.so.1.32.0 \
    CARGO_TERM_COLOR=never
COPY . .
COPY --from=fixtures /fixtures ./tests/fixtures/fetched
# No cache mount here: `cargo test` at run time needs the registry sources in the image.
RUN cargo test --locked --no-run
CMD ["cargo", "test", "--locked"]

# ---------------------------------------------------------------- runtime ---
# libonnxruntime needs libstdc++ (named explicitly, not left to apt's own dependencies).
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libstdc++6 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 facecompare \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin facecompare \
    && mkdir -p /app/data /app/lib \
    && chown 10001:10001 /app/data
COPY --from=builder /out/facecompare /usr/local/bin/facecompare
COPY --from=ort /ort/libonnxruntime.so.1.32.0 /app/lib/libonnxruntime.so.1.32.0
COPY models /app/models
WORKDIR /app
# /app/data holds the AWS signing key (and SQLite when no database URL is
# given): a volume, so that a recreated container keeps it.
ENV FACECOMPARE_LISTEN=0.0.0.0:8080 \
    FACECOMPARE_MODELS_DIR=/app/models \
    FACECOMPARE_AWS_SIGNING_KEY_FILE=/app/data/aws-signing.key \
    ORT_DYLIB_PATH=/app/lib/libonnxruntime.so.1.32.0 \
    RUST_LOG=info
VOLUME ["/app/data"]
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8080 9090
# No curl in a slim image: bash's /dev/tcp speaks just enough HTTP/1.0 to check
# that /healthz answers 200.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["facecompare"]
CMD ["serve"]
