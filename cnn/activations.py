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


def forward(z, act):
    """Apply activation ``act`` to pre-activations ``z`` (``applyactfunccnn(z, act, 0)``).

    Parameters
    ----------
    z : ndarray, shape (N, n) or (N, M, H, W)
        Pre-activations. Softmax normalises over axis 1.
    act : str
        One of :data:`ACTIVATIONS`.

    Returns
    -------
    a : ndarray, same shape as ``z``
    """
    if act == "sigm":
        return 1.0 / (1.0 + np.exp(-z))
    if act == "tanh":
        return np.tanh(z)
    if act == "rect":
        # z .* (leak + (1 - leak) * (z > 0)): the factor is exactly 1 for z > 0
        return z * (LEAK + (1.0 - LEAK) * (z > 0))
    if act == "none":
        return z
    if act == "soft":
        e = np.exp(z - z.max(axis=1, keepdims=True))  # D9: shift by the maximum
        return e / e.sum(axis=1, keepdims=True)
    if act == "plus":
        return np.logaddexp(0.0, z)  # log(1 + exp(z)) without overflow (D9)
    check_activation(act)
    raise AssertionError("unreachable")


def backward(a, act, err, mode="faithful"):
    """Multiply ``err`` by the activation's derivative, written from the output ``a``.

    MATLAB: ``applyactfunccnn(a, act, 1, err)``. For softmax this is the
    Jacobian-vector product ``a * (err - sum(err * a))`` over axis 1.

    Parameters
    ----------
    a : ndarray, shape (N, n) or (N, M, H, W)
        The layer's output ``f(z)``.
    act : str
        One of :data:`ACTIVATIONS`.
    err : ndarray, same shape as ``a``
        Error with respect to the layer's output.
    mode : {"faithful", "corrected"}
        Only ``none`` differs: the original multiplies by ``a`` (defect D2);
        the corrected derivative of the identity is 1.

    Returns
    -------
    ndarray, same shape as ``a``: error with respect to the pre-activation.
    """
    if act == "sigm":
        return a * (1.0 - a) * err
    if act == "tanh":
        return (1.0 - a * a) * err
    if act == "rect":
        return (LEAK + (1.0 - LEAK) * (a > 0)) * err
    if act == "none":
        if mode == "faithful":
            return a * err  # D2: the original multiplies by the output
        return err
    if act == "soft":
        s = (err * a).sum(axis=1, keepdims=True)
        return -a * (s - err)
    if act == "plus":
        # d softplus / dz = sigmoid(z) = 1 - exp(-a)
        return -np.expm1(-a) * err
    check_activation(act)
    raise AssertionError("unreachable")
