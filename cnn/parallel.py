"""Compile a task as a C function, for a ``prange`` loop to call through a pointer.

Why: Numba links every jitted function a caller uses into the caller's own
machine code, and a ``prange`` loop is compiled in three more layers (the loop
body and two wrappers), each of which optimises and generates machine code
again for everything linked into it. For the fused step's chunk (about 34,000
lines of LLVM IR with the kernels it calls) that was five compilations of the
same code: about 14 s of a 41 s first minibatch on an empty cache. A C function
(``numba.cfunc``) passed to the loop as an argument is a first-class function:
the loop calls it through a pointer, so it is compiled once and the loop's
layers stay a few lines. Both are cached on disk (``cache=True``) like every
other kernel, and the task computes exactly what a direct call would.

Usage (``cnn/fused.py``)::

    forward = compiled(_forward_chunk, (0,) + args, fastmath={"contract"})
    backward = compiled(_backward_chunk, (0,) + args, fastmath={"contract"})
    # forward(i, *args), then backward(i, *args), for i < count; an index runs
    # on the thread that claims it first (claim, below)
    _run(forward, backward, count, threads, np.zeros(count, np.int64), *args)

Every task of the same argument types has the same Numba type, so one compiled
parallel loop calls them all.

:func:`claim` lets the loop's threads share out its indices as they go (each
index run once, by whichever thread claims it first) instead of in fixed shares.
"""

from __future__ import annotations

import numba as nb
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_COMPILED = {}


def compiled(pyfunc, example_args, **options):
    """``pyfunc`` compiled as a C function (``numba.cfunc``) for arguments of the
    types of ``example_args``; once per process and types, from Numba's disk
    cache when it is there.

    pyfunc : plain Python function returning nothing (it may call jitted functions).
    example_args : tuple, arguments of the types the function will be called with.
    options : ``numba.cfunc`` options (``fastmath``, ``error_model``).
    """
    argtypes = tuple(nb.typeof(a) for a in example_args)
    key = (pyfunc, argtypes, repr(sorted(options.items())))
    f = _COMPILED.get(key)
    if f is None:
        # start Numba's threading layer first: a task may call nb.get_thread_id(), whose
        # symbol the layer provides (machine code loaded from the cache needs it)
        nb.get_num_threads()
        f = nb.cfunc(types.void(*argtypes), cache=True, **options)(pyfunc)
        # its numba type, kept: a jitted function called with f types it on every call,
        # and typing a signature of ~20 nested tuple types costs ~0.1 ms each time
        f._numba_type_ = nb.typeof(f)
        _COMPILED[key] = f
    return f


def is_compiled(pyfunc, example_args):
    """Whether :func:`compiled` has compiled ``pyfunc`` in this process for arguments
    of the types of ``example_args`` (with any options)."""
    argtypes = tuple(nb.typeof(a) for a in example_args)
    return any(f is pyfunc and t == argtypes for f, t, _ in _COMPILED)


@intrinsic
def claim(typingctx, flags, i):
    """Whether this call is the first to claim index ``i``: ``flags[i]`` incremented
    atomically, true where it was 0. Every index is claimed once, by one thread,
    whatever the threads' order (:func:`cnn.fused._run`).

    flags : int64 array (n,), shared by the threads, zeros before the loop; i : int,
    0 <= i < n (not checked). The increment is LLVM's ``atomicrmw add``
    (``monotonic``: the flags publish no other data; the parallel loop's join
    orders the rest).
    """
    if not (
        isinstance(flags, types.Array) and flags.dtype == types.int64 and flags.ndim == 1
    ) or not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        array = context.make_array(sig.args[0])(context, builder, args[0])
        index = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = builder.gep(array.data, [index])
        one = ir.Constant(ir.IntType(64), 1)
        old = builder.atomic_rmw("add", ptr, one, "monotonic")
        return builder.icmp_signed("==", old, ir.Constant(ir.IntType(64), 0))

    return types.boolean(flags, i), codegen
