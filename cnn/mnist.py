"""MNIST data: locate, download, verify and read the four standard IDX files.

The MATLAB original reads the LeCun files ``train-images.idx3-ubyte`` etc.
with ``loadMNISTImages``/``loadMNISTLabels``. This module does the same in
NumPy and adds what a reproducible run needs:

* :func:`read_idx` reads an IDX file, gzipped or not (detected from the
  first two bytes, not from the name), and checks the header against the
  file size *before* allocating anything, so a corrupt or hostile file gives
  an :class:`MNISTError` and never a hang, a huge allocation or a stray
  ``zlib``/``EOFError``.
* :func:`load_images` / :func:`load_labels` / :func:`one_hot` turn the raw
  arrays into what the network uses: images ``(N, rows, cols)`` float64 in
  ``[0, 1]`` (pixel / 255) and one-hot labels ``(N, 10)`` float64.
* :func:`mnist_dir` finds the data directory: an explicit argument, else the
  environment variable ``CNN_MNIST_DIR``, else ``data/mnist/`` of the source
  checkout when the package runs from one, else the per-user cache folder
  (``pooch.os_cache("cnn") / "mnist"``, e.g. ``~/.cache/cnn/mnist``); never a
  folder inside the installed package.
* :func:`download_mnist` fetches missing files with `pooch`_ from a list of
  mirrors (sha256 checked before the file is moved into place; the whole
  transfer is bounded by a timeout; nothing partial is left behind, and a
  folder created for a failed download is removed again).
* :func:`load_mnist` / :func:`load_split` put it all together, and by default
  verify every file against its published sha256 when it is loaded (fast path:
  a digest cached per file, keyed by size and modification time), so an edited
  or swapped file is refused (:class:`MNISTVerifyError`); ``verify=False`` for
  custom data in the MNIST format.

.. _pooch: https://www.fatiando.org/pooch/

Errors about bad data are :class:`MNISTError` (a ``ValueError``); missing
files are :class:`MNISTNotFoundError` (a ``FileNotFoundError``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import shutil
import sys
import time
import urllib.request
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .safeio import open_regular

__all__ = [
    "MNISTError",
    "MNISTNotFoundError",
    "MNISTVerifyError",
    "Checksum",
    "CHECKSUMS",
    "RAW_CHECKSUMS",
    "MIRRORS",
    "KINDS",
    "SPLITS",
    "ENV_VAR",
    "read_idx",
    "load_images",
    "load_labels",
    "one_hot",
    "candidate_names",
    "find_file",
    "mnist_dir",
    "default_mnist_dir",
    "load_split",
    "load_mnist",
    "download_mnist",
    "verify_file",
    "verify_mnist",
    "check_file",
    "cache_dir",
]


class MNISTError(ValueError):
    """A file is not a valid IDX/MNIST file (bad header, size, checksum, ...)."""


class MNISTVerifyError(MNISTError):
    """A file's size or sha256 differs from the published MNIST file's (edited or swapped)."""


class MNISTNotFoundError(FileNotFoundError):
    """MNIST files are missing and could not be downloaded.

    Attributes
    ----------
    directory : pathlib.Path or None
        The folder searched.
    missing : tuple of str
        Standard names of the missing files.
    reason : str or None
        Why the download failed (None when no download was tried).
    """

    def __init__(self, message, *, directory=None, missing=(), reason=None):
        super().__init__(message)
        self.directory = directory
        self.missing = tuple(missing)
        self.reason = reason


class Checksum(NamedTuple):
    """Published size (bytes) and digests of one file."""

    size: int
    md5: str
    sha256: str


ENV_VAR = "CNN_MNIST_DIR"
"""Environment variable naming the directory that holds the MNIST files."""

REPO_ROOT = Path(__file__).resolve().parents[1]
"""Root of the repository (the directory that contains the ``cnn`` package)."""

KINDS = ("train-images", "train-labels", "t10k-images", "t10k-labels")
"""The four MNIST files, by kind; ``find_file`` takes one of these."""

SPLITS = {"train": ("train-images", "train-labels"), "test": ("t10k-images", "t10k-labels")}
"""Split name -> (image kind, label kind)."""

_IDX_RANK = {"train-images": 3, "train-labels": 1, "t10k-images": 3, "t10k-labels": 1}

STANDARD_NAMES = {k: f"{k}-idx{_IDX_RANK[k]}-ubyte.gz" for k in KINDS}
"""Kind -> standard gzipped file name, e.g. ``train-images-idx3-ubyte.gz``."""

CHECKSUMS = {
    "train-images-idx3-ubyte.gz": Checksum(
        9912422,
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    "train-labels-idx1-ubyte.gz": Checksum(
        28881,
        "d53e105ee54ea40749a09fcbcd1e9432",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    "t10k-images-idx3-ubyte.gz": Checksum(
        1648877,
        "9fb629c4189551a2d022fa330f9573f3",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    "t10k-labels-idx1-ubyte.gz": Checksum(
        4542,
        "ec29112dd5afa0611ce80d1b7f02629c",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
}
"""Published size, md5 and sha256 of the standard .gz files."""

RAW_CHECKSUMS = {
    "train-images-idx3-ubyte": Checksum(
        47040016,
        "6bbc9ace898e44ae57da46a324031adb",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    "train-labels-idx1-ubyte": Checksum(
        60008,
        "a25bea736e30d166cdddb491f175f624",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    "t10k-images-idx3-ubyte": Checksum(
        7840016,
        "2646ac647ad5339dbf082846283269ea",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    "t10k-labels-idx1-ubyte": Checksum(
        10008,
        "27ae3e4e09519cfbb04c329615203637",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
}
"""Size, md5 and sha256 of the decompressed files (for un-gzipped copies)."""

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
"""Base URLs tried in order by :func:`download_mnist`."""

DOWNLOAD_TIMEOUT = 300.0
"""Seconds one file's whole transfer may take (a slow mirror is abandoned after it)."""

