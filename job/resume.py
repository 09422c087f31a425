"""Where does this run start? Skip a finished job, resume from the latest complete checkpoint, or start at 0.

Decided once, before any data or model is loaded (:func:`plan`):

* **finished** — ``project_name`` (or ``output_uri``) already holds complete outputs: a final ``manifest.json``
  whose files all match their checksums. The job returns those metrics at once (exit 0), so a retried pod does
  not redo finished work. ``overwrite=true`` trains again from step 0 instead (its old checkpoints are removed,
  so they cannot be resumed by mistake).
* **resume** — ``resume=auto`` (default) takes the checkpoint with the highest step among the local checkpoint
  folder, the platform's checkpoint folder (SageMaker ``/opt/ml/checkpoints``, Vertex ``AIP_CHECKPOINT_DIR``)
  and ``output_uri``/checkpoints. Only *complete* checkpoints count: ``manifest.json`` present and every file
  it lists present with its size and SHA-256. Partial or corrupt ones (a job killed while writing, a damaged
  disk) are skipped with a warning and, in our own checkpoint folder, removed so that a later save of the same
  step cannot mix with their leftovers. ``resume=<path or URI>`` names a checkpoint (or a folder of them);
  ``resume=never`` always starts at step 0.

The Trainer then restores model, optimizer, scheduler, RNG state and data position from the checkpoint and
skips the batches it had already seen, so a resumed run ends at the same step as an uninterrupted one.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from job import checkpoint_trust, manifest, storage
from job.errors import UserError
from job.jsonfiles import read_object_or_empty
from job.locks import file_lock
from job.outputs.files import CHECKPOINT, CHECKPOINTS, METRICS, PARAMS, TRAINER_STATE, checkpoint_step
from job.params import Seq2SeqParams

log = logging.getLogger(__name__)

IGNORED_PARAM_CHANGES = ("resume", "overwrite")  # changing these does not make a different run


@dataclass(frozen=True)
class Plan:
    """What :func:`job.pipeline.train` does: return ``finished_metrics`` as they are, or train from ``checkpoint``."""

    finished_metrics: dict[str, Any] | None = None  # the metrics.json of a finished run: nothing to train
    checkpoint: str | None = None

    @property
    def step(self) -> int:
        """The global step of ``checkpoint`` (0 when starting fresh)."""
        return checkpoint_folder_step(self.checkpoint) if self.checkpoint else 0


@dataclass(frozen=True)
class Scope:
    """Where this process looks for checkpoints, and whether it may clean up (rank 0 only)."""

    params: Seq2SeqParams
    main_process: bool = True
    kept_dirs: tuple[Path, ...] = ()  # the platform's checkpoint folders (RunContext.kept_checkpoint_dirs)


@dataclass(frozen=True)
class _Candidate:
    step: int
    location: str  # a local folder, or a remote URI
    source: str  # "local" | "platform" | "output_uri" | "resume"

    @property
    def remote(self) -> bool:
        return _storage_is_remote(self.location)


def plan(params: Seq2SeqParams, *, main_process: bool = True, kept_dirs: tuple[Path, ...] = ()) -> Plan:
    """Decide between skipping a finished job, resuming from a checkpoint and starting from step 0."""
    done = finished_outputs(params, publish_missing=main_process)
    if done is not None and not params.overwrite:
        return Plan(finished_metrics=done)
    if done is not None:  # overwrite: the old run's checkpoints must not be resumed by this one or its retries
        log.warning(
            "overwrite=true: training %s again from step 0; removing its previous checkpoints", params.output_dir
        )
        if main_process:
            _remove_checkpoints(params.resolved_checkpoint_dir)
            if params.output_uri and _storage_is_remote(params.output_uri):
                _remove_remote_checkpoints(params.output_uri)
            manifest.clear_manifest(params.output_dir)  # after the checkpoints: see _remove_checkpoints
        if params.resume in ("auto", "never"):
            return Plan()
    return Plan(checkpoint=find_checkpoint(Scope(params, main_process, tuple(kept_dirs))))


def checkpoint_folder_step(folder: str) -> int:
    """The global step a checkpoint folder was saved at (trainer_state.json, else its checkpoint-N name)."""
    step = read_object_or_empty(Path(folder) / TRAINER_STATE).get("global_step")
    if isinstance(step, int) and not isinstance(step, bool):
        return step
    return checkpoint_step(Path(folder).name) or 0


def previous_evaluations(checkpoint: str | None) -> list[dict[str, Any]]:
    """The evaluations a resumed run already did (from the checkpoint's log history), as metrics.json lists them."""
    if not checkpoint:
        return []
    history = read_object_or_empty(Path(checkpoint) / TRAINER_STATE).get("log_history")
    if not isinstance(history, list):
        return []
    evaluations = []
    for entry in history:
        scores = {k: v for k, v in entry.items() if k.startswith("eval_")} if isinstance(entry, dict) else {}
        if scores:
            evaluations.append({"step": entry.get("step"), "epoch": entry.get("epoch"), **scores})
    return evaluations


# ---------------------------------------------------------------------------------------------- finished run
def finished_outputs(params: Seq2SeqParams, *, publish_missing: bool | None = None) -> dict[str, Any] | None:
    """The metrics of a finished run in ``project_name`` (final manifest verified with checksums), else None.

    Complete locally but not at ``output_uri`` (the final upload was cut off, e.g. by SIGTERM): with
    ``publish_missing`` the folder is published now (rank 0, under the output lease); False: finished anyway
    (another rank publishes); None (the CLI's quick look before the lease): not finished yet.
    """
    root = params.output_dir
    found = manifest.read_manifest(root)
    if found is None or found.get("kind") != "model":
        return _finished_remote(params)  # a fresh machine: the local folder is gone, output_uri may be complete
    if not manifest.verify(root, checksums=True):
        log.warning("%s has a manifest.json that does not match its files (changed or damaged): training again", root)
        return None
    if params.output_uri and storage.is_remote(params.output_uri) and _finished_remote(params, quiet=True) is None:
        if publish_missing is None:
            return None
        if publish_missing:
            _publish_final(params)
    metrics = read_object_or_empty(root / METRICS)
    if not params.overwrite:
        log.info(
            "%s already holds complete outputs (manifest verified): nothing to train; pass --overwrite to train again",
            root,
        )
        _warn_changed_params(params, read_object_or_empty(root / PARAMS))
    return metrics


def _warn_changed_params(params: Seq2SeqParams, saved: dict[str, Any]) -> None:
    """A rerun with different parameters is probably meant to train: say what differs and how to do it."""
    current = params.redacted_dict()
    changed = [
        f"{key}: {saved.get(key)!r} → {value!r}"
        for key, value in current.items()
        if key not in IGNORED_PARAM_CHANGES and key in saved and saved[key] != value
    ]
    if changed:
        log.warning(
            "The finished run used other parameters (%s); pass --overwrite to train with the new ones",
            "; ".join(changed),
        )


# ------------------------------------------------------------------------------------------------ checkpoints
def find_checkpoint(scope: Scope) -> str | None:
    """The local folder of the checkpoint to resume from (downloaded first if remote), or None for step 0."""
    params = scope.params
    if params.resume == "never":
        log.info("resume=never: starting from step 0")
        return None
    candidates = _auto_candidates(scope) if params.resume == "auto" else _explicit_candidates(params.resume)
    for candidate in sorted(candidates, key=lambda c: c.step, reverse=True):
        folder = _materialise(candidate, scope)
        if folder is not None:
            log.info("Resuming from %s (step %d, %s)", candidate.location, candidate.step, candidate.source)
            return str(folder)
    if params.resume != "auto":
        raise UserError(
            f"resume={params.resume}: no complete checkpoint there (a checkpoint-N folder with a "
            "manifest.json that matches its files); point at one, or use resume=auto or never"
        )
    log.info("No complete checkpoint found: starting from step 0")
    return None


def _auto_candidates(scope: Scope) -> list[_Candidate]:
    params = scope.params
    own = params.resolved_checkpoint_dir
    found = _local_candidates(own, source="local", clean=scope.main_process)
    for folder in scope.kept_dirs:
        if folder.resolve() != own.resolve():
            found += _local_candidates(folder, source="platform", clean=False)
    if params.output_uri:
        found += _remote_candidates(f"{params.output_uri.rstrip('/')}/{CHECKPOINTS}", source="output_uri")
    return found


def _explicit_candidates(spec: str) -> list[_Candidate]:
    """resume=<checkpoint folder or URI>, or a folder that holds checkpoint-N folders."""
    if _storage_is_remote(spec):
        name = spec.rstrip("/").rsplit("/", 1)[-1]
        match = CHECKPOINT.match(name)
        if match:
            return [_Candidate(int(match.group(1)), spec.rstrip("/"), "resume")]
        return _remote_candidates(spec.rstrip("/"), source="resume")
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise UserError(
            f"resume={spec}: no such folder; give a checkpoint-N folder (or a folder of them), an "
            "s3:// URI, auto or never"
        )
    if manifest.read_manifest(path) is not None or (path / TRAINER_STATE).is_file():
        return [_Candidate(checkpoint_step(path.name) or 0, str(path), "resume")]
    return _local_candidates(path, source="resume", clean=False)


def _local_candidates(folder: Path, *, source: str, clean: bool) -> list[_Candidate]:
    """Complete-looking (manifest + sizes) checkpoint-N folders in ``folder``; partial ones warned about."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        match = CHECKPOINT.match(path.name)
        if not match or not path.is_dir():
            continue
        problem = _problem(path, checksums=False)
        if problem is None:
            found.append(_Candidate(int(match.group(1)), str(path), source))
            continue
        _skip(path, problem, remove=clean)
    return found


def _problem(folder: Path, *, checksums: bool) -> str | None:
    """Why ``folder`` is not a complete checkpoint, or None."""
    if manifest.read_manifest(folder) is None:
        return "no manifest.json (it was being written when the job stopped)"
    if not manifest.verify(folder, checksums=checksums):
        return "its files do not match manifest.json (missing, truncated or changed)"
    return None


def _usable(folder: Path, *, remove: bool) -> bool:
    """Complete with checksums, and trusted: no pickle that would run code, no state that would crash the resume
    (job.checkpoint_trust). Skipped with a warning otherwise."""
    if problem := _problem(folder, checksums=True):
        _skip(folder, problem, remove=remove)
        return False
    if untrusted := checkpoint_trust.problem(folder):
        log.warning("Skipping untrusted checkpoint %s: %s; using an older one", folder, untrusted)
        if remove:
            shutil.rmtree(folder, ignore_errors=True)
        return False
    return True


def _skip(folder: Path, problem: str, *, remove: bool) -> None:
    if remove:
        log.warning("Skipping incomplete checkpoint %s: %s; removing it", folder, problem)
        shutil.rmtree(folder, ignore_errors=True)
    else:
        log.warning("Skipping incomplete checkpoint %s: %s", folder, problem)


def _materialise(candidate: _Candidate, scope: Scope) -> Path | None:
    """A local, checksum-verified copy of ``candidate``, or None (warned) when it is not complete after all."""
    if candidate.remote:
        return _download(candidate, scope)
    folder = Path(candidate.location)
    return folder if _usable(folder, remove=candidate.source == "local" and scope.main_process) else None


def _remove_checkpoints(folder: Path) -> None:
    """Delete checkpoint-N folders (the final manifest is cleared after this, so another rank that already sees
    no final manifest also sees no old checkpoints)."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if CHECKPOINT.match(path.name) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------------------- remote (storage)
def _storage_is_remote(location: str) -> bool:
    return storage.is_remote(location)


def _publish_final(params: Seq2SeqParams) -> None:
    log.warning(
        "%s is complete but %s has no final manifest (its upload was cut off): publishing it now",
        params.output_dir,
        params.output_uri,
    )
    storage.Publisher(
        params.output_uri,
        local_root=params.output_dir,
        checkpoints_dir=params.resolved_checkpoint_dir,
        save_total_limit=params.save_total_limit,
    ).publish_final()


def _finished_remote(params: Seq2SeqParams, *, quiet: bool = False) -> dict[str, Any] | None:
    """The metrics at ``output_uri`` when its final folder is complete (its manifest exists), else None.

    The storage layer uploads a folder's manifest only after checking every file it lists, so its presence is
    the completeness mark; the files themselves are not downloaded here.
    """
    uri = params.output_uri
    if not uri or not storage.is_remote(uri):
        return None
    cache = storage.cache_root(params.cache_dir) / "finished"
    try:
        found = read_object_or_empty(
            storage.fetch(f"{uri.rstrip('/')}/{manifest.MANIFEST}", cache_dir=cache, what="output_uri")
        )
    except storage.ObjectNotFound:  # no final manifest: not finished (a missing bucket or denied access raises)
        return None
    if found.get("complete") is not True or found.get("kind") != "model":
        return None
    try:
        metrics = read_object_or_empty(
            storage.fetch(f"{uri.rstrip('/')}/{METRICS}", cache_dir=cache, what="output_uri")
        )
    except UserError:
        metrics = {}
    if not params.overwrite and not quiet:
        log.info(
            "%s already holds complete outputs (final manifest present): nothing to train; pass --overwrite "
            "to train again",
            uri,
        )
    return metrics


def _remove_remote_checkpoints(uri: str) -> None:
    """overwrite: delete the previous run's checkpoints under ``uri``/checkpoints (manifests first)."""
    storage.delete_folder(f"{uri.rstrip('/')}/{CHECKPOINTS}")


def _remote_candidates(uri: str, *, source: str) -> list[_Candidate]:
    """Complete checkpoints under ``uri`` (manifest-marked; the storage layer lists only those)."""
    found = []
    for item in storage.list_complete_checkpoints(uri):
        step = checkpoint_step(item.rstrip("/").rsplit("/", 1)[-1])
        if step is not None:
            found.append(_Candidate(step, item.rstrip("/"), source))
    return found


def _download(candidate: _Candidate, scope: Scope) -> Path | None:
    """Download a remote checkpoint into the local checkpoint folder and verify it with checksums."""
    name = candidate.location.rsplit("/", 1)[-1]
    folder = scope.params.resolved_checkpoint_dir
    target = folder / name
    # Processes of one node start together: the first downloads, the others find the verified copy.
    with file_lock(folder / f".{name}.lock"):
        if _problem(target, checksums=True) is None:
            return target if _usable(target, remove=scope.main_process) else None
        if target.exists():
            shutil.rmtree(target)
        log.info("Downloading %s to %s", candidate.location, target)
        try:
            folder = storage.download_folder(candidate.location, target)
        except (storage.StorageUserError, storage.ChecksumMismatch) as exc:
            # Damaged remote copy (listed files missing or of the wrong size, or a checksum that differs): skip
            # it. Any other transfer failure (a StorageError) is raised: exit 1, and the platform's retry resumes
            # from it later instead of this run quietly falling back to an older checkpoint.
            log.warning("Skipping incomplete checkpoint %s: %s", candidate.location, exc)
            shutil.rmtree(target, ignore_errors=True)
            return None
        problem = _problem(Path(folder), checksums=True)
    if problem is not None:
        _skip(Path(folder), f"downloaded from {candidate.location}, {problem}", remove=scope.main_process)
        return None
    return Path(folder) if _usable(Path(folder), remove=scope.main_process) else None
