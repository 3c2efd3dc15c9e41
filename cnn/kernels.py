"""Numba kernels: the hot loops of the forward and backward passes.

Nothing here knows about networks or MATLAB: each public function is one array
operation, stated with its formula in the docstring. The model code
(``forward.py``, ``backward.py``) calls these; a reader stepping through
``bpcnn`` can treat each call as the formula in its docstring.

Layouts (all C-contiguous, batch first):

* maps ``(N, M, H, W)``: N examples, M maps of H x W;
* conv kernels ``(M, P, kh, kw)``: kernel for output map j and input map k is
  ``K[j, k]`` (MATLAB slice ``(j-1)*P + k`` of its kh x kw x (M*P) array).

Every function takes an optional ``out=`` array (preallocated, right shape and
dtype, C-contiguous) so that the training loop can reuse its buffers; without
it the result is a new array. float64 and float32 are both supported; the
result has the dtype of the inputs (no upcasts).

How the loops are written (see ``docs/performance.md``):

* Valid correlation and kernel gradient first copy each example's maps into
  ``kw`` column windows, ``xb[k, b, r*Wo + q] = x[n, k, r, q+b]`` (a partial
  im2col: ``kw`` copies, not ``kh*kw``). Then kernel row ``a`` and tap ``b``
  is the contiguous slice ``xb[k, b, a*Wo : a*Wo + Ho*Wo]`` lined up with the
  output positions ``i = p*Wo + q``, so the innermost loop is one long
  contiguous loop over outputs that LLVM vectorises, with no wasted columns.
* :func:`conv_valid`'s loop is compiled for each kernel width in
  :data:`UNROLLED_WIDTHS`: a whole kernel row of taps is added per pass
  over an output (its loads/stores are amortised over ``kw`` multiply-adds)
  and two output maps share every load of ``x``.
* The work of one example is a serial function (``conv_valid_example``,
  ``kernel_grad_example``, ``conv_full_example``); the batch functions run it
  in a ``prange`` over examples, and the fused step (``fused.py``) calls the
  same functions inside its own loop over examples.
  :func:`kernel_grad` takes dot products of two error maps with three column
  windows at a time.
* The full convolution walks maps as flat rows ("row-padded"): for a map of
  width W the positions ``u = p*W + q`` are contiguous, a tap ``(a, b)`` is a
  shift by ``a*W + b``, and four maps are added per pass.
* Where :data:`cnn.simd.ENABLED` (FMA and AVX2/AVX-512 in Numba's target),
  ``conv_valid_example`` and ``kernel_grad_example`` hand the loops over the
  column windows to :mod:`cnn.simd`'s register-blocked kernels (blocks of maps
  by positions kept in vector registers); the valid correlation gives the same
  bits as the loop here, the kernel gradient the same sums to round-off.
* ``fastmath={"contract"}`` only lets LLVM fuse ``a*b + c`` into one FMA
  instruction (one rounding instead of two); no reassociation, no NaN/Inf
  assumptions. :func:`kernel_grad` additionally allows reassociation inside its
  per-example dot products (the sum is split over SIMD lanes); its order is
  fixed by the compiled code, not by the thread count.

Determinism: parallel loops (``prange``) run over independent outputs only
(examples, or output entries). Sums over examples are done serially in example
order after the parallel part, so every result is bit-identical for any number
of threads.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from . import simd, vmath
from .dense import dense_grad

_FMA = {"contract"}
_jit = nb.njit(cache=True, parallel=True, fastmath=_FMA)
_jit_serial = nb.njit(cache=True, fastmath=_FMA)
_jit_dot = nb.njit(cache=True, parallel=True, fastmath={"contract", "reassoc"})

#: Elementwise activations handled by :func:`act_forward` / :func:`act_backward`
#: (softmax normalises across maps and stays in NumPy, see ``activations.py``).
ACT_CODES = {"sigm": 0, "tanh": 1, "rect": 2, "none": 3, "plus": 4}


# --------------------------------------------------------------------------- helpers

ALIGN = 64
"""Bytes to which the buffers of the kernels are aligned: a cache line, one AVX-512
vector. An unaligned vector load that crosses a cache line costs two (NumPy and
Numba align to 16 or 32 bytes only; the conv-1 kernel gradient of Example 3 took
11.0 us per example on 16-byte aligned arrays, 8.4 us aligned: ``docs/performance.md``)."""


def aligned_empty(shape, dtype):
    """``np.empty(shape, dtype)`` with its data on an :data:`ALIGN`-byte boundary
    (C-contiguous, writeable; a view of a slightly larger byte buffer)."""
    dt = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    raw = np.empty(nbytes + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start : start + nbytes].view(dt).reshape(shape)


@nb.njit(cache=True, inline="always")
def empty_aligned(n, like):
    """A 1-D array of ``n`` elements of ``like``'s dtype with its data on an
    :data:`ALIGN`-byte boundary (for the buffers the jitted kernels allocate)."""
    raw = np.empty(n + ALIGN // like.itemsize, like.dtype)
    start = (ALIGN - raw.ctypes.data % ALIGN) % ALIGN // raw.itemsize
    return raw[start : start + n]


def _float_dtype(*arrays, out=None):
    """The dtype to compute in: ``out``'s when given, else the inputs' (float64 for
    anything that is not float32/float64)."""
    dt = np.result_type(*arrays) if out is None else out.dtype
    if dt not in (np.float32, np.float64):
        dt = np.dtype(np.float64)
    return dt


def _contig(a, dtype):
    return np.ascontiguousarray(a, dtype=dtype)


def _output(out, shape, dtype, name="out"):
    """``out`` checked (shape, dtype, C-contiguous), or a new empty array."""
    if out is None:
        return aligned_empty(shape, dtype)
    if out.shape != tuple(shape) or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(
            f"{name} must be a C-contiguous {np.dtype(dtype).name} array of shape "
            f"{tuple(shape)}, got {out.dtype.name} {out.shape}"
        )
    return out


# --------------------------------------------------------------------------- finite checks

_ABS_BITS = 0x7FFFFFFFFFFFFFFF  # every bit of a float64 but the sign
INF_BITS = 0x7FF0000000000000
"""The bits of +inf as float64: ``abs_bits_max`` is above this only for a NaN."""


@_jit_serial
def abs_bits_max(p):
    """The largest bit pattern of ``|p[i]|`` as float64, an int64 (0 for an empty p).

    p (n,) float64 or float32. For floats that are not NaN the order of ``|x|``
    is the order of its bits as an integer, so this is the bits of ``max |p|``;
    any NaN gives more than :data:`INF_BITS`, an infinity exactly that. An
    integer maximum: vectorised without fast-math flags (a float maximum is
    not), one pass for both the largest value and the finite check.
    """
    simd.wide_vectors()
    m = 0
    for i in range(p.shape[0]):
        m = max(m, vmath._f64_bits(np.float64(p[i])) & _ABS_BITS)
    return m


def all_finite(a):
    """Whether every entry of ``a`` (any shape, float64 or float32) is finite.

    ``np.isfinite(a).all()`` without its temporary array, in one integer pass
    (19 against 33 ms on the 60,000 training images: the input checks of
    ``traincnn``/``testcnn``; serial, as a ``prange`` would save 8 ms there but
    cost 1.5 s of compilation on an empty cache).
    """
    a = np.asarray(a)
    if a.dtype not in (np.float64, np.float32):
        return bool(np.isfinite(a).all())
    return bool(abs_bits_max(np.ascontiguousarray(a).reshape(-1)) < INF_BITS)


# --------------------------------------------------------------------------- valid correlation


@_jit_serial
def column_windows(xn, Wo, xb):
    """The column windows of one example's maps: ``xb[k, b, r*Wo + q] = xn[k, r, q+b]``.

    xn (P, H, W) ; xb (P, kw, H*Wo) overwritten, Wo = W - kw + 1: what
    :func:`conv_valid_columns` and :func:`kernel_grad_columns` read (the fused
    step computes them once per example for both).
    """
    P, H, W = xn.shape
    kw = xb.shape[1]
    src = xn.reshape(-1)
    dst = xb.reshape(-1)
    for k in range(P):
        for b in range(kw):
            for r in range(H):  # a row of Wo (8-20 in Example 3): in SIMD vectors
                simd.copy_run(dst, (k * kw + b) * H * Wo + r * Wo, src, (k * H + r) * W + b, Wo)


def _conv_columns_impl(KW):
    """:func:`conv_valid_columns`'s portable loop compiled for kernels ``KW`` wide (0: any width).

    With ``KW`` a compile-time constant, the loop over one kernel row's taps
    is unrolled inside the vectorised loop over output positions: each output
    is loaded and stored once per kernel row (not once per tap), and two
    output maps share every load of ``x``.
    """

    @_jit_serial
    def conv_columns(xb, K, bias, z, Wo):
        M, P, kh, kw = K.shape
        if KW:
            kw = KW
        S = z.shape[1]
        for j0 in range(0, M, 2):  # two maps j0, j1 per pass
            j1 = min(j0 + 1, M - 1)  # odd M: the last pair is map M-1 twice
            z0 = z[j0]  # output position i = p*Wo + q
            z1 = z[j1]
            for i in range(S):
                z0[i] = 0
                z1[i] = 0
            for k in range(P):  # input maps in order
                for a in range(kh):  # kernel rows in order
                    w0 = K[j0, k, a]
                    w1 = K[j1, k, a]
                    xs = xb[k, :, a * Wo : a * Wo + S]  # xs[b, i] = xn[k, p+a, q+b]
                    for i in range(S):
                        s0 = z0[i]
                        s1 = z1[i]
                        for b in range(kw):  # unrolled when KW: taps in order
                            c = xs[b, i]
                            s0 += w0[b] * c
                            s1 += w1[b] * c
                        z0[i] = s0
                        z1[i] = s1
            b0 = bias[j0]  # the sum over maps, then + b(j)
            for i in range(S):
                z0[i] += b0
            if j1 != j0:
                b1 = bias[j1]
                for i in range(S):
                    z1[i] += b1

    return conv_columns


UNROLLED_WIDTHS = (3, 5, 7, 9)
"""Kernel widths with a loop compiled for them (the odd sizes in use); other widths
run the generic loop (the same sums, slower). Each width costs compile time."""

_cv_any, _cv3, _cv5, _cv7, _cv9 = (_conv_columns_impl(w) for w in (0,) + UNROLLED_WIDTHS)


@_jit_serial
def _conv_columns_unrolled(xb, K, bias, z, Wo):
    """The portable loop compiled for the kernel width where it is one of
    :data:`UNROLLED_WIDTHS`, else the loop for any width (the same sums)."""
    kw = K.shape[3]
    if kw == 3:
        _cv3(xb, K, bias, z, Wo)
    elif kw == 5:
        _cv5(xb, K, bias, z, Wo)
    elif kw == 7:
        _cv7(xb, K, bias, z, Wo)
    elif kw == 9:
        _cv9(xb, K, bias, z, Wo)
    else:
        _cv_any(xb, K, bias, z, Wo)


conv_valid_columns = simd.valid_correlation if simd.ENABLED else _conv_columns_unrolled
"""``conv_valid_columns(xb, K, bias, z, Wo)``: :func:`conv_valid_example` from the
column windows ``xb`` (P, kw, H*Wo) of :func:`column_windows`; K (M, P, kh, kw) ;
bias (M,) ; z (M, Ho*Wo) overwritten. :func:`cnn.simd.valid_correlation` where
:data:`cnn.simd.ENABLED` (any number of outputs; the portable loops are then not
compiled), else the portable loops; the same numbers. The function itself, not a
jitted wrapper (one costs ~0.3 s of a first compile)."""


@_jit_serial
def conv_valid_example(xn, K, bias, z):
    """Valid correlation of one example (serial; :func:`conv_valid` runs it per example).

    ``z[j, p*Wo + q] = sum_k sum_ab xn[k, p+a, q+b] K[j, k, a, b] + bias[j]``;
    xn (P, H, W) ; K (M, P, kh, kw) ; bias (M,) ; z (M, Ho*Wo) overwritten.
    Taps are added in the order k, a, b (one FMA each), then the bias. Where
    :data:`cnn.simd.ENABLED`, the register-blocked SIMD version (the same numbers).
    """
    P, H, W = xn.shape
    kw = K.shape[3]
    Wo = W - kw + 1
    xb = empty_aligned(P * kw * H * Wo, z).reshape(P, kw, H * Wo)
    column_windows(xn, Wo, xb)
    conv_valid_columns(xb, K, bias, z, Wo)


@_jit
def _conv_valid(x, K, bias, z):
    # x (N, P, H, W) ; K (M, P, kh, kw) ; bias (M,) ; z (N, M, Ho*Wo)
    for n in nb.prange(x.shape[0]):  # independent outputs: example n
        conv_valid_example(x[n], K, bias, z[n])


def conv_valid(x, K, bias=None, *, out=None):
    """Valid 2-D cross-correlation of a batch of maps with a bank of kernels.

    ``z[n, j, p, q] = sum_k sum_{a,b} x[n, k, p+a, q+b] * K[j, k, a, b]  (+ bias[j])``

    Parameters
    ----------
    x : ndarray, shape (N, P, H, W)
    K : ndarray, shape (M, P, kh, kw)
    bias : ndarray, shape (M,), optional
        Added to map j after the sum (MATLAB ``... + b(j)``).
    out : ndarray, shape (N, M, H-kh+1, W-kw+1), optional

    Returns
    -------
    z : ndarray, shape (N, M, H-kh+1, W-kw+1)
    """
    dt = _float_dtype(x, K, out=out)
    x = _contig(x, dt)
    K = _contig(K, dt)
    N, P, H, W = x.shape
    M, P2, kh, kw = K.shape
    if P2 != P or kh > H or kw > W:
        raise ValueError(f"kernels {K.shape} do not fit maps {x.shape}")
    z = _output(out, (N, M, H - kh + 1, W - kw + 1), dt)
    b = np.zeros(M, dt) if bias is None else _contig(bias, dt).reshape(M)
    _conv_valid(x, K, b, z.reshape(N, M, -1))
    return z


# --------------------------------------------------------------------------- full convolution


@_jit_serial
def conv_full_example(en, K, flip, gn):
    """One example's full convolution (serial; :func:`conv_full` runs it per example).

    ``gn[k, p+a, q+b] += sum_j K[j, k, a, b] * en[j, p, q]`` (``K[j, k, kh-1-a,
    kw-1-b]`` if ``flip``), gn zeroed first; en (M, Ho, Wo) ; K (M, P, kh, kw) ;
    gn (P, Ho+kh-1, Wo+kw-1) overwritten.
    """
    M, Ho, Wo = en.shape
    P, H, W = gn.shape
    kh = H - Ho + 1
    kw = W - Wo + 1
    R = Ho * Wo
    # cols[(k, a, b), (p, q)] = sum_j K[j, k, a, b] * en[j, p, q]: one small matrix
    # product, on this thread (the product of an FC weight gradient: cnn.dense)
    T = P * kh * kw
    cols = empty_aligned(T * R, gn).reshape(T, R)
    dense_grad(
        K.reshape(M, T), en.reshape(M, R), np.int64(0), T, cols
    )  # not a literal 0: its own compile
    gn[:] = 0
    g = gn.reshape(-1)
    c = cols.reshape(-1)
    f = 1 if flip else 0  # flipped taps by arithmetic: a branch here doubles the loops' code
    for k in range(P):  # gn[k, p+a, q+b] += cols[(k, a, b), (p, q)], flipped: (k, -a, -b)
        for a in range(kh):
            for b in range(kw):
                row = (k * kh + a + f * (kh - 1 - 2 * a)) * kw + b + f * (kw - 1 - 2 * b)
                for p in range(Ho):  # one row of Wo, in SIMD vectors
                    simd.add_run(g, (k * H + p + a) * W + b, c, row * R + p * Wo, Wo)


@_jit
def _conv_full(e, K, flip, g):
    # e (N, M, Ho, Wo) ; K (M, P, kh, kw) ; g (N, P, Ho+kh-1, Wo+kw-1)
    for n in nb.prange(e.shape[0]):
        conv_full_example(e[n], K, flip, g[n])


def conv_full(e, K, flip=False, *, out=None):
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
    out : ndarray, shape (N, P, Ho+kh-1, Wo+kw-1), optional

    Returns
    -------
    g : ndarray, shape (N, P, Ho+kh-1, Wo+kw-1)
    """
    dt = _float_dtype(e, K, out=out)
    e = _contig(e, dt)
    K = _contig(K, dt)
    N, M, Ho, Wo = e.shape
    M2, P, kh, kw = K.shape
    if M2 != M:
        raise ValueError(f"kernels {K.shape} do not match errors {e.shape}")
    g = _output(out, (N, P, Ho + kh - 1, Wo + kw - 1), dt)
    _conv_full(e, K, bool(flip), g)
    return g


