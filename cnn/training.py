"""Update, training loop, testing and prediction.

MATLAB: ``gradientdescentcnn.m``, ``traincnn.m``, ``testcnn.m``, ``predictcnn.m``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import time

import numpy as np

from . import backend, fused
from .backward import bpcnn, prepare_loss_and_flag
from .forward import _forward
from .workspace import Workspace, check_x, check_y, output_matrix


class NonFiniteError(FloatingPointError):
    """Training produced NaN or Inf (the original's ``checkvalues`` stop)."""


STEPS = ("fused", "layers")
"""The two implementations of a training step (see :func:`traincnn`)."""

STEP_ENV = "CNN_STEP"
"""Environment variable giving the default step (``fused`` unless set).

The fused step is the default: it measured 1.25-1.29x faster than the
layer-by-layer path per Example 3 epoch on an idle machine (Intel Xeon, 2 cores,
2026-12-02, docs/performance.md; the two were not compared on a busy machine);
``CNN_STEP=layers`` or ``step="layers"`` selects the readable path."""


def _resolve_step(step):
    """``step`` checked, or the default (``$CNN_STEP``, else ``'fused'``) for ``None``."""
    if step is None:
        step = os.environ.get(STEP_ENV, "").strip() or "fused"
        where = f"${STEP_ENV}"
    else:
        where = "step"
    if step not in STEPS:
        raise ValueError(f"{where}={step!r} is not valid; valid: {', '.join(STEPS)}")
    if backend.active() != "numba":
        return "layers"  # cnn.use_kernels("reference"): the readable path on the plain kernels
    return step


@contextlib.contextmanager
def single_threaded_blas():
    """Run the block with every BLAS library (NumPy's, SciPy's) on one thread.

    The dense layers' matrix products and the per-example products inside the
    kernels are small; the parallelism comes from Numba's threads (one example
    per thread at a time). Both thread pools busy-wait between calls, so
    letting OpenBLAS start threads as well costs ten times more than it gains
    (see docs/performance.md). ``threadpoolctl`` restores the previous thread
    counts afterwards; results do not depend on them.
    """
    import scipy.linalg.cython_blas  # noqa: F401  (load SciPy's BLAS, used by the kernels)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@contextlib.contextmanager
def _workspace(net):
    """Let the forward and backward passes reuse their arrays for the block's duration.

    While it is active, ``ffcnn``/``bpcnn`` write every map, error and gradient
    into arrays kept on ``net`` (one set per batch size) instead of allocating
    new ones for each minibatch; so an array taken from a layer in a
    ``traincnn`` callback is overwritten by the next minibatch (copy it to keep
    it). Afterwards the arrays stay on the layers and are no longer reused.
    """
    if getattr(net, "_workspace", None) is not None:  # nested (callback calling testcnn...)
        yield
        return
    net._workspace = Workspace()
    try:
        yield
    finally:
        net._workspace = None


def gradientdescentcnn(net):
    """One plain gradient-descent step (MATLAB ``gradientdescentcnn``).

    ``W <- W - lr * dW``, ``K <- K - lr * dK``, ``b <- b - lr * db`` for every
    FC and conv layer, with ``lr = net.learning_rate``. No momentum, no decay.

    Returns
    -------
    CNN
        ``net`` itself, parameters updated in place.
    """
    lr = net.learning_rate
    for layer in net.layers[1:]:
        if layer.type == "f":
            layer.W -= lr * layer.dW
            layer.b -= lr * layer.db
        elif layer.type == "c":
            layer.K -= lr * layer.dK
            layer.b -= lr * layer.db
    return net


def _check_finite(net, epoch, batch, params_finite=None):
    """Stop with a message naming the layer when anything became NaN/Inf.

    ``params_finite``: whether the parameters are all finite, when the step
    already knows (the fused update checks what it writes); ``None``: look.
    """
    if params_finite and math.isfinite(net.loss):
        return
    # fast path: a sum is finite only if every element is (one pass, no temporaries)
    if (
        params_finite is None
        and math.isfinite(net.loss)
        and math.isfinite(sum(float(a.sum()) for _, _, a in net.parameters()))
    ):
        return
    if np.isfinite(net.loss) and all(np.isfinite(a).all() for _, _, a in net.parameters()):
        return  # the sum overflowed, the values are finite
    where = []
    for i, layer in enumerate(net.layers[1:], start=2):
        for name in ("featuremaps", "outputs", "er", "dK", "dW", "db", "K", "W", "b"):
            a = getattr(layer, name, None)
            if a is not None and not np.isfinite(a).all():
                where.append(f"layer {i} ({layer.type}, act {layer.act_func!r}): {name}")
                break
    detail = "; ".join(where) if where else "the loss"
    raise NonFiniteError(
        f"NaN/Inf in epoch {epoch}, minibatch {batch}: {detail} "
        f"(loss {net.loss}); try a smaller learning rate"
    )


class _LayerStep:
    """The readable step: ``ffcnn``, ``bpcnn``, then ``gradientdescentcnn``."""

    def __init__(self, net):
        self.net = net

    def compute(self, xb, yb):
        _forward(self.net, xb)
        bpcnn(self.net, yb)

    def apply(self):
        gradientdescentcnn(self.net)

    def parameter_check(self):
        return None  # not known: the checks look at the parameters

    def invalidate(self):
        pass


class _FusedStep:
    """The fused step (``cnn.fused``): two parallel loops per minibatch."""

    def __init__(self, net, batch_size):
        self.f = fused.FusedNet(net, batch_size)

    def compute(self, xb, yb):
        self.f.compute(xb, yb)  # also puts maps and errors on the layers (views)

    def apply(self):
        self.f.apply()  # also fills the exposed dK/dW/db

    def parameter_check(self):
        return self.f.parameter_check()  # from the last update: (finite, largest weight)

    def invalidate(self):
        self.f.invalidate()


def traincnn(
    net,
    x,
    y,
    no_of_epochs,
    batch_size,
    *,
    calc_last_layer_act_derivative=None,
    verbose=True,
    progress=False,
    callback=None,
    start_batch=0,
    step=None,
    divergence_guard=True,
):
    """Train with minibatch gradient descent (MATLAB ``traincnn``).

    Resolves ``loss_func='auto'`` and sets the flag, then, for each epoch,
    takes the minibatches in order (no shuffling) and runs ffcnn, bpcnn and
    gradientdescentcnn on each, appending the minibatch loss (measured before
    its update) to ``net.loss_array``.

    Parameters
    ----------
    net : CNN
    x : ndarray, shape (m, H, W) or (m, C, H, W)
    y : ndarray, shape (m, n_outputs)
    no_of_epochs : int
    batch_size : int
        Must divide m.
    calc_last_layer_act_derivative : bool or None
        ``None`` derives the flag as the original (0 for sigmoid/softmax with
        cross-entropy and for a ``none`` output, else 1); ``True``/``False``
        force it. The value used is stored on ``net``.
    verbose : bool
        Print the original's "training started..." and per-epoch elapsed time.
    progress : bool
        Show a progress bar per epoch (minibatch count, loss, ETA).
    callback : callable, optional
        ``callback(net, epoch, batch)`` after each minibatch's update (0-based
        epoch and batch); used for checkpoints.
    start_batch : int
        Global minibatch index to start from (resuming); earlier minibatches are
        skipped and ``net.loss_array`` is kept.
    step : {"fused", "layers"} or None
        ``"fused"``: the fused step of :mod:`cnn.fused` (two parallel loops per
        minibatch; networks it does not handle fall back to the layer path).
        ``"layers"``: the readable layer-by-layer path (``ffcnn``, ``bpcnn``,
        ``gradientdescentcnn``), the reference that a debugger steps through.
        ``None``: ``$CNN_STEP`` if set, else ``"fused"`` (the faster one; see
        ``STEP_ENV``). Both give the same
        parameters, loss and ``loss_array`` to round-off (1e-12) and are
        bit-identical for any thread count. After a fused minibatch the
        layers' maps, outputs, errors and gradients are views of the fused
        buffers (see :mod:`cnn.fused`).
    divergence_guard : bool
        Stop with :class:`cnn.guard.DivergenceError` (a ``NonFiniteError``) when
        the loss grows beyond ``cnn.guard.LOSS_GROWTH`` times its start or a
        weight beyond ``cnn.guard.WEIGHT_LIMIT``; ``False`` lets a run diverge
        (for studies that record divergence). NaN/Inf always stop a run.

    Returns
    -------
    CNN
        ``net`` itself, trained.
    """
    x = check_x(net, x)
    m = x.shape[0]
    y = check_y(net, y, m)
    no_of_epochs = _count(no_of_epochs, "no_of_epochs", allow_zero=True)
    batch_size = _count(batch_size, "batch_size")
    if m % batch_size != 0:
        raise ValueError(
            f"batch_size={batch_size} does not divide the number of examples "
            f"m={m} (the original requires an integer number of batches)"
        )
    step = _resolve_step(step)
    prepare_loss_and_flag(net, calc_last_layer_act_derivative)
    n_batches = m // batch_size
    if start_batch == 0:
        net.loss_array = []
    if verbose:
        print("training started...", flush=True)
    from .guard import DivergenceGuard  # guard.py builds on NonFiniteError from this module

    guard = DivergenceGuard(net) if divergence_guard else None
    with single_threaded_blas(), _workspace(net):
        if step == "fused" and fused.supports(net):
            stepper = _FusedStep(net, batch_size)
        else:
            stepper = _LayerStep(net)
        for epoch in range(no_of_epochs):
            first = max(0, start_batch - epoch * n_batches)
            if first >= n_batches:
                continue
            t0 = time.perf_counter()
            bar = _progress_bar(n_batches, first, epoch, no_of_epochs) if progress else None
            for j in range(first, n_batches):
                sl = slice(j * batch_size, (j + 1) * batch_size)
                stepper.compute(x[sl], y[sl])  # forward, loss, backward
                known = stepper.parameter_check()  # None, or (finite, largest weight)
                _check_finite(net, epoch + 1, j + 1, None if known is None else known[0])
                if guard is not None:
                    guard.check(net, epoch + 1, j + 1, None if known is None else known[1])
                stepper.apply()  # the update
                net.loss_array.append(net.loss)
                if bar is not None:
                    bar.set_postfix(loss=f"{net.loss:.4f}", refresh=False)
                    bar.update(1)
                if callback is not None:
                    callback(net, epoch, j)
                    stepper.invalidate()  # it may have changed the parameters in place
            if bar is not None:
                bar.close()
            if verbose:
                print(
                    f"epoch {epoch + 1}/{no_of_epochs}: {time.perf_counter() - t0:.1f} s",
                    flush=True,
                )
    return net


def _progress_bar(total, initial, epoch, epochs):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=f"epoch {epoch + 1}/{epochs}",
        unit="batch",
        file=sys.stderr,
        dynamic_ncols=True,
    )


