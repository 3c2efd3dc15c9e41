"""The studies' figures (PNG, written atomically through :mod:`cnn.atomic`).

* :func:`flag_figures` -- the flag study's figures (drawn by :mod:`cnn.plots`);
* :func:`lr_figure` -- test error against the learning rate (log axis), one
  panel per epoch count, one line per flag setting, seeds as error bars,
  diverged runs marked;
* :func:`pairings_figure` -- the gradient check of every output/loss/flag
  pairing as a grid of max relative differences.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from .flag import BATCH_SIZE, SETTINGS


def _save(fig, path):
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


OCTAVE_REFERENCE = {"flag off (derived)": 0.0832, "flag on (forced)": 0.2787}
"""Test errors of the original under Octave (one epoch on full MNIST, ``rand('seed', 59223)``)."""


def _octave_comparable(runs):
    """Whether the runs are like the Octave reference runs (full MNIST, one epoch)."""
    return all(
        r["n_train"] == 60000
        and r["n_test"] == 10000
        and r["epochs"] == 1
        and r["batch_size"] == BATCH_SIZE
        for r in runs
    )


def flag_figures(runs, out, *, prefix="", reference=None):
    """The comparison's figures, from :func:`run_one` records, into folder ``out``.

    * ``loss_cros.png``: the cross-entropy of every minibatch (before its
      update) for every setting, also for ``quad loss`` (which reports the
      quadratic loss; the cross-entropy is computed from the same forward pass);
    * ``loss_quad.png``: the quadratic loss, likewise;
    * ``test_error.png``: the final test error per setting, each seed and mean +- std
      (with ``reference``, e.g. :data:`OCTAVE_REFERENCE`, marked; by default when the
      runs are full-MNIST one-epoch runs like the Octave ones);
    * ``test_error_by_epoch.png`` (more than one epoch): test error after each epoch;
    * ``grad_ratio.png``: ``||dW_last||`` flag on / flag off along the runs of
      ``flag off (derived)`` and ``flag on (forced)``;
    * ``confusion_off.png``, ``confusion_on.png``: confusion counts summed over seeds.

    Returns
    -------
    list of Path
    """
    from .. import plots

    out = Path(out)
    if reference is None and _octave_comparable(runs):
        reference = OCTAVE_REFERENCE
    labels = list(dict.fromkeys(r["label"] for r in runs))
    by = {lab: [r for r in runs if r["label"] == lab] for lab in labels}
    n_seeds = max(len(v) for v in by.values())
    seeds = f"{n_seeds} seed{'s' if n_seeds > 1 else ''}"
    n_batch = max(len(r["loss_cros"]) for r in runs)
    smooth = max(1, min(50, n_batch // 20))
    paths = []

    palette = {s.label: f"C{i}" for i, s in enumerate(SETTINGS.values())}

    def colors(curves):
        return {
            lab: palette.get(
                lab.split(" = ")[0].replace("along the ", "").replace(" runs", ""), None
            )
            for lab in curves
        }

    def curves(field):
        """label -> per-seed arrays; settings with identical curves share one entry."""
        out = {}
        for lab, rs in by.items():
            arrs = [
                np.array([np.nan if v is None else v for v in r[field]]) for r in rs if r[field]
            ]
            same = next(
                (
                    k
                    for k, v in out.items()
                    if len(v) == len(arrs)
                    and all(
                        a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
                        for a, b in zip(v, arrs)
                    )
                ),
                None,
            )
            if same is not None and arrs:
                out[f"{same} = {lab} (identical)"] = out.pop(same)
            else:
                out[lab] = arrs
        return out

    ce = {k: v for k, v in curves("loss_cros").items() if v}
    if ce:
        paths.append(
            plots.loss_curves(
                ce,
                out / f"{prefix}loss_cros.png",
                smooth=smooth,
                ylabel="cross-entropy",
                colors=colors(ce),
                title=f"Cross-entropy of each minibatch before its update ({seeds}; all settings, "
                f"also quad)",
            )
        )
    q = {k: v for k, v in curves("loss_quad").items() if v}
    if q:
        paths.append(
            plots.loss_curves(
                q,
                out / f"{prefix}loss_quad.png",
                smooth=smooth,
                ylabel="quadratic loss",
                colors=colors(q),
                title=f"Quadratic loss of each minibatch before its update ({seeds})",
            )
        )
    errs = {
        lab: [
            r["test_error"][-1] if r["test_error"] and r["status"] == "ok" else np.nan for r in rs
        ]
        for lab, rs in by.items()
    }
    n_test = runs[0]["n_test"]
    paths.append(
        plots.error_by_setting(
            errs,
            out / f"{prefix}test_error.png",
            colors=colors(errs),
            reference=reference,
            title=f"Test error after {runs[0]['epochs']} epoch(s), {n_test} test images ({seeds})",
        )
    )
    if max(len(r["test_error"]) for r in runs) > 1:
        ep = {
            lab: [100 * np.asarray(r["test_error"]) for r in rs if r["test_error"]]
            for lab, rs in by.items()
        }
        ep = {k: v for k, v in ep.items() if v}
        n_ep = max(len(x) for v in ep.values() for x in v)
        paths.append(
            plots.loss_curves(
                ep,
                out / f"{prefix}test_error_by_epoch.png",
                smooth=1,
                ylabel="test error (%)",
                colors=colors(ep),
                xlabel="epoch",
                x=np.arange(1, n_ep + 1),
                title=f"Test error after each epoch ({seeds}: mean, min-max band)",
            )
        )
    ratio, steps = {}, {}
    for key in ("off", "on"):
        rs = [r for r in runs if r["setting"] == key and r["probe"]["step"]]
        if rs:
            lab = f"along the {SETTINGS[key].label} runs"
            ratio[lab] = [
                np.array(r["probe"]["last_on"]) / np.array(r["probe"]["last_off"]) for r in rs
            ]
            steps[lab] = rs[0]["probe"]["step"]
    if ratio:
        paths.append(
            plots.grad_norm_ratio(
                ratio,
                out / f"{prefix}grad_ratio.png",
                steps=steps,
                colors=colors(ratio),
                title="Last-layer gradient norm, flag on / flag off (same state, same minibatch)",
            )
        )
    for key, name in (("off", "confusion_off"), ("on", "confusion_on")):
        rs = [r for r in runs if r["setting"] == key and r["confusion"] is not None]
        if rs:
            c = np.sum([np.array(r["confusion"]) for r in rs], axis=0)
            paths.append(
                plots.confusion_counts(
                    c,
                    out / f"{prefix}{name}.png",
                    title=f"{SETTINGS[key].label}, summed over {len(rs)} seed(s)",
                )
            )
    return paths


# --------------------------------------------------------------------------- study "lr"

_LR_STYLE = {"off": ("C0", "o", "-"), "on": ("C1", "s", "-"), "quad": ("C2", "^", "--")}


def lr_figure(summary, path, *, title=None):
    """Test error against the learning rate (log axis), one panel per epoch count.

    Parameters
    ----------
    summary : list of dict
        :func:`cnn.studies.lr.summarise`.
    path : str or Path
        The PNG to write.

    Each setting is one line (mean over seeds, error bars: std); a learning
    rate where some seed diverged is marked with an ``x`` at the top of the panel.

    Returns
    -------
    Path
    """
    n_ep = max(c["n_epochs"] for c in summary)
    ncol = min(n_ep, 3)
    nrow = math.ceil(n_ep / ncol)
    fig, axes = _figure(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), squeeze=False, sharey=True)
    settings = list(dict.fromkeys(c["setting"] for c in summary))
    top = max((st["max"] for c in summary for st in c["epochs"] if st["n"]), default=1.0)
    for e in range(n_ep):
        ax = axes[e // ncol][e % ncol]
        for key in settings:
            cs = sorted((c for c in summary if c["setting"] == key), key=lambda c: c["lr"])
            color, marker, ls = _LR_STYLE.get(key, (None, "o", "-"))
            pts = [
                (c["lr"], c["epochs"][e])
                for c in cs
                if len(c["epochs"]) > e and c["epochs"][e]["n"] and not c["diverged"]
            ]
            if pts:
                x = [p[0] for p in pts]
                m = [100 * p[1]["mean"] for p in pts]
                s = [100 * p[1]["std"] for p in pts]
                eb = ax.errorbar(
                    x,
                    m,
                    yerr=s,
                    color=color,
                    marker=marker,
                    ls=ls,
                    capsize=3,
                    label=cs[0]["label"] if e == 0 else None,
                    ms=5,
                )
                eb[0].set_gid(key)  # the line of the means, findable by its setting
            bad = [c["lr"] for c in cs if c["diverged"]]
            if bad:
                ax.plot(
                    bad,
                    [100 * top * 1.2] * len(bad),
                    "x",
                    color=color,
                    ms=8,
                    label=f"{cs[0]['label']}: diverged" if e == 0 else None,
                )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")  # the differences near the best lr are a few tenths of a point
        lrs = sorted({c["lr"] for c in summary})
        ax.set_xticks(lrs)
        ax.set_xticklabels([f"{v:g}" for v in lrs], rotation=45)
        ax.set_title(f"after {e + 1} epoch{'s' if e else ''}")
        ax.set_xlabel("learning rate")
        ax.grid(alpha=0.3)
        if e % ncol == 0:
            ax.set_ylabel("test error (%)")
    for k in range(n_ep, nrow * ncol):
        axes[k // ncol][k % ncol].axis("off")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title or "Test error against the learning rate (mean +- std over seeds)")
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- study "pairings"


def pairings_figure(rows, path, *, title=None):
    """The gradient check of every pairing: max norm-relative difference, pass/FAIL.

    Parameters
    ----------
    rows : list of dict
        :func:`cnn.studies.pairings.gradient_rows` (corrected mode).
    path : str or Path

    Returns
    -------
    Path
    """
    pairs = list(dict.fromkeys((r["act"], r["loss"]) for r in rows))
    flags = ["derived", "off", "on"]
    grid = np.full((len(pairs), len(flags)), np.nan)
    text = [["" for _ in flags] for _ in pairs]
    for r in rows:
        i, j = pairs.index((r["act"], r["loss"])), flags.index(r["flag"])
        if r["defined"]:
            grid[i, j] = max(r["norm_rel"], 1e-16)
            text[i][j] = ("pass" if r["passed"] else "FAIL") + f"\n{r['norm_rel']:.0e}"
        else:
            text[i] = ["undefined"] * len(flags)
    fig, ax = _figure(figsize=(5.5, 0.42 * len(pairs) + 1.5))
    ax = ax if not isinstance(ax, np.ndarray) else ax.ravel()[0]
    import matplotlib.colors

    im = ax.imshow(np.log10(grid), cmap="RdYlGn_r", vmin=-12, vmax=0, aspect="auto")
    for i in range(len(pairs)):
        for j in range(len(flags)):
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(flags)))
    ax.set_xticklabels([f"flag {f}" for f in flags])
    ax.set_yticks(range(len(pairs)))
    ax.set_yticklabels(
        [
            f"{a} + {'cross-entropy' if loss == 'cros' else 'quadratic'}"
            + (" (clipped)" if (a, loss) == ("rect", "cros") else "")
            for a, loss in pairs
        ],
        fontsize=8,
    )
    cb = fig.colorbar(im, ax=ax, norm=matplotlib.colors.Normalize(-12, 0))
    cb.set_label("log10 max norm-relative difference")
    ax.set_title(
        title or "bpcnn's gradient vs the numerical gradient of the reported loss", fontsize=9
    )
    fig.tight_layout()
    return _save(fig, path)
