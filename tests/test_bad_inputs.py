"""A corpus of bad inputs through the real CLI: one clear line, the right exit code, nothing marked complete.

Exit codes (docs/reliability.md): 2 = the user's mistake (Kubernetes podFailurePolicy stops retrying it);
1 = a failure a retry may fix. An S3 endpoint that still refuses connections after the client's retries is
treated as the second kind: it is what an outage or a network policy being rolled out looks like, and
``backoffLimit`` bounds the retries if it is a typo after all. A full disk is reported as such, also exit 1
(a retry may land on a node with space).

All cases start at once (3 at a time) in a module fixture; each test then checks one case's result.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from job_process import JobProcess
from s3_server import free_port

from job import manifest
from job.errors import EXIT_FAILURE, EXIT_USER_ERROR


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    expected: str  # part of the one ERROR line
    code: int = EXIT_USER_ERROR
    env: dict[str, str] = field(default_factory=dict)
    s3: bool = False  # needs the moto server's endpoint


CORPUS = {
    "malformed.csv": b'text,target\n"an unclosed quote,x\na,b\n',
    "malformed.jsonl": b'{"text": "a", "target": "b"}\n{"text": "c", "target": \n',
    "latin1.csv": "text,target\ncafé crème,x\n".encode("latin-1"),
    "missing_column.csv": b"input,target\nhello,x\n",
    "empty.csv": b"",
    "types.json": json.dumps({"lr": "fast", "epochs": [1], "batch_size": 1.5}).encode(),
    "broken.json": b'{"lr": 0.1,\n',
    "good.csv": b"text,target\nhello world,hello\n",
}  # broken data files, each wrong in one way (and one good one)


def write_corpus(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in CORPUS.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in CORPUS}


def cases(files: dict[str, Path]) -> dict[str, Case]:
    good = str(files["good.csv"])
    return {
        # data files
        "malformed_csv": Case(("--data-path", str(files["malformed.csv"])), "is not a valid CSV file"),
        "malformed_jsonl": Case(("--data-path", str(files["malformed.jsonl"])), "line 2 is not valid JSON"),
        "latin1_encoding": Case(
            ("--data-path", str(files["latin1.csv"])), "is not valid UTF-8 (first bad byte at line 2"
        ),
        "missing_column": Case(
            ("--data-path", str(files["missing_column.csv"])), "column 'text' (text_column) not found"
        ),
        "empty_file": Case(("--data-path", str(files["empty.csv"])), "is empty (0 bytes)"),
        # parameters from JSON, the environment and flags
        "json_wrong_types": Case(
            ("--data-path", good, "--params", str(files["types.json"])), "lr='fast': input should be a valid number"
        ),
        "json_syntax": Case(("--data-path", good, "--params", str(files["broken.json"])), "is not valid JSON"),
        "env_wrong_type": Case(("--data-path", good), "epochs='many'", env={"SEQ2SEQ_EPOCHS": "many"}),
        "save_steps_without_steps": Case(
            ("--data-path", good, "--save-steps", "5"), "save_steps=5 needs save_strategy=steps"
        ),
        "save_steps_not_multiple": Case(
            (
                "--data-path",
                good,
                "--valid-split",
                "train",
                "--eval-strategy",
                "steps",
                "--eval-steps",
                "4",
                "--save-strategy",
                "steps",
                "--save-steps",
                "6",
            ),
            "save_steps (6) to be a multiple of eval_steps (4)",
        ),
        # URIs
        "unknown_scheme": Case(("--data-path", "foo://x"), "data_path=foo://x: unsupported scheme foo://"),
        "output_uri_scheme": Case(("--data-path", good, "--output-uri", "foo://x"), "output_uri=foo://x: unsupported"),
        "resume_missing": Case(
            ("--data-path", good, "--resume", "/no/such/checkpoint"), "resume=/no/such/checkpoint: no such folder"
        ),
        "no_such_bucket": Case(("--data-path", "s3://no-such-bucket/train.csv"), "the bucket does not exist", s3=True),
        "no_such_output_bucket": Case(
            ("--data-path", good, "--output-uri", "s3://no-such-bucket/run"),
            "output_uri s3://no-such-bucket/run",
            s3=True,
        ),
        # infrastructure: retryable, still one line
        "unreachable_endpoint": Case(
            ("--data-path", good, "--output-uri", "s3://some-bucket/run"),
            "cannot reach the storage endpoint http://127.0.0.1:",
            code=EXIT_FAILURE,
            env={"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{free_port()}"},
        ),
        "disk_full": Case(("--data-path", good), "disk full: no space left on device", code=EXIT_FAILURE),
    }


# The one source of truth for which cases run: the names of cases() (paths do not matter for the names).
CASE_NAMES = tuple(cases({name: Path(name) for name in CORPUS}))


@pytest.fixture(scope="module")
def results(tmp_path_factory, s3_server, tiny_t5_dir) -> dict[str, tuple[Case, int, str, Path]]:
    root = tmp_path_factory.mktemp("bad_inputs")
    corpus = cases(write_corpus(root / "data"))
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith(("SEQ2SEQ_", "AWS_"))}
    base = {k: v for k, v in base.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    base.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_MAX_ATTEMPTS="2",
        AWS_CONFIG_FILE=str(root / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(root / "none"),
    )
    full = root / "disk_full" / "training_params.json.tmp"  # the job's first write lands on /dev/full: ENOSPC
    full.parent.mkdir(parents=True)
    full.symlink_to("/dev/full")

    def run(name: str) -> tuple[str, tuple[Case, int, str, Path]]:
        case = corpus[name]
        out = root / name
        env = {**base, **({"AWS_ENDPOINT_URL_S3": s3_server.endpoint_url} if case.s3 else {}), **case.env}
        job = JobProcess("train", *case.args, "--model", str(tiny_t5_dir), "--project-name", str(out), env=env)
        try:
            code = job.finish(timeout=240)
        except AssertionError as exc:
            return name, (case, -1, str(exc), out)
        return name, (case, code, job.text, out)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(run, corpus))


@pytest.mark.parametrize(
    "name",
    CASE_NAMES,
)
def test_bad_input_gives_one_line_and_its_exit_code(name, results) -> None:
    case, code, text, out = results[name]
    assert code == case.code, text[-3000:]
    errors = [line for line in text.splitlines() if " ERROR job: " in line]
    assert len(errors) == 1, text[-3000:]
    assert case.expected in errors[0], errors[0]
    assert "Traceback" not in text, text[-3000:]
    assert not list(out.rglob(manifest.MANIFEST))  # nothing marked complete


def test_disk_full_during_a_checkpoint_save(tmp_path, tiny_t5_dir, keywords_task_dir) -> None:
    """torch.save on a full volume raises 'unexpected pos', not ENOSPC: the job still says the disk is full."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("needs permission to mount a 1 MB tmpfs (root in a container that allows it)")
    try:
        job = JobProcess(
            "train",
            "--data-path",
            str(keywords_task_dir),
            "--model",
            str(tiny_t5_dir),
            "--project-name",
            str(tmp_path / "out"),
            "--checkpoint-dir",
            str(small),
            "--max-samples",
            "16",
            "--batch-size",
            "8",
            "--epochs",
            "1",
            "--save-strategy",
            "epoch",
        )
        code = job.finish()
    finally:
        subprocess.run(["umount", str(small)], check=True)
    errors = [line for line in job.text.splitlines() if " ERROR job: " in line]
    assert code == EXIT_FAILURE and len(errors) == 1 and "disk full" in errors[0], job.tail()
    assert "Traceback" not in job.text and not (tmp_path / "out" / manifest.MANIFEST).exists()
