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
  environment variable ``CNN_MNIST_DIR``, else ``<repository>/data/mnist``.
* :func:`download_mnist` fetches missing files from a list of mirrors into a
  temporary file, checks size and md5 against the published values and only
  then moves the file into place; nothing partial is ever left behind.
* :func:`load_mnist` / :func:`load_split` put it all together.

Errors about bad data are :class:`MNISTError` (a ``ValueError``); missing
files are :class:`MNISTNotFoundError` (a ``FileNotFoundError``).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import sys
import tempfile
import urllib.request
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "MNISTError",
    "MNISTNotFoundError",
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
]


class MNISTError(ValueError):
    """A file is not a valid IDX/MNIST file (bad header, size, checksum, ...)."""


class MNISTNotFoundError(FileNotFoundError):
    """MNIST files are missing and could not be downloaded."""


class Checksum(NamedTuple):
    """Published size (bytes) and digests of one file."""

    size: int
    md5: str
    sha256: str | None = None


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
    "train-labels-idx1-ubyte.gz": Checksum(28881, "d53e105ee54ea40749a09fcbcd1e9432"),
    "t10k-images-idx3-ubyte.gz": Checksum(1648877, "9fb629c4189551a2d022fa330f9573f3"),
    "t10k-labels-idx1-ubyte.gz": Checksum(4542, "ec29112dd5afa0611ce80d1b7f02629c"),
}
"""Published size and md5 (and sha256 where known) of the standard .gz files."""

