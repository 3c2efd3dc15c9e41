"""cnn.parallel: tasks compiled as C functions and called through a pointer from ``prange``."""

import numba as nb
import numpy as np
import pytest

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


@nb.njit(parallel=True)
def _claim(count, taken, runs, by_thread):
    # what fused._run does: each thread its own share in order, then what is left
    threads = nb.get_num_threads()
    for t in nb.prange(threads):
        k = np.int64(t)
        lo = k * count // threads
        own = (k + 1) * count // threads - lo
        for j in range(own + count):
            i = lo + j if j < own else count - 1 - (j - own)
            if parallel.claim(taken, i):
                runs[i] += 1
                by_thread[i] = k


@pytest.mark.parametrize("count", [0, 1, 7, 10, 20_000])
def test_claim_runs_every_index_once(count):
    for threads in (1, nb.config.NUMBA_NUM_THREADS):
        nb.set_num_threads(threads)
        try:
            taken = np.zeros(count, np.int64)
            runs = np.zeros(count, np.int64)
            by_thread = np.full(count, -1, np.int64)
            _claim(count, taken, runs, by_thread)
        finally:
            nb.set_num_threads(nb.config.NUMBA_NUM_THREADS)
        assert (runs == 1).all()
        # visited by its owner, then by every thread's pass over all from the end
        assert (taken == threads + 1).all()
        assert set(np.unique(by_thread)) <= set(range(threads))


def test_claim_is_true_once_per_index():
    @nb.njit
    def twice(flags):
        return parallel.claim(flags, 2), parallel.claim(flags, 2), parallel.claim(flags, 0)

    flags = np.zeros(3, np.int64)
    assert twice(flags) == (True, False, True)
    np.testing.assert_array_equal(flags, [1, 0, 2])


def test_claim_wants_an_int64_vector_and_an_integer():
    @nb.njit
    def bad(c, i):
        return parallel.claim(c, i)

    for flags, i in (
        (np.zeros(3, np.int32), 0),
        (np.zeros((3, 1), np.int64), 0),
        (np.zeros(3, np.int64), 0.5),
    ):
        with pytest.raises(nb.core.errors.TypingError):
            bad(flags, i)
