"""Readable reference versions of every kernel in :mod:`cnn.kernels`.

Each function here is the formula in its docstring written with NumPy and
SciPy, one short loop or one array expression, with the same signature as the
compiled kernel it mirrors. They are slow and written to be read: step into
them with a debugger, or run a whole ``ffcnn``/``bpcnn`` on them with

>>> import cnn
>>> with cnn.use_kernels("reference"):   # doctest: +SKIP
...     cnn.ffcnn(net, x); cnn.bpcnn(net, y)

The kernel tests check the compiled kernels against these functions.

Layouts (batch first, as in :mod:`cnn.kernels`):

* maps ``(N, M, H, W)``: N examples, M maps of H x W;
* conv kernels ``(M, P, kh, kw)``: ``K[j, k]`` links input map k to output map j.

Results have the dtype of the inputs (float32 stays float32). ``out=``, when
given, receives a copy of the result and is returned.
"""

from __future__ import annotations

import numpy as np

from .kernels import ACT_CODES

__all__ = [
    "ACT_CODES",
    "act_backward",
    "act_forward",
    "conv_full",
    "conv_valid",
    "kernel_grad",
    "map_sums",
    "mean_pool",
    "upsample",
]


def _dtype(*arrays, out=None):
    """The dtype to return: ``out``'s, else the inputs' (float64 unless all are float32)."""
    dt = np.result_type(*arrays) if out is None else out.dtype
    return dt if dt in (np.float32, np.float64) else np.dtype(np.float64)


def _result(value, dtype, out):
    """``value`` in ``dtype``, written into ``out`` when one is given."""
    if out is None:
        return np.ascontiguousarray(value, dtype=dtype)
    if out.shape != value.shape:
        raise ValueError(f"out must have shape {value.shape}, got {out.shape}")
    out[...] = value
    return out


def conv_valid(x, K, bias=None, *, out=None):
    """Valid 2-D cross-correlation (MATLAB ``convn(X, K, 'valid')`` of a flipped kernel).

    .. math:: z_{n,j,p,q} = \\sum_k \\sum_{a,b} x_{n,k,p+a,q+b}\\, K_{j,k,a,b} + b_j

    Parameters
    ----------
    x : ndarray, shape (N, P, H, W)
    K : ndarray, shape (M, P, kh, kw)
    bias : ndarray, shape (M,), optional
    out : ndarray, shape (N, M, H-kh+1, W-kw+1), optional

    Returns
    -------
    z : ndarray, shape (N, M, H-kh+1, W-kw+1)
    """
    from scipy.signal import correlate2d  # imported here: scipy.signal takes 0.6 s to import

    dt = _dtype(x, K, out=out)
    N, P = x.shape[:2]
    M = K.shape[0]
    z = np.array(
        [
            [sum(correlate2d(x[n, k], K[j, k], mode="valid") for k in range(P)) for j in range(M)]
            for n in range(N)
        ],
        dtype=np.float64,
    )
    if bias is not None:
        z += np.reshape(bias, (1, M, 1, 1))
    return _result(z, dt, out)


def conv_full(e, K, flip=False, *, out=None):
    """Full 2-D convolution: carry an error back through a conv layer.

    ``flip=False`` (correct): the gradient of :func:`conv_valid` with respect to
    its input,

    .. math:: g_{n,k,u,v} = \\sum_j \\sum_{a,b} e_{n,j,u-a,v-b}\\, K_{j,k,a,b}

    ``flip=True`` (the original's defect D1, ``convn(er, rot90(K, 2), 'full')``):
    the same with :math:`K_{j,k,k_h-1-a,k_w-1-b}`, the kernel rotated by 180 degrees.

    Parameters
    ----------
    e : ndarray, shape (N, M, Ho, Wo)
    K : ndarray, shape (M, P, kh, kw)
    flip : bool
    out : ndarray, shape (N, P, Ho+kh-1, Wo+kw-1), optional

    Returns
    -------
    g : ndarray, shape (N, P, Ho+kh-1, Wo+kw-1)
    """
    from scipy.signal import convolve2d  # imported here: scipy.signal takes 0.6 s to import

    dt = _dtype(e, K, out=out)
    N, M = e.shape[:2]
    P = K.shape[1]
    Kf = np.rot90(K, 2, axes=(2, 3)) if flip else K
    g = np.array(
        [
            [sum(convolve2d(e[n, j], Kf[j, k], mode="full") for j in range(M)) for k in range(P)]
            for n in range(N)
        ],
        dtype=np.float64,
    )
    return _result(g, dt, out)


def kernel_grad(x, e, kernel_shape, *, out=None):
    """Kernel gradient summed over the batch (not divided by N).

    .. math:: \\frac{\\partial L}{\\partial K_{j,k,a,b}} = \\sum_n \\sum_{p,q}
              x_{n,k,p+a,q+b}\\, e_{n,j,p,q}

    i.e. the valid correlation of input map k with error map j.

    Parameters
    ----------
    x : ndarray, shape (N, P, H, W)
    e : ndarray, shape (N, M, H-kh+1, W-kw+1)
    kernel_shape : tuple (kh, kw)
    out : ndarray, shape (M, P, kh, kw), optional

    Returns
    -------
    dK : ndarray, shape (M, P, kh, kw)
    """
    from scipy.signal import correlate2d  # imported here: scipy.signal takes 0.6 s to import

    dt = _dtype(x, e, out=out)
    N, P = x.shape[:2]
    M = e.shape[1]
    dK = np.array(
        [
            [sum(correlate2d(x[n, k], e[n, j], mode="valid") for n in range(N)) for k in range(P)]
            for j in range(M)
        ],
        dtype=np.float64,
    )
    if dK.shape[2:] != tuple(kernel_shape):
        raise ValueError(f"errors {e.shape} do not match maps {x.shape} and kernel {kernel_shape}")
    return _result(dK, dt, out)


