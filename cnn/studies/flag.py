"""The flag study: Example 3 with the CalcLastLayerActDerivative flag off and forced on.

With a sigmoid output and the cross-entropy loss, the error at the output's
pre-activation is ``a - y``: the sigmoid's derivative ``a(1 - a)`` cancels.
The original's flag multiplies it in anyway when it is on; that gives exactly
the quadratic loss's gradient, so a network with the flag forced on trains on
the quadratic loss while it reports the cross-entropy (``docs/flag.md``).

* :data:`SETTINGS` -- the compared settings;
* :func:`run_one` -- train Example 3 in one setting from one seed, record
  everything (test error per epoch, losses, gradient norms); also the
  training of the other studies;
* :func:`specs`, :func:`run_spec` -- the study's run specs and the worker's
  entry (see :mod:`cnn.studies.run`);
* :func:`summarise`, :func:`format_table`, :func:`results_csv` -- the table;
* :func:`gradcheck_table` -- which loss the gradients belong to.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import io
import math
import time
from dataclasses import dataclass

import numpy as np

from .. import __version__
from ..backward import compute_loss
from ..forward import ffcnn, output_matrix
from ..gradcheck import gradient_checker
from ..network import add_conv_layer, add_fc_layer, add_pool_layer, example_network, initcnn
from ..training import predictcnn, traincnn
from .report import num as _num
from .report import pct as _pct
from .report import seed_text as _seed_text
from .report import stats as _stats

BATCH_SIZE = 50
LEARNING_RATE = 0.01


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Setting:
    """One way of training Example 3.

    ``flag``: ``None`` derives it as ``traincnn`` does, ``True`` forces it on.
    ``loss_func``: set on the network before training. ``lr_factor``
    multiplies the learning rate. ``mode``: ``"faithful"`` or ``"corrected"``.
    """

    key: str
    label: str
    flag: object
    loss_func: str
    lr_factor: float
    mode: str
    what: str

    def apply(self, net, lr=LEARNING_RATE):
        """Set this setting's loss, learning rate and mode on ``net`` (in place)."""
        net.loss_func = self.loss_func
        net.learning_rate = lr * self.lr_factor
        net.mode = self.mode
        return net


SETTINGS = {
    s.key: s
    for s in (
        Setting(
            "off",
            "flag off (derived)",
            None,
            "auto",
            1.0,
            "faithful",
            "cross-entropy, flag 0 as traincnn derives it: delta = a - y",
        ),
        Setting(
            "on",
            "flag on (forced)",
            True,
            "auto",
            1.0,
            "faithful",
            "cross-entropy reported, flag forced to 1: delta = (a - y) a (1 - a)",
        ),
        Setting(
            "quad",
            "quad loss",
            None,
            "quad",
            1.0,
            "faithful",
            "loss_func = 'quad', flag 1 as derived: the same gradients as flag on",
        ),
        Setting(
            "on-lr4",
            "flag on, lr x4",
            True,
            "auto",
            4.0,
            "faithful",
            "flag forced on, learning rate x4 (max of a(1-a) is 1/4)",
        ),
        Setting(
            "corrected",
            "corrected, flag off",
            None,
            "auto",
            1.0,
            "corrected",
            "flag 0, mode='corrected' (the original's gradient defects fixed, D1 above all)",
        ),
    )
}
"""The compared settings, by key, in the order of the table."""


def get_setting(name):
    """A :class:`Setting` from its key (``"off"``) or its label (``"flag off (derived)"``)."""
    if isinstance(name, Setting):
        return name
    if name in SETTINGS:
        return SETTINGS[name]
    for s in SETTINGS.values():
        if name == s.label:
            return s
    raise ValueError(f"unknown setting {name!r}; valid: {', '.join(SETTINGS)}")


# --------------------------------------------------------------------------- one run


def params_sha256(net):
    """SHA-256 of every parameter array (K, W, b, in layer order): identifies initial weights."""
    h = hashlib.sha256()
    for i, name, a in net.parameters():
        h.update(f"{i}{name}{a.shape}".encode())
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()


def _grads(net):
    return [getattr(net.layers[i], "d" + name) for i, name, _ in net.parameters()]


def _norm(arrays):
    return math.sqrt(sum(float(np.vdot(a, a)) for a in arrays))


