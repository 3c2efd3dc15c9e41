"""Study "pairings": which output activation + loss pairs give ``delta = a - y``?

``bpcnn`` starts the output error at ``e = a - y`` and, when the flag is on,
multiplies it by the output activation's derivative. ``a - y`` is the exact
gradient at the pre-activation for three canonical pairs only: a linear
output (``none``) with the quadratic loss, a sigmoid with binary
cross-entropy, a softmax with categorical cross-entropy (the derivative
cancels). Every other pair needs the flag on (``(a - y) f'(z)``, the
quadratic loss's gradient). Binary cross-entropy on a ReLU output (clipped,
as learners compute it) is not a pair the flag can fix: neither ``a - y`` nor
``(a - y) f'(z)`` is its gradient.

* :func:`gradient_rows` -- for every output x loss x flag (derived, off,
  on): ``bpcnn``'s gradient against the numerical gradient of the loss being
  reported (corrected mode; faithful mode where its gradient differs), and
  against the quadratic loss's;
* :func:`findings` -- the claims above, each computed from the rows;
* :func:`specs`, :func:`run_spec`, :func:`summarise_mnist` -- one epoch of
  Example 3 on MNIST with the output and loss of each classification pair;
* :func:`format_report` -- the Markdown report.

The port refuses ``loss_func='cros'`` for an output other than ``sigm`` or
``soft`` (``ValueError``); the ReLU + BCE case is computed here, with its own
numerical loss, without changing that rule.
"""

from __future__ import annotations

import numpy as np

from .. import __version__
from ..backward import bpcnn, derive_flag
from ..forward import ffcnn, output_matrix
from ..network import add_conv_layer, add_fc_layer, add_pool_layer, example_network, initcnn
from .report import pct, stats

ACTS = ("sigm", "soft", "none", "tanh", "rect", "plus")
LOSSES = ("quad", "cros")
FLAGS = ("derived", "off", "on")
CANONICAL = (("none", "quad"), ("sigm", "cros"), ("soft", "cros"))
EPS_CLIP = 1e-7
"""Clipping of the ReLU output for binary cross-entropy: ``clip(a, eps, 1 - eps)``."""
EPSILON, TOL = 1e-4, 1e-7
"""Central-difference step and absolute tolerance (the original's ``gradient_checker``)."""
SEEDS = 2
QUICK = {"seeds": 1, "n_train": 6000, "n_test": 2000, "n_images": 10}

UNDEFINED = {
    "none": "a linear output takes any real value: log(a) and log(1 - a) are undefined "
    "outside (0, 1)",
    "tanh": "tanh outputs lie in (-1, 1): log(a) is undefined for a <= 0",
    "plus": "softplus outputs lie in (0, inf): log(1 - a) is undefined for a >= 1",
}
RECT_CROS = (
    "binary cross-entropy on a (leaky) ReLU output, computed as learners do with "
    f"a clipped to [{EPS_CLIP:g}, 1 - {EPS_CLIP:g}]; the port refuses it "
    "(loss_func='cros' needs sigm/soft), so the study computes it"
)

MNIST_PAIRS = (
    ("sigm", "cros", "derived"),
    ("sigm", "cros", "on"),
    ("soft", "cros", "derived"),
    ("soft", "cros", "on"),
    ("none", "quad", "derived"),
    ("sigm", "quad", "derived"),
    ("soft", "quad", "derived"),
    ("tanh", "quad", "derived"),
    ("rect", "quad", "derived"),
    ("plus", "quad", "derived"),
)
"""The pairs trained on MNIST for one epoch (Example 3 with that output and loss)."""


# --------------------------------------------------------------------------- losses


def loss_value(a, y, act, loss):
    """The loss of outputs ``a`` (N, n) for targets ``y`` (N, n), averaged over examples.

    ``quad``: ``sum((a - y)^2) / 2N``; ``cros``: binary cross-entropy for
    ``sigm`` (and, clipped, for ``rect``), categorical for ``soft``.
    """
    N = a.shape[0]
    if loss == "quad":
        return float(((a - y) ** 2).sum() / (2 * N))
    if act == "soft":
        return float(-(y * np.log(a)).sum() / N)
    if act == "rect":
        a = np.clip(a, EPS_CLIP, 1 - EPS_CLIP)
    return float(-(y * np.log(a) + (1 - y) * np.log(1 - a)).sum() / N)


