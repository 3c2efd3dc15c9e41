"""Every Numba kernel against its readable version in ``cnn.reference``, float64 and float32.

Shapes cover non-square maps and kernels, N = 1, several input maps (P > 1),
map and tap counts that are not multiples of the kernels' blocking (4 maps or
taps per pass, 2 in the kernel gradient), kernels as large as the maps, and
pool rates that do not divide the maps.
"""

import numpy as np
import pytest

from cnn import kernels, reference

DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-12, np.float32: 2e-5}

# (N, P, H, W, M, kh, kw)
CONV_CASES = [
    (1, 1, 7, 9, 1, 3, 2),  # N = 1, one map, non-square maps and kernel
    (3, 2, 8, 6, 5, 2, 3),  # M = 5: one block of 4 maps and one alone
    (2, 3, 5, 5, 6, 5, 5),  # kernel as large as the maps: 1 x 1 output
    (4, 1, 28, 28, 10, 9, 9),  # Example 3, conv 1
    (2, 10, 10, 10, 20, 3, 3),  # Example 3, conv 2
    (2, 4, 6, 11, 7, 1, 4),  # 1-row kernel, 4 taps
    (1, 2, 9, 4, 3, 4, 1),  # 1-column kernel
]


def _random_cases(count, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        kh, kw = rng.integers(1, 6, size=2)
        H, W = kh + rng.integers(0, 8), kw + rng.integers(0, 8)
        out.append(
            (
                int(rng.integers(1, 5)),
                int(rng.integers(1, 5)),
                int(H),
                int(W),
                int(rng.integers(1, 10)),
                int(kh),
                int(kw),
            )
        )
    return out


CONV_CASES += _random_cases(6, seed=2024)


def _data(shape, dtype, rng):
    return (rng.random(shape) - 0.5).astype(dtype)


def _close(actual, expected, dtype):
    assert actual.dtype == dtype
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=TOL[dtype], atol=TOL[dtype] * scale)


def _case_id(c):
    return "N{}P{}_{}x{}_M{}_k{}x{}".format(*c)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=_case_id)
