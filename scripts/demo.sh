#!/usr/bin/env bash
# One command for a newcomer: install, then train the bundled demo (tiny model, no GPU, no Hub) end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/seq2seq-job train --params examples/demo.json "$@"
