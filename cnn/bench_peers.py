"""Peer implementations of "Example 3" for the speed benchmark (:mod:`cnn.bench`).

The benchmark times the ``cnn`` package (the Numba port of the MATLAB sample
CNN) against two *peers* that train exactly the same network:

* **PyTorch** (``TorchExample3``, ``torch_epoch_time``, ``torch_test_time``):
  ``nn.Conv2d`` / ``avg_pool2d`` / ``nn.Linear`` with plain ``torch.optim.SGD``
  (lr 0.01, no momentum) on ``binary_cross_entropy_with_logits(reduction='sum')/N``,
  in float64 or float32, with ``torch.set_num_threads(threads)``. This is what
  a user would get from an established framework on the same CPU.
* **Naive NumPy/SciPy** (``naive_epoch_time``, ``numpy_forward``,
  ``numpy_gradients``, ``naive_sgd_step``): the straightforward port a user
  might write without Numba -- Python loops over images and maps calling
  ``scipy.signal.correlate2d(..., 'valid')`` / ``convolve2d(..., 'full')``,
  reshapes for pooling, ``@`` for the dense layers. It is slow, so the
  benchmark times a few hundred images and extrapolates to 60,000.

Both peers compute the *correct* gradient (the MATLAB original flips the conv2
kernel wrongly in its backward pass; that quirk only matters for the numbers
the network learns, not for timing). Both start from ``make_params(seed)``,
which draws every K, W, b from U[-0.25, 0.25) except the conv biases (0), so
they can be checked against each other (``tests/test_bench_peers.py``).

Network (input x (N, 28, 28), targets y (N, 10) one-hot)::

    conv 10@9x9 (K1 (10,1,9,9), b1), leaky ReLU z*(0.01+0.99*(z>0))  -> 20x20
    mean pool 2                                                    -> 10x10
    conv 20@3x3 (K2 (20,10,3,3), b2), tanh                           -> 8x8
    mean pool 2                                                    -> 4x4
    flatten column-major: feature j*16 + c*4 + r (fm.transpose(0,1,3,2))
    dense 150 (W3 (150,320), b3), tanh
    dense 10 (W4 (10,150), b4), sigmoid
    loss = -sum(y log o + (1-y) log(1-o)) / N ; SGD lr 0.01, batch 50, in order

Use from :mod:`cnn.bench`::

    from cnn.bench_peers import torch_available, torch_epoch_time, naive_epoch_time
    if torch_available():
        r = torch_epoch_time(x, y, "float32", threads=2, n_images=6000)
        r["seconds_per_60k"]
    naive_epoch_time(x, y, n_images=500)["seconds_per_60k"]

Every ``*_epoch_time`` returns a dict with keys ``peer``, ``dtype``,
``threads``, ``batch_size``, ``seconds`` (measured), ``images`` (timed),
``seconds_per_60k`` (extrapolated) and ``loss`` (mean batch loss while timed).

Importing this module has no side effects; torch is imported lazily inside
functions (``TorchExample3`` is resolved on first attribute access).
"""

from __future__ import annotations

import time

import numpy as np

__all__ = [
    "BATCH_SIZE",
    "LEARNING_RATE",
    "PARAM_SHAPES",
    "build_torch_model",
    "make_params",
    "naive_epoch_time",
    "naive_sgd_step",
    "numpy_forward",
    "numpy_gradients",
    "numpy_loss",
    "random_data",
    "torch_available",
    "torch_epoch_time",
    "torch_gradients",
    "torch_sgd_step",
    "torch_test_time",
]

#: Parameter names and shapes of Example 3 (MATLAB layout: K is (M, P, kh, kw)).
PARAM_SHAPES = {
    "K1": (10, 1, 9, 9),
    "b1": (10,),
    "K2": (20, 10, 3, 3),
    "b2": (20,),
    "W3": (150, 320),
    "b3": (150,),
    "W4": (10, 150),
    "b4": (10,),
}
LEARNING_RATE = 0.01
BATCH_SIZE = 50
LEAK = 0.01


