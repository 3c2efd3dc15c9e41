"""``cnn step``: one minibatch through ``bpcnn``, layer by layer (:mod:`cnn.step`)."""

from __future__ import annotations

import sys

import numpy as np

from .args import nonnegative_int, positive_int

HELP = "one minibatch through bpcnn, layer by layer"
DESCRIPTION = (
    "Run ffcnn and bpcnn on one minibatch and print, from the last layer to the "
    "first, what bpcnn computed: the output error before and after the "
    "CalcLastLayerActDerivative flag, each layer's er (shape, norm) and dK/dW/db "
    "norms, with the lines of the original bpcnn.m. Default network: Example 3 on "
    "MNIST if the files are there, else on synthetic digits."
)


def add_arguments(p):
    """Options of ``cnn step``."""
    from ..nets import GRADCHECK_NETS

    g = p.add_argument_group("network")
    g.add_argument(
        "--example",
        type=int,
        choices=(1, 2, 3),
        default=None,
        help="network of Example_MNIST_CNN.m (default 3)",
    )
    g.add_argument("--init", metavar="FILE", help="use this network (.mat struct or .npz)")
    g.add_argument(
        "--init-var",
        default="cnn",
        metavar="NAME",
        help="variable of the MAT-file (default cnn; cnn_init for the reference "
        "files, cnn1 for savecnn's)",
    )
    g.add_argument(
        "--mode",
        choices=("faithful", "corrected"),
        default=None,
        help="faithful (default) keeps the original's defects; corrected fixes them",
    )
    g.add_argument(
        "--flag",
        choices=("auto", "on", "off"),
        default="auto",
        help="CalcLastLayerActDerivative: auto derives it as traincnn does",
    )
    g.add_argument(
        "--loss",
        choices=("auto", "quad", "cros"),
        default=None,
        help="loss_func (default auto, or the --init file's)",
    )
    g.add_argument(
        "--seed",
        type=nonnegative_int,
        default=0,
        help="seed of a new network's weights (default 0)",
    )
    g.add_argument(
        "--net",
        choices=tuple(GRADCHECK_NETS),
        metavar="NAME",
        help="instead of an example network, a small one of 'gradcheck' on random "
        "images (seed --seed): " + ", ".join(GRADCHECK_NETS) + "; e.g. c2 shows D1, none-hidden D2",
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--batch-size",
        type=positive_int,
        default=50,
        metavar="B",
        help="examples in the minibatch (default 50, as the example)",
    )
    g.add_argument(
        "--minibatch",
        type=positive_int,
        default=1,
        metavar="J",
        help="which minibatch of the training set, 1-based (default 1)",
    )
    g.add_argument(
        "--synthetic",
        type=positive_int,
        metavar="N",
        help="use N synthetic digits (cnn.synthetic) instead of MNIST",
    )
    g.add_argument(
        "--data-dir",
        metavar="DIR",
        help="MNIST folder (default: $CNN_MNIST_DIR, else data/mnist/ of a source "
        "checkout, else the user cache folder); used if the files are there "
        "(never downloaded), else synthetic digits",
    )
    g.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="do not check the MNIST files against their published sha256",
    )
    g = p.add_argument_group("output")
    g.add_argument(
        "--values",
        type=nonnegative_int,
        default=5,
        metavar="K",
        help="values of the output error to show (default 5)",
    )
    g.add_argument(
        "--pdb",
        action="store_true",
        help="run bpcnn in the Python debugger, stopping at the flag test",
    )
    g.add_argument(
        "--plot",
        metavar="FILE.png",
        help="bar chart of ||er|| per layer for flag 0 and flag 1 on this minibatch",
    )
    g.add_argument(
        "--plot-maps",
        metavar="FILE.png",
        help="what each layer's error looks like: er of one example (--example-index) "
        "per layer, maps as images, FC errors as a row",
    )
    g.add_argument(
        "--example-index",
        type=positive_int,
        default=1,
        metavar="n",
        help="the example of the minibatch that --plot-maps shows, 1-based (default 1)",
    )
    return p


