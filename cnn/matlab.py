"""MAT-file interop: read and write the original's ``cnn`` struct.

All conversion between the Python layout (batch first) and MATLAB's lives
here:

=====================  ===============================  ==============================
field                  Python (``cnn.network``)         MATLAB struct
=====================  ===============================  ==============================
conv ``K``, ``dK``     ``(M, P, kh, kw)``               ``kh x kw x (M*P)``, slice ``(j-1)*P+k``
conv ``b``, ``db``     ``(M,)``                         ``1 x M``
FC ``W``, ``dW``       ``(n, n_in)``                    ``n x n_in`` (the same)
FC ``b``, ``db``       ``(n,)``                         ``n x 1``
``featuremaps``        ``(N, M, H, W)``                 cell ``{M}`` of ``H x W x N``
conv/pool ``er``       ``(N, M, H, W)``                 cell ``{M}`` of ``H x W x N``
FC ``er``              ``(N, n)``                       cell ``{1}`` of ``n x N``
``outputs``            ``(N, n)``                       ``n x N``
=====================  ===============================  ==============================

:func:`load_cnn` reads a struct written by the original (``savecnn`` writes a
variable ``cnn1``; the reference files hold ``cnn_init`` and ``cnn``), by GNU
Octave (``-v7``) or by :func:`save_cnn`, and returns a network ready to train.
"""

from __future__ import annotations

import math
import os
import reprlib
from pathlib import Path

import numpy as np
import scipy.io

from . import matv5
from .activations import ACTIVATIONS
from .atomic import atomic_write
from .network import CNN, LOSSES, MODES, POOL_METHODS, ConvLayer, FCLayer, InputLayer, PoolLayer
from .safeio import describe_file, open_regular, size_limit

EXPECTED = "a .npz written by cnn or a MAT-file holding the network struct"


class CNNFileError(ValueError):
    """A file that cannot be read as a network (missing variable, bad fields, corrupt)."""


class DeclaredArray:
    """An array known by its declared shape and dtype, read only when asked.

    :func:`from_matlab_struct` checks ``shape`` and ``dtype`` against the layer
    before calling :meth:`read`, so a member of a ``.npz`` that declares the
    wrong or a huge shape is refused before anything is allocated.

    Parameters
    ----------
    shape : tuple of int
    dtype : numpy.dtype
    read : callable
        ``read()`` returns the array (of that shape and dtype).
    """

    __slots__ = ("shape", "dtype", "_read")

    def __init__(self, shape, dtype, read):
        self.shape, self.dtype, self._read = tuple(shape), np.dtype(dtype), read

    def read(self):
        return self._read()


# --------------------------------------------------------------------------- layouts


def kernels_to_matlab(K):
    """``(M, P, kh, kw)`` -> MATLAB ``kh x kw x (M*P)``, slice ``j*P + k`` is ``K[j, k]``."""
    M, P, kh, kw = K.shape
    return np.ascontiguousarray(K.transpose(2, 3, 0, 1)).reshape(kh, kw, M * P)


def kernels_from_matlab(Km, n_maps, n_prev_maps, kh, kw):
    """MATLAB ``kh x kw x (M*P)`` (trailing singleton dimensions may be missing) ->
    ``(M, P, kh, kw)``."""
    Km = np.asarray(Km, dtype=np.float64)
    if Km.size != n_maps * n_prev_maps * kh * kw:
        raise CNNFileError(f"K has {Km.size} values, expected {kh}x{kw}x{n_maps * n_prev_maps}")
    Km = Km.reshape(kh, kw, n_maps * n_prev_maps, order="F")
    return np.ascontiguousarray(Km.reshape(kh, kw, n_maps, n_prev_maps).transpose(2, 3, 0, 1))


def maps_to_matlab(fm):
    """``(N, M, H, W)`` -> list of M arrays ``H x W x N`` (MATLAB ``featuremaps{j}``)."""
    return [np.ascontiguousarray(fm[:, j].transpose(1, 2, 0)) for j in range(fm.shape[1])]


def maps_from_matlab(arr):
    """A fixture's ``H x W x N x M`` (or ``H x W x N`` for one map) -> ``(N, M, H, W)``."""
    arr = np.asarray(arr)
    if arr.ndim == 3:
        arr = arr[..., None]
    return np.ascontiguousarray(arr.transpose(2, 3, 0, 1))


