"""Run the image as an Amazon SageMaker training job: managed spot capacity, resumable through checkpoint_s3_uri.

    pip install 'sagemaker>=2.200,<3'
    python examples/sagemaker_launch.py \\
        --image-uri 123456789012.dkr.ecr.us-east-1.amazonaws.com/seq2seq-job:0.1.0 \\
        --role arn:aws:iam::123456789012:role/SageMakerExecutionRole \\
        --train s3://my-bucket/data/train.csv --validation s3://my-bucket/data/validation.csv \\
        --output s3://my-bucket/seq2seq/ --instance-type ml.g5.2xlarge --instance-count 1
    python examples/sagemaker_launch.py ... --print     # show the Estimator arguments, start nothing
    python examples/sagemaker_launch.py ... --tune --max-jobs 12 --max-parallel-jobs 2   # automatic model tuning

What SageMaker does with it (docs/platforms.md has the whole contract):

* runs ``IMAGE train``; the job reads ``/opt/ml/input/config/hyperparameters.json`` (values arrive as strings and
  are parsed into their types), the ``train``/``validation`` channels from ``/opt/ml/input/data/``, and writes
  the model to ``/opt/ml/model`` (uploaded to ``--output`` as model.tar.gz);
* spot: when capacity is reclaimed the job gets SIGTERM, saves a checkpoint to ``/opt/ml/checkpoints`` (mirrored
  to ``checkpoint_s3_uri``, deletions included) and exits; SageMaker restarts it on new capacity with the
  checkpoints restored, and the job resumes from the latest one (``max_wait`` bounds waiting plus running);
* a bad parameter or data file makes the job exit 2 with a one-line reason in ``/opt/ml/output/failure``,
  shown as the training job's FailureReason.

* the objective: after every evaluation, and for the final model last, the job logs a line
  ``objective: eval_loss=0.4523 epoch=3 step=75`` (job/tuning.py); ``metric_definitions`` below is the regex
  that reads it, so the console charts it and a tuning job (``--tune``) optimizes it. ``--objective-metric``
  must be the job's metric_for_best_model as ``eval_<name>`` (default eval_loss); SageMaker adds the
  ``_tuning_objective_metric`` hyperparameter, which the job ignores.

Secrets (HF_TOKEN) go in ``environment``, not hyperparameters: hyperparameters are visible in the console and
DescribeTrainingJob.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import Any

# Job parameters (Seq2SeqParams field names). Any value type works: SageMaker turns each into a string.
HYPERPARAMETERS: dict[str, Any] = {
    "model": "google/flan-t5-base",
    "source_prefix": "summarize: ",
    "epochs": 3,
    "batch_size": 8,
    "lr": 3e-4,
    "mixed_precision": "bf16",
    "max_seq_length": 512,
    "max_target_length": 128,
    "save_strategy": "epoch",
    "save_total_limit": 2,
}


# The line job/tuning.py logs after each evaluation (the value as Python writes a float: 0.4523, 1e-05).
OBJECTIVE_REGEX = r"objective: {name}=([-+0-9.eE]+)"
# Searched by --tune (SageMaker SDK ranges; the static HYPERPARAMETERS of the same names are left out).
TUNING_RANGES: dict[str, dict[str, Any]] = {
    "lr": {"type": "continuous", "min": 1e-5, "max": 1e-3, "scaling": "Logarithmic"},
    "batch_size": {"type": "categorical", "values": [8, 16, 32]},
    "warmup_ratio": {"type": "continuous", "min": 0.0, "max": 0.1, "scaling": "Linear"},
}


def metric_definitions(objective: str) -> list[dict[str, str]]:
    """SageMaker's regex for the objective line (its first group is the value)."""
    return [{"Name": objective, "Regex": OBJECTIVE_REGEX.format(name=re.escape(objective))}]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-uri", required=True, help="ECR image built from this repository's Dockerfile.")
    parser.add_argument("--role", required=True, help="SageMaker execution role ARN (reads data, writes output).")
    parser.add_argument("--train", required=True, help="s3:// URI of the training file or prefix (train channel).")
    parser.add_argument("--validation", help="s3:// URI of the validation file or prefix (validation channel).")
    parser.add_argument("--output", required=True, help="s3:// prefix for model.tar.gz and checkpoints.")
    parser.add_argument("--instance-type", default="ml.g5.2xlarge")
    parser.add_argument("--instance-count", type=int, default=1, help="More than 1: multi-node torchrun.")
    parser.add_argument("--max-run-hours", type=float, default=24.0, help="Training time limit.")
    parser.add_argument("--max-wait-hours", type=float, default=48.0, help="Spot: waiting for capacity + training.")
    parser.add_argument("--on-demand", action="store_true", help="Use on-demand instead of spot capacity.")
    parser.add_argument(
        "--hyperparameter",
        "-p",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="Override or add a job parameter, e.g. -p epochs=5 (repeatable).",
    )
    parser.add_argument(
        "--objective-metric",
        default="eval_loss",
        help="eval_<metric_for_best_model>: charted, and optimized with --tune.",
    )
    parser.add_argument("--tune", action="store_true", help="Run an automatic model tuning job over TUNING_RANGES.")
    parser.add_argument("--max-jobs", type=int, default=12, help="--tune: training jobs in all.")
    parser.add_argument("--max-parallel-jobs", type=int, default=2, help="--tune: training jobs at a time.")
    parser.add_argument("--print", action="store_true", help="Print the Estimator arguments and exit.")
    return parser.parse_args(argv)