def _count(value, name, allow_zero=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < (0 if allow_zero else 1):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '>= 1'}, got {value}")
    return int(value)


def _runtime_view(net):
    """A copy that shares the parameters but has its own runtime fields.

    ``testcnn``/``predictcnn`` run the forward pass on it, so, as in MATLAB
    (where they get the network by value), the caller's network is unchanged.
    """
    view = copy.copy(net)
    view.layers = [copy.copy(layer) for layer in net.layers]
    view._workspace = None  # its own arrays, never the caller's (e.g. in a traincnn callback)
    return view


def _outputs_in_chunks(net, x, chunk, step=None):
    """Last-layer outputs ``(N, n_outputs)`` of a forward pass over ``x`` in chunks.

    Every example is independent in the forward pass, so chunking only saves
    memory (and keeps each chunk's maps in cache).
    """
    step = _resolve_step(step)
    view = _runtime_view(net)
    out = None
    fnets = {}
    use_fused = step == "fused" and fused.supports_forward(view)
    with single_threaded_blas(), _workspace(view):
        for i in range(0, x.shape[0], chunk):
            xc = x[i : i + chunk]
            if use_fused:
                n = xc.shape[0]
                if n not in fnets:
                    fnets[n] = fused.FusedNet(view, n, train=False)
                o = fnets[n].forward(xc)
            else:
                _forward(view, xc)
                o = output_matrix(view)
            if out is None:
                out = np.empty((x.shape[0], o.shape[1]), dtype=o.dtype)
            out[i : i + chunk] = o
    return out