# --------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------
def torch_available() -> bool:
    """True when PyTorch can be imported."""
    try:
        import torch  # noqa: F401
    except Exception:  # ImportError, or a broken install
        return False
    return True


def make_params(seed: int = 0) -> dict:
    """Initial parameters (float64): U[-0.25, 0.25) except conv biases = 0.

    Drawn in the order K1, K2, W3, b3, W4, b4 from ``np.random.default_rng(seed)``.
    """
    rng = np.random.default_rng(seed)

    def u(shape):
        return rng.uniform(-0.25, 0.25, size=shape)

    p = {}
    p["K1"] = u(PARAM_SHAPES["K1"])
    p["b1"] = np.zeros(PARAM_SHAPES["b1"])
    p["K2"] = u(PARAM_SHAPES["K2"])
    p["b2"] = np.zeros(PARAM_SHAPES["b2"])
    p["W3"] = u(PARAM_SHAPES["W3"])
    p["b3"] = u(PARAM_SHAPES["b3"])
    p["W4"] = u(PARAM_SHAPES["W4"])
    p["b4"] = u(PARAM_SHAPES["b4"])
    return p


def random_data(n: int, seed: int = 0):
    """Random MNIST-shaped data: x (n, 28, 28) in [0, 1), y (n, 10) one-hot."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 28, 28))
    y = np.zeros((n, 10))
    y[np.arange(n), rng.integers(0, 10, size=n)] = 1.0
    return x, y


def _check_xy(x, y):
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(f"x must have shape (N, 28, 28), got {x.shape}")
    if y.shape != (x.shape[0], 10):
        raise ValueError(f"y must have shape ({x.shape[0]}, 10), got {y.shape}")
    return x, y


def _n_timed(n_images, n_available, batch_size):
    """Validate the number of images to time (a positive multiple of batch_size)."""
    if n_available < batch_size:
        raise ValueError(f"need at least one batch of {batch_size} images, got {n_available}")
    if n_images is None:
        n_images = (n_available // batch_size) * batch_size
    n_images = int(n_images)
    if n_images <= 0 or n_images % batch_size:
        raise ValueError(f"n_images must be a positive multiple of {batch_size}, got {n_images}")
    return n_images


def _batch_starts(n_batches, n_available, batch_size, first=0):
    """Start indices of consecutive batches, wrapping round the data if needed."""
    usable = (n_available // batch_size) * batch_size
    return [((first + b) * batch_size) % usable for b in range(n_batches)]


def _result(peer, dtype, threads, batch_size, seconds, images, loss):
    return {
        "peer": peer,
        "dtype": dtype,
        "threads": threads,
        "batch_size": batch_size,
        "seconds": float(seconds),
        "images": int(images),
        "seconds_per_60k": float(seconds) / images * 60000.0,
        "loss": float(loss),
    }


# --------------------------------------------------------------------------
# PyTorch peer
# --------------------------------------------------------------------------
_TORCH_CLASS = None


def _torch_dtype(dtype):
    import torch

    if dtype is None:
        return torch.float64
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float64, torch.float32):
            raise ValueError(f"dtype must be float64 or float32, got {dtype}")
        return dtype
    name = np.dtype(dtype).name  # accepts "float64", np.float32, ...
    if name == "float64":
        return torch.float64
    if name == "float32":
        return torch.float32
    raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")


def _torch_class():
    """Define (once) and return the ``TorchExample3`` nn.Module class."""
    global _TORCH_CLASS
    if _TORCH_CLASS is not None:
        return _TORCH_CLASS
    import torch
    import torch.nn.functional as F
    from torch import nn

    class TorchExample3(nn.Module):
        """Example 3 in PyTorch; ``forward`` returns the output *logits* (N, 10)."""

        def __init__(self, params=None, dtype=torch.float64, seed=0):
            super().__init__()
            dtype = _torch_dtype(dtype)
            self.conv1 = nn.Conv2d(1, 10, 9, dtype=dtype)
            self.conv2 = nn.Conv2d(10, 20, 3, dtype=dtype)
            self.fc3 = nn.Linear(320, 150, dtype=dtype)
            self.fc4 = nn.Linear(150, 10, dtype=dtype)
            self.load_params(make_params(seed) if params is None else params)

        _MAP = {
            "K1": "conv1.weight",
            "b1": "conv1.bias",
            "K2": "conv2.weight",
            "b2": "conv2.bias",
            "W3": "fc3.weight",
            "b3": "fc3.bias",
            "W4": "fc4.weight",
            "b4": "fc4.bias",
        }

        def load_params(self, params):
            """Copy a ``make_params``-style dict into the layers (no autograd)."""
            named = dict(self.named_parameters())
            with torch.no_grad():
                for k, tname in self._MAP.items():
                    t = named[tname]
                    t.copy_(torch.as_tensor(np.asarray(params[k]).reshape(t.shape)))
            return self

        def to_params(self):
            """Parameters as a dict of float64 numpy arrays (``make_params`` keys)."""
            named = dict(self.named_parameters())
            return {
                k: named[t].detach().to(torch.float64).numpy().copy() for k, t in self._MAP.items()
            }

        def grads(self):
            """Current ``.grad`` of every parameter, as float64 numpy arrays."""
            named = dict(self.named_parameters())
            return {
                k: named[t].grad.detach().to(torch.float64).numpy().copy()
                for k, t in self._MAP.items()
            }

        def forward(self, x):
            if x.dim() == 3:
                x = x.unsqueeze(1)  # (N, 28, 28) -> (N, 1, 28, 28)
            z = self.conv1(x)
            a = z * (LEAK + (1.0 - LEAK) * (z > 0).to(z.dtype))  # MATLAB `rect`
            a = F.avg_pool2d(a, 2)
            a = torch.tanh(self.conv2(a))
            a = F.avg_pool2d(a, 2)
            # MATLAB column-major flatten: index j*16 + c*4 + r
            a = a.transpose(2, 3).reshape(a.shape[0], -1)
            a = torch.tanh(self.fc3(a))
            return self.fc4(a)

        @staticmethod
        def loss(logits, y):
            """Batch-mean cross-entropy of sigmoid outputs (gradient (o - y)/N)."""
            return F.binary_cross_entropy_with_logits(logits, y, reduction="sum") / logits.shape[0]

    _TORCH_CLASS = TorchExample3
    return TorchExample3


def __getattr__(name):  # PEP 562: lazy ``TorchExample3`` so import stays torch-free
    if name == "TorchExample3":
        return _torch_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_torch_model(params=None, dtype="float64", seed=0):
    """A ``TorchExample3`` initialised from ``params`` (default ``make_params(seed)``)."""
    return _torch_class()(params=params, dtype=dtype, seed=seed)


def _torch_tensors(x, y, dtype):
    import torch

    x, y = _check_xy(x, y)
    tx = torch.as_tensor(np.ascontiguousarray(x)).to(dtype).unsqueeze(1).contiguous()
    ty = torch.as_tensor(np.ascontiguousarray(y)).to(dtype).contiguous()
    return tx, ty


class _threads:
    """Context manager: torch.set_num_threads(n), restored on exit."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        import torch

        self.old = torch.get_num_threads()
        if self.n is not None:
            torch.set_num_threads(int(self.n))
        return self

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.old)
        return False


