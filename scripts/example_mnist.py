#!/usr/bin/env python
"""``Example_MNIST_CNN.m`` in Python: train Example 3 (or 1, 2) on MNIST and test it.

The same program as ``python -m cnn train`` (:mod:`cnn.train_run`), with the same
options: progress bars, checkpoints every ``--checkpoint-every`` minibatches,
``--resume CHECKPOINT.npz``, Ctrl-C writes a checkpoint and exits with 130.

    python scripts/example_mnist.py                       # as the original: 1 epoch, batch 50
    python scripts/example_mnist.py --synthetic 1000      # no MNIST needed
    python scripts/example_mnist.py --resume runs/train/checkpoint.npz
"""

import sys

from cnn.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main(prog="scripts/example_mnist.py"))
