"""Figures: loss curves, kernels, feature maps, confusion matrices, the flag comparison.

Headless (Agg backend). Every plotting function writes one PNG, closes its
figure and returns the path it wrote (a :class:`pathlib.Path`). The file is
written atomically (:mod:`cnn.atomic`), and missing parent folders are created.
The image figures also have a ``*_figure`` twin that returns the
:class:`matplotlib.figure.Figure` instead (for notebooks): every image panel has
a title and a colour bar (symmetric around 0 for signed values).

==========================  ================================================
:func:`loss_curves`         minibatch loss per setting, a centred moving average, seeds as a band
:func:`first_layer_kernels` the first conv layer's kernels, one per (map, input)
:func:`feature_maps`        one image through the network, every map of every layer
:func:`confusion`           confusion counts (no figure)
:func:`confusion_matrix`    heat map of the confusion counts
:func:`confusion_counts`    the same, from counts already computed
:func:`error_by_setting`    test error per setting: each seed, mean +- std
:func:`grad_norm_ratio`     ratio of gradient norms (flag on / flag off) along training
==========================  ================================================
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import matplotlib.colors
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

__all__ = [
    "loss_curves",
    "first_layer_kernels",
    "feature_maps",
    "confusion",
    "confusion_matrix",
    "confusion_counts",
    "error_by_setting",
    "grad_norm_ratio",
    "moving_average",
    "feature_maps_figure",
    "first_layer_kernels_figure",
    "map_grid",
    "save",
]


# --------------------------------------------------------------------------- helpers


def save(fig, path, dpi=110):
    """Write ``fig`` to ``path`` as PNG atomically (:mod:`cnn.atomic`), close it; the Path."""
    from .atomic import write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        write_bytes(path, buf.getvalue())
    finally:
        plt.close(fig)
    return path


_save = save


def moving_average(a, window, *, valid=False):
    """Moving average of ``a`` over ``window`` consecutive values.

    ``valid=False``: trailing, same length as ``a``; the first values average
    fewer, ``out[i] = mean(a[max(0, i - window + 1) : i + 1])``.

    ``valid=True``: full windows only, ``out[i] = mean(a[i : i + window])`` for
    ``i = 0 .. len(a) - window`` (no start-up values). Plot it at the window
    centres, ``moving_average(x, window, valid=True)``.

    Parameters
    ----------
    a : array_like, shape (n,)
    window : int

    Returns
    -------
    ndarray, shape (n,) or (n - window + 1,)
    """
    a = np.asarray(a, dtype=float).ravel()
    window = int(window)
    if window <= 1 or a.size == 0:
        return a.copy()
    c = np.cumsum(np.insert(a, 0, 0.0))
    if valid:
        if window > a.size:
            return np.empty(0)
        return (c[window:] - c[:-window]) / window
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
        raise ValueError(f"a curve must be 1-D (or 2-D: one row per run), got shape {value.shape}")
    value = list(value)
    if value and np.ndim(value[0]) >= 1:
        runs = [np.asarray(v, dtype=float).ravel() for v in value]
    else:
        runs = [np.asarray(value, dtype=float).ravel()]
    if not runs or any(r.size == 0 for r in runs):
        raise ValueError("a curve is empty")
    return runs


def _band(ax, x, runs, color, label, smooth, raw_alpha=0.3, raw_label=None):
    """Plot the mean of ``runs``, a min-max band over runs, and (``smooth > 1``) the
    raw mean faint under its centred moving average over full windows only.

    The legend names what each line is: the raw line ``raw_label`` (or nothing),
    the smoothed one "``label``: moving average of ``smooth``".
    """
    n = min(r.size for r in runs)
    stack = np.vstack([r[:n] for r in runs])
    x = np.arange(1, n + 1) if x is None else np.asarray(x, dtype=float)[:n]
    mean = stack.mean(axis=0)
    seeds = f", mean of {len(runs)} runs" if len(runs) > 1 else ""
    smooth = min(int(smooth), n)
    if smooth <= 1:
        ax.plot(x, mean, color=color, lw=1.8, label=f"{label}{seeds}")
        if len(runs) > 1:
            ax.fill_between(x, stack.min(axis=0), stack.max(axis=0), color=color, alpha=0.2, lw=0)
        return
    ax.plot(x, mean, color=color, alpha=raw_alpha, lw=0.6, label=raw_label)
    xs = moving_average(x, smooth, valid=True)  # the centre of each window
    sm = np.vstack([moving_average(r, smooth, valid=True) for r in stack])
    ax.plot(
        xs,
        sm.mean(axis=0),
        color=color,
        lw=1.8,
        label=f"{label}: moving average of {smooth}{seeds}",
    )
    if len(runs) > 1:
        ax.fill_between(xs, sm.min(axis=0), sm.max(axis=0), color=color, alpha=0.2, lw=0)


def _colors(labels, colors=None):
    """One colour per label: ``colors[label]`` where given, else the default cycle."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    colors = colors or {}
    return [colors.get(lab) or cycle[i % len(cycle)] for i, lab in enumerate(labels)]


