"""Figures: loss curves, kernels, feature maps, confusion matrices, the flag comparison.

Headless (Agg backend). Every plotting function writes one PNG, closes its
figure and returns the path it wrote (a :class:`pathlib.Path`). The file is
written atomically (temporary file, then rename), and missing parent folders
are created.

==========================  ================================================
:func:`loss_curves`         minibatch loss per setting, smoothed, seeds as a band
:func:`first_layer_kernels` the first conv layer's kernels, one per (map, input)
:func:`feature_maps`        one image through the network, every map layer
:func:`confusion`           confusion counts (no figure)
:func:`confusion_matrix`    heat map of the confusion counts
:func:`confusion_counts`    the same, from counts already computed
:func:`error_by_setting`    test error per setting: each seed, mean +- std
:func:`grad_norm_ratio`     ratio of gradient norms (flag on / flag off) along training
==========================  ================================================
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

__all__ = ["loss_curves", "first_layer_kernels", "feature_maps", "confusion",
           "confusion_matrix", "confusion_counts", "error_by_setting", "grad_norm_ratio",
           "moving_average"]


# --------------------------------------------------------------------------- helpers

def _save(fig, path, dpi=110):
    """Write ``fig`` to ``path`` as PNG atomically, close it, return the Path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path


def moving_average(a, window):
    """Trailing moving average of ``a`` (same length; the first values average fewer).

    ``out[i] = mean(a[max(0, i - window + 1) : i + 1])``.
    """
    a = np.asarray(a, dtype=float).ravel()
    window = int(window)
    if window <= 1 or a.size == 0:
        return a.copy()
    c = np.cumsum(np.insert(a, 0, 0.0))
    i = np.arange(1, a.size + 1)
    lo = np.maximum(0, i - window)
    return (c[i] - c[lo]) / (i - lo)


def _as_runs(value):
    """One curve or several (seeds): return a list of 1-D float arrays."""
    if isinstance(value, np.ndarray):
        if value.ndim == 1:
            return [value.astype(float)]
        if value.ndim == 2:
            return [row.astype(float) for row in value]
        raise ValueError(f"a curve must be 1-D (or 2-D: one row per run), got shape "
                         f"{value.shape}")
    value = list(value)
    if value and np.ndim(value[0]) >= 1:
        runs = [np.asarray(v, dtype=float).ravel() for v in value]
    else:
        runs = [np.asarray(value, dtype=float).ravel()]
    if not runs or any(r.size == 0 for r in runs):
        raise ValueError("a curve is empty")
    return runs


def _band(ax, x, runs, color, label, smooth, raw_alpha=0.25):
    """Plot the mean of ``runs`` (smoothed), a min-max band over runs, the raw mean faint."""
    n = min(r.size for r in runs)
    stack = np.vstack([r[:n] for r in runs])
    x = np.arange(1, n + 1) if x is None else np.asarray(x, dtype=float)[:n]
    mean = stack.mean(axis=0)
    if smooth > 1:
        ax.plot(x, mean, color=color, alpha=raw_alpha, lw=0.6)
    sm = np.vstack([moving_average(r, smooth) for r in stack])
    sm_mean = sm.mean(axis=0)
    what = f"{label} (mean of {len(runs)})" if len(runs) > 1 else label
    ax.plot(x, sm_mean if smooth > 1 else mean, color=color, lw=1.8, label=what)
    if len(runs) > 1:
        ax.fill_between(x, sm.min(axis=0), sm.max(axis=0), color=color, alpha=0.2, lw=0)


