"""``cnn test``: the error of a saved network on the MNIST test set (``testcnn``)."""

from __future__ import annotations

import contextlib
import time

from .args import positive_int
from .base import EXIT_OK, CLIError, no_download_from_env
from .train import add_data_arguments

HELP = "test error of a saved network"
DESCRIPTION = (
    "Load a network (.mat struct or .npz) and print its error on the MNIST test set "
    "(testcnn) and the number of misclassified images."
)


def add_arguments(p):
    """Options of ``cnn test``."""
    p.add_argument(
        "network",
        metavar="NETWORK",
        help="a .mat (save_cnn, savecnn, the "
        "reference runs) or .npz (save_npz, checkpoints) network file",
    )
    p.add_argument(
        "--var",
        default="cnn",
        metavar="NAME",
        help="variable of a MAT-file holding the struct (default cnn; cnn1 for "
        "the original's savecnn)",
    )
    p.add_argument(
        "--mode",
        choices=("faithful", "corrected"),
        help="override the mode stored in the file (only the forward pass runs, "
        "so the result does not depend on it)",
    )
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument(
        "--test-subset", type=positive_int, metavar="N", help="use the first N test images"
    )
    p.add_argument(
        "--synthetic",
        type=positive_int,
        metavar="N",
        help="test on N synthetic digits (cnn.synthetic) instead of MNIST",
    )
    add_data_arguments(p)
    p.add_argument(
        "--plots",
        metavar="DIR",
        help="write the confusion matrix, the "
        "first-layer kernels and the feature maps of the first test digit into DIR "
        "(checked before testing)",
    )
    return p


def run(args):
    """Run ``cnn test`` with parsed arguments; return the exit code."""
    import numpy as np

    from .. import train_run, training
    from ..atomic import folder_lock

    dtype = np.float32 if args.dtype == "float32" else np.float64
    net = train_run.load_network_file(args.network, args.var, args.mode, dtype)
    C, H, W = net.input_shape
    if C != 1 or net.n_outputs != 10:
        raise CLIError(
            f"{args.network}: the network takes {C} x {H}x{W} inputs and gives "
            f"{net.n_outputs} outputs; the test sets need 1 x HxW inputs and 10 "
            f"outputs"
        )
    if args.synthetic is None and (H, W) != (28, 28):
        raise CLIError(
            f"{args.network}: the network takes {H}x{W} images; MNIST images are "
            f"28x28 (use --synthetic N)"
        )
    with contextlib.ExitStack() as stack:
        if args.plots is not None:  # fail before the work: the folder must be writable
            plots = stack.enter_context(train_run.output_folder(args.plots, "--plots"))
            stack.enter_context(folder_lock(plots, "cnn test"))
        download = args.download and not no_download_from_env()
        tx, ty, desc = train_run.load_data(
            "test",
            synthetic=args.synthetic,
            subset=args.test_subset,
            data_dir=args.data_dir,
            download=download,
            progress=True,
            size=(H, W),
            verify=args.verify,
        )
        t0 = time.perf_counter()
        _, pred = training.predictcnn(net, tx)
        elapsed = time.perf_counter() - t0
        true = ty.argmax(axis=1)
        wrong = int(np.count_nonzero(pred != true))
        print(f"network: {args.network} ({net.mode} mode)")
        print(f"data: {desc}")
        print(
            f"test error is {wrong / len(true):.4f} ({wrong} of {len(true)} misclassified); "
            f"test time {elapsed:.1f} s"
        )
        if args.plots is not None:
            files = train_run.write_test_plots(net, args.plots, tx, true, pred)
            print("plots: " + ", ".join(str(p) for p in files.values()))
    return EXIT_OK