def _cell(items):
    """A MATLAB cell row vector ``{1 x len(items)}``."""
    c = np.empty((1, len(items)), dtype=object)
    for i, it in enumerate(items):
        c[0, i] = it
    return c


# --------------------------------------------------------------------------- save


def to_matlab_struct(net, runtime=True):
    """The network as a dict that ``scipy.io.savemat`` writes as the original's struct.

    With ``runtime=True``, the runtime fields (``featuremaps``, ``outputs``,
    ``er``, ``dK``/``dW``/``db``, ``loss``) are included when the network has
    them. ``loss_array`` and ``CalcLastLayerActDerivative`` are always included
    when set.
    """
    inp = net.layers[0]
    s = {
        "namaste": 1.0,
        "input_image_height": float(inp.height),
        "input_image_width": float(inp.width),
        "no_of_input_channels": float(inp.n_maps),
        "no_of_layers": float(net.no_of_layers),
        "loss_func": net.loss_func,
        "regularization_const": float(net.regularization_const),
        "learning_rate": float(net.learning_rate),
        "mode": net.mode,  # not in the original; MATLAB ignores it
    }
    if net.calc_last_layer_act_derivative is not None:
        s["CalcLastLayerActDerivative"] = float(net.calc_last_layer_act_derivative)
    if runtime and net.loss is not None:
        s["loss"] = float(net.loss)
    if net.loss_array:
        s["loss_array"] = np.asarray(net.loss_array, dtype=np.float64)[None, :]
    layers = []
    for i, layer in enumerate(net.layers):
        d = {"type": layer.type}
        if layer.type == "i":
            d.update(
                no_featuremaps=float(layer.n_maps),
                featuremap_width=float(layer.width),
                featuremap_height=float(layer.height),
                prev_layer_no_featuremaps=0.0,
            )
        elif layer.type == "c":
            d.update(
                no_featuremaps=float(layer.n_maps),
                kernel_width=float(layer.kernel_width),
                kernel_height=float(layer.kernel_height),
                featuremap_width=float(layer.width),
                featuremap_height=float(layer.height),
                prev_layer_no_featuremaps=float(layer.n_prev_maps),
                K=kernels_to_matlab(np.asarray(layer.K, np.float64)),
                b=np.asarray(layer.b, np.float64)[None, :],
                act_func=layer.act_func,
            )
            if runtime and layer.dK is not None:
                d["dK"] = kernels_to_matlab(np.asarray(layer.dK, np.float64))
                d["db"] = np.asarray(layer.db, np.float64)[None, :]
        elif layer.type == "p":
            d.update(
                subsample_rate=float(layer.rate),
                subsample_method=layer.method,
                no_featuremaps=float(layer.n_maps),
                featuremap_width=float(layer.width),
                featuremap_height=float(layer.height),
                act_func="none",
            )
        else:
            d.update(
                no_of_nodes=float(layer.n_nodes),
                act_func=layer.act_func,
                no_of_inputs=float(layer.n_inputs),
                convert_input_to_1D=float(net.layers[i - 1].type != "f"),
                W=np.asarray(layer.W, np.float64),
                b=np.asarray(layer.b, np.float64)[:, None],
            )
            if runtime and layer.dW is not None:
                d["dW"] = np.asarray(layer.dW, np.float64)
                d["db"] = np.asarray(layer.db, np.float64)[:, None]
        if not runtime:
            layers.append(d)
            continue
        if layer.featuremaps is not None:
            d["featuremaps"] = _cell(maps_to_matlab(np.asarray(layer.featuremaps, np.float64)))
        if layer.outputs is not None:
            d["outputs"] = np.asarray(layer.outputs, np.float64).T
        if layer.er is not None:
            er = np.asarray(layer.er, np.float64)
            d["er"] = _cell([er.T] if layer.type == "f" else maps_to_matlab(er))
        layers.append(d)
    s["layers"] = _cell(layers)
    return s


