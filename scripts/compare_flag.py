#!/usr/bin/env python3
"""The flag studies on MNIST (flag on vs off, --study lr, --study pairings): docs/flag.md.

Same as ``python -m cnn compare``; ``--help`` lists the options.
"""

from cnn.cli.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
