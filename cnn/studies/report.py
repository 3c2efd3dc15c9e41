"""Small helpers every study's tables share: statistics over seeds, number formats, the machine.

Nothing here trains; everything takes plain numbers (records read back from
the store) and returns text.
"""

from __future__ import annotations

import datetime
import math
import os
import platform

import numpy as np


def stats(values):
    """Mean, std (ddof 1), min, max and count of the finite values (``None`` skipped).

    Returns
    -------
    dict
        ``mean``, ``std``, ``min``, ``max`` (``None`` when no value is finite) and ``n``.
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return dict(mean=None, std=None, min=None, max=None, n=0)
    return dict(
        mean=float(v.mean()),
        std=float(v.std(ddof=1)) if v.size > 1 else 0.0,
        min=float(v.min()),
        max=float(v.max()),
        n=int(v.size),
    )


def pct(v, digits=2):
    """A fraction as a percentage (``0.0939`` -> ``'9.39'``); ``'n/a'`` for ``None``."""
    return "n/a" if v is None else f"{100 * v:.{digits}f}"


def num(v, fmt):
    """``format(v, fmt)``, ``'n/a'`` for ``None``."""
    return "n/a" if v is None else format(v, fmt)


def seed_text(seeds):
    """``[0, 1, 2, 3]`` -> ``'0-3'``; otherwise the comma-separated list."""
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(str(s) for s in seeds)


def machine_text():
    """E.g. ``'2 cores (x86_64), Linux, Python 3.11'``."""
    return (
        f"{os.cpu_count()} cores ({platform.machine()}), {platform.system()}, "
        f"Python {platform.python_version()}"
    )


def now_text():
    """The local date and time, e.g. ``'2026-12-02 13:20 UTC'``."""
    return datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


def json_safe(obj):
    """Replace NaN/Inf floats (e.g. of a diverged run) by None, recursively; NumPy scalars
    by Python numbers."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def partial_note(outcome):
    """One line for a table whose study did not finish, or ``''``.

    ``outcome``: a :class:`cnn.studies.run.Outcome`.
    """
    if not outcome.partial:
        return ""
    why = outcome.stopped or (
        f"{len(outcome.failed)} run(s) failed" if outcome.failed else "unfinished"
    )
    return (
        f"**PARTIAL**: {len(outcome.finished)} of {outcome.total} runs finished ({why}); "
        f"rerun the same command to train only the missing ones."
    )
