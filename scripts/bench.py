"""Run the speed benchmark from a source checkout: ``python scripts/bench.py [options]``.

The benchmark lives in the package (:mod:`cnn.bench`, also ``cnn bench`` and
``python -m cnn.bench``); see its docstring and ``docs/performance.md``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cnn.bench import main

if __name__ == "__main__":
    sys.exit(main())
