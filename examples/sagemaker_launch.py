"""Run the image as an Amazon SageMaker training job: managed spot capacity, resumable through checkpoint_s3_uri.

    pip install 'sagemaker>=2.200,<3'
    python examples/sagemaker_launch.py \\
        --image-uri 123456789012.dkr.ecr.us-east-1.amazonaws.com/seq2seq-job:0.1.0 \\
        --role arn:aws:iam::123456789012:role/SageMakerExecutionRole \\
        --train s3://my-bucket/data/train.csv --validation s3://my-bucket/data/validation.csv \\
        --output s3://my-bucket/seq2seq/ --instance-type ml.g5.2xlarge --instance-count 1
    python examples/sagemaker_launch.py ... --print     # show the Estimator arguments, start nothing

What SageMaker does with it (docs/platforms.md has the whole contract):

* runs ``IMAGE train``; the job reads ``/opt/ml/input/config/hyperparameters.json`` (values arrive as strings and
  are parsed into their types), the ``train``/``validation`` channels from ``/opt/ml/input/data/``, and writes
  the model to ``/opt/ml/model`` (uploaded to ``--output`` as model.tar.gz);
* spot: when capacity is reclaimed the job gets SIGTERM, saves a checkpoint to ``/opt/ml/checkpoints`` (mirrored
  to ``checkpoint_s3_uri``, deletions included) and exits; SageMaker restarts it on new capacity with the
  checkpoints restored, and the job resumes from the latest one (``max_wait`` bounds waiting plus running);
* a bad parameter or data file makes the job exit 2 with a one-line reason in ``/opt/ml/output/failure``,
  shown as the training job's FailureReason.

Secrets (HF_TOKEN) go in ``environment``, not hyperparameters: hyperparameters are visible in the console and
DescribeTrainingJob.
"""

from __future__ import annotations

import argparse
import json
import os
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
    }
    if spot:
        kwargs["max_wait"] = max(int(args.max_wait_hours * 3600), max_run)  # SageMaker requires max_wait >= max_run
    if os.environ.get("HF_TOKEN"):
        kwargs["environment"]["HF_TOKEN"] = os.environ["HF_TOKEN"]
    return kwargs


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
        print(json.dumps({"estimator": shown, "inputs": channels(args)}, indent=2))
        return
    try:
        from sagemaker.estimator import Estimator
    except ImportError:
        raise SystemExit("this example needs the SageMaker Python SDK v2: pip install 'sagemaker>=2.200,<3'") from None
    estimator = Estimator(**kwargs)
    estimator.fit(channels(args), wait=False)
    print(f"started training job {estimator.latest_training_job.name}")


if __name__ == "__main__":
    main()
