"""Study "lr": is the flag's cost only the step size?

Forcing the flag on multiplies every output error by ``a(1 - a) <= 1/4``
(``docs/flag.md``); four times the learning rate closes most of the gap to the
flag off, not all. This study trains Example 3 with the flag off and forced on
(and ``quad``, the same computation as flag on, for the record) over a
log-spaced learning-rate grid, several seeds and epochs, and asks: does the
flag on at *its* best learning rate come within the seed spread of the flag
off at *its* best?

* :func:`specs` -- the run specs (one training per setting x lr x seed, test
  error after every epoch);
* :func:`summarise` -- per (setting, lr, epoch): statistics over seeds, the
  diverged runs counted apart;
* :func:`best` and :func:`verdict` -- the best lr of each setting and the
  answer, computed from the numbers;
* :func:`format_table` -- the Markdown tables and the verdict.
"""

from __future__ import annotations

from . import flag
from .report import pct, seed_text, stats

LRS = tuple(0.0025 * 2**k for k in range(7))
"""The default grid: 0.0025, 0.005, ..., 0.16 (factors of 2)."""
SETTINGS = ("off", "on", "quad")
SEEDS = 3
EPOCHS = 5
QUICK = {"lrs": (0.005, 0.02, 0.08), "seeds": 2, "epochs": 2, "n_train": 6000, "n_test": 2000}
"""``--quick``: 3 learning rates, 2 seeds, 2 epochs, 6,000 / 2,000 images."""


def specs(dataset, *, lrs=LRS, seeds=range(SEEDS), epochs=EPOCHS, settings=SETTINGS, quad_seeds=1):
    """The study's run specs.

    Parameters
    ----------
    dataset : cnn.studies.run.Dataset
    lrs : sequence of float
    seeds : sequence of int
    epochs : int
        Each run trains this many epochs; the test error is recorded after each.
    settings : sequence of str
        Keys of :data:`cnn.studies.flag.SETTINGS`.
    quad_seeds : int or None
        ``quad`` gives the same numbers as ``on`` (the same computation): it is
        run for the first ``quad_seeds`` seeds only, as a check (``None``: all).

    Returns
    -------
    list of dict
    """
    seeds = list(seeds)
    out = []
    # seed by seed, each seed over the whole grid: a study stopped early has every
    # (setting, lr) cell for its first seeds rather than a few settings for all seeds
    for n, seed in enumerate(seeds):
        for lr in lrs:
            for key in settings:
                if key == "quad" and quad_seeds and n >= quad_seeds:
                    continue
                out.append(
                    flag.spec(key, seed, dataset, epochs, study="lr", lr=float(lr), probe_every=0)
                )
    return out


def _diverged(rec):
    return rec["status"] != "ok"


def summarise(finished):
    """Statistics over seeds per (setting, lr, epoch).

    Parameters
    ----------
    finished : list of (spec, record)
        From :attr:`cnn.studies.run.Outcome.finished`.

    Returns
    -------
    list of dict
        One per (setting, lr) in the order of the specs: ``setting``,
        ``label``, ``lr``, ``seeds``, ``diverged`` (seeds whose run stopped on
        a non-finite or diverging loss), ``epochs``: per epoch the
        :func:`~cnn.studies.report.stats` of the test error over the seeds
        that reached it (diverged runs excluded), ``by_seed``: seed -> list of
        test errors.
    """
    cells = {}
    for spec, rec in finished:
        c = cells.setdefault(
            (spec["setting"], spec["lr"]),
            {
                "setting": spec["setting"],
                "label": spec["label"],
                "lr": spec["lr"],
                "n_epochs": spec["epochs"],
                "seeds": [],
                "diverged": [],
                "by_seed": {},
            },
        )
        c["seeds"].append(spec["seed"])
        c["by_seed"][spec["seed"]] = list(rec["test_error"])
        if _diverged(rec):
            c["diverged"].append(spec["seed"])
    order = {k: i for i, k in enumerate(flag.SETTINGS)}
    out = []
    for c in sorted(cells.values(), key=lambda c: (order.get(c["setting"], 99), c["lr"])):
        c["epochs"] = [
            stats(
                [
                    errs[e]
                    for s, errs in c["by_seed"].items()
                    if s not in c["diverged"] and len(errs) > e
                ]
            )
            for e in range(c["n_epochs"])
        ]
        out.append(c)
    return out


def best(summary, epoch):
    """Per setting: the cell with the lowest mean test error after ``epoch`` (1-based).

    Only cells where no seed diverged and every seed reached ``epoch`` count.

    Returns
    -------
    dict
        setting -> ``{"lr", "stats", "label"}`` (settings with no such cell are left out).
    """
    out = {}
    for c in summary:
        st = c["epochs"][epoch - 1] if len(c["epochs"]) >= epoch else None
        if st is None or st["n"] == 0 or c["diverged"] or st["n"] < len(c["seeds"]):
            continue
        b = out.get(c["setting"])
        if b is None or st["mean"] < b["stats"]["mean"]:
            out[c["setting"]] = {"lr": c["lr"], "stats": st, "label": c["label"]}
    return out


