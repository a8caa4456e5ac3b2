"""QC: Q-chunking with best-of-N sampling from the flow policy (Li, Zhou, Levine 2025, "Reinforcement
Learning with Action Chunking"; code github.com/ColinQiyangLi/qc, the `best-of-N` / expected-max
agent).

The policy is implicit: N chunks sampled from the base flow policy, the one with the highest
critic value is executed. The critic ensemble learns n-step chunk TD targets whose next action is
the same best-of-N choice (ranked by the online critics, valued by the target critics: the
"expected-max" backup of QC's code). The base flow policy
keeps imitating data (`base_bc_data`: the replay buffer, as QC trains it on its buffer). The
actor is never pushed towards Q by gradients: all improvement comes from selection.

    state = init(key, obs_dim, chunk_shape, config, actor_params)
    state, metrics = update(state, batch, success_batch)
    chunk = act(state, obs, key, mode)     # 'ode' | 'sde': the base sampler the N candidates use

Config fields it reads: `best_of_n` (N; QC's code: 32), `target_aggregation` (QC's code: the
mean of 2 heads), the critic fields, `base_bc_data`,
`actor_lr` and its schedule, `critic_warmup_updates` (the base policy acts alone until then).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from ogpo_jax.algorithms import common
from ogpo_jax.algorithms import critic as critic_lib
from ogpo_jax.algorithms.actor import actor_optimizer, base_bc_step, init_actor_params, sample_actions
from ogpo_jax.algorithms.base import Algorithm
from ogpo_jax.algorithms.config import BaseFlowConfig, check_field, swept

NAME = "qc"
ACT_MODES = ("ode", "sde")


@dataclasses.dataclass(frozen=True)
class QCConfig(BaseFlowConfig):
    """QC: the shared fields (its critic, `best_of_n` candidates) and the base flow's BC data."""
    name: str = NAME


class QCState(common.AgentState, kw_only=True):
    actor: Any                 # base flow policy (velocity-field params)
    actor_opt: Any
    critic: Any                # critic ensemble, heads stacked on axis 0
    critic_target: Any
    critic_opt: Any
    config: QCConfig = struct.field(pytree_node=False)


def check_config(config: QCConfig) -> None:
    common.check_rollout_mode(config, "qc", ACT_MODES, " (its policy is already best-of-N)")
    if config.best_of_n < 2:
        raise ValueError(f"algo.best_of_n must be >= 2 for algo.name='qc' (N candidates to choose from), "
                         f"got {config.best_of_n!r}")


def init(key, obs_dim: int, chunk_shape, config: QCConfig, actor_params=None) -> QCState:
    horizon, act_dim = (int(c) for c in chunk_shape)
    k_actor, k_critic, k_state = jax.random.split(key, 3)
    if actor_params is None:
        actor_params = init_actor_params(config, k_actor, obs_dim, horizon * act_dim)
    critic = critic_lib.init_params(config, k_critic, obs_dim, horizon * act_dim)
    return QCState(actor=actor_params, actor_opt=actor_optimizer(config)[0].init(actor_params), critic=critic,
                   critic_target=critic, critic_opt=critic_lib.optimizer(config).init(critic),
                   step=jnp.zeros((), jnp.int32), key=k_state, config=config, chunk_shape=(horizon, act_dim))


def best_of_n(state: QCState, critic_params, obs, key, mode: str) -> jax.Array:
    """N base-policy chunks per observation, the one with the highest aggregated Q: (B, H, da)."""
    cfg, n = state.config, state.config.best_of_n
    obs_rep = jnp.repeat(obs, n, axis=0)
    cands = sample_actions(cfg, state.chunk_shape, state.actor, obs_rep, key, mode)          # (B*N, H, da)
    q = critic_lib.aggregate(critic_lib.values(cfg, critic_params, obs_rep, cands), cfg.target_aggregation)
    return critic_lib.select_best(q.reshape(obs.shape[0], n), cands.reshape(obs.shape[0], n, *state.chunk_shape))


def update(state: QCState, batch, success_batch=None):
    """Critic TD step with the best-of-N backup, then one BC step of the base policy. Pure."""
    cfg = swept(state)
    key, k_next, k_bc = jax.random.split(state.key, 3)
    # QC's code ranks the N candidates with the online critic; the target critics value the choice
    next_actions = best_of_n(state, state.critic, batch["next_obs"], k_next, cfg.rollout_mode)
    next_q = critic_lib.values(cfg, state.critic_target, batch["next_obs"], next_actions)
    target = critic_lib.chunk_target(cfg, batch, critic_lib.aggregate(next_q, cfg.target_aggregation))
    critic, critic_opt, metrics = critic_lib.td_step(cfg, state.critic, state.critic_opt, batch["obs"],
                                                     batch["actions"], target)
    actor, actor_opt, bc_metrics = base_bc_step(cfg, state.chunk_shape, state.actor, state.actor_opt, state.step,
                                                batch, success_batch, k_bc)
    metrics.update(bc_metrics)
    critic_target = common.polyak(state.critic_target, critic, cfg.critic_tau)
    return state.replace(actor=actor, actor_opt=actor_opt, critic=critic, critic_opt=critic_opt,
                         critic_target=critic_target, step=state.step + 1, key=key), metrics


@common.chunk_act("qc", ACT_MODES)
def act(state: QCState, obs, key, mode: str = "sde", actor: str | None = None) -> jax.Array:
    """Best-of-N chunks (online critic ranks N samples of the base sampler `mode`): obs (B, obs_dim)
    -> (B, H, da). QC has one actor: `actor` ('ema' | 'current') is accepted and ignored."""
    k_base, k_best = jax.random.split(key)
    return common.during_warmup(
        state.step, state.config.critic_warmup_updates,
        lambda: sample_actions(state.config, state.chunk_shape, state.actor, obs, k_base, mode),
        lambda: best_of_n(state, state.critic, obs, k_best, mode))


def policy_alone(state: QCState, obs, key, actor: str | None = None) -> jax.Array:
    """The flow's own ODE chunk, no best-of-N: obs (B, obs_dim) -> (B, H, da)."""
    del actor
    return sample_actions(state.config, state.chunk_shape, state.actor, obs, key, "ode")


ALGORITHM = Algorithm(name=NAME, description="QC: chunked critic + best-of-N sampling from the flow policy",
                      init=init, update=update, act=act, act_modes=ACT_MODES, check_config=check_config,
                      policy_alone=policy_alone, target_q=critic_lib.target_q,
                      config=QCConfig)
