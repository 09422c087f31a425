#!/usr/bin/env bash
# Build the image from the Dockerfile and run it for real, on a Linux machine with neither Docker nor a GPU:
# buildah (no daemon, chroot isolation, overlay storage) builds it and runs its containers. Checks, each on a
# fresh container of the image, driven only through the entrypoint and the job's files:
#
#   image            config (numeric non-root user, tini entrypoint), no build-time traces (pip.conf, CA, caches,
#                    .deb files), /app holds only what .dockerignore admits, pip check, every package pinned
#   demo-uid1000     examples/demo.json as the image's user, outputs on a bind mount: manifest, metrics, ROUGE
#   validate         `validate` reports the splits and writes nothing
#   predict          `predict --model-dir` on the demo's model (needs demo-uid1000)
#   passthrough      a plain command (`bash -c …`) runs as given through entrypoint.sh, with its exit code
#   demo-uid12345    the demo as an arbitrary uid with no passwd entry (`--user 12345`, the OpenShift case)
#   sagemaker        /opt/ml: string hyperparameters, train/validation channels, model in /opt/ml/model
#   sagemaker-failure  a bad hyperparameter: exit 2 and one line in /opt/ml/output/failure
#   vertex           AIP_MODEL_DIR / AIP_CHECKPOINT_DIR / AIP_TENSORBOARD_LOG_DIR through the /gcs FUSE path
#   sigterm-resume   SIGTERM to tini mid-training → exit 143 → a second container resumes and completes
#   torchrun-shm     two processes (torchrun, gloo) in one container under a 64 MiB /dev/shm
#   zero3-offload    DeepSpeed zero3_offload: the image's g++ JIT-builds CPU Adam into a mounted /cache volume
#   leftovers        no process, mount or container of this run is left behind
#
#   sudo bash scripts/image_check.sh                                # everything (.ci/run runs this)
#   sudo IMAGE_CHECK_ONLY="image passthrough" bash scripts/image_check.sh   # some checks
#   sudo IMAGE_CHECK_BUILD=0 bash scripts/image_check.sh           # reuse the image of an earlier run
#
# Settings (environment): IMAGE_CHECK_ONLY (check names), IMAGE_CHECK_BUILD=1 (0: reuse IMAGE_CHECK_TAG),
# IMAGE_CHECK_BUILD_CACHE=0 (1: reuse this machine's build cache and keep it; CI builds cold),
# IMAGE_CHECK_TAG=localhost/seq2seq-job:image-check, IMAGE_CHECK_BUILD_ARGS (more `--build-arg K=V` words),
# IMAGE_CHECK_CACHE=/var/cache/seq2seq-image-check (the stand-in base), IMAGE_CHECK_DEBIAN_MIRROR,
# IMAGE_CHECK_KEEP_WORK=0 (1: keep outputs and logs), IMAGE_CHECK_RUN_TIMEOUT=300 (s per container run).
#
# The NVIDIA CUDA base cannot be pulled here: a Debian 12 root file system made with `debootstrap --variant=minbase`
# stands in for it (--build-arg CUDA_BASE=…), cached in IMAGE_CHECK_CACHE under a key of its recipe and the
# suite's Release date. Its Python is 3.11 where the real base's is 3.12. Not checked here: the CUDA base itself,
# GPUs, NCCL, bf16/fp16 on CUDA, bitsandbytes and DeepSpeed kernels (scripts/gpu_check.sh, on a GPU machine).
#
# buildah's chroot isolation has no PID namespace: container processes are host processes. Every container run
# carries IMAGE_CHECK_RUN=<this run's id> in its environment; the check finds tini's host PID by it to signal
# it, and kills (and reports) any process that still carries it after a run.
set -euo pipefail

SCRIPT=$(readlink -f "$0")
REPO=$(dirname "$(dirname "$SCRIPT")")
cd "$REPO"

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    exec sudo --preserve-env bash "$SCRIPT" "$@"
  fi
  echo "image_check: needs root (buildah, debootstrap, apt-get); run it with sudo" >&2
  exit 1
fi

ONLY=${IMAGE_CHECK_ONLY:-}
BUILD=${IMAGE_CHECK_BUILD:-1}
BUILD_CACHE=${IMAGE_CHECK_BUILD_CACHE:-0}
TAG=${IMAGE_CHECK_TAG:-localhost/seq2seq-job:image-check}
CACHE=${IMAGE_CHECK_CACHE:-/var/cache/seq2seq-image-check}
MIRROR=${IMAGE_CHECK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${IMAGE_CHECK_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
KEEP_WORK=${IMAGE_CHECK_KEEP_WORK:-0}
RUN_TIMEOUT=${IMAGE_CHECK_RUN_TIMEOUT:-300}
SUITE=bookworm
CHECKS=(image demo-uid1000 validate predict passthrough demo-uid12345 sagemaker sagemaker-failure vertex
  sigterm-resume torchrun-shm zero3-offload)
OTHER_UID=12345

T0=$EPOCHREALTIME
RUN_ID="ic$$x$RANDOM"
WORK=""
RESULTS=()
BUILD_S=""
BUILD_NOTE=""
BASE_S=""
BASE_NOTE=""

say() { printf '[image-check %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() {
  say "ERROR: $*" >&2
  exit 1
}
elapsed() { python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f}")' "$1" "$EPOCHREALTIME"; }
b() { buildah --storage-driver overlay "$@"; }

for name in $ONLY; do
  case " ${CHECKS[*]} leftovers " in
    *" $name "*) ;;
    *) die "IMAGE_CHECK_ONLY: unknown check '$name' (checks: ${CHECKS[*]})" ;;
  esac
