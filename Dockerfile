# syntax=docker/dockerfile:1
#
# cronwork image: one image for every process (`cronwork scheduler|worker|migrate|check`).
# Build:  docker build -t cronwork .
# Run:    docker run --rm cronwork check

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: resolve and install the project into a self-contained venv ----------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# The dependencies first, exactly as locked (`make lock`), every hash checked. A layer of
# their own: editing the code does not reinstall them, only a new lock does.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
# README.md* : pyproject names a readme; the glob keeps the build working while it is absent.
COPY pyproject.toml README.md* ./
COPY services ./services
COPY actors ./actors
COPY migrations ./migrations
# cronwork itself, resolving and downloading nothing: its dependencies are in the venv and
# --no-build-isolation builds it with the locked setuptools. A regular (non-editable)
# install: the final stage copies only /opt/venv, not /src.
RUN pip install --no-deps --no-build-isolation . \
    && cronwork --help >/dev/null

# ---- runtime: slim base + the venv; no compilers, no build tools, no source tree ----------
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    CRONWORK_HTTP_PORT=8080 \
    CRONWORK_SCHEDULES_FILE=/app/schedules.yaml

# Fixed uid/gid 10001: matches the Helm chart's runAsUser/runAsGroup/fsGroup.
RUN groupadd --system --gid 10001 cronwork \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app \
       --no-create-home --shell /usr/sbin/nologin cronwork \
    && mkdir -p /app/.cronwork \
    && chown 10001:10001 /app/.cronwork

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# The default schedules; docker compose bind-mounts ./schedules.yaml over it and the Helm
# chart points CRONWORK_SCHEDULES_FILE at a ConfigMap instead.
COPY --chown=root:root schedules.yaml /app/schedules.yaml

# Numeric, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001

EXPOSE 8080

# The `migrate` and `check` one-shots serve no HTTP; compose disables the check for them.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CRONWORK_HTTP_PORT', '8080'), timeout=4)"]

ENTRYPOINT ["cronwork"]
CMD ["scheduler"]
