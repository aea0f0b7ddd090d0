"""Write an output file so that the target path only ever holds a complete file.

The data goes to a temporary file in the target's folder (same file system, so the final rename
is atomic); the rename happens only after everything was written and flushed. Any exception,
including KeyboardInterrupt, removes the temporary file. A SIGKILL may leave the temporary file
behind, but never touches the target path.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import BinaryIO, Iterator


@contextlib.contextmanager
def atomic_output(path: "str | os.PathLike[str]") -> Iterator[BinaryIO]:
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
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".partial", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    # os.umask can only be read by setting it; restore it at once.
    mask = os.umask(0)
    os.umask(mask)
    return mask
