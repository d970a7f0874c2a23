# syntax=docker/dockerfile:1

# One image for every hookline binary (api, worker, janitor, migration, receiver); compose
# picks the binary with `command:`. Multi-arch base images, so it builds natively on arm64
# and x86-64 alike.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS source
WORKDIR /src
COPY . .

# Release binaries. The registry and target/ live in BuildKit cache mounts, so a rebuild after
# a source change recompiles only what changed; the binaries are copied out of the cache mount
# in the same step because its contents never reach the image. The receiver is a demo for the
# compose "tour" profile, so an image without it still serves everything else.
FROM source AS builder
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git/db \
    --mount=type=cache,target=/src/target,sharing=locked \
    set -eux; \
    cargo build --release --locked --bins; \
    mkdir /out; \
    cp target/release/api target/release/worker target/release/janitor \
        target/release/migration /out/; \
    if [ -f target/release/receiver ]; then cp target/release/receiver /out/; fi

# The test suite, for `docker compose run --rm tests`. It compiles when the container runs,
# into volumes compose keeps between runs, so a second run rebuilds only what changed.
FROM source AS test
CMD ["cargo", "test", "--workspace", "--locked"]

FROM debian:bookworm-slim AS runtime
# ca-certificates: the worker verifies webhook targets' TLS against the system roots.
# curl: compose's healthcheck on the api's /health.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 hookline \
    && useradd --system --uid 10001 --gid hookline --no-create-home \
        --shell /usr/sbin/nologin hookline
COPY --from=builder /out/ /usr/local/bin/
USER 10001:10001
EXPOSE 8080 9000
CMD ["api"]
