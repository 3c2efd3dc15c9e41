"""Numerical gradient check (MATLAB ``gradient_checker.m``), reporting per layer.

The original stops at the first parameter whose analytic gradient differs from
the central difference of ``cnn.loss`` by more than 1e-7. Here every parameter
array (K, W, b of every layer) gets a row in a report with its largest
absolute and relative differences; ``raise_on_fail=True`` behaves like the
original.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .backward import bpcnn, compute_loss, prepare_loss_and_flag
from .forward import _forward, check_x, check_y


class GradientCheckError(AssertionError):
    """Raised by ``gradient_checker(..., raise_on_fail=True)`` at the first failure."""


@dataclass
class ArrayCheck:
    """The check of one parameter array.

    ``layer`` is MATLAB's 1-based layer number; ``max_abs`` the largest
    ``|analytic - numeric|``; ``max_rel`` the largest elementwise
    ``|a - n| / max(|a|, |n|)`` (0 where both are 0); ``norm_rel``
    ``||a - n|| / (||a|| + ||n||)``; ``worst`` the index of ``max_abs``
    (in the Python layout of the array).
    """

    layer: int
    layer_type: str
    param: str
    n_checked: int
    max_abs: float
    max_rel: float
    norm_rel: float
    worst: tuple
    passed: bool


@dataclass
class GradCheckReport:
    """Result of :func:`gradient_checker`: one :class:`ArrayCheck` per parameter array."""

    checks: list = field(default_factory=list)
    tol: float = 1e-7
    epsilon: float = 1e-4
    mode: str = "faithful"
    flag: bool = False
    loss_func: str = "quad"

    @property
    def passed(self):
        return all(c.passed for c in self.checks)

    def failures(self):
        return [c for c in self.checks if not c.passed]

    def layer_passed(self, layer):
        """Whether every array of MATLAB layer ``layer`` passed."""
        return all(c.passed for c in self.checks if c.layer == layer)

    def to_markdown(self):
        """The report as a Markdown table."""
        rows = [
            "| layer | type | param | checked | max abs diff | max rel diff | norm rel | pass |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for c in self.checks:
            rows.append(
                f"| {c.layer} | {c.layer_type} | {c.param} | {c.n_checked} | "
                f"{c.max_abs:.2e} | {c.max_rel:.2e} | {c.norm_rel:.2e} | "
                f"{'yes' if c.passed else '**no**'} |"
            )
        return "\n".join(rows)

    def __str__(self):
        head = (
            f"gradient check ({self.mode} mode, loss {self.loss_func}, flag "
            f"{int(self.flag)}, epsilon {self.epsilon:g}, tolerance {self.tol:g} abs): "
            f"{'PASS' if self.passed else 'FAIL'}"
        )
        return head + "\n" + self.to_markdown()


_GRAD = {"K": "dK", "W": "dW", "b": "db"}
_KIND = {"f": "FF", "c": "Conv"}


def gradient_checker(
    net, x, y, *, epsilon=1e-4, tol=1e-7, raise_on_fail=False, max_per_array=None, seed=0
):
    """Compare ``bpcnn``'s gradients with central differences of the loss.

    For every parameter, ``(loss(p + eps) - loss(p - eps)) / (2 eps)`` with the
    loss of a fresh forward pass, as the original (the loss does not depend on
    the flag; the analytic gradient does).

    Parameters
    ----------
    net : CNN
        Not modified (the check runs on a copy). Its ``loss_func`` is resolved
        and its flag derived if they are not set yet.
    x : ndarray, shape (N, H, W) or (N, C, H, W)
    y : ndarray, shape (N, n_outputs)
    epsilon : float
        Step of the central difference (the original's 1e-4).
    tol : float
        Absolute tolerance (the original's 1e-7).
    raise_on_fail : bool
        Raise :class:`GradientCheckError` at the first failing element, walking
        layers from last to first as the original.
    max_per_array : int, optional
        Check at most this many randomly chosen elements per array (for large
        networks); all of them by default.
    seed : int
        Seed for that choice.

    Returns
    -------
    GradCheckReport
    """
    work = net.copy()
    x = check_x(work, x)
    y = check_y(work, y, x.shape[0])
    prepare_loss_and_flag(work, work.calc_last_layer_act_derivative)
    _forward(work, x)
    bpcnn(work, y)
    analytic = {(i, p): getattr(work.layers[i], _GRAD[p]).copy() for i, p, _ in work.parameters()}
    rng = np.random.default_rng(seed)
    report = GradCheckReport(
        tol=tol,
        epsilon=epsilon,
        mode=work.mode,
        flag=work.calc_last_layer_act_derivative,
        loss_func=work.loss_func,
    )

    def loss_at(arr, idx, value):
        old = arr[idx]
        arr[idx] = value
        _forward(work, x)
        loss = compute_loss(work, y)
        arr[idx] = old
        return loss

    params = sorted(work.parameters(), key=lambda t: (-t[0], 0 if t[1] in "KW" else 1))
    for i, name, arr in params:
        layer = work.layers[i]
        grad = analytic[(i, name)]
        indices = list(np.ndindex(arr.shape))
        if max_per_array is not None and len(indices) > max_per_array:
            pick = rng.choice(len(indices), size=max_per_array, replace=False)
            indices = [indices[k] for k in sorted(pick)]
        a = np.empty(len(indices))
        n = np.empty(len(indices))
        for t, idx in enumerate(indices):
            p = arr[idx]
            n[t] = (loss_at(arr, idx, p + epsilon) - loss_at(arr, idx, p - epsilon)) / (2 * epsilon)
            a[t] = grad[idx]
            if raise_on_fail and abs(n[t] - a[t]) > tol:
                raise GradientCheckError(
                    f"gradient checking fail for {_KIND[layer.type]} layer {name}"
                    f"{_matlab_index(layer, name, idx)} at layer {i + 1}: analytic {a[t]:.6g}, "
                    f"numeric {n[t]:.6g}, difference {abs(n[t] - a[t]):.3g} > {tol:g}"
                )
        d = np.abs(a - n)
        denom = np.maximum(np.abs(a), np.abs(n))
        rel = np.divide(d, denom, out=np.zeros_like(d), where=denom > 0)
        norm = np.linalg.norm(a) + np.linalg.norm(n)
        report.checks.append(
            ArrayCheck(
                layer=i + 1,
                layer_type=layer.type,
                param=name,
                n_checked=len(indices),
                max_abs=float(d.max()),
                max_rel=float(rel.max()),
                norm_rel=float(np.linalg.norm(a - n) / norm) if norm > 0 else 0.0,
                worst=indices[int(d.argmax())],
                passed=bool(d.max() <= tol),
            )
        )
    return report


def _matlab_index(layer, name, idx):
    """The MATLAB-style 1-based index of a parameter element, e.g. ``(2, 3, 5)``."""
    if name == "K":  # Python (j, k, a, b) -> MATLAB K(a, b, (j-1)*P + k)
        j, k, a, b = idx
        return f"({a + 1}, {b + 1},{j * layer.n_prev_maps + k + 1})"
    return "(" + ", ".join(str(v + 1) for v in idx) + ")"
