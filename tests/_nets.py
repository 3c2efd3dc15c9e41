"""Small networks for gradient and error tests, built from a compact spec."""

import numpy as np

import cnn


def build(spec, image=(8, 8), *, mode="corrected", loss="auto", seed=0, lr=0.1, dtype=np.float64):
    """Build a network from a list of layer specs.

    ``("c", maps, kernel, act)``, ``("p", rate)``, ``("f", nodes, act)``.
    """
    net = cnn.initcnn(image, lr, mode=mode, seed=seed, dtype=dtype)
    for s in spec:
        if s[0] == "c":
            cnn.add_conv_layer(net, s[1], s[2], s[3])
        elif s[0] == "p":
            cnn.add_pool_layer(net, s[1])
        else:
            cnn.add_fc_layer(net, s[1], s[2])
    net.loss_func = loss
    return net


def data(net, n=4, seed=1, one_hot=True):
    """Random inputs in [0, 1) and targets for ``net``: one-hot or uniform (0, 1)."""
    rng = np.random.default_rng(seed)
    C, H, W = net.input_shape
    x = rng.random((n, C, H, W)) if C > 1 else rng.random((n, H, W))
    k = net.n_outputs
    if one_hot:
        y = np.eye(k)[rng.integers(0, k, n)]
    else:
        y = rng.random((n, k))
    return x, y
