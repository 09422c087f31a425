"""One writer per output: a lease on ``project_name`` and on ``output_uri``, renewed by a heartbeat.

Two jobs writing one output overwrite each other's checkpoints and model, and each then reports success over a
folder holding the other's work. So before anything is written, the main process takes a lease: a small JSON
record (:data:`~job.outputs.files.LEASE`) created only if absent and replaced only over the version it read
(:mod:`job.storage.conditional`: S3 ``If-None-Match``/``If-Match``, GCS generations, a file lock locally). It
names the holder (job id, host, pid, start time) and is renewed every ``lease_seconds / 4``.

Who may take a held lease over (the rule, docs/reliability.md "One writer per output"):

1. **the same job** — the lease's ``job_id`` equals ours (``job_id`` param, else the platform's: SageMaker
   ``TRAINING_JOB_NAME``, Vertex ``CLOUD_ML_JOB_ID``): a retry or a rescheduled pod of one job, at once;
2. **a dead holder on this machine** — same host name and PID namespace, and its pid is gone (or is our own:
   a restarted container): at once;
3. **a silent holder** — its heartbeat is older than twice its ``lease_seconds`` by our clock, or it is not
   renewed while we watch it for ``lease_seconds`` (clock-independent): a preempted pod rescheduled on another
   host with no job id waits at most that long.

Anyone else is refused with one line naming the holder (exit 2). The job's other ranks never take a lease:
global rank 0 holds it for the whole job. A lease is released when the run ends, except when it stopped on
SIGTERM (exit 143): the retry that resumes from its checkpoint takes it over by rule 1, 2 or 3, and another
job cannot slip in between. A holder whose lease was taken over stops at the next step with
:class:`LeaseLost` instead of writing over the new holder.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from job.errors import Preempted, SignalStop, UserError
from job.outputs.files import LEASE
from job.storage.conditional import VersionedObject
from job.storage.uris import is_remote

log = logging.getLogger(__name__)

_live: set[str] = set()  # owners held by this process (a thread's run is never "a dead holder")


class OutputInUse(UserError):
    """Another job holds the lease on this output (exit code 2)."""


class LeaseLost(UserError):
    """Another job took this job's lease over; stop before writing over its outputs (exit code 2)."""


@dataclass(frozen=True)
class Claim:
    """Who we are, as the lease records it."""

    job_id: str | None
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    pid_namespace: str = field(default_factory=lambda: _pid_namespace())
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def record(self, *, lease_seconds: float, renewals: int = 0) -> bytes:
        fields = {k: getattr(self, k) for k in ("job_id", "host", "pid", "pid_namespace", "owner", "started")}
        data = {**fields, "lease_seconds": lease_seconds, "heartbeat": time.time(), "renewals": renewals}
        return json.dumps(data, indent=2).encode()


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def describe(record: dict[str, Any]) -> str:
    """'host h, pid 12, started 2026-…Z (job id J), renewed 3 s ago' for messages."""
    job = f" (job id {record['job_id']})" if record.get("job_id") else ""
    age = time.time() - float(record.get("heartbeat") or 0)
    where = f"host {record.get('host')}, pid {record.get('pid')}, started {record.get('started')}"
    return f"{where}{job}, renewed {age:.0f} s ago"