done
selected() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }

# ------------------------------------------------------------------------------------------ processes, cleanup
# Host PIDs of every process that carries this run's marker (container processes, wherever they were reparented).
marked_pids() {
  local proc pid
  for proc in /proc/[0-9]*; do
    pid=${proc#/proc/}
    [ "$pid" = "$$" ] && continue
    if grep -qxz "IMAGE_CHECK_RUN=$RUN_ID" "$proc/environ" 2>/dev/null; then
      echo "$pid"
    fi
  done
}

# Kill what a finished container run left behind; print what was found (nothing when all is well).
stop_leftovers() {
  local pids
  pids=$(marked_pids)
  [ -z "$pids" ] && return 0
  # shellcheck disable=SC2086 # one PID per word
  ps -o pid=,ppid=,args= -p "$(echo $pids | tr ' ' ,)" 2>/dev/null | sed 's/^/leftover process: /' || true
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    [ -z "$(marked_pids)" ] && return 0
    sleep 0.5
  done
  # shellcheck disable=SC2046
  kill -KILL $(marked_pids) 2>/dev/null || true
}

our_containers() { b containers --format '{{.ContainerName}}' 2>/dev/null | grep "^$RUN_ID-" || true; }

descendants() { # the PIDs of a process's children, grandchildren …, deepest first
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    descendants "$child"
    echo "$child"
  done
}

CHECK_PID="" # the check running now, in the background so that a signal to this script is handled at once
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$CHECK_PID" ]; then
    # shellcheck disable=SC2046 # one PID per word
    kill -TERM $(descendants "$CHECK_PID") "$CHECK_PID" 2>/dev/null || true
    sleep 1
  fi
  stop_leftovers >/dev/null 2>&1 || true
  local c
  for c in $(our_containers); do b rm "$c" >/dev/null 2>&1 || true; done
  if [ -n "$WORK" ]; then
    awk -v w="$WORK" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m" || true; done
    if [ "$KEEP_WORK" = 1 ]; then say "outputs and logs kept in $WORK"; else rm -rf "$WORK"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------------------------------------- tools
install_tools() {
  local missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
  command -v python3 >/dev/null || missing+=(python3)
  command -v ps >/dev/null || missing+=(procps)
  command -v setpriv >/dev/null || missing+=(util-linux)
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]} (apt-get)"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
  say "$(buildah --version)"
}

# ------------------------------------------------------------------------------- the stand-in for the CUDA base
# A Debian root file system from debootstrap, as a local image. Cached as a tarball (and as the image) under a key
# of the recipe and the suite's Release date: a Debian point release makes a new base, nothing else does.
standin_base() {
  local start=$EPOCHREALTIME release recipe key tarball
  release=$(python3 - "$MIRROR/dists/$SUITE/Release" <<'EOF' || echo "unknown"
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=30) as r:
    for line in r.read().decode().splitlines():
        if line.startswith("Date:"):
            print(line.split(":", 1)[1].strip())
            break
EOF
  )
  recipe="debootstrap --variant=minbase $SUITE $MIRROR; security $SECURITY_MIRROR; Release $release; recipe 1"
  key=$(printf '%s' "$recipe" | sha256sum | cut -c1-12)
  BASE_IMAGE="localhost/seq2seq-standin-base:$SUITE-$key"
  tarball="$CACHE/standin-$SUITE-$key.tar"
  if b inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    BASE_NOTE="cached image $BASE_IMAGE"
  else
    mkdir -p "$CACHE"
    if [ -s "$tarball" ]; then
      BASE_NOTE="cached tarball $tarball"
    else
      say "making the stand-in base: $recipe"
      local rootfs="$WORK/rootfs"
      debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$WORK/logs/debootstrap.log" 2>&1 ||
        die "debootstrap failed: $(tail -5 "$WORK/logs/debootstrap.log")"
      printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' "$MIRROR" "$SUITE" "$MIRROR" \
        "$SUITE" "$SECURITY_MIRROR" "$SUITE" >"$rootfs/etc/apt/sources.list"
      rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/*
      tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
      mv "$tarball.tmp" "$tarball"
      rm -rf "$rootfs"
      find "$CACHE" -maxdepth 1 -name "standin-$SUITE-*.tar" ! -name "${tarball##*/}" -delete
      BASE_NOTE="debootstrap, cached as $tarball"
    fi
    mkdir -p "$WORK/base"
    ln "$tarball" "$WORK/base/rootfs.tar" 2>/dev/null || cp "$tarball" "$WORK/base/rootfs.tar"
    printf 'FROM scratch\nADD rootfs.tar /\nCMD ["bash"]\n' >"$WORK/base/Containerfile"
    b bud --isolation chroot -t "$BASE_IMAGE" -f "$WORK/base/Containerfile" "$WORK/base" >"$WORK/logs/base.log" 2>&1 ||
      die "importing the stand-in base failed: $(tail -5 "$WORK/logs/base.log")"
    rm -rf "$WORK/base"
    local old
    for old in $(b images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/seq2seq-standin-base:' || true); do
      [ "$old" = "$BASE_IMAGE" ] || b rmi "$old" >/dev/null 2>&1 || true
    done
  fi
  BASE_S=$(elapsed "$start")
  say "stand-in base: $BASE_IMAGE ($BASE_NOTE, ${BASE_S} s)"
}

