# syntax=docker/dockerfile:1.7
#
# Medic server image.
#
#   docker build -t medic-server .
#   docker run --rm -p 8080:8080 medic-server
#
# Stage 1 compiles the workspace with the pinned toolchain and Cargo.lock
# (--locked); dependency compilation is cached in its own layer through
# cargo-chef, so a source-only change rebuilds only the Medic crates.
# Stage 2 is distroless (glibc + libgcc + CA certificates, no shell, no
# package manager) running as uid/gid 1000. Target size: < 50 MB.

ARG RUST_VERSION=1.95.0
ARG CARGO_CHEF_VERSION=0.1.78

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
ARG RUST_VERSION
ARG CARGO_CHEF_VERSION
# Use the toolchain of the image directly; rust-toolchain.toml would make
# rustup download rustfmt/clippy, which a release build does not need.
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION} \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked -p medic-server --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked -p medic-server \
    && install -D -m 0755 target/release/medic-server /out/usr/local/bin/medic-server \
    && install -d -m 0750 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
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

COPY --from=builder /out/usr/local/bin/medic-server /usr/local/bin/medic-server
# Writable working directory for the default SQLite database when the image is
# run without DATABASE_URL (Kubernetes always sets a PostgreSQL URL and mounts
# the root file system read-only).
COPY --from=builder --chown=1000:1000 /out/data /data

USER 1000:1000
WORKDIR /data
ENV PORT=8080 \
    MEDIC_LOG_FORMAT=json \
    DATABASE_URL=sqlite:///data/medic.db
EXPOSE 8080

# No curl in the image: the binary probes its own /health/live endpoint.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/medic-server", "healthcheck"]

ENTRYPOINT ["/usr/local/bin/medic-server"]
CMD ["serve"]
