"""cnn.signals: Ctrl-C and SIGTERM during the fused step's compiled call."""

import signal
import sys
import threading

import numpy as np
import pytest

import cnn
from cnn import signals


class Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise Stop(signum)


def test_a_signal_in_the_block_reaches_its_handler_after_it():
    old = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        after = []
        with pytest.raises(Stop):
            with signals.held():
                signal.raise_signal(signal.SIGTERM)
                after.append("the block ran on")
        assert after == ["the block ran on"]
        assert signal.getsignal(signal.SIGTERM) is _raise_stop  # put back
    finally:
        signal.signal(signal.SIGTERM, old)


def test_ignored_signals_and_other_threads_are_left_alone():
    old = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with signals.held() as h:
            assert signal.SIGTERM not in h.old
            signal.raise_signal(signal.SIGTERM)  # still ignored
        assert h.caught == []
    finally:
        signal.signal(signal.SIGTERM, old)
    seen = []

    def worker():
        with signals.held() as h:
            seen.append(dict(h.old))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [{}]


def test_ctrl_c_inside_numbas_unboxing_is_a_keyboard_interrupt():
    """Numba's unboxing of the tasks (first-class functions) calls
    ``numba.core.serialize._numba_unpickle`` and ignores an exception raised there:
    a Ctrl-C arriving just before became ``TypeError: _get_wrapper_address() missing
    1 required positional argument: 'sig'``. Here the signal is raised exactly when
    that function starts; the minibatch must end in ``KeyboardInterrupt``."""
    rng = np.random.default_rng(0)
    net = cnn.example_network(3, seed=0)
    x = rng.random((50, 28, 28))
    y = np.eye(10)[rng.integers(0, 10, 50)]
    cnn.traincnn(net, x, y, 1, 50, verbose=False)  # compiled and loaded
    hit = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "_numba_unpickle":
            sys.setprofile(None)
            hit.append(True)
            signal.raise_signal(signal.SIGINT)

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.setprofile(profile)
    try:
        with pytest.raises(KeyboardInterrupt):
            cnn.traincnn(net, x, y, 1, 50, verbose=False)
    finally:
        sys.setprofile(None)
        signal.signal(signal.SIGINT, old)
    assert hit  # the signal did arrive inside the unboxing
