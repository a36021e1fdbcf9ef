# rotagate: multi-stage build, small non-root runtime image.
#   docker build -t rotagate .
#   docker run -p 8080:8080 -v $PWD/config/rotagate.toml:/etc/rotagate/rotagate.toml:ro rotagate

FROM rust:1-bookworm AS build
# pingora builds zlib-ng and zstd from C sources: it needs cmake and a C compiler
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY config ./config
RUN cargo build --release --locked --bin rotagate && strip target/release/rotagate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin rotagate \
    && mkdir -p /etc/rotagate /var/lib/rotagate \
    && chown rotagate:rotagate /var/lib/rotagate
COPY --from=build /src/target/release/rotagate /usr/local/bin/rotagate
COPY config/rotagate.toml /etc/rotagate/rotagate.toml
# vault mode's embedded session store (sessions.redb) lives here: mount a volume so
# sessions survive container restarts and upgrades (one container at a time)
VOLUME /var/lib/rotagate
USER rotagate
EXPOSE 8080 9091
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9091/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/rotagate", "--log-format", "json"]
CMD ["run", "-c", "/etc/rotagate/rotagate.toml"]
