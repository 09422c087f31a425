#!/usr/bin/env bash
# Create .venv and install the job with its test tools. CPU machines get the CPU build of torch;
# the Dockerfile installs the CUDA build instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# Pinned on purpose: an unpinned `torch` pulls several GB of CUDA wheels onto CPU machines.
.venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
# DeepSpeed (dev extra) installs from source: build no ops now, JIT-compile the few it uses on first run.
export DS_BUILD_OPS=0
.venv/bin/python -m pip install --quiet -e ".[dev]"
# DeepSpeed on CPU (tests/test_deepspeed.py) JIT-compiles its shared-memory op (90-170 s on 2 cores) and, for
# zero3_offload, CPU Adam on first use; build them once here into the torch extensions cache
# (~/.cache/torch_extensions) rather than inside a test.
if ! DS_ACCELERATOR=cpu .venv/bin/python -c "from deepspeed.ops.op_builder.cpu import CPUAdamBuilder, ShareMemCommBuilder
for builder in (ShareMemCommBuilder, CPUAdamBuilder):
    builder().load(verbose=False)" >/dev/null 2>&1; then
  echo "warning: could not pre-build DeepSpeed's CPU ops (needs g++ and ninja); the DeepSpeed tests will try again" >&2
fi
echo "setup done: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