# --------------------------------------------------------------------------------------------------- build
# pip inside the build: this network intercepts TLS, so pip needs the host's CA bundle, and an index the host's pip
# is configured with must be used too. Both go in a pip.conf under a read-only folder mounted over /root (HOME of
# every RUN): buildah leaves an empty stub in the image for any mount target that does not exist yet
# (/etc/pip.conf, /run/hostca), and /root exists in every base. Nothing of it is committed; `image` checks that.
write_build_home() {
  local home=$1 ca="" host_pip line key value index="" extras=() trusted=() rank best=(0 0 0)
  for ca in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    [ -n "$ca" ] && [ -f "$ca" ] && break
  done
  [ -f "$ca" ] || die "no CA bundle found on this machine for pip inside the build"
  mkdir -p "$home/.config/pip"
  cp "$ca" "$home/.config/pip/ca-certificates.crt"
  host_pip=python3
  [ -x .venv/bin/python ] && host_pip=.venv/bin/python
  # `pip config list` shows the files' values (global.name, install.name) and PIP_* variables (:env:.name) alike;
  # as in pip, a variable wins over an [install] value, which wins over a [global] one.
  while IFS= read -r line; do
    key=${line%%=*}
    case "${key%%.*}" in
      :env:) rank=3 ;;
      install) rank=2 ;;
      global) rank=1 ;;
      *) continue ;;
    esac
    key=${key#*.}
    value=${line#*=}
    value=${value#\'}
    value=${value%\'}
    case "$key" in
      index-url) [ "$rank" -lt "${best[0]}" ] || { index=$value best[0]=$rank; } ;;
      extra-index-url) [ "$rank" -lt "${best[1]}" ] || { read -r -a extras <<<"$value"; best[1]=$rank; } ;;
      trusted-host) [ "$rank" -lt "${best[2]}" ] || { read -r -a trusted <<<"$value"; best[2]=$rank; } ;;
    esac
  done < <("$host_pip" -m pip config list 2>/dev/null || true)
  # Only http(s) indexes reach the build; file:// ones and local folders (find-links) are this machine's alone.
  local url http_extras=()
  for url in "${extras[@]}"; do
    if [[ "$url" == http* ]]; then http_extras+=("$url"); else say "this host's pip extra index $url is not reachable inside the build: not used"; fi
  done
  if [ -n "$index" ] && [[ "$index" != http* ]]; then
    say "this host's pip index-url $index is not reachable inside the build: not used"
    index=""
  fi
  {
    echo "[global]"
    echo "cert = /root/.config/pip/ca-certificates.crt"
    if [ -n "$index" ]; then echo "index-url = $index"; fi
    if [ "${#http_extras[@]}" -gt 0 ]; then echo "extra-index-url = ${http_extras[*]}"; fi
    if [ "${#trusted[@]}" -gt 0 ]; then echo "trusted-host = ${trusted[*]}"; fi
  } >"$home/.config/pip/pip.conf"
  PIP_NOTE="index ${index:-PyPI, the default}${http_extras[*]:+, extra ${http_extras[*]}}"
}

image_ids() { b images --all --quiet --no-trunc | sed 's/^sha256://' | sort -u; }

# --layers: one layer per instruction, as Docker builds it (without it buildah squashes each stage into one layer).
# Without the build cache, the intermediate images the build leaves (the build stage alone is 6 GB) are removed.
build_image() {
  local start=$EPOCHREALTIME old new args=() before id
  old=$(b inspect --type image --format '{{.FromImageID}}' "$TAG" 2>/dev/null || true)
  before=$(image_ids)
  write_build_home "$WORK/build-home"
  args=(--isolation chroot --layers --build-arg "CUDA_BASE=$BASE_IMAGE" -v "$WORK/build-home:/root:ro" -t "$TAG"
    -f Dockerfile)
  [ "$BUILD_CACHE" = 1 ] || args+=(--no-cache)
  local extra
  for extra in ${IMAGE_CHECK_BUILD_ARGS:-}; do args+=(--build-arg "$extra"); done
  say "building $TAG from Dockerfile (CUDA_BASE=$BASE_IMAGE, pip $PIP_NOTE, build cache: $([ "$BUILD_CACHE" = 1 ] && echo on || echo off)); log: build.log"
  if ! b bud "${args[@]}" . >"$WORK/logs/build.log" 2>&1; then
    tail -40 "$WORK/logs/build.log" >&2
    die "the image did not build"
  fi
  BUILD_S=$(elapsed "$start")
  new=$(b inspect --type image --format '{{.FromImageID}}' "$TAG")
  if [ -n "$old" ] && [ "$old" != "$new" ]; then b rmi "$old" >/dev/null 2>&1 || true; fi
  if [ "$BUILD_CACHE" != 1 ]; then
    for id in $(comm -13 <(echo "$before") <(image_ids)); do
      [ "$id" = "$new" ] || b rmi "$id" >/dev/null 2>&1 || true
    done
  fi
  BUILD_NOTE="$(grep -c 'Using cache' "$WORK/logs/build.log" || true) steps from cache"
  say "built in ${BUILD_S} s ($BUILD_NOTE)"
}

