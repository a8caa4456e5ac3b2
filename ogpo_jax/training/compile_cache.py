"""The persistent XLA compilation cache, on by default for the experiment scripts.

XLA compiles every program anew in each process; MJX programs take minutes on a CPU and tens of
seconds on a GPU. With the cache, a rerun, a resumed run or `evaluate.py` on the same shapes loads
the compiled programs from disk instead. `enable()` points JAX at `JAX_COMPILATION_CACHE_DIR` when
it is set (set it to an empty string to turn the cache off), else at `~/.cache/ogpo-jax/xla`
(`$XDG_CACHE_HOME/ogpo-jax/xla`).
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp

ENV_VAR = "JAX_COMPILATION_CACHE_DIR"


def default_dir() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "ogpo-jax", "xla")


def enable(log=None) -> str | None:
    """Turn the persistent compilation cache on (see the module docstring); returns its directory,
    or None when it is off (`JAX_COMPILATION_CACHE_DIR=''`, or the directory cannot be created)."""
    value = os.environ.get(ENV_VAR)
    if value is not None and not value.strip():
        return None
    path = os.path.abspath(os.path.expanduser(value or default_dir()))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        if log is not None:
            log(f"[cache] compilation cache off: cannot create {path} ({e})")
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    return path


# jax.monitoring events of the persistent cache (jax/_src/compiler.py, compilation_cache.py): a
# lookup for every program eligible for the cache, a hit when it loaded, a miss when it was
# compiled and written
CACHE_EVENTS = {"/jax/compilation_cache/compile_requests_use_cache": "lookups",
                "/jax/compilation_cache/cache_hits": "hits",
                "/jax/compilation_cache/cache_misses": "written"}


def count_events() -> dict:
    """A dict of the persistent cache's lookups, hits and writes in this process from now on,
    kept up to date by a `jax.monitoring` listener."""
    counts = dict.fromkeys(CACHE_EVENTS.values(), 0)

    def listener(event, **_):
        key = CACHE_EVENTS.get(event)
        if key:
            counts[key] += 1
    jax.monitoring.register_event_listener(listener)
    return counts


def signature(tree) -> tuple:
    """What decides whether `jax.jit` reuses a compiled program for the argument `tree`: its
    structure and every leaf's shape, dtype, sharding and committed-ness. Counting the distinct
    signatures a jitted function was called with counts the programs it compiled."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((jnp.shape(x), jnp.result_type(x), getattr(x, "sharding", None), getattr(x, "committed", None))
                          for x in leaves)
