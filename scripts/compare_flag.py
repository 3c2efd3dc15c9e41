#!/usr/bin/env python3
"""Flag on versus flag off on MNIST (Example 3, several seeds): see docs/flag.md.

Same as ``python -m cnn compare``; ``--help`` lists the options.
"""

from cnn.experiments import compare_main

if __name__ == "__main__":
    raise SystemExit(compare_main())
