"""The register-blocked SIMD valid correlation (cnn/simd.py) against the portable loop.

The SIMD block adds the same taps in the same order with one FMA each, so the
results must be equal bit for bit to the portable loop (``kernels._cv_any`` and
the width-specialised loops), for every block remainder: maps not a multiple of
the block, positions not a multiple of the block, fewer positions than a block.
"""

import numpy as np
import pytest

from cnn import kernels, simd

needs_simd = pytest.mark.skipif(not simd.ENABLED, reason="no FMA + AVX2/AVX-512 target")


@pytest.mark.parametrize(
    "features, block",
    [
        ("+64bit,+avx,+avx2,+fma,-avx512f", (5, 2, 4, 5, 2)),
        ("+avx2,+fma,+avx512f,+avx512vl", (5, 4, 8, 5, 3)),
        ("+avx,+avx2,-fma", None),  # no FMA: the portable loop (its sums round twice)
        ("+avx,+fma", None),  # FMA without AVX2
        ("", None),  # not x86-64
    ],
)
def test_block_chosen_from_target_features(features, block):
    assert simd.choose_block(features) == block


def _case(rng, dtype, P, H, W, M, kh, kw):
    x = rng.standard_normal((P, H, W)).astype(dtype)
    K = rng.standard_normal((M, P, kh, kw)).astype(dtype)
    b = rng.standard_normal(M).astype(dtype)
    S = (H - kh + 1) * (W - kw + 1)
    return x, K, b, S


SHAPES = [
    # P, H, W, M, kh, kw
    (1, 28, 28, 10, 9, 9),  # Example 3, conv 1
    (10, 10, 10, 20, 3, 3),  # Example 3, conv 2
    (3, 12, 17, 7, 2, 5),  # maps and positions both with remainders, non-square kernel
    (2, 9, 40, 1, 1, 1),  # one map, 1 x 1 kernel
    (4, 6, 6, 11, 3, 3),  # 16 positions: fewer than a block for float32 on AVX-512
    (1, 5, 5, 3, 5, 5),  # one position: the portable loop
]


def _portable(loop, x, K, b, z):
    """Run one of the portable loops (``kernels._cv*``) on x's column windows."""
    P, H, W = x.shape
    kw = K.shape[3]
    Wo = W - kw + 1
    xb = np.empty((P, kw, H * Wo), x.dtype)
    kernels.column_windows(x, Wo, xb)
    loop(xb, K, b, z, Wo)


@needs_simd
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_conv_valid_example_equals_portable_loop_bitwise(dtype, shape):
    rng = np.random.default_rng(sum(shape))
    x, K, b, S = _case(rng, dtype, *shape)
    M = shape[3]
    ref = np.empty((M, S), dtype)
    _portable(kernels._cv_any, x, K, b, ref)
    got = np.full((M, S), np.nan, dtype)
    kernels.conv_valid_example(x, K, b, got)
    np.testing.assert_array_equal(got, ref)


@needs_simd
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_valid_correlation_blocks_cover_every_output(dtype):
    # NaN-filled output, maps and positions one more than whole blocks: every
    # entry written, each equal to the portable loop's
    n = simd.positions_needed(dtype)
    rng = np.random.default_rng(1)
    H, W, kh, kw = 3, n + 1 + 2, 3, 3  # Ho = 1, Wo = n + 1 positions
    x, K, b, S = _case(rng, dtype, 2, H, W, simd.MAPS + 1, kh, kw)
    assert S == n + 1
    Wo = W - kw + 1
    xb = np.empty((2, kw, H * Wo), dtype)
    kernels.column_windows(x, Wo, xb)
    got = np.full((simd.MAPS + 1, S), np.nan, dtype)
    simd.valid_correlation(xb, K, b, got, Wo)
    ref = np.empty_like(got)
    _portable(kernels._cv_any, x, K, b, ref)
    np.testing.assert_array_equal(got, ref)


def test_against_the_formula():
    # independent of the portable loop: the docstring's sum, in float64
    rng = np.random.default_rng(2)
    x, K, b, S = _case(rng, np.float64, 2, 11, 30, 6, 3, 4)
    got = np.empty((6, S))
    kernels.conv_valid_example(x, K, b, got)
    Ho, Wo = 11 - 3 + 1, 30 - 4 + 1
    ref = np.empty((6, Ho, Wo))
    for j in range(6):
        for p in range(Ho):
            for q in range(Wo):
                ref[j, p, q] = np.sum(x[:, p : p + 3, q : q + 4] * K[j]) + b[j]
    np.testing.assert_allclose(got.reshape(6, Ho, Wo), ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES[:4])