READ_TIMEOUT = 30.0
"""Socket timeout (seconds) of each connect and read."""

CACHE_ENV_VAR = "CNN_CACHE_DIR"
"""Environment variable overriding the per-user cache folder (digests, default MNIST home)."""

# IDX type codes: code -> description. Only 0x08 (unsigned byte) is read.
_IDX_TYPES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "big-endian int16",
    0x0C: "big-endian int32",
    0x0D: "big-endian float32",
    0x0E: "big-endian float64",
}
_MAX_NDIM = 32  # numpy's portable limit; real IDX files have 1 to 4
_DEFLATE_MAX_RATIO = 1032  # deflate cannot expand data by more than ~1032:1
_CHUNK = 1 << 20


# --------------------------------------------------------------------------
# Reading IDX files
# --------------------------------------------------------------------------


def _open_regular(path):
    """Open ``path`` for reading; refuse a FIFO, device or folder without blocking on it."""
    return open_regular(path, MNISTError, "an IDX file")


def _is_gzip(path):
    with _open_regular(path) as f:
        return f.read(2) == b"\x1f\x8b"


def _read_exactly(f, n):
    """Read up to ``n`` bytes from ``f`` (fewer only at end of stream)."""
    parts = []
    got = 0
    while got < n:
        b = f.read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def _parse_header(f, path):
    """Read and check the IDX header from ``f``; return ``(dims, header_len)``."""
    magic = _read_exactly(f, 4)
    if len(magic) < 4:
        raise MNISTError(
            f"{path}: file too short for an IDX header (needs at least 4 bytes, found {len(magic)})"
        )
    if magic[0] != 0 or magic[1] != 0:
        raise MNISTError(
            f"{path}: bad magic number 0x{magic.hex().upper()}: the first two bytes of an "
            "IDX file must be zero (is this an MNIST file?)"
        )
    code, ndim = magic[2], magic[3]
    if code != 0x08:
        if code in _IDX_TYPES:
            raise MNISTError(
                f"{path}: unsupported IDX data type code 0x{code:02X} ({_IDX_TYPES[code]}); "
                "only 0x08 (unsigned byte) is supported"
            )
        raise MNISTError(
            f"{path}: unknown IDX data type code 0x{code:02X} in magic number "
            f"0x{magic.hex().upper()}; only 0x08 (unsigned byte) is supported"
        )
    if ndim == 0 or ndim > _MAX_NDIM:
        raise MNISTError(
            f"{path}: bad number of dimensions {ndim} in the IDX header (must be 1 to {_MAX_NDIM})"
        )
    raw_dims = _read_exactly(f, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise MNISTError(
            f"{path}: truncated IDX header: {ndim} dimensions need {4 * ndim} bytes of sizes, "
            f"found {len(raw_dims)}"
        )
    dims = tuple(int.from_bytes(raw_dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
    return dims, 4 + 4 * ndim


def read_idx(path):
    """Read an IDX file of unsigned bytes, gzipped or raw.

    Gzip is detected from the first two bytes (``1f 8b``), not from the file
    name. The header (two zero bytes, type code ``0x08``, number of
    dimensions, then each dimension as a big-endian uint32) is checked
    against the file size before any data is allocated, and the data must be
    exactly ``prod(dims)`` bytes long.

    Parameters
    ----------
    path : str or os.PathLike
        The IDX file (``.gz`` or not).

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``dims`` as given in the header, e.g.
        ``(N, 28, 28)`` for an idx3 image file or ``(N,)`` for idx1 labels.

    Raises
    ------
    MNISTError
        Bad magic number, unsupported type code, truncated header or data,
        trailing bytes after the data, a corrupt gzip stream, or ``path`` is not
        a regular file (a folder, FIFO or device: refused without reading).
    FileNotFoundError
        ``path`` does not exist.
    """
    path = Path(path)
    with _open_regular(path) as f:
        gzipped = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        if gzipped:
            return _read_idx_gzip(path, f)
        return _read_idx_raw(path, f)


def _read_idx_raw(path, f):
    size = os.fstat(f.fileno()).st_size
    dims, header_len = _parse_header(f, path)
    n_data = math.prod(dims)
    if size - header_len < n_data:
        raise MNISTError(
            f"{path}: truncated data: header dims {dims} need {n_data} bytes after the "
            f"header, found {size - header_len}"
        )
    if size - header_len > n_data:
        raise MNISTError(
            f"{path}: {size - header_len - n_data} trailing bytes after the data: header "
            f"dims {dims} give {n_data} data bytes, found {size - header_len}"
        )
    data = np.fromfile(f, dtype=np.uint8, count=n_data)
    if data.size != n_data:  # the file changed while we read it
        raise MNISTError(
            f"{path}: truncated data: expected {n_data} bytes after the header, found {data.size}"
        )
    return data.reshape(dims)


_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


def _read_idx_gzip(path, raw):
    compressed = os.fstat(raw.fileno()).st_size
    bound = _DEFLATE_MAX_RATIO * compressed + 1024
    try:
        with gzip.GzipFile(fileobj=raw, mode="rb") as f:
            dims, header_len = _parse_header(f, path)
            n_data = math.prod(dims)
            if header_len + n_data > bound:
                # Checked before allocating: deflate cannot expand more than ~1032:1.
                raise MNISTError(
                    f"{path}: corrupt IDX header or truncated data: header dims {dims} need "
                    f"{n_data} data bytes, more than a {compressed}-byte gzip file can hold"
                )
            # Read what the stream holds, chunk by chunk: memory follows the data
            # actually there, never the header's claim.
            buf = bytearray()
            while len(buf) < n_data:
                b = f.read(min(_CHUNK, n_data - len(buf)))
                if not b:
                    break
                buf += b
            got = len(buf)
            if got < n_data:
                raise MNISTError(
                    f"{path}: truncated data: header dims {dims} need {n_data} bytes after "
                    f"the header, found {got}"
                )
            # Read to the end of the stream: counts trailing bytes and makes
            # gzip check the CRC and length of the last member.
            extra = 0
            while True:
                b = f.read(_CHUNK)
                if not b:
                    break
                extra += len(b)
            if extra:
                raise MNISTError(
                    f"{path}: {extra} trailing bytes after the data: header dims {dims} give "
                    f"{n_data} data bytes, found {n_data + extra}"
                )
    except _GZIP_ERRORS as exc:
        raise MNISTError(f"{path}: corrupt gzip stream: {exc}") from exc
    return np.frombuffer(buf, dtype=np.uint8).reshape(dims)


# --------------------------------------------------------------------------
# Images and labels
# --------------------------------------------------------------------------


def load_images(path):
    """Read an idx3 image file and scale it to ``[0, 1]``.

    Parameters
    ----------
    path : str or os.PathLike
        idx3 file (gzipped or not), e.g. ``train-images-idx3-ubyte.gz``.

    Returns
    -------
    numpy.ndarray
        ``float64`` array of shape ``(N, rows, cols)`` (``(N, 28, 28)`` for
        MNIST) equal to ``pixel / 255.0``. ``x[n, r, c]`` is the pixel in row
        ``r`` and column ``c`` of image ``n``, as stored (row-major) in the file.

    Raises
    ------
    MNISTError
        The file is not a valid 3-D IDX file of unsigned bytes.
    """
    raw = read_idx(path)
    if raw.ndim != 3:
        raise MNISTError(
            f"{path}: expected an image file with 3 dimensions (idx3: N, rows, cols), "
            f"found {raw.ndim} dimension(s) {raw.shape}; is this a label file?"
        )
    if 0 in raw.shape:
        raise MNISTError(f"{path}: holds no images (header dims {raw.shape})")
    x = raw.astype(np.float64)
    x /= 255.0
    return x


def load_labels(path):
    """Read an idx1 label file.

    Parameters
    ----------
    path : str or os.PathLike
        idx1 file (gzipped or not), e.g. ``train-labels-idx1-ubyte.gz``.

    Returns
    -------
    numpy.ndarray
        ``int64`` array of shape ``(N,)`` with values in ``0..9``.

    Raises
    ------
    MNISTError
        The file is not a valid 1-D IDX file of unsigned bytes, or a label is
        larger than 9.
    """
    raw = read_idx(path)
    if raw.ndim != 1:
        raise MNISTError(
            f"{path}: expected a label file with 1 dimension (idx1: N), found "
            f"{raw.ndim} dimensions {raw.shape}; is this an image file?"
        )
    if raw.size == 0:
        raise MNISTError(f"{path}: holds no labels")
    bad = np.flatnonzero(raw > 9)
    if bad.size:
        i = int(bad[0])
        raise MNISTError(
            f"{path}: {bad.size} label(s) outside 0..9; the first is label[{i}] = {int(raw[i])}"
        )
    return raw.astype(np.int64)


def one_hot(labels, n_classes=10):
    """One-hot encode integer class labels.

    Parameters
    ----------
    labels : array_like of int, shape (N,)
        Class indices in ``0 .. n_classes-1``.
    n_classes : int, default 10
        Number of classes.

    Returns
    -------
    numpy.ndarray
        ``float64`` array of shape ``(N, n_classes)`` with a single 1 per row,
        in column ``labels[n]``.

    Raises
    ------
    ValueError
        ``labels`` is not 1-D, not integral, or out of range.
    """
    n_classes = int(n_classes)
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, got {n_classes}")
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise ValueError(f"labels must be 1-D of shape (N,), got shape {lab.shape}")
    if lab.size and not np.issubdtype(lab.dtype, np.integer):
        if not (np.issubdtype(lab.dtype, np.number) and np.all(lab == np.round(lab))):
            raise ValueError(f"labels must be integers, got dtype {lab.dtype}")
    if lab.size and (lab.min() < 0 or lab.max() >= n_classes):
        raise ValueError(
            f"labels must lie in 0..{n_classes - 1}, found values {lab.min()}..{lab.max()}"
        )
    out = np.zeros((lab.size, n_classes), dtype=np.float64)
    out[np.arange(lab.size), lab.astype(np.intp)] = 1.0
    return out


# --------------------------------------------------------------------------
# File names and locations
# --------------------------------------------------------------------------


def _check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"unknown MNIST file kind {kind!r}; valid: {', '.join(KINDS)}")


def candidate_names(kind):
    """File names accepted for one MNIST file, in order of preference.

    Parameters
    ----------
    kind : {"train-images", "train-labels", "t10k-images", "t10k-labels"}

    Returns
    -------
    tuple of str
        Four names: the standard gzipped name, the standard raw name, then the
        dotted names of the MATLAB example (gzipped, raw), e.g.
        ``train-images-idx3-ubyte.gz``, ``train-images-idx3-ubyte``,
        ``train-images.idx3-ubyte.gz``, ``train-images.idx3-ubyte``.
    """
    _check_kind(kind)
    std = f"{kind}-idx{_IDX_RANK[kind]}-ubyte"
    dotted = f"{kind}.idx{_IDX_RANK[kind]}-ubyte"
    return (std + ".gz", std, dotted + ".gz", dotted)


def find_file(directory, kind):
    """Return the first existing file for ``kind`` in ``directory``.

    Parameters
    ----------
    directory : str or os.PathLike
        Directory to look in.
    kind : {"train-images", "train-labels", "t10k-images", "t10k-labels"}

    Returns
    -------
    pathlib.Path or None
        The first of :func:`candidate_names` that exists (a folder or FIFO of
        that name is returned too, and refused by the reader), or ``None``.
    """
    directory = Path(directory)
    for name in candidate_names(kind):
        p = directory / name
        if p.exists():
            return p
    return None


def cache_dir():
    """The per-user cache folder of the package (``$CNN_CACHE_DIR``, else
    ``pooch.os_cache("cnn")``, e.g. ``~/.cache/cnn`` on Linux).

    Returns
    -------
    pathlib.Path
    """
    env = os.environ.get(CACHE_ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("cnn"))


def _source_checkout():
    """True when the package runs from a source checkout (not an installed copy)."""
    parts = set(REPO_ROOT.parts)
    return (
        (REPO_ROOT / "pyproject.toml").is_file()
        and "site-packages" not in parts
        and "dist-packages" not in parts
    )


def default_mnist_dir():
    """The MNIST folder used when neither an argument nor ``CNN_MNIST_DIR`` is given.

    ``data/mnist/`` of the source checkout when the package runs from one, else
    ``<cache_dir()>/mnist`` (never a folder inside the installed package).

    Returns
    -------
    pathlib.Path
    """
    if _source_checkout():
        return REPO_ROOT / "data" / "mnist"
    return cache_dir() / "mnist"


def mnist_dir(data_dir=None):
    """Directory that holds (or will hold) the MNIST files.

    Lookup order: the explicit ``data_dir`` argument, else the environment
    variable ``CNN_MNIST_DIR`` (if set and non-empty), else
    :func:`default_mnist_dir`.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional

    Returns
    -------
    pathlib.Path
        The directory (``~`` expanded); it need not exist.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    return default_mnist_dir()


def _missing_error(directory, missing, reason=None):
    names = [STANDARD_NAMES[k] for k in missing]
    listed = names[0] + (f" and {len(names) - 1} more" if len(names) > 1 else "")
    if reason:
        head = f"could not download {listed} into {directory}: {reason}"
    else:
        head = f"MNIST file(s) missing in {directory}: {listed}"
    hint = f"put them there, or set {ENV_VAR} to a folder holding them"
    return MNISTNotFoundError(f"{head}; {hint}", directory=directory, missing=names, reason=reason)


def _locate(directory, kinds, download, progress):
    """Map each kind to its file in ``directory``, downloading missing ones."""
    found = {k: find_file(directory, k) for k in kinds}
    missing = [k for k in kinds if found[k] is None]
    if missing and download:
        # MIRRORS and CHECKSUMS are looked up now, so patching the module constants works.
        try:
            download_mnist(
                directory,
                mirrors=MIRRORS,
                progress=progress,
                files=[STANDARD_NAMES[k] for k in missing],
            )
        except MNISTNotFoundError as exc:
            raise _missing_error(directory, missing, exc.reason or str(exc)) from None
        found = {k: find_file(directory, k) for k in kinds}
        missing = [k for k in kinds if found[k] is None]
    if missing:
        raise _missing_error(directory, missing)
    return found


def _load_pair(images_path, labels_path, kinds=None, verify=False):
    if verify and kinds is not None:
        check_file(images_path, kinds[0])
        check_file(labels_path, kinds[1])
    x = load_images(images_path)
    labels = load_labels(labels_path)
    if x.shape[0] != labels.shape[0]:
        raise MNISTError(
            f"image/label count mismatch: {images_path} holds {x.shape[0]} images but "
            f"{labels_path} holds {labels.shape[0]} labels"
        )
    return x, one_hot(labels, 10)


def load_split(split, data_dir=None, *, download=True, progress=True, verify=True):
    """Load one MNIST split.

    Parameters
    ----------
    split : {"train", "test"}
    data_dir : str or os.PathLike, optional
        Directory of the files; see :func:`mnist_dir` for the default.
    download : bool, default True
        Download missing files (see :func:`download_mnist`); if False, raise
        :class:`MNISTNotFoundError` instead.
    progress : bool, default True
        Show download progress on stderr (only once a transfer has started).
    verify : bool, default True
        Check each file against its published size and sha256
        (:func:`check_file`); False for custom data in the MNIST format.

    Returns
    -------
    x : numpy.ndarray
        ``float64`` images of shape ``(N, 28, 28)`` in ``[0, 1]``
        (``N`` = 60000 for train, 10000 for test; the row and column counts
        are whatever the file says).
    y : numpy.ndarray
        ``float64`` one-hot labels of shape ``(N, 10)``.

    Raises
    ------
    ValueError
        ``split`` is not "train" or "test".
    MNISTNotFoundError
        Files are missing and ``download`` is False or every mirror failed.
    MNISTVerifyError
        ``verify`` and a file is not the published one (edited, swapped).
    MNISTError
        A file is corrupt, not a regular file, or the image and label counts differ.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(repr(s) for s in SPLITS)}")
    directory = mnist_dir(data_dir)
    kinds = SPLITS[split]
    found = _locate(directory, kinds, download, progress)
    return _load_pair(found[kinds[0]], found[kinds[1]], kinds, verify)


def load_mnist(data_dir=None, *, download=True, progress=True, verify=True):
    """Load the MNIST training and test sets.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Directory of the files; see :func:`mnist_dir` for the default.
    download : bool, default True
        Download missing files; if False, raise :class:`MNISTNotFoundError`
        listing the missing files instead.
    progress : bool, default True
        Show download progress on stderr (only once a transfer has started).
    verify : bool, default True
        Check each file against its published size and sha256.

    Returns
    -------
    train_x : numpy.ndarray
        ``float64`` ``(60000, 28, 28)``, values in ``[0, 1]``.
    train_y : numpy.ndarray
        ``float64`` one-hot ``(60000, 10)``.
    test_x : numpy.ndarray
        ``float64`` ``(10000, 28, 28)``, values in ``[0, 1]``.
    test_y : numpy.ndarray
        ``float64`` one-hot ``(10000, 10)``.

    Raises
    ------
    MNISTNotFoundError
        Files are missing and ``download`` is False or every mirror failed.
    MNISTVerifyError
        ``verify`` and a file is not the published one.
    MNISTError
        A file is corrupt, or image and label counts differ.
    """
    directory = mnist_dir(data_dir)
    found = _locate(directory, KINDS, download, progress)
    train_x, train_y = _load_pair(
        found["train-images"], found["train-labels"], SPLITS["train"], verify
    )
    test_x, test_y = _load_pair(found["t10k-images"], found["t10k-labels"], SPLITS["test"], verify)
    return train_x, train_y, test_x, test_y


# --------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------


def _as_checksum(entry):
    if isinstance(entry, Checksum):
        return entry
    entry = tuple(entry)
    return Checksum(entry[0], entry[1], entry[2] if len(entry) > 2 else "")


def _digests(path):
    md5 = hashlib.md5()
    sha = hashlib.sha256()
    size = 0
    with _open_regular(path) as f:
        while True:
            b = f.read(_CHUNK)
            if not b:
                break
            md5.update(b)
            sha.update(b)
            size += len(b)
    return size, md5.hexdigest(), sha.hexdigest()


def verify_file(path, name=None, checksums=None):
    """Check a file's size, md5 and sha256 against a table.

    Parameters
    ----------
    path : str or os.PathLike
        The file to check.
    name : str, optional
        Key into ``checksums``; defaults to the file's own name.
    checksums : dict, optional
        ``name -> (size, md5)`` or ``name -> (size, md5, sha256)``
        (:class:`Checksum`); defaults to :data:`CHECKSUMS` merged with
        :data:`RAW_CHECKSUMS`.

    Returns
    -------
    None

    Raises
    ------
    MNISTVerifyError
        The size or a digest differs.
    MNISTError
        ``name`` has no entry in ``checksums``.
    """
    path = Path(path)
    if checksums is None:
        checksums = {**CHECKSUMS, **RAW_CHECKSUMS}
    name = path.name if name is None else name
    if name not in checksums:
        raise MNISTError(f"{path}: no published checksum for {name!r}")
    want = _as_checksum(checksums[name])
    size, md5, sha256 = _digests(path)
    if size != want.size:
        raise MNISTVerifyError(
            f"{path}: size mismatch for {name}: expected {want.size} bytes, found {size}"
        )
    if md5 != want.md5.lower():
        raise MNISTVerifyError(f"{path}: md5 mismatch for {name}: expected {want.md5}, found {md5}")
    if want.sha256 and sha256 != want.sha256.lower():
        raise MNISTVerifyError(
            f"{path}: sha256 mismatch for {name}: expected {want.sha256}, found {sha256}"
        )


_DIGEST_MEMO = {}


def _digest_cache_file():
    return cache_dir() / "mnist-sha256.json"


def _cached_sha256(path, st):
    """sha256 of ``path``; reused while its size and mtime are unchanged (cached on disk)."""
    key = str(Path(path).resolve())
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    hit = _DIGEST_MEMO.get(key)
    if hit and hit[:3] == stamp:
        return hit[3]
    cache_file = _digest_cache_file()
    table = {}
    try:
        table = json.loads(cache_file.read_text())
        if not isinstance(table, dict):
            table = {}
    except (OSError, ValueError):
        table = {}
    hit = table.get(key)
    if isinstance(hit, list) and len(hit) == 4 and hit[:3] == stamp:
        _DIGEST_MEMO[key] = hit
        return hit[3]
    _, _, sha256 = _digests(path)
    entry = stamp + [sha256]
    _DIGEST_MEMO[key] = entry
    table[key] = entry
    try:  # best effort: a read-only cache only costs the hashing next time
        from .atomic import write_text

        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_text(cache_file, json.dumps(table, indent=0, sort_keys=True) + "\n")
    except OSError:
        pass
    return sha256


def check_file(path, kind):
    """Check one MNIST file against its published size and sha256, fast.

    The size is compared first; the sha256 is computed once per file and cached
    (in memory and in ``<cache_dir()>/mnist-sha256.json``) keyed by the file's
    path, size, modification time and inode, so a changed file is hashed again.

    Parameters
    ----------
    path : str or os.PathLike
        The file, gzipped (checked against :data:`CHECKSUMS`) or not
        (:data:`RAW_CHECKSUMS`).
    kind : {"train-images", "train-labels", "t10k-images", "t10k-labels"}
        Which MNIST file it must be.

    Raises
    ------
    MNISTVerifyError
        Another size or sha256 (an edited file, another MNIST file, custom data).
    MNISTError
        Not a regular file.
    """
    _check_kind(kind)
    path = Path(path)
    std = candidate_names(kind)[0]
    with _open_regular(path) as f:
        gzipped = f.read(2) == b"\x1f\x8b"
        st = os.fstat(f.fileno())
    name, want = (std, CHECKSUMS[std]) if gzipped else (std[:-3], RAW_CHECKSUMS[std[:-3]])
    want = _as_checksum(want)
    if st.st_size != want.size or _cached_sha256(path, st) != want.sha256:
        raise MNISTVerifyError(
            f"{path} is not the published {name} (size {st.st_size} bytes or sha256 differ): "
            "an edited, truncated or swapped file"
        )
    return path


# --------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------


def _open_url(url, timeout):
    """Open ``url`` for reading (``http(s)://`` or ``file://``); tests replace this."""
    req = urllib.request.Request(url, headers={"User-Agent": "cnn-mnist/0.1 (python urllib)"})
    return urllib.request.urlopen(req, timeout=timeout)


def _progress_bar(total, desc, enabled):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, file=sys.stderr, leave=True)