# ------------------------------------------------------------------------------------------- container runs
ENTRY=()
IMAGE_USER=""
read_image_config() {
  mapfile -t ENTRY < <(b inspect --type image --format '{{range .OCIv1.Config.Entrypoint}}{{println .}}{{end}}' "$TAG")
  IMAGE_USER=$(b inspect --type image --format '{{.OCIv1.Config.User}}' "$TAG")
  [ "${#ENTRY[@]}" -gt 0 ] || die "the image has no ENTRYPOINT"
}

# ctr NAME LOG [buildah run options …] -- COMMAND …: COMMAND in a fresh container of the image (stdout to LOG.out,
# stderr to LOG), which is then removed; returns COMMAND's exit code. The container gets OMP_NUM_THREADS=1 (a
# 2-core machine), TINI_SUBREAPER (tini is not PID 1 without a PID namespace) and this run's marker, and a host
# name that resolves, as in a pod (buildah names it after its ID and leaves that out of /etc/hosts; torchrun's
# workers would wait forever for their agent's address).
ctr() {
  local name="$RUN_ID-$1" host="ic-$1" log=$2 opts=() rc=0
  shift 2
  while [ "$1" != -- ]; do
    opts+=("$1")
    shift
  done
  shift
  b from --pull=false --name "$name" --add-host "$host:127.0.0.1" "$TAG" >/dev/null
  b config --hostname "$host" "$name" 2>/dev/null # "not supported for OCI images": for the image, not for runs
  echo "+ buildah run ${opts[*]} $name -- $*" >>"$log"
  timeout -k 15 "${CTR_TIMEOUT:-$RUN_TIMEOUT}" buildah --storage-driver overlay run --isolation chroot \
    --env "IMAGE_CHECK_RUN=$RUN_ID" --env OMP_NUM_THREADS=1 --env TINI_SUBREAPER=1 \
    "${opts[@]}" "$name" -- "$@" >>"$log.out" 2>>"$log" || rc=$?
  b rm "$name" >/dev/null 2>&1 || true
  local left
  left=$(stop_leftovers)
  if [ -n "$left" ]; then
    echo "$left" >>"$log"
    echo "FAIL: the container run left processes behind" >>"$log"
    return 99
  fi
  return "$rc"
}

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
expect_rc() { [ "$1" = "$2" ] || fail "exit code $1, expected $2"; }
detail() { echo "$*" >"$LOG.detail"; }
owned_by() { # owned_by DIR UID: every file under DIR belongs to UID
  local other
  other=$(find "$1" ! -uid "$2" -print -quit)
  [ -z "$other" ] || fail "$other is owned by uid $(stat -c %u "$other"), not $2"
}
outdir() { # a host folder for a container's outputs, owned by the uid that writes there
  mkdir -p "$1"
  chown "$2" "$1"
  echo "$1"
}
examples=(-v "$REPO/examples:/workspace/examples:ro")
demo_flags=(--params examples/demo.json)

# ---------------------------------------------------------------------------------------------------- checks
check_image() {
  local cid mnt
  cid=$(b from --pull=false --name "$RUN_ID-image" "$TAG")
  mnt=$(b mount "$cid")
  [[ "$IMAGE_USER" =~ ^[1-9][0-9]*$ ]] || fail "image user '$IMAGE_USER' is not a numeric non-root uid"
  [ "${ENTRY[0]}" = /usr/bin/tini ] || fail "entrypoint ${ENTRY[*]} does not start with tini"
  local path
  for path in etc/pip.conf etc/xdg/pip run/hostca root/.cache root/.config tmp/constraints.txt; do
    [ ! -e "$mnt/$path" ] || fail "/$path is in the image (a build-time trace)"
  done
  [ -z "$(find "$mnt/var/cache/apt" -name '*.deb' -print -quit)" ] || fail ".deb files left in /var/cache/apt"
  [ -z "$(find "$mnt/var/lib/apt/lists" -type f ! -name lock -print -quit)" ] || fail "apt lists left in the image"
  [ -z "$(ls -A "$mnt/tmp")" ] || fail "files left in /tmp: $(ls -A "$mnt/tmp")"
  [ -z "$(find "$mnt/app" -name '__pycache__' -print -quit)" ] || fail "__pycache__ in /app"
  [ -x "$mnt/app/entrypoint.sh" ] || fail "/app/entrypoint.sh is not executable"
  # /app holds exactly what the Dockerfile copies of the repository (.dockerignore admits nothing else)
  (cd "$mnt/app" && find . -type f | sed 's|^\./||' | sort) >"$LOG.app-files"
  {
    find job deepspeed_configs -type f ! -path '*/__pycache__/*' ! -name '*.pyc'
    printf '%s\n' pyproject.toml README.md entrypoint.sh
  } | sort >"$LOG.repo-files"
  diff "$LOG.repo-files" "$LOG.app-files" >&2 || fail "/app differs from the repository's job/, deepspeed_configs/ and files"
  b umount "$cid" >/dev/null
  b rm "$cid" >/dev/null
  local rc=0
  ctr image-pip "$LOG" -- python -m pip check || rc=$?
  expect_rc "$rc" 0
  rc=0
  ctr image-list "$LOG.list" -- python -m pip list --format=json || rc=$?
  expect_rc "$rc" 0
  python3 - "$LOG.list.out" constraints/image.txt <<'EOF' || fail "installed packages differ from constraints/image.txt"
import json, re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
installed = {norm(p["name"]): p["version"] for p in json.load(open(sys.argv[1]))}
pins = {norm(n): v for n, v in (l.split("==") for l in open(sys.argv[2]).read().split() if "==" in l)}
bad = [f"{n}=={v} (pinned: {pins.get(n, 'not pinned')})" for n, v in sorted(installed.items())
       if n not in ("pip", "seq2seq-job") and pins.get(n) != v]
print("\n".join(bad), file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
  detail "user $IMAGE_USER, entrypoint ${ENTRY[*]}, $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$LOG.list.out") packages, all pinned, pip check clean"
}

