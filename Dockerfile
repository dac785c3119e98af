# syntax=docker/dockerfile:1
# Sluice's image:
#   docker build -t sluice .
#   docker run -p 50051:50051 -v $PWD/config.yaml:/app/config.yaml -e OPENAI_API_KEY sluice
# Config: /app/config.yaml (the embedded mock-only config ships there, so the
# image runs offline; mount yours over it: it is reloaded when it changes, and
# on SIGHUP). Port: 50051, gRPC, on every interface. Runs as uid 10001.
# tests/deploy/test_dockerfile.py runs these build steps outside Docker.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build: the client and the server, with every dependency, into a venv that
# the runtime stage copies whole. pip stays here.
FROM ${PYTHON_IMAGE} AS build
ARG VENV=/opt/sluice
WORKDIR /src
COPY pyproject.toml README.md ./
COPY clients/python clients/python
COPY server server
RUN python -m venv "$VENV" \
    && "$VENV/bin/pip" install --no-cache-dir ./clients/python . \
    && "$VENV/bin/pip" uninstall --yes pip setuptools

# Runtime: Python and the venv; no pip, no compiler, no root.
FROM ${PYTHON_IMAGE}
ARG VENV=/opt/sluice
RUN python -m pip uninstall --yes pip setuptools wheel \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin sluice
COPY --from=build ${VENV} ${VENV}
COPY server/sluice/config/default.yaml /app/config.yaml
ENV PATH="${VENV}/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
USER 10001:10001
EXPOSE 50051
# Sluice drains on SIGTERM: health NOT_SERVING for server.drain_delay, then
# in-flight streams get server.shutdown_grace. Give `docker stop --time` both.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["sluice", "health", "--address", "127.0.0.1:50051"]
ENTRYPOINT ["sluice"]
CMD ["serve", "--host", "0.0.0.0", "--config", "/app/config.yaml"]