def save_cnn(path, net, var="cnn", *, runtime=True):
    """Write ``net`` to a MAT-file (v5, readable by MATLAB and Octave) as variable ``var``.

    The struct has the original's field names and layouts (see the module
    docstring). The file is written with :func:`cnn.atomic.atomic_write`, so a
    failure never leaves a half-written file.

    Parameters
    ----------
    path : str or Path
    net : CNN
    var : str
        Variable name (the original's ``savecnn`` uses ``cnn1``).
    runtime : bool
        Also write the maps, outputs, errors and gradients of the last
        ffcnn/bpcnn (for comparing with a MATLAB run field by field).
    """
    if not isinstance(net, CNN):
        raise TypeError(f"net must be a CNN, got {type(net).__name__}")
    if not isinstance(var, str) or not var.isidentifier():
        raise ValueError(f"var must be a valid MATLAB variable name, got {var!r}")
    struct = to_matlab_struct(net, runtime)
    with atomic_write(Path(path)) as fh:
        scipy.io.savemat(fh, {var: struct}, do_compression=True, oned_as="row")


# --------------------------------------------------------------------------- load


def _get(d, key, where, required=True):
    if key in d:
        return d[key]
    if required:
        raise CNNFileError(f"{where} has no field {key!r}")
    return None


def _num(d, key, where, required=True, integer=True, minimum=0):
    v = _get(d, key, where, required)
    if v is None and key not in d:
        return None
    try:
        a = np.asarray(v)
    except (ValueError, TypeError, OverflowError):
        a = np.asarray(None)
    if a.dtype.kind not in "biuf" or a.size != 1 or not np.isfinite(a).all():
        raise CNNFileError(f"{where}.{key} must be a finite number, got {_short(v)}")
    x = float(a.ravel()[0])
    if integer:
        if not x.is_integer() or x < minimum or x > 2**31:
            raise CNNFileError(f"{where}.{key} must be an integer >= {minimum}, got {x}")
        return int(x)
    return x


def _text(d, key, where, valid=None):
    v = _get(d, key, where)
    if isinstance(v, np.ndarray) and v.dtype.kind == "U" and v.size == 1:
        v = str(v.ravel()[0])
    if not isinstance(v, str):
        raise CNNFileError(f"{where}.{key} must be text, got {type(v).__name__}")
    if valid is not None and v not in valid:
        raise CNNFileError(f"{where}.{key} = {_short(v)} is not valid; valid: {', '.join(valid)}")
    return v


def _short(v):
    """A short ``repr`` for messages (a tampered field may hold megabytes)."""
    r = reprlib.Repr()  # keyword arguments to Repr() need Python 3.12
    r.maxstring, r.maxother, r.maxlist, r.maxdict = 40, 40, 4, 4
    return r.repr(v)


def _shape_text(shape):
    return "x".join(str(n) for n in shape) if shape else "a scalar"


def _declared(v, where, key):
    """``(shape, dtype, read)`` of a field value, without reading a :class:`DeclaredArray`."""
    if isinstance(v, DeclaredArray):
        return v.shape, v.dtype, v.read
    try:
        a = np.asarray(v)
    except (ValueError, TypeError, OverflowError):
        raise CNNFileError(f"{where}.{key} is not an array of numbers: {_short(v)}") from None
    return a.shape, a.dtype, lambda: a


def _squeezed(shape):
    return tuple(n for n in shape if n != 1)


class _Budget:
    """Bytes of parameters read so far, against the file's limit."""

    def __init__(self, limit):
        self.limit, self.used = limit, 0

    def take(self, nbytes, what):
        self.used += nbytes
        if self.limit is not None and self.used > self.limit:
            raise CNNFileError(
                f"{what} would need {self.used / 2**20:.1f} MiB, more than the "
                f"{self.limit / 2**20:.1f} MiB a file of this size may hold"
            )


