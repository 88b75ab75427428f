# chime-egress: the egress proxy (mitmdump with the Chime headers addon built in), as a container.
#
#   docker build -t chime-egress .
#   docker run -p 8080:8080 -v "$PWD/config:/config:ro" -v chime-ca:/home/mitmproxy/.mitmproxy chime-egress
#
# See docs/deploy.md. The base image is pinned by tag; pin it by digest too in production
# (docker buildx imagetools inspect python:3.12.8-slim-bookworm) and bump both when upgrading.
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# --- build: a virtualenv with the project and exactly the tested dependencies -----------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/chime-egress
COPY deploy/constraints.txt /tmp/src/deploy/constraints.txt
COPY pyproject.toml README.md /tmp/src/
COPY src/ /tmp/src/src/
# The project brings its own PyYAML (the official mitmproxy image lacks it); the constraints pin
# mitmproxy 12.2.3 and every other runtime dependency. Not editable: /tmp/src is not kept.
RUN /opt/chime-egress/bin/pip install --constraint /tmp/src/deploy/constraints.txt /tmp/src \
    && /opt/chime-egress/bin/mitmdump --version \
    && /opt/chime-egress/bin/chime-egress --version

# --- runtime -----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="chime-egress" \
      org.opencontainers.image.description="Egress proxy adding Amazon Chime AppKey/TenantID allowlist headers" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed, unprivileged uid: the CA volume and any bind mounts are owned by it.
ARG UID=10001
RUN groupadd --system --gid ${UID} mitmproxy \
    && useradd --system --uid ${UID} --gid ${UID} --home-dir /home/mitmproxy --create-home \
       --shell /usr/sbin/nologin mitmproxy \
    && install -d -o mitmproxy -g mitmproxy -m 0700 /home/mitmproxy/.mitmproxy \
    && install -d -m 0755 /config

COPY --from=build /opt/chime-egress /opt/chime-egress

ENV PATH=/opt/chime-egress/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# The CA (mitmproxy-ca.pem holds its private key) lives here and must survive upgrades: a volume.
# A corporate CA: put its key and certificate, concatenated, as mitmproxy-ca.pem in this volume
# before the first start (docs/deploy.md, "Using your corporate CA").
VOLUME ["/home/mitmproxy/.mitmproxy"]

# /config is mounted read-only as a folder (not single files): editors' atomic saves replace the
# file, and the proxy sees the new one and reloads. It must hold allowlist.yaml and the ranges
# file it names. Nothing is shipped there on purpose: the example AppKeys would refuse every
# real app.
WORKDIR /config
USER mitmproxy
# 8080 the proxy; 9108 Prometheus metrics (chime_metrics below; publish it only to Prometheus).
EXPOSE 8080 9108

HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["chime-egress", "health", "--quiet", "--proxy", "127.0.0.1:8080", "--timeout", "5"]

# Logs go to stdout (mitmdump's default). docker-compose.yml runs this same command.
# `chime-egress run` is mitmdump with the addon registered directly: no watched -s script that a
# reload or a missing file could unload, and start-up errors end it before it listens.
CMD ["chime-egress", "run", \
     "--listen-port", "8080", \
     "--set", "confdir=/home/mitmproxy/.mitmproxy", \
     "--set", "chime_allowlist=/config/allowlist.yaml", \
     "--set", "chime_metrics=0.0.0.0:9108"]
