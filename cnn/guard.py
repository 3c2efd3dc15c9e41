"""The divergence guard: stop a run whose loss or weights run away, not only on NaN/Inf.

A learning rate far too large does not always produce NaN: with a
cross-entropy loss computed from stable logarithms, ``--lr 1e6`` on Example 3
trains on to a loss of about 1e8 and weights of about 1e6, and the run "ends
well" with a useless network. :class:`DivergenceGuard` is checked after every
minibatch's backward pass (next to the NaN/Inf check, before the update) and
raises :class:`DivergenceError`, a :class:`~cnn.training.NonFiniteError`, so
whatever handles a NaN handles it too (``cnn train``: exit 1, the last good
checkpoint kept).

The bounds (documented constants)
---------------------------------
* **Loss:** the minibatch loss may not exceed ``LOSS_GROWTH`` (100) times the
  run's first minibatch loss, or ``LOSS_GROWTH * LOSS_FLOOR`` when that first
  loss is below ``LOSS_FLOOR`` (1.0; a network that starts nearly trained may
  still fluctuate). Example 3 starts at a cross-entropy of about 6.5-7 (ten
  sigmoid outputs near 0.5), so the bound is about 650-700: an average logit
  wrong by dozens on every output. A sigmoid or softmax output with the
  quadratic loss can never reach it (that loss is at most 1 per output), so
  such runs are caught by the weight bound.
* **Weights:** no parameter (``K``, ``W``, ``b``) may exceed ``WEIGHT_LIMIT``
  (1e4) in absolute value. Networks that train have weights of order 1 (at
  most tens); the MNIST runs of the studies, learning rates 0.01 to 0.16, stay
  far below it.

Switch it off with ``traincnn(..., divergence_guard=False)`` for studies that
record divergence as data.
"""

from __future__ import annotations

import math

from .training import NonFiniteError

LOSS_GROWTH = 100.0
"""Largest allowed ratio of a minibatch loss to the run's first minibatch loss."""

LOSS_FLOOR = 1.0
"""The first loss counts as at least this much (so a small start does not make the bound tiny)."""

WEIGHT_LIMIT = 1e4
"""Largest allowed absolute value of any parameter."""


class DivergenceError(NonFiniteError):
    """The loss grew beyond ``LOSS_GROWTH`` times its start, or a weight beyond ``WEIGHT_LIMIT``."""


def _largest_weight(net):
    """``(value, "layer L (type)", name)`` of the parameter largest in absolute value."""
    best = (0.0, "no layer", "")
    for i, name, a in net.parameters():
        if a.size:
            v = max(float(a.max()), -float(a.min()))
            if v > best[0]:
                best = (v, f"layer {i + 1} ({net.layers[i].type})", name)
    return best


class DivergenceGuard:
    """Checks one training run; create it when the run (or its resumption) starts.

    Parameters
    ----------
    net : CNN
        The network being trained. When ``net.loss_array`` already holds losses
        (a resumed run), its first entry is the run's start; otherwise the first
        loss checked is.
    """

    def __init__(self, net):
        first = net.loss_array[0] if net.loss_array else None
        self.start = float(first) if first is not None and math.isfinite(first) else None

    def bound(self):
        """The largest loss allowed (``None`` before the first minibatch)."""
        if self.start is None:
            return None
        return LOSS_GROWTH * max(self.start, LOSS_FLOOR)

    def check(self, net, epoch, batch, largest=None):
        """Raise :class:`DivergenceError` if the run diverges; call after each backward pass.

        Parameters
        ----------
        net : CNN
            After ``bpcnn`` (``net.loss`` is this minibatch's loss).
        epoch, batch : int
            1-based, for the message.
        largest : tuple, optional
            ``(value, where, name)`` of the largest parameter, when the step
            already knows it (the fused update); otherwise it is looked up.
        """
        loss = float(net.loss)
        if self.start is None:
            self.start = loss
        value, layer, name = largest if largest is not None else _largest_weight(net)
        if loss > self.bound():
            raise DivergenceError(
                f"{_where(epoch, batch)}: loss {loss:.3g} > {LOSS_GROWTH:g} x the first "
                f"({self.start:.3g}); largest weight: {layer} {name} {value:.3g}; {_hint(net)}"
            )
        if value > WEIGHT_LIMIT:
            raise DivergenceError(
                f"{_where(epoch, batch)}: {layer} {name} holds a weight of {value:.3g} > "
                f"{WEIGHT_LIMIT:g}; {_hint(net)}"
            )


def _where(epoch, batch):
    return f"diverging at epoch {epoch}, minibatch {batch}"


def _hint(net):
    return f"try a learning rate below {net.learning_rate:g}"
