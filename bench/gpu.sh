#!/usr/bin/env bash
# GPU figures for the speed section (README): a flan-t5-base-shaped model (d_model 768, 12+12 layers, 32k
# vocabulary, random init) trained in bf16 with our defaults and with the plain run_summarization.py setup;
# prints tokens/s, MFU, padding, eval generation time and peak GPU memory (bench/gpu_bench.py). About 4-6
# minutes on one H200; the GPU run is capped at 8 minutes (GPU_BENCH_TIMEOUT).
#
#   bash bench/gpu.sh wheels DIR   # on a machine with PyPI: the wheels the GPU image lacks, into DIR (~25 MB)
#   bash bench/gpu.sh run [DIR]    # on the GPU machine: install DIR's wheels (default $GPU_WHEELS) into a
#                                  # private folder, check the GPU, run the benchmark; JSON also in $OUT if set
#
# Any folder of wheels works for `run` (e.g. the one scripts/gpu_wheels.sh makes): each is installed with
# --no-deps over the image's packages. The GPU image (Python 3.12, torch 2.11, transformers 5.17, accelerate,
# peft, pyarrow, sentencepiece, sacrebleu...) lacks datasets, pydantic-settings and rouge-score; transformers is
# carried at the pinned version (constraints/image.txt) since the job is built and tested against it.
set -euo pipefail
cd "$(dirname "$0")/.."

# name==version from constraints/image.txt (one home for versions), for the wheels the GPU image lacks.
# GPU_WHEELS_EXTRA="pyarrow fsspec" adds more pinned names (e.g. if the image's pyarrow is older than datasets needs).
read -r -a EXTRA <<<"${GPU_WHEELS_EXTRA:-}"
WHEELS=(transformers datasets dill multiprocess regex pydantic pydantic-core pydantic-settings annotated-types
  typing-inspection python-dotenv nltk rouge-score "${EXTRA[@]}")

pinned() {
  local name
  for name in "${WHEELS[@]}"; do
    grep -i "^${name}==" constraints/image.txt || { echo "gpu.sh: $name is not pinned in constraints/image.txt" >&2; exit 2; }
  done
}

download() {
  local dir=$1 python=${PYTHON:-python3}
  mkdir -p "$dir"
  local specs
  mapfile -t specs < <(pinned)
  local binary=() source=()
  for spec in "${specs[@]}"; do
    case "${spec%%==*}" in
      rouge-score) source+=("$spec") ;;  # published as an sdist only: built into a pure-Python wheel here
      *) binary+=("$spec") ;;
    esac
  done
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dir" "${binary[@]}"
  "$python" -m pip wheel --quiet --no-deps -w "$dir" "${source[@]}"
  du -sh "$dir"
}

run() {
  local dir=${GPU_WHEELS:-} site=/tmp/gpu-bench-site
  if [[ $# -gt 0 && $1 != --* ]]; then dir=$1; shift; fi
  command -v nvidia-smi >/dev/null || { echo "gpu.sh: no nvidia-smi: this needs a CUDA GPU" >&2; exit 1; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu.sh: torch sees no CUDA GPU")'
  if [[ -n "$dir" ]]; then
    [[ -d "$dir" ]] || { echo "gpu.sh: no wheel folder $dir" >&2; exit 2; }
    python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
      "$dir"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  local out=()
  [[ -n "${OUT:-}" ]] && out=(--out "$OUT/gpu_bench.json")
  PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 timeout "${GPU_BENCH_TIMEOUT:-480}" \
    python3 bench/gpu_bench.py "${out[@]}" "$@"
}

case "${1:-}" in
  wheels) [[ $# -ge 2 ]] || { echo "usage: $0 wheels DIR" >&2; exit 2; }; download "$2" ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 wheels DIR | run [DIR] [gpu_bench.py options]" >&2; exit 2 ;;
esac