def grad_norms_on_off(net, x, y):
    """Gradient norms with the flag off and on, from the same state and minibatch.

    Runs on a copy (``net`` is unchanged): one forward pass, then ``bpcnn``
    with the flag off and with it on.

    Returns
    -------
    dict
        ``last_off``, ``last_on``: norm of the last layer's weight gradient
        (``dW``, or ``dK``); ``all_off``, ``all_on``: norm of all parameter
        gradients together; ``factor_wrong`` and ``factor_right``: the mean
        of the flag's factor ``a(1 - a)`` over the outputs on the wrong side
        (``|a - y| > 0.5``) and over the others (``None`` if there are none);
        ``frac_wrong``: the fraction of outputs on the wrong side.
    """
    from ..backward import bpcnn

    work = net.copy()
    work.clear_runtime()
    ffcnn(work, x)
    out = {}
    for flag, tag in ((False, "off"), (True, "on")):
        work.calc_last_layer_act_derivative = flag
        bpcnn(work, y)
        g = _grads(work)
        last = work.layers[-1]
        out["last_" + tag] = _norm([last.dW if last.type == "f" else last.dK])
        out["all_" + tag] = _norm(g)
    a = output_matrix(work)
    factor = a * (1 - a)
    wrong = np.abs(a - np.asarray(y, dtype=a.dtype)) > 0.5
    out["factor_wrong"] = float(factor[wrong].mean()) if wrong.any() else None
    out["factor_right"] = float(factor[~wrong].mean()) if (~wrong).any() else None
    out["frac_wrong"] = float(wrong.mean())
    return out


def _both_losses(net, y):
    """Cross-entropy and quadratic loss of the network's current forward pass."""
    saved = net.loss_func
    try:
        net.loss_func = "cros"
        ce = compute_loss(net, y)
        net.loss_func = "quad"
        q = compute_loss(net, y)
    finally:
        net.loss_func = saved
    return ce, q


def _finite_or_none(v):
    return v if v is None or math.isfinite(v) else None


def diverged_errors():
    """The exceptions that mean "this run diverged": data for a study, not a failure.

    ``FloatingPointError`` (``cnn.NonFiniteError``: NaN or Inf) and any
    divergence-guard error of :mod:`cnn.training` (a class whose name holds
    ``Diverg``).
    """
    from .. import training

    extra = tuple(
        v
        for k, v in vars(training).items()
        if "Diverg" in k and isinstance(v, type) and issubclass(v, Exception)
    )
    return (FloatingPointError,) + extra


def _guard_off():
    """The keyword that turns a divergence guard of ``traincnn`` off, if it has one."""
    params = inspect.signature(traincnn).parameters
    for name in ("divergence_guard", "guard", "check_divergence"):
        if name in params:
            return {name: False}
    return {}


