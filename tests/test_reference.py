"""The passes on the readable kernels (``cnn.use_kernels("reference")``).

A whole ``ffcnn`` + ``bpcnn`` on ``cnn.reference`` gives the Numba result to
round-off, and the Octave fixtures at 1e-10 (faithful mode, defects included).
"""

import copy

import numpy as np
import pytest
from _golden import (
    FIXTURES,
    TRAINED,
    build,
    check_backward,
    check_forward,
    check_params,
    forced_flag,
    images,
    load,
    targets,
)
from _nets import build as build_net
from _nets import data

import cnn
from cnn import backend, kernels, reference

ROUND_OFF = 1e-12

SPECS = {
    "ex3-like": [("c", 3, 5, "sigm"), ("p", 2), ("c", 4, 3, "tanh"), ("p", 2), ("f", 5, "sigm")],
    "conv-last": [("c", 2, 3, "tanh"), ("p", 2), ("c", 3, (2, 3), "sigm")],
    "pool-last": [("c", 2, (3, 2), "rect"), ("p", 3)],
    "soft": [("c", 3, 3, "plus"), ("p", 2), ("f", 7, "tanh"), ("f", 4, "soft")],
}


def _grads(net):
    """Every array that ffcnn/bpcnn leaves on the layers, in order."""
    out = [net.loss]
    for layer in net.layers:
        for name in ("featuremaps", "outputs", "z", "er", "dK", "dW", "db"):
            v = getattr(layer, name, None)
            if v is not None:
                out.append(np.array(v, copy=True))
    return out


def _both(net, x, y):
    a, b = copy.deepcopy(net), copy.deepcopy(net)
    cnn.ffcnn(a, x)
    cnn.bpcnn(a, y)
    with cnn.use_kernels("reference"):
        assert backend.ops() is reference
        cnn.ffcnn(b, x)
        cnn.bpcnn(b, y)
    assert backend.ops() is kernels
    return _grads(a), _grads(b)


@pytest.mark.parametrize("mode", cnn.MODES)
@pytest.mark.parametrize("spec", sorted(SPECS))
def test_reference_passes_equal_numba(spec, mode):
    net = build_net(SPECS[spec], image=(16, 14), mode=mode, seed=3)
    x, y = data(net, n=5, seed=4)
    fast, slow = _both(net, x, y)
    assert len(fast) == len(slow) > 5
    for f, s in zip(fast, slow, strict=True):
        scale = max(1.0, float(np.max(np.abs(f))))
        np.testing.assert_allclose(s, f, rtol=ROUND_OFF, atol=ROUND_OFF * scale)


@pytest.mark.parametrize("name", FIXTURES)
def test_reference_forward_matches_octave(name):
    d = load(name)
    net = build(d)
    with cnn.use_kernels("reference"):
        cnn.ffcnn(net, images(d["x"]))
    check_forward(net, d)


@pytest.mark.parametrize("name", TRAINED)
def test_reference_backward_matches_octave(name):
    d = load(name)
    net = build(d)
    cnn.backward.prepare_loss_and_flag(net, forced_flag(d))
    with cnn.use_kernels("reference"):
        cnn.ffcnn(net, images(d["x"]))
        cnn.bpcnn(net, targets(d["y"]))
    check_backward(net, d)
    cnn.gradientdescentcnn(net)
    check_params(net, d, "1", "after one step")


def test_traincnn_on_reference_kernels_matches_numba():
    """traincnn (workspace buffers passed as out=) on the reference kernels, one epoch."""
    net = build_net(SPECS["ex3-like"], image=(16, 14), mode="faithful", seed=5)
    x, y = data(net, n=12, seed=6)
    a, b = copy.deepcopy(net), copy.deepcopy(net)
    cnn.traincnn(a, x, y, 1, 4, verbose=False)
    with cnn.use_kernels("reference"):
        cnn.traincnn(b, x, y, 1, 4, verbose=False)
    np.testing.assert_allclose(b.loss_array, a.loss_array, rtol=ROUND_OFF)
    for la, lb in zip(a.layers, b.layers, strict=True):
        for name in ("K", "W", "b"):
            if getattr(la, name, None) is not None:
                np.testing.assert_allclose(
                    getattr(lb, name), getattr(la, name), rtol=1e-10, atol=1e-14
                )


def test_use_kernels_restores_and_refuses_unknown_names():
    assert backend.active() == "numba"
    with pytest.raises(RuntimeError):
        with cnn.use_kernels("reference"):
            with cnn.use_kernels("numba"):
                assert backend.active() == "numba"
            assert backend.active() == "reference"
            raise RuntimeError("inside")
    assert backend.active() == "numba"
    with pytest.raises(ValueError, match="valid: numba, reference"):
        with cnn.use_kernels("torch"):
            pass


def test_reference_float32_stays_float32():
    x = np.random.default_rng(0).random((2, 3, 7, 6)).astype(np.float32)
    K = np.ones((4, 3, 2, 3), np.float32)
    for result in (
        reference.conv_valid(x, K),
        reference.mean_pool(x, 2),
        reference.conv_full(reference.conv_valid(x, K), K, flip=True),
        reference.kernel_grad(x, reference.conv_valid(x, K), (2, 3)),
        reference.map_sums(x),
        reference.act_forward(x, "sigm"),
    ):
        assert result.dtype == np.float32


def test_passes_and_traincnn_call_the_reference_kernels_when_asked(monkeypatch):
    """Under use_kernels("reference") every kernel call of ffcnn, bpcnn and traincnn goes to
    cnn.reference (a fused or compiled training path must step aside), and none otherwise."""
    calls = []
    for name in ("conv_valid", "conv_full", "kernel_grad", "map_sums", "mean_pool", "upsample"):
        real = getattr(reference, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(reference, name, spy)
    net = build_net(SPECS["ex3-like"], image=(16, 14), mode="faithful", seed=5)
    x, y = data(net, n=8, seed=6)
    cnn.traincnn(net.copy(), x, y, 1, 4, verbose=False)
    assert calls == []
    with cnn.use_kernels("reference"):
        cnn.traincnn(net, x, y, 1, 4, verbose=False)
    # two minibatches: conv_valid twice and mean_pool twice per forward pass, and so on
    for name, per_batch in (
        ("conv_valid", 2),
        ("mean_pool", 2),
        ("kernel_grad", 2),
        ("map_sums", 2),
        ("conv_full", 1),
        ("upsample", 2),
    ):
        assert calls.count(name) == 2 * per_batch, name
