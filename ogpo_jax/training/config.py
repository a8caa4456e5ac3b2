"""Validation of a whole run config (before anything is compiled).

Every error names the offending field and value. `validate(config) -> OGPOConfig`.
"""
from __future__ import annotations

from ogpo_jax.algorithms.config import OGPOConfig

SECTIONS = ("seed", "env", "demos", "bc", "algo", "train", "log")


def _require(ok: bool, field: str, value, requirement: str):
    if not ok:
        raise ValueError(f"{field} must be {requirement}, got {value!r}")


def validate(config) -> OGPOConfig:
    unknown = sorted(set(config.keys()) - set(SECTIONS))
    _require(not unknown, "config", unknown, f"free of unknown top-level keys (known: {SECTIONS})")
    algo = OGPOConfig.from_dict(config.algo)
    e, b, t = config.env, config.bc, config.train
    _require(isinstance(config.seed, int), "seed", config.seed, "an integer")
    _require(e.chunk_horizon >= 1, "env.chunk_horizon", e.chunk_horizon, ">= 1")
    _require(config.demos.num_demos >= 1, "demos.num_demos", config.demos.num_demos, ">= 1")
    _require(b.max_steps >= 1, "bc.max_steps", b.max_steps, ">= 1")
    _require(b.batch_size >= 1, "bc.batch_size", b.batch_size, ">= 1")
    _require(b.lr > 0, "bc.lr", b.lr, "> 0")
    _require(b.eval_every >= 1, "bc.eval_every", b.eval_every, ">= 1")
    _require(b.eval_mode in ("ode", "sde"), "bc.eval_mode", b.eval_mode, "'ode' or 'sde'")
    _require(0.0 <= b.stop_success <= 1.0, "bc.stop_success", b.stop_success, "in [0, 1]")
    _require(b.eval_episodes >= 1, "bc.eval_episodes", b.eval_episodes, ">= 1")
    for name in ("num_envs", "total_env_steps", "log_every_iterations", "replay_capacity",
                 "success_capacity", "eval_every_env_steps", "eval_episodes",
                 "checkpoint_every_env_steps", "max_checkpoints"):
        _require(t[name] >= 1, f"train.{name}", t[name], ">= 1")
    _require(t.start_training >= 0, "train.start_training", t.start_training, ">= 0")
    _require(t.updates_per_iteration >= 0, "train.updates_per_iteration", t.updates_per_iteration, ">= 0")
    _require(t.replay_capacity >= algo.batch_size, "train.replay_capacity", t.replay_capacity,
             f">= algo.batch_size ({algo.batch_size})")
    _require(t.success_capacity >= algo.success_batch_size, "train.success_capacity", t.success_capacity,
             f">= algo.success_batch_size ({algo.success_batch_size})")
    return algo
