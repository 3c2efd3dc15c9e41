"""The FC products of the fused step (cnn/dense.py) against exact sums.

Shapes cover every block remainder: rows fewer than a block and not a multiple
of it, W rows not a multiple of the block, columns fewer than a block (the
plain loop), not a multiple of it (the block moved back), and not a multiple
of the SIMD lanes (the plain loop after the last whole vector of a dot product).
"""

import numba as nb
import numpy as np
import pytest

from cnn import dense, simd

needs_simd = pytest.mark.skipif(not simd.ENABLED, reason="no FMA + AVX2/AVX-512 target")

SHAPES = [
    # R, J, m: x (R, m), W (J, m)
    (5, 150, 320),  # Example 3, FC 1
    (5, 10, 150),  # Example 3, FC 2
    (3, 7, 5),  # fewer columns than a block
    (1, 1, 1),
    (7, 3, 33),  # rows past a block, columns past the lanes
    (12, 13, 64),
    (50, 9, 17),
]

EPS = {np.float64: np.finfo(np.float64).eps, np.float32: np.finfo(np.float32).eps}


def _exact(a, b):
    """a @ b in extended precision (the reference sums)."""
    return np.dot(a.astype(np.longdouble), b.astype(np.longdouble))


def _assert_within_bound(got, a, b, dtype):
    """|got - a @ b| <= k eps sum |a| |b| entrywise (k terms: the classical bound)."""
    k = a.shape[1]
    bound = 1.01 * k * EPS[dtype] * _exact(np.abs(a), np.abs(b)) + np.finfo(dtype).tiny
    err = np.abs(got.astype(np.longdouble) - _exact(a, b))
    assert np.all(err <= bound), float(np.max(err / bound))


@nb.njit(fastmath={"contract"})
def _fma_loop(a, b, out, zero):
    """out = a @ b, each sum in order k = 0, 1, ... from ``zero`` (0 in out's dtype: a
    float32 times an integer 0 would be a float64 in Numba), one FMA per term."""
    for r in range(a.shape[0]):
        for i in range(b.shape[1]):
            s = zero
            for k in range(a.shape[1]):
                s += a[r, k] * b[k, i]
            out[r, i] = s


def _data(rng, dtype, *shape):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_dense_forward_within_the_dot_product_bound(dtype, shape):
    R, J, m = shape
    rng = np.random.default_rng(sum(shape))
    x, W = _data(rng, dtype, R, m), _data(rng, dtype, J, m)
    z = np.full((R, J), np.nan, dtype)
    dense.dense_forward(x, W, z)
    _assert_within_bound(z, x, W.T, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_dense_backward_within_the_dot_product_bound(dtype, shape):
    R, J, m = shape
    rng = np.random.default_rng(sum(shape) + 1)
    e, W = _data(rng, dtype, R, J), _data(rng, dtype, J, m)
    g = np.full((R, m), np.nan, dtype)
    dense.dense_backward(e, W, g)
    _assert_within_bound(g, e, W, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_dense_grad_writes_its_rows_only(dtype, shape):
    N, J, m = shape
    rng = np.random.default_rng(sum(shape) + 2)
    e, x = _data(rng, dtype, N, J), _data(rng, dtype, N, m)
    start, stop = min(1, J - 1), J  # a task's rows: all but the first where there are two
    dW = np.full((J, m), np.nan, dtype)
    dense.dense_grad(e, x, start, stop, dW)
    assert np.isnan(dW[:start]).all()
    _assert_within_bound(dW[start:stop], np.ascontiguousarray(e[:, start:stop].T), x, dtype)


@needs_simd
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_simd_outer_products_add_in_order_bitwise(dtype, shape):
    # backward and gradient: each sum from 0 in order k = 0, 1, ..., one FMA per
    # term, whatever the block, its clamped rows and moved-back columns
    R, J, m = shape
    rng = np.random.default_rng(sum(shape) + 3)
    e, W = _data(rng, dtype, R, J), _data(rng, dtype, J, m)
    ref = np.empty((R, m), dtype)
    _fma_loop(e, W, ref, dtype(0))
    g = np.full((R, m), np.nan, dtype)
    dense.dense_backward(e, W, g)
    np.testing.assert_array_equal(g, ref)

    x = _data(rng, dtype, R, m)
    ref = np.empty((J, m), dtype)
    _fma_loop(np.ascontiguousarray(e.T), x, ref, dtype(0))
    dW = np.full((J, m), np.nan, dtype)
    dense.dense_grad(e, x, 0, J, dW)
    np.testing.assert_array_equal(dW, ref)


@needs_simd
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_simd_and_blas_versions_agree(dtype):
    # the portable fallback (np.dot) takes the same arguments, and gives the same
    # products to round-off
    rng = np.random.default_rng(7)
    x, W = _data(rng, dtype, 5, 320), _data(rng, dtype, 150, 320)
    e = _data(rng, dtype, 5, 150)
    tol = dict(rtol=0, atol=400 * EPS[dtype] * 30)
    z1, z2 = np.empty((5, 150), dtype), np.empty((5, 150), dtype)
    dense._simd_forward(x, W, z1)
    dense._blas_forward(x, W, z2)
    np.testing.assert_allclose(z1, z2, **tol)
    g1, g2 = np.empty((5, 320), dtype), np.empty((5, 320), dtype)
    dense._simd_backward(e, W, g1)
    dense._blas_backward(e, W, g2)
    np.testing.assert_allclose(g1, g2, **tol)
    d1, d2 = np.full((150, 320), np.nan, dtype), np.full((150, 320), np.nan, dtype)
    dense._simd_grad(e, x, 20, 45, d1)
    dense._blas_grad(e, x, 20, 45, d2)
    np.testing.assert_array_equal(np.isnan(d1), np.isnan(d2))
    np.testing.assert_allclose(d1[20:45], d2[20:45], **tol)


def test_the_simd_versions_are_chosen_where_the_blocks_are():
    assert (dense.dense_forward is dense._simd_forward) == simd.ENABLED
    assert (dense.dense_backward is dense._simd_backward) == simd.ENABLED
    assert (dense.dense_grad is dense._simd_grad) == simd.ENABLED
