"""Write an output file so that the target path only ever holds a complete file.

The data goes to a temporary file ``.<name>.<8 random characters>.partial`` in the target's
folder (same file system, so the final rename is atomic); the rename happens only after
everything was written and flushed. Any exception, including KeyboardInterrupt, removes the
temporary file. A SIGKILL (or a crash of the machine) can leave the temporary file behind, but
never touches the target path. Such leftovers are removed by the next write to the same target:
a writer holds an exclusive ``flock`` on its temporary file while it writes, so a leftover is one
that nobody holds and that has not been modified for ``STALE_AFTER`` seconds (a writer that has
just created its file may not have locked it yet). Without ``fcntl`` (Windows) nothing is removed.

Errors of the file system (no space left, file too large, quota exceeded, no permission, no
such folder, a folder in the way) are raised as ``OSError`` naming the target path rather than
the temporary file, so that a one-line message says which output failed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import time
from collections.abc import Iterator
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so no cleanup of leftovers either
    fcntl = None

STALE_AFTER = 2.0  # seconds without a write before an unlocked temporary file counts as a leftover
# Errors that writing the output itself raises (anything else inside the block may come from
# reading the input, and keeps its own file name).
_WRITE_ERRORS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a binary file for writing that appears at ``path`` only if the block succeeds.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.bin"
    >>> with atomic_output(target) as f:
    ...     _ = f.write(b"complete")
    >>> target.read_bytes()
    b'complete'
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    remove_stale_partials(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=folder)
    except OSError as error:
        raise _naming_target(error, path) from error
    body_failed = False
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                if fcntl is not None:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
                try:
                    yield f
                except BaseException:
                    body_failed = True
                    raise
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except OSError as error:
            # Name the target for errors of the output, whether they came from the block's
            # writes or from closing, syncing and renaming here.
            if error.filename in (None, tmp) and (error.errno in _WRITE_ERRORS or not body_failed):
                raise _naming_target(error, path) from error
            raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_partials(path: str | os.PathLike[str]) -> None:
    """Remove the temporary files that writers of ``path`` killed mid-write left behind (see the
    module docstring); files that a live writer holds, or that changed recently, stay."""
    if fcntl is None:
        return
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    pattern = re.compile(re.escape(f".{os.path.basename(path)}.") + r"[a-z0-9_]{8}\.partial")
    try:
        names = [name for name in os.listdir(folder) if pattern.fullmatch(name)]
    except OSError:
        return  # creating the temporary file will report what is wrong with the folder
    for name in names:
        candidate = os.path.join(folder, name)
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to remove
            fd = os.open(candidate, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a writer holds it
                status = os.fstat(fd)
                if (
                    time.time() - status.st_mtime >= STALE_AFTER
                    and os.stat(candidate).st_ino == status.st_ino
                ):
                    os.unlink(candidate)
            finally:
                os.close(fd)


def _naming_target(error: OSError, path: str) -> OSError:
    """The same error (same errno and OSError subclass), naming the target path."""
    reason = error.strerror or str(error)
    if error.errno in _WRITE_ERRORS:
        reason = f"cannot write the output: {reason}"
    return OSError(error.errno, reason, path)


def _umask() -> int:
    # os.umask can only be read by setting it; restore it at once.
    mask = os.umask(0)
    os.umask(mask)
    return mask
