"""float32 mode: trains, stays float32 end to end, agrees with float64 to ~1e-4."""

import warnings

import numpy as np
import pytest
from _nets import build

import cnn

RUNTIME = ("featuremaps", "outputs", "er", "z", "dK", "dW", "db")
PARAMS = ("K", "W", "b")

SPECS = {
    "example3-like": [
        ("c", 4, 5, "rect"),
        ("p", 2),
        ("c", 6, 3, "tanh"),
        ("p", 2),
        ("f", 12, "tanh"),
        ("f", 3, "sigm"),
    ],
    "other-activations": [
        ("c", 3, (3, 2), "plus"),
        ("p", 2),
        ("c", 5, 2, "sigm"),
        ("f", 7, "none"),
        ("f", 4, "soft"),
    ],
    "conv-last": [("c", 3, 3, "tanh"), ("p", 2), ("c", 2, 3, "sigm")],
}


def _build(spec, dtype, mode="faithful", loss="auto"):
    return build(spec, (16, 14), mode=mode, loss=loss, seed=3, lr=0.1, dtype=dtype)


def _data(net, n=20, seed=4):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 16, 14))
    y = np.eye(net.n_outputs)[rng.integers(0, net.n_outputs, n)]
    return x, y  # float64 on purpose: traincnn converts to the network's dtype


def _arrays(net, names):
    for i, layer in enumerate(net.layers):
        for name in names:
            a = getattr(layer, name, None)
            if a is not None:
                yield f"layer {i + 1} ({layer.type}) {name}", a


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("mode", ["faithful", "corrected"])
def test_float32_stays_float32(name, mode):
    loss = "quad" if name == "conv-last" else "auto"
    net = _build(SPECS[name], np.float32, mode, loss)
    x, y = _data(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings, no casting warnings
        cnn.traincnn(net, x, y, 2, 5, verbose=False)
        seen = dict(_arrays(net, RUNTIME + PARAMS))
        assert {"featuremaps", "er", "K", "dK"} <= {k.split()[-1] for k in seen}
        for what, a in seen.items():
            assert a.dtype == np.float32, f"{what} is {a.dtype}"
        assert all(np.isfinite(v) for v in net.loss_array)
        cnn.ffcnn(net, x)  # the public passes (no workspace) too
        cnn.bpcnn(net, y)
        for what, a in _arrays(net, RUNTIME + PARAMS):
            assert a.dtype == np.float32, f"ffcnn/bpcnn: {what} is {a.dtype}"
        a, labels = cnn.predictcnn(net, x)
        assert a.dtype == np.float32 and labels.shape == (len(x),)
        assert 0.0 <= cnn.testcnn(net, x, y) <= 1.0


@pytest.mark.parametrize("name", sorted(SPECS))
def test_float32_agrees_with_float64(name):
    loss = "quad" if name == "conv-last" else "auto"
    nets = {dt: _build(SPECS[name], dt, "corrected", loss) for dt in (np.float32, np.float64)}
    x, y = _data(nets[np.float64])
    for net in nets.values():
        cnn.traincnn(net, x, y, 1, 5, verbose=False)  # 4 steps
    p32 = dict(_arrays(nets[np.float32], PARAMS))
    p64 = dict(_arrays(nets[np.float64], PARAMS))
    for what, a in p64.items():
        b = p32[what].astype(np.float64)
        assert np.abs(b - a).max() <= 1e-4 * max(np.abs(a).max(), 1e-3), what
    np.testing.assert_allclose(nets[np.float32].loss_array, nets[np.float64].loss_array, rtol=1e-4)


def test_example_network_float32_minibatch():
    """Example 3 at batch 50 (the benchmarked network) in float32."""
    net32 = cnn.example_network(3, seed=0, dtype=np.float32)
    net64 = cnn.example_network(3, seed=0)
    rng = np.random.default_rng(0)
    x = rng.random((100, 28, 28))
    y = np.eye(10)[rng.integers(0, 10, 100)]
    cnn.traincnn(net32, x, y, 1, 50, verbose=False)
    cnn.traincnn(net64, x, y, 1, 50, verbose=False)
    for (_, name, a), (_, _, b) in zip(net32.parameters(), net64.parameters()):
        assert a.dtype == np.float32
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max(), name
    assert net32.layers[1].featuremaps.dtype == np.float32
