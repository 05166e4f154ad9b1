# Medic server image.
#
#   docker build -t medic-server .
#   docker run --rm -p 8080:8080 medic-server
#
# The image is `FROM scratch`: one static (musl) binary, a CA bundle, /etc/passwd and /etc/group
# for the unprivileged user (uid/gid 1000), its data directory and an empty /tmp. No shell, no
# package manager, no libc to patch. Size: 19.8 MB (docs/deploy.md).
#
# Stage "builder" compiles the server with the pinned toolchain and Cargo.lock (--locked) for
# the musl target of the build machine's architecture; dependency compilation is cached in its
# own layer through cargo-chef, so a source-only change rebuilds only the Medic crates.
# cargo-auditable records the dependency versions in the binary, which is what lets an image
# scanner see the crates of a scratch image. packaging/image/rootfs.sh lays out the image's files.
#
# Stage "runtime" is the image. It takes everything from "builder" under /out, so it can also
# be built from a binary compiled outside Docker: .ci/check-image runs packaging/image/rootfs.sh on its
# own build and builds this very stage (from `FROM scratch AS runtime` to the end of this file)
# behind a stand-in "builder" stage that copies those files in. Keep the runtime stage last and
# its first line as it is.

ARG RUST_VERSION=1.95.0
ARG CARGO_CHEF_VERSION=0.1.78
ARG CARGO_AUDITABLE_VERSION=0.7.7

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
ARG RUST_VERSION
ARG CARGO_CHEF_VERSION
ARG CARGO_AUDITABLE_VERSION
# Use the toolchain of the image directly; rust-toolchain.toml would make
# rustup download rustfmt/clippy, which a release build does not need.
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION} \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
# musl-gcc compiles the C parts (SQLite, ring, mimalloc) for the static target. The version
# follows the Debian release of the pinned base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add "$(uname -m)-unknown-linux-musl" \
    && cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}" \
    && cargo install cargo-auditable --locked --version "${CARGO_AUDITABLE_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked -p medic-server \
      --target "$(uname -m)-unknown-linux-musl" --recipe-path recipe.json
COPY . .
RUN target="$(uname -m)-unknown-linux-musl" \
    && cargo auditable build --release --locked -p medic-server --bin medic-server --target "$target" \
    && sh packaging/image/rootfs.sh /out "target/$target/release/medic-server" /etc/ssl/certs/ca-certificates.crt

FROM scratch AS runtime
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="medic-server" \
      org.opencontainers.image.description="Medic heartbeat monitoring server: heartbeats, alerts, notifications and remediation" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/medic-dev/medic" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Medic" \
      maintainer="Medic maintainers"

# Root-owned: the binary, CA bundle, passwd/group and /tmp (a tmpfs mount point). The Redis
# client loads its TLS roots from the CA bundle (rustls-native-certs); the HTTP client and the
# PostgreSQL driver use the Mozilla roots compiled into the binary (webpki-roots).
COPY --from=builder /out/rootfs/ /
# Writable working directory for the default SQLite database when the image is
# run without DATABASE_URL (Kubernetes always sets a PostgreSQL URL and mounts
# the root file system read-only).
COPY --from=builder --chown=1000:1000 /out/data /data

USER 1000:1000
WORKDIR /data
# MIMALLOC_ARENA_EAGER_COMMIT=0: the static binary's allocator (mimalloc) commits its arenas as
# they are used instead of up front, which keeps RSS at the glibc build's (docs/benchmarks.md).
ENV PORT=8080 \
    MEDIC_LOG_FORMAT=json \
    DATABASE_URL=sqlite:///data/medic.db \
    MIMALLOC_ARENA_EAGER_COMMIT=0
EXPOSE 8080

# No curl in the image: the binary probes its own /health/live endpoint.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/medic-server", "healthcheck"]

ENTRYPOINT ["/usr/local/bin/medic-server"]
CMD ["serve"]