def _colors(labels, colors=None):
    """One colour per label: ``colors[label]`` where given, else the default cycle."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    colors = colors or {}
    return [colors.get(lab) or cycle[i % len(cycle)] for i, lab in enumerate(labels)]


# --------------------------------------------------------------------------- curves

def loss_curves(curves, path, *, title=None, smooth=50, ylabel="minibatch loss",
                xlabel="minibatch", x=None, logy=False, colors=None):
    """Minibatch loss (or any per-step quantity) per setting.

    Parameters
    ----------
    curves : mapping
        label -> a 1-D sequence (one run), or a list of sequences / 2-D array
        (several seeds: the mean is drawn with a min-max band over the seeds;
        runs of different lengths are cut to the shortest).
    path : str or Path
        The PNG to write.
    title : str, optional
    smooth : int
        Window of the trailing moving average, in minibatches; the raw (mean)
        curve is drawn faint behind. ``1`` draws the raw curve only.
    ylabel, xlabel : str
    x : sequence, optional
        x values shared by all curves (default 1, 2, ...).
    logy : bool
        Logarithmic y axis.
    colors : mapping, optional
        label -> matplotlib colour (default: the colour cycle in order).

    Returns
    -------
    Path
    """
    if not curves:
        raise ValueError("curves is empty: nothing to plot")
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for color, (label, value) in zip(_colors(list(curves), colors), curves.items()):
        _band(ax, x, _as_runs(value), color, str(label), int(smooth))
    ax.set_xlabel(xlabel)
    if x is not None and np.all(np.mod(np.asarray(x, dtype=float), 1) == 0):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    lab = ylabel + (f" (moving average of {int(smooth)})" if smooth > 1 else "")
    ax.set_ylabel(lab)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def grad_norm_ratio(curves, path, *, steps=None, title=None, bound=0.25,
                    ylabel="||dW_last|| flag on / flag off", xlabel="minibatch", colors=None):
    """Ratio of last-layer gradient norms, flag on over flag off, along training.

    Each value compares the two gradients of the same network state and the
    same minibatch. The flag multiplies each output error by ``a(1 - a)``,
    which is at most 1/4 (``bound``, drawn dashed); the ratio of the summed
    gradients stays near or below it (it can pass it slightly where flag-off
    terms partly cancel).

    Parameters
    ----------
    curves : mapping
        label -> a 1-D sequence of ratios or a list of them (seeds: mean and
        min-max band).
    path : str or Path
    steps : sequence or mapping, optional
        The minibatch index of each value: shared by all curves, or one
        sequence per label (default 0, 1, 2, ...).
    bound : float or None
        Upper bound to draw.
    colors : mapping, optional
        label -> matplotlib colour.

    Returns
    -------
    Path
    """
    if not curves:
        raise ValueError("curves is empty: nothing to plot")
    fig, ax = plt.subplots(figsize=(8, 4.8))
    top = 0.0
    for color, (label, value) in zip(_colors(list(curves), colors), curves.items()):
        runs = _as_runs(value)
        x = steps.get(label) if isinstance(steps, dict) else steps
        if x is None:
            x = np.arange(min(r.size for r in runs))
        _band(ax, x, runs, color, str(label), 1)
        top = max(top, max(float(np.nanmax(r)) for r in runs))
    if bound is not None:
        ax.axhline(bound, color="k", ls="--", lw=1, label=f"max of a(1-a) = {bound:g} (per output error)")
        top = max(top, bound)
    ax.set_ylim(0, top * 1.12 if top > 0 else 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def error_by_setting(errors, path, *, title=None, ylabel="test error", reference=None,
                     percent=True, colors=None, reference_label="Octave run (seed 59223)"):
    """Test error per setting: one point per seed, the mean with +-1 std bars.

    Parameters
    ----------
    errors : mapping
        label -> sequence of error rates (one per seed; NaN entries, e.g.
        diverged runs, are skipped).
    path : str or Path
    reference : mapping, optional
        label -> a value to mark with a star (e.g. the Octave reference run),
        named ``reference_label`` in the legend.
    percent : bool
        Show the errors in percent.
    colors : mapping, optional
        label -> matplotlib colour.

    Returns
    -------
    Path
    """
    if not errors:
        raise ValueError("errors is empty: nothing to plot")
    scale = 100.0 if percent else 1.0
    labels = [str(k) for k in errors]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(labels) + 2), 4.8))
    rng = np.random.default_rng(0)  # fixed jitter: the same data give the same figure
    labelled = False
    for i, (color, value) in enumerate(zip(_colors(list(errors), colors), errors.values())):
        v = np.asarray(value, dtype=float).ravel() * scale
        v = v[np.isfinite(v)]
        if v.size == 0:
            continue
        jitter = rng.uniform(-0.12, 0.12, v.size) if v.size > 1 else np.zeros(1)
        ax.scatter(i + jitter, v, color=color, s=22, alpha=0.75, zorder=3,
                   label=None if labelled else "each seed")
        mean = v.mean()
        std = v.std(ddof=1) if v.size > 1 else 0.0
        ax.errorbar(i + 0.28, mean, yerr=std, fmt="o", color="k", ms=5, capsize=4, zorder=4,
                    label=None if labelled else "mean +- std")
        labelled = True
        ax.annotate(f"{mean:.2f}" if percent else f"{mean:.4f}", (i + 0.34, mean),
                    fontsize="small", va="center")
    if reference:
        first = True
        for label, value in reference.items():
            if str(label) in labels and value is not None:
                ax.scatter(labels.index(str(label)) - 0.28, float(value) * scale, marker="*",
                           s=120, color="crimson", zorder=5,
                           label=reference_label if first else None)
                first = False
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=15, ha="right")
    ax.set_xlim(-0.6, len(labels) - 0.3)
    ax.set_ylim(bottom=0)
    ax.set_ylabel(ylabel + (" (%)" if percent else ""))
    ax.grid(axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return _save(fig, path)


# --------------------------------------------------------------------------- confusion

def _labels(a, name):
    a = np.asarray(a)
    if a.ndim == 2:  # one-hot or scores: the index of the largest entry
        a = a.argmax(axis=1)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D labels (or 2-D one-hot rows), got shape {a.shape}")
    if a.size and (a.dtype.kind not in "biu" and not np.all(a == np.round(a))):
        raise ValueError(f"{name} must hold integer labels")
    return a.astype(np.int64)


def confusion(true_labels, pred_labels, n_classes=10):
    """Confusion counts: ``C[i, j]`` = number of examples of class i predicted as j.

    Parameters
    ----------
    true_labels, pred_labels : array_like
        0-based integer labels of the same length (2-D one-hot rows are
        reduced with ``argmax``).
    n_classes : int

    Returns
    -------
    ndarray of int64, shape (n_classes, n_classes)
        Rows: true class; columns: predicted class.
    """
    t = _labels(true_labels, "true_labels")
    p = _labels(pred_labels, "pred_labels")
    if t.shape != p.shape:
        raise ValueError(f"true_labels and pred_labels differ in length: {t.size} vs {p.size}")
    for a, name in ((t, "true_labels"), (p, "pred_labels")):
        if a.size and (a.min() < 0 or a.max() >= n_classes):
            raise ValueError(f"{name} must lie in 0..{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes)


def confusion_counts(counts, path, *, title=None, class_names=None):
    """Heat map of confusion counts (rows true, columns predicted).

    The colour is the fraction of each true class (so rare confusions stay
    visible); the numbers are counts. The title gets the error rate.

    Returns
    -------
    Path
    """
    c = np.asarray(counts)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"counts must be a square matrix, got shape {c.shape}")
    n = c.shape[0]
    names = [str(i) for i in range(n)] if class_names is None else [str(s) for s in class_names]
    rows = c.sum(axis=1, keepdims=True)
    frac = np.divide(c, rows, out=np.zeros(c.shape), where=rows > 0)
    fig, ax = plt.subplots(figsize=(0.55 * n + 2.5, 0.55 * n + 1.8))
    im = ax.imshow(np.sqrt(frac), cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if c[i, j]:
                ax.text(j, i, str(int(c[i, j])), ha="center", va="center",
                        fontsize=7 if n <= 12 else 5,
                        color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(names)
    ax.set_yticklabels(names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.array([0, 0.01, 0.1, 0.5, 1.0])
    cb.set_ticks(np.sqrt(ticks))
    cb.set_ticklabels([f"{t:g}" for t in ticks])
    cb.set_label("fraction of the true class")
    total = c.sum()
    err = 1 - np.trace(c) / total if total else float("nan")
    head = f"{title}\n" if title else ""
    ax.set_title(f"{head}error {err:.2%} ({int(total - np.trace(c))} of {int(total)})",
                 fontsize="medium")
    return _save(fig, path)


def confusion_matrix(true_labels, pred_labels, path, *, n_classes=10, title=None):
    """Heat map of :func:`confusion` counts, with the counts written in the cells.

    Returns
    -------
    Path
    """
    return confusion_counts(confusion(true_labels, pred_labels, n_classes), path, title=title)


# --------------------------------------------------------------------------- network views

def _first_conv(net):
    for i, layer in enumerate(net.layers):
        if layer.type == "c":
            return i, layer
    raise ValueError("the network has no conv layer")


def first_layer_kernels(net, path, *, title=None):
    """The first conv layer's kernels as a grid, one cell per (output map, input map).

    All cells share one symmetric colour scale ``[-max|K|, max|K|]`` (red
    positive, blue negative). With one input map the kernels are laid out in
    rows of up to 10.

    Returns
    -------
    Path
    """
    i, layer = _first_conv(net)
    K = np.asarray(layer.K, dtype=float)  # (M, P, kh, kw)
    M, P = K.shape[:2]
    vmax = float(np.abs(K).max()) or 1.0
    if P == 1:
        ncols = min(M, 10)
        nrows = -(-M // ncols)
        cells = [(j, 0) for j in range(M)]
    else:
        nrows, ncols = M, P
        cells = [(j, k) for j in range(M) for k in range(P)]
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.1 * ncols + 1.2, 1.1 * nrows + 0.6),
                             squeeze=False)
    im = None
    for ax in axes.ravel():
        ax.axis("off")
    for t, (j, k) in enumerate(cells):
        ax = axes[t // ncols, t % ncols] if P == 1 else axes[j, k]
        im = ax.imshow(K[j, k], cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{j + 1}" if P == 1 else f"{j + 1},{k + 1}", fontsize=7)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
    fig.suptitle(title or f"layer {i + 1} kernels ({layer.act_func}, {M} maps x {P} inputs, "
                          f"{K.shape[2]}x{K.shape[3]})", fontsize="medium")
    return _save(fig, path)


def feature_maps(net, image, path, *, title=None):
    """Forward one image and show the input and every conv/pool layer's maps.

    Runs on ``net.copy()`` (batch of one), so ``net`` is not changed. One row
    per layer; each row has its own grey scale, shared by its maps.

    Parameters
    ----------
    net : CNN
    image : ndarray, shape (H, W) or (C, H, W)
    path : str or Path

    Returns
    -------
    Path
    """
    from .forward import ffcnn

    img = np.asarray(image, dtype=float)
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3:
        raise ValueError(f"image must have shape (H, W) or (C, H, W), got {np.shape(image)}")
    work = net.copy()
    ffcnn(work, img[None])
    rows = []
    for l, layer in enumerate(work.layers):
        if layer.type in "icp" and layer.featuremaps is not None:
            if layer.type == "i":
                name = "input"
            elif layer.type == "c":
                name = f"{l + 1} conv {layer.act_func}"
            else:
                name = f"{l + 1} pool {layer.rate}"
            rows.append((name, np.asarray(layer.featuremaps[0], dtype=float)))
    ncols = max(m.shape[0] for _, m in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(0.9 * ncols + 1.0, 1.0 * len(rows) + 0.5),
                             squeeze=False)
    for r, (name, maps) in enumerate(rows):
        lo, hi = float(maps.min()), float(maps.max())
        if hi <= lo:
            hi = lo + 1.0
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < maps.shape[0]:
                ax.imshow(maps[c], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title or "feature maps of one image", fontsize="medium")
    return _save(fig, path)
