# scorer: one image for every SageMaker hosting option (multi-model endpoints on CPU, GPU
# single-model endpoints, async inference, batch transform). Build: docker build -t scorer .
# docs/container.md explains the choices below and how CI builds this file with podman.
#
# BASE_IMAGE: the CUDA 13.0 image matching torch 2.14.1+cu130 from requirements/constraints.txt.
# Its "base" flavour is enough: torch's wheels bring their own CUDA 13.0 user-space libraries
# (nvidia-cublas, nvidia-cudnn-cu13, ... pinned in the lock file); the NVIDIA container toolkit
# adds the driver. Ubuntu 22.04 rather than 24.04 because the lock is for CPython 3.11 (24.04
# only packages 3.12). Any Debian/Ubuntu that packages python3.11 works too: CI builds this
# file on a plain Debian bookworm base (--build-arg BASE_IMAGE=...).
ARG BASE_IMAGE=nvidia/cuda:13.0.3-base-ubuntu22.04
ARG PYTHON_VERSION=3.11

# ---------------------------------------------------------------------------------------------
# builder: what needs a compiler or build tools: scorer's MMS endpoint plugins (javac, against
# MMS's jar) and scorer's wheel. The runtime stage copies only the results.
FROM ${BASE_IMAGE} AS builder
ARG PYTHON_VERSION
ARG DEBIAN_FRONTEND=noninteractive
# Package versions are the base distribution's (the same names exist on Debian and Ubuntu).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates \
        openjdk-17-jdk-headless \
        "python${PYTHON_VERSION}" \
        "python${PYTHON_VERSION}-venv" \
    && rm -rf /var/lib/apt/lists/*

# Optional pip settings for fast/offline builds, unset by default (PyPI, as in CodeBuild).
# CI passes its local package indexes here and bind-mounts them at the same paths.
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY requirements/constraints.txt requirements/
COPY scripts/build-plugins scripts/
COPY container/mms-plugins/src container/mms-plugins/src
COPY container/mms-plugins/resources container/mms-plugins/resources
# MMS's jar from the locked multi-model-server wheel; then the plugins, built by the same
# script the native set-up uses.
RUN "python${PYTHON_VERSION}" -m venv /opt/build \
    && grep -i '^multi-model-server==' requirements/constraints.txt > /tmp/mms.txt \
    && /opt/build/bin/pip install --no-cache-dir --no-deps -r /tmp/mms.txt \
    && scripts/build-plugins /opt/build/bin/python \
    && test -f container/mms-plugins/build/scorer-mms-plugins.jar

COPY pyproject.toml README.md ./
COPY src src
RUN PIP_CONSTRAINT=/src/requirements/constraints.txt \
    /opt/build/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/dist .

# ---------------------------------------------------------------------------------------------
# runtime: Python, a headless Java 17 runtime for MMS, the locked dependencies in a venv, the
# builder's wheel and jar; no compilers, no caches, no apt lists.
FROM ${BASE_IMAGE} AS runtime
ARG PYTHON_VERSION
ARG DEBIAN_FRONTEND=noninteractive
# As above: the base distribution's versions. pythonX.Y-venv gives the venv its own pip, which
# installs a model archive's code/requirements.txt at load time.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates \
        openjdk-17-jre-headless \
        "python${PYTHON_VERSION}" \
        "python${PYTHON_VERSION}-venv" \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin

LABEL com.amazonaws.sagemaker.capabilities.multi-models=true \
      com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      org.opencontainers.image.title="scorer" \
      org.opencontainers.image.description="SageMaker model server for creative-scoring PyTorch models"

ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_CERT
# SCORER_MMS_CONFIG: the MMS properties file under /tmp (not /etc), so any user can start it.
ENV VIRTUAL_ENV=/opt/scorer/venv \
    PATH=/opt/scorer/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SCORER_MMS_LOG_CONFIG=/opt/scorer/container/log4j2.xml \
    SCORER_MMS_PLUGINS=/opt/scorer/mms-plugins \
    SCORER_MMS_CONFIG=/tmp/scorer/mms.properties

# The dependency layer (torch: ~6 GB) depends only on the lock file and pyproject.toml's
# dependency list: source changes rebuild in seconds. All are wheels or pure-Python sdists,
# so installing them here needs no compiler.
WORKDIR /opt/scorer
COPY pyproject.toml requirements/constraints.txt /tmp/lock/
RUN "python${PYTHON_VERSION}" -m venv "$VIRTUAL_ENV" \
    && python -c "import tomllib; print(*tomllib.load(open('/tmp/lock/pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/lock/requirements.txt \
    && pip install --no-cache-dir -c /tmp/lock/constraints.txt -r /tmp/lock/requirements.txt \
    && rm -rf /tmp/lock

COPY --from=builder /src/container/mms-plugins/build/scorer-mms-plugins.jar /opt/scorer/mms-plugins/
COPY container/log4j2.xml /opt/scorer/container/
COPY entrypoint.py /opt/scorer/
COPY --from=builder /tmp/dist /tmp/dist
RUN pip install --no-cache-dir --no-deps /tmp/dist/scorer-*.whl \
    && pip check \
    && rm -rf /tmp/dist

EXPOSE 8080
# For docker compose and `docker run`; SageMaker uses its own /ping probe and ignores this.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/ping' % os.environ.get('SAGEMAKER_BIND_TO_PORT', '8080'), timeout=4)"]

# `serve` (SageMaker's `docker run IMAGE serve`) starts the model server; any other command
# is executed instead (`docker run -it IMAGE bash`). Runs as root, as SageMaker expects, but
# needs no privileges: `--user 65534` works too.
ENTRYPOINT ["/opt/scorer/venv/bin/python", "/opt/scorer/entrypoint.py"]
CMD ["serve"]
