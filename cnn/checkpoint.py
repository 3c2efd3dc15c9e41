"""NumPy ``.npz`` files for networks and training checkpoints, without pickle.

An ``.npz`` written here holds the same struct as :func:`cnn.matlab.save_cnn`
(the original's field names, MATLAB layouts): the scalar and text fields as
one JSON string ``struct``, every parameter array as ``layers{l}.K`` etc., and
the training position and settings as JSON ``meta``. It is read with
``allow_pickle=False`` and validated by the same code as a MAT-file, so a bad
file fails with :class:`cnn.matlab.CNNFileError`.

:func:`write_checkpoint` writes a ``.npz`` and a ``.mat`` side by side, each
atomically (temporary file, then rename).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .matlab import CNNFileError, from_matlab_struct, save_cnn, to_matlab_struct

FORMAT = "cnn-npz-1"
_ARRAY_FIELDS = ("K", "b", "W")


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
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, header=np.array(json.dumps(header)), struct=np.array(json.dumps(top)),
                     meta=np.array(json.dumps(meta or {})), **arrays)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _open(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise CNNFileError(f"{path} is not a readable .npz file ({type(exc).__name__}: {exc})") \
            from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise CNNFileError(f"{path} is a single .npy array, not a network .npz file")
    return z


def _json(z, key, path):
    try:
        a = z[key]
        if a.dtype.kind != "U" or a.shape != ():
            raise ValueError(f"{key!r} is not a text scalar")
        value = json.loads(str(a))
    except KeyError:
        raise CNNFileError(f"{path} has no {key!r} entry: not a network saved by cnn") from None
    except Exception as exc:  # corrupt zip member: BadZipFile, NotImplementedError, ...
        raise CNNFileError(f"{path}: bad {key!r} entry ({type(exc).__name__}: {exc})") from None
    if not isinstance(value, dict):
        raise CNNFileError(f"{path}: {key!r} must be a JSON object")
    return value


def load_npz(path, *, mode=None, dtype=None):
    """Read a network written by :func:`save_npz`.

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
    """
    with _open(path) as z:
        header = _json(z, "header", path)
        if header.get("format") != FORMAT:
            raise CNNFileError(f"{path}: unknown format {header.get('format')!r} "
                               f"(expected {FORMAT!r})")
        top = _json(z, "struct", path)
        layers = top.get("layers")
        if not isinstance(layers, list):
            raise CNNFileError(f"{path}: 'struct' has no list of layers")
        try:
            for l, layer in enumerate(layers, start=1):
                if not isinstance(layer, dict):
                    raise CNNFileError(f"{path}: layer {l} is not an object")
                for k in _ARRAY_FIELDS:
                    key = f"layers{{{l}}}.{k}"
                    if key in z.files:
                        layer[k] = z[key]
            if "loss_array" in z.files:
                top["loss_array"] = z["loss_array"]
        except CNNFileError:
            raise
        except Exception as exc:  # corrupt zip members, bad array headers, ...
            raise CNNFileError(f"{path}: cannot read arrays ({type(exc).__name__}: {exc})") \
                from None
    if dtype is None:
        dtype = np.float32 if header.get("dtype") == "float32" else np.float64
    try:
        return from_matlab_struct(top, mode=mode, dtype=dtype)
    except CNNFileError as exc:
        raise CNNFileError(f"{path}: {exc}") from None


def load_npz_meta(path):
    """The ``meta`` dict stored by :func:`save_npz` (e.g. the training position)."""
    with _open(path) as z:
        return _json(z, "meta", path)


def write_checkpoint(prefix, net, meta=None):
    """Write ``prefix.npz`` and ``prefix.mat`` (variable ``cnn``), each atomically.

    Returns
    -------
    (Path, Path)
        The two files written.
    """
    prefix = Path(prefix)
    npz, mat = prefix.with_name(prefix.name + ".npz"), prefix.with_name(prefix.name + ".mat")
    save_npz(npz, net, meta)
    save_cnn(mat, net, runtime=False)
    return npz, mat
