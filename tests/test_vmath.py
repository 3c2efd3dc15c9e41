"""cnn.vmath (the vectorisable tanh, exp, sigmoid, softplus and 1 - exp(-a)) against mpmath."""

import mpmath
import numpy as np
import pytest

from cnn.vmath import (
    EXP_MAX_ULP,
    ONE_MINUS_EXP_NEG_MAX_ULP,
    SIGMOID_MAX_ULP,
    SOFTPLUS_MAX_ULP,
    TANH_MAX_ULP,
    exp_array,
    one_minus_exp_neg_array,
    sigmoid_array,
    softplus_array,
    tanh_array,
)


def _points():
    rng = np.random.default_rng(0)
    special = [
        0.0,
        -0.0,
        5e-324,
        -5e-324,
        2.2250738585072014e-308,
        -1e-310,
        1e-8,
        -1e-8,
        0.55,
        -0.55,
        np.nextafter(0.55, 0),
        np.nextafter(-0.55, 0),
        19.06,
        19.5,
        20.0,
        -19.5,
        710.0,
        1e308,
        -1.7976931348623157e308,
    ]
    parts = [
        rng.uniform(-1, 1, 3000),
        rng.uniform(-0.6, 0.6, 3000),
        rng.uniform(-25, 25, 3000),
        np.sign(rng.uniform(-1, 1, 3000)) * 2.0 ** rng.uniform(-1074, 1023, 3000),
        np.array(special),
    ]
    return np.concatenate(parts)


def _exact(x):
    with mpmath.workdps(40):
        return np.array([float(mpmath.tanh(mpmath.mpf(float(v)))) for v in x])


def _ulp_error(got, exact):
    # in units of the spacing of the correctly rounded result (subnormal spacing at 0)
    return np.abs(got - exact) / np.spacing(np.abs(exact)).clip(min=5e-324)


def test_tanh_float64_max_ulp_against_mpmath():
    x = _points()
    out = np.empty_like(x)
    tanh_array(x, out)
    err = _ulp_error(out, _exact(x))
    assert err.max() <= TANH_MAX_ULP, (err.max(), x[err.argmax()])
    # and as close as NumPy's own tanh, to within the bound
    assert np.all(np.abs(out - np.tanh(x)) <= TANH_MAX_ULP * 2 * np.spacing(np.abs(np.tanh(x))))


def test_tanh_special_values():
    x = np.array([0.0, -0.0, 5e-324, -5e-324, np.inf, -np.inf, np.nan, 30.0, -30.0])
    out = np.empty_like(x)
    tanh_array(x, out)
    assert out[0] == 0 and not np.signbit(out[0])
    assert out[1] == 0 and np.signbit(out[1])  # -0.0 stays -0.0
    assert out[2] == 5e-324 and out[3] == -5e-324  # subnormals unchanged
    assert out[4] == 1.0 and out[5] == -1.0
    assert np.isnan(out[6])
    assert out[7] == 1.0 and out[8] == -1.0


def test_tanh_float32_within_one_ulp():
    with np.errstate(over="ignore"):
        x = _points().astype(np.float32)
    x = x[np.isfinite(x)]
    out = np.empty_like(x)
    tanh_array(x, out)
    assert out.dtype == np.float32
    exact = _exact(x.astype(np.float64)).astype(np.float32)  # correctly rounded float32
    err = np.abs(out.astype(np.float64) - exact) / np.spacing(np.abs(exact)).clip(
        min=np.float32(1e-45)
    ).astype(np.float64)
    assert err.max() <= 1.0


@pytest.mark.parametrize("x", [np.nan, np.inf, -np.inf])
def test_tanh_nan_inf_propagation_in_place(x):
    a = np.array([x, 0.5])
    tanh_array(a, a)  # out may be z
    assert np.isnan(a[0]) if np.isnan(x) else a[0] == np.tanh(x)
    assert abs(a[1] - np.tanh(0.5)) <= np.spacing(np.tanh(0.5))


# exp, sigmoid, softplus, one_minus_exp_neg: each on uniform points where the function
# changes (subnormal results included), log-uniform points over the whole float64 range
# with both signs and the special points of its method


def _sigmoid_mp(v):
    return 1 / (1 + mpmath.exp(-v))


def _softplus_mp(v):
    return mpmath.log1p(mpmath.exp(v))