def map_sums(e, *, out=None):
    """Sum of each map over the batch and its positions (N times a conv bias gradient).

    .. math:: s_j = \\sum_n \\sum_{p,q} e_{n,j,p,q}

    Parameters
    ----------
    e : ndarray, shape (N, M, H, W)
    out : ndarray, shape (M,), optional

    Returns
    -------
    s : ndarray, shape (M,)
    """
    return _result(e.sum(axis=(0, 2, 3), dtype=np.float64), _dtype(e, out=out), out)


def mean_pool(x, r, *, out=None):
    """Mean pooling over non-overlapping r x r windows.

    .. math:: y_{n,m,p,q} = \\frac{1}{r^2} \\sum_{a,b<r} x_{n,m,pr+a,qr+b}

    Rows and columns beyond ``(H // r) * r`` are dropped, as in the original.

    Parameters
    ----------
    x : ndarray, shape (N, M, H, W)
    r : int
    out : ndarray, shape (N, M, H // r, W // r), optional

    Returns
    -------
    y : ndarray, shape (N, M, H // r, W // r)
    """
    N, M, H, W = x.shape
    h, w = H // r, W // r
    windows = x[:, :, : h * r, : w * r].reshape(N, M, h, r, w, r).astype(np.float64)
    return _result(windows.mean(axis=(3, 5)), _dtype(x, out=out), out)


def upsample(e, r, out_hw, divide=True, *, out=None):
    """Carry an error back through mean pooling: repeat each element r x r times.

    .. math:: g_{n,m,u,v} = e_{n,m,\\lfloor u/r \\rfloor,\\lfloor v/r \\rfloor} / r^2

    (without the :math:`/r^2` when ``divide`` is false: defect D4 for a pool last
    layer). Rows and columns beyond ``h*r``, ``w*r`` are zero.

    Parameters
    ----------
    e : ndarray, shape (N, M, h, w)
    r : int
    out_hw : tuple (H, W)
    divide : bool
    out : ndarray, shape (N, M, H, W), optional

    Returns
    -------
    g : ndarray, shape (N, M, H, W)
    """
    N, M, h, w = e.shape
    H, W = out_hw
    if H // r != h or W // r != w:
        raise ValueError(f"out_hw {(H, W)} with rate {r} does not give {(h, w)}")
    g = np.zeros((N, M, H, W))
    g[:, :, : h * r, : w * r] = np.kron(e.astype(np.float64), np.ones((r, r)))
    if divide:
        g /= r * r
    return _result(g, _dtype(e, out=out), out)


def act_forward(z, act, leak=0.01, *, out=None):
    """Elementwise activation :math:`a = f(z)` for ``act`` in :data:`ACT_CODES`.

    ``sigm`` :math:`1/(1+e^{-z})`; ``tanh``; ``rect`` :math:`z` for :math:`z>0`
    else :math:`\\lambda z` (``leak``); ``none`` :math:`z`; ``plus``
    :math:`\\log(1+e^{z})`.

    Parameters
    ----------
    z : ndarray, shape (N, ...)
    act : str
    out : ndarray, same shape as ``z``, optional

    Returns
    -------
    a : ndarray, same shape as ``z``
    """
    z64 = np.asarray(z, dtype=np.float64)
    with np.errstate(over="ignore"):
        a = {
            "sigm": lambda: 1 / (1 + np.exp(-z64)),
            "tanh": lambda: np.tanh(z64),
            "rect": lambda: np.where(z64 > 0, z64, leak * z64),
            "none": lambda: z64,
            "plus": lambda: np.logaddexp(0, z64),
        }[act]()
    return _result(a, _dtype(z, out=out), out)


def act_backward(a, act, g, faithful=True, leak=0.01, *, out=None):
    """Multiply ``g`` by the activation's derivative written from the output :math:`a=f(z)`.

    ``sigm`` :math:`a(1-a)g`; ``tanh`` :math:`(1-a^2)g`; ``rect`` :math:`g` for
    :math:`a>0` else :math:`\\lambda g`; ``none`` :math:`a g` when ``faithful``
    (defect D2) else :math:`g`; ``plus`` :math:`(1-e^{-a})g`.

    Parameters
    ----------
    a, g : ndarray, same shape (N, ...)
    act : str
    faithful : bool
    out : ndarray, optional

    Returns
    -------
    ndarray, same shape as ``a``
    """
    a64 = np.asarray(a, dtype=np.float64)
    g64 = np.asarray(g, dtype=np.float64)
    d = {
        "sigm": lambda: a64 * (1 - a64),
        "tanh": lambda: 1 - a64**2,
        "rect": lambda: np.where(a64 > 0, 1.0, leak),
        "none": lambda: a64 if faithful else np.ones_like(a64),
        "plus": lambda: -np.expm1(-a64),
    }[act]()
    return _result(d * g64, _dtype(a, g, out=out), out)
