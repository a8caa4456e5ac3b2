"""The `Algorithm` interface the training driver runs, and the registry that names algorithms.

An algorithm is a handful of pure, jittable functions over its own state (a flax
`struct.PyTreeNode`):

    state = algo.init(key, obs_dim, chunk_shape, config, actor_params=None)
    state, metrics = algo.update(state, batch, success_batch)   # metrics: {name: scalar}
    chunks = algo.act(state, obs, key, mode, actor=None)       # obs (B, obs_dim) -> (B, H, da)

The state carries what the driver reads: `step` (updates done, int32), `config` (static, the
algorithm's config class, `Algorithm.config`, whose `name` is the registry name) and `chunk_shape`
(static, (H, da)).
`batch` holds replay chunk transitions and `success_batch` chunks from successful episodes
(`training/loop.py` samples both); an `on_policy` algorithm gets the loop's rollout
instead (time-ordered rows of every env plus the keys its `act` drew them with, so it can
regenerate its denoising chains exactly) and `success_batch=None`. `act(..., actor=...)` picks which actor params act
('ema' or 'current'; default `config.act_with`): the driver evaluates both.

The driver finds an algorithm by `config.algo.name` (`get(name)` or `of(state)`), so the loop,
`train.py`, `compare.py` and `evaluate.py` never import one by hand. Adding one: write a module
with `init`, `update`, `act`, `check_config` and, if it has fields of its own, a config class
(subclass `config.AlgoConfig` and give `name` the registry name as its default), build an
`Algorithm` at its bottom and add it to `_MODULES` below.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, NamedTuple


class Algorithm(NamedTuple):
    name: str
    description: str
    init: Callable[..., Any]          # (key, obs_dim, chunk_shape, config, actor_params=None) -> state
    update: Callable[..., Any]        # (state, batch, success_batch) -> (state, metrics)
    act: Callable[..., Any]           # (state, obs, key, mode='sde', actor=None) -> chunks
    act_modes: tuple                  # samplers `act` takes, e.g. ('ode', 'sde', 'best_of_n')
    # (config: OGPOConfig) -> None, a named ValueError on settings the algorithm cannot run
    check_config: Callable[[Any], None]
    # On-policy algorithms (DPPO, ReinFlow) learn from the last `config.rollout_iterations`
    # iterations of every env in time order instead of replay batches: the loop keeps that
    # rollout and calls `update(state, rollout, None)` once it is full (`training/loop.py`).
    on_policy: bool = False
    # The method's own policy with no critic selection, deterministic given the key:
    # (state, obs, key, actor=None) -> chunks. None: `act(..., mode='ode')` already is (OGPO, BC,
    # FQL, DSRL, DPPO, ReinFlow); QC and EXPO, whose 'ode' act ranks candidates, give their flow's ODE.
    policy_alone: Callable[..., Any] | None = None
    # Per-head target-critic values of chunks, (state, obs (B, obs_dim), chunks (B, H, da)) -> (M, B),
    # for methods with a chunked critic; None for those without one (BC, success-buffer BC, on-policy).
    target_q: Callable[..., Any] | None = None
    # N candidate chunks for best-of-N selection, (state, obs, key, actor=None) -> chunks; None:
    # `policy_alone` with one key per candidate (DSRL's deterministic policy samples its noise policy).
    candidates: Callable[..., Any] | None = None
    # A policy that never changes (frozen BC): the driver evaluates it at every evaluation point
    # without collecting data, since rollouts and no-op updates could not change what it scores.
    frozen: bool = False
    # The algorithm's config class: a frozen dataclass subclassing `config.AlgoConfig` with the
    # algorithm's own fields and their checks (`AlgoConfig.from_dict` builds it from a run config).
    # None: `AlgoConfig` itself (only the shared fields).
    config: Any = None


# registry name -> module defining `ALGORITHM` (imported on first use: no import cycles with the
# modules that use the registry)
_MODULES = {
    "ogpo": "ogpo_jax.algorithms.ogpo",
    "sb_bc": "ogpo_jax.algorithms.sb_bc",
    "bc": "ogpo_jax.algorithms.bc",
    "qc": "ogpo_jax.algorithms.qc",
    "fql": "ogpo_jax.algorithms.fql",
    "expo": "ogpo_jax.algorithms.expo",
    "dsrl": "ogpo_jax.algorithms.dsrl",
    "dppo": "ogpo_jax.algorithms.dppo",
    "reinflow": "ogpo_jax.algorithms.reinflow",
}


def names() -> tuple:
    return tuple(_MODULES)


def get(name: str) -> Algorithm:
    """The registered algorithm `name` (`config.algo.name`)."""
    if name not in _MODULES:
        raise ValueError(f"algo.name must be one of {sorted(_MODULES)}, got {name!r}")
    algo = importlib.import_module(_MODULES[name]).ALGORITHM
    assert algo.name == name, (algo.name, name)
    return algo


def of(state) -> Algorithm:
    """The algorithm a state belongs to (its static config names it)."""
    return get(state.config.name)