def _param(d, key, where, shape, budget):
    """Parameter ``key`` in MATLAB layout ``shape``, checked before it is read.

    The stored shape must be ``shape`` up to singleton dimensions (MATLAB drops
    trailing ones, ``squeeze_me`` drops all): those never change the
    column-major order of the values, while a transposed or reshaped array
    does, and is refused.
    """
    v = _get(d, key, where)
    got, dtype, read = _declared(v, where, key)
    if dtype.kind not in "biuf":
        raise CNNFileError(f"{where}.{key} must hold real numbers, got {dtype} values")
    if _squeezed(got) != _squeezed(shape) or math.prod(got) != math.prod(shape):
        hint = " (stored transposed?)" if len(got) == 2 and got == tuple(shape[::-1]) else ""
        raise CNNFileError(
            f"{where}.{key} has shape {_shape_text(got)}, expected {_shape_text(shape)}{hint}"
        )
    budget.take(8 * math.prod(shape), f"{where}.{key}")
    a = np.asarray(read(), dtype=np.float64).reshape(shape, order="F")
    if not np.isfinite(a).all():
        raise CNNFileError(f"{where}.{key} contains NaN or Inf")
    return a


def _loss_array(v, budget):
    """``cnn.loss_array``: a vector of real numbers (MATLAB ``1 x n``; empty is ``0 x 0``)."""
    shape, dtype, read = _declared(v, "cnn", "loss_array")
    n = math.prod(shape)
    if dtype.kind not in "biuf" or (n and len(_squeezed(shape)) > 1):
        raise CNNFileError(
            f"cnn.loss_array must be a vector of real numbers, got {_shape_text(shape)} of {dtype}"
        )
    budget.take(8 * n, "cnn.loss_array")
    return [float(x) for x in np.asarray(read(), dtype=np.float64).ravel(order="F")]