def run_one(
    setting,
    seed,
    data,
    epochs=1,
    *,
    net=None,
    batch_size=BATCH_SIZE,
    lr=LEARNING_RATE,
    probe_every=25,
    log=None,
):
    """Train Example 3 in one setting from one seed and record the results.

    Parameters
    ----------
    setting : str or Setting
        A key of :data:`SETTINGS` (or a label).
    seed : int
        Seed of the initial weights (``cnn.example_network(3, seed=seed)``).
    data : tuple
        ``(train_x, train_y, test_x, test_y)``: images ``(N, 28, 28)`` and
        one-hot labels ``(N, 10)``.
    epochs : int
        Epochs; the test error is measured after each.
    net : CNN, optional
        The initial network (not modified; the run trains a copy). Default:
        built from ``seed``. All settings of one seed should get the same one.
    batch_size, lr : int, float
        Minibatch size (must divide the training set) and base learning rate.
    probe_every : int
        Every this many minibatches (and before the first), compare the
        gradient norms with the flag off and on at the run's current state
        and the minibatch it trains next (:func:`grad_norms_on_off`). The
        probes' time is not counted in the training time.
    log : callable, optional
        ``log(str)`` for a line after each epoch.

    Returns
    -------
    dict
        JSON-ready: the setting, seed, sizes, ``init_sha256``, per epoch
        ``test_error``, ``misclassified``, ``train_seconds``,
        ``test_seconds``; per minibatch ``loss_array`` (the reported loss),
        ``loss_cros`` and ``loss_quad`` (both losses of the same forward
        pass), ``grad_norm_last`` and ``grad_norm_all`` (of the gradient the
        step used); ``probe`` (step, last/all norms off and on); the final
        ``confusion`` matrix; ``status`` (``"ok"`` or ``"diverged: ..."``).
    """
    s = get_setting(setting)
    train_x, train_y, test_x, test_y = data
    n_train = int(train_x.shape[0])
    if n_train % batch_size:
        raise ValueError(f"batch_size={batch_size} does not divide the {n_train} training images")
    n_batches = n_train // batch_size
    base = example_network(3, seed=seed) if net is None else net
    work = s.apply(base.copy(), lr)
    work.clear_runtime()
    true = np.asarray(test_y).argmax(axis=1)
    rec = {
        "setting": s.key,
        "label": s.label,
        "seed": int(seed),
        "mode": s.mode,
        "loss_func": s.loss_func,
        "flag_requested": s.flag,
        "learning_rate": work.learning_rate,
        "batch_size": batch_size,
        "epochs": int(epochs),
        "n_train": n_train,
        "n_test": int(test_x.shape[0]),
        "init_sha256": params_sha256(work),
        "test_error": [],
        "misclassified": [],
        "train_seconds": [],
        "test_seconds": [],
        "loss_array": [],
        "loss_cros": [],
        "loss_quad": [],
        "grad_norm_last": [],
        "grad_norm_all": [],
        "probe": {
            "step": [],
            "last_off": [],
            "last_on": [],
            "all_off": [],
            "all_on": [],
            "factor_wrong": [],
            "factor_right": [],
            "frac_wrong": [],
        },
        "confusion": None,
        "status": "ok",
    }
    probe_time = [0.0]

    def probe(step, j):
        t = time.perf_counter()
        sl = slice(j * batch_size, (j + 1) * batch_size)
        r = grad_norms_on_off(work, train_x[sl], train_y[sl])
        rec["probe"]["step"].append(step)
        for k, v in r.items():
            rec["probe"][k].append(v)
        probe_time[0] += time.perf_counter() - t

    def callback(net, epoch, j):
        yb = train_y[j * batch_size : (j + 1) * batch_size]
        ce, q = _both_losses(net, np.ascontiguousarray(yb, dtype=net.dtype))
        rec["loss_cros"].append(ce)
        rec["loss_quad"].append(q)
        last = net.layers[-1]
        rec["grad_norm_last"].append(_norm([last.dW if last.type == "f" else last.dK]))
        rec["grad_norm_all"].append(_norm(_grads(net)))
        step = epoch_offset[0] + j + 1
        if probe_every and step % probe_every == 0:
            probe(step, (j + 1) % n_batches)

    epoch_offset = [0]
    if probe_every:
        probe(0, 0)
    from ..backward import prepare_loss_and_flag

    prepare_loss_and_flag(work, s.flag)
    rec["loss_func"], rec["flag"] = work.loss_func, bool(work.calc_last_layer_act_derivative)
    for epoch in range(epochs):
        probe_time[0] = 0.0
        t0 = time.perf_counter()
        try:
            traincnn(
                work,
                train_x,
                train_y,
                1,
                batch_size,
                calc_last_layer_act_derivative=s.flag,
                verbose=False,
                callback=callback,
                **_guard_off(),
            )
        except diverged_errors() as exc:
            rec["status"] = "diverged: " + " ".join(str(exc).split())
            rec["loss_array"].extend(work.loss_array)
            break
        rec["train_seconds"].append(time.perf_counter() - t0 - probe_time[0])
        rec["loss_array"].extend(work.loss_array)
        epoch_offset[0] += n_batches
        t0 = time.perf_counter()
        _, pred = predictcnn(work, test_x)
        rec["test_seconds"].append(time.perf_counter() - t0)
        wrong = int(np.count_nonzero(pred != true))
        rec["misclassified"].append(wrong)
        rec["test_error"].append(wrong / len(true))
        rec["confusion"] = np.bincount(true * 10 + pred, minlength=100).reshape(10, 10).tolist()
        if log is not None:
            log(
                f"{s.label}, seed {seed}, epoch {epoch + 1}/{epochs}: test error "
                f"{rec['test_error'][-1]:.4f}, {rec['train_seconds'][-1]:.1f} s"
            )
    for k in ("loss_array", "loss_cros", "loss_quad"):
        rec[k] = [_finite_or_none(float(v)) for v in rec[k]]
    return rec


