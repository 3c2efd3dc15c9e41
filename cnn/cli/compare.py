"""``cnn compare``: the flag-on vs flag-off comparison (:func:`cnn.experiments.compare_main`)."""

from __future__ import annotations

HELP = "flag on vs off on MNIST over several seeds (see compare --help)"


def main(argv=None, prog=None) -> int:
    """Run ``cnn compare`` with ``argv``; return the exit code."""
    from ..experiments import compare_main

    return int(compare_main(argv, prog=prog or "cnn compare") or 0)