class _Downloader:
    """A pooch downloader: streams ``url`` into pooch's temporary file.

    The whole transfer is bounded by ``timeout`` seconds (not each read), at most
    ``size + 1`` bytes are accepted, and the progress bar appears only once the
    first bytes have arrived.
    """

    def __init__(self, size, desc, progress, timeout):
        self.size, self.desc, self.progress, self.timeout = size, desc, progress, timeout

    def __call__(self, url, output_file, pooch_=None):
        deadline = time.monotonic() + self.timeout
        bar = None
        got = 0
        try:
            with (
                _open_url(url, min(READ_TIMEOUT, self.timeout)) as resp,
                open(output_file, "wb") as out,
            ):
                read = getattr(resp, "read1", None) or resp.read
                while True:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"not complete after {self.timeout:g} s ({got} of {self.size} bytes)"
                        )
                    b = read(min(_CHUNK, self.size + 1 - got) or 1)
                    if not b:
                        break
                    out.write(b)
                    got += len(b)
                    if bar is None:
                        bar = _progress_bar(self.size, self.desc, self.progress)
                    if bar is not None:
                        bar.update(len(b))
                    if got > self.size:
                        raise MNISTError(f"larger than the expected {self.size} bytes")
        finally:
            if bar is not None:
                bar.close()
        if got != self.size:
            raise MNISTError(f"size mismatch: expected {self.size} bytes, got {got}")


