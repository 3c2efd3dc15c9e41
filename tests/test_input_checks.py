"""Inputs that would train silently on nonsense are refused (issue 12: data you can trust)."""

import numpy as np
import pytest

import cnn


def _net(last="sigm"):
    net = cnn.initcnn((8, 8), seed=0)
    cnn.add_conv_layer(net, 2, 3, "tanh")
    cnn.add_pool_layer(net, 2)
    cnn.add_fc_layer(net, 3, last)
    return net


def _data(n=4):
    rng = np.random.default_rng(0)
    return rng.random((n, 8, 8)), np.eye(3)[rng.integers(0, 3, n)]


def test_raw_uint8_pixels_are_refused_with_the_fix():
    net = _net()
    x, y = _data()
    raw = (x * 255).astype(np.uint8)
    raw[0, 0, 0] = 255
    for call in (
        lambda: cnn.traincnn(net, raw, y, 1, 2, verbose=False),
        lambda: cnn.testcnn(net, raw, y),
        lambda: cnn.predictcnn(net, raw),
    ):
        with pytest.raises(ValueError, match=r"integers from \d+ to 255 .*x / 255"):
            call()


def test_integer_images_in_0_1_and_float_images_are_accepted():
    net = _net()
    x, y = _data()
    cnn.traincnn(net, (x > 0.5).astype(np.uint8), y, 1, 2, verbose=False)
    cnn.traincnn(net, x * 3.0, y, 1, 2, verbose=False)  # floats: the user's scaling


@pytest.mark.parametrize("last", ["sigm", "soft"])
def test_targets_outside_0_1_refused_for_sigmoid_and_softmax(last):
    net = _net(last)
    x, y = _data()
    labels = np.tile(np.arange(3.0), (4, 1))  # 0, 1, 2: labels instead of one-hot rows
    with pytest.raises(ValueError, match=rf"values from 0 to 2, but a '{last}' output"):
        cnn.traincnn(net, x, labels, 1, 2, verbose=False)
    with pytest.raises(ValueError, match="lies in"):
        cnn.testcnn(net, x, -y)


def test_targets_outside_0_1_allowed_for_a_linear_output():
    net = _net("none")
    x, y = _data()
    cnn.traincnn(net, x, 2 * y - 1, 1, 2, verbose=False)
    assert np.isfinite(net.loss_array).all()