check_demo_uid1000() {
  local out rc=0
  out=$(outdir "$WORK/demo" "$IMAGE_USER")
  ctr demo "$LOG" "${examples[@]}" -v "$out:/out" -- "${ENTRY[@]}" train "${demo_flags[@]}" --project-name /out/demo || rc=$?
  expect_rc "$rc" 0
  python3 scripts/check_run_outputs.py "$out/demo" --min-evaluations 12 --min-rouge-l 30 --checkpoints "$out/demo/checkpoints" >"$LOG.detail"
  owned_by "$out" "$IMAGE_USER"
}

check_validate() {
  local out rc=0
  out=$(outdir "$WORK/validate" "$IMAGE_USER")
  ctr validate "$LOG" "${examples[@]}" -v "$out:/out" -- "${ENTRY[@]}" validate "${demo_flags[@]}" --project-name /out/run || rc=$?
  expect_rc "$rc" 0
  [ ! -e "$out/run" ] || fail "validate created the project folder"
  grep -q '^split .*truncated$' "$LOG.out" || fail "no token-length table on stdout"
  python3 - "$LOG.out" <<'EOF' || fail "validate's JSON report is not what the demo data holds"
import json, sys
text = open(sys.argv[1]).read()
report, _ = json.JSONDecoder().raw_decode(text[text.index("\n{") + 1:])
rows = {name: split["rows"] for name, split in report["splits"].items()}
assert rows == {"train": 400, "validation": 80}, rows
EOF
  detail "splits train 400 / validation 80 rows, nothing written"
}

check_predict() {
  local out=$WORK/demo rc=0
  [ -f "$out/demo/manifest.json" ] || fail "no trained demo model in $out/demo (run demo-uid1000 first)"
  local texts=()
  mapfile -t texts < <(python3 -c 'import csv; rows = list(csv.DictReader(open("examples/demo_data/validation.csv"))); print(rows[0]["text"]); print(rows[1]["text"])')
  ctr predict "$LOG" -v "$out:/out" -- "${ENTRY[@]}" predict --model-dir /out/demo --text "${texts[0]}" --text "${texts[1]}" \
    --output /out/predictions.jsonl || rc=$?
  expect_rc "$rc" 0
  python3 - "$out/predictions.jsonl" "${texts[@]}" >"$LOG.detail" <<'EOF' || fail "predictions.jsonl is not one JSON line per input"
import json, sys
lines = [json.loads(line) for line in open(sys.argv[1]).read().splitlines()]
assert [line["text"] for line in lines] == sys.argv[2:], lines
assert all(isinstance(line["prediction"], str) and line["prediction"].strip() for line in lines), lines
print("; ".join(repr(line["prediction"]) for line in lines))
EOF
}

check_passthrough() {
  local rc=0
  # shellcheck disable=SC2016 # expanded inside the container
  ctr passthrough "$LOG" -- "${ENTRY[@]}" bash -c 'echo "uid=$(id -u) cwd=$PWD python=$(command -v python)"; exit 7' || rc=$?
  expect_rc "$rc" 7
  grep -qx "uid=$IMAGE_USER cwd=/workspace python=/opt/venv/bin/python" "$LOG.out" || fail "unexpected output: $(cat "$LOG.out")"
  local shown
  shown=$(cat "$LOG.out")
  rc=0
  ctr passthrough-cli "$LOG.cli" -- "${ENTRY[@]}" seq2seq-job --version || rc=$? # the console script, as given
  expect_rc "$rc" 0
  grep -qE '^seq2seq-job [0-9]' "$LOG.cli.out" || fail "seq2seq-job --version printed: $(cat "$LOG.cli.out")"
  detail "$shown, exit 7 passed through; $(cat "$LOG.cli.out")"
}

check_demo_uid12345() {
  local out rc=0
  out=$(outdir "$WORK/demo-$OTHER_UID" "$OTHER_UID")
  ctr demo-uid "$LOG" --user "$OTHER_UID" "${examples[@]}" -v "$out:/out" -- "${ENTRY[@]}" train "${demo_flags[@]}" \
    --project-name /out/demo || rc=$?
  expect_rc "$rc" 0
  python3 scripts/check_run_outputs.py "$out/demo" --min-evaluations 12 --min-rouge-l 30 >"$LOG.detail"
  owned_by "$out" "$OTHER_UID"
}

