"""A corpus of bad and odd inputs through the real CLI: one clear line, the right exit code, nothing marked complete.

Exit codes (docs/reliability.md): 2 = the user's mistake (Kubernetes podFailurePolicy stops retrying it) — bad
parameters, flags, data, model folders, output folders, URIs, and a run that diverged (the same parameters
diverge again); 1 = a failure a retry may fix. An S3 endpoint that still refuses connections after the client's
retries is treated as the second kind: it is what an outage or a network policy being rolled out looks like,
and ``backoffLimit`` bounds the retries if it is a typo after all. A full disk is reported as such, also exit 1
(a retry may land on a node with space).

Odd-but-valid inputs (``rows`` set) must train to the end, with the data read as meant: the rows read and the
rows dropped as empty (NaN targets count as empty, never as the text "nan").

All cases start at once (3 at a time) in a module fixture; each test then checks one case's result. The case
table (:func:`cases`) is the one source of truth for which cases run.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from job_process import JobProcess
from s3_server import free_port

from job import manifest
from job.errors import EXIT_FAILURE, EXIT_OK, EXIT_USER_ERROR


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    expected: str  # part of the one ERROR line ("" for a valid run: no ERROR line at all)
    code: int = EXIT_USER_ERROR
    env: dict[str, str] = field(default_factory=dict)
    s3: bool = False  # needs the moto server's endpoint
    rows: tuple[int, int] | None = None  # a valid run: (rows read, rows dropped as empty) of the train split
    within_s: float | None = None  # fail fast: the job must end this soon
    needs_mount: bool = False  # needs the read-only mount the fixture makes (root in a container that allows it)


def _parquet_nan_target() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"text": ["red cat", "blue dog", "green bird"], "target": pa.array([1.5, float("nan"), 2.0])})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)  # a real float NaN (not a null), as pandas and Spark write them
    return buffer.getvalue()


CORPUS = {
    "malformed.csv": b'text,target\n"an unclosed quote,x\na,b\n',
    "malformed.jsonl": b'{"text": "a", "target": "b"}\n{"text": "c", "target": \n',
    "latin1.csv": "text,target\ncafé crème,x\n".encode("latin-1"),
    "missing_column.csv": b"input,target\nhello,x\n",
    "empty.csv": b"",
    "duplicate_column.csv": b"text,target,target\nred cat,red,cat\n",
    "types.json": json.dumps({"lr": "fast", "epochs": [1], "batch_size": 1.5}).encode(),
    "broken.json": b'{"lr": 0.1,\n',
    "good.csv": b"text,target\nhello world,hello\n",
    "nan_target.jsonl": b'{"text": "red cat", "target": 1.5}\n{"text": "blue dog", "target": NaN}\n'
    b'{"text": "green bird", "target": 2}\n',
    "nan_target.parquet": _parquet_nan_target(),
    "a_file": b"not a folder\n",
}  # data files, each wrong (or odd) in one way, and one good one

# Model folders, each a copy of the tiny T5 broken in one way (built by write_models), and the tiny BART.
MODELS = ("no_tokenizer", "no_config", "truncated_weights", "garbage_weights", "bart")
TINY = ("--max-samples", "8", "--batch-size", "8", "--epochs", "1", "--max-target-length", "8")


def write_corpus(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in CORPUS.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in CORPUS}


def write_models(folder: Path, *, t5: Path, bart: Path) -> dict[str, Path]:
    models = {}
    for name in MODELS[:-1]:
        models[name] = folder / name
        shutil.copytree(t5, models[name])
    for tokenizer_file in ("tokenizer.json", "tokenizer_config.json"):
        (models["no_tokenizer"] / tokenizer_file).unlink()
    (models["no_config"] / "config.json").unlink()
    weights = (t5 / "model.safetensors").read_bytes()
    (models["truncated_weights"] / "model.safetensors").write_bytes(weights[: len(weights) // 2])  # cut off
    (models["garbage_weights"] / "model.safetensors").write_bytes(os.urandom(len(weights)))
    return {**models, "bart": bart}


def cases(files: dict[str, Path], models: dict[str, Path], readonly: Path) -> dict[str, Case]:
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
        "duplicate_csv_column": Case(
            ("--data-path", str(files["duplicate_column.csv"])), "duplicated column names: 'target' (columns 2, 3)"
        ),
        "nan_targets_jsonl": Case(
            ("--data-path", str(files["nan_target.jsonl"]), *TINY), "", code=EXIT_OK, rows=(3, 1)
        ),
        "nan_targets_parquet": Case(
            ("--data-path", str(files["nan_target.parquet"]), *TINY), "", code=EXIT_OK, rows=(3, 1)
        ),
        # model folders (checked before the data is read)
        "model_without_tokenizer": Case(
            ("--data-path", good, "--model", str(models["no_tokenizer"])), "has no tokenizer files"
        ),
        "model_without_config": Case(("--data-path", good, "--model", str(models["no_config"])), "has no config.json"),
        "truncated_safetensors": Case(
            ("--data-path", good, "--model", str(models["truncated_weights"])), "model.safetensors is truncated"
        ),
        "garbage_safetensors": Case(
            ("--data-path", good, "--model", str(models["garbage_weights"])), "is not a safetensors file"
        ),
        "seq_length_beyond_positions": Case(
            ("--data-path", good, "--model", str(models["bart"]), "--max-seq-length", "513"),
            "max_seq_length=513 exceeds what model",
        ),
        "target_length_beyond_positions": Case(
            ("--data-path", good, "--model", str(models["bart"]), "--max-target-length", "4096"),
            "max_target_length=4096 exceeds what model",
        ),
        "t5_has_no_position_limit": Case(
            ("--data-path", good, "--max-seq-length", "4096", *TINY), "", code=EXIT_OK, rows=(1, 0)
        ),
        "unreachable_hub": Case(
            ("--data-path", good, "--model", "some-org/some-model"),
            "cannot reach the Hub at http://127.0.0.1:",
            env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"},
            within_s=60,
        ),
        # parameters from JSON, the environment and flags
        "json_wrong_types": Case(
            ("--data-path", good, "--params", str(files["types.json"])), "lr='fast': input should be a valid number"
        ),
        "json_syntax": Case(("--data-path", good, "--params", str(files["broken.json"])), "is not valid JSON"),
        "env_wrong_type": Case(("--data-path", good), "epochs='many'", env={"SEQ2SEQ_EPOCHS": "many"}),
        "lr_inf": Case(("--data-path", good, "--lr", "inf"), "lr='inf': input should be a finite number"),
        "lr_nan_from_env": Case(
            ("--data-path", good), "lr='nan': input should be a finite number", env={"SEQ2SEQ_LR": "nan"}
        ),
        "implausible_epochs": Case(
            ("--data-path", good, "--epochs", "1e9"), "epochs='1e9': input should be less than or equal to 1000"
        ),
        "diverged_mid_run": Case(
            ("--data-path", good, *TINY, "--epochs", "3", "--lr", "1e30", "--warmup-ratio", "0"),
            "training diverged at step 1/3: the weights became non-finite",
        ),
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
        # names from run_summarization.py / TrainingArguments / AutoTrain: one line with what the user meant
        "flag_learning_rate": Case(
            ("--data-path", good, "--learning_rate", "1e-4"), "--learning_rate: did you mean --lr?"
        ),
        "flag_num_train_epochs": Case(
            ("--data-path", good, "--num_train_epochs", "3"), "--num_train_epochs: did you mean --epochs?"
        ),
        "flag_output_dir": Case(
            ("--data-path", good, "--output_dir", "x"), "--output_dir: did you mean --project-name?"
        ),
        "flag_fp16": Case(("--data-path", good, "--fp16"), "--fp16: did you mean --mixed-precision fp16?"),
        "flag_report_to": Case(("--data-path", good, "--report_to", "none"), "--report_to: did you mean --log?"),
        "flag_abbreviated": Case(("--data-path", good, "--epoch", "2"), "unknown flag --epoch: did you mean --epochs?"),
        # output folders
        "project_name_is_a_file": Case(
            ("--data-path", good, "--project-name", str(files["a_file"])), "is a file, not a folder"
        ),
        "read_only_output": Case(
            ("--data-path", good, "--project-name", str(readonly / "run")),
            "cannot write in",
            needs_mount=True,
        ),
        # URIs
        "unknown_scheme": Case(("--data-path", "foo://x"), "data_path=foo://x: unsupported scheme foo://"),
        "output_uri_scheme": Case(("--data-path", good, "--output-uri", "foo://x"), "output_uri=foo://x: unsupported"),
        "traversal_key": Case(
            ("--data-path", "s3://some-bucket/data/../../../escape.csv"), "a '..' segment in the key would reach"
        ),
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
CASE_NAMES = tuple(cases({n: Path(n) for n in CORPUS}, {n: Path(n) for n in MODELS}, Path("ro")))


@pytest.fixture(scope="module")
def readonly_mount(tmp_path_factory):
    """A read-only tmpfs (None where mounting is not allowed)."""
    folder = tmp_path_factory.mktemp("readonly")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    yield folder if mounted.returncode == 0 else None
    if mounted.returncode == 0:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture(scope="module")
def results(tmp_path_factory, s3_server, tiny_t5_dir, tiny_bart_dir, readonly_mount) -> dict[str, tuple]:
    root = tmp_path_factory.mktemp("bad_inputs")
    models = write_models(root / "models", t5=tiny_t5_dir, bart=tiny_bart_dir)
    corpus = cases(write_corpus(root / "data"), models, readonly_mount or root / "no-mount")
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

    def run(name: str) -> tuple[str, tuple]:
        case = corpus[name]
        out = root / name
        if case.needs_mount and readonly_mount is None:
            return name, (case, None, "", out, 0.0)
        env = {**base, **({"AWS_ENDPOINT_URL_S3": s3_server.endpoint_url} if case.s3 else {}), **case.env}
        started = time.monotonic()
        # the case's own flags come last: argparse keeps the last --model / --project-name given
        job = JobProcess("train", "--model", str(tiny_t5_dir), "--project-name", str(out), *case.args, env=env)
        try:
            code = job.finish(timeout=240)
        except AssertionError as exc:
            return name, (case, -1, str(exc), out, time.monotonic() - started)
        return name, (case, code, job.text, out, time.monotonic() - started)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(run, corpus))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_gives_one_line_and_its_exit_code(name, results) -> None:
    case, code, text, out, seconds = results[name]
    if code is None:
        pytest.skip("needs permission to mount a read-only tmpfs (root in a container that allows it)")
    assert code == case.code, text[-3000:]
    errors = [line for line in text.splitlines() if " ERROR " in line]
    assert "Traceback" not in text, text[-3000:]
    if case.within_s is not None:
        assert seconds < case.within_s, f"took {seconds:.0f} s"
    if case.rows is not None:  # odd but valid: trained to the end, the data read as meant
        assert errors == [] and manifest.verify(out, checksums=True), text[-3000:]
        split = json.loads((out / "metrics.json").read_text())["data"]["splits"]["train"]
        assert (split["rows_read"], split["dropped_empty"]) == case.rows, split
        return
    assert len(errors) == 1 and " ERROR job: " in errors[0], text[-3000:]
    assert case.expected in errors[0], errors[0]
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
