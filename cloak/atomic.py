"""Crash-safe output files: never a partial file at the target, never a stray temp file after a failure.

Every output (cloaked image, mask; export artefacts and reports can reuse it) is written to a temp
file with a unique name in the target's folder (so the final rename is atomic: same file system),
fsynced, then renamed over the target. Any failure removes the temp file and leaves the target as
it was; an OSError (disk full, EFBIG under ``ulimit -f``, permissions...) becomes ``OutputError``.
CPython ignores SIGXFSZ at start-up, so exceeding ``ulimit -f`` raises EFBIG here instead of
killing the process.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import OutputError


def check_output_path(path: str | Path) -> Path:
    """``path`` if a file can be written there; OutputError otherwise. Call it before any long work."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory")
    if not folder.is_dir():
        raise OutputError(f"cannot write {path}: {folder} {'is not a folder' if folder.exists() else 'does not exist'}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: the folder {folder} is not writable")
    return path


@contextlib.contextmanager
def atomic_output(path: str | Path, permissions: int = 0o666) -> Iterator[BinaryIO]:
    """A binary file object whose content becomes ``path`` only once completely written and fsynced.

    ``permissions`` apply before the umask, as for any new file (0o600 keeps a secret private).
    """
    path = Path(path)
    # A unique name: concurrent writers of the same target never share a temp file. Bounded so a
    # long target name cannot push it over the file-system's name limit.
    tmp = path.with_name(f".{path.name[:200]}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, permissions)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    _fsync_folder(path.parent)


def write_atomic(path: str | Path, data: bytes, permissions: int = 0o666) -> None:
    """Write ``data`` to ``path`` through ``atomic_output``."""
    with atomic_output(path, permissions) as file:
        file.write(data)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; best effort, as some file systems cannot fsync a folder."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
