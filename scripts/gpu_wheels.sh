#!/usr/bin/env bash
# Wheels for scripts/gpu_check.sh: what the job needs that a lent GPU machine lacks, for CPython 3.12 on manylinux
# x86_64, into .gpu-wheels/ (gitignored). That machine cannot download anything; the wheels travel with the
# working tree, which may hold at most 64 MiB per call, so this script checks the total.
#
#   bash scripts/gpu_wheels.sh            # here, with PyPI; needs .venv (bash scripts/setup.sh) for the sdists
#
# The machine has Python 3.12, torch 2.11 (CUDA 13.0), transformers, peft, accelerate, sentencepiece, tensorboard,
# pyarrow, numpy, pandas, huggingface_hub, fsspec …, and none of: datasets (+ dill, multiprocess), rouge-score
# (+ nltk, defusedxml), pydantic-settings (+ pydantic, pydantic-core, annotated-types, typing-inspection,
# python-dotenv, typing-extensions ≥ 4.16 for pydantic-core), bitsandbytes, deepspeed (+ hjson), boto3 (+ botocore,
# s3transfer, jmespath). Versions are the image's (constraints/image.txt).
#
# deepspeed and rouge-score exist only as source distributions: they are built into wheels here (deepspeed with
# DS_BUILD_OPS=0 DS_ACCELERATOR=cuda, as in the Dockerfile: no kernels, pure Python). bitsandbytes' wheel (43 MB)
# carries its library for every CUDA from 11.8 to 13.2 and ROCm; it is repacked with the CUDA 13 and CPU libraries
# only (GPU_WHEELS_BNB_KEEP, a shell pattern), which torch 2.11+cu130 loads, so that everything fits one call.
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=${GPU_WHEELS_DIR:-.gpu-wheels}
BNB_KEEP=${GPU_WHEELS_BNB_KEEP:-libbitsandbytes_cuda13*}
# One device call carries the working tree and these together, at most 64 MiB: leave the tree 4 MiB.
LIMIT=$((60 * 1024 * 1024))
PYTHON=.venv/bin/python
[ -x "$PYTHON" ] || {
  echo "gpu_wheels: $PYTHON is missing; run bash scripts/setup.sh first (deepspeed's build imports torch)" >&2
  exit 1
}

PACKAGES=(datasets dill multiprocess rouge-score nltk defusedxml pydantic-settings pydantic pydantic-core
  annotated-types typing-inspection typing-extensions python-dotenv bitsandbytes deepspeed hjson boto3 botocore
  s3transfer jmespath)
SDIST_ONLY=(deepspeed rouge-score)

pin() { # the image's version of a package
  local version
  version=$(grep -i -E "^$1==" constraints/image.txt | head -1 | cut -d= -f3)
  [ -n "$version" ] || {
    echo "gpu_wheels: $1 is not pinned in constraints/image.txt" >&2
    exit 1
  }
  echo "$version"
}

rm -rf "$DEST"
mkdir -p "$DEST"
downloads=()
for name in "${PACKAGES[@]}"; do
  [[ " ${SDIST_ONLY[*]} " == *" $name "* ]] || downloads+=("$name==$(pin "$name")")
done
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
  manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done
echo "downloading ${#downloads[@]} wheels for CPython 3.12 / manylinux x86_64"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$DEST" "${downloads[@]}"

echo "building wheels of the sdist-only ${SDIST_ONLY[*]}"
DS_BUILD_OPS=0 DS_ACCELERATOR=cuda "$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation --no-cache-dir -w "$DEST" \
  "deepspeed==$(pin deepspeed)"
"$PYTHON" -m pip wheel --quiet --no-deps --no-cache-dir -w "$DEST" "rouge-score==$(pin rouge-score)"
for built in "$DEST"/deepspeed-*.whl "$DEST"/rouge_score-*.whl; do
  [[ "$built" == *-py3-none-any.whl ]] || {
    echo "gpu_wheels: $built is not a pure-Python wheel" >&2
    exit 1
  }
done
# --no-cache-dir above: a deepspeed wheel cached by an earlier CPU build (scripts/setup.sh) names the cpu accelerator.
unzip -p "$DEST"/deepspeed-*.whl deepspeed/git_version_info_installed.py | grep -qx "accelerator_name='cuda'" || {
  echo "gpu_wheels: the deepspeed wheel was not built for the cuda accelerator" >&2
  exit 1
}

echo "repacking bitsandbytes with $BNB_KEEP and the CPU library only"
"$PYTHON" - "$DEST" "$BNB_KEEP" <<'EOF'
import base64, fnmatch, hashlib, sys, zipfile
from pathlib import Path

dest, keep = Path(sys.argv[1]), sys.argv[2]
(wheel,) = dest.glob("bitsandbytes-*.whl")
slim = wheel.with_suffix(".slim")


def dropped(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.startswith("libbitsandbytes_") and not (fnmatch.fnmatch(base, keep) or base.startswith("libbitsandbytes_cpu"))


with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as out:
    names = [n for n in src.namelist() if not dropped(n)]
    record = next(n for n in names if n.endswith(".dist-info/RECORD"))
    kept = [n for n in names if n.rsplit("/", 1)[-1].startswith("libbitsandbytes_")]
    if not any(fnmatch.fnmatch(n.rsplit("/", 1)[-1], keep) for n in kept):
        sys.exit(f"no bitsandbytes library matches {keep!r}")
    rows = []
    for name in names:
        if name == record:
            continue
        data = src.read(name)
        out.writestr(src.getinfo(name), data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append(f"{name},sha256={digest},{len(data)}")
    out.writestr(record, "\n".join([*rows, f"{record},,"]) + "\n")
print(f"  {wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB -> {slim.stat().st_size / 2**20:.1f} MiB, libraries: "
      + ", ".join(n.rsplit("/", 1)[-1] for n in kept))
slim.replace(wheel)
EOF

total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
count=$(find "$DEST" -name '*.whl' | wc -l)
echo "$count wheels, $total bytes ($(awk -v t="$total" 'BEGIN { printf "%.1f", t / 1048576 }') MiB) in $DEST"
if [ "$total" -gt "$LIMIT" ]; then
  echo "gpu_wheels: more than $((LIMIT / 1048576)) MiB: too much for one device call" >&2
  exit 1
fi
if [ "$count" -ne "${#PACKAGES[@]}" ]; then
  echo "gpu_wheels: expected ${#PACKAGES[@]} wheels, found $count" >&2
  exit 1
fi
# What pip there will do (pip install --no-index --no-deps --target), as a dry run for CPython 3.12 here: every
# wheel must be installable on that platform.
"$PYTHON" -m pip install --quiet --dry-run --no-index --no-deps --ignore-installed --target "$DEST/.dry-run" \
  --python-version 3.12 --implementation cp --only-binary=:all: "${platforms[@]}" "$DEST"/*.whl
rm -rf "$DEST/.dry-run"
echo "carry it: run(command='bash scripts/gpu_check.sh', carry=['$DEST'], timeout_s=540)"
