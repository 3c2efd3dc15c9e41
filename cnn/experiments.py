"""The flag-on versus flag-off comparison on MNIST, and the reproduction of the Octave runs.

With a sigmoid output and the cross-entropy loss, the error at the output's
pre-activation is ``a - y``: the sigmoid's derivative ``a(1 - a)`` cancels.
The original's ``CalcLastLayerActDerivative`` flag multiplies it in anyway
when it is on; that gives exactly the quadratic loss's gradient, so a network
with the flag forced on trains on the quadratic loss while it reports the
cross-entropy. This module measures what that costs on MNIST (see
``docs/flag.md``):

* :data:`SETTINGS` -- the compared settings;
* :func:`run_one` -- train Example 3 in one setting from one seed, record
  everything (test error per epoch, losses, gradient norms);
* :func:`run_comparison` -- every setting x every seed, in parallel processes;
* :func:`summarise`, :func:`format_table`, :func:`write_results` -- the table
  and the files;
* :func:`gradcheck_table` -- a numerical gradient check showing which loss the
  gradients belong to with the flag off and on;
* :func:`reproduce_reference` -- retrain from the Octave run's initial
  weights and compare with its numbers;
* :func:`compare_main` -- the command line (``python -m cnn compare``,
  ``scripts/compare_flag.py``).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import io
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backward import compute_loss
from .forward import ffcnn, output_matrix
from .gradcheck import gradient_checker
from .network import add_conv_layer, add_fc_layer, add_pool_layer, example_network, initcnn
from .cli.args import jobs as _jobs
from .cli.args import positive_int as _positive_int
from .cli.args import seed_list as _seed_list
from .training import NonFiniteError, predictcnn, traincnn

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


SETTINGS = {s.key: s for s in (
    Setting("off", "flag off (derived)", None, "auto", 1.0, "faithful",
            "cross-entropy, flag 0 as traincnn derives it: delta = a - y"),
    Setting("on", "flag on (forced)", True, "auto", 1.0, "faithful",
            "cross-entropy reported, flag forced to 1: delta = (a - y) a (1 - a)"),
    Setting("quad", "quad loss", None, "quad", 1.0, "faithful",
            "loss_func = 'quad', flag 1 as derived: the same gradients as flag on"),
    Setting("on-lr4", "flag on, lr x4", True, "auto", 4.0, "faithful",
            "flag forced on, learning rate x4 (max of a(1-a) is 1/4)"),
    Setting("corrected", "corrected, flag off", None, "auto", 1.0, "corrected",
            "flag 0, mode='corrected' (the original's gradient defects fixed, D1 above all)"),
)}
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
    from .backward import bpcnn

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


def run_one(setting, seed, data, epochs=1, *, net=None, batch_size=BATCH_SIZE,
            lr=LEARNING_RATE, probe_every=25, log=None):
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
        "setting": s.key, "label": s.label, "seed": int(seed), "mode": s.mode,
        "loss_func": s.loss_func, "flag_requested": s.flag,
        "learning_rate": work.learning_rate, "batch_size": batch_size, "epochs": int(epochs),
        "n_train": n_train, "n_test": int(test_x.shape[0]), "init_sha256": params_sha256(work),
        "test_error": [], "misclassified": [], "train_seconds": [], "test_seconds": [],
        "loss_array": [], "loss_cros": [], "loss_quad": [], "grad_norm_last": [],
        "grad_norm_all": [],
        "probe": {"step": [], "last_off": [], "last_on": [], "all_off": [], "all_on": [],
                  "factor_wrong": [], "factor_right": [], "frac_wrong": []},
        "confusion": None, "status": "ok",
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
        yb = train_y[j * batch_size:(j + 1) * batch_size]
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
    from .backward import prepare_loss_and_flag

    prepare_loss_and_flag(work, s.flag)
    rec["loss_func"], rec["flag"] = work.loss_func, bool(work.calc_last_layer_act_derivative)
    for epoch in range(epochs):
        probe_time[0] = 0.0
        t0 = time.perf_counter()
        try:
            traincnn(work, train_x, train_y, 1, batch_size, calc_last_layer_act_derivative=s.flag,
                     verbose=False, callback=callback)
        except NonFiniteError as exc:
            rec["status"] = f"diverged: {exc}"
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
            log(f"{s.label}, seed {seed}, epoch {epoch + 1}/{epochs}: test error "
                f"{rec['test_error'][-1]:.4f}, {rec['train_seconds'][-1]:.1f} s")
    for k in ("loss_array", "loss_cros", "loss_quad"):
        rec[k] = [_finite_or_none(float(v)) for v in rec[k]]
    return rec


# --------------------------------------------------------------------------- many runs

_BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def _worker_env(jobs):
    """Thread settings of the worker processes.

    BLAS always gets one thread: OpenBLAS's results depend (at round-off) on
    its thread count, and one thread keeps the numbers independent of
    ``jobs``. Numba gets ``cores // jobs`` threads (its kernels give the same
    numbers for any thread count).
    """
    env = {var: "1" for var in _BLAS_VARS}
    env["NUMBA_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


def _task(setting, seed, data_files, net, epochs, kwargs):
    """Worker-process entry: load the data (memory-mapped) and run one training."""
    data = tuple(np.asarray(np.load(f, mmap_mode="r")) for f in data_files)
    rec = run_one(setting, seed, data, epochs, net=net, **kwargs)
    import numba

    rec["threads"] = {"numba": int(numba.get_num_threads()),
                      "blas": os.environ.get("OPENBLAS_NUM_THREADS")}
    return rec


def run_comparison(settings, seeds, data, epochs=1, *, jobs=2, batch_size=BATCH_SIZE,
                   lr=LEARNING_RATE, probe_every=25, log=None):
    """Train every setting from every seed; return the runs (setting order, then seed).

    All settings of one seed start from the same initial network (built once
    per seed and copied). The trainings run in ``jobs`` worker processes
    (joblib's loky executor, also for ``jobs=1``), each with one BLAS thread and
    ``cores // jobs`` numba threads; the data go to them as memory-mapped
    files. The numbers do not depend on ``jobs``.

    Parameters
    ----------
    settings : sequence of str
        Keys of :data:`SETTINGS`.
    seeds : sequence of int
    data : tuple
        ``(train_x, train_y, test_x, test_y)``.
    jobs : int
        Worker processes.
    log : callable, optional
        ``log(str)`` for a line as each run finishes.

    Returns
    -------
    list of dict
        :func:`run_one` records, plus ``threads`` (numba and BLAS threads of the worker).
    """
    from concurrent.futures import as_completed

    from joblib.externals.loky import get_reusable_executor

    settings = [get_setting(s) for s in settings]
    seeds = [int(s) for s in seeds]
    nets = {seed: example_network(3, seed=seed) for seed in seeds}
    tasks = [(s.key, seed) for seed in seeds for s in settings]
    kwargs = dict(batch_size=batch_size, lr=lr, probe_every=probe_every)
    runs = []
    total = len(tasks)
    jobs = max(1, min(int(jobs), total))
    t_start = time.perf_counter()

    def done(rec):
        runs.append(rec)
        if log is not None:
            err = (f"test error {rec['test_error'][-1]:.4f} ({rec['misclassified'][-1]}/"
                   f"{rec['n_test']})" if rec["test_error"] else "no test error")
            per = (f"{np.mean(rec['train_seconds']):.1f} s/epoch" if rec["train_seconds"]
                   else "")
            status = "" if rec["status"] == "ok" else f" [{rec['status'].split(':')[0]}]"
            log(f"[{len(runs):>{len(str(total))}}/{total}] {rec['label']}, seed {rec['seed']}: "
                f"{err}{status}, {per} (elapsed {time.perf_counter() - t_start:.0f} s)")

    tmp = tempfile.mkdtemp(prefix="cnn-compare-")
    try:
        files = []
        for name, a in zip(("train_x", "train_y", "test_x", "test_y"), data):
            f = os.path.join(tmp, name + ".npy")
            np.save(f, np.ascontiguousarray(a, dtype=np.float64))
            files.append(f)
        # always worker processes (joblib would run jobs=1 in this process, whose BLAS
        # already has its threads): the same thread settings for any jobs
        executor = get_reusable_executor(max_workers=jobs, env=_worker_env(jobs))
        futures = [executor.submit(_task, key, seed, files, nets[seed], epochs, kwargs)
                   for key, seed in tasks]
        try:
            for fut in as_completed(futures):
                done(fut.result())
        except BaseException:  # Ctrl-C or a failed run: stop the others
            for fut in futures:
                fut.cancel()
            executor.shutdown(wait=False, kill_workers=True)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    order = {s.key: i for i, s in enumerate(settings)}
    runs.sort(key=lambda r: (order[r["setting"]], seeds.index(r["seed"])))
    return runs


# --------------------------------------------------------------------------- summary and files

def _stats(values):
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return dict(mean=None, std=None, min=None, max=None, n=0)
    return dict(mean=float(v.mean()), std=float(v.std(ddof=1)) if v.size > 1 else 0.0,
                min=float(v.min()), max=float(v.max()), n=int(v.size))


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
        by_epoch = [_stats([r["test_error"][e] for r in ok if len(r["test_error"]) > e])["mean"]
                    for e in range(n_ep)]
        ratios = []
        for r in rs:
            p = r["probe"]
            q = [a / b for a, b in zip(p["last_on"], p["last_off"]) if b > 0]
            if q:
                ratios.append(float(np.median(q)))
        r0 = rs[0]
        out.append({
            "setting": key, "label": r0["label"], "flag": r0.get("flag"),
            "loss_func": r0.get("loss_func"), "learning_rate": r0["learning_rate"],
            "mode": r0["mode"], "seeds": [r["seed"] for r in rs],
            "n_ok": sum(r["status"] == "ok" for r in rs),
            "error": _stats(final), "error_by_epoch": by_epoch,
            "misclassified_mean": _stats([r["misclassified"][-1] for r in ok
                                          if r["status"] == "ok"])["mean"],
            "ce_last100": _stats([_tail_mean(r["loss_cros"]) for r in rs])["mean"],
            "train_s_per_epoch": _stats([np.mean(r["train_seconds"]) for r in rs
                                         if r["train_seconds"]])["mean"],
            "test_s": _stats([np.mean(r["test_seconds"]) for r in rs
                              if r["test_seconds"]])["mean"],
            "grad_ratio_last": _stats(ratios)["mean"],
        })
    return out


def _pct(v, digits=2):
    return "n/a" if v is None else f"{100 * v:.{digits}f}"


def _num(v, fmt):
    return "n/a" if v is None else format(v, fmt)


def format_table(summary, meta=None):
    """The summary as a Markdown table (errors in percent), with a header line from ``meta``."""
    lines = []
    if meta:
        lines.append(
            f"Example 3, {meta['n_train']} training / {meta['n_test']} test images, "
            f"{meta['epochs']} epoch{'s' if meta['epochs'] != 1 else ''}, batch "
            f"{meta['batch_size']}, batches in order, seeds {_seed_text(meta['seeds'])}; "
            f"{meta['machine']}; {meta['date']}.")
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
            f"| {_num(s['grad_ratio_last'], '.3f')} | {_num(s['train_s_per_epoch'], '.1f')} |")
    n_ep = max((len(s["error_by_epoch"]) for s in summary), default=0)
    if n_ep > 1:
        lines += ["", "Test error (%) after each epoch, mean over seeds:", "",
                  "| setting | " + " | ".join(f"epoch {e + 1}" for e in range(n_ep)) + " |",
                  "| --- |" + " --- |" * n_ep]
        for s in summary:
            cells = [_pct(v) for v in s["error_by_epoch"]]
            cells += [""] * (n_ep - len(cells))
            lines.append(f"| {s['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _seed_text(seeds):
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(str(s) for s in seeds)


def write_table(summary, path, meta=None):
    """Write :func:`format_table` to ``path`` atomically; return the Path."""
    return _write_text(path, format_table(summary, meta))


def _write_text(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


CSV_FIELDS = ("setting", "label", "seed", "epoch", "test_error", "misclassified", "n_test",
              "train_seconds", "test_seconds", "flag", "loss_func", "learning_rate", "mode",
              "n_train", "status")


def results_csv(runs):
    """One CSV row per run and epoch (as text)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in runs:
        for e, err in enumerate(r["test_error"]):
            w.writerow({"setting": r["setting"], "label": r["label"], "seed": r["seed"],
                        "epoch": e + 1, "test_error": err, "misclassified": r["misclassified"][e],
                        "n_test": r["n_test"], "train_seconds": f"{r['train_seconds'][e]:.3f}",
                        "test_seconds": f"{r['test_seconds'][e]:.3f}", "flag": int(r["flag"]),
                        "loss_func": r["loss_func"], "learning_rate": r["learning_rate"],
                        "mode": r["mode"], "n_train": r["n_train"], "status": r["status"]})
    return buf.getvalue()


def machine_text():
    """E.g. ``'2 cores (x86_64), Linux, Python 3.11'``."""
    return (f"{os.cpu_count()} cores ({platform.machine()}), {platform.system()}, "
            f"Python {platform.python_version()}")


def _json_safe(obj):
    """Replace NaN/Inf floats (e.g. of a diverged run) by None, recursively."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_results(out, runs, meta, *, plots=True, gradcheck=None):
    """Write ``results.json``, ``results.csv``, ``table.md`` (and figures) into ``out``.

    Every file is written atomically. Returns the list of paths written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs)
    doc = _json_safe({"meta": meta, "settings": {k: vars(s) for k, s in SETTINGS.items()},
                      "summary": summary, "runs": runs})
    paths = [_write_text(out / "results.json", json.dumps(doc, indent=1, allow_nan=False)),
             _write_text(out / "results.csv", results_csv(runs)),
             write_table(summary, out / "table.md", meta)]
    if gradcheck is not None:
        paths.append(_write_text(out / "gradcheck.md", gradcheck))
    if plots:
        paths += make_figures(runs, out)
    return paths


