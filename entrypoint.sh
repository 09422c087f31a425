#!/usr/bin/env bash
# Container entrypoint: one image for Kubernetes, SageMaker, Vertex AI and `docker run`.
#
#   IMAGE                          train (SageMaker runs the image as `IMAGE train`)
#   IMAGE train|validate|predict|evaluate [--flag value ...]
#   IMAGE --data-path /data/x.csv ...   flags alone mean train
#   IMAGE bash | python ... | any command   run as given
#
# Everything that decides something (platform, topology, GPU count, torchrun or a single process) lives in
# Python, in job.launch and job.platforms, where it is unit-tested. `exec` keeps the launcher as this process,
# so SIGTERM from the platform reaches it (and through torchrun, every worker).
set -euo pipefail

PYTHON=${PYTHON:-python}

if [ "$#" -eq 0 ]; then
  set -- train
fi

case "$1" in
  train | validate | predict | evaluate)
    exec "$PYTHON" -m job.launch "$@"
    ;;
  -*)
    exec "$PYTHON" -m job.launch train "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