def test_conv_valid(case, dtype):
    N, P, H, W, M, kh, kw = case
    rng = np.random.default_rng(1)
    x, K, b = (
        _data((N, P, H, W), dtype, rng),
        _data((M, P, kh, kw), dtype, rng),
        _data(M, dtype, rng),
    )
    x64, K64 = x.astype(np.float64), K.astype(np.float64)
    ref = reference.conv_valid(x64, K64)
    assert ref.shape == (N, M, H - kh + 1, W - kw + 1)
    _close(kernels.conv_valid(x, K), ref, dtype)
    out = np.full(ref.shape, np.nan, dtype=dtype)
    z = kernels.conv_valid(x, K, b, out=out)
    assert z is out
    _close(z, reference.conv_valid(x64, K64, b.astype(np.float64)), dtype)
    _close(reference.conv_valid(x, K, b), reference.conv_valid(x64, K64, b), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("case", CONV_CASES, ids=_case_id)
def test_conv_full(case, flip, dtype):
    N, P, H, W, M, kh, kw = case
    rng = np.random.default_rng(2)
    Ho, Wo = H - kh + 1, W - kw + 1
    e, K = _data((N, M, Ho, Wo), dtype, rng), _data((M, P, kh, kw), dtype, rng)
    e64, K64 = e.astype(np.float64), K.astype(np.float64)
    ref = reference.conv_full(e64, K64, flip=flip)
    assert ref.shape == (N, P, H, W)
    _close(reference.conv_full(e, K, flip=flip), ref, dtype)
    _close(kernels.conv_full(e, K, flip=flip), ref, dtype)
    out = np.full(ref.shape, np.nan, dtype=dtype)
    assert kernels.conv_full(e, K, flip=flip, out=out) is out
    _close(out, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=_case_id)
def test_kernel_grad(case, dtype):
    N, P, H, W, M, kh, kw = case
    rng = np.random.default_rng(3)
    x, e = _data((N, P, H, W), dtype, rng), _data((N, M, H - kh + 1, W - kw + 1), dtype, rng)
    x64, e64 = x.astype(np.float64), e.astype(np.float64)
    ref = reference.kernel_grad(x64, e64, (kh, kw))
    assert ref.shape == (M, P, kh, kw)
    _close(reference.kernel_grad(x, e, (kh, kw)), ref, dtype)
    _close(kernels.kernel_grad(x, e, (kh, kw)), ref, dtype)
    out = np.full(ref.shape, np.nan, dtype=dtype)
    assert kernels.kernel_grad(x, e, (kh, kw), out=out) is out
    _close(out, ref, dtype)


def test_kernel_grad_is_the_gradient_of_conv_valid():
    """<dL/dz, dz/dK> by the chain rule, against a central difference."""
    rng = np.random.default_rng(4)
    x, K, e = rng.random((2, 3, 6, 7)), rng.random((4, 3, 2, 3)), rng.random((2, 4, 5, 5))
    dK = kernels.kernel_grad(x, e, (2, 3))
    g = kernels.conv_full(e, K)
    h = 1e-6
    for idx in [(0, 0, 0, 0), (3, 2, 1, 2), (1, 1, 0, 1)]:
        Kp, Km = K.copy(), K.copy()
        Kp[idx] += h
        Km[idx] -= h
        num = ((kernels.conv_valid(x, Kp) - kernels.conv_valid(x, Km)) * e).sum() / (2 * h)
        assert abs(num - dK[idx]) < 1e-7
    for idx in [(0, 0, 0, 0), (1, 2, 3, 4)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num = ((kernels.conv_valid(xp, K) - kernels.conv_valid(xm, K)) * e).sum() / (2 * h)
        assert abs(num - g[idx]) < 1e-7


# (N, M, H, W, r): r divides the maps or not
POOL_CASES = [
    (1, 1, 4, 4, 2),
    (2, 3, 20, 20, 2),
    (3, 2, 7, 9, 2),
    (2, 2, 9, 7, 3),
    (1, 4, 10, 10, 5),
    (2, 1, 5, 6, 1),
    (2, 3, 11, 8, 4),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "N{}M{}_{}x{}_r{}".format(*c))
def test_mean_pool(case, dtype):
    N, M, H, W, r = case
    x = _data((N, M, H, W), dtype, np.random.default_rng(5))
    h, w = H // r, W // r
    ref = reference.mean_pool(x.astype(np.float64), r)
    assert ref.shape == (N, M, h, w)
    # a direct loop over the windows
    assert ref[-1, -1, -1, -1] == pytest.approx(
        x[-1, -1, (h - 1) * r : h * r, (w - 1) * r : w * r].astype(np.float64).mean(), rel=1e-12
    )
    _close(kernels.mean_pool(x, r), ref, dtype)
    out = np.full(ref.shape, np.nan, dtype=dtype)
    assert kernels.mean_pool(x, r, out=out) is out
    _close(out, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("divide", [True, False])
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "N{}M{}_{}x{}_r{}".format(*c))
def test_upsample(case, divide, dtype):
    N, M, H, W, r = case
    h, w = H // r, W // r
    e = _data((N, M, h, w), dtype, np.random.default_rng(6))
    ref = reference.upsample(e.astype(np.float64), r, (H, W), divide=divide)
    direct = np.zeros((N, M, H, W))
    direct[:, :, : h * r, : w * r] = np.repeat(np.repeat(e.astype(np.float64), r, 2), r, 3)
    np.testing.assert_array_equal(ref, direct / (r * r if divide else 1))
    _close(kernels.upsample(e, r, (H, W), divide=divide), ref, dtype)
    out = np.full(ref.shape, np.nan, dtype=dtype)  # the zero border must be written too
    assert kernels.upsample(e, r, (H, W), divide=divide, out=out) is out
    _close(out, ref, dtype)


def test_upsample_is_the_adjoint_of_mean_pool():
    rng = np.random.default_rng(7)
    x, e = rng.random((2, 3, 9, 7)), rng.random((2, 3, 4, 3))
    lhs = (kernels.mean_pool(x, 2) * e).sum()
    rhs = (x * kernels.upsample(e, 2, (9, 7))).sum()
    assert abs(lhs - rhs) < 1e-12 * abs(lhs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 5, 4, 6), (50, 20, 8, 8)])