# --------------------------------------------------------------------------- kernel gradient


@nb.njit(cache=True, fastmath={"contract", "reassoc"})
def kernel_grad_example(xn, e, part):
    """One example's kernel gradient (serial; :func:`kernel_grad` runs it per example).

    ``part[j, k, a, b] = sum_{p,q} xn[k, p+a, q+b] * e[j, p*Wo + q]``;
    xn (P, H, W) ; e (M, Ho*Wo) ; part (M, P, kh, kw) overwritten. Each sum
    is a dot product split over SIMD lanes (reassociation allowed here only):
    :func:`cnn.simd.kernel_gradient` where :data:`cnn.simd.ENABLED`, else
    :func:`_kernel_grad_loop` (the same sums, lanes added in another order: equal
    to round-off).
    """
    P, H, W = xn.shape
    kw = part.shape[3]
    Wo = W - kw + 1
    xb = empty_aligned(P * kw * H * Wo, part).reshape(P, kw, H * Wo)
    column_windows(xn, Wo, xb)
    kernel_grad_columns(xb, e, part, Wo)


@nb.njit(cache=True, fastmath={"contract", "reassoc"})
def kernel_grad_columns(xb, e, part, Wo):
    """:func:`kernel_grad_example` from the column windows ``xb`` (P, kw, H*Wo) of
    :func:`column_windows`; e (M, Ho*Wo) ; part (M, P, kh, kw) overwritten."""
    kernel_grad_rows(xb.reshape(1, -1), 0, e.reshape(1, -1), part, Wo, xb.shape[2], False)


