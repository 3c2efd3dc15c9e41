"""Backward pass (MATLAB ``bpcnn.m``), the losses and the CalcLastLayerActDerivative flag.

Read :func:`bpcnn` next to the MATLAB file: the last layer first, then one loop
from the layer below it down to layer 2. Each defect of the original (D1-D4 in
``docs/backprop.md``) is one ``if net.mode == "faithful"`` branch next to the
correct formula.
"""

from __future__ import annotations

import numpy as np

from . import activations
from .backend import ops
from .network import LOSSES
from .workspace import buffer, check_y, flatten_maps, output_matrix, unflatten_maps

# --------------------------------------------------------------------------- losses and flag


def resolve_loss(loss_func, last_act):
    """Replace ``'auto'`` by the loss the original's ``traincnn`` picks.

    ``'cros'`` (cross-entropy) for a sigmoid output, ``'quad'`` otherwise.
    """
    if loss_func not in LOSSES:
        raise ValueError(f"loss_func={loss_func!r} is not valid; valid: {', '.join(LOSSES)}")
    if loss_func == "auto":
        return "cros" if last_act == "sigm" else "quad"
    return loss_func


def derive_flag(loss_func, last_act):
    """CalcLastLayerActDerivative as the original ``traincnn`` derives it.

    1, except 0 for cross-entropy with a ``sigm``/``soft`` output and 0 for a
    ``none`` output.

    Parameters
    ----------
    loss_func : {"quad", "cros"}
        The resolved loss (see :func:`resolve_loss`).
    last_act : str
        Activation of the last layer.

    Returns
    -------
    bool
    """
    flag = True
    if loss_func == "cros" and last_act in ("soft", "sigm"):
        flag = False
    if last_act == "none":
        flag = False
    return flag


def check_loss(loss_func, last_act):
    """Raise ``ValueError`` for a loss the network's output cannot have.

    Cross-entropy needs outputs in (0, 1): a ``sigm`` output (binary
    cross-entropy, as the original) or a ``soft`` output (categorical
    cross-entropy; the original stops here, defect D8).
    """
    if loss_func == "cros" and last_act not in ("sigm", "soft"):
        raise ValueError(
            f"loss_func='cros' needs a 'sigm' or 'soft' last layer, "
            f"not {last_act!r}; use loss_func='quad'"
        )


def prepare_loss_and_flag(net, flag=None):
    """Resolve ``net.loss_func`` and set ``net.calc_last_layer_act_derivative``.

    ``flag=None`` derives the flag as ``traincnn`` does; ``True``/``False``
    force it. Returns ``(loss_func, flag)``.
    """
    last_act = net.layers[-1].act_func
    net.loss_func = resolve_loss(net.loss_func, last_act)
    check_loss(net.loss_func, last_act)
    if flag is None:
        flag = derive_flag(net.loss_func, last_act)
    elif not isinstance(flag, (bool, np.bool_, int)) or flag not in (0, 1):
        raise TypeError(f"calc_last_layer_act_derivative must be None, True or False, got {flag!r}")
    net.calc_last_layer_act_derivative = bool(flag)
    return net.loss_func, net.calc_last_layer_act_derivative


def _log_outputs(net):
    """``log(o)`` and ``log(1 - o)`` of the last layer's outputs, from its pre-activation.

    Exact identities (``log sigmoid(z) = -softplus(-z)``, log-softmax), so the
    loss is finite wherever the original takes ``log(0)`` (D9).
    """
    last = net.layers[-1]
    z = last.z
    if last.act_func == "sigm":
        log_o = -np.logaddexp(0.0, -z)
        log_1mo = -np.logaddexp(0.0, z)
    else:  # softmax over axis 1 (nodes, or maps at each position)
        m = z.max(axis=1, keepdims=True)
        log_o = z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))
        log_1mo = None
    if last.type != "f":
        log_o = flatten_maps(log_o)
        log_1mo = None if log_1mo is None else flatten_maps(log_1mo)
    return log_o, log_1mo


def compute_loss(net, y):
    """The loss of the current forward pass (the value ``bpcnn`` stores in ``cnn.loss``).

    * ``quad``: ``sum((o - y)^2) / (2N)``
    * ``cros`` with ``sigm``: ``-sum(y log o + (1 - y) log(1 - o)) / N``
    * ``cros`` with ``soft``: ``-sum(y log o) / N`` (categorical; D8)

    Parameters
    ----------
    net : CNN
        After :func:`~cnn.forward.ffcnn`, with ``net.loss_func`` resolved.
    y : ndarray, shape (N, n_outputs)

    Returns
    -------
    float
    """
    o = output_matrix(net)
    N = o.shape[0]
    if net.loss_func == "cros":
        log_o, log_1mo = _log_outputs(net)
        if log_1mo is None:
            return float(-(y * log_o).sum() / N)
        return float(-(y * log_o + (1.0 - y) * log_1mo).sum() / N)
    return float(((o - y) ** 2).sum() / (2 * N))


# --------------------------------------------------------------------------- backward pass


