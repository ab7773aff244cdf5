# syntax=docker/dockerfile:1
# One image for all five regsosek services, topic-init and the reference
# programme receiver; the command picks what runs:
#   regsosek-intake | regsosek-verify | regsosek-classify | regsosek-notify | regsosek-console
#   python -m regsosek.topics create ... | python -m regsosek_tools.receiver
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install uv==0.13.8
# Use the image's interpreter (never download one), install real copies rather
# than hard links into the cache, and precompile so a read-only root
# filesystem costs nothing at start-up.
ENV UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_NO_CACHE=1
WORKDIR /app

# Third-party dependencies first, from the lock alone: this layer is reused
# until uv.lock or a pyproject.toml changes.
COPY pyproject.toml uv.lock ./
COPY libs/regsosek/pyproject.toml libs/regsosek/pyproject.toml
COPY services/intake/pyproject.toml services/intake/pyproject.toml
COPY services/verify/pyproject.toml services/verify/pyproject.toml
COPY services/classify/pyproject.toml services/classify/pyproject.toml
COPY services/notify/pyproject.toml services/notify/pyproject.toml
COPY services/console/pyproject.toml services/console/pyproject.toml
COPY tools/pyproject.toml tools/pyproject.toml
RUN uv sync --frozen --no-dev --no-install-workspace

# Then the workspace members. They stay installed from /app (editable), so
# files a service reads next to its package (migrations/, data files) are at
# the same relative paths as in a checkout.
COPY libs libs
COPY services services
COPY tools tools
RUN uv sync --frozen --no-dev \
 && python -m compileall -q libs services tools

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 regsosek \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin regsosek
WORKDIR /app
# Owned by root and only readable by the service user: the running process
# cannot change its own code.
COPY --from=builder /app /app
ENV PATH=/app/.venv/bin:$PATH \
    VIRTUAL_ENV=/app/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    REGSOSEK_HTTP_HOST=0.0.0.0
# Numeric so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8001 8002 8003 8004 8005 8009
CMD ["regsosek-intake"]
