"""A ``tanh`` that LLVM vectorises, for the Numba kernels (``cnn.fused``).

Numba's ``np.tanh`` on a scalar is a call to libm's ``tanh`` for every
element: correct, but never SIMD (about 15 ns per element here). :func:`tanh`
is written with arithmetic, ``floor``, ``copysign``, comparisons and two bit
casts only, so a loop ``a[i] = tanh(z[i])`` compiles to vector code (AVX2
here: 4 doubles per instruction), both branches computed and one selected.

Method (float64; float32 inputs are computed in float64 and rounded once):

* ``|x| < 0.55``: the Taylor series ``x + x^3 * sum_n c_n x^(2n)`` to 20
  terms (coefficients from the Bernoulli numbers; truncation below 1e-18
  relative); ``+-0`` and subnormals come back unchanged.
* ``0.55 <= |x|``: ``copysign(1 - 2 / (exp(2|x|) + 1), x)`` with ``exp`` by
  range reduction ``2|x| = k ln2 + r`` (``|r| <= ln2/2``, Cody-Waite split of
  ln2), a degree-13 Taylor polynomial for ``exp(r)`` and ``2^k`` built in the
  exponent bits. ``|x|`` is clamped at 19.5, beyond which ``tanh`` rounds to
  exactly 1, so ``+-inf`` give ``+-1``; NaN gives NaN.

Accuracy (``tests/test_vmath.py``, against mpmath at 40 digits over the
whole float64 range, including ``+-0``, subnormals, large ``|x|``, NaN and
``+-inf``): at most :data:`TANH_MAX_ULP` ulp in float64; float32 results are
within 1 ulp of the correctly rounded float32 value.
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
largest measured on their 15,000 points: 1.0 ulp)."""


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


_INV_LN2 = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 with 32 trailing zero bits
_LN2_LO = 1.90821492927058770002e-10  # ln 2 - _LN2_HI
_MAGIC = 4503599627371519.0  # 2^52 + 1023: k + _MAGIC has k + 1023 in its low bits

_inline = nb.njit(cache=True, inline="always", fastmath={"contract"}, error_model="numpy")


@_inline
def _exp_reduced(y):
    """exp(y) for 1 <= y <= 39 (no overflow, no subnormals)."""
    kf = math.floor(y * _INV_LN2 + 0.5)
    r = (y - kf * _LN2_HI) - kf * _LN2_LO
    # exp(r), |r| <= 0.3466: Taylor to degree 13 (Horner)
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
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    scale = _bits_f64(_f64_bits(kf + _MAGIC) << 52)  # 2^k
    return p * scale


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
    return x if math.isnan(x) else res  # NaN in, NaN out


@nb.njit(cache=True, fastmath={"contract"}, error_model="numpy")
def tanh_array(z, out):
    """out[i] = tanh(z[i]) for 1-D arrays (float64 or float32); ``out`` may be ``z``."""
    for i in range(z.shape[0]):
        out[i] = tanh(z[i])
