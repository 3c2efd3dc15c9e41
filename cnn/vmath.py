"""Elementwise functions that LLVM vectorises, for the Numba kernels (``cnn.fused``).

Numba's ``np.tanh``, ``np.exp``, ``np.log1p`` and ``np.expm1`` on a scalar are
calls to libm for every element: correct, but never SIMD (4-15 ns per element
here). The functions here are written with arithmetic, ``floor``,
``copysign``, comparisons, bit casts and (where named) fused multiply-adds
only, so a loop ``out[i] = f(z[i])`` compiles to vector code (4 doubles per
instruction in ymm registers here, 8 in zmm for float32 input), every branch
computed and one selected:

* :func:`tanh` (``tanh`` layers), :func:`exp`,
* :func:`sigmoid` = ``1 / (1 + exp(-x))``, the value of ``1 / (1 + np.exp(-z))``,
* :func:`softplus` = ``log(1 + exp(x))`` = ``np.logaddexp(0, x)``, without overflow,
* :func:`one_minus_exp_neg` = ``1 - exp(-a)`` = ``-expm1(-a)``, the derivative of
  softplus written from its output ``a = softplus(z)``,

each with a loop ``*_array(z, out)`` over 1-D float64 or float32 arrays.

Method (float64; float32 inputs are computed in float64 and rounded once):

* ``exp``: range reduction ``x = k ln2 + r`` (``|r| <= ln2/2``, Cody-Waite split
  of ln2 with 32 trailing zero bits, so ``k ln2_hi`` is exact), a degree-13
  Taylor polynomial for ``exp(r)`` (truncation below 4e-18 relative) and
  ``2^k`` built in the exponent bits, as two factors ``2^k1 2^k2`` so that
  subnormal results are computed (rounded once), not flushed to zero. ``x`` is
  clamped to ``[-746, 710]``: ``exp(x)`` is ``+inf`` above 709.782712893384
  (and for ``+inf``), the subnormal ``5e-324`` at -745.13, 0 below (and for
  ``-inf``).
* ``tanh``: ``|x| < 0.55``: the Taylor series ``x + x^3 * sum_n c_n x^(2n)`` to
  20 terms (coefficients from the Bernoulli numbers; truncation below 1e-18
  relative); ``+-0`` and subnormals come back unchanged. ``0.55 <= |x|``:
  ``copysign(1 - 2 / (exp(2|x|) + 1), x)`` with ``exp`` as above; ``|x|`` is
  clamped at 19.5, beyond which ``tanh`` rounds to exactly 1, so ``+-inf`` give
  ``+-1``.
* ``sigmoid`` and ``softplus`` start from ``exp(-|x|)`` in ``[0, 1]`` (no
  overflow for any ``x``), carried as ``e + e_lo``: the rounding errors of the
  reduction and of the last two Horner steps are recovered with fused
  multiply-adds (``llvm.fma``). ``sigmoid``: ``1 / (1 + e)`` for ``x >= 0``,
  ``e / (1 + e)`` for ``x < 0``, one division then one Newton step on the
  quotient (``1 + e`` summed exactly with Fast2Sum), so large negative ``x``
  give the tiny positive result, subnormal included, where ``1 / (1 + exp(-x))``
  gives 0 (below -709.78); large positive ``x`` give 1. ``softplus``:
  ``max(x, 0) + log1p(e)``, NumPy's ``logaddexp`` formula, with ``log1p`` on
  ``[0, 1]`` by ``1 + e = 2^j (1 + f)`` (``j`` 0 or 1, ``f`` exact), ``s = f /
  (2 + f)``, ``log(1 + f) = 2 atanh(s) = f - f^2/2 + s (f^2/2 + R(s^2))`` with
  the Taylor series of ``atanh`` to 12 terms (``|s| <= 1/5``, truncation below
  1e-18 relative), ``j ln2 + f`` summed exactly and the small terms (with
  ``e_lo / (1 + e)``) added last; relative accuracy down to the subnormal
  results of large negative ``x``. ``+inf`` gives ``+inf``, ``-inf`` gives 0.
* ``one_minus_exp_neg``: with ``-a = k ln2 + r`` as for ``exp`` and ``-53 <= k
  <= 53`` (``a < 37.43``; above, ``1 - exp(-a)`` rounds to 1):
  ``(1 - 2^k) - 2^k r - 2^k (exp(r) - 1 - r)``, the first two terms exact and
  summed with Fast2Sum, the error of ``r`` added back; the result is accurate
  relative to itself for tiny ``a`` (``a - a^2/2 + ...``; ``+0`` and
  subnormals come back unchanged, ``-0`` gives ``+0``), for all ``a >= 0`` (the softplus outputs)
  and for ``a < 0`` too (``1 - exp(|a|)``, ``-inf`` below -709.78; ``k > 53``
  through ``exp``'s polynomial).

NaN gives NaN everywhere (selected at the end). The fused multiply-adds are
one instruction on x86-64 with FMA3 (Haswell and later) and on arm64, where
they vectorise; elsewhere LLVM calls libm's ``fma`` (correct, slow). The
other steps need no FMA, but ``fastmath={"contract"}`` lets LLVM fuse them
where it can, and the accuracy below was measured so compiled.

Accuracy (``tests/test_vmath.py``, against mpmath at 40 digits over the
whole float64 range, including ``+-0``, subnormals, large ``|x|``, NaN and
``+-inf``), in ulp of the correctly rounded result: at most
:data:`TANH_MAX_ULP`, :data:`EXP_MAX_ULP`, :data:`SIGMOID_MAX_ULP`,
:data:`SOFTPLUS_MAX_ULP` and :data:`ONE_MINUS_EXP_NEG_MAX_ULP` in float64
(all but ``tanh`` within 1 ulp, and less than 1 ulp from the exact value where
measured but for ``one_minus_exp_neg`` of ``a < 0``); float32 results are within
1 ulp of the correctly rounded float32 value.

In-place use: ``out`` may be ``z``, but the vector loop is then not run: LLVM
checks at run time that ``out`` and ``z`` do not overlap and otherwise runs
the loop one element at a time (4-7x slower here, no faster than libm). A kernel
that updates an array in place vectorises when its loop is written on that
one array, ``a[i] = sigmoid(a[i])``.

A NaN argument is returned as ``x + x`` (the same NaN), not ``x``: in a loop
``a[i] = f(a[i])``, a result that may be the loaded value itself lets LLVM store
only where it differs, and on AVX2 that conditional store is ``vmaskmovpd``,
microcoded and slow on AMD CPUs (``tanh`` of 1,280 values in place took 4.8 us
held to AVX2 on the AMD EPYC of ``docs/performance.md``; AVX-512's masked
stores are fast).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

TANH_MAX_ULP = 2.0
"""The bound on the error of :func:`tanh` in float64 ulp asserted by the tests (the
largest measured on their 12,019 points: 1.0 ulp)."""

EXP_MAX_ULP = 1.0
"""The bound on the error of :func:`exp` in float64 ulp (of the correctly rounded result)
asserted by the tests (the largest measured on their 13,030 points: 1.0 ulp; from the
exact value at most 0.83 ulp on 160,000 further points: faithfully rounded)."""

SIGMOID_MAX_ULP = 1.0
"""The bound on the error of :func:`sigmoid` in float64 ulp asserted by the tests (the
largest measured on their 13,030 points: 1.0 ulp; from the exact value at most 0.75 ulp
on 160,000 further points)."""

SOFTPLUS_MAX_ULP = 1.0
"""The bound on the error of :func:`softplus` in float64 ulp asserted by the tests (the
largest measured on their 13,030 points: 1.0 ulp; from the exact value at most 0.98 ulp
on 160,000 further points)."""

ONE_MINUS_EXP_NEG_MAX_ULP = 1.0
"""The bound on the error of :func:`one_minus_exp_neg` in float64 ulp asserted by the
tests (the largest measured on their 16,030 points: 1.0 ulp; from the exact value at most
0.76 ulp for ``a >= 0`` and 1.24 ulp for ``a < 0``, near ``a = -37.2`` where
``1 - exp(-a)`` is rounded twice, on 380,000 further points)."""


@intrinsic
def _f64_bits(typingctx, x):
    """The bits of a float64 as an int64 (a bit cast)."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@intrinsic