@nb.njit(cache=True, fastmath={"contract", "reassoc"})
def _kernel_grad_rows_portable(X, x0, E, part, Wo, HWo, add):
    """:func:`kernel_grad_rows` with the portable loop, one example at a time."""
    M, P, kh, kw = part.shape
    S = E.shape[1] // M
    one = np.empty_like(part)
    for r in range(E.shape[0]):
        xb = X[r, x0 : x0 + P * kw * HWo].reshape(P, kw, HWo)
        e = E[r].reshape(M, S)
        if r == 0 and not add:
            _kernel_grad_loop(xb, e, part, Wo)
        else:
            _kernel_grad_loop(xb, e, one, Wo)
            pf = part.reshape(-1)
            of = one.reshape(-1)
            for i in range(pf.shape[0]):
                pf[i] += of[i]


@nb.njit(cache=True, fastmath={"contract", "reassoc"})
def _kernel_grad_loop(xb, e, part, Wo):
    """The portable loop of :func:`kernel_grad_example`, from the column windows
    ``xb[k, b, r*Wo + q] = xn[k, r, q+b]`` (P, kw, H*Wo)."""
    P = xb.shape[0]
    M, _, kh, kw = part.shape
    S = e.shape[1]
    zero = part.dtype.type(0)
    for j in range(0, M, 2):  # two maps per pass
        j1 = min(j + 1, M - 1)
        e0 = e[j]  # position i = p*Wo + q
        e1 = e[j1]
        for k in range(P):
            for a in range(kh):
                b = 0
                while b < kw:  # three taps per pass (the last repeated at the end)
                    b1 = min(b + 1, kw - 1)
                    b2 = min(b + 2, kw - 1)
                    y0 = xb[k, b, a * Wo : a * Wo + S]
                    y1 = xb[k, b1, a * Wo : a * Wo + S]
                    y2 = xb[k, b2, a * Wo : a * Wo + S]
                    s00 = zero
                    s01 = zero
                    s02 = zero
                    s10 = zero
                    s11 = zero
                    s12 = zero
                    for i in range(S):
                        u0 = e0[i]
                        u1 = e1[i]
                        c0 = y0[i]
                        c1 = y1[i]
                        c2 = y2[i]
                        s00 += u0 * c0
                        s01 += u0 * c1
                        s02 += u0 * c2
                        s10 += u1 * c0
                        s11 += u1 * c1
                        s12 += u1 * c2
                    part[j, k, a, b] = s00
                    part[j, k, a, b1] = s01
                    part[j, k, a, b2] = s02
                    part[j1, k, a, b] = s10
                    part[j1, k, a, b1] = s11
                    part[j1, k, a, b2] = s12
                    b += 3


