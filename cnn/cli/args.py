"""Argument types shared by every subcommand's parser.

Each takes the option's text and returns the value, or raises
``argparse.ArgumentTypeError`` with a message that says what was expected; the
parser turns it into the one-line ``cnn <command>: error: ...``.
"""

from __future__ import annotations

import argparse
import math
import os


def _int(text, expected):
    try:
        return int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def positive_int(text):
    """An integer >= 1."""
    v = _int(text, "a positive integer")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def nonnegative_int(text):
    """An integer >= 0."""
    v = _int(text, "an integer >= 0")
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return v


def positive_float(text):
    """A finite number > 0."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return v


def jobs(text):
    """A number of worker processes: an integer >= 1, or -1 for one per CPU."""
    v = _int(text, "a positive integer or -1")
    if v == -1:
        return os.cpu_count() or 1
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or -1, got {text!r}")
    return v


def seed_list(text):
    """Comma-separated distinct integers >= 0 (``"0,1,2"``)."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 0, got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"repeated seed in {text!r}")
    return seeds