def _make_dirs(path):
    """Create ``path`` and missing parents; return the folders created, deepest last."""
    created = []
    p = Path(path)
    todo = []
    while not p.exists():
        todo.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(todo):
        d.mkdir()
        created.append(d)
    return created


def _short(exc):
    text = " ".join(str(exc).split())
    if isinstance(exc, ValueError) and "hash" in text.lower():
        return "sha256 differs from the published file's"
    return f"{type(exc).__name__}: {text[:120]}"


def download_mnist(
    dest_dir, *, mirrors=MIRRORS, progress=True, files=None, checksums=None, timeout=None
):
    """Download missing MNIST .gz files with pooch and verify them.

    For each requested file that is not already in ``dest_dir``, the mirrors
    are tried in order. pooch fetches the file into a temporary file in a
    staging folder ``dest_dir/.download`` and checks its sha256 before it is
    moved into place; on any failure the next mirror is tried. The staging
    folder is removed at the end, and cleared first (a download killed with
    SIGKILL leaves it behind). Folders created for a download that fails are
    removed again. Only one process downloads into a folder at a time
    (:func:`cnn.atomic.folder_lock`).

    Parameters
    ----------
    dest_dir : str or os.PathLike
        Target directory (created if needed).
    mirrors : sequence of str, default MIRRORS
        Base URLs; the file name is appended. ``file://`` URLs work too.
    progress : bool, default True
        Show bytes downloaded / total per file on stderr (tqdm), once a
        transfer has started.
    files : iterable of str, optional
        File names to fetch; default the four standard names
        (``train-images-idx3-ubyte.gz`` ...). Each must have an entry in
        ``checksums``.
    checksums : dict, optional
        ``name -> (size, md5, sha256)``; default :data:`CHECKSUMS`.
    timeout : float, optional
        Seconds the whole transfer of one file may take; default
        :data:`DOWNLOAD_TIMEOUT`.

    Returns
    -------
    list of pathlib.Path
        Paths of the requested files in ``dest_dir`` (downloaded or already present).

    Raises
    ------
    MNISTNotFoundError
        Every mirror failed for some file; the message lists the URLs tried
        and their errors (``reason`` holds the last one).
    ValueError
        A requested file has no checksum entry.
    """
    import pooch

    from .atomic import FolderBusyError, folder_lock

    dest = Path(dest_dir).expanduser()
    checksums = CHECKSUMS if checksums is None else checksums
    timeout = DOWNLOAD_TIMEOUT if timeout is None else float(timeout)
    names = [STANDARD_NAMES[k] for k in KINDS] if files is None else list(files)
    for name in names:
        if name not in checksums:
            raise ValueError(f"no checksum for {name!r}; known files: {', '.join(checksums)}")
    mirrors = tuple(mirrors)
    paths = [dest / name for name in names]
    todo = [name for name in names if not (dest / name).is_file()]
    if not todo:
        return paths
    created = _make_dirs(dest)
    done = False
    logger = pooch.get_logger()
    level = logger.level
    try:
        try:
            lock = folder_lock(dest, "MNIST download")
            lock.__enter__()
        except FolderBusyError as exc:
            raise MNISTNotFoundError(
                str(exc),
                directory=dest,
                missing=todo,
                reason="another process is downloading into it",
            ) from None
        try:
            logger.setLevel("WARNING")
            staging = dest / ".download"
            shutil.rmtree(staging, ignore_errors=True)  # what a killed download left
            staging.mkdir()
            try:
                for name in todo:
                    _download_one(
                        pooch,
                        name,
                        staging,
                        dest,
                        mirrors,
                        _as_checksum(checksums[name]),
                        progress,
                        timeout,
                    )
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        finally:
            lock.__exit__(None, None, None)
            logger.setLevel(level)
            try:
                os.unlink(dest / ".cnn.lock")
            except OSError:
                pass
        done = True
    finally:
        if not done:  # leave no folder behind that only the failed download made
            for d in reversed(created):
                try:
                    d.rmdir()
                except OSError:
                    break
    return paths