# the SIMD kernel handles any number of positions (those past the last whole vector
# one by one): where it runs, the portable loop is not compiled (0.4 s of a first compile)
kernel_grad_rows = simd.kernel_gradient if simd.ENABLED else _kernel_grad_rows_portable
"""``kernel_grad_rows(X, x0, E, part, Wo, HWo, add)``: the kernel gradient summed over
R examples, from their column windows.

``part[j, k, a, b] (+)= sum_r sum_i E[r, j*S + i] * X[r, x0 + (k*kw + b)*HWo + a*Wo + i]``:
X (R, LX), row r from column x0 example r's windows xb (P, kw, HWo) of
:func:`column_windows` (HWo = H*Wo) ; E (R, M*S), row r its errors (M, S) ;
part (M, P, kh, kw), overwritten, or added to if ``add``. The sums:
:func:`cnn.simd.kernel_gradient` where :data:`cnn.simd.ENABLED`, else
:func:`_kernel_grad_rows_portable` (:func:`_kernel_grad_loop` per example, added in
order: equal to round-off). The function itself, not a wrapper (a jitted wrapper
costs ~0.3 s of a first compile)."""


@_jit
def _kernel_grad_parts(x, e, part):
    # x (N, P, H, W) ; e (N, M, Ho*Wo) ; part (N, M, P, kh, kw): one sum per example
    for n in nb.prange(x.shape[0]):  # independent outputs: example n
        kernel_grad_example(x[n], e[n], part[n])


