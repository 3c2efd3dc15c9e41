"""The small networks shared by ``cnn gradcheck`` and ``cnn step --net``.

Each entry of :data:`GRADCHECK_NETS` is a network small enough to check every
gradient numerically, chosen to show one behaviour of the original (D1-D4 of
``docs/backprop.md``). :func:`gradcheck_network` builds one with random data.
"""

from __future__ import annotations

import numpy as np

from . import network

GRADCHECK_NETS = {
    "small": (
        "c(tanh 2 maps 3x3)-p2-f(tanh 6)-f(sigm 3) on 8x8",
        (8, 8),
        [("c", 2, 3, "tanh"), ("p", 2), ("f", 6, "tanh"), ("f", 3, "sigm")],
    ),
    "c2": (
        "two conv layers, c(tanh 2, 3x3)-p2-c(tanh 3, 2x2)-p2-f(tanh 6)-f(sigm 3) on 12x12 "
        "(D1: faithful fails on the lower conv layer)",
        (12, 12),
        [
            ("c", 2, 3, "tanh"),
            ("p", 2),
            ("c", 3, 2, "tanh"),
            ("p", 2),
            ("f", 6, "tanh"),
            ("f", 3, "sigm"),
        ],
    ),
    "none-hidden": (
        "c(sigm 2, 3x3)-p2-f(none 5)-f(sigm 3) on 8x8 (D2: hidden 'none')",
        (8, 8),
        [("c", 2, 3, "sigm"), ("p", 2), ("f", 5, "none"), ("f", 3, "sigm")],
    ),
    "none-conv": (
        "c(none 2, 3x3)-p2-f(sigm 3) on 8x8 (D2 in a conv layer)",
        (8, 8),
        [("c", 2, 3, "none"), ("p", 2), ("f", 3, "sigm")],
    ),
    "conv-last": ("c(sigm 2, 3x3) on 6x6, the conv layer last (D3)", (6, 6), [("c", 2, 3, "sigm")]),
    "pool-last": (
        "c(sigm 2, 3x3)-p2 on 8x8, the pool layer last (D4)",
        (8, 8),
        [("c", 2, 3, "sigm"), ("p", 2)],
    ),
    "original": (
        "c(plus 3, 5x5)-p2-f(tanh 15)-f(soft 6) on 10x10, the network of "
        "Example_gradientchecking_CNN.m",
        (10, 10),
        [("c", 3, 5, "plus"), ("p", 2), ("f", 15, "tanh"), ("f", 6, "soft")],
    ),
    "fc-only": ("f(tanh 6)-f(sigm 3) on 4x4", (4, 4), [("f", 6, "tanh"), ("f", 3, "sigm")]),
}
"""``--net`` choices of ``gradcheck`` and ``step``: name -> (description, image size
(H, W), layer specs ``("c", maps, kernel, act)``, ``("p", scale)``, ``("f", units, act)``)."""


def gradcheck_network(name, *, mode="faithful", loss="auto", seed=0, n=4):
    """The network and random data of ``cnn gradcheck --net NAME``.

    Parameters
    ----------
    name : str
        A key of :data:`GRADCHECK_NETS`.
    mode : {"faithful", "corrected"}
    loss : {"auto", "quad", "cros"}
    seed : int
        Seed of the weights; the data use ``seed + 1``.
    n : int
        Examples in the batch.

    Returns
    -------
    net : CNN
    x : ndarray, shape (n, H, W), uniform [0, 1)
    y : ndarray, shape (n, n_outputs), one-hot
    """
    _, size, spec = GRADCHECK_NETS[name]
    net = network.initcnn(size, 0.1, mode=mode, seed=seed)
    for s in spec:
        if s[0] == "c":
            network.add_conv_layer(net, s[1], s[2], s[3])
        elif s[0] == "p":
            network.add_pool_layer(net, s[1])
        else:
            network.add_fc_layer(net, s[1], s[2])
    net.loss_func = loss
    rng = np.random.default_rng(seed + 1)
    x = rng.random((n,) + tuple(size))
    y = np.eye(net.n_outputs)[rng.integers(0, net.n_outputs, n)]
    return net, x, y