# --------------------------------------------------------------------------- summary and files


def _tail_mean(a, n=100):
    v = [x for x in a[-n:] if x is not None]
    return float(np.mean(v)) if v else None


def summarise(runs):
    """Per setting (in the order of the runs): statistics over seeds.

    Returns
    -------
    list of dict
        ``setting``, ``label``, ``flag``, ``loss_func``, ``learning_rate``,
        ``mode``, ``seeds``, ``n_ok``; ``error`` (mean, std with ddof=1, min,
        max, n of the final test error); ``error_by_epoch`` (mean per epoch);
        ``misclassified_mean``; ``ce_last100`` (mean cross-entropy of the
        last 100 minibatches, mean over seeds); ``train_s_per_epoch`` and
        ``test_s`` (means); ``grad_ratio_last`` (median over the run's probes of
        ``||dW_last||_on / ||dW_last||_off``, mean over seeds).
    """
    out = []
    for key in dict.fromkeys(r["setting"] for r in runs):
        rs = [r for r in runs if r["setting"] == key]
        ok = [r for r in rs if r["test_error"]]
        final = [r["test_error"][-1] if r["status"] == "ok" else float("nan") for r in ok]
        n_ep = max((len(r["test_error"]) for r in ok), default=0)
        by_epoch = [
            _stats([r["test_error"][e] for r in ok if len(r["test_error"]) > e])["mean"]
            for e in range(n_ep)
        ]
        ratios = []
        for r in rs:
            p = r["probe"]
            q = [a / b for a, b in zip(p["last_on"], p["last_off"]) if b > 0]
            if q:
                ratios.append(float(np.median(q)))
        r0 = rs[0]
        out.append(
            {
                "setting": key,
                "label": r0["label"],
                "flag": r0.get("flag"),
                "loss_func": r0.get("loss_func"),
                "learning_rate": r0["learning_rate"],
                "mode": r0["mode"],
                "seeds": [r["seed"] for r in rs],
                "n_ok": sum(r["status"] == "ok" for r in rs),
                "error": _stats(final),
                "error_by_epoch": by_epoch,
                "misclassified_mean": _stats(
                    [r["misclassified"][-1] for r in ok if r["status"] == "ok"]
                )["mean"],
                "ce_last100": _stats([_tail_mean(r["loss_cros"]) for r in rs])["mean"],
                "train_s_per_epoch": _stats(
                    [np.mean(r["train_seconds"]) for r in rs if r["train_seconds"]]
                )["mean"],
                "test_s": _stats([np.mean(r["test_seconds"]) for r in rs if r["test_seconds"]])[
                    "mean"
                ],
                "grad_ratio_last": _stats(ratios)["mean"],
            }
        )
    return out


