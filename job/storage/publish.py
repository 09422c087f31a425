"""Publishing the output folder to ``output_uri``: checkpoints in the background, the final folder at the end."""

from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from job import manifest
from job.jsonfiles import read_object_or_empty
from job.outputs.files import CHECKPOINTS, TRAINER_STATE
from job.storage.errors import StorageError
from job.storage.fetch import CHECKPOINT, _parallel
from job.storage.stores import MB, _Location
from job.storage.uris import is_remote

log = logging.getLogger("job.storage")

STAGING = ".uploading"  # under checkpoints_dir: hard-linked snapshots of checkpoints waiting for upload


class Publisher:
    """Mirrors the local output folder to ``output_uri`` (S3, GCS or another local folder); rank 0 only.

    Checkpoints and metrics go up in one background thread, in order, so training never waits on the network;
    :meth:`publish_final` (or :meth:`wait`) blocks until they are done. With ``output_uri=None``, or the local
    output folder itself, every method does nothing.
    """

    def __init__(
        self,
        output_uri: str | None,
        *,
        local_root: Path,
        checkpoints_dir: Path,
        save_total_limit: int | None,
        main_process: bool = True,
    ) -> None:
        self.local_root, self.checkpoints_dir, self.save_total_limit = local_root, checkpoints_dir, save_total_limit
        same = output_uri is not None and not is_remote(output_uri) and _same_path(output_uri, local_root)
        self.output_uri = None if output_uri is None or same else output_uri.rstrip("/")
        self.enabled = self.output_uri is not None and main_process
        self._location: _Location | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[tuple[str, Future[None]]] = []

    @property
    def location(self) -> _Location:
        if self._location is None:
            if self.output_uri is None:
                raise RuntimeError("Publisher without output_uri has no location")
            self._location = _Location(self.output_uri, what="output_uri")
        return self._location

    # --- calls from job.outputs.folder.Outputs ----------------------------------------------------------------------
    def begin(self) -> None:
        """Check the destination before training (bucket, credentials) and unmark its final folder."""
        if not self.enabled:
            return
        shutil.rmtree(self.checkpoints_dir / STAGING, ignore_errors=True)  # snapshots left by a killed run
        loc = self.location
        with loc.errors():
            loc.store.list(loc.key(manifest.MANIFEST))  # NoSuchBucket / AccessDenied / bad keys surface now
            loc.store.delete([loc.key(manifest.MANIFEST)])  # the remote final folder is incomplete until the end
        log.info("Publishing outputs to %s", self.output_uri)

    def publish_checkpoint(self, checkpoint_dir: Path) -> None:
        """Upload a checkpoint whose local manifest is written: files, then manifest, then remote rotation."""
        if not self.enabled:
            return
        snapshot = self._snapshot(checkpoint_dir)  # the Trainer may delete the original before the upload ends
        self._submit(f"checkpoint {checkpoint_dir.name}", self._upload_checkpoint, snapshot)

    def publish_file(self, local_path: Path) -> None:
        """Upload one file (e.g. metrics.json after an evaluation) as it is now, in the background."""
        if not self.enabled:
            return
        data = local_path.read_bytes()
        rel = _relative(local_path, self.local_root)
        self._submit(rel, self._write, data, rel)

    def publish_final(self) -> None:
        """Upload the finished output folder (files its manifest lists, manifest last); blocks.

        Background uploads are waited for first. A failed checkpoint/metrics upload is logged, not raised: once
        the final folder is complete remotely, those are superseded. A failure of the final upload raises.
        """
        if not self.enabled:
            return
        failures = self._drain()
        if failures:
            log.warning(
                "%d background upload(s) failed earlier (%s); publishing the final folder anyway",
                len(failures),
                "; ".join(failures),
            )
        started = time.monotonic()
        count, size = self._upload_folder(self.local_root, "")  # what the manifest lists: no checkpoints/, logs/
        log.info(
            "Published the final outputs to %s (%d files, %.1f MB, %.1f s)",
            self.output_uri,
            count,
            size / MB,
            time.monotonic() - started,
        )

    def wait(self) -> None:
        """Block until every background upload has finished; raise StorageError if one failed."""
        failures = self._drain()
        if failures:
            raise StorageError(f"{len(failures)} upload(s) to {self.output_uri} failed: {'; '.join(failures)}")

    # --- work ------------------------------------------------------------------------------------------------
    def _submit(self, label: str, fn: Any, *args: Any) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="publish")
        self._pending.append((label, self._executor.submit(fn, *args)))

    def _drain(self) -> list[str]:
        """Wait for every background upload; an upload leaves the queue only once it is done, so a wait cut short
        (a SIGTERM, job.stopping) can be taken up again (the stopping job waits for its checkpoint's upload)."""
        failures = []
        while self._pending:
            label, future = self._pending[0]
            try:
                future.result()
            except Exception as exc:
                failures.append(f"{label}: {exc}")
            self._pending.pop(0)
        return failures

    def _write(self, data: bytes, rel: str) -> None:
        loc = self.location
        try:
            with loc.errors(loc.sub(rel)):
                loc.store.write(data, loc.key(rel))
        except Exception as exc:
            log.error("Upload of %s failed: %s", loc.sub(rel), exc)
            raise

    def _snapshot(self, checkpoint_dir: Path) -> Path:
        staging = self.checkpoints_dir / STAGING / checkpoint_dir.name
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copytree(checkpoint_dir, staging, copy_function=os.link)  # hard links: instant, no extra space
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(checkpoint_dir, staging)  # another file system: copy
        return staging

    def _upload_checkpoint(self, snapshot: Path) -> None:
        rel = f"{CHECKPOINTS}/{snapshot.name}"
        started = time.monotonic()
        try:
            count, size = self._upload_folder(snapshot, rel)
            log.info(
                "Uploaded %s to %s (%d files, %.1f MB, %.1f s)",
                snapshot.name,
                self.location.sub(rel),
                count,
                size / MB,
                time.monotonic() - started,
            )
            self._rotate(newest=snapshot.name, best=_best_checkpoint(snapshot))
        except Exception as exc:
            log.error("Upload of %s to %s failed: %s", snapshot.name, self.location.sub(rel), exc)
            raise
        finally:
            shutil.rmtree(snapshot, ignore_errors=True)

    def _upload_folder(self, folder: Path, rel: str) -> tuple[int, int]:
        """Files listed in the folder's manifest, checked remotely by size, then the manifest: complete."""
        loc = self.location
        listed = manifest.read_manifest(folder)
        if listed is None:
            raise RuntimeError(f"{folder} has no manifest.json; write it before publishing the folder")
        files = list(listed["files"])
        prefix = f"{rel}/" if rel else ""
        with loc.errors(loc.sub(rel)):
            loc.store.delete([loc.key(prefix + manifest.MANIFEST)])  # rewriting: unmark first
        _parallel(lambda f: self._put(folder / f, prefix + f), files)
        remote = loc.list(rel)
        for name in files:
            obj = remote.get(prefix + name)
            if obj is None or obj.size != listed["files"][name]["size"]:
                raise StorageError(
                    f"output_uri {loc.sub(prefix + name)}: the uploaded object is missing or has the wrong size; retry"
                )
        self._put(folder / manifest.MANIFEST, prefix + manifest.MANIFEST)
        return len(files), sum(listed["files"][f]["size"] for f in files)

    def _put(self, src: Path, rel: str) -> None:
        loc = self.location
        with loc.errors(loc.sub(rel)):
            loc.store.upload(src, loc.key(rel))

    def _rotate(self, *, newest: str, best: str | None) -> None:
        """Delete remote checkpoints beyond save_total_limit, oldest first; like the Trainer, keep the best one."""
        if not self.save_total_limit:
            return
        loc = self.location
        folders: dict[str, set[str]] = {}
        complete: list[tuple[int, str]] = []
        for rel in loc.list(CHECKPOINTS):
            match = CHECKPOINT.match(rel)
            if match:
                folders.setdefault(match.group(1), set()).add(rel)
                if rel == f"{CHECKPOINTS}/{match.group(1)}/{manifest.MANIFEST}":
                    complete.append((int(match.group(2)), match.group(1)))
        newest_n = int(newest.rsplit("-", 1)[1])
        keep = {name for _, name in sorted(complete)[-self.save_total_limit :]} | {newest, best}
        # Older folders not kept go, complete or not (an upload cut off earlier leaves a folder without manifest).
        doomed = [name for name in folders if name not in keep and int(name.rsplit("-", 1)[1]) < newest_n]
        for name in sorted(doomed, key=lambda n: int(n.rsplit("-", 1)[1])):
            keys = sorted(folders[name], key=lambda k: not k.endswith(manifest.MANIFEST))  # manifest first
            with loc.errors(loc.sub(f"{CHECKPOINTS}/{name}")):
                loc.store.delete([loc.key(keys[0])])
                loc.store.delete([loc.key(k) for k in keys[1:]])
            log.info("Deleted remote %s (save_total_limit=%d)", loc.sub(f"{CHECKPOINTS}/{name}"), self.save_total_limit)


def _best_checkpoint(checkpoint: Path) -> str | None:
    """The folder name of the best checkpoint so far, as the Trainer records it (load_best_model_at_end)."""
    best = read_object_or_empty(checkpoint / TRAINER_STATE).get("best_model_checkpoint")
    return Path(best).name if isinstance(best, str) and best else None


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


def _same_path(a: str | Path, b: str | Path) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