def test_portable_width_loops_equal_the_generic_loop(dtype, shape):
    # the fallback where simd.ENABLED is false: the loops compiled for widths 3/5/7/9
    # give the generic loop's numbers bit for bit
    rng = np.random.default_rng(7 + sum(shape))
    P, H, W, M, kh, _ = shape
    loops = ((3, kernels._cv3), (4, kernels._cv_any), (5, kernels._cv5), (7, kernels._cv7))
    for kw, loop in loops + ((9, kernels._cv9),):
        if kw > W:
            continue
        x, K, b, S = _case(rng, dtype, P, H, W, M, kh, kw)
        ref = np.empty((M, S), dtype)
        _portable(kernels._cv_any, x, K, b, ref)
        got = np.empty((M, S), dtype)
        _portable(loop, x, K, b, got)
        np.testing.assert_array_equal(got, ref)
        # and through the width dispatch that conv_valid_columns uses without SIMD
        got[:] = np.nan
        _portable(kernels._conv_columns_unrolled, x, K, b, got)
        np.testing.assert_array_equal(got, ref)


def _grad_reference(x, e, kh, kw):
    """part[j, k, a, b] = sum_{p,q} x[k, p+a, q+b] e[j, p, q], in float64 (einsum)."""
    P, H, W = x.shape
    Ho, Wo = H - kh + 1, W - kw + 1
    e3 = e.astype(np.float64).reshape(-1, Ho, Wo)
    out = np.empty((e3.shape[0], P, kh, kw))
    for a in range(kh):
        for b in range(kw):
            out[:, :, a, b] = np.einsum("jpq,kpq->jk", e3, x[:, a : a + Ho, b : b + Wo])
    return out


GRAD_SHAPES = SHAPES + [
    (2, 7, 9, 6, 2, 3),  # 6 x 7 = 42 positions: a remainder after whole vectors
    (1, 4, 4, 2, 2, 2),  # 9 positions: fewer than one vector for float32 on AVX-512
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", GRAD_SHAPES)
def test_kernel_gradient_simd_and_portable_against_the_formula(dtype, shape):
    rng = np.random.default_rng(3 + sum(shape))
    P, H, W, M, kh, kw = shape
    x = rng.standard_normal((P, H, W)).astype(dtype)
    S = (H - kh + 1) * (W - kw + 1)
    e = rng.standard_normal((M, S)).astype(dtype)
    ref = _grad_reference(x, e, kh, kw)
    scale = np.abs(ref).max()
    tol = (1e-14 if dtype == np.float64 else 3e-6) * scale
    Wo = W - kw + 1
    xb = np.empty((P, kw, H * Wo), dtype)
    kernels.column_windows(x, Wo, xb)
    portable = np.full((M, P, kh, kw), np.nan, dtype)
    kernels._kernel_grad_loop(xb, e, portable, Wo)
    np.testing.assert_allclose(portable, ref, rtol=0, atol=tol)
    got = np.full((M, P, kh, kw), np.nan, dtype)
    kernels.kernel_grad_example(x, e, got)  # SIMD where enabled
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol)
    np.testing.assert_allclose(got, portable, rtol=0, atol=tol)
    if simd.ENABLED:  # fewer positions than a vector included
        direct = np.full((M, P, kh, kw), np.nan, dtype)
        simd.kernel_gradient(xb.reshape(1, -1), 0, e.reshape(1, -1), direct, Wo, H * Wo, False)
        np.testing.assert_array_equal(direct, got)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", GRAD_SHAPES)
@pytest.mark.parametrize("add", [False, True])
def test_kernel_gradient_of_several_examples_is_the_sum_of_theirs(dtype, shape, add):
    # kernel_grad_rows: R examples' windows in rows of X from column x0, their errors in
    # rows of E; summed in groups that fit the L1 cache (several groups for conv 1 in
    # float32, one for conv 2), added to ``part`` when ``add``; clamped maps and taps of
    # the last blocks must not be added twice
    rng = np.random.default_rng(5 + sum(shape))
    P, H, W, M, kh, kw = shape
    R, x0 = 5, 3
    Wo = W - kw + 1
    S = (H - kh + 1) * Wo
    x = rng.standard_normal((R, P, H, W)).astype(dtype)
    e = rng.standard_normal((R, M, S)).astype(dtype)
    X = np.full((R, x0 + P * kw * H * Wo + 2), np.nan, dtype)  # NaN outside the windows
    for r in range(R):
        xb = np.empty((P, kw, H * Wo), dtype)
        kernels.column_windows(x[r], Wo, xb)
        X[r, x0 : x0 + xb.size] = xb.reshape(-1)
    start = rng.standard_normal((M, P, kh, kw)).astype(dtype)
    ref = sum(_grad_reference(x[r], e[r], kh, kw) for r in range(R)) + (start if add else 0)
    tol = (1e-14 if dtype == np.float64 else 3e-6) * np.abs(ref).max() * R
    runs = [kernels.kernel_grad_rows, kernels._kernel_grad_rows_portable]
    runs += [simd.kernel_gradient] if simd.ENABLED else []
    for run in runs:
        part = start.copy() if add else np.full_like(start, np.nan)
        run(X, x0, e.reshape(R, -1), part, Wo, H * Wo, add)
        np.testing.assert_allclose(part, ref, rtol=0, atol=tol, err_msg=run.__name__)


