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
# SQLite's compile-time options (LIBSQLITE3_FLAGS), as every build has them.
COPY .cargo ./.cargo
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
# No curl: the health check is the binary's own `passgate healthcheck`.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin passgate \
 && mkdir -p /app /data \
 && chown passgate:passgate /data \
 && chmod 0700 /data

# /app (the working directory, the pages) belongs to root and is only
# read: everything passgate writes (the SQLite file, the mail outbox) goes
# under /data, the one folder the passgate user owns.
WORKDIR /app
COPY --from=build /src/target/release/passgate /usr/local/bin/passgate
COPY static ./static
COPY config ./config

# Configuration is by environment (PASSGATE__SECTION__KEY); these make the
# image serve on all interfaces with its state on the volume. Set
# PASSGATE__DATABASE__URL=postgres://... to use PostgreSQL instead, and
# PASSGATE__SMTP__HOST (and the rest of [smtp]) to send mail instead of
# writing it to /data/outbox. Secrets may be given as files:
# PASSGATE__TOKENS__KEY_ENCRYPTION_KEY_FILE, PASSGATE__SMTP__PASSWORD_FILE,
# PASSGATE__DATABASE__URL_FILE (see deploy/compose.yaml).
# tests/api/container.rs runs the binary with exactly these settings, as
# an unprivileged user in a read-only working directory.
ENV PASSGATE__SERVER__BIND=0.0.0.0:8080 \
    PASSGATE__SERVER__STATIC_DIR=/app/static \
    PASSGATE__DATABASE__URL=sqlite:/data/passgate.db \
    PASSGATE__SMTP__OUTBOX_DIR=/data/outbox \
    PASSGATE__LOG__FORMAT=json

VOLUME ["/data"]
EXPOSE 8080
USER passgate

# `passgate healthcheck` asks server.bind (0.0.0.0 meaning loopback) for
# /healthz and exits 0 on a 200, non-zero otherwise, within 2 s.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/passgate", "healthcheck"]

# Commands run the same way: `docker compose exec passgate-1 passgate user
# create alice --admin` (see README.md, "Docker").
ENTRYPOINT ["/usr/local/bin/passgate"]