def _bits_f64(typingctx, i):
    """The float64 with the bits of an int64 (a bit cast)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once (``llvm.fma``: one instruction with FMA, vectorisable)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        f64 = ir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f64], ir.FunctionType(f64, [f64] * 3))
        return builder.call(fn, args)

    return sig, codegen


_INV_LN2 = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 with 32 trailing zero bits
_LN2_LO = 1.90821492927058770002e-10  # ln 2 - _LN2_HI
_MAGIC = 4503599627371519.0  # 2^52 + 1023: k + _MAGIC has k + 1023 in its low bits

_inline = nb.njit(cache=True, inline="always", fastmath={"contract"}, error_model="numpy")


@_inline
def _exp_poly(r):
    """(exp(r) - 1 - r) / r^2 for |r| <= 0.3466: Taylor to degree 11 (Horner), 1/2 + r/6 + ...

    ``(p * r + 1) * r + 1`` is then ``exp(r)`` to degree 13 (truncation below 4e-18
    relative) and ``p * r * r`` is ``exp(r) - 1 - r``.
    """
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    return p * r + 0.5


@_inline
def _pow2(kf):
    """2^k for an integral k with -1022 <= k <= 1023, built in the exponent bits."""
    return _bits_f64(_f64_bits(kf + _MAGIC) << 52)


@_inline
def _exp_reduced(y):
    """exp(y) for 1 <= y <= 39 (no overflow, no subnormals)."""
    kf = np.floor(y * _INV_LN2 + 0.5)
    r = (y - kf * _LN2_HI) - kf * _LN2_LO
    # exp(r), |r| <= 0.3466: Taylor to degree 13 (Horner)
    p = (_exp_poly(r) * r + 1.0) * r + 1.0
    return p * _pow2(kf)


@_inline
def tanh(x):
    """tanh(x) of a float (float64 arithmetic), vectorisable; see the module notes."""
    x = np.float64(x)
    ax = abs(x)
    x2 = x * x
    q = -2.8591366623052539083e-8
    q = q * x2 + 7.0546369464009683252e-8
    q = q * x2 - 1.740661896357164778e-7
    q = q * x2 + 4.2949110782738058548e-7
    q = q * x2 - 1.0597268320104654351e-6
    q = q * x2 + 2.6147711512907545543e-6
    q = q * x2 - 6.4516892156554307632e-6
    q = q * x2 + 0.000015918905069328964741
    q = q * x2 - 0.000039278323883316834053
    q = q * x2 + 0.000096915379569294503256
    q = q * x2 - 0.00023912911424355248149
    q = q * x2 + 0.00059002744094558598138
    q = q * x2 - 0.0014558343870513182682
    q = q * x2 + 0.0035921280365724810169
    q = q * x2 - 0.0088632355299021965689
    q = q * x2 + 0.021869488536155202822
    q = q * x2 - 0.053968253968253968254
    q = q * x2 + 0.13333333333333333333
    q = q * x2 - 0.33333333333333333333
    small = math.copysign(x + x * (x2 * q), x)  # keeps -0.0
    t = _exp_reduced(2.0 * min(max(ax, 0.5), 19.5))
    big = math.copysign(1.0 - 2.0 / (t + 1.0), x)
    res = small if ax < 0.55 else big
    return x + x if math.isnan(x) else res  # NaN in, NaN out (x + x: the module notes)


@nb.njit(cache=True, fastmath={"contract"}, error_model="numpy")
def tanh_array(z, out):
    """out[i] = tanh(z[i]) for 1-D arrays (float64 or float32).

    ``out`` may be ``z``, but the loop then runs element by element (LLVM's run-time
    overlap check fails); in place, a loop written on one array vectorises.
    """
    for i in range(z.shape[0]):
        out[i] = tanh(z[i])


_LN2 = 0.6931471805599453  # ln 2 rounded to float64
_LN2_TAIL = 2.3190468138462996e-17  # ln 2 - _LN2


@_inline
def exp(x):
    """exp(x) of a float (float64 arithmetic), vectorisable; see the module notes."""
    x = np.float64(x)
    xc = min(max(x, -746.0), 710.0)  # exp(-746) rounds to 0, exp(710) overflows
    kf = np.floor(xc * _INV_LN2 + 0.5)
    r = (xc - kf * _LN2_HI) - kf * _LN2_LO
    p = (_exp_poly(r) * r + 1.0) * r + 1.0
    k1 = np.floor(kf * 0.5)  # 2^k in two factors: -538 <= k1, k - k1 <= 512
    res = (p * _pow2(k1)) * _pow2(kf - k1)  # exact but for one rounding (subnormal)
    return x + x if math.isnan(x) else res


@_inline
def _exp_neg_parts(y):
    """exp(y) for y <= 0 as hi + lo: hi as :func:`exp` gives it, lo its error to ~0.1 ulp.

    The rounding errors of ``r``, of the inner Horner step and of the last one are
    recovered with fused multiply-adds (``1 - q``, ``1 - p`` and ``t - r`` are exact).
    """
    yc = max(y, -746.0)
    kf = np.floor(yc * _INV_LN2 + 0.5)
    t = yc - kf * _LN2_HI  # exact
    r = t - kf * _LN2_LO
    r_lo = (t - r) - kf * _LN2_LO
    p2 = _exp_poly(r)
    q = _fma(p2, r, 1.0)
    q_lo = _fma(p2, r, 1.0 - q)  # the rounding error of q (1 - q exact)
    p = _fma(q, r, 1.0)
    p_lo = _fma(q, r, 1.0 - p)
    p_lo = p_lo + (q_lo * r + r_lo * p)  # exp(r) = p + p_lo
    k1 = np.floor(kf * 0.5)
    s1 = _pow2(k1)
    s2 = _pow2(kf - k1)
    return (p * s1) * s2, (p_lo * s1) * s2


@_inline
def sigmoid(x):
    """1 / (1 + exp(-x)) of a float (float64 arithmetic), vectorisable; see the module notes."""
    x = np.float64(x)
    e, e_lo = _exp_neg_parts(-abs(x))  # exp(-|x|) = e + e_lo, in [0, 1]
    pos = x >= 0.0
    num = 1.0 if pos else e  # sigmoid(x) = (num + num_lo) / (1 + e + e_lo)
    num_lo = 0.0 if pos else e_lo
    d = 1.0 + e
    d_lo = ((1.0 - d) + e) + e_lo  # 1 + e = d + (1 - d) + e exactly (Fast2Sum, 1 >= e)
    s = 1.0 / d
    y = num * s
    # one Newton step on the quotient (num - y d exact)
    res = y + ((_fma(-y, d, num) + num_lo) - y * d_lo) * s
    return x + x if math.isnan(x) else res


@_inline
def _log1p_unit(u, u_lo):
    """log(1 + u + u_lo) for 0 <= u <= 1 and a tiny u_lo, within about 0.85 ulp."""
    upper = u >= 0.5
    # 1 + u = 2^k (1 + f): k = 0, f = u for u < 0.5, else k = 1, f = (u - 1) / 2 (exact)
    f = (u - 1.0) * 0.5 if upper else u
    # log(1 + f) = 2 atanh(s) = 2 s + s R,  s = f / (2 + f),  -1/7 <= s <= 1/5
    s = f / (2.0 + f)
    z = s * s
    q = 2.0 / 23.0
    q = q * z + 2.0 / 21.0
    q = q * z + 2.0 / 19.0
    q = q * z + 2.0 / 17.0
    q = q * z + 2.0 / 15.0
    q = q * z + 2.0 / 13.0
    q = q * z + 2.0 / 11.0
    q = q * z + 2.0 / 9.0
    q = q * z + 2.0 / 7.0
    q = q * z + 2.0 / 5.0
    q = q * z + 2.0 / 3.0
    big_r = q * z
    hfsq = 0.5 * f * f
    # + u_lo / (1 + u): 1 / (1 + f) = (1 - s) / (1 + s) = (1 - s)^2 (1 + z + z^2 ...)
    c = ((u_lo * (0.5 if upper else 1.0)) * ((1.0 - s) * (1.0 - s))) * (1.0 + z)
    corr = (hfsq - s * (hfsq + big_r)) - c  # log(1 + f) = 2 s + s R = f - hfsq + s (hfsq + R)
    # k ln 2 + f as a + a_lo exactly (Fast2Sum: |ln 2| >= |f|; a = f for k = 0), then the
    # small terms, rounded once at the end
    a = (_LN2 if upper else 0.0) + f
    a_lo = (((_LN2 if upper else 0.0) - a) + f) + (_LN2_TAIL if upper else 0.0)
    return a + (a_lo - corr)


@_inline
def softplus(x):
    """log(1 + exp(x)) of a float (float64 arithmetic), vectorisable; see the module notes."""
    x = np.float64(x)
    e, e_lo = _exp_neg_parts(-abs(x))  # exp(-|x|) = e + e_lo, in [0, 1]
    res = max(x, 0.0) + _log1p_unit(e, e_lo)
    return x + x if math.isnan(x) else res


@_inline
def one_minus_exp_neg(a):
    """1 - exp(-a) (``-expm1(-a)``) of a float (float64 arithmetic), vectorisable.

    See the module notes; accurate relative to the result also for tiny ``|a|``.
    """
    a = np.float64(a)
    x = min(max(-a, -37.0), 710.0)  # k >= -53 below
    kf = np.floor(x * _INV_LN2 + 0.5)
    tt = x - kf * _LN2_HI  # exact
    r = tt - kf * _LN2_LO
    r_lo = (tt - r) - kf * _LN2_LO  # x - k ln 2 = r + r_lo
    p = _exp_poly(r)
    w = p * r * r  # exp(r) - 1 - r, |w| <= 0.07
    # -53 <= k <= 53: 1 - 2^k exp(r) = (1 - 2^k) - 2^k r - 2^k w, the first two terms exact
    # and summed with their rounding error (Fast2Sum, |1 - 2^k| >= |2^k r|)
    t = _pow2(min(kf, 53))
    s1 = 1.0 - t
    s2 = t * r
    hi = s1 - s2
    lo = (s1 - hi) - s2
    small = hi + ((lo - t * w) - (t * r_lo) * (1.0 + r))
    # k > 53: 1 - exp(x) as exp does it
    k1 = np.floor(kf * 0.5)
    big = 1.0 - (((p * r + 1.0) * r + 1.0) * _pow2(k1)) * _pow2(kf - k1)
    res = small if kf <= 53 else big
    # a >= 37.42994775023705 (the double above 54 ln 2): exp(-a) < 2^-54, 1 - exp(-a) rounds to 1
    res = 1.0 if a >= 37.42994775023705 else res
    return a + a if math.isnan(a) else res


@nb.njit(cache=True, fastmath={"contract"}, error_model="numpy")
def exp_array(z, out):
    """out[i] = exp(z[i]) for 1-D arrays (float64 or float32).

    ``out`` may be ``z``, but the loop then runs element by element (LLVM's run-time
    overlap check fails); in place, a loop written on one array vectorises.
    """
    for i in range(z.shape[0]):
        out[i] = exp(z[i])


@nb.njit(cache=True, fastmath={"contract"}, error_model="numpy")
def sigmoid_array(z, out):
    """out[i] = sigmoid(z[i]) for 1-D arrays (float64 or float32).

    ``out`` may be ``z``, but the loop then runs element by element (LLVM's run-time
    overlap check fails); in place, a loop written on one array vectorises.
    """
    for i in range(z.shape[0]):
        out[i] = sigmoid(z[i])


@nb.njit(cache=True, fastmath={"contract"}, error_model="numpy")
def softplus_array(z, out):
    """out[i] = softplus(z[i]) for 1-D arrays (float64 or float32).

    ``out`` may be ``z``, but the loop then runs element by element (LLVM's run-time
    overlap check fails); in place, a loop written on one array vectorises.
    """
    for i in range(z.shape[0]):
        out[i] = softplus(z[i])


@nb.njit(cache=True, fastmath={"contract"}, error_model="numpy")
def one_minus_exp_neg_array(z, out):
    """out[i] = one_minus_exp_neg(z[i]) for 1-D arrays (float64 or float32).

    ``out`` may be ``z``, but the loop then runs element by element (LLVM's run-time
    overlap check fails); in place, a loop written on one array vectorises.
    """
    for i in range(z.shape[0]):
        out[i] = one_minus_exp_neg(z[i])