def verdict(summary, epoch):
    """Does the flag on at its best lr come within the seed spread of the flag off at its best?

    "Within" means ``mean_on - mean_off <= std_off`` (the std over seeds of the
    flag off at its best lr, ddof 1).

    Returns
    -------
    dict or None
        ``epoch``, ``off`` and ``on`` (as :func:`best`), ``gap`` (points of
        error, as a fraction), ``spread`` (``std_off``), ``within`` (bool),
        ``overlap`` (the seeds' min-max ranges overlap), ``edges`` (which
        best lr lies at an end of the grid: not bracketed), ``text``; ``None``
        when one of the two has no usable cell.
    """
    b = best(summary, epoch)
    if "off" not in b or "on" not in b:
        return None
    off, on = b["off"], b["on"]
    gap = on["stats"]["mean"] - off["stats"]["mean"]
    spread = off["stats"]["std"]
    within = gap <= spread
    overlap = on["stats"]["min"] <= off["stats"]["max"]
    edges = []
    for key, b in (("off", off), ("on", on)):
        grid = sorted(c["lr"] for c in summary if c["setting"] == key)
        if len(grid) > 1 and b["lr"] in (grid[0], grid[-1]):
            edges.append(
                f"flag {key}'s best lr is the "
                f"{'largest' if b['lr'] == grid[-1] else 'smallest'} of the grid"
            )
    ep = f"{epoch} epoch{'s' if epoch != 1 else ''}"
    text = (
        f"After {ep}: flag off is best at lr {off['lr']:g} ({pct(off['stats']['mean'])} "
        f"+- {pct(off['stats']['std'])} %), flag on at lr {on['lr']:g} "
        f"({pct(on['stats']['mean'])} +- {pct(on['stats']['std'])} %): the gap is "
        f"{100 * gap:+.2f} points, "
        + (
            "**within** the flag-off seed spread"
            if within
            else "**outside** the flag-off seed spread"
        )
        + f" ({pct(spread)}); the seeds' ranges {'overlap' if overlap else 'do not overlap'}; "
        f"best lr ratio on/off {on['lr'] / off['lr']:g}."
        + (
            f" Not bracketed: {' and '.join(edges)}, so its optimum may lie beyond "
            f"(extend --lrs; the finished runs are reused)."
            if edges
            else ""
        )
    )
    return {
        "epoch": epoch,
        "off": off,
        "on": on,
        "gap": gap,
        "spread": spread,
        "within": within,
        "overlap": overlap,
        "edges": edges,
        "text": text,
    }


def format_table(summary, meta=None, note=""):
    """Markdown: the test error per (setting, lr, epoch), the best lr per setting, the verdict."""
    n_ep = max((c["n_epochs"] for c in summary), default=0)
    lines = []
    if note:
        lines += [note, ""]
    if meta:
        lines += [
            f"Example 3, {meta['n_train']} training / {meta['n_test']} test images, "
            f"batch {meta['batch_size']}, batches in order, seeds "
            f"{seed_text(meta['seeds'])} (quad: seed {seed_text(meta['quad_seeds'])}); "
            f"{meta['machine']}; {meta['date']}.",
            "",
        ]
    lines += [
        "Test error (%) after each epoch: mean +- std over seeds (ddof 1); "
        "diverged runs are counted apart.",
        "",
        "| setting | lr | seeds | "
        + " | ".join(f"epoch {e + 1}" for e in range(n_ep))
        + " | diverged |",
        "| --- | --- | --- |" + " --- |" * n_ep + " --- |",
    ]
    for c in summary:
        cells = []
        for st in c["epochs"]:
            if st["n"] == 0:
                cells.append("diverged")
            elif st["n"] == 1:
                cells.append(pct(st["mean"]))
            else:
                cells.append(f"{pct(st['mean'])} +- {pct(st['std'])}")
        cells += [""] * (n_ep - len(cells))
        div = f"{len(c['diverged'])} (seed {seed_text(c['diverged'])})" if c["diverged"] else "0"
        lines.append(
            f"| {c['label']} | {c['lr']:g} | {len(c['seeds'])} | "
            + " | ".join(cells)
            + f" | {div} |"
        )
    lines += [
        "",
        "Best learning rate of each setting (lowest mean test error, no seed diverged):",
        "",
        "| epochs | setting | best lr | test error % mean | std | min | max |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in range(1, n_ep + 1):
        for b in best(summary, e).values():
            st = b["stats"]
            lines.append(
                f"| {e} | {b['label']} | {b['lr']:g} | **{pct(st['mean'])}** "
                f"| {pct(st['std'])} | {pct(st['min'])} | {pct(st['max'])} |"
            )
    lines += ["", "Verdict (computed from the numbers above):", ""]
    for e in range(1, n_ep + 1):
        v = verdict(summary, e)
        lines.append(
            "* " + (v["text"] if v else f"After {e} epoch(s): not enough finished runs to compare.")
        )
    same = _quad_identical(summary)
    if same is not None:
        word = "identical" if same else "DIFFERENT"
        lines += [
            "",
            f"* quad loss and flag on (forced) gave {word}"
            f" test errors at every learning rate and epoch for the seeds run with both.",
        ]
    return "\n".join(lines) + "\n"


def _quad_identical(summary):
    on = {c["lr"]: c["by_seed"] for c in summary if c["setting"] == "on"}
    checked = False
    for c in summary:
        if c["setting"] != "quad" or c["lr"] not in on:
            continue
        for seed, errs in c["by_seed"].items():
            if seed in on[c["lr"]]:
                checked = True
                if on[c["lr"]][seed] != errs:
                    return False
    return True if checked else None


def csv_text(finished):
    """One CSV row per run and epoch: setting, lr, seed, epoch, test_error, status."""
    rows = ["setting,lr,seed,epoch,test_error,misclassified,n_test,status"]
    for spec, rec in finished:
        for e, err in enumerate(rec["test_error"]):
            rows.append(
                f"{spec['setting']},{spec['lr']!r},{spec['seed']},{e + 1},{err!r},"
                f"{rec['misclassified'][e]},{rec['n_test']},"
                f"{rec['status'].split(':')[0]}"
            )
    return "\n".join(rows) + "\n"


__all__ = [
    "LRS",
    "SETTINGS",
    "SEEDS",
    "EPOCHS",
    "QUICK",
    "specs",
    "summarise",
    "best",
    "verdict",
    "format_table",
    "csv_text",
]