def _one_minus_exp_neg_mp(v):
    return -mpmath.expm1(-v)


_LOG_MAX = 709.782712893384  # the largest x with exp(x) finite
_LOG_TINY = -745.1332191019411  # the smallest x with exp(x) > 0 (5e-324)
_COMMON = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, -1e-310, 1e-8, -1e-8, 0.5, -0.5]
_COMMON += [0.34657359027997264, -0.34657359027997264, 0.6931471805599453, -0.6931471805599453]
_COMMON += [37.0, -37.0, 37.42994775023705, np.nextafter(37.42994775023705, 0), 40.0, -40.0]
_COMMON += [_LOG_MAX, np.nextafter(_LOG_MAX, 800), _LOG_TINY, np.nextafter(_LOG_TINY, -800)]
_COMMON += [-708.4, -709.78, 710.0, -746.0, 1e308, -1.7976931348623157e308]

_WIDE = [(-2, 2), (-40, 40), (-746, -700)]
_FUNCS = {
    # name: (the loop, the bound, the mpmath function, the uniform ranges that matter)
    "exp": (exp_array, EXP_MAX_ULP, mpmath.exp, [(-2, 2), (-746, 710), (-746, -707)]),
    "sigmoid": (sigmoid_array, SIGMOID_MAX_ULP, _sigmoid_mp, _WIDE),
    "softplus": (softplus_array, SOFTPLUS_MAX_ULP, _softplus_mp, _WIDE),
    "one_minus_exp_neg": (
        one_minus_exp_neg_array,
        ONE_MINUS_EXP_NEG_MAX_ULP,
        _one_minus_exp_neg_mp,
        [(0, 2), (0, 40), (-2, 0), (-711, 0)],
    ),
}


def _points_for(name):
    rng = np.random.default_rng(1)
    parts = [rng.uniform(lo, hi, 3000) for lo, hi in _FUNCS[name][3]]
    parts.append(np.sign(rng.uniform(-1, 1, 4000)) * 2.0 ** rng.uniform(-1074, 1023, 4000))
    parts.append(np.array(_COMMON))
    return np.concatenate(parts)


def _rounded(e):
    """The float64 nearest the mpmath value e (subnormals rounded once, overflow to inf)."""
    if abs(e) < mpmath.mpf(2) ** -1022:  # float() would round to 53 bits, then again
        return float(mpmath.nint(e * mpmath.mpf(2) ** 1074)) * 5e-324
    return float(e)


def _exact_of(fn, x):
    with mpmath.workdps(40):
        return np.array([_rounded(fn(mpmath.mpf(float(v)))) for v in x])


def _ulp_error_inf(got, exact):
    # as _ulp_error, and 0 where the exact result overflows to +-inf and got is that inf
    inf = np.isinf(exact)
    with np.errstate(invalid="ignore"):
        err = _ulp_error(np.where(inf, 0.0, got), np.where(inf, 0.0, exact))
    return np.where(inf, np.where(got == exact, 0.0, np.inf), err)


@pytest.mark.parametrize("name", list(_FUNCS))
def test_float64_max_ulp_against_mpmath(name):
    loop, bound, fn, _ = _FUNCS[name]
    x = _points_for(name)
    out = np.empty_like(x)
    loop(x, out)
    err = _ulp_error_inf(out, _exact_of(fn, x))
    assert err.max() <= bound, (err.max(), x[err.argmax()])


@pytest.mark.parametrize("name", list(_FUNCS))
def test_float32_within_one_ulp(name):
    loop, _, fn, _ = _FUNCS[name]
    with np.errstate(over="ignore"):
        x = _points_for(name).astype(np.float32)
    x = x[np.isfinite(x)]
    out = np.empty_like(x)
    loop(x, out)
    assert out.dtype == np.float32
    with np.errstate(over="ignore"):
        exact = _exact_of(fn, x.astype(np.float64)).astype(np.float32)  # correctly rounded
    inf = np.isinf(exact)
    assert np.array_equal(out[inf], exact[inf])
    err = np.abs(out[~inf].astype(np.float64) - exact[~inf]) / np.spacing(np.abs(exact[~inf])).clip(
        min=np.float32(1e-45)
    ).astype(np.float64)
    assert err.max() <= 1.0, (err.max(), x[~inf][err.argmax()])


