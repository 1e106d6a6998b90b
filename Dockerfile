# syntax=docker/dockerfile:1
# cronq's image, in two stages:
#   build    the Rust toolchain on Debian bookworm; rdkafka-sys compiles librdkafka from source
#            against OpenSSL (TLS, SASL/SCRAM) and zlib, so their headers are installed here.
#   runtime  debian:bookworm-slim with only what the binary links (libssl3, zlib) plus CA
#            certificates for TLS to Kafka and tini as PID 1 (it reaps what a handler leaves
#            behind); a non-root user; the example handlers and schedule of examples/.
#
#   docker build -t cronq .
#   docker run --rm cronq --help
#   docker run --rm -p 9464:9464 cronq run --brokers kafka:9092 --http 0.0.0.0:9464
#
# docker/docker-compose.yaml builds and runs it (two dispatchers, two workers, Prometheus, Grafana).

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# benches/ only because Cargo.toml names its bench targets; only the binary is built.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin cronq \
 && install -D -m 0755 target/release/cronq /out/cronq

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3 zlib1g ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 cronq \
 && useradd --system --uid 10001 --gid cronq --home-dir /var/lib/cronq --create-home \
      --shell /usr/sbin/nologin cronq \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/cronq-monitor
# /var/lib/cronq-monitor: `cronq monitor --db`'s directory, owned by the user so that a volume
# mounted there (docker-compose.yaml's monitor-data) starts writable.
COPY --from=build /out/cronq /usr/local/bin/cronq
# The worker runs only handlers owned by root (or itself) that group and other cannot write.
COPY examples/handlers/ /usr/local/share/cronq/handlers/
COPY examples/schedule.json /etc/cronq/schedule.json
RUN chown -R root:root /usr/local/share/cronq /etc/cronq \
 && chmod 0755 /usr/local/share/cronq/handlers /usr/local/share/cronq/handlers/* \
 && chmod 0644 /etc/cronq/schedule.json \
 && cronq --version
ENV CRONQ_SCHEDULE=/etc/cronq/schedule.json \
    CRONQ_HANDLERS=/usr/local/share/cronq/handlers
USER 10001:10001
WORKDIR /var/lib/cronq
# --http: 9464 for `run`, 9465 for `worker` (both listen on 127.0.0.1 unless told 0.0.0.0:PORT).
EXPOSE 9464 9465
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/cronq"]
CMD ["--help"]
