#!/usr/bin/env python
"""``Example_gradientchecking_CNN.m`` in Python: check bpcnn's gradients numerically.

As the original: 100 random 10x10 images with 6 random 0/1 targets each, the
network c(plus, 3 maps 5x5) - p2 - f(tanh 15) - f(soft 6), ``loss_func`` auto
(quadratic for a softmax output, flag 1), one ffcnn and bpcnn, then the
gradient checker (central differences of the loss, epsilon 1e-4, absolute
tolerance 1e-7). The report has one row per parameter array instead of the
original's stop at the first failure. Exit code 0 if every gradient passes.

    python scripts/gradient_check_example.py                  # faithful mode: passes
    python scripts/gradient_check_example.py --mode corrected --n 20

Other networks (and the defects D1-D4): ``python -m cnn gradcheck --help``.
"""

import argparse
import sys

import numpy as np

import cnn


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=cnn.MODES, default="faithful")
    p.add_argument("--n", type=int, default=100, help="examples (default 100, as the original)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-per-array",
        type=int,
        default=None,
        help="check at most this many random elements per array",
    )
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be >= 1")

    rng = np.random.default_rng(args.seed)
    x = rng.random((args.n, 10, 10))  # rand(10, 10, 100)
    y = (rng.random((args.n, 6)) > 0.5).astype(float)  # 6 x 100 random 0/1 (transposed)
    net = cnn.initcnn((10, 10), mode=args.mode, seed=args.seed)
    cnn.add_conv_layer(net, 3, 5, "plus")
    cnn.add_pool_layer(net, 2, "mean")
    cnn.add_fc_layer(net, 15, "tanh")
    cnn.add_fc_layer(net, 6, "soft")
    # the original's traincnn block: 'auto' -> quad for a softmax output, flag 1
    cnn.backward.prepare_loss_and_flag(net)
    print(net.describe())
    report = cnn.gradient_checker(net, x, y, max_per_array=args.max_per_array)
    print(report)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
