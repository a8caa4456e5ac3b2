"""Pieces shared by the algorithms: the state every agent carries, Polyak averaging, optimizers and
schedules, n-step targets."""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


class AgentState(struct.PyTreeNode, kw_only=True):
    """What every algorithm's state carries for the driver (`algorithms/base.py`); a baseline's
    state subclasses it (`class QCState(AgentState, kw_only=True)`) and adds its networks and
    optimizers. Keyword-only, so the subclass's fields need no defaults."""
    step: jax.Array            # updates done, int32
    key: jax.Array
    config: Any = struct.field(pytree_node=False)        # the algorithm's config class (static)
    chunk_shape: tuple = struct.field(pytree_node=False)  # (H, action_dim)
    hparams: Any = None        # a sweep member's own values of SWEEPABLE fields (`config.swept`)

    @property
    def action_dim(self) -> int:
        """H * action_dim: the size of a flattened chunk."""
        return self.chunk_shape[0] * self.chunk_shape[1]


def tree_norm(tree) -> jax.Array:
    """Global L2 norm of a pytree."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree)))


def polyak(target, online, tau: float):
    """target <- (1 - tau) target + tau online, leaf by leaf."""
    return jax.tree_util.tree_map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


def cyclic_cosine_schedule(peak: float, floor: float, warmup_steps: int, period: int):
    """Repeating warm-up + cosine schedule of the OGPO actor (the paper's actor schedule).

    Each period of `period` steps ramps linearly from `floor` to `peak` over `warmup_steps`, then
    decays with a half cosine back to `floor` at the end of the period.
    """
    warmup = max(int(warmup_steps), 0)
    period = max(int(period), warmup + 1)

    def schedule(step):
        s = jnp.mod(step, period).astype(jnp.float32)
        ramp = floor + (peak - floor) * s / max(warmup, 1)
        progress = (s - warmup) / (period - warmup)
        decay = floor + 0.5 * (peak - floor) * (1.0 + jnp.cos(jnp.pi * progress))
        return jnp.where(s < warmup, ramp, decay)

    return schedule


def adamw(learning_rate, weight_decay: float, grad_clip: float, eps: float = 1e-8):
    """AdamW behind a global-norm clip."""
    return optax.chain(
        optax.clip_by_global_norm(grad_clip),
        optax.adamw(learning_rate, eps=eps, weight_decay=weight_decay),
    )


def nstep_target(rewards, valid, terminal, next_value, gamma: float):
    """Chunk TD target: sum_i gamma^i r_i valid_i + gamma^n (1 - terminal) next_value.

    rewards, valid (B, H); terminal, next_value (B,). n is the number of valid steps of the chunk
    (H for a full chunk; fewer when the episode was truncated inside the chunk, in which case
    `next_value` must be the value at the true final observation).
    """
    ret, to_next = chunk_return(rewards, valid, gamma)
    return ret + to_next * (1.0 - terminal.astype(rewards.dtype)) * next_value


def chunk_return(rewards, valid, gamma: float):
    """A chunk's discounted reward sum and the discount to the observation after it:
    rewards, valid (..., H) -> (sum_i gamma^i r_i valid_i, gamma^n), n the valid steps."""
    valid = valid.astype(rewards.dtype)
    discounts = gamma ** jnp.arange(rewards.shape[-1], dtype=rewards.dtype)
    return (rewards * valid * discounts).sum(-1), gamma ** valid.sum(-1)


def during_warmup(step, warmup_updates: int, early, late):
    """`early()` while fewer than `warmup_updates` updates are done, else `late()` (thunks of the
    same shapes; `early` is not traced when there is no warm-up).

    Critic-based baselines act with their base policy until their critic has trained for
    `critic_warmup_updates` updates, as OGPO leaves its actor unchanged for that long.
    """
    if warmup_updates <= 0:
        return late()
    return jax.tree_util.tree_map(lambda a, b: jnp.where(step < warmup_updates, a, b), early(), late())


def chunk_act(name: str, modes: tuple, why: str = ""):
    """Decorator of an algorithm's `act(state, obs, key, mode='sde', actor=None)`: obs (B, obs_dim)
    gives chunks (B, H, da) and one observation (obs_dim,) one chunk (H, da); a `mode` outside
    `modes` is an error naming the algorithm (`why` says what rules the others out)."""
    def decorate(fn):
        @functools.wraps(fn)
        def act(state, obs, key, mode: str = "sde", actor: str | None = None):
            if obs.ndim == 1:
                return act(state, obs[None], key, mode, actor)[0]
            if mode not in modes:
                raise ValueError(f"mode must be one of {modes} for {name}{why}, got {mode!r}")
            return fn(state, obs, key, mode, actor)
        return act
    return decorate


def check_rollout_mode(config, name: str, modes: tuple, why: str = "") -> None:
    """A named error when `algo.rollout_mode` is not one of the algorithm's acting `modes`."""
    if config.rollout_mode not in modes:
        raise ValueError(f"algo.rollout_mode must be one of {modes} for algo.name={name!r}{why}, "
                         f"got {config.rollout_mode!r}")
