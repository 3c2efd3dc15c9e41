"""cnn.parallel: tasks compiled as C functions and called through a pointer from ``prange``."""

import numba as nb
import numpy as np

from cnn import parallel


def _square_into(i, x, out):
    out[i] = x[i] * x[i] + i


@nb.njit(parallel=True)
def _run(task, x, out):
    for i in nb.prange(x.shape[0]):
        task(np.int64(i), x, out)


def test_task_through_pointer_computes_what_a_direct_call_does():
    x = np.linspace(-3, 3, 101)
    out = np.full_like(x, np.nan)
    task = parallel.compiled(_square_into, (0, x, out))
    _run(task, x, out)
    expected = np.empty_like(x)
    for i in range(x.size):
        _square_into(i, x, expected)
    np.testing.assert_array_equal(out, expected)


def test_compiled_once_per_argument_types():
    x = np.ones(4)
    a = parallel.compiled(_square_into, (0, x, x))
    assert parallel.compiled(_square_into, (5, x + 1, np.zeros(4))) is a  # same types
    x32 = np.ones(4, np.float32)
    b = parallel.compiled(_square_into, (0, x32, x32))
    assert b is not a
    out = np.zeros(4, np.float32)
    _run(b, x32 * 2, out)
    np.testing.assert_array_equal(out, [4, 5, 6, 7])


def _add_index(i, x, out):
    out[i] += i


def test_tasks_of_the_same_argument_types_share_one_compiled_loop():
    # what lets the fused step run every task through one parallel function
    @nb.njit(parallel=True)
    def run(task, x, out):
        for i in nb.prange(x.shape[0]):
            task(np.int64(i), x, out)

    x = np.arange(5.0)
    out = np.zeros(5)
    square = parallel.compiled(_square_into, (0, x, out))
    add = parallel.compiled(_add_index, (0, x, out))
    assert nb.typeof(square) == nb.typeof(add)
    run(square, x, out)
    run(add, x, out)
    np.testing.assert_array_equal(out, x * x + 2 * np.arange(5))
    assert len(run.overloads) == 1
