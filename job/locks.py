"""Inter-process file locks: the one helper for "one process does it, the others wait and reuse it".

Processes on one node (and nodes sharing a file system) take turns on a lock file. A lock dies with its
process, so a crashed holder never blocks the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

BUILT_BY = ".built-by"


@contextmanager
def file_lock(path: Path, *, waiting: str | None = None) -> Iterator[None]:
    """Hold the lock file ``path`` (its folder is created); log ``waiting`` if another process holds it."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=2)
    except Timeout:
        if waiting:
            log.info("%s", waiting)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def build_once(target: Path, *, key: str, build: Callable[[], object]) -> bool:
    """Run ``build()`` (which fills the folder ``target``) unless a process already did with the same ``key``.

    With N processes per node starting together, one builds and the others wait for it, then reuse the result;
    a folder left by an earlier run with another key is rebuilt. Returns True if this process built it.
    """
    marker = target / BUILT_BY
    with file_lock(target / ".lock"):
        if marker.is_file() and marker.read_text(encoding="utf-8") == key:
            log.info("Reusing %s (built by another process of this job)", target)
            return False
        marker.unlink(missing_ok=True)
        build()
        marker.write_text(key, encoding="utf-8")
        return True
