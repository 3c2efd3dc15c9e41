"""cnn.vmath.tanh (the vectorisable tanh of the fused kernels) against mpmath and NumPy."""

import mpmath
import numpy as np
import pytest

from cnn.vmath import TANH_MAX_ULP, tanh_array


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
