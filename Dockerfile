# One Dockerfile for every Python service of the workspace, built from the repository root:
#
#   docker build --target auth           -t order-platform/auth .
#   docker build --target orders         -t order-platform/orders .        (also runs `orders-service events`)
#   docker build --target event-consumer -t order-platform/event-consumer .
#   docker build --target worker         -t order-platform/worker .
#   docker build --target gateway        -t order-platform/gateway .       (nginx + API docs)
#
# BASE_IMAGE must be a Debian bookworm image with Python 3.11 (`python3`); the default is the
# official slim image. `make images` builds with podman from a locally bootstrapped base instead.
ARG BASE_IMAGE=python:3.11-slim-bookworm
# The gateway: the official nginx image (its entrypoint renders /etc/nginx/templates).
ARG NGINX_IMAGE=nginx:1.27.3-bookworm

# ---------------------------------------------------------------------------------------------
# uv, installed with pip (the uv image registry is not reachable everywhere).
FROM ${BASE_IMAGE} AS uv
ARG UV_VERSION=0.13.9
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install "uv==${UV_VERSION}" \
    && ln -s /opt/uv/bin/uv /usr/local/bin/uv

# Only the manifests (root pyproject, lock file, every member's pyproject.toml). This stage
# re-runs on any source change, but its output changes only when a manifest does, so the
# dependency layers below stay cached while code changes. New workspace members need no edit.
FROM uv AS manifests
WORKDIR /src
COPY . /src
RUN mkdir /manifests \
    && find . -name pyproject.toml -not -path './.venv/*' -exec cp --parents {} /manifests \; \
    && cp uv.lock /manifests/

FROM uv AS builder
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
COPY --from=manifests /manifests/ /app/

# ---------------------------------------------------------------------------------------------
# Per service: third-party dependencies in their own cached layer, then the workspace code.
FROM builder AS auth-build
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package auth-service
COPY libs/common libs/common
COPY services/auth services/auth
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package auth-service

FROM builder AS orders-build
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package orders-service
COPY libs/common libs/common
COPY services/orders services/orders
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package orders-service

FROM builder AS event-consumer-build
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package event-consumer
COPY libs/common libs/common
COPY services/event-consumer services/event-consumer
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package event-consumer

FROM builder AS worker-build
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package order-worker
COPY libs/common libs/common
COPY services/worker services/worker
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package order-worker

# ---------------------------------------------------------------------------------------------
# Runtime: the base image, an unprivileged numeric user, the venv and the code. No uv, no
# compilers, no secrets: settings and the signing key come from the environment and mounts.
# APP_OWNER owns the code: root (read-only to the app) by default; Tilt's live update passes
# 10001:10001 so it can sync changed files into the running container.
FROM ${BASE_IMAGE} AS runtime
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin app
WORKDIR /app
USER 10001:10001

FROM runtime AS auth
ARG APP_OWNER=0:0
COPY --from=auth-build --chown=${APP_OWNER} /app /app
EXPOSE 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8001/healthz', timeout=2)"]
CMD ["auth-service", "serve", "--host", "0.0.0.0", "--port", "8001"]

# `orders-service events` (outbox relay + applying order_processed) runs from this image too.
FROM runtime AS orders
ARG APP_OWNER=0:0
COPY --from=orders-build --chown=${APP_OWNER} /app /app
EXPOSE 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8002/healthz', timeout=2)"]
CMD ["orders-service", "serve", "--host", "0.0.0.0", "--port", "8002"]

FROM runtime AS event-consumer
ARG APP_OWNER=0:0
COPY --from=event-consumer-build --chown=${APP_OWNER} /app /app
CMD ["event-consumer"]

FROM runtime AS worker
ARG APP_OWNER=0:0
COPY --from=worker-build --chown=${APP_OWNER} /app /app
CMD ["order-worker"]

# ---------------------------------------------------------------------------------------------
# The gateway: nginx with the same template as `make run`, the API docs pages written by
# `make openapi` (docs/ui, docs/openapi, docs/events) and the Swagger UI / ReDoc assets of the
# `docs` dependency group, so /docs works without a CDN. The image's entrypoint renders the
# template with envsubst into /tmp at start; upstreams come from AUTH_UPSTREAM/ORDERS_UPSTREAM.
FROM builder AS gateway-assets
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --only-group docs \
    && /app/.venv/bin/python -c "import fastapi_offline, pathlib, shutil; shutil.copytree(pathlib.Path(fastapi_offline.__file__).parent / 'static', '/assets')"

FROM ${NGINX_IMAGE} AS gateway
ENV NGINX_ENVSUBST_OUTPUT_DIR=/tmp \
    GATEWAY_PREFIX=/tmp/nginx \
    GATEWAY_PORT=8000 \
    GATEWAY_DOCS_DIR=/usr/share/order-platform/docs \
    GATEWAY_DOCS_ASSETS_DIR=/usr/share/order-platform/docs-assets \
    AUTH_UPSTREAM=auth:8001 \
    ORDERS_UPSTREAM=orders:8002
COPY gateway/nginx.conf.template /etc/nginx/templates/nginx/nginx.conf.template
COPY docs/ui /usr/share/order-platform/docs/ui
COPY docs/openapi /usr/share/order-platform/docs/openapi
COPY docs/events /usr/share/order-platform/docs/events
COPY --from=gateway-assets /assets /usr/share/order-platform/docs-assets
# The nginx user of the official image; it needs to write only /tmp.
USER 101:101
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8000/healthz"]
# nginx's graceful stop (finish the requests in flight); SIGTERM would cut them.
STOPSIGNAL SIGQUIT
CMD ["nginx", "-e", "stderr", "-c", "/tmp/nginx/nginx.conf", "-g", "daemon off;"]
