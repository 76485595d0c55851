# `floe serve` (ingest, query and the indexer in one process) as an image,
# for docker-compose.yml. The Lambda artifacts are built by infra/build.sh.
FROM rust:1.94-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p floe

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/floe /usr/local/bin/floe
# Listening on every interface needs FLOE_ADMIN_KEY (or, for a private
# network only, FLOE_ALLOW_UNAUTHENTICATED=true): see docs/security.md.
ENV FLOE_LISTEN=0.0.0.0:7700 FLOE_DATA_DIR=/var/lib/floe
EXPOSE 7700
ENTRYPOINT ["floe"]
CMD ["serve"]
