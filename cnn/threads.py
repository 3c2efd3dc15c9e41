"""The threading setup: how Numba's worker threads wait between parallel regions.

Numba's OpenMP layer (GNU ``libgomp`` here) lets idle workers spin for a long
time (by default about 300,000 iterations) before they sleep. On a machine
where other processes want the cores, that spinning takes their time and each
join waits a scheduler slice for a descheduled worker: a 2-thread epoch took
8-11x its idle time with two busy processes beside it (issue 11). The fused
step (``cnn.fused``) has two parallel regions per minibatch instead of about
twenty, so a short spin costs almost nothing when the machine is idle.

:func:`configure` runs when ``cnn`` is imported, before Numba starts its
threads (libgomp reads its environment once, when it is loaded). It only sets
what the user has not set:

* ``GOMP_SPINCOUNT`` = :data:`SPIN_COUNT` (GNU OpenMP: spin this many
  iterations, a few microseconds, then sleep);
* ``KMP_BLOCKTIME`` = ``1`` (ms; the same for Intel's OpenMP runtime, if Numba
  uses it).

libgomp is one per process: if another library loaded it before ``import cnn``
(PyTorch's wheel ships a ``libgomp.so.1``), it keeps the settings it was loaded
with and Numba's workers spin libgomp's default (with two busy processes
beside it, an epoch then took 2.6-2.9x its idle time instead of 2.1x; measured
2026-12-03). Import ``cnn`` first, or set the variable before starting Python.

Set ``GOMP_SPINCOUNT`` (or ``OMP_WAIT_POLICY``) yourself to override it, or
``NUMBA_THREADING_LAYER=workqueue`` to avoid OpenMP altogether. Results do not
depend on any of this (``tests/test_determinism.py``).
"""

from __future__ import annotations

import contextlib
import os

SPIN_COUNT = "20000"
"""Default ``GOMP_SPINCOUNT``: 20,000 spins (~10 microseconds), then sleep."""


SET_BY_CNN = {}
"""The variables :func:`configure` set in ``os.environ`` (name: value)."""


def configure(environ=None):
    """Set the OpenMP wait settings in ``environ`` (default ``os.environ``) unless set.

    Returns the names set.
    """
    env = os.environ if environ is None else environ
    done = []
    if "GOMP_SPINCOUNT" not in env and "OMP_WAIT_POLICY" not in env:
        env["GOMP_SPINCOUNT"] = SPIN_COUNT
        done.append("GOMP_SPINCOUNT")
    if "KMP_BLOCKTIME" not in env:
        env["KMP_BLOCKTIME"] = "1"
        done.append("KMP_BLOCKTIME")
    if environ is None:
        SET_BY_CNN.update({name: env[name] for name in done})
    return done


@contextlib.contextmanager
def defaults_for_others():
    """Within the block, ``os.environ`` without what :func:`configure` set.

    For loading another library's OpenMP runtime with its own defaults (the
    benchmark imports PyTorch this way, so it is timed as its users run it).
    """
    saved = {name: os.environ.pop(name) for name in SET_BY_CNN if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


configure()  # on import: ``cnn/__init__.py`` imports this module first
