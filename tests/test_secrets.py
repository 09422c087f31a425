"""Secret canary: a run given a Hub token and AWS keys must not write them to any log line, file or object.

The run is verbose (DEBUG logging, the most talkative setting) and publishes to the moto S3 server, so every
place a secret could leak — our logs, transformers'/botocore's logs, training_params.json, metrics.json, the
model card, checkpoints (training_args.bin is a pickle of every training argument), the bucket — is checked.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
from job_process import job_env, run_job
from s3_server import free_port

from job import manifest
from job.errors import EXIT_FAILURE, EXIT_USER_ERROR


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


# ------------------------------------------------------------------------------------ every error path
# A canary in each place a secret can hide — a known secret value (HF_TOKEN / --token), the user-info of a URL,
# a well-known token shape that nobody declared — and a failure in each part of the job that words errors:
# argparse, SEQ2SEQ_PARAMS, the schema, storage, the launcher. The canary must be in no output line and not in
# the failure reason the platform shows (TERMINATION_MESSAGE_PATH).
def _canary() -> str:
    return f"canary{uuid.uuid4().hex[:12]}"


def secret_cases(tmp: Path, canary: str) -> dict[str, tuple[tuple[str, ...], dict[str, str], int]]:
    closed = f"127.0.0.1:{free_port()}"
    data = str(tmp / "data.csv")
    return {
        # name: (command line after `python -m job`, environment, exit code)
        "mistyped_token_flag": (("train", "--data-path", data, "--tokn", canary), {}, EXIT_USER_ERROR),
        "token_flag_then_a_bad_flag": (("train", "--data-path", data, "--token", canary, "--lr"), {}, EXIT_USER_ERROR),
        "token_and_a_stray_value": (("train", "--token", canary, canary), {}, EXIT_USER_ERROR),
        "params_env_not_json": (("train", "--data-path", data), {"SEQ2SEQ_PARAMS": f"token={canary}"}, EXIT_USER_ERROR),
        "params_env_broken_json": (
            ("train", "--data-path", data),
            {"SEQ2SEQ_PARAMS": '{"token": "' + canary + '", "lr": }'},
            EXIT_USER_ERROR,
        ),
        "token_param_rejected_run": (
            ("train", "--data-path", data, "--lr", "-1"),
            {"SEQ2SEQ_TOKEN": canary},
            EXIT_USER_ERROR,
        ),
        "endpoint_with_credentials": (
            ("train", "--data-path", "s3://bucket/x.csv", "--s3-endpoint-url", f"http://user:{canary}@{closed}"),
            {"AWS_MAX_ATTEMPTS": "1"},
            EXIT_FAILURE,
        ),
        "data_path_with_credentials": (
            ("train", "--data-path", f"https://user:{canary}@example.com/data.csv"),
            {},
            EXIT_USER_ERROR,
        ),
        "undeclared_hub_token_shape": (("train", "--data-path", f"hf_{canary}XYZ"), {}, EXIT_USER_ERROR),
        "launcher_mistyped_token_flag": (
            ("--launch", "train", "--data-path", data, "--tokn", canary),
            {},
            EXIT_USER_ERROR,
        ),
    }


CASES = tuple(secret_cases(Path("x"), "c"))


@pytest.mark.parametrize("name", CASES)
def test_no_error_path_prints_a_secret(name, tmp_path) -> None:
    canary = _canary()
    args, env, code = secret_cases(tmp_path, canary)[name]
    termination = tmp_path / "termination-log"
    termination.write_text("")
    env = {
        "TERMINATION_MESSAGE_PATH": str(termination),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        **env,
    }
    command = [sys.executable, "-m", "job.launch", *args[1:]] if args[0] == "--launch" else None
    if command:
        full = {**job_env(env), "DS_ACCELERATOR": "cpu"}
        result = subprocess.run(command, capture_output=True, text=True, env=full, timeout=300)
        rc, text = result.returncode, result.stdout + result.stderr
    else:
        rc, job = run_job(*args, "--project-name", str(tmp_path / "out"), env=env, timeout=300)
        text = job.text
    assert rc == code, text[-2000:]
    assert [line for line in text.splitlines() if " ERROR " in line], text[-2000:]  # it did fail, with a line
    assert canary not in text, [line for line in text.splitlines() if canary in line]
    assert termination.read_text().strip() and canary not in termination.read_text()
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # e.g. training_params.json
    assert [p for p in written if canary.encode() in p.read_bytes()] == []


def test_a_token_on_the_command_line_is_warned_about(tmp_path) -> None:
    rc, job = run_job(
        "train", "--data-path", str(tmp_path / "x.csv"), "--token", _canary(), "--project-name", str(tmp_path)
    )
    assert rc == EXIT_USER_ERROR  # no data file; the warning came first
    assert "--token on the command line is visible to other users of this machine" in job.text
    assert "HF_TOKEN" in job.text


def test_the_log_formatter_masks_messages_arguments_and_tracebacks(capsys) -> None:
    """Whoever logs (a library, a traceback of an unexpected crash), the root handler masks the line."""
    import logging

    from job.context import ProcessInfo
    from job.logs import install_handler

    canary = _canary()
    install_handler(ProcessInfo(), secrets=[canary])
    log = logging.getLogger("some.library")
    try:
        raise RuntimeError(f"request to https://user:pw{canary}@host failed with token {canary}")
    except RuntimeError as exc:
        log.error("crash: %s (id hf_%sABCDEFGHIJ)", canary, canary, exc_info=exc)
    err = capsys.readouterr().err
    assert "crash: ***" in err and "Traceback" in err and "https://***@host" in err
    assert canary not in err