def _network(args):
    from ..network import example_network
    from ..train_run import UsageError, load_network_file

    mode = args.mode
    if getattr(args, "net", None) is not None:
        from ..nets import GRADCHECK_NETS, gradcheck_network

        if args.init is not None or args.example is not None or args.synthetic is not None:
            raise UsageError(
                "--net builds its own network on random images: leave out "
                "--init, --example and --synthetic"
            )
        net, _, _ = gradcheck_network(
            args.net, mode=mode or "faithful", loss=args.loss or "auto", seed=args.seed, n=1
        )
        return net, f"{args.net}: {GRADCHECK_NETS[args.net][0]} (seed {args.seed})"
    if args.init is not None:
        if args.example is not None:
            raise UsageError("give --example or --init, not both")
        net = load_network_file(args.init, args.init_var, mode, np.float64)
        desc = f"{args.init}"
    else:
        ex = args.example or 3
        net = example_network(ex, seed=args.seed, mode=mode or "faithful")
        desc = f"Example {ex} of Example_MNIST_CNN.m (seed {args.seed})"
    if args.loss is not None:
        net.loss_func = args.loss
    return net, desc


def _minibatch(args, net):
    from .. import mnist
    from ..synthetic import synthetic_split
    from ..train_run import UsageError

    C, H, W = net.input_shape
    B, j = args.batch_size, args.minibatch
    need = B * j
    if getattr(args, "net", None) is not None:  # random images and one-hot targets
        from ..nets import gradcheck_network

        _, x, y = gradcheck_network(args.net, mode=net.mode, seed=args.seed, n=need)
        sl = slice((j - 1) * B, j * B)
        return (x[sl], y[sl], f"random images (seed {args.seed}), minibatch {j} of {B}", None)
    n_synth = args.synthetic
    note = None
    if n_synth is None:
        if (C, H, W) != (1, 28, 28):
            raise UsageError(
                f"the network takes {C} x {H}x{W} inputs; MNIST is 1 x 28x28 (use --synthetic N)"
            )
        try:
            x, y = mnist.load_split(
                "train", args.data_dir, download=False, progress=False, verify=args.verify
            )
            what = f"MNIST training set from {mnist.mnist_dir(args.data_dir)}"
        except mnist.MNISTNotFoundError:
            n_synth = max(need, 100)
            note = (
                f"MNIST not found in {mnist.mnist_dir(args.data_dir)}; using "
                f"{n_synth} synthetic digits (--synthetic N)"
            )
    if n_synth is not None:
        if C != 1:
            raise UsageError(f"the synthetic digits have 1 channel; the network takes {C}")
        x, y = synthetic_split("train", n_synth, (H, W))
        what = f"synthetic digits, training set of {n_synth}"
    if y.shape[1] != net.n_outputs:
        raise UsageError(f"the network has {net.n_outputs} outputs; the digits need 10")
    if need > x.shape[0]:
        raise UsageError(f"minibatch {j} of {B} needs {need} examples; the data have {x.shape[0]}")
    sl = slice((j - 1) * B, j * B)
    return x[sl], y[sl], f"{what}, minibatch {j} (examples {(j - 1) * B + 1}-{j * B})", note


def run(args):
    """Run ``cnn step`` with parsed arguments; return the exit code."""
    from ..backward import prepare_loss_and_flag
    from ..step import DebuggerQuit, plot_error_maps, plot_error_norms, step_report
    from ..train_run import UsageError

    net, desc = _network(args)
    xb, yb, data, note = _minibatch(args, net)
    if args.plot_maps and args.example_index > xb.shape[0]:
        raise UsageError(
            f"--example-index {args.example_index}: the minibatch has {xb.shape[0]} examples"
        )
    if note:
        print(note, file=sys.stderr, flush=True)
    flag = {"auto": None, "on": True, "off": False}[args.flag]
    if flag is None and args.init is not None:
        flag = net.calc_last_layer_act_derivative  # the file's flag, else derived
    plot_net = net.copy() if args.plot else None
    prepare_loss_and_flag(net, flag)
    try:
        report = step_report(net, xb, yb, description=desc, data=data, debugger=args.pdb)
    except DebuggerQuit as exc:
        print(f"\n{exc}")
        return 0
    if args.pdb:
        print()
    sys.stdout.write(report.format(args.values) if args.values != 5 else report.format())
    if args.plot:
        reports = {}
        for f in (False, True):
            other = plot_net.copy()
            prepare_loss_and_flag(other, f)
            reports[f"flag {int(f)}"] = step_report(other, xb, yb, description=desc)
        path = plot_error_norms(
            reports,
            args.plot,
            title=f"||er|| per layer, {net.mode} mode, loss {net.loss_func}: {desc}",
        )
        print(f"plot: {path}")
    if args.plot_maps:
        path = plot_error_maps(
            net,
            args.plot_maps,
            example=args.example_index - 1,
            title=f"er of example {args.example_index} per layer "
            f"({net.mode} mode, flag "
            f"{int(bool(net.calc_last_layer_act_derivative))}): "
            f"{desc}",
        )
        print(f"plot: {path}")
    return 0
