"""Which kernels ``ffcnn``/``bpcnn`` run on: the compiled ones or the readable ones.

``forward.py`` and ``backward.py`` call every kernel as ``ops().name(...)``;
:func:`ops` returns :mod:`cnn.kernels` (Numba, the default) or
:mod:`cnn.reference` (plain NumPy/SciPy, slow, easy to step into) while a
:func:`use_kernels` block is active::

    with cnn.use_kernels("reference"):
        cnn.ffcnn(net, x)
        cnn.bpcnn(net, y)      # the same numbers, to round-off

``traincnn`` keeps to the layer-by-layer passes while ``active() ==
"reference"``, so a whole training can be stepped through too.
"""

from __future__ import annotations

import contextlib
import threading

from . import kernels, reference

BACKENDS = {"numba": kernels, "reference": reference}
"""Kernel sets by name."""

_state = threading.local()


def active():
    """The name of the kernel set in use in this thread: ``"numba"`` or ``"reference"``."""
    return getattr(_state, "name", "numba")


def ops():
    """The module whose functions the passes call (:mod:`cnn.kernels` or :mod:`cnn.reference`)."""
    return BACKENDS[active()]


@contextlib.contextmanager
def use_kernels(name):
    """Run the block with the kernel set ``name`` (``"numba"`` or ``"reference"``).

    Restores the previous set on exit, also after an exception; blocks nest.
    """
    if name not in BACKENDS:
        raise ValueError(f"kernels={name!r} is not known; valid: {', '.join(BACKENDS)}")
    old = active()
    _state.name = name
    try:
        yield BACKENDS[name]
    finally:
        _state.name = old
