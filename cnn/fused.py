"""The fused training step: a whole minibatch in two parallel loops.

``ffcnn``/``bpcnn``/``gradientdescentcnn`` (``forward.py``, ``backward.py``,
``training.py``) are the readable reference: one kernel call per layer and
per operation, every map, error and gradient kept on the layers. That costs
about twenty parallel regions per minibatch and part of the time on one
thread (NumPy's elementwise functions, the dense products, the loss). This
module computes the same numbers with two parallel loops per minibatch; it is what
``traincnn``, ``testcnn`` and ``predictcnn`` use unless told otherwise.

Every parallel loop is :func:`_run` (one ``prange`` over Numba's threads, each
running its own share of the indices, then claiming any left: a busy machine's
descheduled thread holds up the others by one index) calling, for each index, a
first task and then a second one (:func:`_nothing` where there is none) through
function pointers, with one argument list (:data:`ARGS`) for all tasks:

1. :func:`_forward_chunk` then :func:`_backward_chunk`, once per chunk of
   :data:`CHUNK` examples, both on the same thread. For each example of a chunk
   the forward task runs the map layers (conv, activation, pooling;
   :func:`_maps_forward`), then the chunk's FC layers, one matrix product per
   layer (:func:`_dense_forward`). The backward task computes the loss terms
   and output errors (:func:`_output_error`); the FC errors, again one product
   per layer (:func:`_dense_backward`); per example the map layers' errors
   (:func:`_maps_backward`); and the chunk's part of every conv layer's kernel
   and bias gradient, summed over its examples (:func:`_conv_grads`; many small
   maps in one pass of the SIMD kernel: fewer lane sums). Nothing in a chunk
   reads what another chunk writes (the one exception, defect D3, is
   :func:`_d3_task`, run afterwards). Prediction runs the forward task alone.
2. :func:`_update_task`, once per row of a fixed table of tasks (rows of FC
   weights, chunks of conv kernels, conv biases). Each task sums the
   chunks' parts **in chunk order** (an FC weight gradient: one matrix
   product over the examples), divides by N and applies
   ``p <- p - lr * dp`` in place, as ``gradientdescentcnn``, and records the
   largest new value and whether any is NaN/Inf (the next minibatch's finite
   check and divergence guard read that instead of passing over the weights).

The tasks are compiled once as C functions (:mod:`cnn.parallel`), not again
inside the ``prange``'s layers, and one compiled loop serves them all. A first
minibatch on an empty cache took 41 s with the tasks inside their loops, 22 s
with a loop per task, 14 s with one (Intel Xeon with AVX-512; the loop's compile
time grows by ~70 ms per array it passes: ``docs/performance.md``). The chunk's
work is two tasks so that, on an empty cache, a second process compiles the
backward one meanwhile (:mod:`cnn.precompile`): 18-22 s -> 10-11 s on a 2-CPU
AMD EPYC.

The conv loops are ``kernels.py``'s per-example functions (the layer path runs
the same ones in its own ``prange``); the activations come from
:mod:`cnn.vmath` (vectorised ``tanh``, ``sigmoid``, ``softplus``, ``exp``).

Every number is computed by the same serial code whichever thread runs it,
the chunks are fixed (not the thread count), and every sum over examples runs
in a fixed order, so the results are bit-identical for any thread count. They
are not bit-identical to the layer path (other summation orders in the dense
products, :mod:`cnn.vmath` against NumPy's functions, within 2 ulp), but agree
to round-off: the golden fixtures at 1e-10 and weights within 1e-12 after
training (``tests/test_fused.py``).

The network is described to the kernels by an integer table (one row per
layer: type, activation, maps or nodes, height, width, size, kernel height
and width, rate, where its column windows lie in an example's window buffer)
and tuples of 2-D arrays (one per layer; an unused entry holds a 1 x 1
dummy), so one compiled kernel serves every network of the
supported layers (conv, mean pool, FC; activations ``sigm tanh rect none plus
soft``; losses ``quad cros``; faithful and corrected modes, defects D1-D4 as
``bpcnn``), float64 and float32.

Runtime fields: after :meth:`FusedNet.compute` the layers' ``featuremaps``,
``outputs``, last-layer ``z``, ``er``, ``dK``/``dW``/``db`` are views of the
fused buffers with the layer path's shapes and meanings, overwritten by the
next minibatch. One difference: the input layer's ``featuremaps`` and a
hidden conv layer's ``z`` are as in the layer path (the input, ``None``).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from . import parallel, precompile, signals, vmath
from .activations import LEAK
from .dense import dense_backward, dense_forward, dense_grad
from .kernels import (
    INF_BITS,
    abs_bits_max,
    aligned_empty,
    column_windows,
    conv_full_example,
    conv_valid_columns,
    empty_aligned,
    kernel_grad_rows,
)
from .simd import pairs_run, pool_pairs_run, wide_vectors

T_INPUT, T_CONV, T_POOL, T_FC = 0, 1, 2, 3
A_SIGM, A_TANH, A_RECT, A_NONE, A_PLUS, A_SOFT = 0, 1, 2, 3, 4, 5
ACT_CODES = {
    "sigm": A_SIGM,
    "tanh": A_TANH,
    "rect": A_RECT,
    "none": A_NONE,
    "plus": A_PLUS,
    "soft": A_SOFT,
}
# columns of the layer table
C_TYPE, C_ACT, C_M, C_H, C_W, C_S, C_KH, C_KW, C_RATE, C_WIN0, C_WIN1, C_PART0, C_GRAD0 = range(13)
N_COLS = 13

_CONTRACT = {"contract"}
_serial = nb.njit(cache=True, fastmath=_CONTRACT, error_model="numpy")
_serial_dot = nb.njit(cache=True, fastmath={"contract", "reassoc"}, error_model="numpy")
# the stages a chunk task calls once each: inlined into it by Numba (not compiled as
# separate functions first, then again inside the task: 1.4 s less on an empty cache;
# doing the same with the small helpers, called from several places, cost 10 s more)
_once = nb.njit(cache=True, fastmath=_CONTRACT, error_model="numpy", inline="always")
_parallel = nb.njit(cache=True, parallel=True, fastmath=_CONTRACT, error_model="numpy")
# the update: plain IEEE arithmetic (no FMA), so ``p - lr*dp`` rounds as NumPy's
# (its task is compiled the same way: ``FusedNet._call(..., exact=True)``)
_serial_exact = nb.njit(cache=True, error_model="numpy")

TUPLE_LEN = 8
"""Layer tuples are padded to a multiple of this, so one compiled kernel (per dtype)
serves every network of up to 8 layers (Numba compiles per tuple length)."""

FC_MIN_ROWS = 5
"""Fewest FC weight rows per update task (a task's overhead outweighs smaller ones)."""

UPDATE_CHUNK = 512
"""Conv kernel entries per update task (a fixed split: results do not depend on it)."""


# --------------------------------------------------------------------------- elementwise


@_serial
def _activate(a, code, one, leak):
    """a = f(a) elementwise, in place (1-D; not softmax).

    In place on one array on purpose: with two arrays that may be the same,
    LLVM's run-time overlap check would send the in-place calls to its scalar loop.
    """
    wide_vectors()
    S = a.shape[0]
    # sigm, tanh, plus: cnn.vmath's vectorised functions (within 1, 2, 1 ulp)
    if code == 0:  # sigm: 1 / (1 + exp(-z))
        for i in range(S):
            a[i] = vmath.sigmoid(a[i])
    elif code == 1:  # tanh
        for i in range(S):
            a[i] = vmath.tanh(a[i])
    elif code == 2:  # rect: v if v > 0 else v * leak, the same bits
        # (written so, the store is not conditional: see cnn.vmath's notes on vmaskmovpd)
        for i in range(S):
            v = a[i]
            a[i] = v * (one if v > 0 else leak)
    elif code == 4:  # plus: log(1 + exp(z))
        for i in range(S):
            a[i] = vmath.softplus(a[i])


@_serial
def _activation(z, a, code, M, one, leak):
    """a = f(z): softmax over M groups, or elementwise (``a`` may be ``z``)."""
    if code == A_SOFT:
        _soft_forward(z, a, M)
        return
    if code == A_NONE and a is z:
        return
    if a is not z:
        for i in range(a.shape[0]):
            a[i] = z[i]
    _activate(a, code, one, leak)


@_serial
def _soft_forward(z, a, M):
    """Softmax over axis 0 of ``z`` viewed as (M, S/M) (maps at each position, or nodes)."""
    wide_vectors()
    R = z.shape[0] // M
    for s in range(R):
        m = z[s]
        for j in range(1, M):
            m = max(m, z[j * R + s])
        t = z[0] * 0
        for j in range(M):
            v = vmath.exp(z[j * R + s] - m)
            a[j * R + s] = v
            t += v
        for j in range(M):
            a[j * R + s] /= t


@_serial
def _act_backward(a, g, e, code, faithful, one, leak, M):
    """e = f'(z) * g written from the output a (1-D; softmax over M groups). ``e`` may be ``g``."""
    wide_vectors()
    S = a.shape[0]
    if code == 0:
        for i in range(S):
            v = a[i]
            e[i] = v * (one - v) * g[i]
    elif code == 1:
        for i in range(S):
            v = a[i]
            e[i] = (one - v * v) * g[i]
    elif code == 2:
        for i in range(S):
            e[i] = g[i] if a[i] > 0 else leak * g[i]
    elif code == 3:
        if faithful:  # D2: a * g
            for i in range(S):
                e[i] = a[i] * g[i]
        else:
            for i in range(S):
                e[i] = g[i]
    elif code == 4:  # plus: (1 - exp(-a)) g = sigmoid(z) g
        for i in range(S):
            e[i] = vmath.one_minus_exp_neg(a[i]) * g[i]
    else:  # soft: -a (sum(g a) - g), sum over the M maps/nodes
        R = S // M
        for s in range(R):
            t = a[0] * 0
            for j in range(M):
                t += g[j * R + s] * a[j * R + s]
            for j in range(M):
                e[j * R + s] = -a[j * R + s] * (t - g[j * R + s])


# ---------------------------------------------------------------------- map kernels, one example


@_serial_dot
def _row_sums(e, M, out):
    """out[j] = sum_r sum_u e[r, j*S + u] (the bias-gradient part of examples r:
    e (R, M*S), each row an example's errors (M, S))."""
    wide_vectors()
    S = e.shape[1] // M
    for j in range(M):
        s = e[0, 0] * 0
        for r in range(e.shape[0]):
            er = e[r]
            for u in range(S):
                s += er[j * S + u]
        out[j] = s


@_serial
def _mean_pool(x, r, c, y):
    """y[m, p, q] = sum_ab x[m, p*r+a, q*r+b] * c (one example), as ``kernels.mean_pool``."""
    wide_vectors()
    M, h, w = y.shape
    H, W = x.shape[1], x.shape[2]
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    for m in range(M):
        for p in range(h):
            yr = y[m, p]
            if r == 2:  # in SIMD vectors: the vectoriser's strided loads are gathers
                r0 = (m * H + 2 * p) * W
                pool_pairs_run(yf, (m * h + p) * w, xf, r0, r0 + W, w, c)
            else:
                for q in range(w):
                    yr[q] = 0
                for a in range(r):
                    xa = x[m, p * r + a]
                    for b in range(r):
                        for q in range(w):
                            yr[q] += xa[q * r + b] * c


@_serial
def _upsample(e, r, divisor, g):
    """g[m, u, v] = e[m, u//r, v//r] / divisor; zero beyond h*r, w*r (one example).

    For r = 2 each output row is written by :func:`cnn.simd.pairs_run` (each value
    divided once, duplicated by a shuffle: rows of 8-20 values are too short for
    the loops LLVM vectorises, and its strided stores are scatters; 2.7 -> ~1.2 us
    per example in the pipeline for Example 3's 10 x 20 x 20 in float32).
    """
    M, h, w = e.shape
    H, W = g.shape[1], g.shape[2]
    ef = e.reshape(-1)
    gf = g.reshape(-1)
    for m in range(M):
        for p in range(h):
            src = (m * h + p) * w  # row p of map m in ef
            for a in range(r):
                row = (m * H + p * r + a) * W  # row p*r + a of map m in gf
                if r == 2:
                    pairs_run(gf, row, ef, src, w, divisor)
                else:
                    for q in range(w):
                        val = ef[src + q] / divisor
                        for b in range(r):
                            gf[row + q * r + b] = val
                for v in range(w * r, W):
                    gf[row + v] = 0
        for u in range(h * r, H):
            for v in range(W):
                g[m, u, v] = 0


@_serial
def _flatten(a, M, H, W, f):
    # MATLAB column-major order: f[m*H*W + c*H + r] = a[m, r, c]
    for m in range(M):
        for r in range(H):
            for c in range(W):
                f[m * H * W + c * H + r] = a[m * H * W + r * W + c]


@_serial
def _unflatten(f, M, H, W, a):
    for m in range(M):
        for r in range(H):
            for c in range(W):
                a[m * H * W + r * W + c] = f[m * H * W + c * H + r]


@_serial
def _top(spec):
    """The last map layer (conv or pool) of the layer table; 0 (the input) if none."""
    top = 0
    for l in range(1, spec.shape[0]):
        if spec[l, C_TYPE] != T_FC:
            top = l
    return top


@_once
def _maps_forward(n, top, spec, cst, A, Z, F, Ps, Bs, one, leak, win):
    """The forward pass of example n through the map layers 1..top (conv, pool):
    A[l][n], Z[n] if ``top`` is the last layer, and F[n] (the maps of layer
    ``top`` flattened in MATLAB order) if an FC layer follows. ``win`` (the example's
    row of the window buffer) receives the conv layers' column windows (the backward
    pass reads them again)."""
    last = spec.shape[0] - 1
    for l in range(1, top + 1):
        t = spec[l, C_TYPE]
        code = spec[l, C_ACT]
        M = spec[l, C_M]
        S = spec[l, C_S]
        P, H, W = spec[l - 1, C_M], spec[l - 1, C_H], spec[l - 1, C_W]
        a = A[l][n]
        if t == T_CONV:
            kw = spec[l, C_KW]
            Wo = W - kw + 1
            K = Ps[l].reshape(M, P, spec[l, C_KH], kw)
            xb = win[spec[l, C_WIN0] : spec[l, C_WIN1]].reshape(P, kw, H * Wo)
            column_windows(A[l - 1][n].reshape(P, H, W), Wo, xb)
            z = Z[n] if l == last else a
            conv_valid_columns(xb, K, Bs[l][0], z.reshape(M, S // M), Wo)
            _activation(z, a, code, M, one, leak)
        else:  # mean pool; cst[l, 0] = 1 / r^2 in the network's dtype
            h, w = spec[l, C_H], spec[l, C_W]
            _mean_pool(A[l - 1][n].reshape(P, H, W), spec[l, C_RATE], cst[l, 0], a.reshape(M, h, w))
    if top < last:  # an FC layer follows: its input, flattened in MATLAB order
        _flatten(A[top][n], spec[top, C_M], spec[top, C_H], spec[top, C_W], F[n])


@_once
def _dense_forward(n0, n1, top, spec, A, Z, F, Bs, Ps, one, leak):
    """The FC layers top+1.. of examples n0..n1-1: one matrix product per layer
    (:mod:`cnn.dense`, on this thread), then the bias and the activation per example."""
    last = spec.shape[0] - 1
    for l in range(top + 1, last + 1):
        x = F[n0:n1] if l == top + 1 else A[l - 1][n0:n1]
        z = Z[n0:n1] if l == last else A[l][n0:n1]
        dense_forward(x, Ps[l], z)  # z[n, j] = sum_i x[n, i] W[j, i]
        b = Bs[l][0]
        for r in range(n1 - n0):
            zr = z[r]
            for j in range(zr.shape[0]):
                zr[j] += b[j]
            _activation(zr, A[l][n0 + r], spec[l, C_ACT], spec[l, C_M], one, leak)


@_once
def _output_error(n, spec, A, Z, y, perm, loss_kind, flag, faithful, one, leak, e, lp):
    """Loss term and output error of example n (the last layer's outputs, map layout).

    e[s] = o[s] - y[perm[s]], times the output activation's derivative when
    ``flag``; lp[n] = the example's loss term before the 1/(2N) or -1/N.
    """
    L = spec.shape[0]
    last = L - 1
    o = A[last][n]
    z = Z[n]
    yn = y[n]
    S = o.shape[0]
    M = spec[last, C_M]
    code = spec[last, C_ACT]
    t = spec[last, C_TYPE]
    for s in range(S):
        e[s] = o[s] - yn[perm[s]]
    acc = o[0] * 0
    if loss_kind == 0:  # quad: sum (o - y)^2
        for s in range(S):
            acc += e[s] * e[s]
    elif code == A_SIGM:  # cros, sigm: sum y log o + (1 - y) log(1 - o)
        for s in range(S):
            v = yn[perm[s]]
            acc += v * -vmath.softplus(-z[s]) + (one - v) * -vmath.softplus(z[s])
    else:  # cros, soft: sum y log o (log-softmax over axis 1)
        G = S if t == T_FC else M
        R = S // G
        for r in range(R):
            m = z[r]
            for j in range(1, G):
                m = max(m, z[j * R + r])
            tt = z[0] * 0
            for j in range(G):
                tt += np.exp(z[j * R + r] - m)
            lt = np.log(tt)
            for j in range(G):
                s = j * R + r
                acc += yn[perm[s]] * (z[s] - m - lt)
    lp[n] = acc
    if flag:
        # softmax axis: the nodes (FC); for maps the whole flattened output when faithful
        # (bpcnn applies the derivative to the (N, S) matrix), the maps at each position
        # when corrected
        G = M if (t != T_FC and not faithful) else S
        _act_backward(o, e, e, code, faithful, one, leak, G)


@_once
def _dense_backward(n0, n1, top, spec, A, E, Ps, faithful, one, leak, eo):
    """The errors of the FC layers top+1.. of examples n0..n1-1, from the output
    errors eo (n1-n0, S); returns the error w.r.t. the (flattened) outputs of
    layer ``top`` (n1-n0, S_top), MATLAB order."""
    last = spec.shape[0] - 1
    g = eo
    for l in range(last, top, -1):
        er = E[l][n0:n1]
        if l == last:
            # a loop, not er[:] = g: the slice assignment's shape check brings in
            # Numba's error-message formatting (~5 s of a first compile)
            for r in range(n1 - n0):
                for j in range(er.shape[1]):
                    er[r, j] = g[r, j]
        else:
            for r in range(n1 - n0):
                _act_backward(
                    A[l][n0 + r], g[r], er[r], spec[l, C_ACT], faithful, one, leak, spec[l, C_M]
                )
        if l == 1:  # nothing below but the input
            break
        gb = empty_aligned((n1 - n0) * spec[l - 1, C_S], eo).reshape(n1 - n0, spec[l - 1, C_S])
        dense_backward(er, Ps[l], gb)  # gb[n, i] = sum_j er[n, j] W[j, i]
        g = gb
    return g


@_once
def _maps_backward(n, top, g, spec, cst, A, E, Ps, faithful, one, leak):
    """The errors of the map layers top..1 of example n (E[l][n]); g: the error
    w.r.t. the outputs of layer ``top`` (map layout). The conv gradients follow
    for the whole chunk (:func:`_conv_grads`)."""
    last = spec.shape[0] - 1
    for l in range(top, 0, -1):
        t = spec[l, C_TYPE]
        code = spec[l, C_ACT]
        M, H, W, S = spec[l, C_M], spec[l, C_H], spec[l, C_W], spec[l, C_S]
        Mb, Hb, Wb, Sb = spec[l - 1, C_M], spec[l - 1, C_H], spec[l - 1, C_W], spec[l - 1, C_S]
        er = E[l][n]
        if t == T_POOL:
            r = spec[l, C_RATE]
            # D4: no / r^2 for a pool last layer in faithful mode
            div = one if (l == last and faithful) else cst[l, 1]
            _upsample(g.reshape(M, H, W), r, div, er.reshape(Mb, Hb, Wb))
            g = er
        else:  # conv
            if l == last:
                for i in range(S):
                    er[i] = g[i]
            else:
                _act_backward(A[l][n], g, er, code, faithful, one, leak, M if code == A_SOFT else 1)
            kh, kw = spec[l, C_KH], spec[l, C_KW]
            if l > 1:
                gb = empty_aligned(Sb, er)
                # the kernels rotated by 180 degrees when faithful (D1)
                K = Ps[l].reshape(M, Mb, kh, kw)
                conv_full_example(er.reshape(M, H, W), K, faithful, gb.reshape(Mb, Hb, Wb))
                g = gb


@_once
def _conv_grads(n0, n1, top, spec, E, pk, d3, win):
    """The parts of the conv layers' kernel and bias gradients of examples n0..n1-1
    (a chunk), summed over them, into ``pk`` (the chunk's row of PK, each layer's
    from ``spec[l, C_PART0]``: kernel, then bias); win: the chunk's column windows
    (:func:`_maps_forward`), E: the errors (:func:`_maps_backward`)."""
    last = spec.shape[0] - 1
    for l in range(1, top + 1):
        if spec[l, C_TYPE] != T_CONV:
            continue
        M = spec[l, C_M]
        Mb, Hb, Wb = spec[l - 1, C_M], spec[l - 1, C_H], spec[l - 1, C_W]
        kh, kw = spec[l, C_KH], spec[l, C_KW]
        Wo = Wb - kw + 1
        ks = M * Mb * kh * kw
        p0 = spec[l, C_PART0]
        er = E[l][n0:n1]
        if not (l == last and d3):  # D3: _d3_task
            part = pk[p0 : p0 + ks].reshape(M, Mb, kh, kw)
            kernel_grad_rows(win, spec[l, C_WIN0], er, part, Wo, Hb * Wo, False)
        _row_sums(er, M, pk[p0 + ks : p0 + ks + M])


# --------------------------------------------------------------------------- the calls


CHUNK = 5
"""Examples per task of the fused loops: the FC layers of a chunk are one matrix
product each. A fixed size (not the thread count), so results do not depend on it."""

ARGS = (
    "train",
    "spec",
    "cst",
    "A",
    "Z",
    "F",
    "E",
    "Ps",
    "Bs",
    "PK",
    "G",
    "y",
    "perm",
    "loss_kind",
    "flag",
    "faithful",
    "d3",
    "one",
    "leak",
    "lr",
    "lp",
    "win",
    "tasks",
    "stats",
)
"""The arguments every task takes after its index, in order: one list for
:func:`_forward_chunk`, :func:`_backward_chunk`, :func:`_d3_task`,
:func:`_update_task` and :func:`_nothing`, so that one compiled
parallel loop (:func:`_run`) calls them all (each parallel function costs about
3 s of a first compile). A task reads the entries it needs; a call that does
not need an entry passes a dummy of the same type (:class:`FusedNet`)."""


@_parallel
def _run(
    first,
    then,
    count,
    threads,
    taken,
    train,
    spec,
    cst,
    A,
    Z,
    F,
    E,
    Ps,
    Bs,
    PK,
    G,
    y,
    perm,
    loss_kind,
    flag,
    faithful,
    d3,
    one,
    leak,
    lr,
    lp,
    win,
    tasks,
    stats,
):
    """``first(i, *args)``, then ``then(i, *args)``, for i = 0 .. count-1 on Numba's
    threads; ``first`` and ``then`` are tasks (:func:`_forward_chunk` and
    :func:`_backward_chunk`, or a task and :func:`_nothing`) compiled as C functions
    (:func:`cnn.parallel.compiled`), the other arguments are :data:`ARGS`.

    Each of Numba's threads first runs its own share of the indices in order (the
    share ``prange``'s static split would give it), then any index still left,
    from the last; an index runs where it is first claimed (``parallel.claim`` on
    ``taken``, int64 zeros (count,)). On an idle machine every thread runs its own
    share (as with a static split, the same rows of the buffers on the same core
    each minibatch); on a busy one, a thread the scheduler has set aside holds up
    the join by the index it is working on, not by its whole share. Which thread
    runs an index changes no result (the tasks' notes). ``threads``: Numba's thread
    count (``numba.get_num_threads()``, given by the caller: called in here, it
    kept Numba from caching this function)."""
    for t in nb.prange(threads):
        # int64: the prange index is typed int64 in the first typing pass and uint64
        # in the parallel loop body (uint64 with int64 makes float64)
        k = np.int64(t)
        lo = k * count // threads
        own = (k + 1) * count // threads - lo
        for j in range(own + count):
            i = lo + j if j < own else count - 1 - (j - own)
            if not parallel.claim(taken, i):
                continue
            first(
                i,
                train,
                spec,
                cst,
                A,
                Z,
                F,
                E,
                Ps,
                Bs,
                PK,
                G,
                y,
                perm,
                loss_kind,
                flag,
                faithful,
                d3,
                one,
                leak,
                lr,
                lp,
                win,
                tasks,
                stats,
            )
            then(
                i,
                train,
                spec,
                cst,
                A,
                Z,
                F,
                E,
                Ps,
                Bs,
                PK,
                G,
                y,
                perm,
                loss_kind,
                flag,
                faithful,
                d3,
                one,
                leak,
                lr,
                lp,
                win,
                tasks,
                stats,
            )


def _run_args(first, then, count, args):
    """The arguments of :func:`_run` for tasks ``first`` and ``then`` over ``count``
    indices; ``args``: the tasks' arguments (:data:`ARGS`, in order)."""
    taken = np.zeros(count, np.int64)  # which indices a thread has claimed
    return (first, then, count, nb.get_num_threads(), taken) + tuple(args)


def _forward_chunk(
    c,
    train,
    spec,
    cst,
    A,
    Z,
    F,
    E,
    Ps,
    Bs,
    PK,
    G,
    y,
    perm,
    loss_kind,
    flag,
    faithful,
    d3,
    one,
    leak,
    lr,
    lp,
    win,
    tasks,
    stats,
):
    """Chunk c, examples n0 = c * CHUNK .. n1-1: the forward pass (the map layers per
    example, the FC layers one matrix product each). With ``train``, the examples'
    column windows go to this thread's rows of ``win`` (:func:`_backward_chunk`,
    which :func:`_run` calls next on the same thread, reads them).

    Reads train, spec, cst, A, Z, F, Ps, Bs, one, leak, lp, win (:data:`ARGS`)."""
    N = A[0].shape[0]
    n0 = c * CHUNK
    n1 = min(n0 + CHUNK, N)
    last = spec.shape[0] - 1
    top = _top(spec)
    # without train the windows are not kept: one row, reused; with train, in this
    # thread's rows of win (the backward task runs next on the same thread)
    scratch = empty_aligned(0 if train else spec[last, C_WIN1], lp)
    w0 = nb.get_thread_id() * CHUNK - n0
    for n in range(n0, n1):
        w = win[w0 + n] if train else scratch
        _maps_forward(n, top, spec, cst, A, Z, F, Ps, Bs, one, leak, w)
    if top < last:
        _dense_forward(n0, n1, top, spec, A, Z, F, Bs, Ps, one, leak)


def _backward_chunk(
    c,
    train,
    spec,
    cst,
    A,
    Z,
    F,
    E,
    Ps,
    Bs,
    PK,
    G,
    y,
    perm,
    loss_kind,
    flag,
    faithful,
    d3,
    one,
    leak,
    lr,
    lp,
    win,
    tasks,
    stats,
):
    """Chunk c, after :func:`_forward_chunk` (of the same thread, in :func:`_run`): the
    loss terms, the errors and the examples' parts of the conv gradients (their
    sum over the chunk, in PK[c]).

    Reads spec, cst, A, Z, E, Ps, PK, y, perm, loss_kind, flag, faithful, d3, one,
    leak, lp, win (:data:`ARGS`)."""
    N = A[0].shape[0]
    n0 = c * CHUNK
    n1 = min(n0 + CHUNK, N)
    last = spec.shape[0] - 1
    top = _top(spec)
    eo = empty_aligned((n1 - n0) * spec[last, C_S], lp).reshape(n1 - n0, spec[last, C_S])
    for n in range(n0, n1):
        _output_error(n, spec, A, Z, y, perm, loss_kind, flag, faithful, one, leak, eo[n - n0], lp)
    if top < last:
        g = _dense_backward(n0, n1, top, spec, A, E, Ps, faithful, one, leak, eo)
    else:  # no FC layer: the maps' errors start at the output
        g = eo
    if top == 0:
        return  # no map layer
    gm = empty_aligned(spec[top, C_S], lp)
    for n in range(n0, n1):
        gn = g[n - n0]
        if top < last:  # cut back into maps (MATLAB order to map layout)
            _unflatten(gn, spec[top, C_M], spec[top, C_H], spec[top, C_W], gm)
            gn = gm
        _maps_backward(n, top, gn, spec, cst, A, E, Ps, faithful, one, leak)
    w0 = nb.get_thread_id() * CHUNK  # this thread's rows of win (_forward_chunk)
    _conv_grads(n0, n1, top, spec, E, PK[c], d3, win[w0 : w0 + n1 - n0])


def _nothing(
    c,
    train,
    spec,
    cst,
    A,
    Z,
    F,
    E,
    Ps,
    Bs,
    PK,
    G,
    y,
    perm,
    loss_kind,
    flag,
    faithful,
    d3,
    one,
    leak,
    lr,
    lp,
    win,
    tasks,
    stats,
):
    """The task that does nothing: ``then`` of a loop with one task per index."""
    # a statement after the docstring: Numba's debug-info line finder (used with
    # NUMBA_ENABLE_PROFILING=1 or debug=True) fails on a body of a docstring alone
    return


def _d3_task(
    c,
    train,
    spec,
    cst,
    A,
    Z,
    F,
    E,
    Ps,
    Bs,
    PK,
    G,
    y,
    perm,
    loss_kind,
    flag,
    faithful,
    d3,
    one,
    leak,
    lr,
    lp,
    win,
    tasks,
    stats,
):
    """Defect D3 (faithful, conv last layer), chunk c: the last layer's kernel gradient
    part from each example n's own input maps and example N-1-n's error, summed over
    the chunk's examples in order. Run after every chunk (it reads other
    examples' errors). Reads spec, A, E, PK, lp."""
    N = A[0].shape[0]
    n0 = c * CHUNK
    n1 = min(n0 + CHUNK, N)
    last = spec.shape[0] - 1
    M, kh, kw = spec[last, C_M], spec[last, C_KH], spec[last, C_KW]
    Mb, Hb, Wb = spec[last - 1, C_M], spec[last - 1, C_H], spec[last - 1, C_W]
    Wo = Wb - kw + 1
    p0 = spec[last, C_PART0]
    part = PK[c][p0 : p0 + M * Mb * kh * kw].reshape(M, Mb, kh, kw)
    xb = empty_aligned(Mb * kw * Hb * Wo, lp).reshape(Mb, kw, Hb * Wo)
    for n in range(n0, n1):
        column_windows(A[last - 1][n].reshape(Mb, Hb, Wb), Wo, xb)
        e = E[last][N - 1 - n : N - n]
        kernel_grad_rows(xb.reshape(1, -1), 0, e, part, Wo, Hb * Wo, n > n0)


@_serial
def _watch(p, stat, col):
    """stat[col] = max(stat[col], max |p|); stat[2] becomes NaN if p holds a NaN/Inf
    (stat[col] is then meaningless)."""
    m = abs_bits_max(p)
    if m >= INF_BITS:
        stat[2] = np.nan
    else:
        stat[col] = max(stat[col], vmath._bits_f64(m))


@_serial_exact
def _sum_rows(p, start, stop, d):
    """d[i] = sum_n p[n, start + i], added in the order n = 0, 1, ... (vectorised over i)."""
    wide_vectors()
    p0 = p[0]
    for i in range(stop - start):
        d[i] = p0[start + i]
    for n in range(1, p.shape[0]):
        pn = p[n]
        for i in range(stop - start):
            d[i] += pn[start + i]


def _update_task(
    t,
    train,
    spec,
    cst,
    A,
    Z,
    F,
    E,
    Ps,
    Bs,
    PK,
    G,
    y,
    perm,
    loss_kind,
    flag,
    faithful,
    d3,
    one,
    leak,
    lr,
    lp,
    win,
    tasks,
    stats,
):
    """Task t of the update: sum the chunks' parts, divide by N, step: p -= lr * dp.

    tasks[t] = (layer, kind, start, stop): kind 0 FC rows start:stop (W and b),
    kind 1 conv kernel entries start:stop, kind 2 conv bias. The conv and bias
    parts are summed in chunk order; an FC weight gradient is one matrix product
    per task. stats[t] =
    (max |W or K entry|, max |b entry|, NaN if any is NaN/Inf else 0) over the
    new values the task wrote: what the finite check and the divergence guard
    of the next minibatch read, without another pass over the parameters.
    Reads spec, A, F, E, Ps, Bs, PK, G, d3, lr, tasks, stats (:data:`ARGS`).
    """
    N = A[0].shape[0]
    last = spec.shape[0] - 1
    l, kind, start, stop = tasks[t, 0], tasks[t, 1], tasks[t, 2], tasks[t, 3]
    stat = stats[t]
    stat[0] = 0
    stat[1] = 0
    stat[2] = 0
    if kind == 0:
        W = Ps[l]
        R, m = W.shape
        g0 = spec[l, C_GRAD0]  # dW (R x m), then db (R)
        dW = G[g0 : g0 + R * m].reshape(R, m)
        db = G[g0 + R * m : g0 + R * m + R]
        b = Bs[l][0]
        e = E[l]
        x = A[l - 1] if spec[l - 1, C_TYPE] == T_FC else F
        # dW[j] = sum_n e[n, j] x[n] for rows start:stop: one matrix product, on this
        # thread (the same call whatever the thread count)
        dense_grad(e, x, start, stop, dW)
        _sum_rows(e, start, stop, db[start:stop])  # db[j] = e[0, j] + e[1, j] + ...
        for j in range(start, stop):
            dWj = dW[j]
            Wj = W[j]
            for i in range(m):
                dWj[i] /= N
                Wj[i] -= lr * dWj[i]
            _watch(Wj, stat, 0)
            db[j] /= N
            b[j] -= lr * db[j]
        _watch(b[start:stop], stat, 1)
    elif kind == 1:
        K = Ps[l][0]
        g0, p0 = spec[l, C_GRAD0], spec[l, C_PART0]
        d = G[g0 + start : g0 + stop]
        # d[i] = PK[0, p0 + start + i] + PK[1, p0 + start + i] + ... in chunk order
        _sum_rows(PK, p0 + start, p0 + stop, d)
        k = K[start:stop]
        scale = not (d3 and l == last)  # D3: no 1/N
        for i in range(stop - start):
            if scale:
                d[i] /= N
            k[i] -= lr * d[i]
        _watch(k, stat, 0)
    else:
        b = Bs[l][0]
        ks = Ps[l].shape[1]  # the bias parts and db follow the kernel's
        g0, p0 = spec[l, C_GRAD0] + ks, spec[l, C_PART0] + ks
        db = G[g0 : g0 + b.shape[0]]
        _sum_rows(PK, p0, p0 + b.shape[0], db)  # in chunk order
        for j in range(b.shape[0]):
            db[j] /= N
            b[j] -= lr * db[j]
        _watch(b, stat, 1)


# --------------------------------------------------------------------------- the network side


def supports(net):
    """Whether the fused step handles ``net`` (else ``traincnn`` uses the layer path)."""
    return supports_forward(net) and net.loss_func in ("quad", "cros")


def supports_forward(net):
    """Whether the fused forward pass handles ``net`` (any loss)."""
    layers = net.layers
    if len(layers) < 2 or np.dtype(net.dtype) not in (np.float32, np.float64):
        return False
    seen_fc = False
    for layer in layers[1:]:
        if layer.type == "f":
            seen_fc = True
        elif layer.type not in "cp" or seen_fc or (layer.type == "p" and layer.method != "mean"):
            return False
        if layer.act_func not in ACT_CODES:
            return False
    return True


def _layer_table(net):
    rows = []
    for layer in net.layers:
        t = {"i": T_INPUT, "c": T_CONV, "p": T_POOL, "f": T_FC}[layer.type]
        act = ACT_CODES[layer.act_func] if layer.type in "cf" else A_NONE
        if layer.type == "f":
            M, H, W = layer.n_nodes, 1, 1
        else:
            M, (H, W) = layer.n_maps, layer.map_shape
        kh = getattr(layer, "kernel_height", 0)
        kw = getattr(layer, "kernel_width", 0)
        rate = getattr(layer, "rate", 0) if layer.type == "p" else 0
        # conv layer l's column windows (kernels.column_windows of its input maps)
        # lie at win0:win1 in an example's row of the window buffer; the last
        # layer's win1 is the row's length
        win0 = rows[-1][C_WIN1] if rows else 0
        size = 0
        if t == T_CONV:
            P, Hb, Wb = rows[-1][C_M], rows[-1][C_H], rows[-1][C_W]
            size = P * kw * Hb * (Wb - kw + 1)
        # where its gradient parts (per chunk) start in a row of PK (conv) and its
        # gradient in G (conv, FC): after the layer before's
        part0 = rows[-1][C_PART0] + _parts(rows, len(rows) - 1) if rows else 0
        grad0 = rows[-1][C_GRAD0] + _grads(rows, len(rows) - 1) if rows else 0
        rows.append((t, act, M, H, W, M * H * W, kh, kw, rate, win0, win0 + size, part0, grad0))
    return np.array(rows, dtype=np.int64)


def _parts(spec, l):
    """Entries of layer l's gradient parts in a row of PK: kernel and bias of a conv layer."""
    r = spec[l]
    if r[C_TYPE] != T_CONV:
        return 0
    return r[C_M] * spec[l - 1][C_M] * r[C_KH] * r[C_KW] + r[C_M]


def _grads(spec, l):
    """Entries of layer l's gradient: dK and db of a conv layer, dW and db of an FC layer."""
    r = spec[l]
    if r[C_TYPE] == T_FC:
        return r[C_M] * spec[l - 1][C_S] + r[C_M]
    return _parts(spec, l)


def _output_perm(net):
    """perm[s]: the column of ``y`` for output s in map layout (MATLAB's flattening)."""
    last = net.layers[-1]
    if last.type == "f":
        return np.arange(last.n_nodes, dtype=np.int64)
    M, (H, W) = last.n_maps, last.map_shape
    m, r, c = np.meshgrid(np.arange(M), np.arange(H), np.arange(W), indexing="ij")
    return (m * H * W + c * H + r).reshape(-1).astype(np.int64)


def _pad(arrays, dummy):
    """``arrays`` as a tuple padded with ``dummy`` to a multiple of :data:`TUPLE_LEN`."""
    n = -(-len(arrays) // TUPLE_LEN) * TUPLE_LEN
    return tuple(arrays) + (dummy,) * (n - len(arrays))


class FusedNet:
    """The fused step's buffers and tables for one network and one batch size.

    Built once per ``traincnn``/``testcnn`` call (cheap: allocation only); the
    compiled kernels are shared by every network.

    Parameters
    ----------
    net : CNN
        With ``loss_func`` resolved (``'quad'`` or ``'cros'``) and the flag set
        for training (see ``backward.prepare_loss_and_flag``).
    N : int
        The batch (or chunk) size.
    train : bool
        Allocate the backward buffers too.
    """

    def __init__(self, net, N, train=True):
        self.net = net
        self.N = N
        dt = np.dtype(net.dtype)
        self.dtype = dt
        self.spec = _layer_table(net)
        self.perm = _output_perm(net)
        # per layer: 1/r^2 and r^2 of a pool layer in the network's dtype
        r2 = np.maximum(self.spec[:, C_RATE], 1) ** 2
        self.cst = np.stack([1.0 / r2, r2], axis=1).astype(dt)
        self.one = dt.type(1)
        self.leak = dt.type(LEAK)
        layers = net.layers
        L = len(layers)
        dummy = np.zeros((1, 1), dt)
        self._dummy = dummy
        self._dummies = _pad([dummy] * L, dummy)  # the unused tuples of a forward pass
        sizes = self.spec[:, C_S]
        # 64-byte aligned (kernels.ALIGN): the SIMD kernels' vectors then start on cache lines
        self.A = [aligned_empty((N, int(s)), dt) for s in sizes]
        self.At = _pad(self.A, dummy)
        self.Z = aligned_empty((N, int(sizes[-1])), dt)
        kmap = max(i for i, layer in enumerate(layers) if layer.type != "f")
        has_fc = layers[-1].type == "f"
        self.F = aligned_empty((N, int(sizes[kmap])), dt) if has_fc else dummy
        self.kmap = kmap
        self.train = train
        if train:
            self.E = _pad(
                [
                    aligned_empty((N, int(sizes[l - 1] if layers[l].type == "p" else sizes[l])), dt)
                    if l > 0
                    else dummy
                    for l in range(L)
                ],
                dummy,
            )
            # the chunks' conv gradient parts, one row each; every gradient, one vector
            # (where each layer's lie: the layer table's C_PART0, C_GRAD0 columns)
            chunks = self._chunks()
            self.PK = aligned_empty(
                (chunks, int(self.spec[-1, C_PART0] + _parts(self.spec, L - 1))), dt
            )
            self.lp = aligned_empty(N, dt)
            # the column windows of a chunk's examples, CHUNK rows per thread (Numba's
            # thread id): the forward task writes them, the backward task reads them
            rows = nb.config.NUMBA_NUM_THREADS * CHUNK
            self.win = aligned_empty((rows, int(self.spec[-1, C_WIN1])), dt)
            self.G = aligned_empty(int(self.spec[-1, C_GRAD0] + _grads(self.spec, L - 1)), dt)
            self.tasks = self._task_table()
            self.stats = np.zeros((len(self.tasks), 3))
        else:  # what the calls pass for the training buffers (same types)
            self.E = self._dummies
            self.PK = dummy
            self.lp = self.G = dummy[0]
            self.win = dummy
            self.tasks = np.zeros((0, 4), np.int64)
            self.stats = np.zeros((0, 3))
        # the parameter attributes (K or W, and b, of the conv and FC layers)
        self._slots = [
            (layer, name)
            for layer in layers
            if layer.type in "cf"
            for name in ("K" if layer.type == "c" else "W", "b")
        ]
        self._params = None
        self._stats_valid = False
        self._fields = None  # expose()'s views, made on first use
        self._tasks = {}  # a task (_forward_chunk, ...) -> its C function
        self.sync_params()
        # on an empty Numba cache, a second process compiles the backward task
        # meanwhile (cnn.precompile; None when it would not help)
        self._helper = None
        if train and len(self.At) == TUPLE_LEN:
            self._helper = precompile.start(_backward_chunk, self._args(), dt, TUPLE_LEN)

    def _task_table(self):
        tasks = []
        n_threads = 16  # rows per FC task: a fixed split (not the thread count)
        for l, layer in enumerate(self.net.layers):
            if layer.type == "f":
                rows = layer.n_nodes
                step = max(FC_MIN_ROWS, -(-rows // n_threads))
                tasks += [(l, 0, s, min(s + step, rows)) for s in range(0, rows, step)]
            elif layer.type == "c":
                size = layer.K.size
                tasks += [
                    (l, 1, s, min(s + UPDATE_CHUNK, size)) for s in range(0, size, UPDATE_CHUNK)
                ]
                tasks.append((l, 2, 0, layer.n_maps))
        return np.array(tasks, dtype=np.int64).reshape(-1, 4)

    def sync_params(self):
        """Point the kernels at the layers' current parameter arrays (in place updates).

        Called before each minibatch: a callback that assigns new arrays to
        ``K``/``W``/``b`` is seen; arrays of the wrong dtype or layout are
        replaced on the layer by a C-contiguous copy first.
        """
        if self._params == self._param_ids():
            return
        layers = self.net.layers
        dt = self.dtype
        dummy2 = np.zeros((1, 1), dt)
        for layer, name in self._slots:
            a = getattr(layer, name)
            if a.dtype != dt or not a.flags.c_contiguous or not a.flags.writeable:
                setattr(layer, name, np.ascontiguousarray(a, dtype=dt).copy())
        self.Bs = _pad(
            [layer.b.reshape(1, -1) if layer.type in "cf" else dummy2 for layer in layers], dummy2
        )
        # W itself, or K as one row (2-D views: the update writes through them)
        self.Ps = _pad(
            [
                layer.W
                if layer.type == "f"
                else layer.K.reshape(1, -1)
                if layer.type == "c"
                else dummy2
                for layer in layers
            ],
            dummy2,
        )
        self._params = self._param_ids()
        self._stats_valid = False  # new parameter arrays: not checked by an update

    def _param_ids(self):
        """The identities of the parameter arrays now on the layers."""
        return [id(getattr(layer, name)) for layer, name in self._slots]

    def _load(self, x):
        """Point the input entry of the layer tuple at ``x`` (no copy when ``x`` is a
        C-contiguous, aligned, writeable array of the network's dtype, as ``traincnn``
        usually passes: the kernels are compiled for that array type only)."""
        x2 = x.reshape(x.shape[0], -1)
        f = x2.flags
        if x2.dtype != self.dtype or not (f.c_contiguous and f.aligned and f.writeable):
            self.A[0][...] = x2
            x2 = self.A[0]
        self._input = x2
        self.At = (x2,) + self.At[1:]

    def _call(self, task, count, then=_nothing, exact=False, **given):
        """``task(i, *args)``, then ``then(i, *args)``, for i = 0 .. count-1 on Numba's
        threads (:func:`_run`).

        task, then : tasks (:func:`_forward_chunk`, :func:`_backward_chunk`,
            :func:`_d3_task`, :func:`_update_task`, :func:`_nothing`).
        exact : compile ``task`` without FMA contraction (the update).
        given : the entries of :data:`ARGS` that differ from :meth:`_args`' defaults.
        """
        args = self._args(**given)
        if self._helper is not None and then is _backward_chunk:
            self._compile_with_helper(args)
        run_args = _run_args(self._task(task, args, exact), self._task(then, args), count, args)
        with signals.held():  # a signal must not raise inside Numba's unboxing (cnn.signals)
            _run(*run_args)

    def _args(self, **given):
        """The arguments of every task after its index (:data:`ARGS`, in order): this
        network's buffers and the defaults (train False, dummy labels, quad loss,
        flags False, lr 1), with ``given`` entries replaced. Every call passes
        arguments of the same types."""
        args = dict(
            train=False,
            spec=self.spec,
            cst=self.cst,
            A=self.At,
            Z=self.Z,
            F=self.F,
            E=self.E,
            Ps=self.Ps,
            Bs=self.Bs,
            PK=self.PK,
            G=self.G,
            y=self._dummy,
            perm=self.perm,
            loss_kind=0,
            flag=False,
            faithful=False,
            d3=False,
            one=self.one,
            leak=self.leak,
            lr=self.one,
            lp=self.lp,
            win=self.win,
            tasks=self.tasks,
            stats=self.stats,
        )
        args.update(given)
        return tuple(args[name] for name in ARGS)

    def _compile_with_helper(self, args):
        """While the helper compiles the backward task: compile the forward and update
        tasks and the loop here, then wait for it (the backward task then loads from
        Numba's disk cache, or is compiled here if the helper failed)."""
        helper, self._helper = self._helper, None
        f = self._task(_forward_chunk, args)
        self._task(_nothing, args)
        self._task(_update_task, args, exact=True)
        _run.compile(tuple(nb.typeof(a) for a in _run_args(f, f, 0, args)))
        helper.wait()

    def _task(self, task, args, exact=False):
        """``task`` compiled as a C function for ``args`` (once per FusedNet: the buffers
        fix the argument types); ``exact``: without FMA contraction."""
        f = self._tasks.get(task)
        if f is None:
            options = {} if exact else {"fastmath": _CONTRACT}
            f = parallel.compiled(task, (0,) + args, error_model="numpy", **options)
            self._tasks[task] = f
        return f

    def _chunks(self):
        """The number of chunks of :data:`CHUNK` examples."""
        return -(-self.N // CHUNK)

    def _labels(self, y):
        """``y`` as the kernels are compiled for: C-contiguous, aligned, writeable, the
        network's dtype (a copy only when it is not)."""
        f = y.flags
        if y.dtype != self.dtype or not (f.c_contiguous and f.aligned and f.writeable):
            y = np.array(y, dtype=self.dtype, order="C")
        return y

    def forward(self, x):
        """Forward pass of ``x`` (N, C, H, W): returns the outputs (N, n_outputs), MATLAB order.

        The array returned is a fused buffer (overwritten by the next call).
        """
        self.sync_params()
        self._load(x)
        self._call(_forward_chunk, self._chunks())
        o = self.A[-1]
        if self.net.layers[-1].type == "f":
            return o
        out = np.empty_like(o)
        out[:, self.perm] = o
        return out

    def compute(self, x, y):
        """Forward pass, loss and gradient parts of a minibatch; sets and returns ``net.loss``.

        Also sets the layers' runtime fields (:meth:`expose`).

        x : ndarray (N, C, H, W); y : ndarray (N, n_outputs), both ``net.dtype``.
        """
        net = self.net
        self.sync_params()
        self._load(x)
        faithful = net.mode == "faithful"
        last = net.layers[-1]
        d3 = faithful and last.type == "c"
        loss_kind = 1 if net.loss_func == "cros" else 0
        given = dict(
            train=True,
            y=self._labels(y),
            loss_kind=loss_kind,
            flag=bool(net.calc_last_layer_act_derivative),
            faithful=faithful,
            d3=d3,
        )
        self._call(_forward_chunk, self._chunks(), then=_backward_chunk, **given)
        if d3:  # after every chunk: it reads other examples' errors
            self._call(_d3_task, self._chunks())
        self.expose()
        # the loss from the per-example terms (backward.compute_loss's formulas, summed
        # in another order: the same to round-off)
        total = float(self.lp.sum())
        net.loss = -total / self.N if loss_kind == 1 else total / (2 * self.N)
        return net.loss

    def apply(self):
        """Sum the gradient parts in chunk order and take the step (``gradientdescentcnn``)."""
        net = self.net
        faithful = net.mode == "faithful"
        d3 = faithful and net.layers[-1].type == "c"
        lr = (
            self.dtype.type(net.learning_rate)
            if self.dtype == np.float32
            else float(net.learning_rate)
        )
        self._call(_update_task, len(self.tasks), exact=True, lr=lr, d3=d3)
        self._stats_valid = True

    def parameter_check(self):
        """``(finite, (value, where, name))`` of the current parameters, or ``None``.

        ``finite``: whether every parameter is finite; the rest names the entry
        largest in absolute value as ``guard._largest_weight`` does. Read from
        the last update (no pass over the parameters); ``None`` when that is
        not known (before the first update, after the parameters were replaced,
        or after :meth:`invalidate`).
        """
        if not (self.train and self._stats_valid):
            return None
        st = self.stats
        finite = not math.isnan(st[:, 2].sum())  # entries are 0 or NaN
        t, c = divmod(int(st[:, :2].argmax()), 2)
        layers = self.net.layers
        best = (0.0, "no layer", "")
        t_layer = int(self.tasks[t, 0])
        layer = layers[t_layer]
        name = "b" if c == 1 else ("W" if layer.type == "f" else "K")
        value = float(st[t, c])
        if value > 0:
            best = (value, f"layer {t_layer + 1} ({layer.type})", name)
        return finite, best

    def invalidate(self):
        """Forget the parameter check (call after the parameters were changed in place)."""
        self._stats_valid = False

    def expose(self):
        """Set the layers' runtime fields to views of the fused buffers (see module notes)."""
        if self._fields is None:
            self._fields = self._runtime_fields()
        for layer, name, value in self._fields:
            setattr(layer, name, value)
        top = self.net.layers[-1]
        if top.type != "f":  # outputs in MATLAB order: a copy
            o = np.empty((self.N, self.perm.size), self.dtype)
            o[:, self.perm] = self.A[-1]
            top.outputs = o

    def _runtime_fields(self):
        """``[(layer, name, view), ...]``: what :meth:`expose` sets (the buffers never move)."""
        layers = self.net.layers
        N = self.N
        last = len(layers) - 1
        out = []
        for l, layer in enumerate(layers):
            if l == 0:
                continue
            if layer.type == "f":
                out.append((layer, "outputs", self.A[l]))
                if l == self.kmap + 1:
                    out.append((layers[self.kmap], "outputs", self.F))
            else:
                maps = self.A[l].reshape((N, layer.n_maps) + layer.map_shape)
                out.append((layer, "featuremaps", maps))
            if layer.type in "cf":
                out.append((layer, "z", None))
            if self.train:
                if layer.type == "f":
                    R, m = layer.W.shape
                    g0 = int(self.spec[l, C_GRAD0])
                    out += [(layer, "er", self.E[l])]
                    out.append((layer, "dW", self.G[g0 : g0 + R * m].reshape(R, m)))
                    out.append((layer, "db", self.G[g0 + R * m : g0 + R * m + R]))
                elif layer.type == "p":
                    shape = (N, layer.n_maps) + layers[l - 1].map_shape
                    out.append((layer, "er", self.E[l].reshape(shape)))
                else:
                    shape = (N, layer.n_maps) + layer.map_shape
                    out.append((layer, "er", self.E[l].reshape(shape)))
                    g0, ks = int(self.spec[l, C_GRAD0]), layer.K.size
                    out.append((layer, "dK", self.G[g0 : g0 + ks].reshape(layer.K.shape)))
                    out.append((layer, "db", self.G[g0 + ks : g0 + ks + layer.n_maps]))
        top = layers[last]
        if top.type in "cf":
            z = self.Z if top.type == "f" else self.Z.reshape((N, top.n_maps) + top.map_shape)
            out.append((top, "z", z))
        return out


def compile_task(task, dtype, tuple_len=TUPLE_LEN):
    """Compile ``task`` (C function, disk cache) for the argument types of a training
    FusedNet of ``dtype`` whose layer tuples have ``tuple_len`` entries: what the
    helper process of :mod:`cnn.precompile` runs."""
    from .network import example_network

    if tuple_len != TUPLE_LEN:
        raise ValueError(f"only layer tuples of {TUPLE_LEN} entries, not {tuple_len}")
    net = example_network(3, seed=0, dtype=dtype)  # 6 layers: tuples of TUPLE_LEN
    fn = FusedNet(net, CHUNK)
    fn._task(task, fn._args())
