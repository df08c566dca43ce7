# bobkit images: one target per task family, each with its own hash-pinned lock (docker/locks/).
#
#   bobkit images build classification      # also serves retrieval and OOD classification
#   bobkit images build detection           # detection and OOD detection (compiles mmcv's CUDA ops)
#
# `bobkit images build` passes the base images pinned by digest (docker/locks/base-images.json), the
# lock's hash and bobkit's version as labels, and an optional wheelhouse (WHEELHOUSE_URL) for hosts
# without an index. A plain `docker build --target classification .` works too, with the tags only.
# Stages are ordered so that the classic builder (no BuildKit) never builds detection's for classification.

ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
ARG CUDA_DEVEL_IMAGE=docker.io/nvidia/cuda:12.1.1-cudnn8-devel-ubuntu22.04

# ---------------------------------------------------------------- shared: Python venv and user
FROM ${BASE_IMAGE} AS base
ARG BOBKIT_UID=1000
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/bobkit \
    PATH=/opt/bobkit/bin:${PATH} \
    BOBKIT_DATA=/data \
    BOBKIT_WEIGHTS=/weights
RUN python3 -m venv /opt/bobkit \
    && groupadd --gid "${BOBKIT_UID}" bobkit \
    && useradd --uid "${BOBKIT_UID}" --gid "${BOBKIT_UID}" --create-home --shell /usr/sbin/nologin bobkit \
    && mkdir -p /data /weights /runs \
    && chown bobkit:bobkit /runs
COPY docker/install-locked.sh /usr/local/bin/bobkit-install-locked
COPY docker/entrypoint.sh /usr/local/bin/bobkit-entrypoint
COPY docker/ca/ /tmp/bobkit-ca/

# ---------------------------------------------------------------- bobkit's own source (installed last in each image)
FROM scratch AS bobkit-src
COPY pyproject.toml README.md /src/
COPY bobkit/ /src/bobkit/
COPY manifests/ /src/manifests/

# ---------------------------------------------------------------- classification, retrieval, OOD classification
FROM base AS classification
ARG WHEELHOUSE_URL=""
COPY docker/locks/classification.txt /opt/bobkit/locks/
RUN bobkit-install-locked /opt/bobkit/locks/classification.txt
COPY --from=bobkit-src /src/ /tmp/bobkit-src/
RUN pip install --no-deps --no-index --no-build-isolation /tmp/bobkit-src \
    && rm -rf /tmp/bobkit-src /tmp/bobkit-ca \
    && bobkit --help >/dev/null
ARG BASE_IMAGE
ARG BOBKIT_UID=1000
ARG BOBKIT_VERSION=unknown
ARG LOCK_SHA256=unknown
LABEL io.bobkit.family="classification" \
      io.bobkit.version="${BOBKIT_VERSION}" \
      io.bobkit.lock-sha256="${LOCK_SHA256}" \
      io.bobkit.base-image="${BASE_IMAGE}" \
      io.bobkit.uid="${BOBKIT_UID}" \
      io.bobkit.torch="2.14.1" \
      io.bobkit.cuda="13.0" \
      org.opencontainers.image.title="bobkit classification" \
      org.opencontainers.image.version="${BOBKIT_VERSION}"
USER ${BOBKIT_UID}:${BOBKIT_UID}
WORKDIR /runs
ENTRYPOINT ["/usr/local/bin/bobkit-entrypoint"]
CMD ["--help"]

# ---------------------------------------------------------------- detection: mmcv 2.1.0 compiled with CUDA ops
FROM ${CUDA_DEVEL_IMAGE} AS cuda-devel

FROM base AS mmcv-build
ARG WHEELHOUSE_URL=""
ARG TORCH_CUDA_ARCH_LIST="7.0;7.5;8.0;8.6;8.9;9.0+PTX"
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ make \
    && rm -rf /var/lib/apt/lists/*
COPY --from=cuda-devel /usr/local/cuda-12.1/ /usr/local/cuda-12.1/
ENV CUDA_HOME=/usr/local/cuda-12.1 \
    PATH=/usr/local/cuda-12.1/bin:${PATH} \
    MMCV_WITH_OPS=1 \
    FORCE_CUDA=1 \
    MAX_JOBS=8
COPY docker/locks/detection.txt docker/locks/detection-build.txt docker/locks/mmcv.txt /opt/bobkit/locks/
RUN bobkit-install-locked /opt/bobkit/locks/detection.txt \
    && bobkit-install-locked /opt/bobkit/locks/detection-build.txt
# A wheelhouse may hold an mmcv wheel already built with CUDA ops (e.g. on a cluster); else compile the sdist.
RUN mkdir -p /wheels \
    && if [ -n "${WHEELHOUSE_URL}" ] && pip download --no-deps --no-index --only-binary=:all: \
         --find-links "${WHEELHOUSE_URL}" -d /wheels mmcv==2.1.0; then echo "prebuilt mmcv wheel"; \
       else bobkit-install-locked /opt/bobkit/locks/mmcv.txt --wheel -w /wheels; fi

FROM base AS detection
ARG WHEELHOUSE_URL=""
COPY docker/locks/detection.txt /opt/bobkit/locks/
RUN bobkit-install-locked /opt/bobkit/locks/detection.txt
COPY --from=mmcv-build /wheels/ /tmp/wheels/
RUN pip install --no-deps --no-index /tmp/wheels/mmcv-*.whl && rm -rf /tmp/wheels
COPY --from=bobkit-src /src/ /tmp/bobkit-src/
RUN pip install --no-deps --no-index --no-build-isolation /tmp/bobkit-src \
    && rm -rf /tmp/bobkit-src /tmp/bobkit-ca \
    && bobkit --help >/dev/null
ARG BASE_IMAGE
ARG CUDA_DEVEL_IMAGE
ARG BOBKIT_UID=1000
ARG BOBKIT_VERSION=unknown
ARG LOCK_SHA256=unknown
LABEL io.bobkit.family="detection" \
      io.bobkit.version="${BOBKIT_VERSION}" \
      io.bobkit.lock-sha256="${LOCK_SHA256}" \
      io.bobkit.base-image="${BASE_IMAGE}" \
      io.bobkit.cuda-devel-image="${CUDA_DEVEL_IMAGE}" \
      io.bobkit.uid="${BOBKIT_UID}" \
      io.bobkit.torch="2.1.2" \
      io.bobkit.cuda="12.1" \
      org.opencontainers.image.title="bobkit detection" \
      org.opencontainers.image.version="${BOBKIT_VERSION}"
USER ${BOBKIT_UID}:${BOBKIT_UID}
WORKDIR /runs
ENTRYPOINT ["/usr/local/bin/bobkit-entrypoint"]
CMD ["--help"]
