"""Secret canary: a run given a Hub token and AWS keys must not write them to any log line, file or object.

The run is verbose (DEBUG logging, the most talkative setting) and publishes to the moto S3 server, so every
place a secret could leak — our logs, transformers'/botocore's logs, training_params.json, metrics.json, the
model card, checkpoints (training_args.bin is a pickle of every training argument), the bucket — is checked.
"""

from __future__ import annotations

import uuid

import boto3
from job_process import run_job

from job import manifest
from job.errors import EXIT_USER_ERROR


def test_secrets_appear_in_no_log_line_file_or_uploaded_object(
    tiny_t5_dir, keywords_task_dir, s3_bucket, s3_env, tmp_path
) -> None:
    canary = f"canary{uuid.uuid4().hex[:12]}"
    secrets = {
        "HF_TOKEN": f"hf_{canary}hub",
        "AWS_ACCESS_KEY_ID": f"AKIA{canary}".upper(),
        "AWS_SECRET_ACCESS_KEY": f"{canary}secretkey",
        "AWS_SESSION_TOKEN": f"{canary}sessiontoken",
    }
    out = tmp_path / "run"
    rc, job = run_job(
        "train",
        "--verbose",
        "--data-path",
        str(keywords_task_dir),
        "--model",
        str(tiny_t5_dir),
        "--project-name",
        str(out),
        "--output-uri",
        f"s3://{s3_bucket}/run",
        "--token",
        f"hf_{canary}param",
        "--valid-split",
        "validation[:8]",
        "--max-samples",
        "32",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--save-strategy",
        "epoch",
        "--max-seq-length",
        "32",
        "--max-target-length",
        "8",
        env=secrets,
    )
    assert rc == 0, job.tail()
    assert manifest.verify(out) and "DEBUG" in job.text  # it ran, verbosely, to the end

    leaks = [line for line in job.text.splitlines() if canary.lower() in line.lower()]
    assert leaks == [], leaks[:5]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 20 and any("checkpoint-" in str(p) for p in files)  # model, card, params, checkpoints…
    assert [p for p in files if canary.encode() in p.read_bytes().lower()] == []
    assert '"token": "***"' in (out / "training_params.json").read_text()

    client = boto3.client("s3", endpoint_url=s3_env.endpoint_url)
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
        for o in page.get("Contents", [])
    ]
    assert "run/manifest.json" in keys and any(k.startswith("run/checkpoints/") for k in keys)
    uploaded = {key: client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() for key in keys}
    assert [key for key, body in uploaded.items() if canary.encode() in body.lower()] == []


def test_a_rejected_run_does_not_echo_the_token(tmp_path) -> None:
    canary = f"canary{uuid.uuid4().hex[:12]}"
    rc, job = run_job(
        "train",
        "--data-path",
        str(tmp_path / "x.csv"),
        "--token",
        canary,
        "--lr",
        "-1",
        "--project-name",
        str(tmp_path / "out"),
        env={"HF_TOKEN": canary},
    )
    assert rc == EXIT_USER_ERROR and "lr=" in job.text
    assert canary not in job.text
