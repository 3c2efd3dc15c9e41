"""Numba's debug information (``NUMBA_DEBUGINFO=1``, ``NUMBA_ENABLE_PROFILING=1``,
``debug=True``) on the package's compiled functions.

With debug information on, Numba's lowering looks for the first statement after a
function's docstring (``numba.misc.firstlinefinder``) and fails with an IndexError on
a body of a docstring alone: the fused step's ``_nothing`` task was one, so a user
profiling training with ``NUMBA_ENABLE_PROFILING=1`` got that error from its compile.
"""

import ast
import importlib
import inspect
import pkgutil
import textwrap

import numba as nb
from numba import types
from numba.core.registry import CPUDispatcher

import cnn
from cnn import fused

TASKS = (
    fused._forward_chunk,
    fused._backward_chunk,
    fused._d3_task,
    fused._update_task,
    fused._nothing,
)


def _compiled_functions():
    """Every Python function of the package that Numba compiles: the jitted ones
    (module attributes that are Numba dispatchers) and the fused step's tasks."""
    found = {}
    for info in pkgutil.iter_modules(cnn.__path__, "cnn."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, CPUDispatcher) and value.py_func.__module__ == info.name:
                found[value.py_func.__qualname__, info.name] = value.py_func
    for task in TASKS:
        found[task.__qualname__, task.__module__] = task
    return found


def _docstring_only(pyfunc):
    tree = ast.parse(textwrap.dedent(inspect.getsource(pyfunc)))
    body = tree.body[0].body
    first = body[0]
    is_doc = (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )
    return is_doc and len(body) == 1


def test_no_compiled_function_is_a_docstring_alone():
    functions = _compiled_functions()
    assert len(functions) > 50  # the scan found the kernels, not just the tasks
    bare = sorted(
        f"{module}.{name}" for (name, module), f in functions.items() if _docstring_only(f)
    )
    assert bare == []


def test_the_nothing_task_compiles_with_debug_information():
    net = cnn.example_network(3, seed=0)
    fn = fused.FusedNet(net, fused.CHUNK, train=False)
    args = (0,) + fn._args()
    f = nb.cfunc(types.void(*(nb.typeof(a) for a in args)), debug=True)(fused._nothing)
    assert f.address  # compiled and loaded