def takeover_reason(record: dict[str, Any], claim: Claim) -> str | None:
    """Why we may take ``record``'s lease over at once (rules 1-3 without watching), or None."""
    if claim.job_id and record.get("job_id") == claim.job_id:
        return f"it is an earlier attempt of this job ({claim.job_id})"
    if record.get("owner") in _live:
        return None
    same_machine = record.get("host") == claim.host and record.get("pid_namespace") == claim.pid_namespace
    if same_machine and (record.get("pid") == claim.pid or not _alive(int(record.get("pid") or 0))):
        return "its process is gone"
    ttl = float(record.get("lease_seconds") or 0)
    age = time.time() - float(record.get("heartbeat") or 0)
    if ttl and age > 2 * ttl:
        return f"it has not been renewed for {age:.0f} s"
    return None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    """One held lease and its heartbeat thread."""

    def __init__(self, obj: VersionedObject, claim: Claim, *, lease_seconds: float, what: str) -> None:
        self.obj, self.claim, self.lease_seconds, self.what = obj, claim, lease_seconds, what
        self.version: str | None = None
        self.renewals = 0
        self.lost_to: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- taking it -------------------------------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the lease (waiting at most one lease period to see whether a holder is alive) or raise OutputInUse."""
        watched: tuple[str, float] | None = None
        while True:
            found = self.obj.read()
            if found is None:
                if self._write(None):
                    return self._held(None)
                continue
            record, version = _parse(found[0]), found[1]
            reason = takeover_reason(record, self.claim)
            if reason is None:
                if watched is not None and watched[0] != version:
                    raise OutputInUse(self._in_use(record))
                if watched is None:
                    watched = (version, time.monotonic())
                    log.info("%s is held by %s; watching whether it is renewed", self.what, describe(record))
                ttl = float(record.get("lease_seconds") or self.lease_seconds)
                if time.monotonic() - watched[1] < ttl:
                    time.sleep(min(1.0, ttl / 8))
                    continue
                reason = f"it was not renewed while watched for {ttl:.0f} s"
            if self._write(version):
                return self._held(record, reason)
            watched = None  # it changed under us: look again

    def _in_use(self, record: dict[str, Any]) -> str:
        return (
            f"{self.what} is in use by another job: {describe(record)}; two jobs writing one output overwrite each "
            "other's checkpoints and model. Use another project_name/output_uri, or wait for that job to end (a "
            f"lease not renewed for lease_seconds is taken over; a retry of the same job_id takes it at once)"
        )

    def _write(self, version: str | None) -> bool:
        new = self.obj.write(
            self.claim.record(lease_seconds=self.lease_seconds, renewals=self.renewals), version=version
        )
        if new is not None:
            self.version = new
        return new is not None

    def _held(self, previous: dict[str, Any] | None, reason: str | None = None) -> None:
        if previous is not None:
            log.warning("Taking over the lease on %s from %s: %s", self.what, describe(previous), reason)
        _live.add(self.claim.owner)
        every = self.lease_seconds / 4
        log.info("Holding the lease on %s (one writer per output; renewed every %.0f s)", self.what, every)
        self._thread = threading.Thread(target=self._heartbeat, args=(every,), name="lease-heartbeat", daemon=True)
        self._thread.start()

    # --- keeping it ------------------------------------------------------------------------------------------
    def _heartbeat(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.renewals += 1
                if not self._write(self.version):
                    found = self.obj.read()
                    self.lost_to = _parse(found[0]) if found else {"host": "(nobody: it was deleted)"}
                    log.warning("Lost the lease on %s to %s", self.what, describe(self.lost_to))
                    return
            except Exception as exc:  # a storage hiccup: try again next time (it expires only after lease_seconds)
                log.warning("Could not renew the lease on %s: %s", self.what, exc)

    def check(self, *, verify: bool = False) -> None:
        """Raise LeaseLost if another job took this lease over; ``verify`` reads the record now (before a write
        that matters) instead of trusting the heartbeat's last look."""
        if verify and self.lost_to is None:
            found = self.obj.read()
            record = _parse(found[0]) if found else {"host": "(nobody: it was deleted)"}
            if record.get("owner") != self.claim.owner:
                self.lost_to = record
        if self.lost_to is not None:
            raise LeaseLost(
                f"lost the lease on {self.what} to another job ({describe(self.lost_to)}) while this one was not "
                "renewing it; stopping without marking anything complete"
            )

    def stop(self, *, release: bool) -> None:
        """Stop renewing; with ``release`` also delete the lease (if it is still ours)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)  # a renewal stuck on a stalled network must not eat the grace period
        _live.discard(self.claim.owner)
        if release and self.lost_to is None and self.version is not None:
            try:
                self.obj.delete(version=self.version)
            except Exception as exc:  # it expires by itself after lease_seconds
                log.warning("Could not release the lease on %s: %s", self.what, exc)


def _parse(data: bytes) -> dict[str, Any]:
    try:
        record = json.loads(data)
    except ValueError:
        record = None
    return record if isinstance(record, dict) else {"host": "(unreadable lease record)"}


class Held:
    """The leases of one run (none on non-main ranks)."""

    def __init__(self, leases: list[Lease]) -> None:
        self.leases = leases

    def check(self, *, verify: bool = False) -> None:
        for lease in self.leases:
            lease.check(verify=verify)


@contextmanager
def hold_outputs(
    *, output_dir: str, output_uri: str | None, job_id: str | None, lease_seconds: float, main_process: bool
) -> Iterator[Held]:
    """Hold the leases on ``output_dir`` and ``output_uri`` for the block (main process only).

    Released at the end, except after a stop on SIGTERM/SIGINT: the job's retry takes it over.
    """
    if not main_process:
        yield Held([])
        return
    claim = Claim(job_id=job_id)
    targets = [(output_dir, f"output folder {output_dir}")]
    if output_uri and (is_remote(output_uri) or os.path.realpath(output_uri) != os.path.realpath(output_dir)):
        targets.append((output_uri, f"output_uri {output_uri}"))
    leases: list[Lease] = []
    try:
        for where, what in targets:
            lease = Lease(VersionedObject(where, LEASE), claim, lease_seconds=lease_seconds, what=what)
            lease.acquire()
            leases.append(lease)
    except BaseException:
        for lease in leases:
            lease.stop(release=True)
        raise
    release = True
    try:
        yield Held(leases)
    except (Preempted, SignalStop):
        release = False  # the retry resumes from the checkpoint and takes the lease over
        raise
    finally:
        for lease in leases:
            lease.stop(release=release)
