"""``cnn compare``: the flag-on vs flag-off comparison (:func:`cnn.experiments.compare_main`)."""

from __future__ import annotations

HELP = "flag on vs off on MNIST over several seeds (see compare --help)"


def main(argv=None, prog=None) -> int:
    """Run ``cnn compare`` with ``argv``; return the exit code."""
    from .. import experiments
    from ..train_run import prepare_output_folder

    argv = list(argv or [])
    build_parser = getattr(experiments, "build_parser", None)
    if build_parser and not {"-h", "--help"} & set(argv):  # fail before the work
        out = build_parser().get_default("out")
        for i, a in enumerate(argv):
            if a == "--out" and i + 1 < len(argv):
                out = argv[i + 1]
            elif a.startswith("--out="):
                out = a.split("=", 1)[1]
        if out:
            prepare_output_folder(out, "--out")
    return int(experiments.compare_main(argv, prog=prog or "cnn compare") or 0)
