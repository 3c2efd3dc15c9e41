"""Ctrl-C and SIGTERM held over a compiled call that unboxes first-class functions.

The fused step's parallel loop (:func:`cnn.fused._run`) receives its tasks as
first-class functions. Numba's code that unboxes such an argument calls back
into Python (``numba.core.serialize._numba_unpickle``) and does not check that
call for an exception. A Python signal handler runs at the start of that call
when a signal arrived just before, and if it raises (Ctrl-C's
``KeyboardInterrupt``, or the :class:`~cnn.studies.run.Terminated` that the
command line raises on SIGTERM), the exception is lost: Numba passes on a
missing value and the user sees ``TypeError: _get_jit_address() missing 1
required positional argument: 'sig'`` instead of an interrupted run (seen once
in a test that sends SIGTERM to ``cnn train``).

:func:`held` lets SIGINT and SIGTERM only be recorded while such a call runs,
and hands each one to the handler that was in place as soon as the call has
returned (a minibatch's part of a few milliseconds at most).
"""

from __future__ import annotations

import signal
import threading

try:  # the C module behind ``signal``: its getsignal/signal skip the enum wrapping
    import _signal  # that costs ``signal.getsignal`` 6 us a call (measured) against 0.1 us
except ImportError:  # pragma: no cover - CPython always has it
    _signal = signal

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))
_IGNORED = (None, signal.SIG_IGN, int(signal.SIG_IGN))
_DEFAULT = (signal.SIG_DFL, int(signal.SIG_DFL))


def _deliver(handler, signum, frame):
    """Run what ``handler`` (an earlier ``getsignal`` value) would have done."""
    if callable(handler):
        handler(signum, frame)
    elif handler in _DEFAULT:
        signal.raise_signal(signum)  # the default action, now that it is back in place


class held:
    """Context manager: SIGINT and SIGTERM recorded during the block, delivered after it.

    Only in the main thread (the only one where Python runs signal handlers,
    and where handlers may be set); elsewhere the block runs as it is. A
    signal that is ignored, or whose handler was not set from Python, is left
    alone. About 2 us per block (six calls of the C ``_signal`` module).
    """

    __slots__ = ("caught", "old")

    def __enter__(self):
        self.caught = []
        self.old = {}
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                handler = _signal.getsignal(signum)
                if handler not in _IGNORED:
                    self.old[signum] = handler
                    _signal.signal(signum, self._record)
        return self

    def _record(self, signum, frame):
        self.caught.append((signum, frame))

    def __exit__(self, *exc):
        for signum, handler in self.old.items():
            _signal.signal(signum, handler)
        for signum, frame in self.caught:
            _deliver(self.old[signum], signum, frame)
        return False
