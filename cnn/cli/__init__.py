"""The command line: ``python -m cnn <command> [options]``.

=============  ===========================================================================
``train``      ``Example_MNIST_CNN.m`` with checkpoints, resume, Ctrl-C and progress bars
               (:mod:`cnn.train_run`)
``test``       error rate of a saved network (``.mat`` or ``.npz``) on the MNIST test set
``compare``    the flag-on vs flag-off comparison (:func:`cnn.cli.compare.main`)
``gradcheck``  numerical gradient check of a small network, as a Markdown table
``step``       one minibatch through ``bpcnn``, layer by layer, next to ``bpcnn.m``
               (:mod:`cnn.step`); ``--pdb`` stops in the debugger at the flag
``bench``      ``scripts/bench.py`` of the source repository
=============  ===========================================================================

Exit codes: 0 success; 1 failure (a failed gradient check, NaN/Inf or another
error during training); 2 usage or input error (bad options, missing or
unreadable files, MNIST not found); 130 interrupted by Ctrl-C. Errors are
reported as one line ``cnn: error: ...`` on stderr; ``--debug`` adds the
traceback.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import traceback
from pathlib import Path

PROG = "python -m cnn"

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CLIError(Exception):
    """An error with its exit code, reported as one line on stderr."""

    def __init__(self, message, code=EXIT_USAGE):
        super().__init__(message)
        self.code = code


class _ArgumentError(CLIError):
    """Bad command-line arguments (argparse's errors, exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are exceptions, not a usage dump and ``sys.exit``."""

    def error(self, message):
        raise _ArgumentError(f"{message} (see '{self.prog} --help')")


# --------------------------------------------------------------------------- parser

def _common():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback of an error")
    return p


def build_parser():
    """The parser of ``python -m cnn`` and its subcommands."""
    from .. import step, train_run
    from . import args as args_

    common = _common()
    p = _Parser(prog=PROG, description="The MATLAB sample CNN (File Exchange 59223), ported "
                "to Python: train, test, compare, check gradients, step through bpcnn.",
                epilog="Exit codes: 0 ok, 1 failure (failed gradient check, training error), "
                       "2 usage or input error, 130 interrupted. "
                       f"'{PROG} COMMAND --help' describes each command.")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    t = sub.add_parser(
        "train", parents=[common], help="train Example 1/2/3 on MNIST (or synthetic digits)",
        description="The port of Example_MNIST_CNN.m: build the network, train it with "
                    "traincnn, print the training time and the test error, save net.mat, "
                    "net.npz and loss.png into --out. Checkpoints every K minibatches and at "
                    "the end; --resume continues bit for bit; Ctrl-C writes a checkpoint and "
                    "exits with 130.")
    train_run.add_arguments(t)

    s = sub.add_parser(
        "test", parents=[common], help="test error of a saved network",
        description="Load a network (.mat struct or .npz) and print its error on the MNIST "
                    "test set (testcnn) and the number of misclassified images.")
    s.add_argument("network", metavar="NETWORK", help="a .mat (save_cnn, savecnn, the "
                   "reference runs) or .npz (save_npz, checkpoints) network file")
    s.add_argument("--var", default="cnn", metavar="NAME",
                   help="variable of a MAT-file holding the struct (default cnn; cnn1 for "
                        "the original's savecnn)")
    s.add_argument("--mode", choices=("faithful", "corrected"),
                   help="override the mode stored in the file (only the forward pass runs, "
                        "so the result does not depend on it)")
    s.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    s.add_argument("--test-subset", type=args_.positive_int, metavar="N",
                   help="use the first N test images")
    s.add_argument("--synthetic", type=args_.positive_int, metavar="N",
                   help="test on N synthetic digits (cnn.synthetic) instead of MNIST")
    s.add_argument("--data-dir", metavar="DIR",
                   help="MNIST directory (default: $CNN_MNIST_DIR, else data/mnist)")
    s.add_argument("--no-download", dest="download", action="store_false",
                   help="never download MNIST (also: environment CNN_NO_DOWNLOAD=1)")
    s.add_argument("--plots", metavar="DIR", help="write the confusion matrix, the "
                   "first-layer kernels and the feature maps of the first test digit into DIR")

    sub.add_parser(
        "compare", help="flag on vs off on MNIST over several seeds (see compare --help)",
        add_help=False)

    g = sub.add_parser(
        "gradcheck", parents=[common], help="numerical gradient check of a small network",
        description="Build a small network, run ffcnn and bpcnn on random data and compare "
                    "every gradient with central differences of the loss (the original's "
                    "gradient_checker, epsilon 1e-4, tolerance 1e-7 absolute). Prints a "
                    "Markdown table; exit 0 if every array passes, 1 if not.")
    g.add_argument("--net", choices=tuple(GRADCHECK_NETS), default="small",
                   help="; ".join(f"{k}: {v[0]}" for k, v in GRADCHECK_NETS.items())
                   + " (default small)")
    g.add_argument("--mode", choices=("faithful", "corrected"), default="faithful",
                   help="faithful keeps the original's defects D1-D4, corrected fixes them "
                        "(default faithful)")
    g.add_argument("--flag", choices=("auto", "on", "off"), default="auto",
                   help="CalcLastLayerActDerivative: auto derives it as traincnn does "
                        "(default auto)")
    g.add_argument("--loss", choices=("auto", "quad", "cros"), default="auto",
                   help="loss_func (default auto: cros for a sigmoid output, else quad)")
    g.add_argument("--n", type=args_.positive_int, default=4, metavar="N",
                   help="examples in the batch (default 4)")
    g.add_argument("--seed", type=args_.nonnegative_int, default=0,
                   help="seed of the weights and of the data (default 0)")
    g.add_argument("--max-per-array", type=args_.positive_int, metavar="K",
                   help="check at most K random elements of each parameter array")
    g.add_argument("--epsilon", type=args_.positive_float, default=1e-4,
                   help="step of the central difference (default 1e-4, as the original)")
    g.add_argument("--tol", type=args_.positive_float, default=1e-7,
                   help="absolute tolerance (default 1e-7, as the original)")

    st = sub.add_parser(
        "step", parents=[common], help="one minibatch through bpcnn, layer by layer",
        description="Run ffcnn and bpcnn on one minibatch and print, from the last layer to "
                    "the first, what bpcnn computed: the output error before and after the "
                    "CalcLastLayerActDerivative flag, each layer's er (shape, norm) and "
                    "dK/dW/db norms, with the lines of the original bpcnn.m. Default network: "
                    "Example 3 on MNIST if the files are there, else on synthetic digits.")
    step.add_arguments(st)

    b = sub.add_parser(
        "bench", help="run scripts/bench.py (source checkout only)", add_help=False,
        description="Runs scripts/bench.py of the source repository with the given options "
                    "(e.g. --images N --test-images N --skip-torch --skip-naive --json FILE).")
    b.add_argument("-h", "--help", action="store_true", dest="bench_help",
                   help="this help, then the help of scripts/bench.py")
    return p


def _version():
    try:
        from .. import __version__
        return __version__
    except ImportError:  # pragma: no cover
        return "?"


# --------------------------------------------------------------------------- gradcheck

GRADCHECK_NETS = {
    "small": ("c(tanh 2 maps 3x3)-p2-f(tanh 6)-f(sigm 3) on 8x8", (8, 8),
              [("c", 2, 3, "tanh"), ("p", 2), ("f", 6, "tanh"), ("f", 3, "sigm")]),
    "c2": ("two conv layers, c(tanh 2, 3x3)-p2-c(tanh 3, 2x2)-p2-f(tanh 6)-f(sigm 3) on 12x12 "
           "(D1: faithful fails on the lower conv layer)", (12, 12),
           [("c", 2, 3, "tanh"), ("p", 2), ("c", 3, 2, "tanh"), ("p", 2), ("f", 6, "tanh"),
            ("f", 3, "sigm")]),
    "none-hidden": ("c(sigm 2, 3x3)-p2-f(none 5)-f(sigm 3) on 8x8 (D2: hidden 'none')", (8, 8),
                    [("c", 2, 3, "sigm"), ("p", 2), ("f", 5, "none"), ("f", 3, "sigm")]),
    "none-conv": ("c(none 2, 3x3)-p2-f(sigm 3) on 8x8 (D2 in a conv layer)", (8, 8),
                  [("c", 2, 3, "none"), ("p", 2), ("f", 3, "sigm")]),
    "conv-last": ("c(sigm 2, 3x3) on 6x6, the conv layer last (D3)", (6, 6),
                  [("c", 2, 3, "sigm")]),
    "pool-last": ("c(sigm 2, 3x3)-p2 on 8x8, the pool layer last (D4)", (8, 8),
                  [("c", 2, 3, "sigm"), ("p", 2)]),
    "original": ("c(plus 3, 5x5)-p2-f(tanh 15)-f(soft 6) on 10x10, the network of "
                 "Example_gradientchecking_CNN.m", (10, 10),
                 [("c", 3, 5, "plus"), ("p", 2), ("f", 15, "tanh"), ("f", 6, "soft")]),
    "fc-only": ("f(tanh 6)-f(sigm 3) on 4x4", (4, 4), [("f", 6, "tanh"), ("f", 3, "sigm")]),
}
"""``--net`` choices of ``gradcheck``: (description, image size, layer specs)."""


def gradcheck_network(name, *, mode="faithful", loss="auto", seed=0, n=4):
    """The network and random data of ``python -m cnn gradcheck --net NAME``.

    Returns
    -------
    net : CNN
    x : ndarray, shape (n, H, W), uniform [0, 1)
    y : ndarray, shape (n, n_outputs), one-hot
    """
    import numpy as np

    from .. import network

    _, size, spec = GRADCHECK_NETS[name]
    net = network.initcnn(size, 0.1, mode=mode, seed=seed)
    for s in spec:
        if s[0] == "c":
            network.add_conv_layer(net, s[1], s[2], s[3])
        elif s[0] == "p":
            network.add_pool_layer(net, s[1])
        else:
            network.add_fc_layer(net, s[1], s[2])
    net.loss_func = loss
    rng = np.random.default_rng(seed + 1)
    x = rng.random((n,) + tuple(size))
    y = np.eye(net.n_outputs)[rng.integers(0, net.n_outputs, n)]
    return net, x, y


def _cmd_gradcheck(args):
    from ..backward import prepare_loss_and_flag
    from ..gradcheck import gradient_checker

    net, x, y = gradcheck_network(args.net, mode=args.mode, loss=args.loss, seed=args.seed,
                                  n=args.n)
    flag = {"auto": None, "on": True, "off": False}[args.flag]
    try:
        prepare_loss_and_flag(net, flag)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    report = gradient_checker(net, x, y, epsilon=args.epsilon, tol=args.tol,
                              max_per_array=args.max_per_array, seed=args.seed)
    print(f"network: {GRADCHECK_NETS[args.net][0]}; N = {args.n}, seed {args.seed}")
    print(report)
    fails = report.failures()
    if fails:
        worst = ", ".join(f"layer {c.layer} {c.param} (max abs {c.max_abs:.2e}, norm rel "
                          f"{c.norm_rel:.2e})" for c in fails)
        print(f"FAIL: {worst}")
        return EXIT_FAIL
    print("PASS: every gradient matches the central difference")
    return EXIT_OK


# --------------------------------------------------------------------------- test

def _cmd_test(args):
    import time

    import numpy as np

    from .. import training, train_run

    dtype = np.float32 if args.dtype == "float32" else np.float64
    net = train_run._load_network_file(args.network, args.var, args.mode, dtype)
    C, H, W = net.input_shape
    if C != 1 or net.n_outputs != 10:
        raise CLIError(f"{args.network}: the network takes {C} x {H}x{W} inputs and gives "
                       f"{net.n_outputs} outputs; the test sets need 1 x HxW inputs and 10 "
                       f"outputs")
    if args.synthetic is None and (H, W) != (28, 28):
        raise CLIError(f"{args.network}: the network takes {H}x{W} images; MNIST images are "
                       f"28x28 (use --synthetic N)")
    download = args.download and os.environ.get("CNN_NO_DOWNLOAD", "").strip() in ("", "0")
    tx, ty, desc = train_run.load_data(
        "test", synthetic=args.synthetic, subset=args.test_subset, data_dir=args.data_dir,
        download=download, progress=True, size=(H, W))
    t0 = time.perf_counter()
    _, pred = training.predictcnn(net, tx)
    elapsed = time.perf_counter() - t0
    true = ty.argmax(axis=1)
    wrong = int(np.count_nonzero(pred != true))
    print(f"network: {args.network} ({net.mode} mode)")
    print(f"data: {desc}")
    print(f"test error is {wrong / len(true):.4f} ({wrong} of {len(true)} misclassified); "
          f"test time {elapsed:.1f} s")
    if args.plots is not None:
        files = train_run.write_test_plots(net, args.plots, tx, true, pred)
        print("plots: " + ", ".join(str(p) for p in files.values()))
    return EXIT_OK


# --------------------------------------------------------------------------- train

def _cmd_train(args):
    from .. import train_run

    cfg = train_run.config_from_args(args)
    try:
        train_run.run_training(cfg)
    except train_run.Interrupted as exc:
        print(f"cnn: {exc}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return EXIT_OK


# --------------------------------------------------------------------------- compare, bench

def _cmd_compare(argv):
    try:
        from .compare import main as compare_main
    except ImportError as exc:
        raise CLIError(f"the comparison is not available: {exc}", EXIT_FAIL) from None
    return int(compare_main(argv, prog=f"{PROG} compare") or 0)


def bench_script():
    """``scripts/bench.py`` of the source checkout this package runs from, or None."""
    p = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"
    return p if p.is_file() else None


def _cmd_bench(argv):
    script = bench_script()
    if "-h" in argv or "--help" in argv:
        print(f"usage: {PROG} bench [options of scripts/bench.py]\n\nRuns scripts/bench.py "
              f"of the source repository with the given options (e.g. --images N "
              f"--test-images N --skip-torch --skip-naive --json FILE).", flush=True)
        if script is None:
            print("scripts/bench.py is not in this checkout.")
            return EXIT_OK
        print(f"Its options ({script}):\n", flush=True)
    if script is None:
        raise CLIError("scripts/bench.py not found: the benchmark is part of the source "
                       "repository (run it from a checkout installed with 'pip install -e .')")
    return subprocess.call([sys.executable, str(script), *argv])


# --------------------------------------------------------------------------- main

def _split_command(argv):
    """``(global options, command, rest)`` where the command is the first non-option word."""
    for i, a in enumerate(argv):
        if not a.startswith("-"):
            return argv[:i], a, argv[i + 1:]
    return argv, None, []


def _error(message, code, exc=None, debug=False):
    if debug and exc is not None:
        traceback.print_exception(exc)
    first, *rest = str(message).splitlines() or [""]
    print(f"cnn: error: {first}", file=sys.stderr)
    for line in rest:
        print(f"  {line}", file=sys.stderr)
    sys.stderr.flush()
    return code


def _flushed(code):
    """Flush stdout inside the error handling (a closed pipe is then caught), return ``code``."""
    sys.stdout.flush()
    return code


def _stdout_closed():
    """The reader of stdout went away (``python -m cnn step | head``): stop quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
    except (OSError, ValueError):
        pass
    return EXIT_FAIL


def train_main(argv=None, prog="scripts/example_mnist.py"):
    """``python -m cnn train`` under another name (``scripts/example_mnist.py``)."""
    from .. import train_run

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        p = _Parser(prog=prog, parents=[_common()],
                    description="Example_MNIST_CNN.m in Python: train Example 1/2/3 on MNIST "
                                f"(or synthetic digits), as '{PROG} train'.")
        train_run.add_arguments(p)
        try:
            args = p.parse_args(argv)
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        return _flushed(_cmd_train(args))
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt as exc:
        return _error("interrupted", EXIT_INTERRUPTED, exc, debug)
    except BaseException as exc:  # noqa: BLE001
        message, code = describe_error(exc)
        return _error(message, code, exc, debug)


def main(argv=None):
    """Run ``python -m cnn`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        head, command, rest = _split_command(argv)
        if command in ("compare", "bench"):
            if any(a != "--debug" for a in head):
                try:  # --help, --version or an unknown option before the command
                    build_parser().parse_args(head)
                except SystemExit as exc:
                    return int(exc.code or 0)
            rest = [a for a in rest if a != "--debug"]  # ours: the traceback of an error
            return _flushed(_cmd_compare(rest) if command == "compare" else _cmd_bench(rest))
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version
            return int(exc.code or 0)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        return _flushed(_dispatch(args))
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else _error(exc.code, 1)
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt as exc:
        return _error("interrupted", EXIT_INTERRUPTED, exc, debug)
    except BaseException as exc:  # noqa: BLE001 - every error becomes one line and a code
        message, code = describe_error(exc)
        return _error(message, code, exc, debug)


def _dispatch(args):
    if args.command == "train":
        return _cmd_train(args)
    if args.command == "test":
        return _cmd_test(args)
    if args.command == "gradcheck":
        return _cmd_gradcheck(args)
    if args.command == "step":
        from .. import step

        return step.run_from_args(args)
    raise CLIError(f"unknown command {args.command!r}")  # pragma: no cover


def describe_error(exc):
    """The one-line message and the exit code for an exception that ends a command."""
    from .. import training, train_run
    from ..gradcheck import GradientCheckError
    from ..matlab import CNNFileError
    from ..mnist import MNISTError, MNISTNotFoundError

    if isinstance(exc, CLIError):
        return str(exc), exc.code
    if isinstance(exc, MNISTNotFoundError):
        return (f"{exc}\nOn the command line: --data-dir DIR or CNN_MNIST_DIR=DIR; without "
                f"--no-download the files are downloaded; --synthetic N trains and tests on "
                f"generated digits instead."), EXIT_USAGE
    if isinstance(exc, (MNISTError, CNNFileError, train_run.UsageError)):
        return str(exc), EXIT_USAGE
    if isinstance(exc, FileNotFoundError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, training.NonFiniteError):
        return f"training stopped: {exc}", EXIT_FAIL
    if isinstance(exc, (train_run.TrainingError, GradientCheckError)):
        return str(exc), EXIT_FAIL
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), EXIT_FAIL
    return (f"unexpected {type(exc).__name__}: {exc} (run again with --debug for the "
            f"traceback)", EXIT_FAIL)
