import os
import sys

import pytest

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long learning checks, run with --runslow")
    config.addinivalue_line("markers", "heavy: minutes-long CI learning checks, scheduled first")


def pytest_collection_modifyitems(config, items):
    # Heavy end-to-end checks go first, so that `-n 2 --dist loadgroup` (README's test command)
    # hands them out one per worker before the many short tests fill the gaps.
    items.sort(key=lambda item: 0 if "heavy" in item.keywords else 1)
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
