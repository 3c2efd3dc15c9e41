"""NumPy ``.npz`` files for networks and training checkpoints, without pickle.

An ``.npz`` written here holds the same struct as :func:`cnn.matlab.save_cnn`
(the original's field names, MATLAB layouts): the scalar and text fields as
one JSON string ``struct``, every parameter array as ``layers{l}.K`` etc., and
the training position and settings as JSON ``meta``. It is read with
``allow_pickle=False`` and validated by the same code as a MAT-file, so a bad
file fails with :class:`cnn.matlab.CNNFileError`.

:func:`write_checkpoint` writes a ``.npz`` and a ``.mat`` side by side, each
atomically (:mod:`cnn.atomic`), in an order that never leaves a mismatched
pair (the ``.mat`` is stamped with the ``.npz``'s :func:`checkpoint_id`).

Reading never trusts what a file declares: a member's ``.npy`` header is
checked (shape against its layer, no object arrays, size within
:func:`cnn.safeio.size_limit`) before its data is read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct as _struct
import zipfile
from pathlib import Path

import numpy as np
import scipy.io

from .atomic import atomic_write
from .matlab import (
    EXPECTED,
    CNNFileError,
    DeclaredArray,
    from_matlab_struct,
    read_struct,
    to_matlab_struct,
)
from .safeio import describe_file, open_regular, size_limit

FORMAT = "cnn-npz-1"
_ARRAY_FIELDS = ("K", "b", "W")
MAX_MEMBERS = 4096
"""Most members a network ``.npz`` may hold (it needs 4 + 3 per layer)."""
MAX_JSON_CHARS = 1 << 22
"""Longest JSON entry (``header``, ``struct``, ``meta``) accepted, in characters."""


def _split(struct):
    """Struct dict -> (JSON-able dict, {name: array}) with arrays pulled out."""
    arrays = {}
    top = {k: v for k, v in struct.items() if k not in ("layers", "loss_array")}
    if "loss_array" in struct:
        arrays["loss_array"] = np.asarray(struct["loss_array"], dtype=np.float64).ravel()
    layers = []
    for l, layer in enumerate(struct["layers"][0], start=1):
        d = {}
        for k, v in layer.items():
            if k in _ARRAY_FIELDS:
                arrays[f"layers{{{l}}}.{k}"] = np.asarray(v, dtype=np.float64)
            else:
                d[k] = v
        layers.append(d)
    top["layers"] = layers
    return top, arrays


def save_npz(path, net, meta=None):
    """Write ``net`` (parameters and settings, no runtime arrays) to ``path`` atomically.

    Parameters
    ----------
    path : str or Path
        Should end in ``.npz``.
    net : CNN
    meta : dict, optional
        JSON-serialisable extra information (e.g. the training position).
    """
    path = Path(path)
    top, arrays = _split(to_matlab_struct(net, runtime=False))
    header = {"format": FORMAT, "dtype": np.dtype(net.dtype).name}
    with atomic_write(path) as fh:
        np.savez(
            fh,
            header=np.array(json.dumps(header)),
            struct=np.array(json.dumps(top)),
            meta=np.array(json.dumps(meta or {})),
            **arrays,
        )


def _zip_entries(fh, size):
    """The member count from a zip's end record (``None`` when there is none to read)."""
    tail_len = min(size, 22 + 65535)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    i = tail.rfind(b"PK\x05\x06")
    if i < 0 or len(tail) - i < 22:
        return None
    return _struct.unpack("<H", tail[i + 10 : i + 12])[0]


