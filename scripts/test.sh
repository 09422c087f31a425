#!/usr/bin/env bash
# Install everything, lint, and run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check job tests bench examples scripts
.venv/bin/ruff format --check job tests bench examples scripts
bash scripts/lint.sh
.venv/bin/python -m pytest "$@"
