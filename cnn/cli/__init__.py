"""The command line: ``cnn <command> [options]`` (also ``python -m cnn``).

=============  ===========================================================================
``train``      ``Example_MNIST_CNN.m`` with checkpoints, resume, Ctrl-C and progress bars
               (:mod:`cnn.cli.train`, runner :mod:`cnn.train_run`)
``test``       error rate of a saved network (``.mat`` or ``.npz``) on the MNIST test set
``compare``    the flag-on vs flag-off comparison (:mod:`cnn.cli.compare`)
``gradcheck``  numerical gradient check of a small network, as a Markdown table
``step``       one minibatch through ``bpcnn``, layer by layer, next to ``bpcnn.m``
               (:mod:`cnn.step`); ``--pdb`` stops in the debugger at the flag
``bench``      the benchmark (:mod:`cnn.cli.bench`)
=============  ===========================================================================

One module per command (``cnn/cli/<command>.py``), each with ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int`` (``compare`` and ``bench``
take their own arguments: ``main(argv, prog) -> int``); argument types are in
:mod:`cnn.cli.args`, the error style in :mod:`cnn.cli.base`. The package below
never imports this layer.

Exit codes: 0 success; 1 failure (a failed gradient check, NaN/Inf or another
error during training); 2 usage or input error (bad options, missing or
unreadable files, MNIST not found or not verified, an output folder that cannot
be written or is in use); 130 interrupted by Ctrl-C; 143 stopped by SIGTERM.
Errors are reported as one line ``cnn <command>: error: ...`` on stderr;
``--debug`` adds the traceback.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading

from . import base
from .base import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    PROG,
    CLIError,
    Parser,
    common_parent,
    describe_error,
    report_error,
    stdout_closed,
)

__all__ = ["COMMANDS", "CLIError", "build_parser", "describe_error", "main", "train_main"]

COMMANDS = ("train", "test", "compare", "gradcheck", "step", "bench")
"""The subcommands, in the order of ``cnn --help``."""

_PASS_THROUGH = ("compare", "bench")  # commands that parse their own arguments


def _command(name):
    return importlib.import_module(f"{__name__}.{name}")


def _version():
    from .. import __version__

    return __version__


def build_parser():
    """The parser of ``cnn`` and its subcommands."""
    common = common_parent()
    p = Parser(
        prog=PROG,
        description="The MATLAB sample CNN (File Exchange 59223), ported "
        "to Python: train, test, compare, check gradients, step through bpcnn.",
        epilog="Exit codes: 0 ok, 1 failure (failed gradient check, training error), "
        "2 usage or input error, 130 interrupted, 143 terminated. "
        f"'{PROG} COMMAND --help' describes each command.",
    )
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        mod = _command(name)
        if name in _PASS_THROUGH:
            sub.add_parser(name, help=mod.HELP, add_help=False)
            continue
        c = sub.add_parser(name, parents=[common], help=mod.HELP, description=mod.DESCRIPTION)
        mod.add_arguments(c)
    return p


def _split_command(argv):
    """``(global options, command, rest)`` where the command is the first non-option word."""
    for i, a in enumerate(argv):
        if not a.startswith("-"):
            return argv[:i], a, argv[i + 1 :]
    return argv, None, []


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` and checkpoint runs."""


def _on_sigterm(signum, frame):
    base.STATE["terminated"] = True
    raise _Terminated


def main(argv=None):
    """Run ``cnn`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    head, command, rest = _split_command(argv)
    if command not in COMMANDS:
        command = None
    previous = None
    base.STATE["terminated"] = False
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = _main(argv, head, command, rest)
        sys.stdout.flush()  # inside the error handling: a closed pipe is caught
        return code
    except SystemExit as exc:
        if isinstance(exc.code, str):
            return report_error(command, exc.code, 1)
        return int(exc.code or 0)
    except BrokenPipeError:
        return stdout_closed()
    except _Terminated as exc:
        return report_error(command, "terminated (SIGTERM)", EXIT_TERMINATED, exc, debug)
    except KeyboardInterrupt as exc:
        return report_error(command, "interrupted", EXIT_INTERRUPTED, exc, debug)
    except BaseException as exc:  # noqa: BLE001 - every error becomes one line and a code
        message, code = describe_error(exc)
        return report_error(command, message, code, exc, debug)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv, head, command, rest):
    if command in _PASS_THROUGH:
        if any(a != "--debug" for a in head):
            try:  # --help, --version or an unknown option before the command
                build_parser().parse_args(head)
            except SystemExit as exc:
                return int(exc.code or 0)
        rest = [a for a in rest if a != "--debug"]  # ours: the traceback of an error
        return _command(command).main(rest, prog=f"{PROG} {command}")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    return _command(args.command).run(args)


def train_main(argv=None, prog="scripts/example_mnist.py"):
    """``cnn train`` under another name (``scripts/example_mnist.py``)."""
    from .train import main as train_command_main

    return train_command_main(argv, prog)
