# syntax=docker/dockerfile:1
# etcd-registrar operator image: docker build -t ghcr.io/etcd-registrar/etcd-registrar:0.1.0 .
# Both stages use the same base, so the venv's interpreter path is valid in the runtime stage.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel needs (see .dockerignore): metadata, README (the long description) and
# the package. pip builds the wheel with hatchling (the pyproject's build backend); the venv
# gets the wheel and its runtime dependencies only (no [dev] extra), and the bytecode is
# compiled now because the root filesystem is read-only at run time.
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --no-deps --wheel-dir /dist . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install /dist/*.whl \
 && /opt/venv/bin/pip uninstall --yes pip \
 && python -m compileall -q -j 0 /opt/venv

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="etcd-registrar" \
      org.opencontainers.image.description="Keeps an etcd service registry in step with pod readiness" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=builder /opt/venv /opt/venv
# A name for UID 65532: kopf names the operator after the user (getpass.getuser()), which
# fails with "KeyError: 'getpwuid(): uid not found: 65532'" when /etc/passwd has no entry.
RUN groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nonroot
# Numeric, so Kubernetes can verify runAsNonRoot (the chart runs it as 65532 too).
USER 65532:65532
# Metrics, health probes (see `etcd-registrar run --help`).
EXPOSE 8080 8081
ENTRYPOINT ["etcd-registrar", "run"]
