# ingest-proxy container image.
#
# Reproducible: the base image is pinned by version, every Python package comes from a
# hash-checked lock file (requirements.lock for the runtime, requirements-build.lock for the
# build backend and mypyc) as a prebuilt wheel, with no network index beyond PyPI and
# Debian's. The build stage has a C compiler: mypyc compiles the per-request modules
# (setup.py); the runtime image has none. docs/deploy.md says how to regenerate the locks
# and pin the base by digest.
#
#   docker build -t ingest-proxy .
#   docker run -p 8080:8080 -e INGEST_PROXY_TARGET=https://backend.example ingest-proxy

FROM python:3.11.14-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ONLY_BINARY=:all:

WORKDIR /src

# gcc and libc headers for the mypyc build only (the runtime stage copies the venv alone).
# Debian's versions are not pinned: bookworm's security updates replace them in the archive.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

# Two venvs: /opt/build holds the build backend, /opt/venv only what runs. The runtime venv
# has no pip of its own; the build venv's pip installs into it with --python.
RUN python -m venv /opt/build \
 && python -m venv --without-pip /opt/venv

COPY requirements-build.lock requirements.lock ./
RUN /opt/build/bin/pip install --require-hashes --no-deps -r requirements-build.lock \
 && /opt/build/bin/pip --python /opt/venv/bin/python install --require-hashes --no-deps \
        -r requirements.lock

COPY pyproject.toml setup.py README.md ./
COPY proxy ./proxy
# The project itself: built from source with the locked backend, no build isolation (which
# would fetch an unpinned setuptools), installed without dependencies (all are locked above).
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && /opt/build/bin/pip --python /opt/venv/bin/python install --no-deps --no-index \
        --find-links /wheels ingest-proxy \
 && /opt/venv/bin/python -m compileall -q /opt/venv


FROM python:3.11.14-slim-bookworm AS runtime

# A fixed, high UID/GID so Kubernetes' runAsNonRoot can check it and it never collides with
# a host user. The working directory is where the embedded engine's SQLite file lives by
# default; mount a volume there to keep tasks across restarts.
RUN groupadd --gid 10001 ingest \
 && useradd --uid 10001 --gid ingest --home-dir /var/lib/ingest-proxy \
        --no-create-home --shell /usr/sbin/nologin ingest \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/ingest-proxy

COPY --from=build /opt/venv /opt/venv

# Containers must listen on every interface: the proxy binds loopback by default. The ingress
# port comes from $PORT (Cloud Run sets it) and falls back to 8080; the admin listener
# (/healthz, /readyz, /metrics) stays on 9090. Bytecode is compiled at build time, so nothing
# is written at run time and the root filesystem can be read-only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    INGEST_PROXY_HOST=0.0.0.0 \
    INGEST_PROXY_ADMIN_HOST=0.0.0.0

WORKDIR /var/lib/ingest-proxy
USER 10001:10001
EXPOSE 8080 9090

# Only plain `docker run` uses this; Kubernetes and Cloud Run use their own probes.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('INGEST_PROXY_ADMIN_PORT', '9090') + '/healthz', timeout=2)"]

# SIGTERM starts the drain (see proxy/server.py); exec form so the proxy is PID 1 and gets it.
CMD ["ingest-proxy", "serve"]
