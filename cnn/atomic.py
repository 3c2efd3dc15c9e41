"""Writing files so that a reader never sees half of one, and one writer per folder.

Every file the package writes (networks, checkpoints, tables, figures, run
records) goes through :func:`atomic_write`: the data is written to a new,
uniquely named temporary file in the target's own folder (``O_EXCL``: it never
follows a planted symlink nor reuses another writer's file), flushed and
``fsync``-ed, then renamed over the target (``os.replace``, atomic on POSIX).
An error or an interruption leaves the old file (or none), never a partial one,
and removes the temporary file.

:func:`folder_lock` takes an advisory lock (``fcntl.flock``) on a folder for the
life of a run, so a second run on the same output folder is refused at once
instead of mixing its files with the first one's. The lock is released by the
kernel when the process ends, however it ends.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

LOCK_NAME = ".cnn.lock"


class FolderBusyError(RuntimeError):
    """Another process holds the lock of the output folder."""


def _fsync_dir(folder):
    """Make a rename in ``folder`` durable (best effort: not every OS allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file to write; on success it replaces ``path`` atomically.

    Parameters
    ----------
    path : str or Path
        The final file. Its folder must exist.
    mode : {"wb", "w"}
        Binary or text (UTF-8) writing.

    Yields
    ------
    file object
        Write the whole content into it. When the block ends without an
        exception, the file is flushed, ``fsync``-ed and renamed to ``path``;
        on an exception (Ctrl-C included) it is removed and ``path`` is left
        as it was.

    Examples
    --------
    >>> with atomic_write("table.md", "w") as f:   # doctest: +SKIP
    ...     f.write(text)
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    # mkstemp opens with O_CREAT | O_EXCL (and O_NOFOLLOW semantics: it never
    # opens an existing name), mode 0600, in the target's folder so that the
    # rename stays on one file system.
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with (
            os.fdopen(fd, "wb")
            if mode == "wb"
            else os.fdopen(fd, "w", encoding="utf-8", newline="")
        ) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _chmod_like_new_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _chmod_like_new_file(tmp):
    """Give the file the permissions a plain ``open(path, "w")`` would (0666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    with contextlib.suppress(OSError):
        os.chmod(tmp, 0o666 & ~umask)


def write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


@contextlib.contextmanager
def folder_lock(folder, what="run"):
    """Hold an exclusive advisory lock on ``folder`` for the block's duration.

    Parameters
    ----------
    folder : str or Path
        An existing folder. The lock file ``.cnn.lock`` inside it holds the
        owner's process id (informational only; the lock itself is the
        ``flock``, which the kernel drops when the process dies).
    what : str
        Used in the error message (``"train run"``, ``"study"``).

    Raises
    ------
    FolderBusyError
        Another process holds the lock: raised at once, never waiting.
    """
    import fcntl

    folder = Path(folder)
    lock_path = folder / LOCK_NAME
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(lock_path, flags, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            try:
                owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            except OSError:
                owner = ""
            pid = f" (process {owner})" if owner.isdigit() else ""
            raise FolderBusyError(
                f"{folder} is in use by another {what}{pid}; wait for it to finish "
                "or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield lock_path
    finally:
        os.close(fd)  # closing the descriptor releases the flock