def test_blocks_refuse_arrays_that_are_not_c_contiguous():
    # the blocks read raw memory: a strided view must be a typing error, not a wrong read
    from numba.core.errors import TypingError

    K = np.zeros((2, 1, 3, 3))
    Wo = 38
    xb = np.zeros((1, 3, 4 * Wo))
    z = np.zeros((2, 4 * Wo))[:, ::2]  # every other position: not C-contiguous
    with pytest.raises(TypingError, match="C-contiguous"):
        simd.valid_correlation(xb, K, np.zeros(2), z, Wo)
    with pytest.raises(TypingError, match="C-contiguous"):
        simd.kernel_gradient(
            xb.reshape(1, -1),
            0,
            np.zeros((2, 8 * Wo))[:, ::4],
            np.zeros((2, 1, 3, 3)),
            Wo,
            4 * Wo,
            False,
        )


def test_wide_vectors_sets_the_function_attribute_of_its_caller():
    # the loops of a function that calls it may use the widest vectors (AVX-512);
    # a function that does not call it keeps LLVM's preference
    import numba as nb

    @nb.njit
    def wide(a):
        simd.wide_vectors()
        for i in range(a.shape[0]):
            a[i] *= 2.0

    @nb.njit
    def plain(a):
        for i in range(a.shape[0]):
            a[i] *= 2.0

    a = np.ones(8)
    wide(a)
    plain(a)
    np.testing.assert_array_equal(a, 4.0)
    attribute = '"prefer-vector-width"="512"'
    assert attribute in wide.inspect_llvm(wide.signatures[0])
    assert attribute not in plain.inspect_llvm(plain.signatures[0])
    # and the fused step's elementwise loops have it (a fresh compile: the cached
    # kernels carry no IR to inspect)
    from cnn import fused

    activate = nb.njit(fused._activate.py_func)
    activate(np.zeros(16), 1, 1.0, 0.01)
    assert attribute in activate.inspect_llvm(activate.signatures[0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_runs_write_every_element_once_for_any_length(dtype):
    # add_run, copy_run, pairs_run: whole vectors, then one of each smaller power of
    # two; every length up to three vectors, bit for bit as the scalar loops
    import numba as nb

    @nb.njit
    def run(kind, dst, d0, src, s0, n, divisor):
        if kind == 0:
            simd.add_run(dst, d0, src, s0, n)
        elif kind == 1:
            simd.copy_run(dst, d0, src, s0, n)
        else:
            simd.pairs_run(dst, d0, src, s0, n, divisor)

    rng = np.random.default_rng(7)
    divisor = dtype(3)  # not a power of two: a division, not a product
    for n in range(0, 3 * 16 + 2):
        for kind in range(3):
            dst = rng.standard_normal(120).astype(dtype)
            src = rng.standard_normal(60).astype(dtype)
            want = dst.copy()
            if kind == 0:
                want[3 : 3 + n] += src[5 : 5 + n]
            elif kind == 1:
                want[3 : 3 + n] = src[5 : 5 + n]
            else:
                want[3 : 3 + 2 * n] = np.repeat(src[5 : 5 + n] / divisor, 2)
            run(kind, dst, 3, src, 5, n, divisor)
            np.testing.assert_array_equal(dst, want, err_msg=f"kind {kind}, n={n}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pool_pairs_run_is_the_mean_of_each_two_by_two_block(dtype):
    # one output row of a rate-2 mean pooling from two input rows, any length
    import numba as nb

    @nb.njit
    def run(y, y0, x, x0, x1, n, c):
        simd.pool_pairs_run(y, y0, x, x0, x1, n, c)

    rng = np.random.default_rng(11)
    c = dtype(0.25)
    tol = 4 * np.finfo(dtype).eps
    for n in range(0, 2 * 16 + 3):
        x = rng.standard_normal(200).astype(dtype)
        y = np.full(50, np.nan, dtype)
        run(y, 2, x, 3, 3 + 2 * n + 5, n, c)
        r0, r1 = x[3 : 3 + 2 * n], x[3 + 2 * n + 5 : 3 + 4 * n + 5]
        want = (r0[0::2].astype(np.float64) + r0[1::2] + r1[0::2] + r1[1::2]) * 0.25
        np.testing.assert_allclose(y[2 : 2 + n], want, rtol=0, atol=tol * 4, err_msg=f"n={n}")
        assert np.isnan(y[:2]).all() and np.isnan(y[2 + n :]).all()