class _Npz:
    """A network ``.npz`` opened for reading: member headers first, data only when checked.

    Every member is read with its ``.npy`` header checked first (no object
    arrays, a size within the file's limit), so nothing that a member declares
    is allocated before it is known to fit.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.fh = open_regular(path, CNNFileError, "a network file")
        try:
            self.size = os.fstat(self.fh.fileno()).st_size
            self.limit = size_limit(self.size)
            self.used = 0
            head = self.fh.read(1024)
            entries = _zip_entries(self.fh, self.size) if head.startswith(b"PK") else None
            if entries is None:
                raise CNNFileError(
                    f"{path} is {describe_file(head)}, not a network file (expected {EXPECTED})"
                )
            if entries > MAX_MEMBERS:
                raise CNNFileError(
                    f"{path} is a zip archive of {entries} members, not a "
                    f"network .npz (at most {MAX_MEMBERS})"
                )
            self.fh.seek(0)
            try:
                self.zf = zipfile.ZipFile(self.fh)
            except Exception as exc:  # BadZipFile, struct.error, OverflowError, ...
                raise CNNFileError(f"{path} is a damaged zip archive ({exc})") from None
            self.members = {
                i.filename[:-4]: i for i in self.zf.infolist() if i.filename.endswith(".npy")
            }
            if "header" not in self.members:
                found = ", ".join(i.filename for i in self.zf.infolist()[:5]) or "nothing"
                raise CNNFileError(
                    f"{path} is a zip archive but not a network saved by cnn: "
                    f"it has no 'header' member (it holds {found})"
                )
        except BaseException:
            self.fh.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()

    def __contains__(self, key):
        return key in self.members

    def _fail(self, key, exc):
        return CNNFileError(
            f"{self.path}: bad {key!r} entry ({type(exc).__name__}: {str(exc)[:120]})"
        )

    def declared(self, key):
        """``(shape, dtype)`` from the member's ``.npy`` header, without reading its data."""
        info = self.members[key]
        try:
            with self.zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f".npy format version {version} is not supported")
        except Exception as exc:  # corrupt zip member, bad header, ...
            raise self._fail(key, exc) from None
        if dtype.hasobject:
            raise CNNFileError(
                f"{self.path}: {key!r} is an array of Python objects; a network "
                f"file holds only numbers and text"
            )
        return tuple(shape), dtype

    def read(self, key):
        """The member's array, after checking its declared size against the file's limit."""
        shape, dtype = self.declared(key)
        nbytes = math.prod(shape) * dtype.itemsize
        self.used += nbytes
        if self.used > self.limit:
            raise CNNFileError(
                f"{self.path}: {key!r} declares {nbytes / 2**20:.1f} MiB, more "
                f"than the {self.limit / 2**20:.1f} MiB a file of this size may "
                f"hold"
            )
        if nbytes > self.members[key].file_size:
            raise CNNFileError(f"{self.path}: {key!r} declares more data than it holds")
        try:
            with self.zf.open(self.members[key]) as f:
                return np.lib.format.read_array(f, allow_pickle=False)
        except Exception as exc:  # truncated data, CRC error, ...
            raise self._fail(key, exc) from None

    def lazy(self, key):
        """The member as a :class:`cnn.matlab.DeclaredArray` (header read, data not yet)."""
        shape, dtype = self.declared(key)
        return DeclaredArray(shape, dtype, lambda: self.read(key))

    def json(self, key):
        """The JSON object stored as a text scalar in member ``key``."""
        if key not in self.members:
            raise CNNFileError(f"{self.path} has no {key!r} entry: not a network saved by cnn")
        shape, dtype = self.declared(key)
        if dtype.kind != "U" or shape != () or dtype.itemsize > 4 * MAX_JSON_CHARS:
            raise CNNFileError(
                f"{self.path}: {key!r} is not a JSON text (got "
                f"{'x'.join(map(str, shape)) or 'a scalar'} of {dtype})"
            )
        try:
            value = json.loads(str(self.read(key)))
        except CNNFileError:
            raise
        except Exception as exc:  # JSONDecodeError, RecursionError, ...
            raise self._fail(key, exc) from None
        if not isinstance(value, dict):
            raise CNNFileError(f"{self.path}: {key!r} must be a JSON object")
        return value


def load_npz(path, *, mode=None, dtype=None):
    """Read a network written by :func:`save_npz`.

    Each array is checked (declared shape against its layer, no object arrays,
    size within :func:`cnn.safeio.size_limit` of the file) before it is read.

    Parameters
    ----------
    path : str or Path
    mode : {"faithful", "corrected"}, optional
        Default: the stored mode.
    dtype : float64 or float32, optional
        Default: the stored dtype.

    Returns
    -------
    CNN

    Raises
    ------
    FileNotFoundError
        No such file.
    CNNFileError
        Anything else that is not a consistent network (one line).
    """
    with _Npz(path) as z:
        header = z.json("header")
        if header.get("format") != FORMAT:
            raise CNNFileError(
                f"{path}: unknown format {_text(header.get('format'))} (expected {FORMAT!r})"
            )
        top = z.json("struct")
        layers = top.get("layers")
        if not isinstance(layers, list):
            raise CNNFileError(f"{path}: 'struct' has no list of layers")
        for l, layer in enumerate(layers, start=1):
            if not isinstance(layer, dict):
                raise CNNFileError(f"{path}: layer {l} is not an object")
            for k in _ARRAY_FIELDS:  # arrays come from their members only
                layer.pop(k, None)
                key = f"layers{{{l}}}.{k}"
                if key in z:
                    layer[k] = z.lazy(key)
        top.pop("loss_array", None)
        if "loss_array" in z:
            top["loss_array"] = z.lazy("loss_array")
        if dtype is None:
            dtype = np.float32 if header.get("dtype") == "float32" else np.float64
        try:
            return from_matlab_struct(top, mode=mode, dtype=dtype, limit=z.limit)
        except CNNFileError as exc:
            raise CNNFileError(f"{path}: {exc}") from None


