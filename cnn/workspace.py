"""Arrays and layouts shared by every pass: the workspace, the flattening of maps
for FC layers, and the input checks.

``forward.py``, ``backward.py``, ``training.py`` and ``fused.py`` all import
from here (this module imports nothing of theirs).
"""

from __future__ import annotations

import numpy as np

from .kernels import all_finite
from .network import CNN


class Workspace:
    """Arrays that the forward and backward passes reuse from one minibatch to the next.

    ``traincnn`` (and ``testcnn``/``predictcnn``) attach one to the network
    while they run (``net._workspace``); outside them every pass allocates new
    arrays. ``get`` returns the array kept under ``key`` when its shape and
    dtype match, else a new one (which replaces it). Copying a network gives
    the copy an empty workspace of its own.
    """

    def __init__(self):
        self._arrays = {}

    def get(self, key, shape, dtype):
        a = self._arrays.get(key)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = np.empty(shape, dtype=dtype)
            self._arrays[key] = a
        return a

    def __copy__(self):
        return Workspace()

    def __deepcopy__(self, memo):
        return Workspace()


def buffer(net, key, shape):
    """An array of ``shape`` (``net.dtype``) from the network's workspace to write a
    result into, or ``None`` (let the kernel allocate) when no workspace is active."""
    ws = getattr(net, "_workspace", None)
    if ws is None:
        return None
    return ws.get(key, tuple(shape), np.dtype(net.dtype))


def flatten_maps(fm, out=None):
    """Flatten maps for an FC layer in MATLAB's column-major order.

    The feature at map j, row r, column c goes to column ``j*H*W + c*H + r``
    (0-based), which is what the columns of a MATLAB ``W`` mean.

    Parameters
    ----------
    fm : ndarray, shape (N, M, H, W)
    out : ndarray, shape (N, M*H*W), optional
        C-contiguous array to write into.

    Returns
    -------
    ndarray, shape (N, M*H*W)
    """
    N, M, H, W = fm.shape
    if out is None:
        return fm.transpose(0, 1, 3, 2).reshape(N, -1)
    np.copyto(out.reshape(N, M, W, H), fm.transpose(0, 1, 3, 2))
    return out


def unflatten_maps(flat, map_shape, out=None):
    """Inverse of :func:`flatten_maps`.

    Parameters
    ----------
    flat : ndarray, shape (N, M*H*W)
    map_shape : tuple (M, H, W)
    out : ndarray, shape (N, M, H, W), optional
        C-contiguous array to write into.

    Returns
    -------
    ndarray, shape (N, M, H, W), C-contiguous
    """
    M, H, W = map_shape
    N = flat.shape[0]
    maps = flat.reshape(N, M, W, H).transpose(0, 1, 3, 2)
    if out is None:
        return np.ascontiguousarray(maps)
    np.copyto(out, maps)
    return out


def check_x(net, x, name="x"):
    """Validate a batch of images and return it as ``(N, C, H, W)`` in ``net.dtype``.

    Accepts ``(N, H, W)`` for single-channel networks and ``(N, C, H, W)``.
    Raises ``TypeError``/``ValueError`` naming ``name`` on a bad shape, dtype
    or NaN/Inf values, and on integer images outside [0, 1] (raw ``uint8``
    pixels 0..255 would saturate every unit: scale them first, ``x / 255``).
    Floating-point images are taken as they are (any scaling is the user's).
    """
    if not isinstance(net, CNN):
        raise TypeError(f"net must be a CNN made by initcnn, got {type(net).__name__}")
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:  # ragged lists etc.
        raise TypeError(f"{name} must be a numeric array: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    C, H, W = net.input_shape
    if arr.ndim == 3 and C == 1:
        arr = arr[:, None, :, :]
    if arr.ndim != 4 or arr.shape[1:] != (C, H, W):
        want = f"(N, {H}, {W})" if C == 1 else f"(N, {C}, {H}, {W})"
        raise ValueError(f"{name} must have shape {want} for this network, got {np.shape(x)}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} holds no examples (N = 0)")
    if arr.dtype.kind in "ui" and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(
            f"{name} holds integers from {arr.min()} to {arr.max()} (raw pixels?); "
            f"the network expects values in [0, 1]: pass {name} / {arr.max()}"
        )
    arr = np.ascontiguousarray(arr, dtype=net.dtype)
    if not all_finite(arr):
        raise ValueError(f"{name} contains NaN or Inf values")
    return arr


def check_y(net, y, n_examples, name="y"):
    """Validate targets: shape ``(N, n_outputs)``, finite. Returns them in ``net.dtype``.

    For a ``sigm`` or ``soft`` output layer the targets must lie in [0, 1]
    (outputs can never reach anything else, and the cross-entropy is not
    defined there): e.g. labels 0..9 passed instead of one-hot rows are refused.
    """
    try:
        arr = np.asarray(y)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numeric array: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    n_out = net.n_outputs
    if arr.ndim != 2 or arr.shape[1] != n_out:
        raise ValueError(
            f"{name} must have shape (N, {n_out}) (one row per example, one column "
            f"per output of the last layer), got {arr.shape}"
        )
    if arr.shape[0] != n_examples:
        raise ValueError(f"{name} has {arr.shape[0]} examples but x has {n_examples}")
    arr = np.ascontiguousarray(arr, dtype=net.dtype)
    if not all_finite(arr):
        raise ValueError(f"{name} contains NaN or Inf values")
    act = net.layers[-1].act_func
    if act in ("sigm", "soft") and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(
            f"{name} holds values from {arr.min():g} to {arr.max():g}, but a "
            f"'{act}' output lies in [0, 1]: pass targets in [0, 1] "
            f"(one-hot rows for classes)"
        )
    return arr


def output_matrix(net):
    """The last layer's outputs as ``(N, n_outputs)`` (maps flattened as in MATLAB)."""
    last = net.layers[-1]
    if last.type == "f":
        return last.outputs
    return flatten_maps(last.featuremaps)