# /opt/ml as SageMaker lays it out for one host with train and validation channels; every hyperparameter a string.
sagemaker_tree() { # sagemaker_tree ROOT HYPERPARAMETERS_JSON
  local root=$1
  mkdir -p "$root/input/config" "$root/input/data/train" "$root/input/data/validation"
  echo "$2" >"$root/input/config/hyperparameters.json"
  echo '{"current_host": "algo-1", "hosts": ["algo-1"], "current_group_name": "homogeneousCluster",
    "current_instance_type": "ml.g5.2xlarge", "network_interface_name": "eth0"}' >"$root/input/config/resourceconfig.json"
  echo '{"train": {"TrainingInputMode": "File"}, "validation": {"TrainingInputMode": "File"}}' \
    >"$root/input/config/inputdataconfig.json"
  cp examples/demo_data/train.csv "$root/input/data/train/part-0000.csv"
  cp examples/demo_data/validation.csv "$root/input/data/validation/part-0000.csv"
  outdir "$root/model" "$IMAGE_USER" >/dev/null
  outdir "$root/checkpoints" "$IMAGE_USER" >/dev/null
  outdir "$root/output" "$IMAGE_USER" >/dev/null
}
SM_HYPER='{"model": "builtin:t5-tiny", "epochs": "2", "batch_size": "16", "lr": "0.003", "max_seq_length": "96",
  "max_target_length": "16", "early_stopping_patience": "0", "save_total_limit": "1", "sagemaker_job_name": "check-1"'

check_sagemaker() {
  local root=$WORK/sagemaker/opt_ml rc=0
  sagemaker_tree "$root" "$SM_HYPER}"
  ctr sagemaker "$LOG" -v "$root:/opt/ml" -- "${ENTRY[@]}" train || rc=$?
  expect_rc "$rc" 0
  python3 scripts/check_run_outputs.py "$root/model" --min-evaluations 2 --checkpoints "$root/checkpoints" >"$LOG.detail"
  [ ! -e "$root/output/failure" ] || fail "a failure file after a successful run: $(cat "$root/output/failure")"
  python3 - "$root/model/training_params.json" <<'EOF' || fail "training_params.json does not show the hyperparameters and channels"
import json, sys
p = json.load(open(sys.argv[1]))
assert (p["epochs"], p["batch_size"], p["lr"], p["model"]) == (2.0, 16, 0.003, "builtin:t5-tiny"), p
assert p["project_name"] == "/opt/ml/model" and p["checkpoint_dir"] == "/opt/ml/checkpoints", p
assert p["valid_split"] == "validation", p
EOF
}

check_sagemaker_failure() {
  local root=$WORK/sagemaker-failure/opt_ml rc=0
  sagemaker_tree "$root" "$SM_HYPER, \"learning_rate\": \"0.1\"}"
  ctr sagemaker-failure "$LOG" -v "$root:/opt/ml" -- "${ENTRY[@]}" || rc=$? # no arguments: the image's `train`
  expect_rc "$rc" 2
  [ -f "$root/output/failure" ] || fail "no /opt/ml/output/failure"
  [ "$(wc -l <"$root/output/failure")" = 1 ] || fail "the failure file is not one line"
  grep -q 'unknown parameter learning_rate: did you mean lr?' "$root/output/failure" || fail "failure reason: $(cat "$root/output/failure")"
  [ -z "$(ls -A "$root/model")" ] || fail "files in /opt/ml/model after a failure"
  detail "exit 2; failure: $(cut -c1-90 "$root/output/failure")"
}

check_vertex() {
  local gcs=$WORK/vertex/gcs run rc=0
  outdir "$gcs/bucket" "$IMAGE_USER" >/dev/null
  run=gs://bucket/jobs/run1
  ctr vertex "$LOG" "${examples[@]}" -v "$gcs:/gcs" \
    --env "AIP_MODEL_DIR=$run/model/" --env "AIP_CHECKPOINT_DIR=$run/checkpoints/" \
    --env "AIP_TENSORBOARD_LOG_DIR=$run/logs/" --env CLOUD_ML_JOB_ID=123 \
    --env 'CLUSTER_SPEC={"cluster": {"workerpool0": ["localhost:2222"]}, "task": {"type": "workerpool0", "index": 0}}' \
    --env SEQ2SEQ_DATA_PATH=/workspace/examples/demo_data --env SEQ2SEQ_VALID_SPLIT=validation \
    --env SEQ2SEQ_MODEL=builtin:t5-tiny --env SEQ2SEQ_EPOCHS=2 --env SEQ2SEQ_BATCH_SIZE=16 --env SEQ2SEQ_LR=0.003 \
    --env SEQ2SEQ_LOG=tensorboard --env SEQ2SEQ_EARLY_STOPPING_PATIENCE=0 \
    -- "${ENTRY[@]}" train || rc=$?
  expect_rc "$rc" 0
  local dir=$gcs/bucket/jobs/run1
  python3 scripts/check_run_outputs.py "$dir/model" --min-evaluations 2 --checkpoints "$dir/checkpoints" \
    --tensorboard "$dir/logs" >"$LOG.detail"
}

