"""``cnn bench``: the benchmark, :func:`cnn.bench.main` (until that module exists in this
tree, ``scripts/bench.py`` of a source checkout)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from .base import EXIT_OK, CLIError

HELP = "the speed benchmark: training and testing times (see bench --help)"


def bench_script():
    """``scripts/bench.py`` of the source checkout this package runs from, or None."""
    p = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"
    return p if p.is_file() else None


def main(argv=None, prog=None) -> int:
    """Run ``cnn bench`` with ``argv``; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if importlib.util.find_spec(f"{__package__.rsplit('.', 1)[0]}.bench") is not None:
        from ..bench import main as bench_main

        return int(bench_main(argv) or 0)
    script = bench_script()
    if "-h" in argv or "--help" in argv:
        print(
            f"usage: {prog or 'cnn bench'} [options of scripts/bench.py]\n\nRuns "
            f"scripts/bench.py of the source repository with the given options (e.g. "
            f"--images N --test-images N --skip-torch --skip-naive --json FILE).",
            flush=True,
        )
        if script is None:
            print("scripts/bench.py is not in this installation.")
            return EXIT_OK
        print(f"Its options ({script}):\n", flush=True)
    if script is None:
        raise CLIError(
            "scripts/bench.py not found: the benchmark is part of the source "
            "repository (run it from a checkout)"
        )
    return subprocess.call([sys.executable, str(script), *argv])