# --------------------------------------------------------------------------- curves


def loss_curves(
    curves,
    path,
    *,
    title=None,
    smooth=50,
    ylabel="minibatch loss",
    xlabel="minibatch",
    x=None,
    logy=False,
    colors=None,
):
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
        Window of the moving average, in minibatches: full windows only, drawn
        at their centres (no start-up artefact, no lag); the raw (mean) curve is
        drawn faint behind. ``1`` draws the raw curve only.
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
    single = len(curves) == 1
    for color, (label, value) in zip(_colors(list(curves), colors), curves.items(), strict=True):
        raw = f"{label}: each {xlabel}" if single else None
        _band(ax, x, _as_runs(value), color, str(label), int(smooth), raw_label=raw)
    ax.set_xlabel(xlabel)
    if x is not None and np.all(np.mod(np.asarray(x, dtype=float), 1) == 0):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return save(fig, path)


def grad_norm_ratio(
    curves,
    path,
    *,
    steps=None,
    title=None,
    bound=0.25,
    ylabel="||dW_last|| flag on / flag off",
    xlabel="minibatch",
    colors=None,
):
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
        ax.axhline(
            bound, color="k", ls="--", lw=1, label=f"max of a(1-a) = {bound:g} (per output error)"
        )
        top = max(top, bound)
    ax.set_ylim(0, top * 1.12 if top > 0 else 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return save(fig, path)


def error_by_setting(
    errors,
    path,
    *,
    title=None,
    ylabel="test error",
    reference=None,
    percent=True,
    colors=None,
    reference_label="Octave run (seed 59223)",
):
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
        ax.scatter(
            i + jitter,
            v,
            color=color,
            s=22,
            alpha=0.75,
            zorder=3,
            label=None if labelled else "each seed",
        )
        mean = v.mean()
        std = v.std(ddof=1) if v.size > 1 else 0.0
        ax.errorbar(
            i + 0.28,
            mean,
            yerr=std,
            fmt="o",
            color="k",
            ms=5,
            capsize=4,
            zorder=4,
            label=None if labelled else "mean +- std",
        )
        labelled = True
        ax.annotate(
            f"{mean:.2f}" if percent else f"{mean:.4f}",
            (i + 0.34, mean),
            fontsize="small",
            va="center",
        )
    if reference:
        first = True
        for label, value in reference.items():
            if str(label) in labels and value is not None:
                ax.scatter(
                    labels.index(str(label)) - 0.28,
                    float(value) * scale,
                    marker="*",
                    s=120,
                    color="crimson",
                    zorder=5,
                    label=reference_label if first else None,
                )
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
    return save(fig, path)


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
        n_classes, n_classes
    )


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
                ax.text(
                    j,
                    i,
                    str(int(c[i, j])),
                    ha="center",
                    va="center",
                    fontsize=7 if n <= 12 else 5,
                    color="white" if frac[i, j] > 0.5 else "black",
                )
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
    ax.set_title(
        f"{head}error {err:.2%} ({int(total - np.trace(c))} of {int(total)})", fontsize="medium"
    )
    return save(fig, path)


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