def torch_gradients(params, x, y, dtype="float64") -> dict:
    """Gradients of the batch-mean loss w.r.t. every parameter (numpy float64)."""
    dt = _torch_dtype(dtype)
    model = build_torch_model(params, dt)
    tx, ty = _torch_tensors(x, y, dt)
    model.zero_grad()
    model.loss(model(tx), ty).backward()
    return model.grads()


def torch_sgd_step(params, x, y, lr=LEARNING_RATE, dtype="float64") -> dict:
    """One ``torch.optim.SGD`` step on the batch (x, y); returns the new params."""
    import torch

    dt = _torch_dtype(dtype)
    model = build_torch_model(params, dt)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.0)
    tx, ty = _torch_tensors(x, y, dt)
    opt.zero_grad()
    model.loss(model(tx), ty).backward()
    opt.step()
    return model.to_params()


def torch_epoch_time(
    x,
    y,
    dtype="float64",
    threads=2,
    n_images=None,
    batch_size=BATCH_SIZE,
    warmup_batches=3,
    lr=LEARNING_RATE,
    params=None,
    seed=0,
) -> dict:
    """Time PyTorch SGD training (batches in order, no shuffling).

    Runs ``warmup_batches`` untimed minibatches, resets the parameters to the
    initial ones, then times ``n_images`` images (a multiple of ``batch_size``;
    default: all whole batches of x; more than len(x) wraps round the data).
    Data are converted to tensors before timing.
    """
    import torch

    dt = _torch_dtype(dtype)
    n_images = _n_timed(n_images, len(x), batch_size)
    n_batches = n_images // batch_size
    p0 = make_params(seed) if params is None else params
    with _threads(threads):
        tx, ty = _torch_tensors(x, y, dt)
        model = build_torch_model(p0, dt)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.0)

        def step(s):
            xb = tx[s : s + batch_size]
            yb = ty[s : s + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = model.loss(model(xb), yb)
            loss.backward()
            opt.step()
            return loss.detach()

        for s in _batch_starts(warmup_batches, len(x), batch_size):
            step(s)
        model.load_params(p0)
        starts = _batch_starts(n_batches, len(x), batch_size)
        total = torch.zeros((), dtype=dt)
        t0 = time.perf_counter()
        for s in starts:
            total += step(s)
        seconds = time.perf_counter() - t0
        used = torch.get_num_threads()
    return _result(
        "torch",
        str(dt).replace("torch.", ""),
        used,
        batch_size,
        seconds,
        n_images,
        float(total) / n_batches,
    )


def torch_test_time(
    x, y, dtype="float64", threads=2, batch_size=1000, params=None, seed=0, model=None
) -> dict:
    """Time a forward pass over x (no grad) and its classification error.

    Uses ``model`` if given, else a fresh one from ``params``/``make_params(seed)``.
    Returns ``peer, dtype, threads, batch_size, seconds, images, error,
    seconds_per_10k``.
    """
    import torch

    dt = _torch_dtype(dtype)
    with _threads(threads):
        tx, ty = _torch_tensors(x, y, dt)
        if model is None:
            model = build_torch_model(params, dt, seed=seed)
        n = tx.shape[0]
        wrong = 0
        with torch.no_grad():
            model(tx[: min(batch_size, n)])  # warm-up
            t0 = time.perf_counter()
            for s in range(0, n, batch_size):
                o = torch.sigmoid(model(tx[s : s + batch_size]))
                wrong += int((o.argmax(1) != ty[s : s + batch_size].argmax(1)).sum())
            seconds = time.perf_counter() - t0
        used = torch.get_num_threads()
    return {
        "peer": "torch",
        "dtype": str(dt).replace("torch.", ""),
        "threads": used,
        "batch_size": batch_size,
        "seconds": float(seconds),
        "images": int(n),
        "error": wrong / n,
        "seconds_per_10k": float(seconds) / n * 10000.0,
    }


# --------------------------------------------------------------------------
# naive NumPy/SciPy peer
# --------------------------------------------------------------------------
def _rect(z):
    return z * (LEAK + (1.0 - LEAK) * (z > 0))


def _rect_deriv(z):
    return LEAK + (1.0 - LEAK) * (z > 0)


def _pool(a):
    n, m, h, w = a.shape
    return a.reshape(n, m, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def _unpool(d):
    # each input of a 2x2 mean window gets 1/4 of the window's gradient
    return np.repeat(np.repeat(d, 2, axis=2), 2, axis=3) * 0.25


def _conv_forward(a, K, b):
    """z[n, j] = b[j] + sum_i correlate2d(a[n, i], K[j, i], 'valid')."""
    from scipy.signal import correlate2d

    n_img, n_in, h, w = a.shape
    m, _, kh, kw = K.shape
    z = np.empty((n_img, m, h - kh + 1, w - kw + 1))
    for n in range(n_img):
        for j in range(m):
            acc = correlate2d(a[n, 0], K[j, 0], mode="valid")
            for i in range(1, n_in):
                acc += correlate2d(a[n, i], K[j, i], mode="valid")
            z[n, j] = acc + b[j]
    return z


def _conv_kernel_grad(a, d, kshape):
    """dK[j, i] = sum_n correlate2d(a[n, i], d[n, j], 'valid'); db[j] = sum d[:, j]."""
    from scipy.signal import correlate2d

    n_img, n_in = a.shape[:2]
    m = d.shape[1]
    gK = np.zeros(kshape)
    for n in range(n_img):
        for j in range(m):
            for i in range(n_in):
                gK[j, i] += correlate2d(a[n, i], d[n, j], mode="valid")
    return gK, d.sum(axis=(0, 2, 3))


def _conv_input_grad(d, K):
    """da[n, i] = sum_j convolve2d(d[n, j], K[j, i], 'full')."""
    from scipy.signal import convolve2d

    n_img, m, h, w = d.shape
    _, n_in, kh, kw = K.shape
    da = np.empty((n_img, n_in, h + kh - 1, w + kw - 1))
    for n in range(n_img):
        for i in range(n_in):
            acc = convolve2d(d[n, 0], K[0, i], mode="full")
            for j in range(1, m):
                acc += convolve2d(d[n, j], K[j, i], mode="full")
            da[n, i] = acc
    return da


def _forward_cache(p, x):
    a0 = np.asarray(x, dtype=np.float64)[:, None]  # (N, 1, 28, 28)
    z1 = _conv_forward(a0, p["K1"], p["b1"])
    a1 = _rect(z1)
    s1 = _pool(a1)
    a2 = np.tanh(_conv_forward(s1, p["K2"], p["b2"]))
    s2 = _pool(a2)
    f = s2.transpose(0, 1, 3, 2).reshape(len(a0), -1)  # MATLAB column-major
    a3 = np.tanh(f @ p["W3"].T + p["b3"])
    z4 = a3 @ p["W4"].T + p["b4"]
    return dict(a0=a0, z1=z1, s1=s1, a2=a2, s2=s2, f=f, a3=a3, z4=z4)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


def _bce_from_logits(z, y):
    # -sum(y log o + (1-y) log(1-o)) / N with o = sigmoid(z), numerically safe
    return float(np.sum(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))) / len(z)


def numpy_forward(params, x):
    """Network outputs o = sigmoid(z4), shape (N, 10)."""
    return _sigmoid(_forward_cache(params, x)["z4"])


def numpy_loss(params, x, y) -> float:
    """Batch-mean cross-entropy -sum(y log o + (1-y) log(1-o)) / N."""
    return _bce_from_logits(_forward_cache(params, x)["z4"], np.asarray(y, dtype=np.float64))


def _numpy_loss_and_grads(p, x, y):
    y = np.asarray(y, dtype=np.float64)
    c = _forward_cache(p, x)
    n = len(y)
    g = {}
    d4 = (_sigmoid(c["z4"]) - y) / n  # (N, 10)
    g["W4"] = d4.T @ c["a3"]
    g["b4"] = d4.sum(axis=0)
    d3 = (d4 @ p["W4"]) * (1.0 - c["a3"] ** 2)  # (N, 150)
    g["W3"] = d3.T @ c["f"]
    g["b3"] = d3.sum(axis=0)
    ds2 = (d3 @ p["W3"]).reshape(c["s2"].shape[0], 20, 4, 4).transpose(0, 1, 3, 2)
    d2 = _unpool(ds2) * (1.0 - c["a2"] ** 2)  # (N, 20, 8, 8)
    g["K2"], g["b2"] = _conv_kernel_grad(c["s1"], d2, p["K2"].shape)
    ds1 = _conv_input_grad(d2, p["K2"])  # (N, 10, 10, 10)
    d1 = _unpool(ds1) * _rect_deriv(c["z1"])  # (N, 10, 20, 20)
    g["K1"], g["b1"] = _conv_kernel_grad(c["a0"], d1, p["K1"].shape)
    loss = _bce_from_logits(c["z4"], y)
    return loss, {k: g[k] for k in PARAM_SHAPES}


def numpy_gradients(params, x, y) -> dict:
    """Gradients of ``numpy_loss`` w.r.t. every parameter (naive NumPy/SciPy port)."""
    return _numpy_loss_and_grads(params, x, y)[1]


def naive_sgd_step(params, x, y, lr=LEARNING_RATE) -> dict:
    """One plain SGD step of the naive port; returns new params (input untouched)."""
    g = numpy_gradients(params, x, y)
    return {k: np.asarray(params[k], dtype=np.float64) - lr * g[k] for k in PARAM_SHAPES}


def naive_epoch_time(
    x,
    y,
    n_images=500,
    batch_size=BATCH_SIZE,
    warmup_batches=1,
    lr=LEARNING_RATE,
    params=None,
    seed=0,
) -> dict:
    """Time the naive NumPy/SciPy port's SGD training on ``n_images`` images.

    It is slow (seconds per batch), so the default times 500 images and
    ``seconds_per_60k`` extrapolates. ``n_images=None`` times all whole
    batches of x; more than len(x) wraps round the data. Float64 only, single
    Python thread (SciPy's 2-D convolutions do not use threads).
    """
    x, y = _check_xy(x, y)
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    n_images = _n_timed(n_images, len(x), batch_size)
    n_batches = n_images // batch_size
    p = {
        k: np.array(v, dtype=np.float64)
        for k, v in (make_params(seed) if params is None else params).items()
    }
    for s in _batch_starts(warmup_batches, len(x), batch_size):
        numpy_gradients(p, x[s : s + batch_size], y[s : s + batch_size])  # untimed
    total = 0.0
    t0 = time.perf_counter()
    for s in _batch_starts(n_batches, len(x), batch_size):
        loss, g = _numpy_loss_and_grads(p, x[s : s + batch_size], y[s : s + batch_size])
        for k in p:
            p[k] -= lr * g[k]
        total += loss
    seconds = time.perf_counter() - t0
    return _result(
        "numpy-scipy-naive", "float64", 1, batch_size, seconds, n_images, total / n_batches
    )


if __name__ == "__main__":  # quick manual check: python -m cnn.bench_peers
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torch-images", type=int, default=6000)
    ap.add_argument("--naive-images", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    xs, ys = random_data(max(args.torch_images, args.naive_images, 1000), seed=1)
    if torch_available():
        for dt in ("float64", "float32"):
            r = torch_epoch_time(xs, ys, dt, threads=args.threads, n_images=args.torch_images)
            t = torch_test_time(xs[:1000], ys[:1000], dt, threads=args.threads)
            print(
                f"torch {dt:7s} {r['threads']} thr: {r['seconds']:.2f} s / {r['images']} img"
                f" -> {r['seconds_per_60k']:.1f} s per 60k;"
                f" test {t['seconds_per_10k']:.3f} s per 10k"
            )
    else:
        print("torch not installed")
    r = naive_epoch_time(xs, ys, n_images=args.naive_images)
    print(
        f"naive numpy/scipy: {r['seconds']:.2f} s / {r['images']} img"
        f" -> {r['seconds_per_60k']:.1f} s per 60k"
    )