def defined(act, loss):
    """``(True, '')`` or ``(False, reason)``: can ``loss`` be computed on ``act`` outputs?"""
    if loss == "quad" or act in ("sigm", "soft", "rect"):
        return True, ""
    return False, UNDEFINED[act]


# --------------------------------------------------------------------------- gradient checks


def check_net(act, seed=0, mode="corrected"):
    """c(tanh 3, 3x3) - p2 - f(tanh 8) - f(``act`` 4) on 10 x 10 images (one conv layer,
    so the faithful mode's D1 does not enter)."""
    net = initcnn((10, 10), 0.01, seed=seed, mode=mode)
    add_conv_layer(net, 3, 3, "tanh")
    add_pool_layer(net, 2)
    add_fc_layer(net, 8, "tanh")
    add_fc_layer(net, 4, act)
    return net


def _flag_value(act, loss, flag):
    if flag == "derived":
        return derive_flag(loss, act)
    return flag == "on"


def _analytic(net, x, y, flag):
    w = net.copy()
    w.loss_func = "quad"  # bpcnn's gradient does not depend on it; lets any output through
    w.calc_last_layer_act_derivative = bool(flag)
    ffcnn(w, x)
    bpcnn(w, y)
    return [getattr(w.layers[i], "d" + name).copy() for i, name, _ in w.parameters()]


def _numerical(net, x, y, act, loss):
    """Central differences of :func:`loss_value` for every parameter."""
    w = net.copy()
    out = []
    for _, _, arr in w.parameters():
        g = np.empty_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + EPSILON
            lp = loss_value(output_matrix(ffcnn(w, x)), y, act, loss)
            arr[idx] = old - EPSILON
            lm = loss_value(output_matrix(ffcnn(w, x)), y, act, loss)
            arr[idx] = old
            g[idx] = (lp - lm) / (2 * EPSILON)
        out.append(g)
    return out


def _compare(analytic, numeric):
    max_abs = max(float(np.abs(a - n).max()) for a, n in zip(analytic, numeric))
    rel = []
    for a, n in zip(analytic, numeric):
        norm = np.linalg.norm(a) + np.linalg.norm(n)
        rel.append(float(np.linalg.norm(a - n) / norm) if norm > 0 else 0.0)
    return max_abs, max(rel)


def gradient_rows(*, seed=0, n_images=20, quick=False):
    """The gradient check of every output x loss x flag.

    Parameters
    ----------
    seed : int
        Seed of the network and of the random images ``(n_images, 10, 10)``
        with one-hot targets over 4 classes.
    quick : bool
        10 images instead of 20.

    Returns
    -------
    list of dict
        ``act``, ``loss``, ``flag`` (``derived``/``off``/``on``), ``flag_value``
        (the flag used), ``mode``, ``defined`` and ``reason``; for defined
        rows ``passed`` (every ``|analytic - numeric| <= 1e-7``), ``max_abs``,
        ``norm_rel`` (max over arrays of ``||a - n|| / (||a|| + ||n||)``),
        ``passed_quad``/``norm_rel_quad`` (the same against the quadratic
        loss). Faithful rows only where the faithful gradient differs.
    """
    if quick:
        n_images = QUICK["n_images"]
    import numba

    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        rng = np.random.default_rng(seed + 1)
        x = rng.random((n_images, 10, 10))
        y = np.eye(4)[rng.integers(0, 4, n_images)]
        rows = []
        for act in ACTS:
            nets = {m: check_net(act, seed, m) for m in ("corrected", "faithful")}
            num_quad = _numerical(nets["corrected"], x, y, act, "quad")
            for loss in LOSSES:
                ok, reason = defined(act, loss)
                num = (
                    num_quad
                    if loss == "quad"
                    else _numerical(nets["corrected"], x, y, act, loss)
                    if ok
                    else None
                )
                for flag in FLAGS:
                    fv = _flag_value(act, loss, flag)
                    grads = {}
                    for mode in ("corrected", "faithful"):
                        g = _analytic(nets[mode], x, y, fv)
                        if mode == "faithful" and all(
                            np.array_equal(a, b) for a, b in zip(g, grads["corrected"])
                        ):
                            continue
                        grads[mode] = g
                        row = {
                            "act": act,
                            "loss": loss,
                            "flag": flag,
                            "flag_value": fv,
                            "mode": mode,
                            "defined": ok,
                            "reason": reason
                            or (RECT_CROS if (act, loss) == ("rect", "cros") else ""),
                        }
                        if ok:
                            row["max_abs"], row["norm_rel"] = _compare(g, num)
                            row["passed"] = row["max_abs"] <= TOL
                            qa, row["norm_rel_quad"] = _compare(g, num_quad)
                            row["passed_quad"] = qa <= TOL
                        rows.append(row)
        return rows
    finally:
        numba.set_num_threads(threads)