def kernel_grad(x, e, kernel_shape, *, out=None):
    """Kernel gradient summed over the batch (not divided by N).

    ``dK[j, k, a, b] = sum_n sum_{p,q} x[n, k, p+a, q+b] * e[n, j, p, q]``

    Each example's sum is computed on its own (in parallel), then the examples
    are added in order n = 0, 1, ... (deterministic for any thread count).

    Parameters
    ----------
    x : ndarray, shape (N, P, H, W)
        The conv layer's input maps.
    e : ndarray, shape (N, M, H-kh+1, W-kw+1)
        Error w.r.t. the conv layer's pre-activation.
    kernel_shape : tuple (kh, kw)
    out : ndarray, shape (M, P, kh, kw), optional

    Returns
    -------
    dK : ndarray, shape (M, P, kh, kw)
    """
    dt = _float_dtype(x, e, out=out)
    x = _contig(x, dt)
    e = _contig(e, dt)
    N, P, H, W = x.shape
    kh, kw = (int(v) for v in kernel_shape)
    M = e.shape[1]
    if e.shape != (N, M, H - kh + 1, W - kw + 1):
        raise ValueError(f"errors {e.shape} do not match maps {x.shape} and kernel {kh}x{kw}")
    dK = _output(out, (M, P, kh, kw), dt)
    part = np.empty((N, M * P * kh * kw), dtype=dt)
    _kernel_grad_parts(x, e.reshape(N, M, -1), part.reshape(N, M, P, kh, kw))
    np.add.reduce(part, axis=0, out=dK.reshape(-1))  # examples in order n = 0, 1, ...
    return dK


