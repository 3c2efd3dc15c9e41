"""Numba kernels: the hot loops of the forward and backward passes.

Nothing here knows about networks, activations or MATLAB: each function is
one array operation, stated with its formula. The model code (``forward.py``,
``backward.py``) calls these; a reader stepping through ``bpcnn`` can treat each
call as the formula in its docstring.

Layouts (all C-contiguous, batch first):

* maps ``(N, M, H, W)``: N examples, M maps of H x W;
* conv kernels ``(M, P, kh, kw)``: kernel for output map j and input map k is
  ``K[j, k]`` (MATLAB slice ``(j-1)*P + k`` of its kh x kw x (M*P) array).

Parallel loops run over independent outputs only (examples, or kernel
entries), never over a reduction, so results do not depend on the thread count.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_jit = nb.njit(cache=True, parallel=True, fastmath=False)


@_jit
def _conv_valid(x, K, z):
    N, P, H, W = x.shape
    M, _, kh, kw = K.shape
    Ho, Wo = z.shape[2], z.shape[3]
    for n in nb.prange(N):
        for j in range(M):
            for p in range(Ho):
                for q in range(Wo):
                    z[n, j, p, q] = 0.0
            for k in range(P):  # the original sums over input maps in order
                for a in range(kh):
                    for b in range(kw):
                        w = K[j, k, a, b]
                        for p in range(Ho):
                            for q in range(Wo):
                                z[n, j, p, q] += x[n, k, p + a, q + b] * w


def conv_valid(x, K):
    """Valid 2-D cross-correlation of a batch of maps with a bank of kernels.

    ``z[n, j, p, q] = sum_k sum_{a,b} x[n, k, p+a, q+b] * K[j, k, a, b]``

    Parameters
    ----------
    x : ndarray, shape (N, P, H, W)
    K : ndarray, shape (M, P, kh, kw)

    Returns
    -------
    z : ndarray, shape (N, M, H-kh+1, W-kw+1)
    """
    N, P, H, W = x.shape
    M, _, kh, kw = K.shape
    z = np.empty((N, M, H - kh + 1, W - kw + 1), dtype=x.dtype)
    _conv_valid(np.ascontiguousarray(x), np.ascontiguousarray(K), z)
    return z


@_jit
def _conv_full(e, K, flip, g):
    N, M, Ho, Wo = e.shape
    _, P, kh, kw = K.shape
    for n in nb.prange(N):
        for k in range(P):
            for u in range(g.shape[2]):
                for v in range(g.shape[3]):
                    g[n, k, u, v] = 0.0
        for j in range(M):  # sum over output maps j in order, as the original
            for k in range(P):
                for a in range(kh):
                    for b in range(kw):
                        if flip:
                            w = K[j, k, kh - 1 - a, kw - 1 - b]
                        else:
                            w = K[j, k, a, b]
                        for p in range(Ho):
                            for q in range(Wo):
                                g[n, k, p + a, q + b] += e[n, j, p, q] * w


def conv_full(e, K, flip=False):
    """Full 2-D convolution that carries an error back through a conv layer.

    ``flip=False`` (correct): the gradient of :func:`conv_valid` w.r.t. its input,
    ``g[n, k, u, v] = sum_j sum_{a,b} e[n, j, u-a, v-b] * K[j, k, a, b]``.

    ``flip=True`` (the original's defect D1): the same with the kernel rotated
    by 180 degrees, ``K[j, k, kh-1-a, kw-1-b]`` (MATLAB
    ``convn(er, rot90(K, 2), 'full')``).

    Parameters
    ----------
    e : ndarray, shape (N, M, Ho, Wo)
        Error w.r.t. the conv layer's pre-activation.
    K : ndarray, shape (M, P, kh, kw)
    flip : bool

    Returns
    -------
    g : ndarray, shape (N, P, Ho+kh-1, Wo+kw-1)
    """
    N, M, Ho, Wo = e.shape
    _, P, kh, kw = K.shape
    g = np.empty((N, P, Ho + kh - 1, Wo + kw - 1), dtype=e.dtype)
    _conv_full(np.ascontiguousarray(e), np.ascontiguousarray(K), bool(flip), g)
    return g


@_jit
def _kernel_grad(x, e, dK):
    N, P, H, W = x.shape
    _, M, Ho, Wo = e.shape
    kh, kw = dK.shape[2], dK.shape[3]
    # parallel over output entries (j, k); the sum over n and (p, q) is serial
    for jk in nb.prange(M * P):
        j = jk // P
        k = jk % P
        for a in range(kh):
            for b in range(kw):
                s = 0.0
                for n in range(N):
                    for p in range(Ho):
                        for q in range(Wo):
                            s += x[n, k, p + a, q + b] * e[n, j, p, q]
                dK[j, k, a, b] = s


def kernel_grad(x, e, kernel_shape):
    """Kernel gradient summed over the batch (not divided by N).

    ``dK[j, k, a, b] = sum_n sum_{p,q} x[n, k, p+a, q+b] * e[n, j, p, q]``

    Parameters
    ----------
    x : ndarray, shape (N, P, H, W)
        The conv layer's input maps.
    e : ndarray, shape (N, M, H-kh+1, W-kw+1)
        Error w.r.t. the conv layer's pre-activation.
    kernel_shape : tuple (kh, kw)

    Returns
    -------
    dK : ndarray, shape (M, P, kh, kw)
    """
    P = x.shape[1]
    M = e.shape[1]
    dK = np.empty((M, P) + tuple(kernel_shape), dtype=x.dtype)
    _kernel_grad(np.ascontiguousarray(x), np.ascontiguousarray(e), dK)
    return dK


@_jit
def _mean_pool(x, r, c, y):
    N, M, h, w = y.shape
    for n in nb.prange(N):
        for m in range(M):
            for p in range(h):
                for q in range(w):
                    s = 0.0
                    for a in range(r):
                        for b in range(r):
                            s += x[n, m, p * r + a, q * r + b] * c
                    y[n, m, p, q] = s


def mean_pool(x, r):
    """Mean pooling over non-overlapping r x r windows.

    ``y[n, m, p, q] = sum_{a,b < r} x[n, m, p*r+a, q*r+b] * (1/r^2)``; each
    element is multiplied by ``1/r^2`` before summing, as the original's
    ``convn`` with a kernel of ``1/r^2``. Rows/columns beyond ``floor(H/r)*r``
    are ignored, as in the original.

    Parameters
    ----------
    x : ndarray, shape (N, M, H, W)
    r : int

    Returns
    -------
    y : ndarray, shape (N, M, H // r, W // r)
    """
    N, M, H, W = x.shape
    y = np.empty((N, M, H // r, W // r), dtype=x.dtype)
    c = 1.0 / (r * r)
    _mean_pool(np.ascontiguousarray(x), r, c, y)
    return y


@_jit
def _upsample(e, r, divisor, g):
    N, M, h, w = e.shape
    H, W = g.shape[2], g.shape[3]
    for n in nb.prange(N):
        for m in range(M):
            for u in range(H):
                for v in range(W):
                    p = u // r
                    q = v // r
                    if p < h and q < w:
                        g[n, m, u, v] = e[n, m, p, q] / divisor
                    else:
                        g[n, m, u, v] = 0.0


def upsample(e, r, out_hw, divide=True):
    """Carry an error back through mean pooling: repeat each element r x r times.

    ``g[n, m, u, v] = e[n, m, u // r, v // r] / r^2`` (without ``/ r^2`` when
    ``divide`` is false, the original's defect D4 for a pool last layer). Rows
    and columns of ``g`` beyond ``h*r``, ``w*r`` (input sizes not divisible by r)
    get zero: those inputs did not reach the output.

    Parameters
    ----------
    e : ndarray, shape (N, M, h, w)
    r : int
    out_hw : tuple (H, W), with ``H // r == h`` and ``W // r == w``
    divide : bool

    Returns
    -------
    g : ndarray, shape (N, M, H, W)
    """
    N, M, h, w = e.shape
    g = np.empty((N, M) + tuple(out_hw), dtype=e.dtype)
    divisor = float(r * r) if divide else 1.0
    _upsample(np.ascontiguousarray(e), r, divisor, g)
    return g
