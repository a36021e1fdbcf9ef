# rotagate: multi-stage build, distroless non-root runtime image (no shell, no curl:
# the health check is `rotagate health`).
#   docker build -t rotagate .
#   docker run -p 8080:8080 -p 9091:9091 -v $PWD/config/rotagate.toml:/etc/rotagate/rotagate.toml:ro rotagate
# Settings can come from the environment instead of the file:
#   docker run -e ROTAGATE_UPSTREAM__URL=http://app:3000 … (see README "Environment overrides")

FROM rust:1-bookworm AS build
# pingora builds zlib-ng and zstd from C sources: it needs cmake and a C compiler
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY config ./config
RUN cargo build --release --locked --bin rotagate && strip target/release/rotagate \
    && mkdir -p /out/var/lib/rotagate /out/etc/rotagate

# Debian 12's glibc, libgcc and CA certificates, as the build stage links against; the
# binary's shared libraries are all in it (tests/container.rs checks `ldd` against
# deploy/runtime-image.txt)
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/rotagate /usr/local/bin/rotagate
COPY --from=build --chown=65532:65532 /out/var/lib/rotagate /var/lib/rotagate
COPY config/rotagate.toml /etc/rotagate/rotagate.toml
# vault mode's embedded session store (sessions.redb) lives here: mount a volume so
# sessions survive container restarts and upgrades (one container at a time)
VOLUME /var/lib/rotagate
USER 65532:65532
EXPOSE 8080 9091
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/rotagate", "health", "--admin", "127.0.0.1:9091"]
ENTRYPOINT ["/usr/local/bin/rotagate", "--log-format", "json"]
CMD ["run", "-c", "/etc/rotagate/rotagate.toml"]