@nb.njit(cache=True, fastmath={"contract", "reassoc"})
def _map_sums(e, out):
    # out[j] = sum_n (sum_u e[n, j, u]); out zeroed by the caller
    N, M, S = e.shape
    for j in range(M):
        s = out[j]
        for n in range(N):
            t = out[j]
            en = e[n, j]
            for u in range(S):
                t += en[u]
            s += t
        out[j] = s


def map_sums(e, *, out=None):
    """Sum of each map over the batch and its positions (a conv layer's bias gradient times N).

    ``s[j] = sum_n (sum_{p,q} e[n, j, p, q])``: each example's sum (split over
    SIMD lanes), then the examples in order.

    Parameters
    ----------
    e : ndarray, shape (N, M, H, W)
    out : ndarray, shape (M,), optional

    Returns
    -------
    s : ndarray, shape (M,)
    """
    dt = _float_dtype(e, out=out)
    e = _contig(e, dt)
    N, M = e.shape[:2]
    s = _output(out, (M,), dt)
    s[:] = 0
    _map_sums(e.reshape(N, M, -1), s)
    return s


# --------------------------------------------------------------------------- pooling


@_jit
def _mean_pool(x, r, c, y):
    N, M, h, w = y.shape
    for n in nb.prange(N):
        for m in range(M):
            for p in range(h):
                yr = y[n, m, p]
                if r == 2:
                    x0 = x[n, m, 2 * p]
                    x1 = x[n, m, 2 * p + 1]
                    for q in range(w):
                        yr[q] = (
                            x0[2 * q] * c + x0[2 * q + 1] * c + x1[2 * q] * c + x1[2 * q + 1] * c
                        )
                else:
                    for q in range(w):
                        yr[q] = 0
                    for a in range(r):
                        xa = x[n, m, p * r + a]
                        for b in range(r):
                            for q in range(w):
                                yr[q] += xa[q * r + b] * c