def bpcnn(net, y):
    """Backward pass (MATLAB ``bpcnn``): errors and gradients of every layer.

    The output error is ``e = o - y``; when the flag
    (``net.calc_last_layer_act_derivative``) is on, it is multiplied by the
    output activation's derivative. A network with no flag yet gets the one
    ``traincnn`` would derive (the original stops with an error instead).

    Parameters
    ----------
    net : CNN
        After :func:`~cnn.forward.ffcnn` on the batch that ``y`` belongs to.
    y : ndarray, shape (N, n_outputs)
        Targets, one row per example.

    Returns
    -------
    CNN
        ``net`` itself, with ``net.loss`` and, per layer, ``er`` (error w.r.t.
        the pre-activation; a pool layer's is w.r.t. its input), ``dK``/``dW``
        and ``db`` averaged over the batch.
    """
    layers = net.layers
    last = layers[-1]
    if last.featuremaps is None and last.outputs is None:
        raise ValueError("bpcnn needs a forward pass first: call ffcnn(net, x)")
    if net.calc_last_layer_act_derivative is None or net.loss_func == "auto":
        prepare_loss_and_flag(net, net.calc_last_layer_act_derivative)
    o = output_matrix(net)  # cnn.layers{end}.outputs
    N = o.shape[0]
    y = check_y(net, y, N)
    faithful = net.mode == "faithful"

    # ---- loss and output error
    if last.type != "f":
        last.outputs = o
    net.loss = compute_loss(net, y)  # cnn.loss
    e = o - y  # er = outputs - yy
    if net.calc_last_layer_act_derivative:  # if cnn.CalcLastLayerActDerivative == 1
        if last.type == "f" or faithful:
            e = activations.backward(o, last.act_func, e, net.mode)
        else:  # corrected: a conv softmax normalises over maps, so apply it per position
            shape = (last.n_maps,) + last.map_shape
            e = flatten_maps(
                activations.backward(
                    last.featuremaps, last.act_func, unflatten_maps(e, shape), net.mode
                )
            )

    # ---- the last layer
    below = layers[-2]
    if last.type == "f":
        last.er = e
        last.dW = np.matmul(
            e.T,
            _inputs_of(net, len(layers) - 1),
            out=buffer(net, (len(layers) - 1, "dW"), last.W.shape),
        )
        last.dW /= N
        last.db = e.mean(axis=0)
    elif last.type == "p":
        g = unflatten_maps(e, (last.n_maps,) + last.map_shape)
        # D4: the original does not divide by r^2 when the pool layer is last
        last.er = ops().upsample(g, last.rate, below.map_shape, divide=not faithful)
    else:  # conv last
        last.er = unflatten_maps(e, (last.n_maps,) + last.map_shape)
        kshape = (last.kernel_height, last.kernel_width)
        if faithful:
            # D3: example n paired with the error of example N+1-n, and no 1/N
            last.dK = ops().kernel_grad(below.featuremaps, last.er[::-1], kshape)
        else:
            last.dK = ops().kernel_grad(below.featuremaps, last.er, kshape) / N
        last.db = ops().map_sums(last.er) / N  # sum(er{j}(:)) / N

    # ---- the other layers, from the top down (for i = no_of_layers-1 : -1 : 1)
    for l in range(len(layers) - 2, 0, -1):
        layer = layers[l]
        if layer.type == "f":
            g = layers[l + 1].er @ layers[l + 1].W  # W{i+1}' * er{i+1}
            layer.er = activations.backward(layer.outputs, layer.act_func, g, net.mode, out=g)
            layer.dW = np.matmul(
                layer.er.T, _inputs_of(net, l), out=buffer(net, (l, "dW"), layer.W.shape)
            )
            layer.dW /= N
            layer.db = layer.er.mean(axis=0)
        elif layer.type == "p":
            g = _error_at_outputs(net, l)
            below_maps = (N, layer.n_maps) + layers[l - 1].map_shape
            layer.er = ops().upsample(
                g,
                layer.rate,
                layers[l - 1].map_shape,  # ./ (r*r)
                out=buffer(net, (l, "er"), below_maps),
            )
        elif layer.type == "c":
            g = _error_at_outputs(net, l)
            maps = (N, layer.n_maps) + layer.map_shape
            layer.er = activations.backward(
                layer.featuremaps, layer.act_func, g, net.mode, out=buffer(net, (l, "er"), maps)
            )
            kshape = (layer.kernel_height, layer.kernel_width)
            layer.dK = ops().kernel_grad(
                layers[l - 1].featuremaps,
                layer.er,
                kshape,
                out=buffer(net, (l, "dK"), layer.K.shape),
            )
            layer.dK /= N
            layer.db = ops().map_sums(layer.er) / N
    return net


def _inputs_of(net, l):
    """What FC layer ``l`` multiplies by ``W``: the layer below's outputs (flattened maps)."""
    below = net.layers[l - 1]
    if below.outputs is None:  # a map layer feeding an FC layer gets them in ffcnn
        below.outputs = flatten_maps(below.featuremaps)
    return below.outputs


def _error_at_outputs(net, l):
    """Error w.r.t. the output maps of map layer ``l``, from the layer above it.

    Returns
    -------
    ndarray, shape (N, M, H, W) of layer ``l``'s maps.
    """
    layer, above = net.layers[l], net.layers[l + 1]
    maps = (above.er.shape[0], layer.n_maps) + layer.map_shape
    if above.type == "f":
        # W' * er, cut back into maps (the inverse of the flattening)
        g = np.matmul(above.er, above.W, out=buffer(net, (l, "g_flat"), (maps[0], above.n_inputs)))
        return unflatten_maps(g, maps[1:], out=buffer(net, (l, "g"), maps))
    if above.type == "c":
        # D1: the original convolves with rot90(K, 2), the kernel rotated by 180
        # degrees; the gradient of a cross-correlation is the full convolution with K.
        return ops().conv_full(
            above.er, above.K, flip=net.mode == "faithful", out=buffer(net, (l, "g"), maps)
        )
    return above.er  # a pool layer's er is already at this layer's size
