"""``cnn gradcheck``: numerical gradient check of a small network (:mod:`cnn.nets`)."""

from __future__ import annotations

from .args import nonnegative_int, positive_float, positive_int
from .base import EXIT_FAIL, EXIT_OK, CLIError

HELP = "numerical gradient check of a small network"
DESCRIPTION = (
    "Build a small network, run ffcnn and bpcnn on random data and compare every "
    "gradient with central differences of the loss (the original's "
    "gradient_checker, epsilon 1e-4, tolerance 1e-7 absolute). Prints a Markdown "
    "table; exit 0 if every array passes, 1 if not."
)


def add_arguments(p):
    """Options of ``cnn gradcheck``."""
    from ..nets import GRADCHECK_NETS

    p.add_argument(
        "--net",
        choices=tuple(GRADCHECK_NETS),
        default="small",
        help="; ".join(f"{k}: {v[0]}" for k, v in GRADCHECK_NETS.items()) + " (default small)",
    )
    p.add_argument(
        "--mode",
        choices=("faithful", "corrected"),
        default="faithful",
        help="faithful keeps the original's defects D1-D4, corrected fixes them (default faithful)",
    )
    p.add_argument(
        "--flag",
        choices=("auto", "on", "off"),
        default="auto",
        help="CalcLastLayerActDerivative: auto derives it as traincnn does (default auto)",
    )
    p.add_argument(
        "--loss",
        choices=("auto", "quad", "cros"),
        default="auto",
        help="loss_func (default auto: cros for a sigmoid output, else quad)",
    )
    p.add_argument(
        "--n", type=positive_int, default=4, metavar="N", help="examples in the batch (default 4)"
    )
    p.add_argument(
        "--seed",
        type=nonnegative_int,
        default=0,
        help="seed of the weights and of the data (default 0)",
    )
    p.add_argument(
        "--max-per-array",
        type=positive_int,
        metavar="K",
        help="check at most K random elements of each parameter array",
    )
    p.add_argument(
        "--epsilon",
        type=positive_float,
        default=1e-4,
        help="step of the central difference (default 1e-4, as the original)",
    )
    p.add_argument(
        "--tol",
        type=positive_float,
        default=1e-7,
        help="absolute tolerance (default 1e-7, as the original)",
    )
    return p


def run(args):
    """Run ``cnn gradcheck``; exit 0 if every gradient matches, 1 if not."""
    from ..backward import prepare_loss_and_flag
    from ..gradcheck import gradient_checker
    from ..nets import GRADCHECK_NETS, gradcheck_network

    net, x, y = gradcheck_network(
        args.net, mode=args.mode, loss=args.loss, seed=args.seed, n=args.n
    )
    flag = {"auto": None, "on": True, "off": False}[args.flag]
    try:
        prepare_loss_and_flag(net, flag)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    report = gradient_checker(
        net,
        x,
        y,
        epsilon=args.epsilon,
        tol=args.tol,
        max_per_array=args.max_per_array,
        seed=args.seed,
    )
    print(f"network: {GRADCHECK_NETS[args.net][0]}; N = {args.n}, seed {args.seed}")
    print(report)
    fails = report.failures()
    if fails:
        worst = ", ".join(
            f"layer {c.layer} {c.param} (max abs {c.max_abs:.2e}, norm rel {c.norm_rel:.2e})"
            for c in fails
        )
        print(f"FAIL: {worst}")
        return EXIT_FAIL
    print("PASS: every gradient matches the central difference")
    return EXIT_OK