RAW_CHECKSUMS = {
    "train-images-idx3-ubyte": Checksum(47040016, "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": Checksum(60008, "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": Checksum(7840016, "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": Checksum(10008, "27ae3e4e09519cfbb04c329615203637"),
}
"""Size and md5 of the decompressed files (used for un-gzipped copies)."""

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
"""Base URLs tried in order by :func:`download_mnist`."""

DOWNLOAD_TIMEOUT = 30.0
"""Socket timeout (seconds) for each download."""

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


def _is_gzip(path):
    with open(path, "rb") as f:
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
        trailing bytes after the data, or a corrupt gzip stream.
    FileNotFoundError
        ``path`` does not exist.
    """
    path = Path(path)
    if _is_gzip(path):
        return _read_idx_gzip(path)
    return _read_idx_raw(path)


def _read_idx_raw(path):
    size = path.stat().st_size
    with open(path, "rb") as f:
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


def _read_idx_gzip(path):
    compressed = path.stat().st_size
    bound = _DEFLATE_MAX_RATIO * compressed + 1024
    try:
        with gzip.open(path, "rb") as f:
            dims, header_len = _parse_header(f, path)
            n_data = math.prod(dims)
            if header_len + n_data > bound:
                # Checked before allocating: deflate cannot expand more than ~1032:1.
                raise MNISTError(
                    f"{path}: corrupt IDX header or truncated data: header dims {dims} need "
                    f"{n_data} data bytes, more than a {compressed}-byte gzip file can hold"
                )
            data = np.empty(n_data, dtype=np.uint8)
            view = memoryview(data)
            got = 0
            while got < n_data:
                n = f.readinto(view[got : got + _CHUNK])
                if not n:
                    break
                got += n
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
    return data.reshape(dims)


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
        The first of :func:`candidate_names` that exists as a file, or ``None``.
    """
    directory = Path(directory)
    for name in candidate_names(kind):
        p = directory / name
        if p.is_file():
            return p
    return None


def default_mnist_dir():
    """``<repository>/data/mnist``, the directory used when nothing else is given.

    Returns
    -------
    pathlib.Path
    """
    return REPO_ROOT / "data" / "mnist"


def mnist_dir(data_dir=None):
    """Directory that holds (or will hold) the MNIST files.

    Lookup order: the explicit ``data_dir`` argument, else the environment
    variable ``CNN_MNIST_DIR`` (if set and non-empty), else
    ``<repository>/data/mnist``.

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


def _how_to_fix(directory):
    names = ", ".join(STANDARD_NAMES[k] for k in KINDS)
    return (
        f"To fix: put the four MNIST files ({names}; gzipped or not) in {directory}, "
        f"or set the environment variable {ENV_VAR} to a directory that holds them, "
        "or pass data_dir=... ."
    )


def _locate(directory, kinds, download, progress):
    """Map each kind to its file in ``directory``, downloading missing ones."""
    found = {k: find_file(directory, k) for k in kinds}
    missing = [k for k in kinds if found[k] is None]
    if missing and download:
        # MIRRORS and CHECKSUMS are looked up now, so patching the module constants works.
        download_mnist(
            directory,
            mirrors=MIRRORS,
            progress=progress,
            files=[STANDARD_NAMES[k] for k in missing],
        )
        found = {k: find_file(directory, k) for k in kinds}
        missing = [k for k in kinds if found[k] is None]
    if missing:
        lines = "\n".join(
            f"  {STANDARD_NAMES[k]} (or {', '.join(candidate_names(k)[1:])})" for k in missing
        )
        raise MNISTNotFoundError(
            f"MNIST file(s) missing in {directory}:\n{lines}\n"
            + _how_to_fix(directory)
            + ("" if download else " Or call with download=True to fetch them.")
        )
    return found


def _load_pair(images_path, labels_path):
    x = load_images(images_path)
    labels = load_labels(labels_path)
    if x.shape[0] != labels.shape[0]:
        raise MNISTError(
            f"image/label count mismatch: {images_path} holds {x.shape[0]} images but "
            f"{labels_path} holds {labels.shape[0]} labels"
        )
    return x, one_hot(labels, 10)


def load_split(split, data_dir=None, *, download=True, progress=True):
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
        Show download progress on stderr.

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
    MNISTError
        A file is corrupt, or the image and label counts differ.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(repr(s) for s in SPLITS)}")
    directory = mnist_dir(data_dir)
    kinds = SPLITS[split]
    found = _locate(directory, kinds, download, progress)
    return _load_pair(found[kinds[0]], found[kinds[1]])


def load_mnist(data_dir=None, *, download=True, progress=True):
    """Load the MNIST training and test sets.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Directory of the files; see :func:`mnist_dir` for the default.
    download : bool, default True
        Download missing files; if False, raise :class:`MNISTNotFoundError`
        listing the missing files instead.
    progress : bool, default True
        Show download progress on stderr.

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
    MNISTError
        A file is corrupt, or image and label counts differ.
    """
    directory = mnist_dir(data_dir)
    found = _locate(directory, KINDS, download, progress)
    train_x, train_y = _load_pair(found["train-images"], found["train-labels"])
    test_x, test_y = _load_pair(found["t10k-images"], found["t10k-labels"])
    return train_x, train_y, test_x, test_y


# --------------------------------------------------------------------------
# Checksums and download
# --------------------------------------------------------------------------


def _as_checksum(entry):
    return entry if isinstance(entry, Checksum) else Checksum(*entry)


def _digests(path):
    md5 = hashlib.md5()
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(_CHUNK)
            if not b:
                break
            md5.update(b)
            sha.update(b)
            size += len(b)
    return size, md5.hexdigest(), sha.hexdigest()


def verify_file(path, name=None, checksums=None):
    """Check a file's size and md5 (and sha256 where known) against a table.

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
    MNISTError
        ``name`` has no entry in ``checksums``, or the size or a digest differs.
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
        raise MNISTError(
            f"{path}: size mismatch for {name}: expected {want.size} bytes, found {size}"
        )
    if md5 != want.md5.lower():
        raise MNISTError(f"{path}: md5 mismatch for {name}: expected {want.md5}, found {md5}")
    if want.sha256 and sha256 != want.sha256.lower():
        raise MNISTError(
            f"{path}: sha256 mismatch for {name}: expected {want.sha256}, found {sha256}"
        )


def _open_url(url, timeout):
    """Open ``url`` for reading (``http(s)://`` or ``file://``); tests replace this."""
    req = urllib.request.Request(url, headers={"User-Agent": "cnn-mnist/0.1 (python urllib)"})
    return urllib.request.urlopen(req, timeout=timeout)


class _PlainProgress:
    """Minimal stand-in for tqdm: bytes done / total on stderr."""

    def __init__(self, total, desc):
        self.total, self.desc, self.n = total, desc, 0
        self._tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        self._last = -1
        self._show(force=True)

    def _show(self, force=False):
        pct = int(100 * self.n / self.total) if self.total else 0
        if not force and (pct // 10 == self._last // 10 if not self._tty else pct == self._last):
            return
        self._last = pct
        end = "\r" if self._tty else "\n"
        print(f"{self.desc}: {self.n}/{self.total} bytes ({pct}%)", end=end, file=sys.stderr)

    def update(self, n):
        self.n += n
        self._show()

    def close(self):
        if self._tty:
            print(file=sys.stderr)


def _progress_bar(total, desc, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return _PlainProgress(total, desc)
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, file=sys.stderr, leave=True)


def _fetch_to(url, out, expected_size, progress, desc, timeout):
    """Stream ``url`` into the open binary file ``out``; at most ``expected_size + 1`` bytes."""
    bar = _progress_bar(expected_size, desc, progress)
    got = 0
    try:
        with _open_url(url, timeout) as resp:
            while True:
                b = resp.read(min(_CHUNK, expected_size + 1 - got) or 1)
                if not b:
                    break
                out.write(b)
                got += len(b)
                if bar is not None:
                    bar.update(len(b))
                if got > expected_size:
                    raise MNISTError(f"{url}: larger than the expected {expected_size} bytes")
    finally:
        if bar is not None:
            bar.close()
    return got


def download_mnist(
    dest_dir, *, mirrors=MIRRORS, progress=True, files=None, checksums=None, timeout=None
):
    """Download missing MNIST .gz files and verify them.

    For each requested file that is not already in ``dest_dir``, the mirrors
    are tried in order. Each download goes to a temporary file in
    ``dest_dir``; its size and md5 are checked against ``checksums`` and only
    then is it renamed into place (``os.replace``). On any failure the
    temporary file is deleted and the next mirror is tried.

    Parameters
    ----------
    dest_dir : str or os.PathLike
        Target directory (created if needed).
    mirrors : sequence of str, default MIRRORS
        Base URLs; the file name is appended. ``file://`` URLs work too.
    progress : bool, default True
        Show bytes downloaded / total per file on stderr (tqdm if installed).
    files : iterable of str, optional
        File names to fetch; default the four standard names
        (``train-images-idx3-ubyte.gz`` ...). Each must have an entry in
        ``checksums``.
    checksums : dict, optional
        ``name -> (size, md5[, sha256])``; default :data:`CHECKSUMS`.
    timeout : float, optional
        Socket timeout per request in seconds; default :data:`DOWNLOAD_TIMEOUT`.

    Returns
    -------
    list of pathlib.Path
        Paths of the requested files in ``dest_dir`` (downloaded or already present).

    Raises
    ------
    MNISTNotFoundError
        Every mirror failed for some file; the message lists the URLs tried
        and their errors, and where to put the files by hand.
    ValueError
        A requested file has no checksum entry.
    """
    dest = Path(dest_dir).expanduser()
    checksums = CHECKSUMS if checksums is None else checksums
    timeout = DOWNLOAD_TIMEOUT if timeout is None else timeout
    names = [STANDARD_NAMES[k] for k in KINDS] if files is None else list(files)
    for name in names:
        if name not in checksums:
            raise ValueError(f"no checksum for {name!r}; known files: {', '.join(checksums)}")
    mirrors = tuple(mirrors)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        final = dest / name
        paths.append(final)
        if final.is_file():
            continue
        want = _as_checksum(checksums[name])
        errors = []
        for base in mirrors:
            url = base if base.endswith("/") else base + "/"
            url += name
            fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out:
                    _fetch_to(url, out, want.size, progress, name, timeout)
                verify_file(tmp, name, checksums)
                os.replace(tmp, final)
                tmp = None
                break
            except Exception as exc:  # any failure: try the next mirror
                errors.append(f"  {url}: {type(exc).__name__}: {exc}")
            finally:
                if tmp is not None:
                    try:
                        os.unlink(tmp)
                    except FileNotFoundError:
                        pass
        else:
            tried = "\n".join(errors) if errors else "  (no mirrors given)"
            raise MNISTNotFoundError(
                f"could not download {name} into {dest}; tried:\n{tried}\n"
                "Without network access, copy the files by hand. " + _how_to_fix(dest)
            )
    return paths


def verify_mnist(data_dir=None):
    """Check size and md5 of the MNIST files present in the data directory.

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
