"""BC: the initial (behaviour-cloned) policy, frozen. Its curve is the floor every finetuning method
starts from, run through the same loop, evaluation and seeds (`sb_bc` is BC continued on the
agent's own successes).

    state = init(key, obs_dim, chunk_shape, config, actor_params)
    state, metrics = update(state, batch, success_batch)    # counts the update, changes nothing
    chunk = act(state, obs, key, mode)                      # 'ode' | 'sde'
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from ogpo_jax.algorithms.actor import init_actor_params, sample_actions
from ogpo_jax.algorithms import common
from ogpo_jax.algorithms.base import Algorithm
from ogpo_jax.algorithms.config import AlgoConfig, check_field

NAME = "bc"
ACT_MODES = ("ode", "sde")


@dataclasses.dataclass(frozen=True)
class BCConfig(AlgoConfig):
    """Frozen BC: the shared fields only (its actor's network and sampler)."""
    name: str = NAME


class BCState(common.AgentState, kw_only=True):
    actor: Any
    config: BCConfig = struct.field(pytree_node=False)


def check_config(config: BCConfig) -> None:
    common.check_rollout_mode(config, "bc", ACT_MODES, " (no critic)")


def init(key, obs_dim: int, chunk_shape, config: BCConfig, actor_params=None) -> BCState:
    horizon, act_dim = (int(c) for c in chunk_shape)
    k_actor, k_state = jax.random.split(key)
    if actor_params is None:
        actor_params = init_actor_params(config, k_actor, obs_dim, horizon * act_dim)
    return BCState(actor=actor_params, step=jnp.zeros((), jnp.int32), key=k_state, config=config,
                   chunk_shape=(horizon, act_dim))


def update(state: BCState, batch, success_batch=None):
    """The policy stays as it is; the update is counted so env steps and updates line up with the
    other methods' logs."""
    return state.replace(step=state.step + 1), {"actor/frozen": jnp.ones(())}


@common.chunk_act("bc", ACT_MODES)
def act(state: BCState, obs, key, mode: str = "sde", actor: str | None = None) -> jax.Array:
    return sample_actions(state.config, state.chunk_shape, state.actor, obs, key, mode)


ALGORITHM = Algorithm(name=NAME, description="BC: the initial policy, frozen (the floor)",
                      init=init, update=update, act=act, act_modes=ACT_MODES, check_config=check_config,
                      frozen=True,
                      config=BCConfig)
