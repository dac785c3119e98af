# syntax=docker/dockerfile:1
# Build wheels for the client and server, then install them into a slim,
# non-root runtime image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY clients/python clients/python
COPY pyproject.toml README.md ./
COPY server server
RUN pip wheel --no-cache-dir --wheel-dir /wheels ./clients/python .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home sluice
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
EXPOSE 50051
# Listen on all interfaces inside the container; mount a config at
# /etc/sluice/config.yaml and add `--config /etc/sluice/config.yaml`.
ENTRYPOINT ["sluice", "serve", "--host", "0.0.0.0"]
