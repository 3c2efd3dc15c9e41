"""``cnn compare``: the flag studies on MNIST (command-line parsing and outputs).

Studies (``--study``):

* ``flag`` (default): Example 3 with the flag off, forced on and related
  settings, several seeds (:mod:`cnn.studies.flag`);
* ``lr``: flag off / on / quad over a learning-rate grid, seeds and epochs
  (:mod:`cnn.studies.lr`);
* ``pairings``: which output/loss pairs give ``delta = a - y``
  (:mod:`cnn.studies.pairings`);
* ``--reproduce``: the Octave reference runs (:mod:`cnn.studies.reproduce`).

Every training is one record in ``<out>/runs/`` (:mod:`cnn.studies.store`),
written when it finishes; a rerun trains only the missing ones (``--fresh``:
all). ``--scheduler ADDRESS`` runs them on a Dask cluster. The output folder
is checked writable and locked before any training. Ctrl-C (exit 130) and
SIGTERM (exit 143) stop every worker, keep the finished records and write the
outputs from them, marked partial.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from .args import jobs as _jobs
from .args import positive_float, positive_int, seed_list

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
HELP = "the flag studies on MNIST: flag on vs off, learning rates, output/loss pairings"

STUDIES = ("flag", "lr", "pairings")


class UsageError(Exception):
    """A bad command line or input (exit status 2)."""


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
    from ..studies.flag import SETTINGS, get_setting

    out = []
    for n in (s.strip() for s in text.split(",")):
        if not n:
            continue
        try:
            out.append(get_setting(n).key)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"unknown setting {n!r}; valid: {', '.join(SETTINGS)}"
            ) from None
    if not out:
        raise argparse.ArgumentTypeError("no setting given")
    return list(dict.fromkeys(out))


def _float_list(text):
    try:
        vals = [positive_float(s) for s in text.split(",") if s.strip()]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive numbers, got {text!r}"
        ) from None
    if not vals:
        raise argparse.ArgumentTypeError("no learning rate given")
    return sorted(set(vals))


def _default_prog():
    arg0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if arg0 in ("__main__.py", "-m", "-c", "") or arg0.startswith("python"):
        return "python -m cnn compare"
    return arg0


def build_parser(prog=None):
    """The argument parser of :func:`main`."""
    from ..studies.flag import BATCH_SIZE, SETTINGS
    from ..studies.lr import EPOCHS, LRS, SEEDS

    settings_help = "; ".join(f"{k}: {s.label}" for k, s in SETTINGS.items())
    p = _Parser(
        prog=prog or _default_prog(),
        description="Studies of the CalcLastLayerActDerivative flag on MNIST. flag (default): "
        "Example 3 with the flag off (as derived for sigmoid + cross-entropy), "
        "forced on and related settings, several seeds. lr: flag off/on over a "
        "learning-rate grid, seeds and epochs, and whether the flag on at its best "
        "lr matches the flag off at its best. pairings: which output activation + "
        "loss pairs give delta = a - y (gradient checks, MNIST error). Every "
        "training is stored in OUT/runs/ as it finishes; rerunning the command "
        "trains only the missing ones.",
        epilog="Examples: %(prog)s --quick;  %(prog)s --study lr --jobs 2;  "
        "%(prog)s --study pairings;  %(prog)s --study lr --scheduler tcp://host:8786",
    )
    p.add_argument("--study", choices=STUDIES, default="flag", help="which study (default flag)")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--seeds",
        type=positive_int,
        metavar="N",
        help=f"seeds 0..N-1 (default: flag 5, lr {SEEDS}, pairings 2; fewer with --quick)",
    )
    g.add_argument("--seed-list", type=seed_list, metavar="S1,S2,...", help="explicit seeds")
    p.add_argument(
        "--epochs",
        type=positive_int,
        metavar="N",
        help=f"epochs per run; the test error is recorded after each (default: "
        f"flag 1, lr {EPOCHS}, pairings 1)",
    )
    p.add_argument(
        "--train-subset",
        type=positive_int,
        metavar="N",
        help=f"use the first N training images (a multiple of {BATCH_SIZE})",
    )
    p.add_argument(
        "--test-subset", type=positive_int, metavar="N", help="use the first N test images"
    )
    p.add_argument(
        "--settings",
        type=_settings_list,
        metavar="S1,S2,...",
        help=f"flag study: which settings (default all): {settings_help}",
    )
    p.add_argument(
        "--lrs",
        type=_float_list,
        metavar="LR1,LR2,...",
        help="lr study: the learning rates (default " + ",".join(f"{v:g}" for v in LRS) + ")",
    )
    p.add_argument(
        "--jobs",
        type=_jobs,
        default=2,
        metavar="N",
        help="trainings in parallel worker processes, one BLAS thread each "
        "(default 2; -1: one per core); the numbers do not depend on it",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the trainings on a Dask cluster (e.g. tcp://host:8786, started "
        "with `dask scheduler` and `dask worker`) instead of local workers",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (default runs/compare, runs/compare-lr, runs/compare-pairings)",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="retrain every run instead of reusing the records in OUT/runs/",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a small version (6,000 training / 2,000 test images, fewer seeds, "
        "learning rates and epochs): about a minute",
    )
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="use the synthetic digits (cnn.synthetic) instead of MNIST",
    )
    p.add_argument("--no-plots", action="store_true", help="write no figures")
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="MNIST folder (default: $CNN_MNIST_DIR, else the data home; "
        "downloaded there if missing)",
    )
    p.add_argument(
        "--no-download", action="store_true", help="fail instead of downloading missing MNIST files"
    )
    p.add_argument(
        "--probe-every",
        type=positive_int,
        default=25,
        metavar="N",
        help="flag study: compare flag-on/off gradient norms every N minibatches (default 25)",
    )
    p.add_argument(
        "--reproduce",
        nargs="?",
        const="",
        metavar="REF",
        help="instead of a study, retrain the two Octave reference runs from "
        "their initial weights and compare (REF: the fixture .npz or a reference "
        "MAT-file; default tests/fixtures/example3_reference.npz)",
    )
    return p


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- signals


@contextlib.contextmanager
def _sigterm_raises():
    """Turn SIGTERM into :class:`~cnn.studies.run.Terminated` while the block runs."""
    from ..studies.run import Terminated

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# --------------------------------------------------------------------------- data


def _plan(args):
    """Seeds, epochs and subset sizes of the chosen study, from the options and defaults."""
    from ..studies import lr as lr_study

    study = args.study
    quick = args.quick
    if study == "lr":
        n_seeds = lr_study.QUICK["seeds"] if quick else lr_study.SEEDS
        epochs = lr_study.QUICK["epochs"] if quick else lr_study.EPOCHS
    elif study == "pairings":
        from ..studies import pairings

        n_seeds = pairings.QUICK["seeds"] if quick else pairings.SEEDS
        epochs = 1
    else:
        n_seeds, epochs = (2 if quick else 5), 1
    seeds = (
        args.seed_list
        if args.seed_list is not None
        else list(range(args.seeds if args.seeds is not None else n_seeds))
    )
    epochs = args.epochs or epochs
    n_train, n_test = args.train_subset, args.test_subset
    if quick or args.synthetic:
        n_train = 6000 if n_train is None else n_train
        n_test = 2000 if n_test is None else n_test
    return seeds, epochs, n_train, n_test


def _load(args, data, n_train, n_test):
    """The study's data as a :class:`~cnn.studies.run.Dataset` (subset applied)."""
    from ..studies.flag import BATCH_SIZE
    from ..studies.run import Dataset, load_source

    source = None
    if data is not None:
        arrays = tuple(data)
    elif args.synthetic:
        source = {"kind": "synthetic", "n_train": n_train, "n_test": n_test}
        arrays = load_source(source)
    else:
        from ..mnist import load_mnist

        arrays = load_mnist(args.data_dir, download=not args.no_download, progress=True)
    train_x, train_y, test_x, test_y = arrays
    if n_train is not None and n_train > len(train_x):
        raise UsageError(
            f"--train-subset {n_train} is more than the {len(train_x)} training images"
        )
    if n_test is not None and n_test > len(test_x):
        raise UsageError(f"--test-subset {n_test} is more than the {len(test_x)} test images")
    n_train = len(train_x) if n_train is None else n_train
    n_test = len(test_x) if n_test is None else n_test
    if n_train % BATCH_SIZE:
        raise UsageError(
            f"the number of training images ({n_train}) must be a multiple "
            f"of the batch size {BATCH_SIZE}"
        )
    arrays = (train_x[:n_train], train_y[:n_train], test_x[:n_test], test_y[:n_test])
    if source is None and data is None:
        source = {"kind": "mnist", "n_train": n_train, "n_test": n_test}
    return Dataset.from_arrays(arrays, source)


