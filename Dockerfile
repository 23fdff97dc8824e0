# syntax=docker/dockerfile:1
# One image per service: docker build --build-arg SERVICE=task-service -t taskmesh/task-service .
# (`just images` prints the commands for all four.)

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
ARG SERVICE
COPY . .
# Dependencies and build outputs live in BuildKit cache mounts, so a source change
# recompiles our crates only, not the dependency graph.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    test -n "${SERVICE}" \
 && cargo build --release --locked --bin "${SERVICE}" \
 && install -D "target/release/${SERVICE}" "/out/${SERVICE}"

FROM debian:bookworm-slim AS runtime
# The binary and CA certificates, nothing else; a fixed non-root user.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates=20230311* \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin taskmesh
ARG SERVICE
COPY --from=build /out/${SERVICE} /usr/local/bin/service
USER 10001:10001
ENV APP_HOST=0.0.0.0
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/service"]
