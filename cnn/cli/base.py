"""What every subcommand shares: exit codes, the error type, the parser class and
the one-line error report.

Every error a command reports is one line on stderr, ``cnn <command>: error:
<what went wrong and what to do>``, in command-line terms (``--data-dir``,
``CNN_MNIST_DIR``); ``--debug`` adds the traceback. :func:`describe_error` maps
the package's exceptions to that line and an exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

PROG = "cnn"

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
"""0 success; 1 failure; 2 bad input or missing data; 130 Ctrl-C; 143 SIGTERM."""

STATE = {"terminated": False}
"""Set when SIGTERM arrived (the command then exits with 143, not 130)."""

MAX_LINE = 300
"""Longest error line printed (a longer message is cut with "...")."""


class CLIError(Exception):
    """An error with its exit code, reported as one line on stderr."""

    def __init__(self, message, code=EXIT_USAGE):
        super().__init__(message)
        self.code = code


class ArgumentError(CLIError):
    """Bad command-line arguments (argparse's errors, exit code 2)."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are exceptions, not a usage dump and ``sys.exit``."""

    def error(self, message):
        raise ArgumentError(f"{message} (see '{self.prog} --help')")


def common_parent():
    """The options every subcommand takes (``--debug``)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback of an error",
    )
    return p


def no_download_from_env():
    """True when the environment variable ``CNN_NO_DOWNLOAD`` is set (not empty or 0)."""
    return os.environ.get("CNN_NO_DOWNLOAD", "").strip() not in ("", "0")


def one_line(message, limit=MAX_LINE):
    """``message`` on one line: whitespace runs (newlines included) become one space."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def report_error(command, message, code, exc=None, debug=False):
    """Print ``cnn <command>: error: <message>`` (one line) and return ``code``."""
    if debug and exc is not None:
        traceback.print_exception(exc)
    where = f"{PROG} {command}" if command else PROG
    print(f"{where}: error: {one_line(message)}", file=sys.stderr)
    sys.stderr.flush()
    return code


def stdout_closed():
    """The reader of stdout went away (``cnn step | head``): stop quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
    except (OSError, ValueError):
        pass
    return EXIT_FAIL


def mnist_message(exc):
    """The command-line wording of a missing-MNIST error (:class:`cnn.mnist.MNISTNotFoundError`)."""
    directory = getattr(exc, "directory", None)
    missing = list(getattr(exc, "missing", ()) or ())
    reason = getattr(exc, "reason", None)
    if directory is None:
        return str(exc)
    what = ""
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        what = f" ({missing[0]}{more})"
    if reason:
        head = f"could not download MNIST into {directory}{what}: {reason}"
    else:
        head = f"MNIST files not found in {directory}{what}"
    return (
        f"{head}; give --data-dir DIR or set CNN_MNIST_DIR to a folder holding them, "
        f"or use --synthetic N"
    )


def describe_error(exc):
    """The one-line message and the exit code for an exception that ends a command."""
    from .. import train_run, training
    from ..atomic import FolderBusyError
    from ..gradcheck import GradientCheckError
    from ..matlab import CNNFileError
    from ..mnist import MNISTError, MNISTNotFoundError, MNISTVerifyError

    if isinstance(exc, CLIError):
        return str(exc), exc.code
    if isinstance(exc, MNISTNotFoundError):
        return mnist_message(exc), EXIT_USAGE
    if isinstance(exc, MNISTVerifyError):
        return f"{exc}; for custom data in the MNIST format use --no-verify", EXIT_USAGE
    if isinstance(exc, (MNISTError, CNNFileError, train_run.UsageError, FolderBusyError)):
        return str(exc), EXIT_USAGE
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return (f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc)), EXIT_USAGE
    if isinstance(exc, training.NonFiniteError):
        return f"training stopped: {exc}", EXIT_FAIL
    if isinstance(exc, (train_run.TrainingError, GradientCheckError)):
        return str(exc), EXIT_FAIL
    if isinstance(exc, OSError):
        return (f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)), EXIT_FAIL
    return (
        f"unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback)"
    ), EXIT_FAIL
