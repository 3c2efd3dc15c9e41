"""Opening files that may be hostile: regular files only, and a size limit before allocating.

Every reader of a network or checkpoint file (``cnn.matlab``, ``cnn.checkpoint``)
opens it with :func:`open_regular` (a folder, FIFO or device is refused at once,
never read, so a FIFO cannot hang a reader) and checks the sizes that the file
*declares* (array shapes in headers) against :func:`size_limit` before anything
is allocated. :func:`describe_file` names what a file that is not a network
looks like (text, empty, a zip archive, ...) for one-line error messages.

Limits (documented constants)
-----------------------------
``LIMIT_FLOOR`` (64 MiB) and ``LIMIT_EXPANSION`` (16): a file may declare at
most ``max(LIMIT_FLOOR, LIMIT_EXPANSION * file size)`` bytes of arrays in all.
Real data compresses far less than 16:1, so a legitimate file never reaches it,
while a small file declaring gigabytes (zero-filled members compress about
1000:1) is refused before a byte of it is decompressed. Parameter arrays are
further checked against the exact shapes their layer needs.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

LIMIT_FLOOR = 64 * 2**20
"""Bytes of arrays any file may declare, whatever its size."""

LIMIT_EXPANSION = 16
"""Bytes of arrays a file may declare per byte of its own size (above the floor)."""


def size_limit(file_size):
    """Bytes of declared arrays a file of ``file_size`` bytes may hold.

    Parameters
    ----------
    file_size : int

    Returns
    -------
    int
        ``max(LIMIT_FLOOR, LIMIT_EXPANSION * file_size)``.
    """
    return max(LIMIT_FLOOR, LIMIT_EXPANSION * int(file_size))


def _kind_of_mode(mode):
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(path, error, expected):
    """Open ``path`` for reading in binary mode if it is a regular file.

    The file is opened without blocking (a FIFO opened for reading would wait
    for a writer) and checked with ``fstat`` on the open descriptor, so a file
    swapped between a check and the open cannot slip through.

    Parameters
    ----------
    path : str or Path
    error : type
        Exception class raised (with one line) for a path that exists but is
        not a regular file, e.g. :class:`cnn.matlab.CNNFileError`.
    expected : str
        What the caller wanted, for the message (``"a network file"``).

    Returns
    -------
    file object
        Opened ``"rb"``; the caller closes it.

    Raises
    ------
    FileNotFoundError
        No such file.
    error
        A folder, FIFO, device or socket, or a file without read permission.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path}") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path} is {_kind_of_mode(st.st_mode)}, not {expected}")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except PermissionError:  # unreadable input: bad input (exit 2), not a failure of ours
        raise error(f"{path} cannot be read (permission denied)") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path} is {_kind_of_mode(st.st_mode)}, not {expected}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def describe_file(head):
    """What a file looks like from its first bytes (for "X is <this>, not a network").

    Parameters
    ----------
    head : bytes
        The first bytes of the file (a few hundred are enough).

    Returns
    -------
    str
        e.g. ``"an empty file"``, ``"a text file"``, ``"a zip archive"``.
    """
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "a zip archive"
    if head.startswith(b"\x93NUMPY"):
        return "a single NumPy array (.npy)"
    if head.startswith(b"\x89HDF\r\n\x1a\n") or head[512:520] == b"\x89HDF\r\n\x1a\n":
        return "an HDF5 file"
    if head.startswith(b"MATLAB 5.0 MAT-file") or head.startswith(b"MATLAB 7.3 MAT-file"):
        return "a MAT-file"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip file"
    sample, text = head[:512], None
    for cut in range(4):  # the sample may end inside a multi-byte character
        try:
            text = sample[: len(sample) - cut].decode("utf-8")
            break
        except UnicodeDecodeError:
            continue
    if text is not None and all(c.isprintable() or c in "\r\n\t\f" for c in text):
        return "a text file"
    return "binary data of an unknown kind"
