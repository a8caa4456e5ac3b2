import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"


def _check_loadgroup(config):
    """Under pytest >= 9.2 with pytest-xdist <= 3.8, loadgroup ignores every xdist_group mark (the
    node ids it updates are not the ones pytest keeps; pytest-xdist issue 1386): the MJX modules'
    shared fixtures and compiles then run on both workers and the suite takes ~25% longer."""
    if config.getoption("dist", "no") != "loadgroup":
        return
    from importlib.metadata import version

    def release(name):
        return tuple(int(p) for p in version(name).split(".")[:2] if p.isdigit())

    if release("pytest") >= (9, 2) and release("pytest-xdist") <= (3, 8):
        raise pytest.UsageError(
            f"pytest {version('pytest')} with pytest-xdist {version('pytest-xdist')} ignores xdist_group marks, "
            "so --dist loadgroup would run the MJX modules' fixtures on both workers; install the test extra's "
            "pin: pip install 'pytest>=8,<9.2'")


def pytest_configure(config):
    if not hasattr(config, "workerinput"):
        _check_loadgroup(config)
    # One persistent XLA compilation cache for the whole session, shared by the xdist workers and
    # the subprocesses tests start (train.py, compare.py, distributed workers inherit the
    # environment): many tests compile the same tiny-config programs again (resume, SIGKILL
    # restarts, seeds run one by one), and a cache hit skips XLA's compile. Set by the controller
    # before workers start; a user's own JAX_COMPILATION_CACHE_DIR is kept and never deleted.
    if not hasattr(config, "workerinput") and _CACHE_ENV not in os.environ:
        config._ogpo_jax_cache = tempfile.mkdtemp(prefix="ogpo-jax-test-xla-cache-")
        os.environ[_CACHE_ENV] = config._ogpo_jax_cache
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    config.addinivalue_line("markers", "slow: long learning checks, run with --runslow")
    config.addinivalue_line("markers", "heavy: minutes-long CI learning checks, scheduled first")


def pytest_unconfigure(config):
    cache = getattr(config, "_ogpo_jax_cache", None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)


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