OCTAVE_REFERENCE = {"flag off (derived)": 0.0832, "flag on (forced)": 0.2787}
"""Test errors of the original under Octave (one epoch on full MNIST, ``rand('seed', 59223)``)."""


def _octave_comparable(runs):
    """Whether the runs are like the Octave reference runs (full MNIST, one epoch)."""
    return all(r["n_train"] == 60000 and r["n_test"] == 10000 and r["epochs"] == 1
               and r["batch_size"] == BATCH_SIZE for r in runs)


def make_figures(runs, out, *, prefix="", reference=None):
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
    from . import plots

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
        return {lab: palette.get(lab.split(" = ")[0].replace("along the ", "")
                                 .replace(" runs", ""), None) for lab in curves}

    def curves(field):
        """label -> per-seed arrays; settings with identical curves share one entry."""
        out = {}
        for lab, rs in by.items():
            arrs = [np.array([np.nan if v is None else v for v in r[field]]) for r in rs
                    if r[field]]
            same = next((k for k, v in out.items() if len(v) == len(arrs) and all(
                a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
                for a, b in zip(v, arrs))), None)
            if same is not None and arrs:
                out[f"{same} = {lab} (identical)"] = out.pop(same)
            else:
                out[lab] = arrs
        return out

    ce = {k: v for k, v in curves("loss_cros").items() if v}
    if ce:
        paths.append(plots.loss_curves(
            ce, out / f"{prefix}loss_cros.png", smooth=smooth, ylabel="cross-entropy",
            colors=colors(ce),
            title=f"Cross-entropy of each minibatch before its update ({seeds}; all settings, "
                  f"also quad)"))
    q = {k: v for k, v in curves("loss_quad").items() if v}
    if q:
        paths.append(plots.loss_curves(
            q, out / f"{prefix}loss_quad.png", smooth=smooth, ylabel="quadratic loss",
            colors=colors(q),
            title=f"Quadratic loss of each minibatch before its update ({seeds})"))
    errs = {lab: [r["test_error"][-1] if r["test_error"] and r["status"] == "ok" else np.nan
                  for r in rs] for lab, rs in by.items()}
    n_test = runs[0]["n_test"]
    paths.append(plots.error_by_setting(
        errs, out / f"{prefix}test_error.png", colors=colors(errs), reference=reference,
        title=f"Test error after {runs[0]['epochs']} epoch(s), {n_test} test images "
              f"({seeds})"))
    if max(len(r["test_error"]) for r in runs) > 1:
        ep = {lab: [100 * np.asarray(r["test_error"]) for r in rs if r["test_error"]]
              for lab, rs in by.items()}
        ep = {k: v for k, v in ep.items() if v}
        n_ep = max(len(x) for v in ep.values() for x in v)
        paths.append(plots.loss_curves(
            ep, out / f"{prefix}test_error_by_epoch.png", smooth=1, ylabel="test error (%)",
            colors=colors(ep),
            xlabel="epoch", x=np.arange(1, n_ep + 1),
            title=f"Test error after each epoch ({seeds}: mean, min-max band)"))
    ratio, steps = {}, {}
    for key in ("off", "on"):
        rs = [r for r in runs if r["setting"] == key and r["probe"]["step"]]
        if rs:
            lab = f"along the {SETTINGS[key].label} runs"
            ratio[lab] = [np.array(r["probe"]["last_on"]) / np.array(r["probe"]["last_off"])
                          for r in rs]
            steps[lab] = rs[0]["probe"]["step"]
    if ratio:
        paths.append(plots.grad_norm_ratio(
            ratio, out / f"{prefix}grad_ratio.png", steps=steps, colors=colors(ratio),
            title="Last-layer gradient norm, flag on / flag off (same state, same minibatch)"))
    for key, name in (("off", "confusion_off"), ("on", "confusion_on")):
        rs = [r for r in runs if r["setting"] == key and r["confusion"] is not None]
        if rs:
            c = np.sum([np.array(r["confusion"]) for r in rs], axis=0)
            paths.append(plots.confusion_counts(
                c, out / f"{prefix}{name}.png",
                title=f"{SETTINGS[key].label}, summed over {len(rs)} seed(s)"))
    return paths


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
    from .backward import bpcnn, prepare_loss_and_flag

    net = _gradcheck_net(seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.random((n, 10, 10))
    y = np.eye(4)[rng.integers(0, 4, n)]
    cases = [("flag off (derived)", "auto", None, "cros"),
             ("flag on (forced)", "auto", True, "cros"),
             ("flag on (derived for quad)", "quad", None, "quad"),
             ("flag off (forced), quad", "quad", False, "quad")]
    rows, grads = [], []
    for name, loss, flag, against in cases:
        w = net.copy()
        w.loss_func = loss
        prepare_loss_and_flag(w, flag)
        rep = gradient_checker(w, x, y)
        bpcnn(ffcnn(w, x), y)
        grads.append([g.copy() for g in _grads(w)])
        rows.append({"name": name, "flag": w.calc_last_layer_act_derivative, "loss": against,
                     "passed": rep.passed, "max_abs": max(c.max_abs for c in rep.checks),
                     "max_norm_rel": max(c.norm_rel for c in rep.checks), "report": rep})
    rows[1]["same_as_quad"] = max(float(np.abs(a - b).max()) for a, b in zip(grads[1], grads[2]))
    rows[1]["ratio_last"] = (float(np.linalg.norm(grads[1][-2]))
                             / float(np.linalg.norm(grads[0][-2])))
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
        lines.append(f"| {r['name']} | {int(r['flag'])} | {loss_name} | {r['max_abs']:.2e} "
                     f"| {r['max_norm_rel']:.2e} | {'pass' if r['passed'] else '**FAIL**'} |")
    lines += [
        "",
        f"The gradients of rows 2 and 3 (flag on, cross-entropy reported; flag on, quadratic "
        f"loss) differ by at most {rows[1]['same_as_quad']:.1e}: forcing the flag on under "
        f"cross-entropy trains on the quadratic loss. Last-layer gradient norm, flag on / flag "
        f"off: {rows[1]['ratio_last']:.4f} (each output error shrinks by a(1-a) <= 1/4).",
        "",
    ]
    for i, r in enumerate(rows, start=1):
        lines += [f"Row {i}, {r['name']}, against the "
                  f"{'cross-entropy' if r['loss'] == 'cros' else 'quadratic loss'}:", "",
                  r["report"].to_markdown(), ""]
    return "\n".join(lines), rows


# --------------------------------------------------------------------------- reproduction

REFERENCE_FORMAT = "cnn-example3-reference-1"
REFERENCE_FLAGS = {"derived": False, "forced_on": True}


def default_reference_path():
    """``tests/fixtures/example3_reference.npz`` of the source checkout (may not exist)."""
    return Path(__file__).resolve().parent / "data" / "example3_reference.npz"


def _flag_key(flag):
    if flag in (None, False, 0, "derived", "off"):
        return "derived"
    if flag in (True, 1, "on", "forced_on", "forced on"):
        return "forced_on"
    raise ValueError(f"flag must be None/'derived' (flag off, as traincnn derives it) or "
                     f"True/'on' (forced on), got {flag!r}")


def _params_dict(net):
    return {f"layer{i + 1}.{name}": np.array(a, dtype=np.float64) for i, name, a in
            net.parameters()}


def _set_params(net, params, where):
    for i, name, a in net.parameters():
        key = f"layer{i + 1}.{name}"
        if key not in params:
            raise ValueError(f"{where}: missing {key}")
        v = np.asarray(params[key], dtype=np.float64)
        if v.shape != a.shape:
            raise ValueError(f"{where}: {key} has shape {v.shape}, expected {a.shape}")
        a[...] = v
    return net


def write_reference_fixture(mat_paths, path):
    """Write the Octave reference runs into one pickle-free ``.npz``.

    Parameters
    ----------
    mat_paths : sequence of str or Path
        The reference MAT-files (``example3_seed59223_init.mat``,
        ``example3_seed59223_flag_forced_on.mat``): each holds ``cnn_init``,
        the trained ``cnn``, ``err``, ``pred``, ``la``, ``flag``, ``t_train``.
    path : str or Path
        The ``.npz`` to write (compressed). It holds ``init.layer{l}.{K,W,b}``
        (the initial parameters, Python layouts, MATLAB layer numbers ``l``)
        and, for ``derived`` (flag 0) and ``forced_on`` (flag 1): ``err``,
        ``pred`` (0-based labels), ``loss_array`` and ``layer{l}.{K,W,b}``
        (the trained parameters), plus a JSON ``meta`` string.

    Returns
    -------
    Path
    """
    arrays = {}
    init_hash = None
    meta = {"format": REFERENCE_FORMAT, "network": "Example 3", "runs": {}}
    for p in mat_paths:
        ref = _load_reference_mat(p)
        key = _flag_key(bool(ref["flag"]))
        h = params_sha256(ref["init"])
        if init_hash is not None and h != init_hash:
            raise ValueError(f"{p}: its cnn_init differs from the other file's")
        init_hash = h
        for k, v in _params_dict(ref["init"]).items():
            arrays[f"init.{k}"] = v
        arrays[f"{key}.err"] = np.array(ref["err"])
        arrays[f"{key}.pred"] = ref["pred"].astype(np.uint8)
        arrays[f"{key}.loss_array"] = ref["loss_array"]
        for k, v in ref["params"].items():
            arrays[f"{key}.{k}"] = v
        meta["runs"][key] = {"source": Path(p).name, "flag": int(ref["flag"]),
                             "err": ref["err"], "t_train_octave": ref.get("t_train"),
                             "seed": ref.get("seed"), "ntrain": ref.get("ntrain")}
    meta["init_sha256"] = init_hash
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, meta=np.array(json.dumps(meta)), **arrays)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _load_reference_mat(path):
    import scipy.io

    from .matlab import load_cnn

    d = scipy.io.loadmat(path, variable_names=["err", "pred", "la", "flag", "t_train", "seed",
                                               "ntrain"])
    trained = load_cnn(path, var="cnn")
    out = {"init": load_cnn(path, var="cnn_init"), "err": float(np.ravel(d["err"])[0]),
           "pred": np.ravel(d["pred"]).astype(np.int64) - 1,
           "loss_array": np.ravel(d["la"]).astype(np.float64),
           "params": _params_dict(trained), "source": str(path)}
    out["flag"] = (bool(np.ravel(d["flag"])[0]) if "flag" in d
                   else bool(trained.calc_last_layer_act_derivative))
    for k in ("t_train", "seed", "ntrain"):
        if k in d:
            out[k] = float(np.ravel(d[k])[0])
    return out