def test_map_sums(shape, dtype):
    e = _data(shape, dtype, np.random.default_rng(8))
    _close(kernels.map_sums(e), reference.map_sums(e.astype(np.float64)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", sorted(kernels.ACT_CODES))
def test_activation_kernels(act, dtype):
    rng = np.random.default_rng(9)
    z = (rng.standard_normal((3, 4, 5, 2)) * 3).astype(dtype)
    z[0, 0, 0] = [-800.0, 800.0]  # overflow of exp in the naive formulas
    z64 = z.astype(np.float64)
    ref = reference.act_forward(z64, act)
    a = kernels.act_forward(z, act)
    _close(a, ref, dtype)
    g = _data(z.shape, dtype, rng)
    for faithful in (True, False):
        ref_g = reference.act_backward(a.astype(np.float64), act, g.astype(np.float64), faithful)
        _close(kernels.act_backward(a, act, g, faithful), ref_g, dtype)
    buf = z.copy()
    assert kernels.act_forward(buf, act, out=buf) is buf  # in place
    _close(buf, ref, dtype)


def test_bad_out_is_refused():
    x, K = np.zeros((2, 1, 5, 5)), np.zeros((3, 1, 2, 2))
    with pytest.raises(ValueError, match="out must be"):
        kernels.conv_valid(x, K, out=np.empty((2, 3, 4, 3)))
    with pytest.raises(ValueError, match="out must be"):
        kernels.mean_pool(x, 2, out=np.empty((2, 1, 2, 4))[:, :, :, ::2])  # not contiguous
    y = kernels.mean_pool(x, 2, out=np.empty((2, 1, 2, 2), dtype=np.float32))
    assert y.dtype == np.float32  # out decides the dtype
    with pytest.raises(ValueError):
        kernels.conv_valid(x, np.zeros((3, 2, 2, 2)))


def test_results_do_not_depend_on_the_thread_count():
    """Same bits with 1 thread as with all of them (per-example sums, examples in order)."""
    import numba

    rng = np.random.default_rng(10)
    x, K, e = rng.random((7, 3, 12, 11)), rng.random((5, 3, 3, 4)), rng.random((7, 5, 10, 8))
    calls = [
        lambda: kernels.conv_valid(x, K),
        lambda: kernels.conv_full(e, K, True),
        lambda: kernels.kernel_grad(x, e, (3, 4)),
        lambda: kernels.map_sums(e),
        lambda: kernels.mean_pool(x, 2),
        lambda: kernels.upsample(e, 2, (20, 17)),
    ]
    full = [f() for f in calls]
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = [f() for f in calls]
    finally:
        numba.set_num_threads(old)
    for a, b in zip(full, single):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_all_finite_matches_numpy(dtype):
    """The input checks' finite test: NaN/Inf anywhere (first, last, within and after a
    vector's lanes), any layout."""
    from cnn.kernels import all_finite

    rng = np.random.default_rng(12)
    n = 2 * 65536 + 7
    a = rng.standard_normal(n).astype(dtype)
    a[3] = np.finfo(dtype).smallest_subnormal
    a[4] = -0.0
    a[5] = np.finfo(dtype).max
    assert all_finite(a) and all_finite(a.reshape(-1, 1)) and all_finite(a[:0])
    for where in (0, 15, 16, 65535, n - 8, n - 1):
        for bad in (np.nan, np.inf, -np.inf):
            b = a.copy()
            b[where] = bad
            assert not all_finite(b), (where, bad)
            assert not all_finite(b[::-1])  # a non-contiguous view
    assert all_finite(np.arange(10)) and not all_finite(np.array([1, np.nan], dtype=np.float16))