@contextlib.contextmanager
def _output(out):
    """Create the output folder and make sure it is writable (before any training);
    removed again if the block fails before writing anything into it."""
    from ..train_run import UsageError as _RunUsageError
    from ..train_run import output_folder

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(output_folder(out, "--out"))
        except _RunUsageError as exc:
            raise UsageError(str(exc)) from None
        yield out


# --------------------------------------------------------------------------- main


def main(argv=None, prog=None, *, data=None):
    """Command line of the studies. Returns the exit status (never calls ``sys.exit``).

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``); ``--help`` lists them.
    prog : str, optional
        Program name in messages (default ``python -m cnn compare`` or the
        script's name).
    data : tuple, optional
        ``(train_x, train_y, test_x, test_y)`` to use instead of MNIST (tests).

    Returns
    -------
    int
        0 on success; 1 when a run failed or (``--reproduce``) the numbers do
        not match; 2 for a bad command line, missing data or an output folder
        that cannot be written or is in use; 130 after Ctrl-C, 143 after
        SIGTERM (the finished runs are kept and the outputs written, partial).
    """
    from ..studies.run import Terminated

    parser = build_parser(prog)
    try:
        argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"{parser.prog}: error: {exc} (see --help)", file=sys.stderr)
        return EXIT_USAGE
    except _Exit as exc:  # --help
        if exc.message:
            print(exc.message, file=sys.stderr, end="")
        return exc.status
    command = " ".join([parser.prog] + argv)
    try:
        with _sigterm_raises():
            if args.reproduce is not None:
                return _reproduce(args, data)
            return _study(args, data, command)
    except UsageError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ValueError) as exc:  # MNISTNotFoundError is a FileNotFoundError
        msg = " ".join(str(exc).split())
        print(f"{parser.prog}: error: {msg}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, FileNotFoundError) else EXIT_FAIL
    except Terminated:
        print(f"{parser.prog}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _reproduce(args, data):
    from ..atomic import write_text
    from ..studies.reproduce import default_reference_path, format_reproduction, reproduce_reference

    ref = args.reproduce or str(default_reference_path())
    if not Path(ref).is_file():
        raise UsageError(
            f"no reference file {ref}: pass the fixture .npz or a reference MAT-file to --reproduce"
        )
    out = Path(args.out or os.path.join("runs", "compare"))
    with _output(out):
        if data is None:
            from ..mnist import load_mnist

            data = load_mnist(args.data_dir, download=not args.no_download, progress=True)
        results = []
        for flag in (None, True):
            _log(
                f"reproducing the Octave run with the flag {'forced on' if flag else 'off'} "
                f"(one epoch on {len(data[0])} images)..."
            )
            r = reproduce_reference(ref, flag, data=data)
            _log(
                f"  test error {r['err']:.4f} (Octave {r['ref_err']:.4f}), predictions "
                f"{'identical' if r['pred_identical'] else 'differ'}, {r['train_seconds']:.0f} s"
            )
            results.append(r)
        text = format_reproduction(results)
        print(text, end="")
        write_text(out / "reproduction.md", text)
        return EXIT_OK if all(r["match"] for r in results) else EXIT_FAIL


def _study(args, data, command):
    from ..atomic import FolderBusyError, folder_lock
    from ..studies import report
    from ..studies.run import run_specs

    default_out = {"flag": "compare", "lr": "compare-lr", "pairings": "compare-pairings"}
    out = Path(args.out or os.path.join("runs", default_out[args.study]))
    seeds, epochs, n_train, n_test = _plan(args)
    if args.study == "pairings" and args.quick and args.train_subset is None:
        from ..studies.pairings import QUICK

        n_train, n_test = QUICK["n_train"], QUICK["n_test"]
    if args.settings and args.study != "flag":
        raise UsageError("--settings belongs to --study flag")
    if args.lrs and args.study != "lr":
        raise UsageError("--lrs belongs to --study lr")
    if args.scheduler:
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise UsageError(
                "--scheduler needs dask.distributed (pip install 'cnn[distributed]')"
            ) from None
    with _output(out):
        try:
            lock = folder_lock(out, "study")
            lock.__enter__()
        except FolderBusyError as exc:
            raise UsageError(str(exc)) from None
        try:
            dataset = _load(args, data, n_train, n_test)
            meta = {
                "study": args.study,
                "n_train": len(dataset.arrays[0]),
                "n_test": len(dataset.arrays[2]),
                "epochs": epochs,
                "seeds": seeds,
                "data": dataset.fingerprint,
                "data_source": dataset.source,
                "jobs": args.jobs,
                "scheduler": args.scheduler,
                "machine": report.machine_text(),
                "date": report.now_text(),
                "command": command,
            }
            study = {"flag": _flag_study, "lr": _lr_study, "pairings": _pairings_study}[args.study]
            specs, write = study(args, dataset, seeds, epochs, meta)
            _log(
                f"compare --study {args.study}: {len(specs)} runs, {meta['n_train']} training / "
                f"{meta['n_test']} test images, "
                + (f"Dask at {args.scheduler}" if args.scheduler else f"{args.jobs} job(s)")
                + f" -> {out}"
            )
            t0 = time.perf_counter()
            outcome = run_specs(
                specs,
                dataset,
                out,
                jobs=args.jobs,
                scheduler=args.scheduler,
                fresh=args.fresh,
                log=_log,
            )
            meta.update(
                wall_seconds=time.perf_counter() - t0,
                reused=outcome.reused,
                trained=outcome.trained,
                total=outcome.total,
                partial=outcome.partial,
                stopped=outcome.stopped,
                failed={
                    outcome.specs[i].get("label", "?") + f" seed {outcome.specs[i].get('seed')}": m
                    for i, m in outcome.failed.items()
                },
            )
            if outcome.finished:
                paths = write(out, outcome, meta, plots=not args.no_plots)
                _log(
                    f"wrote {', '.join(p.name for p in paths)} in {out}"
                    + (
                        " (PARTIAL: "
                        + report.partial_note(outcome).replace("**PARTIAL**: ", "")
                        + ")"
                        if outcome.partial
                        else ""
                    )
                    + f" ({meta['wall_seconds']:.0f} s)"
                )
            for i, msg in outcome.failed.items():
                _log(
                    f"run failed: {outcome.specs[i].get('label')}, seed "
                    f"{outcome.specs[i].get('seed')}: {msg}"
                )
        finally:
            lock.__exit__(None, None, None)
        if outcome.stopped == "terminated":
            raise _terminated()
        if outcome.stopped == "interrupted":
            raise KeyboardInterrupt
        return EXIT_FAIL if outcome.failed else EXIT_OK


def _terminated():
    from ..studies.run import Terminated

    return Terminated()


def _write_json(path, doc):
    from ..atomic import write_text
    from ..studies.report import json_safe

    return write_text(path, json.dumps(json_safe(doc), indent=1, allow_nan=False) + "\n")


# --------------------------------------------------------------------------- the studies


def _flag_study(args, dataset, seeds, epochs, meta):
    from ..studies import flag
    from ..studies.flag import BATCH_SIZE, LEARNING_RATE, SETTINGS

    settings = args.settings or list(SETTINGS)
    specs = flag.specs(settings, seeds, dataset, epochs, probe_every=args.probe_every)
    meta.update(
        batch_size=BATCH_SIZE,
        learning_rate=LEARNING_RATE,
        settings=settings,
        probe_every=args.probe_every,
    )
    text, _ = flag.gradcheck_table()
    print("Gradient check (which loss the gradients belong to):\n")
    print(text.split("\n\nRow 1")[0], flush=True)

    def write(out, outcome, meta, plots):
        from ..atomic import write_text
        from ..studies.plots import flag_figures
        from ..studies.report import partial_note

        runs = [rec for _, rec in outcome.finished]
        summary = flag.summarise(runs)
        note = partial_note(outcome)
        table = (note + "\n\n" if note else "") + flag.format_table(summary, meta)
        paths = [
            _write_json(
                out / "results.json",
                {
                    "meta": meta,
                    "settings": {k: vars(s) for k, s in SETTINGS.items()},
                    "summary": summary,
                    "runs": runs,
                },
            ),
            write_text(out / "results.csv", flag.results_csv(runs)),
            write_text(out / "table.md", table),
            write_text(out / "gradcheck.md", text),
        ]
        if plots:
            paths += flag_figures(runs, out)
        print("\n" + table, end="")
        return paths

    return specs, write


def _lr_study(args, dataset, seeds, epochs, meta):
    from ..studies import lr
    from ..studies.flag import BATCH_SIZE

    lrs = args.lrs or (lr.QUICK["lrs"] if args.quick else lr.LRS)
    specs = lr.specs(dataset, lrs=lrs, seeds=seeds, epochs=epochs)
    meta.update(
        batch_size=BATCH_SIZE, lrs=list(lrs), settings=list(lr.SETTINGS), quad_seeds=seeds[:1]
    )

    def write(out, outcome, meta, plots):
        from ..atomic import write_text
        from ..studies.plots import lr_figure
        from ..studies.report import partial_note

        summary = lr.summarise(outcome.finished)
        table = lr.format_table(summary, meta, note=partial_note(outcome))
        n_ep = max(c["n_epochs"] for c in summary)
        verdicts = [lr.verdict(summary, e) for e in range(1, n_ep + 1)]
        paths = [
            _write_json(
                out / "results.json",
                {
                    "meta": meta,
                    "summary": summary,
                    "verdicts": [
                        v
                        and {
                            k: v[k]
                            for k in (
                                "epoch",
                                "gap",
                                "spread",
                                "within",
                                "overlap",
                                "edges",
                                "text",
                            )
                        }
                        | {"off_lr": v["off"]["lr"], "on_lr": v["on"]["lr"]}
                        for v in verdicts
                    ],
                },
            ),
            write_text(out / "results.csv", lr.csv_text(outcome.finished)),
            write_text(out / "table.md", table),
        ]
        if plots:
            seeds = sorted({s["seed"] for s, _ in outcome.finished})
            part = (
                f"; PARTIAL: {len(outcome.finished)} of {outcome.total} runs"
                if outcome.partial
                else ""
            )
            paths.append(
                lr_figure(
                    summary,
                    out / "lr_test_error.png",
                    title=(
                        f"Example 3, {meta['n_train']} training images: "
                        "test error vs learning rate "
                        f"(mean +- std over seeds {', '.join(map(str, seeds))}{part})"
                    ),
                )
            )
        print(table, end="")
        return paths

    return specs, write


def _pairings_study(args, dataset, seeds, epochs, meta):
    from ..studies import pairings

    rows = pairings.gradient_rows(quick=args.quick)
    specs = pairings.specs(dataset, seeds=seeds, epochs=epochs)
    meta.update(pairings.meta())
    print(pairings.format_gradient_table(rows), flush=True)

    def write(out, outcome, meta, plots):
        from ..atomic import write_text
        from ..studies.plots import pairings_figure
        from ..studies.report import partial_note

        mnist = pairings.summarise_mnist(outcome.finished)
        text = pairings.format_report(rows, mnist, meta, note=partial_note(outcome))
        paths = [
            _write_json(
                out / "results.json",
                {
                    "meta": meta,
                    "gradient_checks": pairings.rows_json(rows),
                    "findings": pairings.findings(rows),
                    "mnist": mnist,
                },
            ),
            write_text(out / "table.md", text),
        ]
        if plots:
            paths.append(
                pairings_figure(
                    [r for r in rows if r["mode"] == "corrected"], out / "pairings_gradcheck.png"
                )
            )
        print(text[text.index("## MNIST") :] if "## MNIST" in text else text, end="")
        return paths

    return specs, write