# The first container trains long enough to be stopped: SIGTERM goes to tini's host PID once the first checkpoint
# is complete; the job saves a checkpoint at the next step and exits 143. A second container resumes from it.
check_sigterm_resume() {
  local out rc=0 pid tini="" flags
  out=$(outdir "$WORK/sigterm" "$IMAGE_USER")
  flags=(train "${demo_flags[@]}" --project-name /out/run --epochs 8 --eval-strategy no --save-strategy steps
    --save-steps 10 --save-total-limit 2)
  ctr sigterm-1 "$LOG" "${examples[@]}" -v "$out:/out" -- "${ENTRY[@]}" "${flags[@]}" &
  pid=$!
  local waited=0
  until compgen -G "$out/run/checkpoints/checkpoint-*/manifest.json" >/dev/null; do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
    waited=$((waited + 1))
    [ "$waited" -lt 1500 ] || break
  done
  for p in $(marked_pids); do
    if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = tini ]; then tini=$p; fi
  done
  [ -n "$tini" ] || {
    wait "$pid" || true
    fail "no running tini to signal (the first run ended or never wrote a checkpoint)"
  }
  echo "+ kill -TERM $tini (tini's host PID) after $(basename "$(dirname "$(compgen -G "$out/run/checkpoints/checkpoint-*/manifest.json" | head -1)")")" >>"$LOG"
  kill -TERM "$tini"
  wait "$pid" || rc=$?
  expect_rc "$rc" 143
  grep -q 'Stopping at step' "$LOG" || fail "the log does not say the job stopped at a step"
  [ ! -e "$out/run/manifest.json" ] || fail "the stopped run marked its outputs complete"
  local stopped
  stopped=$(grep -o 'Stopping at step [0-9]*/[0-9]*' "$LOG" | head -1)
  rc=0
  ctr sigterm-2 "$LOG.resume" "${examples[@]}" -v "$out:/out" -- "${ENTRY[@]}" "${flags[@]}" || rc=$?
  expect_rc "$rc" 0
  grep -q 'Resuming from /out/run/checkpoints/checkpoint-' "$LOG.resume" || fail "the second run did not say it resumed"
  python3 scripts/check_run_outputs.py "$out/run" --resumed >"$LOG.detail"
  echo "first run: exit 143, ${stopped:-?}; $(grep -o 'Resuming from [^ ]*' "$LOG.resume" | head -1); $(cat "$LOG.detail")" >"$LOG.detail"
}

# Two processes in one container, under the 64 MiB /dev/shm of a pod without a memory volume. buildah's chroot
# isolation skips mounts under /dev, so the container starts as root with CAP_SYS_ADMIN, mounts the tmpfs in its
# own mount namespace, and drops to the image's user (no capabilities left) before exec'ing tini.
check_torchrun_shm() {
  local out rc=0
  out=$(outdir "$WORK/torchrun" "$IMAGE_USER")
  # shellcheck disable=SC2016 # expanded inside the container
  ctr torchrun "$LOG" --user 0 --cap-add CAP_SYS_ADMIN --env HOME=/home/app "${examples[@]}" -v "$out:/out" -- sh -c \
    'mount -t tmpfs -o size=64m,mode=1777,nosuid,nodev tmpfs /dev/shm && echo "shm_bytes=$(($(stat -f -c "%b*%S" /dev/shm)))" &&
     exec setpriv --reuid="$0" --regid="$0" --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs "$@"' \
    "$IMAGE_USER" "${ENTRY[@]}" train "${demo_flags[@]}" --project-name /out/ddp --num-processes 2 --epochs 2 || rc=$?
  expect_rc "$rc" 0
  grep -qx 'shm_bytes=67108864' "$LOG.out" || fail "/dev/shm was not 64 MiB"
  python3 scripts/check_run_outputs.py "$out/ddp" --world-size 2 --min-evaluations 2 >"$LOG.detail"
  owned_by "$out" "$IMAGE_USER"
}

# What the runtime stage's compiler is for: DeepSpeed JIT-compiles its CPU Adam (and, on CPU, its shared-memory
# collective) with the image's g++ and python3-dev on first use, into TORCH_EXTENSIONS_DIR on a mounted volume.
# The two builds take 3 to 6 minutes on 2 busy cores: this run gets twice the usual time limit.
check_zero3_offload() {
  local out ext rc=0
  out=$(outdir "$WORK/offload" "$IMAGE_USER")
  ext=$(outdir "$WORK/torch_extensions" "$IMAGE_USER")
  CTR_TIMEOUT=$((2 * RUN_TIMEOUT)) ctr zero3-offload "$LOG" "${examples[@]}" -v "$out:/out" -v "$ext:/cache/torch_extensions" -- "${ENTRY[@]}" train \
    "${demo_flags[@]}" --project-name /out/run --deepspeed zero3_offload --epochs 1 --max-samples 64 || rc=$?
  expect_rc "$rc" 0
  python3 scripts/check_run_outputs.py "$out/run" >"$LOG.detail"
  python3 - "$out/run/metrics.json" <<'EOF' || fail "metrics.json does not record DeepSpeed zero3_offload"
import json, sys
d = json.load(open(sys.argv[1]))["distributed"]
assert d["strategy"] == "deepspeed" and d["deepspeed"] == {"config": "zero3_offload", "zero_stage": 3}, d
EOF
  local built
  built=$(find "$ext" -name '*.so' -printf '%f\n' | sort | tr '\n' ' ')
  [[ "$built" == *cpu_adam* ]] || fail "no JIT-built cpu_adam in TORCH_EXTENSIONS_DIR (found: ${built:-nothing})"
  echo "JIT-built: $built; $(cat "$LOG.detail")" >"$LOG.detail"
}