def map_grid(blocks, *, ncols=10, cell=1.05, title=None):
    """A figure of several blocks of maps, one colour bar per block.

    Each block is one layer (or one array): its maps in rows of up to
    ``ncols`` panels, each panel titled, and a colour bar on the right that
    spans the block. Signed blocks use a symmetric scale ``[-max|v|, max|v|]``
    (red positive, blue negative); the others a grey scale from their minimum
    to their maximum. A 1-D block (an FC layer) is one strip of cells.

    Parameters
    ----------
    blocks : list of dict
        ``label`` (str, written left of the block), ``maps`` (ndarray, shape
        (M, h, w), or (n,) for a vector), optional ``names`` (one title per
        map/cell; default 1..M), ``signed`` (bool; default: any value < 0),
        ``cbar`` (the colour bar's label, default "value").
    ncols : int
    cell : float
        Size of one panel in inches.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    heights = [1 if np.ndim(b["maps"]) == 1 else -(-len(b["maps"]) // ncols) for b in blocks]
    ncols = min(ncols, max(1 if np.ndim(b["maps"]) == 1 else len(b["maps"]) for b in blocks))
    ncols = max(ncols, 3)
    height = cell * 1.15 * sum(heights) + 0.8
    fig = plt.figure(figsize=(cell * ncols + 2.6, height))
    grid = fig.add_gridspec(
        sum(heights),
        ncols + 1,
        width_ratios=[1] * ncols + [0.12],
        hspace=0.55,
        wspace=0.15,
        top=1 - 0.6 / height,
    )
    row = 0
    for b, h in zip(blocks, heights, strict=True):
        v = np.asarray(b["maps"], dtype=float)
        signed = b.get("signed", bool(v.size and v.min() < 0))
        if signed:
            vmax = float(np.abs(v).max()) or 1.0
            norm, cmap = matplotlib.colors.Normalize(-vmax, vmax), "RdBu_r"
        else:
            lo, hi = float(v.min()), float(v.max())
            norm, cmap = matplotlib.colors.Normalize(lo, hi if hi > lo else lo + 1.0), "gray"
        names = b.get("names") or [str(j + 1) for j in range(len(v))]
        if v.ndim == 1:
            ax = fig.add_subplot(grid[row, :ncols])
            im = ax.imshow(v[None, :], cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
            ax.set_yticks([])
            ax.set_xticks(np.arange(v.size), names if v.size <= 30 else None)
            if v.size > 30:
                ax.set_xticks([])
            ax.tick_params(labelsize=6, length=0, pad=1)
            ax.set_title(b.get("strip_title", f"{v.size} values"), fontsize=6, pad=2)
            ax.set_ylabel(b["label"], fontsize=7, rotation=0, ha="right", va="center")
        else:
            for j in range(len(v)):
                ax = fig.add_subplot(grid[row + j // ncols, j % ncols])
                im = ax.imshow(v[j], cmap=cmap, norm=norm, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(names[j], fontsize=6, pad=2)
                if j == 0:
                    ax.set_ylabel(b["label"], fontsize=7, rotation=0, ha="right", va="center")
        cax = fig.add_subplot(grid[row : row + h, ncols])
        cb = fig.colorbar(im, cax=cax)
        cb.ax.tick_params(labelsize=6)
        cb.set_label(b.get("cbar", "value"), fontsize=6)
        row += h
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def first_layer_kernels_figure(net, *, title=None):
    """The figure of :func:`first_layer_kernels` (not saved)."""
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
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(1.1 * ncols + 1.2, 1.1 * nrows + 0.6), squeeze=False
    )
    im = None
    norm = matplotlib.colors.Normalize(-vmax, vmax)  # one symmetric scale for all
    for ax in axes.ravel():
        ax.axis("off")
    for t, (j, k) in enumerate(cells):
        ax = axes[t // ncols, t % ncols] if P == 1 else axes[j, k]
        im = ax.imshow(K[j, k], cmap="RdBu_r", norm=norm, interpolation="nearest")
        ax.set_title(f"map {j + 1}" if P == 1 else f"{j + 1},{k + 1}", fontsize=7)
    cb = fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
    cb.set_label("kernel weight")
    fig.suptitle(
        title
        or f"layer {i + 1} kernels ({layer.act_func}, {M} maps x {P} inputs, "
        f"{K.shape[2]}x{K.shape[3]})",
        fontsize="medium",
    )
    return fig


def first_layer_kernels(net, path, *, title=None):
    """The first conv layer's kernels as a grid, one cell per (output map, input map).

    All cells share one symmetric colour scale ``[-max|K|, max|K|]`` (red
    positive, blue negative). With one input map the kernels are laid out in
    rows of up to 10.

    Returns
    -------
    Path
    """
    return save(first_layer_kernels_figure(net, title=title), path)


def feature_maps_figure(net, image, *, title=None, true_label=None, class_names=None, ncols=10):
    """The figure of :func:`feature_maps` (not saved); see there."""
    from .forward import ffcnn, output_matrix

    img = np.asarray(image, dtype=float)
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3:
        raise ValueError(f"image must have shape (H, W) or (C, H, W), got {np.shape(image)}")
    work = net.copy()
    ffcnn(work, img[None])
    out = np.asarray(output_matrix(work)[0], dtype=float)
    names = (
        [str(c) for c in range(out.size)] if class_names is None else [str(c) for c in class_names]
    )
    blocks = []
    for l, layer in enumerate(work.layers):
        if layer.type in "icp" and layer.featuremaps is not None:
            if layer.type == "i":
                label = "input"
            elif layer.type == "c":
                label = f"layer {l + 1}\nconv {layer.act_func}"
            else:
                label = f"layer {l + 1}\npool {layer.rate}"
            maps = np.asarray(layer.featuremaps[0], dtype=float)
            blocks.append(
                {
                    "label": label,
                    "maps": maps,
                    "cbar": "pixel" if layer.type == "i" else "activation",
                }
            )
    last = work.layers[-1]
    if last.type == "f":
        blocks.append(
            {
                "label": f"layer {len(work.layers)}\nfc {last.act_func}",
                "maps": out,
                "names": names,
                "cbar": "output",
                "signed": False,
                "strip_title": "outputs by class",
            }
        )
    pred = int(np.argmax(out))
    head = f"true {names[int(true_label)]}, " if true_label is not None else ""
    what = f"{head}predicted {names[pred]} (output {out[pred]:.3g})"
    return map_grid(
        blocks,
        ncols=ncols,
        title=f"{title}\n{what}" if title else f"feature maps of one image: {what}",
    )


def feature_maps(net, image, path, *, title=None, true_label=None, class_names=None):
    """Forward one image and show the input and every map of every layer.

    Runs on ``net.copy()`` (batch of one), so ``net`` is not changed. One block
    of panels per layer (all its maps, in rows of up to 10), each with its own
    colour bar (signed maps on a symmetric red-blue scale), then the output
    layer's values; the title gives the predicted class and, when
    ``true_label`` is given, the true one.

    Parameters
    ----------
    net : CNN
    image : ndarray, shape (H, W) or (C, H, W)
    path : str or Path
    title : str, optional
    true_label : int, optional
        0-based class of ``image``.
    class_names : sequence of str, optional
        Names of the outputs (default 0, 1, ...).

    Returns
    -------
    Path
    """
    return save(
        feature_maps_figure(
            net, image, title=title, true_label=true_label, class_names=class_names
        ),
        path,
    )
