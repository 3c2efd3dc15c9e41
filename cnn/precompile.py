"""Compile the fused step's backward task in a second process, on an empty Numba cache.

A first minibatch on an empty cache compiles the whole fused step (``cnn.fused``)
on one core: 17.5-22 s on a 2-CPU AMD EPYC (2026-12-03), of which the backward
task (:func:`cnn.fused._backward_chunk` and the kernels it calls) is about 9 s
after the forward task (11.5-12 s compiled alone, the kernels they share included).
Numba compiles one function at a time in a process (a global compiler lock), so
the time goes down only with a second process: while this one compiles the
forward task, the update task and the parallel loop, a helper process compiles
the backward task into Numba's disk cache (``cache=True``), and this one then
loads it from there.

The helper is started only when it can help: Numba caching works for the
fused step's module, the backward task for these argument types is neither
compiled in this process nor on disk, the process may use two or more CPUs, it
is not a frozen application (``sys.executable`` is Python), and
``CNN_PRECOMPILE`` is not ``0``. Whatever happens to it (it fails, is killed,
compiles for other types), this process compiles what it does not find: the
helper changes when things are compiled, never what (the same code, compiler
and CPU target give the same machine code in either process).

Usage (:class:`cnn.fused.FusedNet`)::

    helper = start(_backward_chunk, args, dtype, TUPLE_LEN)   # None: would not help
    ...                           # compile the rest here
    helper.wait()                 # then the backward task loads from the cache
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
from pathlib import Path

import numba as nb
import numpy as np
from numba.core.caching import FunctionCache
from numba.core.registry import cpu_target

from . import parallel

ENV = "CNN_PRECOMPILE"
"""Set to ``0`` to compile everything in the training process (no helper)."""

WAIT_SECONDS = 300
"""How long :meth:`Helper.wait` waits before it stops the helper and goes on."""


def _cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def in_disk_cache(pyfunc, example_args):
    """Whether Numba's disk cache holds ``pyfunc`` compiled as a C function
    (:func:`cnn.parallel.compiled`) for arguments of the types of ``example_args``.

    ``True`` also when it cannot tell (no usable cache: a helper could not help)."""
    sig = nb.types.void(*(nb.typeof(a) for a in example_args))
    try:
        cache = FunctionCache(pyfunc)
        key = cache._index_key(sig, cpu_target.target_context.codegen())
        return key in cache._cache_file._load_index()
    except Exception:  # no cache locator, unreadable index, another Numba: no helper
        return True


class Helper:
    """A helper process compiling one task into Numba's disk cache."""

    def __init__(self, proc):
        self.proc = proc
        atexit.register(self.stop)

    def wait(self, timeout=WAIT_SECONDS):
        """Wait for the helper to finish; returns whether it succeeded. After
        ``timeout`` seconds, or when the wait is interrupted, the helper is stopped."""
        try:
            return self.proc.wait(timeout) == 0
        except subprocess.TimeoutExpired:
            return False
        finally:
            self.stop()
            atexit.unregister(self.stop)

    def stop(self):
        """Stop the helper if it still runs (its cache writes are atomic)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start(task, example_args, dtype, tuple_len):
    """Start a helper compiling ``task`` (a :mod:`cnn.fused` task) for the argument
    types of ``example_args``, or return ``None`` where it would not help (see the
    module notes).

    dtype : the network's dtype; tuple_len : the length of its layer tuples
    (:data:`cnn.fused.TUPLE_LEN`; the helper builds a network of the same types).
    """
    if os.environ.get(ENV, "1") == "0" or _cpus() < 2 or nb.config.DISABLE_JIT:
        return None
    if getattr(sys, "frozen", False):  # sys.executable is the application, not Python
        return None
    task_args = (0,) + tuple(example_args)  # the index, then the arguments
    if parallel.is_compiled(task, task_args) or in_disk_cache(task, task_args):
        return None
    env = dict(os.environ)
    env[ENV] = "0"  # the helper starts no helper
    # the helper imports this same package (a source checkout or an installed copy)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    code = "from cnn.precompile import main; main()"
    cmd = [sys.executable, "-c", code, task.__name__, np.dtype(dtype).name, str(tuple_len)]
    try:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return None
    return Helper(proc)


def main(argv=None):
    """The helper: ``python -c "from cnn.precompile import main; main()" TASK DTYPE
    TUPLE_LEN`` (``-m cnn.precompile`` would import this module twice)."""
    from . import fused

    name, dtype, tuple_len = argv if argv is not None else sys.argv[1:]
    fused.compile_task(getattr(fused, name), np.dtype(dtype), int(tuple_len))
