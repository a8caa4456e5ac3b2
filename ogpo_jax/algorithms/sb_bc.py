"""Success-buffer BC alone: flow-matching BC of the actor on chunks of the agent's own
successful episodes (filtered self-imitation), an EMA actor that collects data, no critic.

The OGPO+ regularizer without the PPO term, as an algorithm of its own: the smallest thing the
driver can finetune, and the baseline every critic-based method must beat.

    state = init(key, obs_dim, chunk_shape, config, actor_params)
    state, metrics = update(state, batch, success_batch)    # success_batch None: BC on `batch`
    chunk = act(state, obs, key, mode)                      # mode: 'ode' | 'sde'

Config fields it reads (`SBBCConfig`): the actor's network, flow and optimizer fields, `bc_coeff`
(the loss weight), `actor_tau`, `act_with`, `rollout_mode`, `success_batch_size`, `batch_size`
(the loop's replay batch, unused here).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from ogpo_jax.algorithms import common
from ogpo_jax.algorithms.actor import actor_optimizer, bc_step, init_actor_params, sample_actions
from ogpo_jax.algorithms.base import Algorithm
from ogpo_jax.algorithms.config import BC_COEFF, AlgoConfig, check_field, swept

NAME = "sb_bc"
ACT_MODES = ("ode", "sde")


@dataclasses.dataclass(frozen=True)
class SBBCConfig(AlgoConfig):
    """Success-buffer BC: the shared fields plus the BC loss's weight."""
    name: str = NAME
    bc_coeff: float = BC_COEFF            # weight of the success-buffer flow-matching loss (its only loss)

    def __post_init__(self):
        super().__post_init__()
        check_field(self, "bc_coeff", self.bc_coeff >= 0, ">= 0")


class SBBCState(common.AgentState, kw_only=True):
    actor: Any                 # velocity-field params
    actor_ema: Any             # EMA of the actor: collects data when act_with='ema'
    actor_opt: Any
    config: SBBCConfig = struct.field(pytree_node=False)


def check_config(config: SBBCConfig) -> None:
    common.check_rollout_mode(config, "sb_bc", ACT_MODES, " (Best-of-N needs a critic)")
    if config.bc_coeff <= 0:
        raise ValueError(f"algo.bc_coeff must be > 0 for algo.name='sb_bc' (it is the only loss), "
                         f"got {config.bc_coeff!r}")


def init(key, obs_dim: int, chunk_shape, config: SBBCConfig, actor_params=None) -> SBBCState:
    """Fresh state; `actor_params` (a BC checkpoint) initialise actor and EMA actor."""
    horizon, act_dim = (int(c) for c in chunk_shape)
    if obs_dim < 1 or horizon < 1 or act_dim < 1:
        raise ValueError(f"obs_dim and chunk_shape must be positive, got {obs_dim}, {chunk_shape}")
    k_actor, k_state = jax.random.split(key)
    if actor_params is None:
        actor_params = init_actor_params(config, k_actor, obs_dim, horizon * act_dim)
    tx, _ = actor_optimizer(config)
    return SBBCState(actor=actor_params, actor_ema=actor_params, actor_opt=tx.init(actor_params),
                     step=jnp.zeros((), jnp.int32), key=k_state, config=config,
                     chunk_shape=(horizon, act_dim))


def update(state: SBBCState, batch, success_batch=None):
    """One gradient step of bc_coeff * flow-matching BC on the success batch, then the EMA."""
    cfg = swept(state)
    key, k_bc = jax.random.split(state.key)
    data = success_batch if success_batch is not None else batch
    actor, actor_opt, metrics = bc_step(cfg, state.chunk_shape, state.actor, state.actor_opt, state.step, data, k_bc,
                                        cfg.bc_coeff)
    actor_ema = common.polyak(state.actor_ema, actor, cfg.actor_tau)
    metrics["actor/ema_distance"] = common.tree_norm(jax.tree_util.tree_map(jnp.subtract, actor, actor_ema))
    return state.replace(actor=actor, actor_ema=actor_ema, actor_opt=actor_opt, step=state.step + 1,
                         key=key), metrics


@common.chunk_act("sb_bc", ACT_MODES, " (no critic to rank candidates)")
def act(state: SBBCState, obs, key, mode: str = "sde", actor: str | None = None) -> jax.Array:
    """Chunks of the EMA or current actor: obs (B, obs_dim) -> (B, H, da); (obs_dim,) -> (H, da)."""
    actor = actor or state.config.act_with
    if actor not in ("ema", "current"):
        raise ValueError(f"actor must be 'ema' or 'current', got {actor!r}")
    params = state.actor_ema if actor == "ema" else state.actor
    return sample_actions(state.config, state.chunk_shape, params, obs, key, mode)


ALGORITHM = Algorithm(name=NAME, description="success-buffer flow-matching BC alone (no critic)",
                      init=init, update=update, act=act, act_modes=ACT_MODES, check_config=check_config,
                      config=SBBCConfig)
