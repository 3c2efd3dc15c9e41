"""Forward pass (MATLAB ``ffcnn.m``) and the input checks shared by the public API."""

from __future__ import annotations

import numpy as np

from . import activations
from .backend import ops
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
    or NaN/Inf values.
    """
    if not isinstance(net, CNN):
        raise TypeError(f"net must be a CNN made by initcnn, got {type(net).__name__}")
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists etc.
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
    arr = np.ascontiguousarray(arr, dtype=net.dtype)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return arr


def check_y(net, y, n_examples, name="y"):
    """Validate targets: shape ``(N, n_outputs)``, finite. Returns them in ``net.dtype``."""
    try:
        arr = np.asarray(y)
    except Exception as exc:
        raise TypeError(f"{name} must be a numeric array: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    n_out = net.n_outputs
    if arr.ndim != 2 or arr.shape[1] != n_out:
        raise ValueError(f"{name} must have shape (N, {n_out}) (one row per example, one column "
                         f"per output of the last layer), got {arr.shape}")
    if arr.shape[0] != n_examples:
        raise ValueError(f"{name} has {arr.shape[0]} examples but x has {n_examples}")
    arr = np.ascontiguousarray(arr, dtype=net.dtype)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return arr


def ffcnn(net, x):
    """Forward pass (MATLAB ``ffcnn``): fill every layer's maps or outputs.

    Parameters
    ----------
    net : CNN
    x : ndarray, shape (N, H, W) or (N, C, H, W)

    Returns
    -------
    CNN
        ``net`` itself, with ``featuremaps (N, M, H, W)`` on input, conv and pool
        layers, ``outputs (N, n)`` on FC layers and on a map layer that feeds an
        FC layer, and ``z`` (pre-activation) on the last layer.
    """
    x = check_x(net, x)
    return _forward(net, x)


def _forward(net, x):
    """ffcnn without the input checks (``x`` already ``(N, C, H, W)``, right dtype).

    Results go into the network's workspace arrays while ``traincnn`` or
    ``testcnn`` runs (see :func:`buffer`), else into new arrays.
    """
    layers = net.layers
    layers[0].featuremaps = x                      # cnn.layers{1}.featuremaps{1} = xx
    N = x.shape[0]
    last = len(layers) - 1
    for l in range(1, len(layers)):
        layer, below = layers[l], layers[l - 1]
        if layer.type == "c":
            # z_j = sum_k X_k (*) K_(j,k) + b(j); featuremaps{j} = f(z_j)
            shape = (N, layer.n_maps) + layer.map_shape
            z = ops().conv_valid(below.featuremaps, layer.K, layer.b,
                                   out=buffer(net, (l, "z"), shape))
            if l == last:
                layer.z = z
                layer.featuremaps = activations.forward(z, layer.act_func,
                                                        out=buffer(net, (l, "fm"), shape))
            else:  # z is not kept: f(z) overwrites it
                layer.z = None
                layer.featuremaps = activations.forward(z, layer.act_func, out=z)
        elif layer.type == "p":
            shape = (N, layer.n_maps) + layer.map_shape
            layer.featuremaps = ops().mean_pool(below.featuremaps, layer.rate,
                                                  out=buffer(net, (l, "fm"), shape))
        elif layer.type == "f":
            if below.type == "f":
                inp = below.outputs
            else:  # zz = [zz; reshape(fm{k}, H*W, N)]
                inp = flatten_maps(below.featuremaps,
                                   out=buffer(net, (l - 1, "out"), (N, layer.n_inputs)))
                below.outputs = inp
            z = np.matmul(inp, layer.W.T, out=buffer(net, (l, "z"), (N, layer.n_nodes)))
            z += layer.b                               # W*zz + repmat(b, 1, N)
            if l == last:
                layer.z = z
                layer.outputs = activations.forward(z, layer.act_func,
                                                    out=buffer(net, (l, "out"), z.shape))
            else:
                layer.z = None
                layer.outputs = activations.forward(z, layer.act_func, out=z)
    return net


def output_matrix(net):
    """The last layer's outputs as ``(N, n_outputs)`` (maps flattened as in MATLAB)."""
    last = net.layers[-1]
    if last.type == "f":
        return last.outputs
    return flatten_maps(last.featuremaps)