def load_reference(ref, flag):
    """The reference run for ``flag`` from a MAT-file or the fixture ``.npz``.

    Returns
    -------
    dict
        ``init`` (the initial CNN), ``err``, ``pred`` (0-based), ``loss_array``,
        ``params`` (trained, ``{"layer{l}.{K|W|b}": array}``), ``flag``,
        ``source``.
    """
    key = _flag_key(flag)
    ref = Path(ref)
    if not ref.is_file():
        raise FileNotFoundError(f"no such reference file: {ref}")
    if ref.suffix.lower() == ".mat":
        out = _load_reference_mat(ref)
        if _flag_key(out["flag"]) != key:
            raise ValueError(f"{ref} holds the run with the flag "
                             f"{'forced on' if out['flag'] else 'off (derived)'}, not {key}")
        return out
    with np.load(ref, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        if meta.get("format") != REFERENCE_FORMAT:
            raise ValueError(f"{ref}: not a reference fixture (format {meta.get('format')!r})")
        if f"{key}.err" not in z.files:
            raise ValueError(f"{ref} has no {key} run")
        init = {k[5:]: z[k] for k in z.files if k.startswith("init.")}
        params = {k[len(key) + 1:]: z[k] for k in z.files
                  if k.startswith(key + ".layer")}
        out = {"err": float(z[f"{key}.err"]), "pred": z[f"{key}.pred"].astype(np.int64),
               "loss_array": z[f"{key}.loss_array"], "params": params,
               "flag": REFERENCE_FLAGS[key], "source": str(ref),
               "t_train": meta["runs"][key].get("t_train_octave")}
    out["init"] = _set_params(example_network(3, seed=0), init, str(ref))
    return out


def _max_rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    scale = float(np.abs(b).max())
    return float(np.abs(a - b).max()) / scale if scale > 0 else float(np.abs(a - b).max())


def reproduce_reference(ref_path_or_npz, flag, data_dir=None, *, data=None, download=True,
                        progress=False):
    """Retrain the Octave reference run from its initial weights and compare.

    Parameters
    ----------
    ref_path_or_npz : str or Path
        A reference MAT-file or the fixture written by
        :func:`write_reference_fixture`.
    flag : None, False, True, "derived" or "on"
        Which run: the flag as traincnn derives it (off), or forced on.
    data_dir : str, optional
        MNIST folder (see :func:`cnn.mnist.mnist_dir`).
    data : tuple, optional
        ``(train_x, train_y, test_x, test_y)`` instead of loading MNIST.
    download : bool
        Download MNIST if it is missing.

    Returns
    -------
    dict
        ``flag``, ``err``/``ref_err``, ``misclassified``/``ref_misclassified``,
        ``pred_identical``, ``pred_differ`` (count), ``loss_array_max_rel``
        (elementwise), ``params_max_rel`` (largest over arrays of
        ``max|a - b| / max|b|``), ``train_seconds``, ``ref_train_seconds``,
        ``match`` (errors and predictions equal, losses and parameters within
        1e-9 relative), ``pred`` (0-based) and the trained ``net``.
    """
    ref = load_reference(ref_path_or_npz, flag)
    if data is None:
        from .mnist import load_mnist

        data = load_mnist(data_dir, download=download, progress=progress)
    train_x, train_y, test_x, test_y = data
    net = ref["init"].copy()
    t0 = time.perf_counter()
    traincnn(net, train_x, train_y, 1, BATCH_SIZE,
             calc_last_layer_act_derivative=True if ref["flag"] else None, verbose=False)
    seconds = time.perf_counter() - t0
    _, pred = predictcnn(net, test_x)
    true = np.asarray(test_y).argmax(axis=1)
    wrong = int(np.count_nonzero(pred != true))
    la = np.asarray(net.loss_array, dtype=float)
    la_ref = np.asarray(ref["loss_array"], dtype=float)
    la_rel = (float(np.max(np.abs(la - la_ref) / np.abs(la_ref))) if la.shape == la_ref.shape
              else float("inf"))
    mine = _params_dict(net)
    p_rel = max(_max_rel(mine[k], v) for k, v in ref["params"].items())
    ref_wrong = int(round(ref["err"] * len(true)))
    same_pred = ref["pred"].shape == pred.shape and bool(np.array_equal(ref["pred"], pred))
    res = {
        "flag": "forced on" if ref["flag"] else "off (derived)",
        "err": wrong / len(true), "ref_err": ref["err"], "misclassified": wrong,
        "ref_misclassified": ref_wrong, "pred_identical": same_pred,
        "pred_differ": int(np.count_nonzero(ref["pred"] != pred)) if ref["pred"].shape ==
        pred.shape else len(pred),
        "loss_array_max_rel": la_rel, "params_max_rel": p_rel, "train_seconds": seconds,
        "ref_train_seconds": ref.get("t_train"), "source": ref["source"],
    }
    res["match"] = bool(wrong == ref_wrong and same_pred and la_rel <= 1e-9 and p_rel <= 1e-9)
    res["pred"] = pred
    res["net"] = net
    return res


def format_reproduction(results):
    """Markdown table of :func:`reproduce_reference` results."""
    lines = ["| run | test error (Python) | Octave | misclassified | predictions "
             "| loss_array max rel diff | trained parameters max rel diff | training s "
             "(Python / Octave) | match |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        pred = "identical" if r["pred_identical"] else f"{r['pred_differ']} differ"
        oct_s = "n/a" if r.get("ref_train_seconds") is None else f"{r['ref_train_seconds']:.0f}"
        lines.append(f"| flag {r['flag']} | {r['err']:.4f} | {r['ref_err']:.4f} "
                     f"| {r['misclassified']} / {r['ref_misclassified']} | {pred} "
                     f"| {r['loss_array_max_rel']:.1e} | {r['params_max_rel']:.1e} "
                     f"| {r['train_seconds']:.0f} / {oct_s} | {'yes' if r['match'] else '**NO**'} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command line

class UsageError(Exception):
    """A bad command line (exit status 2)."""


class _Exit(Exception):
    def __init__(self, status, message=None):
        super().__init__(message)
        self.status = status
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of calling ``sys.exit``."""

    def error(self, message):
        raise UsageError(message)

    def exit(self, status=0, message=None):
        raise _Exit(status, message)


def _settings_list(text):
    names = [s.strip() for s in text.split(",") if s.strip()]
    out = []
    for n in names:
        try:
            out.append(get_setting(n).key)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"unknown setting {n!r}; valid: {', '.join(SETTINGS)}") from None
    if not out:
        raise argparse.ArgumentTypeError("no setting given")
    return list(dict.fromkeys(out))


def _default_prog():
    arg0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if arg0 in ("__main__.py", "-m", "-c", "") or arg0.startswith("python"):
        return "python -m cnn compare"
    return arg0


def build_parser(prog=None):
    """The argument parser of :func:`compare_main`."""
    settings_help = "; ".join(f"{k}: {s.label}" for k, s in SETTINGS.items())
    p = _Parser(
        prog=prog or _default_prog(),
        description="Train the original's Example 3 network on MNIST with the "
                    "CalcLastLayerActDerivative flag off (as derived for sigmoid + cross-entropy) "
                    "and forced on, and related settings, from several seeds; write results.json, "
                    "results.csv, table.md, gradcheck.md and figures.",
        epilog="Example: %(prog)s --quick    (6,000 training / 2,000 test images, 2 seeds)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--seeds", type=_positive_int, metavar="N",
                   help="seeds 0..N-1 (default 5; 2 with --quick)")
    g.add_argument("--seed-list", type=_seed_list, metavar="S1,S2,...", help="explicit seeds")
    p.add_argument("--epochs", type=_positive_int, default=1, metavar="N",
                   help="epochs per run; the test error is recorded after each (default 1)")
    p.add_argument("--train-subset", type=_positive_int, metavar="N",
                   help=f"use the first N training images (a multiple of {BATCH_SIZE})")
    p.add_argument("--test-subset", type=_positive_int, metavar="N",
                   help="use the first N test images")
    p.add_argument("--settings", type=_settings_list, metavar="S1,S2,...",
                   help=f"which settings (default all): {settings_help}")
    p.add_argument("--jobs", type=_jobs, default=2, metavar="N",
                   help="trainings in parallel worker processes, one thread each (default 2; "
                        "-1: one per core)")
    p.add_argument("--out", default=os.path.join("runs", "compare"), metavar="DIR",
                   help="output folder (default runs/compare)")
    p.add_argument("--quick", action="store_true",
                   help="6,000 training / 2,000 test images, 2 seeds (unless given)")
    p.add_argument("--no-plots", action="store_true", help="write no figures")
    p.add_argument("--data-dir", metavar="DIR",
                   help="MNIST folder (default: $CNN_MNIST_DIR, else data/mnist; downloaded "
                        "there if missing)")
    p.add_argument("--no-download", action="store_true",
                   help="fail instead of downloading missing MNIST files")
    p.add_argument("--probe-every", type=_positive_int, default=25, metavar="N",
                   help="compare flag-on/off gradient norms every N minibatches (default 25)")
    p.add_argument("--reproduce", nargs="?", const="", metavar="REF",
                   help="instead of the comparison, retrain the two Octave reference runs from "
                        "their initial weights and compare (REF: the fixture .npz or a reference "
                        "MAT-file; default tests/fixtures/example3_reference.npz)")
    return p


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def _subset(data, n_train, n_test):
    train_x, train_y, test_x, test_y = data
    if n_train is not None:
        if n_train > len(train_x):
            raise UsageError(f"--train-subset {n_train} is more than the {len(train_x)} "
                             f"training images")
        train_x, train_y = train_x[:n_train], train_y[:n_train]
    if n_test is not None:
        if n_test > len(test_x):
            raise UsageError(f"--test-subset {n_test} is more than the {len(test_x)} test images")
        test_x, test_y = test_x[:n_test], test_y[:n_test]
    if len(train_x) % BATCH_SIZE:
        raise UsageError(f"the number of training images ({len(train_x)}) must be a multiple "
                         f"of the batch size {BATCH_SIZE}")
    return train_x, train_y, test_x, test_y


def _load_data(args, data):
    if data is not None:
        return tuple(data)
    from .mnist import load_mnist

    return load_mnist(args.data_dir, download=not args.no_download, progress=True)


def _reproduce(args, data):
    ref = args.reproduce or str(default_reference_path())
    if not Path(ref).is_file():
        raise UsageError(f"no reference file {ref}: pass the fixture .npz or a reference "
                         f"MAT-file to --reproduce")
    data = _load_data(args, data)
    results = []
    for flag in (None, True):
        _log(f"reproducing the Octave run with the flag {'forced on' if flag else 'off'} "
             f"(one epoch on {len(data[0])} images)...")
        r = reproduce_reference(ref, flag, data=data)
        _log(f"  test error {r['err']:.4f} (Octave {r['ref_err']:.4f}), predictions "
             f"{'identical' if r['pred_identical'] else 'differ'}, {r['train_seconds']:.0f} s")
        results.append(r)
    text = format_reproduction(results)
    print(text, end="")
    _write_text(Path(args.out) / "reproduction.md", text)
    return 0 if all(r["match"] for r in results) else 1


def compare_main(argv=None, *, data=None, prog=None):
    """Command line of the comparison. Returns the exit status (never calls ``sys.exit``).

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``); ``--help`` lists them.
    data : tuple, optional
        ``(train_x, train_y, test_x, test_y)`` to use instead of MNIST (tests).
    prog : str, optional
        Program name in messages (default ``python -m cnn compare`` or the
        script's name).

    Returns
    -------
    int
        0 on success; 2 for a bad command line; 1 when the data cannot be
        loaded, an output cannot be written, or (``--reproduce``) the numbers
        do not match.
    """
    parser = build_parser(prog)
    try:
        argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"{parser.prog}: error: {exc} (see --help)", file=sys.stderr)
        return 2
    except _Exit as exc:  # --help
        if exc.message:
            print(exc.message, file=sys.stderr, end="")
        return exc.status
    try:
        if args.reproduce is not None:
            return _reproduce(args, data)
        return _compare(args, data, " ".join([parser.prog] + argv))
    except UsageError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:  # MNISTNotFoundError is an OSError
        msg = " ".join(str(exc).split())
        print(f"{parser.prog}: error: {msg}", file=sys.stderr)
        return 2 if isinstance(exc, (FileNotFoundError, ValueError)) else 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


def _compare(args, data, command):
    if args.seed_list is not None:
        seeds = args.seed_list
    else:
        seeds = list(range(args.seeds if args.seeds is not None else (2 if args.quick else 5)))
    n_train, n_test = args.train_subset, args.test_subset
    if args.quick:
        n_train = 6000 if n_train is None else n_train
        n_test = 2000 if n_test is None else n_test
    if n_train is not None and n_train % BATCH_SIZE:
        raise UsageError(f"--train-subset must be a multiple of the batch size {BATCH_SIZE}, "
                         f"got {n_train}")
    settings = args.settings or list(SETTINGS)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    data = _subset(_load_data(args, data), n_train, n_test)
    n_runs = len(settings) * len(seeds)
    jobs = min(args.jobs, n_runs)
    _log(f"compare: {n_runs} runs ({len(settings)} settings x {len(seeds)} seeds), "
         f"{len(data[0])} training / {len(data[2])} test images, {args.epochs} epoch(s), "
         f"{jobs} job(s) -> {out}")
    text, _ = gradcheck_table()
    print("Gradient check (which loss the gradients belong to):\n")
    print(text.split("\n\nRow 1")[0], flush=True)
    t0 = time.perf_counter()
    runs = run_comparison(settings, seeds, data, args.epochs, jobs=jobs,
                          probe_every=args.probe_every,
                          log=_log)
    meta = {"n_train": len(data[0]), "n_test": len(data[2]), "epochs": args.epochs,
            "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE, "seeds": seeds,
            "settings": settings, "jobs": jobs, "probe_every": args.probe_every,
            "machine": machine_text(),
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "wall_seconds": time.perf_counter() - t0,
            "command": command}
    write_results(out, runs, meta, plots=not args.no_plots, gradcheck=text)
    print("\n" + format_table(summarise(runs), meta), end="")
    _log(f"wrote {out}/results.json, results.csv, table.md, gradcheck.md"
         + ("" if args.no_plots else " and figures") + f" ({meta['wall_seconds']:.0f} s)")
    return 0
