# syntax=docker/dockerfile:1
# The capstan-manager image for users and the release workflow: a static binary in an empty image,
# running as a numeric non-root user (the chart's runAsNonRoot needs a numeric one).
#   docker build -t capstan-manager .
# `cargo xtask image` builds the same final image without Docker (deploy/image/Containerfile).

FROM docker.io/library/rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-gnu" \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked -p capstan-manager --target "$target" \
 && install -D -m 0755 "target/$target/release/capstan-manager" /out/capstan-manager

# No shell, no libc, no CA bundle: the manager trusts only the cluster CA from its kubeconfig or
# service account, and links everything statically.
FROM scratch
LABEL org.opencontainers.image.source="https://github.com/capstan-dev/capstan" \
      org.opencontainers.image.description="capstan-manager: the Foo, Memcached and RedisHA operators" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/capstan-manager /capstan-manager
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/capstan-manager"]
CMD ["run"]