check_leftovers() {
  local pids mounts containers
  pids=$(marked_pids)
  [ -z "$pids" ] || fail "processes of this run still running: $pids"
  mounts=$(grep -F -e "$WORK" -e "$RUN_ID" /proc/mounts || true)
  [ -z "$mounts" ] || fail "mounts left: $mounts"
  containers=$(our_containers)
  [ -z "$containers" ] || fail "containers left: $containers"
  detail "no process, mount or container of this run left"
}

# run_check NAME: run check_NAME in a subshell with errexit (a failed command or assertion fails the check).
run_check() {
  local name=$1 start=$EPOCHREALTIME status=PASS rc=0
  selected "$name" || return 0
  LOG="$WORK/logs/$name.log"
  say "check $name …"
  set +e
  (
    set -e
    "check_${name//-/_}"
  ) 2>>"$LOG" &
  CHECK_PID=$!
  wait "$CHECK_PID"
  rc=$?
  CHECK_PID=""
  set -e
  [ "$rc" = 0 ] || status=FAIL
  local secs
  secs=$(elapsed "$start")
  local note=""
  [ -f "$LOG.detail" ] && note=$(head -c 300 "$LOG.detail" | tr '\n' ' ')
  if [ "$status" = FAIL ]; then
    note=$(grep '^FAIL:' "$LOG" | tail -1 | cut -c1-300)
    say "$name FAILED (${secs} s); end of its log:"
    tail -30 "$LOG" | sed 's/^/    /'
    [ -f "$LOG.out" ] && tail -10 "$LOG.out" | sed 's/^/    stdout: /'
  else
    say "$name passed (${secs} s)"
  fi
  RESULTS+=("$name|$status|$secs|$note")
}

# ------------------------------------------------------------------------------------------------- summary
image_layers() { # size of the image and of each layer, from its manifest (uncompressed layer tars)
  b inspect --type image "$TAG" | python3 -c '
import json, sys
d = json.load(sys.stdin)
layers = [l["size"] for l in json.loads(d["Manifest"])["layers"]]
steps = [h.get("created_by", "") for h in d["OCIv1"]["history"] if not h.get("empty_layer")]
print(f"image {sys.argv[1]}: {sum(layers):,} bytes ({sum(layers) / 1e9:.2f} GB, {sum(layers) / 2**30:.2f} GiB) uncompressed, {len(layers)} layers")
for size, step in zip(layers, steps):
    step = step.replace("/bin/sh -c #(nop) ", "").replace("/bin/sh -c ", "RUN ")
    if step.startswith(("CMD", "ENV", "LABEL", "ENTRYPOINT")):  # buildah credits the layer of an imported base to
        step = "(base image)"                                     # the last instruction of that base
    print(f"  {size / 1e6:10.1f} MB  {step[:100]}")
' "$TAG"
}

summary() {
  local row name status secs note failed=0
  echo
  echo "================================ image check summary ================================"
  printf '%-18s %-6s %9s  %s\n' check result seconds detail
  for row in "${RESULTS[@]}"; do
    IFS='|' read -r name status secs note <<<"$row"
    printf '%-18s %-6s %9s  %s\n' "$name" "$status" "$secs" "$note"
    [ "$status" = PASS ] || failed=$((failed + 1))
  done
  echo "-------------------------------------------------------------------------------------"
  [ -n "$BASE_S" ] && echo "stand-in base: ${BASE_S} s ($BASE_NOTE)"
  if [ -n "$BUILD_S" ]; then echo "build: ${BUILD_S} s ($BUILD_NOTE)"; else echo "build: skipped (IMAGE_CHECK_BUILD=0)"; fi
  image_layers || true
  echo "total: $(elapsed "$T0") s, $failed check(s) failed"
  [ "$failed" = 0 ]
}

# ---------------------------------------------------------------------------------------------------- main
main() {
  [ "$(uname -s)" = Linux ] || die "needs Linux (buildah)"
  WORK=$(mktemp -d /var/tmp/seq2seq-image-check.XXXXXX)
  chmod 0755 "$WORK"
  mkdir -p "$WORK/logs"
  install_tools
  local free_gb
  free_gb=$(df -P --block-size=1G /var/lib | awk 'NR == 2 {print $4}')
  if [ -n "$free_gb" ] && [ "$free_gb" -lt 20 ]; then die "only ${free_gb} GB free for buildah's storage; the build needs about 20"; fi
  if [ "$BUILD" = 1 ]; then
    standin_base
    build_image
  else
    b inspect --type image "$TAG" >/dev/null 2>&1 || die "IMAGE_CHECK_BUILD=0 but there is no image $TAG"
    say "using the existing image $TAG"
  fi
  read_image_config
  local name
  for name in "${CHECKS[@]}"; do run_check "$name"; done
  run_check leftovers
  summary
}

main "$@"