def from_matlab_struct(s, *, mode=None, dtype=np.float64, seed=None, limit=None):
    """Build a :class:`CNN` from a struct read by ``scipy.io.loadmat(..., simplify_cells=True)``.

    Only the construction fields and parameters are read (plus ``loss_func``,
    ``learning_rate``, ``CalcLastLayerActDerivative`` and ``loss_array`` when
    present); runtime arrays are ignored. Sizes are checked for consistency and
    every parameter's exact MATLAB shape (``K`` ``kh x kw x (M*P)``, conv ``b``
    ``1 x M``, ``W`` ``n x n_in``, FC ``b`` ``n x 1``; singleton dimensions may
    be missing) before it is read. Array fields may be :class:`DeclaredArray`
    (read only after the check); ``limit`` bounds the bytes they may need.
    """
    budget = _Budget(limit)
    if not isinstance(s, dict):
        raise CNNFileError(f"the variable is not a struct (got {type(s).__name__})")
    layers_in = _get(s, "layers", "cnn")
    if isinstance(layers_in, dict):
        layers_in = [layers_in]
    if isinstance(layers_in, np.ndarray) and layers_in.dtype == object:
        layers_in = list(layers_in.ravel())
    if not isinstance(layers_in, list) or not layers_in:
        raise CNNFileError("cnn.layers must be a non-empty cell array of structs")
    n_layers = _num(s, "no_of_layers", "cnn", required=False, minimum=1)
    if n_layers is not None and n_layers != len(layers_in):
        raise CNNFileError(
            f"cnn.no_of_layers = {n_layers} but cnn.layers has {len(layers_in)} entries"
        )
    file_mode = s.get("mode")
    if mode is None:
        mode = file_mode if isinstance(file_mode, str) and file_mode in MODES else "faithful"
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not valid; valid: {', '.join(MODES)}")
    layers = []
    for i, L in enumerate(layers_in):
        where = f"cnn.layers{{{i + 1}}}"
        if not isinstance(L, dict):
            raise CNNFileError(f"{where} is not a struct")
        t = _text(L, "type", where, valid=("i",) if i == 0 else ("c", "p", "f"))
        prev = layers[-1] if layers else None
        if prev is not None and prev.type == "f" and t != "f":
            raise CNNFileError(f"{where}: a {t!r} layer cannot follow an FC layer")
        if t == "i":
            C = _num(L, "no_featuremaps", where, minimum=1)
            H = _num(s, "input_image_height", "cnn", required=False, minimum=1)
            W = _num(s, "input_image_width", "cnn", required=False, minimum=1)
            H = H if H is not None else _num(L, "featuremap_height", where, minimum=1)
            W = W if W is not None else _num(L, "featuremap_width", where, minimum=1)
            layers.append(InputLayer(n_maps=C, height=H, width=W))
        elif t == "c":
            M = _num(L, "no_featuremaps", where, minimum=1)
            kh = _num(L, "kernel_height", where, minimum=1)
            kw = _num(L, "kernel_width", where, minimum=1)
            P = prev.n_maps  # savecnn drops prev_layer_no_featuremaps: derive it
            p_file = _num(L, "prev_layer_no_featuremaps", where, required=False)
            if p_file is not None and p_file != P:
                raise CNNFileError(
                    f"{where}.prev_layer_no_featuremaps = {p_file}, but the "
                    f"layer below has {P} maps"
                )
            H, W = prev.map_shape
            if kh > H or kw > W:
                raise CNNFileError(f"{where}: kernel {kh}x{kw} larger than its input {H}x{W}")
            act = _text(L, "act_func", where, valid=ACTIVATIONS)
            K = kernels_from_matlab(_param(L, "K", where, (kh, kw, M * P), budget), M, P, kh, kw)
            b = _param(L, "b", where, (1, M), budget).ravel()
            layers.append(
                ConvLayer(
                    act_func=act,
                    n_maps=M,
                    n_prev_maps=P,
                    kernel_height=kh,
                    kernel_width=kw,
                    height=H - kh + 1,
                    width=W - kw + 1,
                    K=K.astype(dtype),
                    b=b.astype(dtype),
                )
            )
        elif t == "p":
            r = _num(L, "subsample_rate", where, minimum=1)
            method = _text(L, "subsample_method", where, valid=POOL_METHODS)
            H, W = prev.map_shape
            if r > H or r > W:
                raise CNNFileError(f"{where}: rate {r} larger than its input {H}x{W}")
            layers.append(
                PoolLayer(
                    act_func="none",
                    rate=r,
                    method=method,
                    n_maps=prev.n_maps,
                    height=H // r,
                    width=W // r,
                )
            )
        else:
            n = _num(L, "no_of_nodes", where, minimum=1)
            n_in = prev.n_nodes if prev.type == "f" else prev.n_maps * prev.height * prev.width
            n_file = _num(L, "no_of_inputs", where, required=False)
            if n_file is not None and n_file != n_in:
                raise CNNFileError(
                    f"{where}.no_of_inputs = {n_file}, but the layer below gives {n_in}"
                )
            act = _text(L, "act_func", where, valid=ACTIVATIONS)
            Wm = _param(L, "W", where, (n, n_in), budget)
            b = _param(L, "b", where, (n, 1), budget).ravel()
            layers.append(
                FCLayer(
                    act_func=act,
                    n_nodes=n,
                    n_inputs=n_in,
                    W=np.ascontiguousarray(Wm, dtype=dtype),
                    b=b.astype(dtype),
                )
            )
    lr = _num(s, "learning_rate", "cnn", required=False, integer=False)
    if lr is not None and not lr > 0:
        raise CNNFileError(f"cnn.learning_rate must be positive, got {lr}")
    loss_func = _text(s, "loss_func", "cnn", valid=LOSSES) if "loss_func" in s else "auto"
    net = CNN(
        layers=layers,
        mode=mode,
        learning_rate=0.01 if lr is None else lr,
        loss_func=loss_func,
        rng=np.random.default_rng(seed),
        dtype=np.dtype(dtype).type,
    )
    flag = _num(s, "CalcLastLayerActDerivative", "cnn", required=False)
    if flag is not None:
        if flag not in (0, 1):
            raise CNNFileError(f"cnn.CalcLastLayerActDerivative must be 0 or 1, got {flag}")
        net.calc_last_layer_act_derivative = bool(flag)
    if "loss_array" in s:
        net.loss_array = _loss_array(s["loss_array"], budget)
    return net