def mean_pool(x, r, *, out=None):
    """Mean pooling over non-overlapping r x r windows.

    ``y[n, m, p, q] = sum_{a,b < r} x[n, m, p*r+a, q*r+b] * (1/r^2)``; each
    element is multiplied by ``1/r^2`` before summing, as the original's
    ``convn`` with a kernel of ``1/r^2``. Rows/columns beyond ``floor(H/r)*r``
    are ignored, as in the original.

    Parameters
    ----------
    x : ndarray, shape (N, M, H, W)
    r : int
    out : ndarray, shape (N, M, H // r, W // r), optional

    Returns
    -------
    y : ndarray, shape (N, M, H // r, W // r)
    """
    dt = _float_dtype(x, out=out)
    x = _contig(x, dt)
    N, M, H, W = x.shape
    y = _output(out, (N, M, H // r, W // r), dt)
    c = dt.type(1.0 / (r * r))
    _mean_pool(x, int(r), c, y)
    return y


@_jit
def _upsample(e, r, divisor, g):
    N, M, h, w = e.shape
    H, W = g.shape[2], g.shape[3]
    for n in nb.prange(N):
        for m in range(M):
            for p in range(h):
                er = e[n, m, p]
                for a in range(r):
                    row = g[n, m, p * r + a]
                    if r == 2:
                        for q in range(w):
                            v = er[q] / divisor
                            row[2 * q] = v
                            row[2 * q + 1] = v
                    else:
                        for b in range(r):
                            for q in range(w):
                                row[q * r + b] = er[q] / divisor
                    for v in range(w * r, W):
                        row[v] = 0
            for u in range(h * r, H):
                for v in range(W):
                    g[n, m, u, v] = 0


def upsample(e, r, out_hw, divide=True, *, out=None):
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
    out : ndarray, shape (N, M, H, W), optional

    Returns
    -------
    g : ndarray, shape (N, M, H, W)
    """
    dt = _float_dtype(e, out=out)
    e = _contig(e, dt)
    N, M, h, w = e.shape
    H, W = (int(v) for v in out_hw)
    if H // r != h or W // r != w:
        raise ValueError(f"out_hw {(H, W)} with rate {r} does not give {(h, w)}")
    g = _output(out, (N, M, H, W), dt)
    divisor = dt.type(r * r if divide else 1)
    _upsample(e, int(r), divisor, g)
    return g


# --------------------------------------------------------------------------- activations


@_jit
def _act_forward(z, code, one, leak, a):
    # z, a: (N, S) ; code as ACT_CODES
    N, S = z.shape
    for n in nb.prange(N):
        zn = z[n]
        an = a[n]
        if code == 0:  # sigm: 1 / (1 + exp(-z))
            for i in range(S):
                an[i] = one / (one + np.exp(-zn[i]))
        elif code == 1:  # tanh
            for i in range(S):
                an[i] = np.tanh(zn[i])
        elif code == 2:  # rect: z * (leak + (1 - leak) * (z > 0)), i.e. z or leak*z
            for i in range(S):
                v = zn[i]
                an[i] = v if v > 0 else v * leak
        elif code == 3:  # none
            for i in range(S):
                an[i] = zn[i]
        else:  # plus: log(1 + exp(z)) = logaddexp(0, z)
            for i in range(S):
                v = zn[i]
                if v > 0:
                    an[i] = v + np.log1p(np.exp(-v))
                else:
                    an[i] = np.log1p(np.exp(v))


def _rows(a):
    """``a`` as a 2-D ``(N, S)`` view (N = first axis; 0-d and 1-d arrays too)."""
    return a.reshape(a.shape[0] if a.ndim > 1 else 1, -1)


def act_forward(z, act, leak=0.01, *, out=None):
    """Elementwise activation ``a = f(z)`` for ``act`` in :data:`ACT_CODES`.

    ``sigm``: ``1/(1+exp(-z))``; ``tanh``; ``rect``: ``z`` for ``z > 0`` else
    ``leak*z``; ``none``: ``z``; ``plus``: ``log(1+exp(z))`` (overflow-free).
    ``out`` may be ``z`` itself (in place).

    Parameters
    ----------
    z : ndarray, shape (N, ...)
    act : str
    out : ndarray, same shape as ``z``, optional

    Returns
    -------
    a : ndarray, same shape as ``z``
    """
    dt = _float_dtype(z, out=out)
    z = _contig(z, dt)
    a = _output(out, z.shape, dt)
    _act_forward(_rows(z), ACT_CODES[act], dt.type(1), dt.type(leak), _rows(a))
    return a


@_jit
def _act_backward(a, code, faithful, one, leak, g, e):
    N, S = a.shape
    for n in nb.prange(N):
        an = a[n]
        gn = g[n]
        en = e[n]
        if code == 0:  # sigm: a (1 - a) g
            for i in range(S):
                v = an[i]
                en[i] = v * (one - v) * gn[i]
        elif code == 1:  # tanh: (1 - a^2) g
            for i in range(S):
                v = an[i]
                en[i] = (one - v * v) * gn[i]
        elif code == 2:  # rect: (leak + (1 - leak) (a > 0)) g
            for i in range(S):
                en[i] = gn[i] if an[i] > 0 else leak * gn[i]
        elif code == 3:  # none: a g (faithful, D2) or g
            if faithful:
                for i in range(S):
                    en[i] = an[i] * gn[i]
            else:
                for i in range(S):
                    en[i] = gn[i]
        else:  # plus: sigmoid(z) g = (1 - exp(-a)) g
            for i in range(S):
                en[i] = -np.expm1(-an[i]) * gn[i]


def act_backward(a, act, g, faithful=True, leak=0.01, *, out=None):
    """Multiply ``g`` by the activation's derivative written from the output ``a = f(z)``.

    ``sigm``: ``a(1-a) g``; ``tanh``: ``(1-a^2) g``; ``rect``: ``g`` for
    ``a > 0`` else ``leak g``; ``none``: ``a g`` when ``faithful`` (the
    original's D2) else ``g``; ``plus``: ``(1-exp(-a)) g``. ``out`` may be ``g``.

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
    dt = _float_dtype(a, g, out=out)
    a = _contig(a, dt)
    g = _contig(g, dt)
    e = _output(out, a.shape, dt)
    if g.shape != a.shape:
        raise ValueError(f"err {g.shape} and a {a.shape} differ in shape")
    _act_backward(
        _rows(a), ACT_CODES[act], bool(faithful), dt.type(1), dt.type(leak), _rows(g), _rows(e)
    )
    return e