def format_table(summary, meta=None):
    """The summary as a Markdown table (errors in percent), with a header line from ``meta``."""
    lines = []
    if meta:
        lines.append(
            f"Example 3, {meta['n_train']} training / {meta['n_test']} test images, "
            f"{meta['epochs']} epoch{'s' if meta['epochs'] != 1 else ''}, batch "
            f"{meta['batch_size']}, batches in order, seeds {_seed_text(meta['seeds'])}; "
            f"{meta['machine']}; {meta['date']}."
        )
        lines.append("")
    lines += [
        "| setting | flag | loss trained | lr | test error % mean | std | min | max "
        "| misclassified (mean) | cross-entropy, last 100 minibatches | last-layer grad ratio "
        "on/off (median) | train s/epoch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summary:
        e = s["error"]
        flag = "n/a" if s["flag"] is None else ("on" if s["flag"] else "off")
        trained = "quad" if s["flag"] else "cros"  # with a sigmoid output the flag decides
        note = "" if s["n_ok"] == len(s["seeds"]) else f" ({len(s['seeds']) - s['n_ok']} diverged)"
        lines.append(
            f"| {s['label']}{note} | {flag} | {trained} | {s['learning_rate']:g} "
            f"| **{_pct(e['mean'])}** | {_pct(e['std'])} | {_pct(e['min'])} | {_pct(e['max'])} "
            f"| {_num(s['misclassified_mean'], '.1f')} | {_num(s['ce_last100'], '.3f')} "
            f"| {_num(s['grad_ratio_last'], '.3f')} | {_num(s['train_s_per_epoch'], '.1f')} |"
        )
    n_ep = max((len(s["error_by_epoch"]) for s in summary), default=0)
    if n_ep > 1:
        lines += [
            "",
            "Test error (%) after each epoch, mean over seeds:",
            "",
            "| setting | " + " | ".join(f"epoch {e + 1}" for e in range(n_ep)) + " |",
            "| --- |" + " --- |" * n_ep,
        ]
        for s in summary:
            cells = [_pct(v) for v in s["error_by_epoch"]]
            cells += [""] * (n_ep - len(cells))
            lines.append(f"| {s['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


CSV_FIELDS = (
    "setting",
    "label",
    "seed",
    "epoch",
    "test_error",
    "misclassified",
    "n_test",
    "train_seconds",
    "test_seconds",
    "flag",
    "loss_func",
    "learning_rate",
    "mode",
    "n_train",
    "status",
)


def results_csv(runs):
    """One CSV row per run and epoch (as text)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in runs:
        for e, err in enumerate(r["test_error"]):
            w.writerow(
                {
                    "setting": r["setting"],
                    "label": r["label"],
                    "seed": r["seed"],
                    "epoch": e + 1,
                    "test_error": err,
                    "misclassified": r["misclassified"][e],
                    "n_test": r["n_test"],
                    "train_seconds": f"{r['train_seconds'][e]:.3f}",
                    "test_seconds": f"{r['test_seconds'][e]:.3f}",
                    "flag": int(r["flag"]),
                    "loss_func": r["loss_func"],
                    "learning_rate": r["learning_rate"],
                    "mode": r["mode"],
                    "n_train": r["n_train"],
                    "status": r["status"],
                }
            )
    return buf.getvalue()


# --------------------------------------------------------------------------- gradient check


def _gradcheck_net(seed):
    net = initcnn((10, 10), LEARNING_RATE, seed=seed)
    add_conv_layer(net, 3, 3, "tanh")
    add_pool_layer(net, 2)
    add_fc_layer(net, 8, "tanh")
    add_fc_layer(net, 4, "sigm")
    return net


def gradcheck_table(seed=0, n=20):
    """Which loss the gradients belong to, flag off and on (a numerical gradient check).

    A small c(tanh 3, 3x3) - p2 - f(tanh 8) - f(sigm 4) network on ``n``
    random 10 x 10 images with one-hot targets, faithful mode. Rows:

    1. flag off (derived for cross-entropy), checked against the cross-entropy;
    2. flag forced on, cross-entropy reported, checked against the cross-entropy;
    3. flag on with ``loss_func='quad'`` (derived), checked against the quadratic loss;
    4. flag forced off with ``loss_func='quad'``, checked against the quadratic loss.

    Returns
    -------
    text : str
        Markdown: the summary table and each check's per-array table.
    rows : list of dict
        ``name``, ``flag``, ``loss``, ``passed``, ``max_abs``, ``max_norm_rel``,
        ``report`` (the :class:`~cnn.gradcheck.GradCheckReport`); plus, in
        ``rows[1]``, ``same_as_quad``: the largest difference between the
        gradients of rows 2 and 3 (0: identical) and ``ratio_last``:
        ``||dW_last||`` flag on / flag off.
    """
    import numba

    threads = numba.get_num_threads()
    numba.set_num_threads(1)  # thousands of tiny forward passes: threads only add overhead
    try:
        return _gradcheck_table(seed, n)
    finally:
        numba.set_num_threads(threads)


def _gradcheck_table(seed, n):
    from ..backward import bpcnn, prepare_loss_and_flag

    net = _gradcheck_net(seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.random((n, 10, 10))
    y = np.eye(4)[rng.integers(0, 4, n)]
    cases = [
        ("flag off (derived)", "auto", None, "cros"),
        ("flag on (forced)", "auto", True, "cros"),
        ("flag on (derived for quad)", "quad", None, "quad"),
        ("flag off (forced), quad", "quad", False, "quad"),
    ]
    rows, grads = [], []
    for name, loss, flag, against in cases:
        w = net.copy()
        w.loss_func = loss
        prepare_loss_and_flag(w, flag)
        rep = gradient_checker(w, x, y)
        bpcnn(ffcnn(w, x), y)
        grads.append([g.copy() for g in _grads(w)])
        rows.append(
            {
                "name": name,
                "flag": w.calc_last_layer_act_derivative,
                "loss": against,
                "passed": rep.passed,
                "max_abs": max(c.max_abs for c in rep.checks),
                "max_norm_rel": max(c.norm_rel for c in rep.checks),
                "report": rep,
            }
        )
    rows[1]["same_as_quad"] = max(float(np.abs(a - b).max()) for a, b in zip(grads[1], grads[2]))
    rows[1]["ratio_last"] = float(np.linalg.norm(grads[1][-2])) / float(
        np.linalg.norm(grads[0][-2])
    )
    lines = [
        f"Gradient check: c(tanh 3, 3x3) - p2 - f(tanh 8) - f(sigm 4), {n} random 10x10 images, "
        f"one-hot targets, faithful mode, central differences with epsilon 1e-4, pass if every "
        f"|analytic - numeric| <= 1e-7 (the original's `gradient_checker`).",
        "",
        "| gradient (bpcnn) | flag | numerical gradient of | max abs diff | max norm-rel diff "
        "| result |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        loss_name = "cross-entropy" if r["loss"] == "cros" else "quadratic loss"
        lines.append(
            f"| {r['name']} | {int(r['flag'])} | {loss_name} | {r['max_abs']:.2e} "
            f"| {r['max_norm_rel']:.2e} | {'pass' if r['passed'] else '**FAIL**'} |"
        )
    lines += [
        "",
        f"The gradients of rows 2 and 3 (flag on, cross-entropy reported; flag on, quadratic "
        f"loss) differ by at most {rows[1]['same_as_quad']:.1e}: forcing the flag on under "
        f"cross-entropy trains on the quadratic loss. Last-layer gradient norm, flag on / flag "
        f"off: {rows[1]['ratio_last']:.4f} (each output error shrinks by a(1-a) <= 1/4).",
        "",
    ]
    for i, r in enumerate(rows, start=1):
        lines += [
            f"Row {i}, {r['name']}, against the "
            f"{'cross-entropy' if r['loss'] == 'cros' else 'quadratic loss'}:",
            "",
            r["report"].to_markdown(),
            "",
        ]
    return "\n".join(lines), rows


# --------------------------------------------------------------------------- the study's runs

TASK = "cnn.studies.flag:run_spec"


def spec(
    setting,
    seed,
    dataset,
    epochs,
    *,
    study="flag",
    lr=LEARNING_RATE,
    batch_size=BATCH_SIZE,
    probe_every=25,
    **extra,
):
    """The run spec (store key material) of one training of Example 3.

    Parameters
    ----------
    setting : str
        A key of :data:`SETTINGS`.
    seed : int
    dataset : cnn.studies.run.Dataset
        Its fingerprint and sizes go into the spec.
    epochs : int
    study : str
        The study's name (``"flag"``, ``"lr"``, ...).
    lr : float
        Base learning rate (the setting's factor multiplies it).
    batch_size, probe_every : int
    **extra
        More fields (they change the key).

    Returns
    -------
    dict
    """
    s = get_setting(setting)
    train_x, _, test_x, _ = dataset.arrays
    return {
        "task": TASK,
        "study": study,
        "setting": s.key,
        "label": s.label,
        "seed": int(seed),
        "epochs": int(epochs),
        "lr": float(lr),
        "batch_size": int(batch_size),
        "mode": s.mode,
        "dtype": "float64",
        "probe_every": int(probe_every),
        "data": dataset.fingerprint,
        "n_train": int(len(train_x)),
        "n_test": int(len(test_x)),
        "version": __version__,
        **extra,
    }


def specs(settings, seeds, dataset, epochs=1, **kwargs):
    """Every setting x seed of the flag study (setting order, then seed)."""
    return [spec(k, seed, dataset, epochs, **kwargs) for k in settings for seed in seeds]


def run_spec(spec, data):
    """Worker entry: train one spec (see :func:`run_one`); returns the record."""
    return run_one(
        spec["setting"],
        spec["seed"],
        data,
        spec["epochs"],
        batch_size=spec["batch_size"],
        lr=spec["lr"],
        probe_every=spec["probe_every"],
    )