def _text(v):
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def load_npz_meta(path):
    """The ``meta`` dict stored by :func:`save_npz` (e.g. the training position)."""
    with _Npz(path) as z:
        z.json("header")  # a network file's, not any zip's
        return z.json("meta")


def checkpoint_id(net, meta):
    """The digest that ties a checkpoint's ``.mat`` to its ``.npz``.

    sha256 of the parameters (float64, MATLAB names in order) and the meta.

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    h = hashlib.sha256(json.dumps(meta or {}, sort_keys=True, default=str).encode())
    for i, name, a in net.parameters():
        h.update(f"{i}.{name}".encode())
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()


def _named(exc, path):
    """``exc`` as an OSError whose message and ``filename`` name ``path`` (not a temp file)."""
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def write_checkpoint(prefix, net, meta=None):
    """Write ``prefix.npz`` and ``prefix.mat`` (variable ``cnn``) so that they never disagree.

    The ``.npz`` is the checkpoint (resuming reads it); the ``.mat`` is the
    same network for MATLAB/Octave, derived from it and stamped with the same
    :func:`checkpoint_id` (the ``.npz`` meta's ``checkpoint_id``, the struct's
    ``checkpoint_id`` field). The order makes a mismatched pair impossible:
    the old ``.mat`` is removed first, then the ``.npz`` and the ``.mat`` are
    each written atomically (:func:`cnn.atomic.atomic_write`). A kill or
    failure in between leaves a consistent ``.npz`` (old or new) and either
    no ``.mat`` or the one of the same checkpoint; :func:`verify_checkpoint`
    checks a pair, :func:`write_mat_of` re-derives the ``.mat``.

    Returns
    -------
    (Path, Path)
        The two files written.

    Raises
    ------
    OSError
        Its ``filename`` is the file that could not be written (``.npz`` or ``.mat``).
    """
    prefix = Path(prefix)
    npz, mat = prefix.with_name(prefix.name + ".npz"), prefix.with_name(prefix.name + ".mat")
    meta = dict(meta or {})
    meta["checkpoint_id"] = checkpoint_id(net, meta)
    try:
        mat.unlink(missing_ok=True)
    except OSError as exc:
        raise _named(exc, mat) from exc
    try:
        save_npz(npz, net, meta)
    except OSError as exc:
        raise _named(exc, npz) from exc
    _write_mat(mat, net, meta["checkpoint_id"])
    return npz, mat


def _write_mat(mat, net, ident):
    struct = to_matlab_struct(net, runtime=False)
    struct["checkpoint_id"] = ident
    try:
        with atomic_write(mat) as fh:
            scipy.io.savemat(fh, {"cnn": struct}, do_compression=True, oned_as="row")
    except OSError as exc:
        raise _named(exc, mat) from exc


def write_mat_of(npz):
    """(Re)write the ``.mat`` beside a checkpoint ``.npz`` from it (stamped); returns its path."""
    npz = Path(npz)
    ident = load_npz_meta(npz).get("checkpoint_id")
    if not isinstance(ident, str):
        raise CNNFileError(f"{npz} has no checkpoint_id: not a checkpoint .npz")
    mat = npz.with_suffix(".mat")
    _write_mat(mat, load_npz(npz), ident)
    return mat


def verify_checkpoint(prefix):
    """Check that ``prefix.mat`` (when present) is the network of ``prefix.npz``.

    Returns
    -------
    (Path, Path or None)
        The ``.npz`` and the ``.mat`` (``None`` when there is none: a write
        was interrupted; :func:`write_mat_of` makes it again).

    Raises
    ------
    CNNFileError
        Either file unreadable, or the ``.mat`` stamped for another checkpoint.
    """
    prefix = Path(prefix)
    npz, mat = prefix.with_name(prefix.name + ".npz"), prefix.with_name(prefix.name + ".mat")
    ident = load_npz_meta(npz).get("checkpoint_id")
    if not mat.exists():
        return npz, None
    s, _ = read_struct(mat, "cnn")
    stamp = s.get("checkpoint_id") if isinstance(s, dict) else None
    if not isinstance(ident, str) or stamp != ident:
        raise CNNFileError(
            f"{mat} is not the network of {npz} (its checkpoint_id differs); "
            f"the .npz is authoritative"
        )
    return npz, mat