_SPECIAL_X = [0.0, -0.0, 5e-324, -5e-324, np.inf, -np.inf, np.nan, 800.0, -800.0]
_SPECIAL_Y = {
    "exp": [1.0, 1.0, 1.0, 1.0, np.inf, 0.0, np.nan, np.inf, 0.0],
    "sigmoid": [0.5, 0.5, 0.5, 0.5, 1.0, 0.0, np.nan, 1.0, 0.0],
    "softplus": [np.log(2.0)] * 4 + [np.inf, 0.0, np.nan, 800.0, 0.0],
    "one_minus_exp_neg": [0.0, 0.0, 5e-324, -5e-324, 1.0, -np.inf, np.nan, 1.0, -np.inf],
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(_FUNCS))
def test_special_values(name, dtype):
    with np.errstate(over="ignore"):
        x = np.array(_SPECIAL_X, dtype=dtype)
        want = np.array(_SPECIAL_Y[name], dtype=dtype)
    if dtype == np.float32:  # 5e-324 is 0 in float32
        want[2:4] = _SPECIAL_Y[name][0]
    out = np.empty_like(x)
    _FUNCS[name][0](x, out)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, want)  # NaN where NaN, inf where inf, exactly


def test_exp_overflow_and_subnormal_results():
    # overflow to inf just above log(DBL_MAX); subnormal results computed (not flushed)
    # and rounded once, down to 5e-324 at _LOG_TINY; 0 below
    x = np.array([_LOG_MAX, np.nextafter(_LOG_MAX, 800), -720.0, -740.0, _LOG_TINY])
    x = np.append(x, np.nextafter(_LOG_TINY, -800))
    out = np.empty_like(x)
    exp_array(x, out)
    assert np.isfinite(out[0]) and out[0] == _exact_of(mpmath.exp, x[:1])[0]
    assert out[1] == np.inf
    assert 0 < out[2] < 2.2250738585072014e-308 and 0 < out[3] < 1e-320
    np.testing.assert_array_equal(out[2:4], _exact_of(mpmath.exp, x[2:4]))
    assert out[4] == 5e-324 and out[5] == 0.0


def test_sigmoid_softplus_tiny_results_and_agreement_with_numpy():
    # large negative x: tiny positive results, subnormal included (the formula
    # 1 / (1 + exp(-x)) gives 0 below -709.78); elsewhere NumPy's formulas' values
    x = np.concatenate([np.linspace(-745, -700, 451), np.linspace(-30, 30, 601)])
    sig = np.empty_like(x)
    sigmoid_array(x, sig)
    soft = np.empty_like(x)
    softplus_array(x, soft)
    assert np.all(sig[:451] > 0) and np.all(soft[:451] > 0)
    assert np.all(np.abs(soft[:451] - sig[:451]) <= np.spacing(sig[:451]))  # both exp(x) there
    with np.errstate(over="ignore"):
        ref = 1.0 / (1.0 + np.exp(-x[451:]))
    assert np.all(np.abs(sig[451:] - ref) <= 2 * np.spacing(ref))
    ref = np.logaddexp(0.0, x[451:])
    assert np.all(np.abs(soft[451:] - ref) <= 2 * np.spacing(ref))


def test_one_minus_exp_neg_relative_accuracy_for_tiny_a():
    # relative to the result, where 1 - exp(-a) would lose every digit
    a = 2.0 ** -np.arange(1.0, 1075.0)
    out = np.empty_like(a)
    one_minus_exp_neg_array(a, out)
    ref = -np.expm1(-a)
    assert np.all(np.abs(out - ref) <= np.spacing(ref))
    assert out[-1] == 5e-324 and np.all(out[60:] == a[60:])  # a - a^2/2 rounds to a
    z = np.array([0.0, -0.0])
    one_minus_exp_neg_array(z, z)
    assert np.all(z == 0) and not np.any(np.signbit(z))  # +-0 give +0


@pytest.mark.parametrize("name", list(_FUNCS))
def test_nan_inf_propagation_in_place(name):
    loop, _, fn, _ = _FUNCS[name]
    a = np.array([np.nan, np.inf, -np.inf, 0.5])
    loop(a, a)  # out may be z
    assert np.isnan(a[0])
    np.testing.assert_array_equal(a[1:3], _SPECIAL_Y[name][4:6])
    exact = _exact_of(fn, [0.5])[0]
    assert abs(a[3] - exact) <= np.spacing(exact)
