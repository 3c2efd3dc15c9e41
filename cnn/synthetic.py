"""A small deterministic digit-like data set, generated in code (no MNIST needed).

``python -m cnn train --synthetic N``, ``python -m cnn test --synthetic N`` and
``python -m cnn step --synthetic N`` use it, and so do the tests: ten classes of
seven-segment digits (0-9) drawn as anti-aliased strokes with random size,
position, slant, stroke width and jitter, plus a little noise, 28 x 28 in
[0, 1] like MNIST. The same arguments always give the same arrays, so a run
on it can be repeated bit for bit.
"""

from __future__ import annotations

import numpy as np

SYNTHETIC_TRAIN_SEED = 59223
"""Seed of the synthetic training set."""
SYNTHETIC_TEST_SEED = 59224
"""Seed of the synthetic test set (different images from the training set)."""


# Seven-segment strokes in a unit box (x to the right, y down), and the strokes of each digit.
_SEGMENTS = {
    "a": (0.0, 0.0, 1.0, 0.0),
    "b": (1.0, 0.0, 1.0, 0.5),
    "c": (1.0, 0.5, 1.0, 1.0),
    "d": (0.0, 1.0, 1.0, 1.0),
    "e": (0.0, 0.5, 0.0, 1.0),
    "f": (0.0, 0.0, 0.0, 0.5),
    "g": (0.0, 0.5, 1.0, 0.5),
    "s": (1.0, 0.0, 0.35, 1.0),  # the slanted stroke of a 7
    "m": (0.5, 0.0, 0.5, 1.0),  # the middle stroke of a 1
}
_DIGIT_STROKES = (
    "abcdef",
    "m",
    "abged",
    "abgcd",
    "fgbc",
    "afgcd",
    "afgedc",
    "as",
    "abcdefg",
    "abcdfg",
)


def synthetic_digits(n, *, seed=SYNTHETIC_TRAIN_SEED, size=(28, 28)):
    """A deterministic digit-like data set: seven-segment digits drawn with random strokes.

    Each image shows one digit 0-9 as anti-aliased strokes in a box of random
    size, position and slant, with a random stroke width, jittered end points
    and a little noise; values in [0, 1] like MNIST. Labels are balanced
    (``n // 10`` or one more of each digit) in a random order. The same ``n``,
    ``seed`` and ``size`` always give the same arrays.

    Parameters
    ----------
    n : int
        Number of examples.
    seed : int
        Seed of the generator (the CLI uses :data:`SYNTHETIC_TRAIN_SEED` for the
        training set and :data:`SYNTHETIC_TEST_SEED` for the test set).
    size : (H, W)

    Returns
    -------
    x : ndarray, shape (n, H, W), float64
    y : ndarray, shape (n, 10), float64, one-hot
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"the synthetic set needs at least 1 example, got {n}")
    H, W = (int(v) for v in size)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10)
    box_w = rng.uniform(0.30, 0.45, n) * W
    box_h = rng.uniform(0.50, 0.65, n) * H
    cx = W / 2 + rng.uniform(-2.5, 2.5, n) * W / 28
    cy = H / 2 + rng.uniform(-2.5, 2.5, n) * H / 28
    slant = rng.uniform(-0.25, 0.25, n)
    width = rng.uniform(0.9, 1.8, n) * min(H, W) / 28
    jitter = rng.normal(0.0, 0.04, (n, len(_SEGMENTS), 4))
    noise = rng.uniform(0.0, 0.08, (n, H, W))

    rows, cols = np.mgrid[0:H, 0:W]
    px = cols.ravel()[None, :] + 0.5
    py = rows.ravel()[None, :] + 0.5
    img = np.zeros((n, H * W))
    for s, name in enumerate(_SEGMENTS):
        sel = np.array([name in _DIGIT_STROKES[d] for d in labels])
        if not sel.any():
            continue
        u = np.array(_SEGMENTS[name])[None, :] + jitter[sel, s]  # (k, 4) unit coordinates
        bw, bh, sl = box_w[sel, None], box_h[sel, None], slant[sel, None]
        x0 = cx[sel, None] + (u[:, [0]] - 0.5) * bw + sl * (u[:, [1]] - 0.5) * bh
        x1 = cx[sel, None] + (u[:, [2]] - 0.5) * bw + sl * (u[:, [3]] - 0.5) * bh
        y0 = cy[sel, None] + (u[:, [1]] - 0.5) * bh
        y1 = cy[sel, None] + (u[:, [3]] - 0.5) * bh
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(
            ((px - x0) * dx + (py - y0) * dy) / np.maximum(dx * dx + dy * dy, 1e-12), 0.0, 1.0
        )
        d = np.hypot(px - x0 - t * dx, py - y0 - t * dy)
        ink = np.clip(width[sel, None] / 2 + 0.5 - d, 0.0, 1.0)
        img[sel] = np.maximum(img[sel], ink)
    x = np.clip(img.reshape(n, H, W) + noise, 0.0, 1.0)
    y = np.eye(10)[labels]
    return x, y


def synthetic_split(split, n, size=(28, 28)):
    """The synthetic training (``split="train"``) or test set of ``n`` examples."""
    seed = SYNTHETIC_TRAIN_SEED if split == "train" else SYNTHETIC_TEST_SEED
    return synthetic_digits(n, seed=seed, size=size)