def rows_json(rows):
    """The rows as plain JSON values."""
    return [
        {k: (bool(v) if isinstance(v, (bool, np.bool_)) else v) for k, v in r.items()} for r in rows
    ]


def _row(rows, act, loss, flag, mode="corrected"):
    return next(
        r for r in rows if (r["act"], r["loss"], r["flag"], r["mode"]) == (act, loss, flag, mode)
    )


def findings(rows):
    """The study's claims, each computed from the rows.

    Returns
    -------
    dict
        ``canonical_pass_flag_off``: each canonical pair passes with the flag
        off; ``others_need_flag_on``: every other defined pair (ReLU + BCE
        apart) fails with the flag off and passes with it on;
        ``flag_on_sigm_cros_is_quad``: with a sigmoid output the flag-on
        gradient fails against the cross-entropy and passes against the
        quadratic loss; ``rect_cros_fails``: ReLU + clipped BCE fails with every
        flag; ``undefined``: the pairs shown as undefined with their reason.
    """
    corrected = [r for r in rows if r["mode"] == "corrected"]
    canon = {f"{a}+{lo}": bool(_row(rows, a, lo, "off")["passed"]) for a, lo in CANONICAL}
    others = {}
    for act in ACTS:
        for loss in LOSSES:
            if (act, loss) in CANONICAL or (act, loss) == ("rect", "cros"):
                continue
            if not defined(act, loss)[0]:
                continue
            off, on = _row(rows, act, loss, "off"), _row(rows, act, loss, "on")
            others[f"{act}+{loss}"] = bool(on["passed"] and not off["passed"])
    sig_on = _row(rows, "sigm", "cros", "on")
    rect = [r for r in corrected if (r["act"], r["loss"]) == ("rect", "cros")]
    return {
        "canonical_pass_flag_off": canon,
        "others_need_flag_on": others,
        "flag_on_sigm_cros_is_quad": bool(not sig_on["passed"] and sig_on["passed_quad"]),
        "rect_cros_fails": bool(all(not r["passed"] for r in rect)),
        "rect_cros_norm_rel": {r["flag"]: r["norm_rel"] for r in rect},
        "undefined": {
            f"{r['act']}+{r['loss']}": r["reason"]
            for r in corrected
            if not r["defined"] and r["flag"] == "derived"
        },
    }


def _loss_name(act, loss):
    if loss == "quad":
        return "quadratic"
    if act == "soft":
        return "categorical cross-entropy"
    if act == "rect":
        return "binary cross-entropy (clipped)"
    return "binary cross-entropy"


def _delta(act, fv, mode):
    if not fv:
        return "a - y"
    if act == "none":
        return "(a - y) a" if mode == "faithful" else "(a - y) * 1"
    return f"(a - y) {act}'(z)"


