"""Studies of the flag, on top of the package (the core never imports them).

========================  ======================================================
:mod:`.store`             run records: one JSON file per training, keyed by its spec
:mod:`.run`               running specs on local workers (joblib) or Dask
:mod:`.flag`              the flag study: settings, one training, summary, table
:mod:`.lr`                study "lr": flag off/on over a learning-rate grid
:mod:`.pairings`          study "pairings": which output/loss pairs give a - y
:mod:`.reproduce`         the Octave reference runs, retrained and compared
:mod:`.report`            shared table helpers
:mod:`.plots`             the studies' figures
========================  ======================================================

The command line is ``cnn compare`` (:mod:`cnn.cli.compare`).
"""
