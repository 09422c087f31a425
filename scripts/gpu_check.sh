#!/usr/bin/env bash
# The GPU paths, on one CUDA machine, in at most 8 minutes: bf16 and fp16 training of the tiny built-in T5 and
# BART, QLoRA with int8 and int4 bitsandbytes layers, DeepSpeed ZeRO-2 and ZeRO-3 on one GPU over NCCL, and
# `predict` on CUDA. Each is a real `python -m job.launch` run (what the image's entrypoint starts) on the demo
# data, checked through the job's files only: manifest.json complete with every file's size and SHA-256,
# metrics.json completed on device cuda with GPU memory used and a finite loss, plus each case's own facts.
#
#   bash scripts/gpu_wheels.sh          # first, where PyPI is reachable: the missing packages into .gpu-wheels/
#   bash scripts/gpu_check.sh           # on the GPU machine: installs .gpu-wheels/ offline into a temporary
#                                       # folder (nothing outside it changes), runs every case, prints a table
#
# On a lent device (the `device` tool): run(command="bash scripts/gpu_check.sh", carry=[".gpu-wheels"],
# timeout_s=540); the logs, metrics and summary come back from $OUT. Exits 3 at once when no CUDA GPU is
# visible, 1 when any case fails. T5 is trained in bf16 only: T5 overflows in fp16 (docs/scaling.md), so fp16
# is checked on BART. CI never runs this (it has no GPU); scripts/image_check.sh covers the CPU paths.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

WHEELS=${GPU_CHECK_WHEELS:-.gpu-wheels}
RESULTS_DIR=${GPU_CHECK_DIR:-} # logs, metrics, models (kept); default: a new /tmp/gpu-check.* folder
BUDGET=${GPU_CHECK_BUDGET_S:-450}      # no case starts after this, so that the whole run ends within 8 minutes
CASE_TIMEOUT=${GPU_CHECK_CASE_TIMEOUT:-150}
PYTHON=${PYTHON:-python3}
T0=$SECONDS
RESULTS=()

say() { printf '[gpu-check %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# --------------------------------------------------------------------------------------------- a GPU, or stop
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi finds none); this check needs one CUDA GPU" >&2
  exit 3
fi
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: $PYTHON's torch sees no CUDA GPU ($(nvidia-smi -L | head -1))" >&2
  exit 3
fi
say "$(nvidia-smi -L | head -1)"
[ -n "$RESULTS_DIR" ] || RESULTS_DIR=$(mktemp -d /tmp/gpu-check.XXXXXX)
mkdir -p "$RESULTS_DIR"

# --------------------------------------------------------------------------------- the missing packages
SITE=$(mktemp -d /tmp/gpu-check-site.XXXXXX)
trap 'rm -rf "$SITE"' EXIT
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl
  say "installed $(find "$WHEELS" -name '*.whl' | wc -l) wheels from $WHEELS into $SITE"
else
  say "no wheels in $WHEELS (bash scripts/gpu_wheels.sh makes them): using what $PYTHON has"
fi
export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
# NCCL_DEBUG=INFO: NCCL's own lines in the ZeRO logs show which backend DeepSpeed's collectives ran on.
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 NCCL_DEBUG=INFO
if ! "$PYTHON" -c 'import datasets, rouge_score.rouge_scorer, pydantic_settings, bitsandbytes, deepspeed, boto3' \
  2>"$RESULTS_DIR/imports.log"; then
  tail -5 "$RESULTS_DIR/imports.log" >&2
  echo "gpu_check: a package the job needs is missing or broken (see above); run bash scripts/gpu_wheels.sh" >&2
  exit 1
fi
"$PYTHON" -m job --version >/dev/null || {
  echo "gpu_check: the job's CLI does not start" >&2
  exit 1
}
"$PYTHON" -c 'import importlib.metadata as m
names = ("torch", "transformers", "peft", "accelerate", "datasets", "bitsandbytes", "deepspeed", "pyarrow")
print("versions:", ", ".join(f"{n} {m.version(n)}" for n in names))' | tee "$RESULTS_DIR/versions.txt"