def format_gradient_table(rows):
    """Markdown: every output x loss x flag with the gradient check's result."""
    lines = [
        f"Gradient check of bpcnn against the numerical gradient of the loss being reported: "
        f"c(tanh 3, 3x3) - p2 - f(tanh 8) - f(OUTPUT 4), random 10x10 images, one-hot "
        f"targets, central differences (epsilon {EPSILON:g}), pass if every |analytic - "
        f"numeric| <= {TOL:g}. Corrected mode; faithful rows only where its gradient differs.",
        "",
        "| output | loss | flag | flag used | bpcnn's delta | mode | check | max abs diff "
        "| max norm-rel diff | against the quadratic loss |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if not r["defined"]:
            if r["flag"] == "derived" and r["mode"] == "corrected":
                lines.append(
                    f"| {r['act']} | {_loss_name(r['act'], r['loss'])} | any | | "
                    f"| | undefined: {r['reason']} | | | |"
                )
            continue
        head = (
            f"| {r['act']} | {_loss_name(r['act'], r['loss'])} | {r['flag']} "
            f"| {int(r['flag_value'])} | {_delta(r['act'], r['flag_value'], r['mode'])} "
            f"| {r['mode']} |"
        )
        canon = (r["act"], r["loss"]) in CANONICAL and not r["flag_value"]
        res = "pass" if r["passed"] else "**FAIL**"
        if canon and r["passed"]:
            res = "**pass** (canonical)"
        lines.append(
            head + f" {res} | {r['max_abs']:.1e} | {r['norm_rel']:.1e} "
            f"| {'pass' if r['passed_quad'] else 'fail'} ({r['norm_rel_quad']:.1e}) |"
        )
    return "\n".join(lines) + "\n"


def format_findings(f):
    """The findings as Markdown bullet points."""
    canon = ", ".join(
        f"{k} {'passes' if v else 'FAILS'}" for k, v in f["canonical_pass_flag_off"].items()
    )
    need = [k for k, v in f["others_need_flag_on"].items() if v]
    not_need = [k for k, v in f["others_need_flag_on"].items() if not v]
    rel = ", ".join(f"flag {k}: {v:.2f}" for k, v in f["rect_cros_norm_rel"].items())
    lines = [
        f"* The three canonical pairs with the flag off: {canon}.",
        f"* Every other defined pair needs the flag on (fails off, passes on): "
        f"{', '.join(need) or 'none'}"
        + (f"; NOT so for: {', '.join(not_need)}" if not_need else "")
        + ".",
        "* Sigmoid + cross-entropy with the flag forced on "
        + (
            "fails against the cross-entropy and passes against the quadratic loss: it is the "
            "quadratic loss's gradient."
            if f["flag_on_sigm_cros_is_quad"]
            else "does NOT behave as the quadratic loss here."
        ),
        "* ReLU + binary cross-entropy (clipped): "
        + ("fails with every flag" if f["rect_cros_fails"] else "does NOT fail everywhere")
        + f" (max norm-rel diff {rel}). Its gradient at the pre-activation is "
        "(a - y) / (a (1 - a)) * relu'(z) where a lies inside the clipping, and 0 where it "
        "is clipped: the 1 / (a (1 - a)) of the cross-entropy cancels only against the "
        "sigmoid's derivative a (1 - a). Neither a - y (flag off) nor (a - y) relu'(z) "
        "(flag on) is it, and a ReLU output is not confined to (0, 1) anyway.",
        "* Undefined: " + "; ".join(f"{k}: {v}" for k, v in f["undefined"].items()) + ".",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- MNIST

TASK = "cnn.studies.pairings:run_spec"


def specs(dataset, *, seeds=range(SEEDS), epochs=1, pairs=MNIST_PAIRS, lr=0.01):
    """One training of Example 3 per (output, loss, flag) in ``pairs`` and seed."""
    train_x, _, test_x, _ = dataset.arrays
    return [
        {
            "task": TASK,
            "study": "pairings",
            "setting": f"{act}+{loss}, flag {flag}",
            "label": f"{act} + {_loss_name(act, loss)}, flag {flag}",
            "act": act,
            "loss": loss,
            "flag": flag,
            "seed": int(seed),
            "epochs": int(epochs),
            "lr": float(lr),
            "batch_size": 50,
            "mode": "faithful",
            "dtype": "float64",
            "data": dataset.fingerprint,
            "n_train": int(len(train_x)),
            "n_test": int(len(test_x)),
            "version": __version__,
        }
        for act, loss, flag in pairs
        for seed in seeds
    ]


def run_spec(spec, data):
    """Worker entry: Example 3 with the spec's output activation, loss and flag; test error."""
    from ..training import predictcnn, traincnn
    from .flag import _guard_off, diverged_errors

    train_x, train_y, test_x, test_y = data
    net = example_network(3, seed=spec["seed"], learning_rate=spec["lr"])
    net.layers[-1].act_func = spec["act"]
    net.loss_func = spec["loss"]
    flag = None if spec["flag"] == "derived" else spec["flag"] == "on"
    true = np.asarray(test_y).argmax(axis=1)
    rec = {
        "test_error": [],
        "misclassified": [],
        "n_test": int(len(true)),
        "status": "ok",
        "flag_value": None,
        "loss_array": [],
    }
    for _ in range(spec["epochs"]):
        try:
            traincnn(
                net,
                train_x,
                train_y,
                1,
                spec["batch_size"],
                calc_last_layer_act_derivative=flag,
                verbose=False,
                **_guard_off(),
            )
        except diverged_errors() as exc:
            rec["status"] = "diverged: " + " ".join(str(exc).split())
            break
        finally:
            rec["loss_array"].extend(float(v) for v in net.loss_array)
        _, pred = predictcnn(net, test_x)
        wrong = int(np.count_nonzero(pred != true))
        rec["misclassified"].append(wrong)
        rec["test_error"].append(wrong / len(true))
    rec["flag_value"] = bool(net.calc_last_layer_act_derivative)
    return rec


def summarise_mnist(finished):
    """Per (output, loss, flag): the test error after the last epoch over seeds."""
    cells = {}
    for spec, rec in finished:
        c = cells.setdefault(
            (spec["act"], spec["loss"], spec["flag"]),
            {
                "act": spec["act"],
                "loss": spec["loss"],
                "flag": spec["flag"],
                "flag_value": rec["flag_value"],
                "seeds": [],
                "errors": [],
                "diverged": 0,
            },
        )
        c["seeds"].append(spec["seed"])
        if rec["status"] == "ok" and rec["test_error"]:
            c["errors"].append(rec["test_error"][-1])
        else:
            c["diverged"] += 1
    out = list(cells.values())
    for c in out:
        c["error"] = stats(c["errors"])
    return out


def format_mnist(cells):
    lines = [
        "| output | loss | flag | flag used | seeds | test error % mean | std | min | max "
        "| diverged |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in cells:
        e = c["error"]
        lines.append(
            f"| {c['act']} | {_loss_name(c['act'], c['loss'])} | {c['flag']} "
            f"| {int(bool(c['flag_value']))} | {len(c['seeds'])} "
            f"| **{pct(e['mean'])}** | {pct(e['std'])} | {pct(e['min'])} "
            f"| {pct(e['max'])} | {c['diverged']} |"
        )
    return "\n".join(lines) + "\n"


def meta():
    """What the report states about the checks."""
    return {
        "check_network": "c(tanh 3, 3x3)-p2-f(tanh 8)-f(OUTPUT 4) on 10x10",
        "epsilon": EPSILON,
        "tol": TOL,
        "clip": EPS_CLIP,
        "mnist_lr": 0.01,
        "mnist_network": "Example 3 with the output activation replaced",
    }


def format_report(rows, mnist, meta=None, note=""):
    """The whole report: gradient checks, findings, MNIST table."""
    lines = []
    if note:
        lines += [note, ""]
    if meta:
        lines += [f"{meta['machine']}; {meta['date']}; command: `{meta['command']}`", ""]
    lines += [
        "## Gradient checks",
        "",
        format_gradient_table(rows),
        "## Findings",
        "",
        format_findings(findings(rows)),
        "## MNIST after one epoch",
        "",
    ]
    if meta:
        lines += [
            f"Example 3 with its output activation and loss replaced, learning rate 0.01, "
            f"batch 50, {meta['n_train']} training / {meta['n_test']} test images, "
            f"{meta['epochs']} epoch(s).",
            "",
        ]
    lines += [format_mnist(mnist)]
    return "\n".join(lines)