def loadmat_checked(path, variable_names=None, **kwargs):
    """``scipy.io.loadmat`` for files that may be hostile: scanned first, then read.

    The variables to be read are walked by :func:`cnn.matv5.scan` (nesting
    depth, element count and declared array bytes bounded), so a file that
    would crash SciPy's reader or exhaust memory is refused with one line.

    Parameters
    ----------
    path : str or Path
        A regular file (a folder, FIFO or device is refused).
    variable_names : list of str, optional
        As for ``loadmat``; ``None`` reads (and scans) every variable.
    **kwargs
        Passed to ``scipy.io.loadmat`` (e.g. ``simplify_cells=True``).

    Returns
    -------
    dict
        What ``loadmat`` returns.

    Raises
    ------
    FileNotFoundError, CNNFileError
    """
    path = Path(path)
    with open_regular(path, CNNFileError, "a MAT-file") as fh:
        size = os.fstat(fh.fileno()).st_size
        try:
            matv5.scan(fh, size, size_limit(size), variable_names)
        except matv5.NotMatV5Error:
            fh.seek(0)
            raise CNNFileError(
                f"{path} is {describe_file(fh.read(1024))}, not a MAT-file"
            ) from None
        except matv5.MatScanError as exc:
            raise CNNFileError(f"{path}: refused: {exc}") from None
        fh.seek(0)
        try:
            return scipy.io.loadmat(fh, variable_names=variable_names, **kwargs)
        except Exception as exc:  # corrupt data the header scan cannot see
            raise CNNFileError(
                f"{path}: cannot read it ({type(exc).__name__}: {_short(str(exc))})"
            ) from None


def read_struct(path, var="cnn"):
    """Variable ``var`` of a MAT-file as ``loadmat(..., simplify_cells=True)`` gives it.

    The file is scanned first (:func:`cnn.matv5.scan`: nesting depth, element
    count and declared array bytes bounded) and read by SciPy only if it passes.

    Returns
    -------
    (object, int)
        The variable (a dict for a struct) and the byte limit of the file
        (:func:`cnn.safeio.size_limit`).
    """
    path = Path(path)
    with open_regular(path, CNNFileError, "a network file") as fh:
        size = os.fstat(fh.fileno()).st_size
        limit = size_limit(size)
        try:
            names = matv5.scan(fh, size, limit, var)
        except matv5.NotMatV5Error:
            fh.seek(0)
            raise CNNFileError(
                f"{path} is {describe_file(fh.read(1024))}, not a MAT-file (expected {EXPECTED})"
            ) from None
        except matv5.MatScanError as exc:
            raise CNNFileError(f"{path}: refused: {exc}") from None
        if var not in names:
            hint = (
                " (the original's savecnn writes 'cnn1': pass var='cnn1')"
                if "cnn1" in names
                else ""
            )
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise CNNFileError(
                f"{path} is a MAT-file but has no variable {var!r}; it holds: "
                f"{shown or 'nothing'}{hint}"
            )
        fh.seek(0)
        try:
            d = scipy.io.loadmat(fh, variable_names=[var], simplify_cells=True)
        except Exception as exc:  # corrupt data the header scan cannot see
            raise CNNFileError(
                f"{path}: cannot read variable {var!r} ({type(exc).__name__}: {_short(str(exc))})"
            ) from None
    if var not in d:
        raise CNNFileError(f"{path}: cannot read variable {var!r}")
    return d[var], limit


def load_cnn(path, var="cnn", *, mode=None, dtype=np.float64):
    """Read a network from a MAT-file.

    Parameters
    ----------
    path : str or Path
        A MAT-file (v5/v7) written by MATLAB, by Octave (``save -v7``) or by
        :func:`save_cnn`.
    var : str
        The variable holding the struct. The original's ``savecnn`` writes
        ``cnn1``; the reference runs hold ``cnn_init`` and ``cnn``.
    mode : {"faithful", "corrected"}, optional
        Default: the mode stored by :func:`save_cnn`, else ``"faithful"``.
    dtype : float64 or float32

    Returns
    -------
    CNN
        Parameters, loss function, learning rate and (when stored) the flag and
        ``loss_array``; ready for ``traincnn``.

    Raises
    ------
    FileNotFoundError
        No such file.
    CNNFileError (a ValueError)
        A folder, FIFO or device; not a MAT-file; no variable ``var``; a
        variable nested too deep or declaring more array bytes than the file's
        limit (:mod:`cnn.matv5`, :func:`cnn.safeio.size_limit`), refused before
        SciPy reads it; or fields that do not describe a consistent network
        (every parameter's exact shape is checked).
    """
    s, limit = read_struct(path, var)
    try:
        return from_matlab_struct(s, mode=mode, dtype=dtype, limit=limit)
    except CNNFileError as exc:
        raise CNNFileError(f"{path}, variable {var!r}: {exc}") from None