# ------------------------------------------------------------------------------------------------- cases
DEMO=(--data-path examples/demo_data --valid-split validation --batch-size 16 --lr 0.003 --max-seq-length 96
  --max-target-length 16 --early-stopping-patience 0 --save-total-limit 1)

# The seconds a case may take: CASE_TIMEOUT, or what is left of BUDGET (fails when under 30 s are left).
time_left() {
  local left=$((BUDGET - (SECONDS - T0)))
  [ "$left" -ge 30 ] || return 1
  echo $((left < CASE_TIMEOUT ? left : CASE_TIMEOUT))
}

# run_case NAME [KEY=VALUE …] -- JOB_FLAGS …: one training, then its checks: KEY is a training_params.json field,
# or adapter (LoRA adapter files instead of a full model), or zero_stage (metrics.json distributed.deepspeed).
run_case() {
  local name=$1 start=$SECONDS rc=0 status=PASS note
  shift
  local expect=()
  while [ "$1" != -- ]; do
    expect+=("$1")
    shift
  done
  shift
  local out=$RESULTS_DIR/runs/$name log=$RESULTS_DIR/$name.log limit
  if ! limit=$(time_left); then
    RESULTS+=("$name|FAIL|0|not run: the ${BUDGET} s budget was spent")
    return
  fi
  say "$name …"
  timeout -k 20 "$limit" "$PYTHON" -m job.launch train "${DEMO[@]}" --project-name "$out" "$@" >"$log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    status=FAIL
    note="exit $rc: $(grep -E 'ERROR|Error|error' "$log" | tail -1 | cut -c1-200)"
  elif ! note=$("$PYTHON" scripts/check_run_outputs.py "$out" 2>&1 && "$PYTHON" - "$out" "${expect[@]}" 2>&1 <<'EOF'
import json, math, sys
from pathlib import Path

out, expect = Path(sys.argv[1]), dict(arg.split("=", 1) for arg in sys.argv[2:])
m = json.loads((out / "metrics.json").read_text())
p = json.loads((out / "training_params.json").read_text())
problems = []
if m["hardware"].get("device") != "cuda":
    problems.append(f"device {m['hardware'].get('device')!r}, not cuda")
if not m.get("peak_gpu_memory_mb", 0) > 0:
    problems.append("no GPU memory used")
if not math.isfinite(m.get("train_loss", float("nan"))):
    problems.append(f"train_loss {m.get('train_loss')}")
for key, want in expect.items():
    if key == "adapter":
        ok = (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").is_file()
        got = "adapter files" if ok else "no adapter"
    elif key == "zero_stage":
        got = str((m["distributed"].get("deepspeed") or {}).get("zero_stage"))
        ok = got == want
    else:
        got = str(p.get(key))
        ok = got == want
    if not ok:
        problems.append(f"{key}: {got}, expected {want}")
if problems:
    sys.exit("; ".join(problems))
print(f"loss {m['train_loss']:.3f}, rougeL {m.get('eval_rougeL')}, {m.get('train_samples_per_second')} samples/s, "
      f"peak GPU {m['peak_gpu_memory_mb']} MB")
EOF
  ); then
    status=FAIL
  fi
  RESULTS+=("$name|$status|$((SECONDS - start))|$(echo "$note" | tail -1)")
  say "$name: $status ($((SECONDS - start)) s) $(echo "$note" | tail -1)"
}

run_case t5-bf16 mixed_precision=bf16 -- --model builtin:t5-tiny --epochs 3 --mixed-precision bf16
run_case bart-bf16 mixed_precision=bf16 -- --model builtin:bart-tiny --epochs 3 --mixed-precision bf16
run_case bart-fp16 mixed_precision=fp16 -- --model builtin:bart-tiny --epochs 3 --mixed-precision fp16
RESULTS+=("t5-fp16|SKIP|0|T5 overflows in fp16 (docs/scaling.md): T5 is checked in bf16")
run_case qlora-int8 quantization=int8 adapter=1 -- --model builtin:t5-tiny --epochs 2 --peft --quantization int8 \
  --mixed-precision bf16
run_case qlora-int4 quantization=int4 adapter=1 -- --model builtin:t5-tiny --epochs 2 --peft --quantization int4 \
  --mixed-precision bf16
run_case zero2 zero_stage=2 -- --model builtin:t5-tiny --epochs 2 --deepspeed zero2 --mixed-precision bf16
run_case zero3 zero_stage=3 -- --model builtin:t5-tiny --epochs 2 --deepspeed zero3 --mixed-precision bf16
for stage in zero2 zero3; do # one GPU, still a process group: DeepSpeed's communication backend must be NCCL
  if ! grep -qiE 'NCCL INFO|backend nccl' "$RESULTS_DIR/$stage.log"; then
    for i in "${!RESULTS[@]}"; do
      if [[ "${RESULTS[$i]}" == "$stage|PASS|"* ]]; then
        RESULTS[i]="${RESULTS[$i]/|PASS|/|FAIL|}; the log does not show DeepSpeed on NCCL"
      fi
    done
  fi
done

# predict on CUDA with the bf16 T5; nvidia-smi must list the predict process while it runs.
predict_case() {
  local start=$SECONDS rc=0 status=PASS note seen=no model=$RESULTS_DIR/runs/t5-bf16 log=$RESULTS_DIR/predict.log
  local limit
  if [ ! -f "$model/manifest.json" ]; then
    RESULTS+=("predict|FAIL|0|no model from t5-bf16")
    return
  fi
  if ! limit=$(time_left); then
    RESULTS+=("predict|FAIL|0|not run: the ${BUDGET} s budget was spent")
    return
  fi
  say "predict …"
  timeout -k 20 "$limit" "$PYTHON" -m job predict --model-dir "$model" --output "$RESULTS_DIR/predictions.jsonl" \
    --text "Bulletin: near the harbour the blue bear waited on thursday, the sky was clear." \
    --text "Local news: on tuesday the brown deer climbed next to the bridge." >"$log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null | grep -q .; then seen=yes; fi
    sleep 0.2
  done
  wait "$pid" || rc=$?
  if [ "$rc" != 0 ]; then
    status=FAIL
    note="exit $rc: $(tail -1 "$log" | cut -c1-200)"
  elif ! note=$("$PYTHON" -c 'import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
assert len(rows) == 2 and all(r["prediction"].strip() for r in rows), rows
print("; ".join(repr(r["prediction"]) for r in rows))' "$RESULTS_DIR/predictions.jsonl" 2>&1); then
    status=FAIL
  fi
  RESULTS+=("predict|$status|$((SECONDS - start))|$(echo "$note" | tail -1) (a process on the GPU seen by nvidia-smi: $seen)")
}
predict_case

# ------------------------------------------------------------------------------------------------ summary
failed=0
{
  echo "================================ GPU check summary ================================"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  cat "$RESULTS_DIR/versions.txt"
  printf '%-11s %-6s %7s  %s\n' case result seconds detail
} >"$RESULTS_DIR/summary.txt"
for row in "${RESULTS[@]}"; do
  IFS='|' read -r name status secs note <<<"$row"
  printf '%-11s %-6s %7s  %s\n' "$name" "$status" "$secs" "$note" >>"$RESULTS_DIR/summary.txt"
  [ "$status" != FAIL ] || failed=$((failed + 1))
done
echo "total: $((SECONDS - T0)) s, $failed case(s) failed; logs and metrics in $RESULTS_DIR" >>"$RESULTS_DIR/summary.txt"
cat "$RESULTS_DIR/summary.txt"
# On a lent device, $OUT comes back (at most 8 files): the summary, and one archive of the logs, metrics and
# predictions (no weights, no checkpoints).
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  cp "$RESULTS_DIR/summary.txt" "$OUT/gpu-check-summary.txt"
  tar -czf "$OUT/gpu-check-logs.tar.gz" -C "$RESULTS_DIR" --exclude='*.safetensors' --exclude='*.bin' \
    --exclude='*.pt' --exclude='checkpoints' --exclude='base_model' . || true
fi
[ "$failed" = 0 ]
