"""Activation functions and their derivatives (MATLAB ``applyactfunccnn.m``).

The original computes every derivative from the layer's **output** ``a = f(z)``,
not from its input ``z``; ``backward`` keeps that convention, so each formula
below is written in ``a``.

Both the FC layout ``(N, n)`` and the map layout ``(N, M, H, W)`` keep the axis
that softmax normalises over at position 1 (nodes for FC layers, maps for conv
layers, as in the original).

Numerical safety (defect D9 of the original) is the same in both modes:
softmax subtracts the maximum before ``exp`` and softplus uses
``log(1 + exp(z))`` in the overflow-free form ``logaddexp(0, z)``. Both agree with
the original's formulas to round-off wherever the original gives finite values.
"""

from __future__ import annotations

import numpy as np

from . import kernels

ACTIVATIONS = ("sigm", "tanh", "rect", "soft", "none", "plus")
"""Valid activation names (four letters each, as in the original)."""

LEAK = 0.01
"""Slope of the leaky ReLU (``rect``) for negative inputs."""


def check_activation(name, argname="act"):
    """Return ``name`` if it is a valid activation, else raise ``ValueError``."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(
            f"{argname}={name!r} is not a known activation; valid: {', '.join(ACTIVATIONS)}"
        )
    return name


def forward(z, act, *, out=None):
    """Apply activation ``act`` to pre-activations ``z`` (``applyactfunccnn(z, act, 0)``).

    ``sigm``: ``1/(1+exp(-z))``; ``tanh``: ``tanh(z)``; ``rect``:
    ``z .* (leak + (1-leak)*(z > 0))`` (``z`` for ``z > 0``, else ``0.01 z``);
    ``none``: ``z``; ``soft``: ``exp(z) / sum(exp(z))`` over axis 1;
    ``plus``: ``log(1 + exp(z))``.

    Parameters
    ----------
    z : ndarray, shape (N, n) or (N, M, H, W)
        Pre-activations. Softmax normalises over axis 1.
    act : str
        One of :data:`ACTIVATIONS`.
    out : ndarray, optional
        Array of ``z``'s shape and dtype to write into (may be ``z`` itself).

    Returns
    -------
    a : ndarray, same shape and dtype as ``z``
    """
    if act == "sigm":
        # 1 / (1 + exp(-z)); exp overflows to inf for z < -709 and gives the right 0
        with np.errstate(over="ignore"):
            a = np.negative(z, out=out)
            np.exp(a, out=a)
            a += 1
            return np.divide(1, a, out=a)
    if act == "tanh":
        return np.tanh(z, out=out)
    if act == "soft":
        e = np.exp(z - z.max(axis=1, keepdims=True))  # D9: shift by the maximum
        e /= e.sum(axis=1, keepdims=True)
        if out is None:
            return e
        out[...] = e
        return out
    if act == "plus":
        return np.logaddexp(0, z, out=out)  # log(1 + exp(z)) without overflow (D9)
    check_activation(act)
    # rect, none: one elementwise pass (kernels.act_forward), no temporaries
    return kernels.act_forward(z, act, LEAK, out=out)


def backward(a, act, err, mode="faithful", *, out=None):
    """Multiply ``err`` by the activation's derivative, written from the output ``a``.

    MATLAB: ``applyactfunccnn(a, act, 1, err)``:

    * ``sigm``: ``a .* (1 - a) .* err``
    * ``tanh``: ``(1 - a.^2) .* err``
    * ``rect``: ``(leak + (1 - leak) * (a > 0)) .* err``
    * ``none``: ``a .* err`` in faithful mode (defect D2; the derivative of the
      identity is 1, which the corrected mode uses)
    * ``soft``: the Jacobian-vector product ``a .* (err - sum(err .* a))`` over axis 1
    * ``plus``: ``(1 - exp(-a)) .* err`` (d softplus / dz = sigmoid(z) = 1 - exp(-a))

    Parameters
    ----------
    a : ndarray, shape (N, n) or (N, M, H, W)
        The layer's output ``f(z)``.
    act : str
        One of :data:`ACTIVATIONS`.
    err : ndarray, same shape as ``a``
        Error with respect to the layer's output.
    mode : {"faithful", "corrected"}
        Only ``none`` differs between the modes.
    out : ndarray, optional
        Array to write into (may be ``err`` itself).

    Returns
    -------
    ndarray, same shape as ``a``: error with respect to the pre-activation.
    """
    if act == "soft":
        s = (err * a).sum(axis=1, keepdims=True)
        g = -a * (s - err)
        if out is None:
            return g
        out[...] = g
        return out
    check_activation(act)
    return kernels.act_backward(a, act, err, mode == "faithful", LEAK, out=out)
