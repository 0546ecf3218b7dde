# syntax=docker/dockerfile:1
# promptgate container image: build with BuildKit (docker build / podman build), see docs/operations.md ("Docker").
#   docker build -t promptgate .
#   docker run --rm -p 127.0.0.1:8080:8080 -p 127.0.0.1:9090:9090 --env-file promptgate.env promptgate

# --- builder: release binary ----------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder
# cmake: flate2 → libz-ng-sys (a Pingora dependency) builds zlib-ng with it.
# Versions come with the pinned Debian release of the base image; pinning each package too would
# only block its security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake make g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY conf ./conf
COPY tests ./tests
# Cache mounts keep the crate registry and compiled dependencies across builds, so a change in
# src/ recompiles promptgate only. The binary is copied out of the cache-mounted target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin promptgate \
    && cp target/release/promptgate /promptgate \
    && strip /promptgate

# --- runtime: glibc, libgcc, CA certificates, nothing else (no shell) -----------------------
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /promptgate /usr/local/bin/promptgate
COPY conf/docker.yaml /etc/promptgate/promptgate.yaml
ENV PROMPTGATE_CONFIG=/etc/promptgate/promptgate.yaml \
    RUST_LOG=info
# uid 65532 (distroless "nonroot"): ports above 1024 need no capability.
USER 65532:65532
EXPOSE 8080 9090
# No shell or curl in the image: promptgate asks its own admin /healthz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/promptgate", "health"]
ENTRYPOINT ["/usr/local/bin/promptgate"]
CMD ["run"]