def _download_one(pooch, name, staging, dest, mirrors, want, progress, timeout):
    errors = []
    for base in mirrors:
        url = (base if base.endswith("/") else base + "/") + name
        try:
            got = pooch.retrieve(
                url,
                known_hash=f"sha256:{want.sha256}" if want.sha256 else None,
                fname=name,
                path=staging,
                downloader=_Downloader(want.size, name, progress, timeout),
                progressbar=False,
            )
            verify_file(got, name, {name: want})
            os.replace(got, dest / name)
            return
        except Exception as exc:  # noqa: BLE001 - any failure: try the next mirror
            errors.append((url, exc))
    tried = "; ".join(f"{u}: {_short(e)}" for u, e in errors) or "no mirrors given"
    reason = _short(errors[-1][1]) if errors else "no mirrors given"
    raise MNISTNotFoundError(
        f"could not download {name} into {dest}; tried: {tried}; without network access, put "
        f"the files there by hand or set {ENV_VAR} to a folder holding them",
        directory=dest,
        missing=[name],
        reason=reason,
    )


def verify_mnist(data_dir=None):
    """Check size, md5 and sha256 of the MNIST files present in the data directory.

    Gzipped files are checked against :data:`CHECKSUMS`, un-gzipped ones
    against :data:`RAW_CHECKSUMS`, whatever their spelling (standard or dotted).

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        See :func:`mnist_dir`.

    Returns
    -------
    dict
        ``kind -> {"path": Path or None, "ok": bool or None, "message": str}``
        for each of the four kinds; ``ok`` is None when the file is missing.
    """
    directory = mnist_dir(data_dir)
    report = {}
    for kind in KINDS:
        path = find_file(directory, kind)
        if path is None:
            report[kind] = {"path": None, "ok": None, "message": f"missing in {directory}"}
            continue
        std = candidate_names(kind)[0]
        try:
            if _is_gzip(path):
                verify_file(path, std, CHECKSUMS)
            else:
                verify_file(path, std[:-3], RAW_CHECKSUMS)
        except (MNISTError, OSError) as exc:
            report[kind] = {"path": path, "ok": False, "message": str(exc)}
        else:
            report[kind] = {"path": path, "ok": True, "message": "ok"}
    return report
