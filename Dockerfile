# passgate container image. No Docker engine runs on the development
# machines, so this file is kept correct by reading; see README.md.

# --- build stage -----------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*

# Dependencies first, in their own layer: it is rebuilt only when a
# manifest or Cargo.lock changes, not on every source edit. The workspace's
# verifier crate (crates/passgate-verifier) gets a stub too.
COPY Cargo.toml Cargo.lock ./
COPY crates/passgate-verifier/Cargo.toml ./crates/passgate-verifier/
RUN mkdir src crates/passgate-verifier/src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs crates/passgate-verifier/src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src crates/passgate-verifier/src

# The sources; migrations/ and config/ are compiled into the binary.
COPY crates ./crates
COPY src ./src
COPY migrations ./migrations
COPY assets ./assets
COPY config ./config
RUN touch src/main.rs src/lib.rs crates/passgate-verifier/src/lib.rs \
 && cargo build --release --locked --bin passgate

# --- runtime stage ---------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin passgate \
 && mkdir -p /app /data \
 && chown passgate:passgate /data

WORKDIR /app
COPY --from=build /src/target/release/passgate /usr/local/bin/passgate
COPY static ./static
COPY config ./config

# Configuration is by environment (PASSGATE__SECTION__KEY); these make the
# image serve on all interfaces with its SQLite file on the volume. Set
# PASSGATE__DATABASE__URL=postgres://... to use PostgreSQL instead.
ENV PASSGATE__SERVER__BIND=0.0.0.0:8080 \
    PASSGATE__SERVER__STATIC_DIR=/app/static \
    PASSGATE__DATABASE__URL=sqlite:/data/passgate.db \
    PASSGATE__LOG__FORMAT=json

VOLUME ["/data"]
EXPOSE 8080
USER passgate

HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1

ENTRYPOINT ["/usr/local/bin/passgate"]
