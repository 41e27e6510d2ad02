# syntax=docker/dockerfile:1.7
#
# One image per component, from one build:
#   docker build --target vote    -t votemesh-vote .
#   docker build --target worker  -t votemesh-worker .
#   docker build --target result  -t votemesh-result .
#   docker build --target gateway -t votemesh-gateway .
#   docker build --target loadgen -t votemesh-loadgen .   (load generator and vote bot)
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 --target vote .
# The build stages run on the build machine's own platform and cross-compile
# for the target one (no emulation). Dependencies are compiled in their own
# layer (cargo-chef), so editing a .rs file does not rebuild them.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
# Cross linkers for both target architectures, whatever the build machine.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
      gcc-x86-64-linux-gnu libc6-dev-amd64-cross \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.78
ENV CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc \
    CC_x86_64_unknown_linux_gnu=x86_64-linux-gnu-gcc
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ARG TARGETARCH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN case "$TARGETARCH" in \
      amd64) echo x86_64-unknown-linux-gnu ;; \
      arm64) echo aarch64-unknown-linux-gnu ;; \
      *) echo "unsupported architecture: $TARGETARCH" >&2; exit 1 ;; \
    esac > /rust-target \
 && rustup target add "$(cat /rust-target)"
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --target "$(cat /rust-target)" --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --target "$(cat /rust-target)" \
      -p votemesh-vote -p votemesh-worker -p votemesh-result -p votemesh-gateway -p votemesh-loadgen \
 && mkdir /out \
 && cp "target/$(cat /rust-target)/release/"votemesh-{vote,worker,result,gateway,loadgen} /out/

# glibc and libgcc, nothing else: no shell, no package manager; runs as
# the unprivileged user 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
USER 65532:65532

FROM runtime AS vote
COPY --from=builder /out/votemesh-vote /usr/local/bin/votemesh-vote
# Every address, IPv6 and IPv4: set here, never left to the binary's default.
ENV VOTE_LISTEN_ADDR=[::]:5000
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/votemesh-vote", "--health-check"]
ENTRYPOINT ["/usr/local/bin/votemesh-vote"]

FROM runtime AS worker
COPY --from=builder /out/votemesh-worker /usr/local/bin/votemesh-worker
# Every address, IPv6 and IPv4: set here, never left to the binary's default.
ENV WORKER_LISTEN_ADDR=[::]:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/votemesh-worker", "--health-check"]
ENTRYPOINT ["/usr/local/bin/votemesh-worker"]

FROM runtime AS result
COPY --from=builder /out/votemesh-result /usr/local/bin/votemesh-result
# Every address, IPv6 and IPv4: set here, never left to the binary's default.
ENV RESULT_LISTEN_ADDR=[::]:5001
EXPOSE 5001
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/votemesh-result", "--health-check"]
ENTRYPOINT ["/usr/local/bin/votemesh-result"]

FROM runtime AS gateway
COPY --from=builder /out/votemesh-gateway /usr/local/bin/votemesh-gateway
# Every address, IPv6 and IPv4: set here, never left to the binary's default.
ENV GATEWAY_LISTEN_ADDR=[::]:3000 \
    GATEWAY_ADMIN_LISTEN_ADDR=[::]:8081
EXPOSE 3000 8081
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/votemesh-gateway", "--health-check"]
ENTRYPOINT ["/usr/local/bin/votemesh-gateway"]

# The load generator: the vote bot in compose (profile "bot"), Tilt and
# k8s/components/vote-bot, or a one-off load run. It serves nothing, so no
# HEALTHCHECK.
FROM runtime AS loadgen
COPY --from=builder /out/votemesh-loadgen /usr/local/bin/votemesh-loadgen
ENTRYPOINT ["/usr/local/bin/votemesh-loadgen"]
