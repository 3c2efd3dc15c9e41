"""What the machine allows: the floors that ``cnn bench`` prints beside its targets.

A time target set on one machine can lie below what another machine can do at
all. Measured in the same run as the benchmark, these say how far a row is from
that limit:

* :func:`products_flop`: the arithmetic of the conv and FC products of a network,
  per image, forward only (``testcnn``) and for a training step;
* :func:`gemm_rate`: how fast this machine's BLAS multiplies two large square
  matrices on the threads we use, the best rate such products reach here
  (sampled several times in a run, the fastest kept: the host's speed drifts);
* their quotient, the **arithmetic floor**: the time those products would take
  if all of them ran at the matrix-product rate (no pooling, activations, loss,
  update, memory traffic or Python counted: in practice a lower bound, since
  tuned matrix products are the fastest such arithmetic runs on a machine);
* :func:`numba_start`: a fresh Python process that imports NumPy and Numba and
  calls one trivial ``cache=True`` function already in the cache, the least that
  any Numba program pays before its first result (the floor of the "first
  minibatch, warm cache" row).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from .network import CNN, ConvLayer, FCLayer


def products_flop(net: CNN) -> tuple[int, int]:
    """Floating-point operations of the conv and FC products for one image.

    Each multiply-add counts 2. A conv layer of ``M`` maps of ``H x W`` from
    ``P`` maps through ``kh x kw`` kernels does ``2 M P kh kw H W`` forward; an
    FC layer of ``N`` nodes on ``I`` inputs ``2 N I``. Training adds, per layer,
    the kernel or weight gradient (the same count) and, for every layer but the
    first with parameters, the error passed to the layer below (the same count
    again: the full convolution, or ``W.T @ error``). Pooling layers, activations, biases, the
    loss and the update are not counted.

    Parameters
    ----------
    net : CNN
        Any network of the supported layers (``net.layers[0]`` the input layer).

    Returns
    -------
    forward, training : int
        FLOP per image of the forward pass, and of forward plus backward pass.
    """
    forward = backward = 0
    below = False  # a layer with parameters below this one (it needs this one's error)
    for layer in net.layers[1:]:
        if isinstance(layer, ConvLayer):
            n = (
                2
                * layer.n_maps
                * layer.n_prev_maps
                * layer.kernel_height
                * layer.kernel_width
                * layer.height
                * layer.width
            )
        elif isinstance(layer, FCLayer):
            n = 2 * layer.n_nodes * layer.n_inputs
        else:
            continue
        forward += n
        backward += 2 * n if below else n
        below = True
    return forward, forward + backward


def gemm_rate(dtype=np.float64, threads=2, n=1000, repeat=5) -> float:
    """GFLOP/s of NumPy's ``(n, n) @ (n, n)`` product on ``threads`` BLAS threads.

    The best of ``repeat`` timed products after one untimed one: the rate the
    machine's tuned matrix-product kernels reach (``2 n**3`` FLOP per product).
    """
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.random((n, n)).astype(dtype)
    b = rng.random((n, n)).astype(dtype)
    with threadpool_limits(limits=threads, user_api="blas"):
        a @ b
        best = np.inf
        for _ in range(repeat):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


PROBE = """import numba


@numba.njit(cache=True)
def total(a):
    return a.sum()
"""

NUMBA_START = r"""
import time
t0 = time.perf_counter()
import numpy as np
import cnn_floor_probe
cnn_floor_probe.total(np.ones(3))
print(time.perf_counter() - t0)
"""


def numba_start(run_python, repeat=2) -> float:
    """Seconds from ``import numpy`` to the result of one cached Numba function, in a
    fresh process (interpreter start not counted): the best of ``repeat`` runs after
    one that fills the cache.

    ``run_python(code, env)`` runs ``code`` in a fresh interpreter with the extra
    environment ``env`` and returns the last line it printed (``cnn.bench`` passes
    its own runner, as for the first-minibatch rows).
    """
    with tempfile.TemporaryDirectory(prefix="cnn-numba-start-") as d:
        Path(d, "cnn_floor_probe.py").write_text(PROBE)
        env = {"PYTHONPATH": d, "NUMBA_CACHE_DIR": str(Path(d, "cache"))}
        run_python(NUMBA_START, env)  # compile and fill the cache
        return min(float(run_python(NUMBA_START, env)) for _ in range(repeat))


def gemm_rates(threads=2) -> dict:
    """``{"float64": GFLOP/s, "float32": GFLOP/s}``: :func:`gemm_rate` of each dtype."""
    return {dt: gemm_rate(np.dtype(dt), threads) for dt in ("float64", "float32")}


def floors(net: CNN, rate_samples, numba_start_seconds: float, threads: int) -> dict:
    """The floors of ``cnn bench`` for ``net``.

    Parameters
    ----------
    net : CNN
        The benchmarked network.
    rate_samples : list of dict
        :func:`gemm_rates` taken at several moments of the run. The fastest rate
        of each dtype is used: a floor must not exceed what the machine did at
        its best during the run, and a shared host's speed drifts by 2x within
        minutes (one sample alone once put the floor above the measured time).
    numba_start_seconds : float
        :func:`numba_start`.
    threads : int
        The threads we compute on (and the matrix products ran on).

    Returns
    -------
    dict
        ``gemm_gflops`` (the fastest rate per dtype), ``gemm_samples``,
        ``flop_per_image`` (forward, training), the arithmetic floors
        ``train_epoch_seconds`` (60,000 images, per dtype) and
        ``test_10k_seconds`` (float64), ``numba_start_seconds`` and ``threads``.
    """
    forward, training = products_flop(net)
    rates = {dt: max(s[dt] for s in rate_samples) for dt in ("float64", "float32")}
    return {
        "threads": threads,
        "gemm_gflops": rates,
        "gemm_samples": list(rate_samples),
        "flop_per_image": {"forward": forward, "training": training},
        "train_epoch_seconds": {dt: 60000 * training / (r * 1e9) for dt, r in rates.items()},
        "test_10k_seconds": 10000 * forward / (rates["float64"] * 1e9),
        "numba_start_seconds": numba_start_seconds,
    }