def predictcnn(net, x, *, chunk=500, step=None):
    """Predict (MATLAB ``predictcnn``): the largest output and its index per example.

    Parameters
    ----------
    net : CNN
    x : ndarray, shape (N, H, W) or (N, C, H, W)
    chunk : int
        Examples per forward pass (memory and cache use only; results do not
        depend on it). 500 was fastest for Example 3 (docs/performance.md).
    step : {"fused", "layers"} or None
        The forward pass to use, as in :func:`traincnn`; ``None``: ``$CNN_STEP``
        if set, else ``"fused"``.

    Returns
    -------
    a : ndarray, shape (N,)
        Largest output of each example.
    labels : ndarray of int, shape (N,)
        Its 0-based index (the original's 1-based ``l`` minus 1); ties go to
        the first.
    """
    x = check_x(net, x)
    o = _outputs_in_chunks(net, x, _count(chunk, "chunk"), step)
    labels = o.argmax(axis=1)
    return o[np.arange(o.shape[0]), labels], labels


def testcnn(net, x, y, *, chunk=500, verbose=False, step=None):
    """Error rate (MATLAB ``testcnn``): the fraction of examples whose largest
    output is not at the position of the largest target.

    Parameters
    ----------
    net : CNN
    x : ndarray, shape (N, H, W) or (N, C, H, W)
    y : ndarray, shape (N, n_outputs)
    chunk : int
        Examples per forward pass (memory and cache use only).
    step : {"fused", "layers"} or None
        The forward pass to use, as in :func:`traincnn`; ``None``: ``$CNN_STEP``
        if set, else ``"fused"``.
    verbose : bool
        Print "test error is" and the value, as the original.

    Returns
    -------
    float
    """
    x = check_x(net, x)
    y = check_y(net, y, x.shape[0])
    o = _outputs_in_chunks(net, x, _count(chunk, "chunk"), step)
    err = float(np.count_nonzero(o.argmax(axis=1) != y.argmax(axis=1)) / o.shape[0])
    if verbose:
        print(f"test error is\nerr = {err}")
    return err
