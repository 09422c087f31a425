"""One writer per output (job.lease): the takeover rule, compare-and-swap on local folders and real S3 (moto),
and concurrent jobs through the real CLI on one folder and on one S3 prefix.

Job A is held mid-run deterministically where a test needs it alive: its model card (``README.md``) is a named
pipe, so A blocks writing it — after training, still holding and renewing its lease — until the test reads it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from job_process import JobProcess, run_job, tiny_train_args

from job import lease, manifest
from job.errors import EXIT_OK, EXIT_USER_ERROR
from job.outputs.files import CARD, LEASE
from job.storage.conditional import VersionedObject

LEASE_S = "3"  # short leases: renewed every 0.75 s, a silent holder is taken over after 3 s of watching


def record(*, age: float = 0.0, **fields: object) -> dict:
    """A lease record as another process would have written it (defaults: another host, renewed ``age`` s ago)."""
    base = {"job_id": None, "host": "elsewhere", "pid": 1, "pid_namespace": "x", "owner": "someone"}
    return {**base, "started": "2026-12-01T00:00:00Z", "lease_seconds": 60, "heartbeat": time.time() - age, **fields}


def dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


ME = lease.Claim(job_id="job-1")
SAME_MACHINE = {"host": ME.host, "pid_namespace": ME.pid_namespace}
TAKEOVER_RULES = {
    # name: (the holder's record fields, the expected reason (a part of it), or None: a live other job, watch it)
    "same_job_id": ({"job_id": "job-1"}, "an earlier attempt of this job"),
    "other_job_other_host": ({"job_id": "job-2"}, None),
    "no_job_ids_other_host": ({}, None),
    "dead_pid_this_machine": ({**SAME_MACHINE, "pid": dead_pid()}, "its process is gone"),
    "our_pid_restarted_container": ({**SAME_MACHINE, "pid": os.getpid()}, "its process is gone"),
    "live_pid_this_machine": ({**SAME_MACHINE, "pid": os.getppid()}, None),
    "dead_pid_other_pid_namespace": ({"host": ME.host, "pid_namespace": "other", "pid": dead_pid()}, None),
    "heartbeat_two_leases_old": ({"age": 121}, "has not been renewed for"),
    "heartbeat_one_lease_old": ({"age": 61}, None),
}


@pytest.mark.parametrize("name", TAKEOVER_RULES)
def test_the_takeover_rule(name) -> None:
    fields, expected = TAKEOVER_RULES[name]
    reason = lease.takeover_reason(record(**fields), ME)
    assert (reason is None) if expected is None else (reason is not None and expected in reason), reason


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_compare_and_swap(backend, tmp_path, request) -> None:
    """Create only if absent, replace and delete only the version read: what S3 (moto) and local folders do."""
    uri = f"s3://{request.getfixturevalue('s3_bucket')}/run" if backend == "s3" else str(tmp_path / "out")
    obj = VersionedObject(uri, LEASE)
    assert obj.read() is None
    first = obj.write(b"one", version=None)
    assert first and obj.write(b"two", version=None) is None  # If-None-Match: * — someone holds it
    assert obj.read() == (b"one", first)
    second = obj.write(b"two", version=first)
    assert second and second != first
    assert obj.write(b"three", version=first) is None  # If-Match on a stale version
    assert not obj.delete(version=first) and obj.read() == (b"two", second)
    assert obj.delete(version=second) and obj.read() is None


def test_a_live_holder_is_refused_a_silent_one_is_taken_over(tmp_path, caplog) -> None:
    obj = VersionedObject(str(tmp_path), LEASE)
    holder = lease.Lease(obj, lease.Claim(job_id=None), lease_seconds=1.0, what="output folder x")
    holder.acquire()  # renewed every 0.25 s by its heartbeat thread
    try:
        started = time.monotonic()
        with pytest.raises(lease.OutputInUse, match=r"output folder x is in use by another job: host .*, pid \d+"):
            lease.Lease(obj, lease.Claim(job_id=None), lease_seconds=1.0, what="output folder x").acquire()
        assert time.monotonic() - started < 1.0  # refused as soon as a renewal was seen
    finally:
        holder.stop(release=False)  # silent from now on
    current = obj.read()
    silent = record(lease_seconds=1.0)  # as if it were on another host: its pid proves nothing here
    assert current is not None and obj.write(json.dumps(silent).encode(), version=current[1])
    newcomer = lease.Lease(obj, lease.Claim(job_id=None), lease_seconds=1.0, what="output folder x")
    started = time.monotonic()
    newcomer.acquire()
    assert time.monotonic() - started >= 1.0  # watched for one lease period first
    assert "it was not renewed while watched for 1 s" in caplog.text
    newcomer.stop(release=True)
    assert obj.read() is None
    with pytest.raises(lease.LeaseLost, match="lost the lease on output folder x"):
        holder.check(verify=True)  # the old holder learns it before writing anything


# ------------------------------------------------------------------------------------------- real jobs
def job_args(data: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return tiny_train_args(
        data,
        model,
        out,
        "--lease-seconds",
        LEASE_S,
        *extra,
    )


class BlockedCard:
    """``out/README.md`` as a named pipe: the job blocks writing its model card until :meth:`release`."""

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / CARD
        os.mkfifo(self.path)

    def release(self) -> None:
        def read() -> None:
            with self.path.open("rb") as pipe:
                pipe.read()

        threading.Thread(target=read, daemon=True).start()


def refusal(job: JobProcess, holder: JobProcess) -> str:
    errors = [line for line in job.text.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Traceback" not in job.text, job.tail()
    line = errors[0]
    assert f"pid {holder.process.pid}, started 20" in line and "host " in line, line  # names the holder
    return line


def test_a_second_job_on_one_folder_is_refused_and_the_first_is_unaffected(
    tiny_t5_dir, keywords_task_dir, tmp_path
) -> None:
    out = tmp_path / "run"
    card = BlockedCard(out)
    first = JobProcess(*job_args(keywords_task_dir, tiny_t5_dir, out))
    first.wait_for(r"Holding the lease on output folder")
    rc, second = run_job(*job_args(keywords_task_dir, tiny_t5_dir, out), timeout=120)
    assert rc == EXIT_USER_ERROR
    assert f"output folder {out} is in use by another job" in refusal(second, first)
    assert " step 1/" not in second.text  # refused before anything was read or written
    card.release()
    assert first.finish() == EXIT_OK, first.tail()
    assert manifest.verify(out, checksums=True) and not (out / LEASE).exists()  # released at the end


def test_a_second_job_on_one_s3_prefix_is_refused(tiny_t5_dir, keywords_task_dir, s3_bucket, s3_env, tmp_path) -> None:
    uri = f"s3://{s3_bucket}/run"
    card = BlockedCard(tmp_path / "a")
    first = JobProcess(*job_args(keywords_task_dir, tiny_t5_dir, tmp_path / "a", "--output-uri", uri))
    first.wait_for(r"Holding the lease on output_uri")
    rc, second = run_job(*job_args(keywords_task_dir, tiny_t5_dir, tmp_path / "b", "--output-uri", uri), timeout=120)
    assert rc == EXIT_USER_ERROR
    assert f"output_uri {uri} is in use by another job" in refusal(second, first)
    assert not (tmp_path / "b" / LEASE).exists()  # its own folder's lease was given back
    card.release()
    assert first.finish() == EXIT_OK, first.tail()
    import boto3

    keys = {
        o["Key"]
        for o in boto3.client("s3", endpoint_url=s3_env.endpoint_url)
        .list_objects_v2(Bucket=s3_bucket)
        .get("Contents", [])
    }
    assert "run/manifest.json" in keys and f"run/{LEASE}" not in keys


def test_a_frozen_holder_is_taken_over_and_then_stops_without_writing(tiny_t5_dir, keywords_task_dir, tmp_path) -> None:
    """A holder that stops renewing (SIGSTOP: a hung node) loses its lease; when it wakes up it writes nothing."""
    out = tmp_path / "run"
    slow = ("--epochs", "20", "--save-strategy", "epoch")
    first = JobProcess(*job_args(keywords_task_dir, tiny_t5_dir, out, *slow))
    first.wait_for(r"step [2-9]/80 ")
    first.send(signal.SIGSTOP)
    try:
        rc, second = run_job(*job_args(keywords_task_dir, tiny_t5_dir, out, "--resume", "never"), timeout=240)
    finally:
        first.send(signal.SIGCONT)
    assert rc == EXIT_OK, second.tail()
    assert re.search(
        r"Taking over the lease on output folder .*: it was not renewed while watched for 3 s", second.text
    )
    assert first.finish() == EXIT_USER_ERROR, first.tail()
    assert "lost the lease on output folder" in first.text and "Traceback" not in first.text
    assert manifest.verify(out, checksums=True)  # the new holder's outputs, untouched
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 8  # the second job's run (2 epochs), not the first one's 20


def test_an_attempt_of_the_same_job_takes_over_at_once(tiny_t5_dir, keywords_task_dir, tmp_path) -> None:
    out = tmp_path / "run"
    first = JobProcess(*job_args(keywords_task_dir, tiny_t5_dir, out, "--job-id", "job-7", "--epochs", "20"))
    first.wait_for(r"Holding the lease on output folder")
    first.send(signal.SIGSTOP)  # e.g. a pod on a node that stopped answering, while its replacement starts
    try:
        started = time.monotonic()
        job = JobProcess(*job_args(keywords_task_dir, tiny_t5_dir, out, "--job-id", "job-7"))
        job.wait_for(r"Taking over the lease on output folder .*: it is an earlier attempt of this job \(job-7\)")
        assert time.monotonic() - started < 60  # no watching period
    finally:
        first.send(signal.SIGKILL)
        first.finish()
    assert job.finish() == EXIT_OK, job.tail()
    assert manifest.verify(out, checksums=True)
