# syntax=docker/dockerfile:1
# One image for Kubernetes, Amazon SageMaker, Google Vertex AI and a workstation (docs/platforms.md).
#
#   docker build -t seq2seq-job .
#   docker run --rm --gpus all --shm-size 16g -v "$PWD/data:/data:ro" -v "$PWD/out:/out" seq2seq-job \
#       train --data-path /data/train.csv --model google/flan-t5-small --project-name /out/run1
#
# torch comes from PyPI, whose Linux wheels are CUDA 13.0 builds that bring their own CUDA libraries; the host
# needs only the NVIDIA driver (R580 or newer) and the NVIDIA Container Toolkit. For older drivers build the
# CUDA 12.8 variant:
#   docker build --build-arg CUDA_BASE=nvidia/cuda:12.8.1-base-ubuntu24.04 \
#                --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t seq2seq-job:cu128 .
# Every Python package is pinned by constraints/image.txt (scripts/lock_image.py regenerates it).

ARG CUDA_BASE=nvidia/cuda:13.0.2-base-ubuntu24.04

# ---- base: NVIDIA's CUDA base (driver hooks and NVIDIA_* variables), Python 3.12, tini ----------------------
FROM ${CUDA_BASE} AS base
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# DL3008: apt packages are not version-pinned; the base image tag fixes the Ubuntu release and these packages
# come from its archive (pinning exact Debian revisions breaks the build at every security update).
# `apt-get clean`: no downloaded .deb files stay in a layer, also on bases without Docker's docker-clean hook.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv tini \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

# ---- build: a virtualenv with torch and the job; /opt/venv and /app are carried into the final image ------
FROM base AS build
ARG TORCH_INDEX_URL=""
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY constraints/image.txt /tmp/constraints.txt
# torch first: deepspeed's setup.py imports it (hence --no-build-isolation below). Versions: constraints file.
RUN pip install -c /tmp/constraints.txt setuptools torch \
        ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple}
# The job lives in /app next to deepspeed_configs/ (job.training.deepspeed finds the presets there), installed in
# editable mode so the venv points at it; both folders are copied to the final image at the same paths.
COPY pyproject.toml README.md /app/
COPY job /app/job
COPY deepspeed_configs /app/deepspeed_configs
# DS_BUILD_OPS=0: no DeepSpeed kernels are compiled at build time (CUDA ones need nvcc, which the image lacks);
# ZeRO-2/3 with the Trainer's torch optimizers needs none of them, and zero3_offload's CPU Adam is JIT-compiled.
RUN DS_BUILD_OPS=0 DS_ACCELERATOR=cuda \
        pip install --no-build-isolation -c /tmp/constraints.txt -e "/app[bitsandbytes,deepspeed,gcs,loggers]" \
    && pip check

# ---- runtime ---------------------------------------------------------------------------------------------------
FROM base AS runtime
# g++ and python3-dev, in the runtime stage only: DeepSpeed JIT-compiles its host-side CPU Adam
# (deepspeed=zero3_offload) on first use, on the machine that runs it (it builds with -march=native, so it cannot
# be prebuilt here), into TORCH_EXTENSIONS_DIR; it is pure C++ and needs no CUDA toolkit. This layer is the price
# of zero3_offload: 299 MB of the 6.4 GB image (measured on the Debian 12 stand-in, README "Image check"). The
# build stage needs no compiler: deepspeed (DS_BUILD_OPS=0) and rouge-score build from pure-Python sources.
# DL3008: not version-pinned, as in the base stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ python3-dev \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
ARG APP_UID=1000
# Numeric, so Kubernetes' runAsNonRoot can verify it. RUN_AS=0 (root) only where a platform mounts its folders
# writable by root alone (docs/platforms.md).
ARG RUN_AS=${APP_UID}
# Ubuntu's base image has a user 'ubuntu' with uid 1000; the job's user takes that uid, so files it writes to
# bind mounts belong to the first user of most workstations. /cache and /workspace are writable by any uid
# (docker run --user, OpenShift), like /tmp.
RUN if id ubuntu >/dev/null 2>&1; then userdel --remove ubuntu; fi \
    && useradd --uid "${APP_UID}" --user-group --create-home --shell /bin/bash app \
    && mkdir -p /cache /workspace \
    && chmod 1777 /cache /workspace
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
COPY --chmod=0755 entrypoint.sh /app/entrypoint.sh
ENV PATH=/opt/venv/bin:$PATH \
    XDG_CACHE_HOME=/cache \
    HF_HOME=/cache/huggingface \
    TORCH_HOME=/cache/torch \
    TRITON_CACHE_DIR=/cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/cache/torchinductor \
    TORCH_EXTENSIONS_DIR=/cache/torch_extensions \
    MPLCONFIGDIR=/cache/matplotlib \
    WANDB_DIR=/cache/wandb \
    WANDB_CACHE_DIR=/cache/wandb \
    WANDB_CONFIG_DIR=/cache/wandb
WORKDIR /workspace
USER ${RUN_AS}
# tini is PID 1: it forwards SIGTERM to the launcher (Python ignores SIGTERM as PID 1) and reaps zombies left
# by DataLoader workers. SageMaker starts the container as `IMAGE train`, replacing CMD.
ENTRYPOINT ["/usr/bin/tini", "--", "/app/entrypoint.sh"]
CMD ["train"]
