"""The FC layers' three matrix products for the few rows of a chunk, as SIMD blocks.

The fused step (:mod:`cnn.fused`) multiplies the FC weights with the 5 examples of
a chunk at a time (and, in the update, with the 50 of a minibatch)::

    dense_forward(x, W, z)             z (R, J)  = x (R, m) @ W (J, m).T
    dense_backward(e, W, g)            g (R, m)  = e (R, J) @ W (J, m)
    dense_grad(e, x, start, stop, dW)  dW[start:stop] (stop-start, m)
                                                 = e[:, start:stop].T @ x
                                       (e (N, J), x (N, m))

BLAS (``np.dot``; :func:`_blas_forward` and the others) is built for large
matrices: on 5 rows OpenBLAS's AVX2 kernels ran at 13-16 GFLOP/s here (on one
core of the AMD EPYC of ``docs/performance.md``, Numba and OpenBLAS held to
AVX2), a third of the machine's rate. The blocks below keep a tile of the
result in vector registers over the whole sum, as :mod:`cnn.simd`'s
convolution does:

* :func:`_dot_block` (forward): ``simd.MAPS`` rows of ``x`` by ``VECTORS``
  rows of ``W``, one vector accumulator each over the whole vectors of ``i``
  (lane l takes the ``i`` with ``i mod lanes == l``), then the lanes of each
  accumulator added by :func:`cnn.simd._lane_sums` (a fixed order), then the
  columns past the last whole vector one by one.
* No masked vectors here (unlike :mod:`cnn.simd`): they made the first compile
  of the fused step's tasks 1-3 s longer, for remainders that are a small part
  of the work or absent.
* :func:`_outer_block` (backward and gradient): ``simd.MAPS`` output rows by
  ``VECTORS`` vectors of consecutive columns; the sum over ``k`` runs in
  order ``k = 0, 1, ...``, one fused multiply-add each from 0 (what a plain
  loop with FMA computes). Rows past the last are clamped to it (computed
  twice, the same values stored twice); the last block of columns is moved
  back to end at the last column (overlapping the one before, same values);
  fewer columns than a block are summed by a plain loop in the same order.

Measured per call (one thread, float64, the shapes of Example 3; AMD EPYC,
2026-12-03, ``docs/performance.md``): held to AVX2, forward 37 -> 11 us,
backward 31 -> 13 us, a 30-row gradient 29 -> 25 us; on AVX-512, 11 -> 10,
13 -> 9, 18 -> 17 us.

Every product here adds its terms in an order fixed by the shapes and the
compiled target, not by the thread count, so the fused step stays bit-identical
for any number of threads; the sums differ from BLAS's by round-off only
(``tests/test_dense.py``). Where :data:`cnn.simd.ENABLED` is false the
``_blas_*`` versions (the same signatures) are used.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from . import simd
from .simd import (
    MAPS,
    _clamp,
    _lane_sums,
    _lanes,
    _require_c_arrays,
    _run_access,
    _splat,
    _vector_ops,
)

_serial = nb.njit(cache=True, fastmath={"contract"}, error_model="numpy")

VECTORS = 2
"""SIMD vectors per block row (:func:`_dot_block`: rows of ``W``): 2 on AVX2 and AVX-512
alike. :mod:`cnn.simd`'s convolution uses 4 on AVX-512; here 4 was as fast as 2 (one
thread, Example 3's shapes: forward 8.9-9.5 against 8.7-9.6 us) and made the
unrolled blocks twice as large to compile."""


# --------------------------------------------------------------------------- forward


@intrinsic
def _dot_block(typingctx, x, W, z, n0, j0):
    """``z[n, j] = sum_{i < mv} x[n, i] W[j, i]`` for rows ``n = min(n0 + r, R - 1)``,
    r < MAPS, and ``j = min(j0 + c, J - 1)``, c < VECTORS; ``mv``: m rounded down to
    whole vectors (:func:`_simd_forward` adds the rest).

    x (R, m) ; W (J, m) ; z (R, J), C-contiguous, one float dtype. One vector
    accumulator per (n, j) over the whole vectors of ``i``, then its lanes added.
    """
    _require_c_arrays(x, W, z)
    dt = z.dtype
    nl = _lanes(dt)

    def codegen(context, builder, sig, args):
        xv, Wv, zv, n0v, j0v = args
        xa = context.make_array(sig.args[0])(context, builder, xv)
        Wa = context.make_array(sig.args[1])(context, builder, Wv)
        za = context.make_array(sig.args[2])(context, builder, zv)
        _vty, _align, fma, zero = _vector_ops(context, builder, dt, nl)
        load, _store = _run_access(context, builder, dt)
        R, m = cgutils.unpack_tuple(builder, xa.shape, 2)
        J = cgutils.unpack_tuple(builder, Wa.shape, 2)[0]
        ity = R.type

        def c(v):
            return ir.Constant(ity, v)

        rows = [_clamp(builder, builder.add(n0v, c(r)), builder.sub(R, c(1))) for r in range(MAPS)]
        cols = [
            _clamp(builder, builder.add(j0v, c(q)), builder.sub(J, c(1))) for q in range(VECTORS)
        ]
        xbase = [builder.mul(r, m) for r in rows]
        wbase = [builder.mul(q, m) for q in cols]
        acc = [
            [cgutils.alloca_once_value(builder, zero) for _ in range(VECTORS)] for _ in range(MAPS)
        ]

        def step(i):
            ws = [load(Wa.data, builder.add(wbase[q], i), nl) for q in range(VECTORS)]
            for r in range(MAPS):
                xr = load(xa.data, builder.add(xbase[r], i), nl)
                for q in range(VECTORS):
                    s = builder.load(acc[r][q])
                    builder.store(builder.call(fma, [xr, ws[q], s]), acc[r][q])

        with cgutils.for_range(builder, builder.udiv(m, c(nl))) as loop:
            step(builder.mul(loop.index, c(nl)))
        flat = [builder.load(acc[r][q]) for r in range(MAPS) for q in range(VECTORS)]
        flat += [zero] * (-len(flat) % nl)
        sums = [_lane_sums(builder, flat[g : g + nl], nl) for g in range(0, len(flat), nl)]
        i32 = ir.IntType(32)
        for r in range(MAPS):
            zrow = builder.mul(rows[r], J)
            for q in range(VECTORS):
                k = r * VECTORS + q
                total = builder.extract_element(sums[k // nl], ir.Constant(i32, k % nl))
                builder.store(total, builder.gep(za.data, [builder.add(zrow, cols[q])]))
        return context.get_dummy_value()

    return types.none(x, W, z, n0, j0), codegen


@_serial
def _simd_forward(x, W, z):
    R, m = x.shape
    J = W.shape[0]
    for n0 in range(0, R, MAPS):
        for j0 in range(0, J, VECTORS):
            _dot_block(x, W, z, n0, j0)
    # the columns past the last whole vector, in order (a plain loop: a masked
    # vector step in the block cost ~1 s of a first compile)
    for i in range(m - m % simd.lanes(z), m):
        for n in range(R):
            for j in range(J):
                z[n, j] += x[n, i] * W[j, i]


@_serial
def _blas_forward(x, W, z):
    np.dot(x, W.T, z)


# --------------------------------------------------------------------------- backward, gradient


@intrinsic
def _outer_block(typingctx, a, a0, ars, aks, B, out, r0, i0):
    """``out[r, i0 + t] = sum_k a[a0 + r*ars + k*aks] B[k, i0 + t]`` for rows
    ``r = min(r0 + q, R - 1)``, q < MAPS, and t < ``VECTORS * lanes``.

    a (any length,) ; B (K, m) ; out (R, m), C-contiguous, one float dtype. The sum
    in the order k = 0, 1, ..., one FMA each from 0.
    """
    _require_c_arrays(a, B, out)
    dt = out.dtype
    nl = _lanes(dt)

    def codegen(context, builder, sig, args):
        av, a0v, arsv, aksv, Bv, ov, r0v, i0v = args
        aa = context.make_array(sig.args[0])(context, builder, av)
        Ba = context.make_array(sig.args[4])(context, builder, Bv)
        oa = context.make_array(sig.args[5])(context, builder, ov)
        vty, _align, fma, zero = _vector_ops(context, builder, dt, nl)
        load, store = _run_access(context, builder, dt)
        K, m = cgutils.unpack_tuple(builder, Ba.shape, 2)
        R = cgutils.unpack_tuple(builder, oa.shape, 2)[0]
        ity = K.type

        def c(v):
            return ir.Constant(ity, v)

        rows = [_clamp(builder, builder.add(r0v, c(q)), builder.sub(R, c(1))) for q in range(MAPS)]
        abase = [builder.add(a0v, builder.mul(r, arsv)) for r in rows]
        acc = [
            [cgutils.alloca_once_value(builder, zero) for _ in range(VECTORS)] for _ in range(MAPS)
        ]
        with cgutils.for_range(builder, K) as loop:
            k = loop.index
            brow = builder.add(builder.mul(k, m), i0v)
            bs = [load(Ba.data, builder.add(brow, c(v * nl)), nl) for v in range(VECTORS)]
            ak = builder.mul(k, aksv)
            for q in range(MAPS):
                w = builder.load(builder.gep(aa.data, [builder.add(abase[q], ak)]))
                wv = _splat(builder, w, vty)
                for v in range(VECTORS):
                    s = builder.load(acc[q][v])
                    builder.store(builder.call(fma, [wv, bs[v], s]), acc[q][v])
        for q in range(MAPS):
            o0 = builder.add(builder.mul(rows[q], m), i0v)
            for v in range(VECTORS):
                store(builder.load(acc[q][v]), oa.data, builder.add(o0, c(v * nl)), nl)
        return context.get_dummy_value()

    return types.none(a, a0, ars, aks, B, out, r0, i0), codegen


@_serial
def _outer_rows(a, a0, ars, aks, B, out):
    """``out[r, i] = sum_k a[a0 + r*ars + k*aks] B[k, i]`` for every (r, i) of out (R, m)."""
    R, m = out.shape
    w = VECTORS * simd.lanes(out)
    if m < w:  # fewer columns than a block: the same sums, a plain loop (masked
        # blocks cost ~3 s of a first compile)
        for r in range(R):
            for i in range(m):
                out[r, i] = 0
                for k in range(B.shape[0]):
                    out[r, i] += a[a0 + r * ars + k * aks] * B[k, i]
        return
    for r0 in range(0, R, MAPS):
        for i0 in range(0, m, w):
            _outer_block(a, a0, ars, aks, B, out, r0, min(i0, m - w))


@_serial
def _simd_backward(e, W, g):
    # np.int64(0), not 0: a literal argument would compile another _outer_rows
    _outer_rows(e.reshape(-1), np.int64(0), e.shape[1], np.int64(1), W, g)


@_serial
def _blas_backward(e, W, g):
    np.dot(e, W, g)


@_serial
def _simd_grad(e, x, start, stop, dW):
    _outer_rows(e.reshape(-1), start, np.int64(1), e.shape[1], x, dW[start:stop])


@_serial
def _blas_grad(e, x, start, stop, dW):
    et = np.empty((stop - start, e.shape[0]), dtype=e.dtype)
    for j in range(start, stop):
        for n in range(e.shape[0]):
            et[j - start, n] = e[n, j]
    np.dot(et, x, dW[start:stop])


dense_forward = _simd_forward if simd.ENABLED else _blas_forward
"""``dense_forward(x, W, z)``: ``z[n, j] = sum_i x[n, i] W[j, i]``; x (R, m), W (J, m),
z (R, J) overwritten; C-contiguous, one float dtype."""

dense_backward = _simd_backward if simd.ENABLED else _blas_backward
"""``dense_backward(e, W, g)``: ``g[n, i] = sum_j e[n, j] W[j, i]``; e (R, J), W (J, m),
g (R, m) overwritten; the sum in order j = 0, 1, ... (SIMD)."""

dense_grad = _simd_grad if simd.ENABLED else _blas_grad
"""``dense_grad(e, x, start, stop, dW)``: ``dW[j, i] = sum_n e[n, j] x[n, i]`` for
``start <= j < stop``; e (N, J), x (N, m), dW (J, m) (only rows start:stop
written); the sum in order n = 0, 1, ... (SIMD)."""
