"""``cnn train``: the port of ``Example_MNIST_CNN.m`` (the runner is :mod:`cnn.train_run`)."""

from __future__ import annotations

import sys
from dataclasses import fields

from .args import nonnegative_int, positive_float, positive_int
from .base import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
    STATE,
    Parser,
    common_parent,
    describe_error,
    no_download_from_env,
    report_error,
    stdout_closed,
)

HELP = "train Example 1/2/3 on MNIST (or synthetic digits)"
DESCRIPTION = (
    "The port of Example_MNIST_CNN.m: build the network, train it with traincnn, "
    "print the training time and the test error, save net.mat, net.npz and loss.png "
    "into --out. Checkpoints every K minibatches and at the end; --resume continues "
    "bit for bit with the options of the run it continues; Ctrl-C writes a checkpoint "
    "and exits with 130. One run at a time per --out folder."
)


def add_arguments(p):
    """Add the training options to an ``argparse`` parser (``cnn train`` and the script)."""
    from ..train_run import DEFAULTS as d

    g = p.add_argument_group("what to train")
    g.add_argument(
        "--epochs",
        type=nonnegative_int,
        metavar="E",
        help=f"number of epochs (default {d['epochs']})",
    )
    g.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="B",
        help=f"minibatch size; must divide the number of training examples "
        f"(default {d['batch_size']})",
    )
    g.add_argument(
        "--lr",
        dest="learning_rate",
        type=positive_float,
        metavar="ETA",
        help=f"learning rate (default {d['learning_rate']}, or the --init file's)",
    )
    g.add_argument(
        "--seed",
        type=nonnegative_int,
        help="seed of the initial weights of a new network (default: a random "
        "seed, printed so that the run can be repeated)",
    )
    g.add_argument(
        "--flag",
        choices=("auto", "on", "off"),
        help="CalcLastLayerActDerivative: auto derives it as the original's "
        "traincnn (0 for sigmoid + cross-entropy), on/off force it "
        "(default auto)",
    )
    g.add_argument(
        "--mode",
        choices=("faithful", "corrected"),
        help="faithful reproduces the original's numbers (defects D1-D4 "
        "included); corrected fixes them (default faithful)",
    )
    g.add_argument(
        "--example",
        type=int,
        choices=(1, 2, 3),
        help="network of Example_MNIST_CNN.m (default 3, the active one)",
    )
    g.add_argument(
        "--loss",
        choices=("auto", "quad", "cros"),
        help="loss_func (default auto: cros for a sigmoid output, else quad)",
    )
    g.add_argument(
        "--init",
        metavar="FILE",
        help="start from this network (.mat struct or .npz) instead of a new one",
    )
    g.add_argument(
        "--init-var",
        metavar="NAME",
        help="variable of the MAT-file holding the struct (default cnn; "
        "cnn_init for the reference files, cnn1 for savecnn's)",
    )
    g.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        help="float64 (default, as MATLAB) or float32 (faster, not bit-faithful)",
    )
    g = p.add_argument_group("data")
    add_data_arguments(g)
    g.add_argument(
        "--train-subset",
        type=positive_int,
        metavar="N",
        help="train on the first N training examples",
    )
    g.add_argument(
        "--test-subset", type=positive_int, metavar="N", help="test on the first N test examples"
    )
    g.add_argument(
        "--synthetic",
        type=positive_int,
        metavar="N",
        help="train on N synthetic digit-like images generated in code (no MNIST "
        "needed); the test set is synthetic too (--test-subset images, "
        "default N/5)",
    )
    g = p.add_argument_group("long runs")
    g.add_argument(
        "--out",
        metavar="DIR",
        help=f"output directory (default {d['out']}; when resuming, the "
        f"checkpoint's directory); checked before training, one run at a time",
    )
    g.add_argument(
        "--checkpoint-every",
        type=nonnegative_int,
        metavar="K",
        help=f"write a checkpoint every K minibatches, 0 = only at the end "
        f"(default {d['checkpoint_every']}, or the resumed run's)",
    )
    g.add_argument(
        "--resume",
        metavar="CHECKPOINT.npz",
        help="continue the run stored in this checkpoint, with its options "
        "(--epochs may be raised; --checkpoint-every, --plots, --data-dir, "
        "--test-subset may be changed)",
    )
    g.add_argument(
        "--plots",
        metavar="DIR",
        help="also write the confusion matrix, first-layer kernels and the "
        "feature maps of one test digit into DIR",
    )
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run even if --out holds a finished run or the checkpoint "
        "of an unfinished one (which is then lost)",
    )
    return p


def add_data_arguments(g):
    """``--data-dir``, ``--no-download``, ``--no-verify`` (train, test, step)."""
    g.add_argument(
        "--data-dir",
        metavar="DIR",
        help="MNIST folder (default: $CNN_MNIST_DIR, else data/mnist/ of a source "
        "checkout, else the user cache folder)",
    )
    g.add_argument(
        "--no-download",
        dest="download",
        action="store_false",
        help="never download MNIST (also: environment CNN_NO_DOWNLOAD=1)",
    )
    g.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="do not check the MNIST files against their published sha256 (for "
        "custom data in the MNIST format)",
    )


def config_from_args(args):
    """A :class:`cnn.train_run.TrainConfig` from parsed arguments (same attribute names)."""
    from ..train_run import TrainConfig

    kw = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    if no_download_from_env():
        kw["download"] = False
    return TrainConfig(**kw)


def run(args):
    """Run ``cnn train`` with parsed arguments; return the exit code."""
    from .. import train_run

    cfg = config_from_args(args)
    try:
        train_run.run_training(cfg)
    except train_run.Interrupted as exc:
        print(f"cnn train: {exc}", file=sys.stderr, flush=True)
        return EXIT_TERMINATED if STATE["terminated"] else EXIT_INTERRUPTED
    return EXIT_OK


def main(argv=None, prog="scripts/example_mnist.py"):
    """``cnn train`` under another name (``scripts/example_mnist.py``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        p = Parser(
            prog=prog,
            parents=[common_parent()],
            description="Example_MNIST_CNN.m in Python: train Example 1/2/3 on MNIST "
            "(or synthetic digits), as 'cnn train'.",
        )
        add_arguments(p)
        try:
            args = p.parse_args(argv)
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        code = run(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return stdout_closed()
    except KeyboardInterrupt as exc:
        return report_error("train", "interrupted", EXIT_INTERRUPTED, exc, debug)
    except BaseException as exc:  # noqa: BLE001
        message, code = describe_error(exc)
        return report_error("train", message, code or EXIT_USAGE, exc, debug)
