"""Forward pass (MATLAB ``ffcnn.m``).

The workspace, layout helpers and input checks live in :mod:`cnn.workspace`
(re-exported here for compatibility)."""

from __future__ import annotations

import numpy as np

from . import activations
from .backend import ops
from .workspace import (  # noqa: F401  (re-exported: other modules import them from here)
    Workspace,
    buffer,
    check_x,
    check_y,
    flatten_maps,
    output_matrix,
    unflatten_maps,
)


def ffcnn(net, x):
    """Forward pass (MATLAB ``ffcnn``): fill every layer's maps or outputs.

    Parameters
    ----------
    net : CNN
    x : ndarray, shape (N, H, W) or (N, C, H, W)

    Returns
    -------
    CNN
        ``net`` itself, with ``featuremaps (N, M, H, W)`` on input, conv and pool
        layers, ``outputs (N, n)`` on FC layers and on a map layer that feeds an
        FC layer, and ``z`` (pre-activation) on the last layer.
    """
    x = check_x(net, x)
    return _forward(net, x)


def _forward(net, x):
    """ffcnn without the input checks (``x`` already ``(N, C, H, W)``, right dtype).

    Results go into the network's workspace arrays while ``traincnn`` or
    ``testcnn`` runs (see :func:`buffer`), else into new arrays.
    """
    layers = net.layers
    layers[0].featuremaps = x  # cnn.layers{1}.featuremaps{1} = xx
    N = x.shape[0]
    last = len(layers) - 1
    for l in range(1, len(layers)):
        layer, below = layers[l], layers[l - 1]
        if layer.type == "c":
            # z_j = sum_k X_k (*) K_(j,k) + b(j); featuremaps{j} = f(z_j)
            shape = (N, layer.n_maps) + layer.map_shape
            z = ops().conv_valid(
                below.featuremaps, layer.K, layer.b, out=buffer(net, (l, "z"), shape)
            )
            if l == last:
                layer.z = z
                layer.featuremaps = activations.forward(
                    z, layer.act_func, out=buffer(net, (l, "fm"), shape)
                )
            else:  # z is not kept: f(z) overwrites it
                layer.z = None
                layer.featuremaps = activations.forward(z, layer.act_func, out=z)
        elif layer.type == "p":
            shape = (N, layer.n_maps) + layer.map_shape
            layer.featuremaps = ops().mean_pool(
                below.featuremaps, layer.rate, out=buffer(net, (l, "fm"), shape)
            )
        elif layer.type == "f":
            if below.type == "f":
                inp = below.outputs
            else:  # zz = [zz; reshape(fm{k}, H*W, N)]
                inp = flatten_maps(
                    below.featuremaps, out=buffer(net, (l - 1, "out"), (N, layer.n_inputs))
                )
                below.outputs = inp
            z = np.matmul(inp, layer.W.T, out=buffer(net, (l, "z"), (N, layer.n_nodes)))
            z += layer.b  # W*zz + repmat(b, 1, N)
            if l == last:
                layer.z = z
                layer.outputs = activations.forward(
                    z, layer.act_func, out=buffer(net, (l, "out"), z.shape)
                )
            else:
                layer.z = None
                layer.outputs = activations.forward(z, layer.act_func, out=z)
    return net
