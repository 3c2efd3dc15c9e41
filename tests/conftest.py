"""Test configuration: slow tests run only when asked.

``pytest --runslow`` or ``CNN_RUN_SLOW=1`` runs the tests marked ``slow`` (full
MNIST runs); ``.ci/run`` sets the variable when the MNIST files are available.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the _golden and _nets helpers


def pytest_addoption(parser):
    parser.addoption(
        "--runslow", action="store_true", default=False, help="run tests marked slow (full MNIST)"
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("CNN_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow or CNN_RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