def estimator_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Arguments of ``sagemaker.estimator.Estimator`` for this job (plain data, printable and testable)."""
    hyperparameters = dict(HYPERPARAMETERS)
    for item in args.hyperparameter:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--hyperparameter {item!r}: use NAME=VALUE")
        hyperparameters[name.strip()] = value
    output = args.output.rstrip("/")
    spot = not args.on_demand
    max_run = int(args.max_run_hours * 3600)
    kwargs: dict[str, Any] = {
        "image_uri": args.image_uri,
        "role": args.role,
        "instance_count": args.instance_count,
        "instance_type": args.instance_type,
        "volume_size": 200,  # GB of local disk: Hub cache, checkpoints before upload
        "output_path": output,
        "base_job_name": "seq2seq-job",
        "hyperparameters": {k: str(v) for k, v in hyperparameters.items()},
        # Checkpoints are mirrored to S3 while training and restored when a spot job restarts.
        "checkpoint_s3_uri": f"{output}/checkpoints",
        "checkpoint_local_path": "/opt/ml/checkpoints",
        "use_spot_instances": spot,
        "max_run": max_run,
        "environment": {},
        "metric_definitions": metric_definitions(args.objective_metric),
    }
    if spot:
        kwargs["max_wait"] = max(int(args.max_wait_hours * 3600), max_run)  # SageMaker requires max_wait >= max_run
    if os.environ.get("HF_TOKEN"):
        kwargs["environment"]["HF_TOKEN"] = os.environ["HF_TOKEN"]
    return kwargs


def tuner_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Arguments of ``sagemaker.tuner.HyperparameterTuner`` (plain data; main() makes the SDK's range objects)."""
    return {
        "objective_metric_name": args.objective_metric,
        "objective_type": "Minimize" if args.objective_metric.endswith("loss") else "Maximize",
        "metric_definitions": metric_definitions(args.objective_metric),
        "hyperparameter_ranges": dict(TUNING_RANGES),
        "strategy": "Bayesian",
        "max_jobs": args.max_jobs,
        "max_parallel_jobs": args.max_parallel_jobs,
        "base_tuning_job_name": "seq2seq-tune",
    }


def _sdk_ranges(ranges: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from sagemaker.tuner import CategoricalParameter, ContinuousParameter, IntegerParameter

    out: dict[str, Any] = {}
    for name, spec in ranges.items():
        if spec["type"] == "categorical":
            out[name] = CategoricalParameter(spec["values"])
        else:
            kind = ContinuousParameter if spec["type"] == "continuous" else IntegerParameter
            out[name] = kind(spec["min"], spec["max"], scaling_type=spec.get("scaling", "Auto"))
    return out


def channels(args: argparse.Namespace) -> dict[str, str]:
    inputs = {"train": args.train}
    if args.validation:
        inputs["validation"] = args.validation
    return inputs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    kwargs = estimator_kwargs(args)
    if args.print:
        shown = {**kwargs, "environment": {k: ("***" if "TOKEN" in k else v) for k, v in kwargs["environment"].items()}}
        tuner = tuner_kwargs(args) if args.tune else None
        print(json.dumps({"estimator": shown, "inputs": channels(args), "tuner": tuner}, indent=2))
        return
    try:
        from sagemaker.estimator import Estimator
    except ImportError:
        raise SystemExit("this example needs the SageMaker Python SDK v2: pip install 'sagemaker>=2.200,<3'") from None
    estimator = Estimator(**kwargs)
    if args.tune:
        from sagemaker.tuner import HyperparameterTuner

        tuning = tuner_kwargs(args)
        tuner = HyperparameterTuner(
            estimator, hyperparameter_ranges=_sdk_ranges(tuning.pop("hyperparameter_ranges")), **tuning
        )
        tuner.fit(channels(args), wait=False)
        print(f"started tuning job {tuner.latest_tuning_job.name}")
        return
    estimator.fit(channels(args), wait=False)
    print(f"started training job {estimator.latest_training_job.name}")


if __name__ == "__main__":
    main()
