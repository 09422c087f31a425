#!/usr/bin/env bash
# Install everything, lint, and run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check job tests bench examples
.venv/bin/python -m pytest "$@"
