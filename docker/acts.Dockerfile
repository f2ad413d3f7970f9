# The SelfieLessActs acts service.  Build from the repository root after building the wheelhouse:
#   scripts/docker-prepare                      # no registry: local base image + wheelhouse + all images
#   docker build -f docker/acts.Dockerfile -t acts:latest .    # with a registry (default base below)
# Python packages come only from build/wheelhouse (pip --no-index), so the build needs no network.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- dependencies: a venv built from the wheelhouse; cached until the dependency wheels change ---
FROM ${BASE_IMAGE} AS deps
COPY build/wheelhouse/deps/ /wheels/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --no-cache-dir --disable-pip-version-check --find-links /wheels /wheels/*.whl

# --- runtime ---
FROM ${BASE_IMAGE}
# keepalived (with iproute2) for the floating IP's service, which runs this image
# (python3 -m selfieless.floating_ip): the offline base has it already; a public base gets
# Debian's package (a registry build has the network).
RUN command -v keepalived >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends keepalived \
 && rm -rf /var/lib/apt/lists/*; }
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app
COPY --from=deps /opt/venv /opt/venv
COPY build/wheelhouse/project/ /tmp/project/
RUN /opt/venv/bin/pip install --no-index --no-deps --no-cache-dir --disable-pip-version-check /tmp/project/*.whl \
 && rm -rf /tmp/project
# Port 80 inside the container, as in the course. A non-root process may bind it because Docker
# (>= 20.10) starts containers with net.ipv4.ip_unprivileged_port_start=0.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SELFIELESS_HOST=0.0.0.0 \
    SELFIELESS_PORT=80
USER app
WORKDIR /tmp
EXPOSE 80
# No curl in a minimal base: python checks the health endpoint.
HEALTHCHECK --interval=3s --timeout=2s --start-period=30s --retries=2 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/v1/_health' % os.environ.get('SELFIELESS_PORT', '80'), timeout=2)"]
CMD ["python3", "-m", "selfieless.apps.acts"]
