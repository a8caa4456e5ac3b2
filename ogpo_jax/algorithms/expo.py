"""EXPO: expressive policy optimization (Dong et al. 2025, "EXPO: Stable Reinforcement Learning with
Expressive Policies"), on action chunks.

A base flow policy keeps imitating data (`base_bc_data`); a small tanh-Gaussian *edit* policy
pi_e(u | s, a) proposes a bounded change of a base chunk, a' = clip(a + edit_scale * u, -1, 1),
u in (-1, 1)^D, trained like a SAC actor: minimise alpha log pi_e(u | s, a) - Q(s, a') with the
temperature alpha tuned towards a target entropy. Acting and the TD target's next action use
*on-the-fly selection*: N base chunks and their N edits (2N candidates), the one with the highest
aggregated Q is taken. The base policy acts alone until `critic_warmup_updates` updates are done.

    state = init(key, obs_dim, chunk_shape, config, actor_params)
    state, metrics = update(state, batch, success_batch)
    chunk = act(state, obs, key, mode)     # 'sde': SDE base samples, sampled edits;
                                           # 'ode': ODE base samples, mean edits

Config fields it reads: `best_of_n` (N), `edit_scale`, `policy_hidden_dims`, `policy_lr`,
`sac_init_temperature`, `sac_target_entropy_scale`, `target_aggregation`, the critic fields,
`base_bc_data`, `actor_lr`. No entropy term in the TD target (the edit policy is an action
proposer, not the acting policy). Defaults of EXPO's code (Square): N = 8, edit scale 0.05, target
entropy -D/2, lr 3e-4, temperature 1.0; its base policy is a DDPM without chunking and its TD
target takes the min of 2 random heads of 10 (here `target_aggregation` over `num_critics`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from ogpo_jax.algorithms import common, sac
from ogpo_jax.algorithms import critic as critic_lib
from ogpo_jax.algorithms.actor import actor_optimizer, base_bc_step, init_actor_params, sample_actions
from ogpo_jax.algorithms.base import Algorithm
from ogpo_jax.algorithms.config import BaseFlowConfig, SACPolicyConfig, check_field, swept

NAME = "expo"
ACT_MODES = ("ode", "sde")


@dataclasses.dataclass(frozen=True)
class EXPOConfig(BaseFlowConfig, SACPolicyConfig):
    """EXPO: the base flow's BC data, SAC's edit policy (`SACPolicyConfig`) and the edit's scale."""
    name: str = NAME
    edit_scale: float = 0.05              # edited chunk = clip(a + scale * u), u in (-1, 1)^D

    def __post_init__(self):
        super().__post_init__()
        check_field(self, "edit_scale", self.edit_scale > 0 and math.isfinite(self.edit_scale), "> 0 and finite")


class EXPOState(common.AgentState, kw_only=True):
    actor: Any                 # base flow policy (velocity-field params)
    actor_opt: Any
    edit: Any                  # edit policy pi_e(u | s, a) params
    edit_opt: Any
    log_alpha: jax.Array       # SAC temperature of the edit policy (log)
    alpha_opt: Any
    critic: Any
    critic_target: Any
    critic_opt: Any
    config: EXPOConfig = struct.field(pytree_node=False)


def check_config(config: EXPOConfig) -> None:
    common.check_rollout_mode(config, "expo", ACT_MODES, " (its acting is already a selection among candidates)")


def init(key, obs_dim: int, chunk_shape, config: EXPOConfig, actor_params=None) -> EXPOState:
    horizon, act_dim = (int(c) for c in chunk_shape)
    dim = horizon * act_dim
    k_actor, k_edit, k_critic, k_state = jax.random.split(key, 4)
    if actor_params is None:
        actor_params = init_actor_params(config, k_actor, obs_dim, dim)
    edit = sac.policy_module(config, dim).init(k_edit, jnp.zeros((1, obs_dim)), jnp.zeros((1, dim)))["params"]
    critic = critic_lib.init_params(config, k_critic, obs_dim, dim)
    log_alpha, alpha_opt = sac.init_temperature(config)
    return EXPOState(actor=actor_params, actor_opt=actor_optimizer(config)[0].init(actor_params), edit=edit,
                     edit_opt=sac.policy_optimizer(config).init(edit), log_alpha=log_alpha, alpha_opt=alpha_opt,
                     critic=critic, critic_target=critic, critic_opt=critic_lib.optimizer(config).init(critic),
                     step=jnp.zeros((), jnp.int32), key=k_state, config=config, chunk_shape=(horizon, act_dim))


def edit_chunks(state: EXPOState, edit_params, obs, base, key=None):
    """Edited chunks clip(a + edit_scale * u, -1, 1): obs (B, obs_dim), base (B, D) -> (edited (B, D),
    log pi_e(u) (B,)). `key` None: the mean edit u = tanh(mean) (log-prob 0)."""
    cfg = state.config
    mean, log_std = sac.policy_module(cfg, state.action_dim).apply({"params": edit_params}, obs, base)
    if key is None:
        u, log_prob = jnp.tanh(mean), jnp.zeros(obs.shape[0])
    else:
        u, log_prob = sac.sample_tanh_gaussian(mean, log_std, key)
    return jnp.clip(base + cfg.edit_scale * u, -1.0, 1.0), log_prob


def on_the_fly(state: EXPOState, critic_params, obs, key, mode: str, sample_edits: bool = True) -> jax.Array:
    """On-the-fly selection: N base chunks per observation and their edits, the best of the 2N by
    aggregated Q. obs (B, obs_dim) -> (B, D)."""
    cfg, n, dim = state.config, state.config.best_of_n, state.action_dim
    k_base, k_edit = jax.random.split(key)
    obs_rep = jnp.repeat(obs, n, axis=0)
    base = sample_actions(cfg, state.chunk_shape, state.actor, obs_rep, k_base, mode).reshape(-1, dim)
    edited, _ = edit_chunks(state, state.edit, obs_rep, base, k_edit if sample_edits else None)
    cands = jnp.concatenate([base.reshape(-1, n, dim), edited.reshape(-1, n, dim)], axis=1)     # (B, 2N, D)
    obs_c = jnp.repeat(obs, 2 * n, axis=0)
    q = critic_lib.aggregate(critic_lib.values(cfg, critic_params, obs_c, cands.reshape(-1, dim)),
                             cfg.target_aggregation)
    return critic_lib.select_best(q.reshape(obs.shape[0], 2 * n), cands)


def edit_loss(params, state: EXPOState, obs, base, key):
    """SAC actor loss of the edit policy on base chunks: alpha log pi_e - Q(s, edited)."""
    cfg = swept(state)
    edited, log_prob = edit_chunks(state, params, obs, base, key)
    q = critic_lib.values(cfg, state.critic, obs, edited).mean(0)          # EXPO's code: mean of all heads
    alpha = jnp.exp(state.log_alpha)
    loss = jnp.mean(alpha * log_prob - q)
    return loss, (log_prob, {"edit/loss": loss, "edit/q_mean": q.mean(),
                             "edit/size": jnp.abs(edited - base).mean()})


def update(state: EXPOState, batch, success_batch=None):
    """Critic TD step (next chunk by on-the-fly selection under the target critics), an edit-policy
    step, its temperature, a BC step of the base policy. Pure."""
    cfg = swept(state)
    key, k_next, k_base, k_edit, k_bc = jax.random.split(state.key, 5)
    next_actions = on_the_fly(state, state.critic_target, batch["next_obs"], k_next, cfg.rollout_mode)
    next_q = critic_lib.values(cfg, state.critic_target, batch["next_obs"], next_actions)
    target = critic_lib.chunk_target(cfg, batch, critic_lib.aggregate(next_q, cfg.target_aggregation))
    critic, critic_opt, metrics = critic_lib.td_step(cfg, state.critic, state.critic_opt, batch["obs"],
                                                     batch["actions"], target)
    state = state.replace(critic=critic, critic_opt=critic_opt)

    obs = batch["obs"]
    base = jax.lax.stop_gradient(
        sample_actions(cfg, state.chunk_shape, state.actor, obs, k_base, cfg.rollout_mode).reshape(obs.shape[0], -1))
    (_, (log_prob, edit_metrics)), grads = jax.value_and_grad(edit_loss, has_aux=True)(state.edit, state, obs, base,
                                                                                        k_edit)
    updates, edit_opt = sac.policy_optimizer(cfg).update(grads, state.edit_opt, state.edit)
    edit = optax.apply_updates(state.edit, updates)
    log_alpha, alpha_opt, alpha_metrics = sac.temperature_step(cfg, state.log_alpha, state.alpha_opt, log_prob,
                                                               state.action_dim)
    metrics.update(edit_metrics, **alpha_metrics, **{"edit/grad_norm": common.tree_norm(grads)})

    actor, actor_opt, bc_metrics = base_bc_step(cfg, state.chunk_shape, state.actor, state.actor_opt, state.step,
                                                batch, success_batch, k_bc)
    metrics.update(bc_metrics)
    critic_target = common.polyak(state.critic_target, critic, cfg.critic_tau)
    return state.replace(actor=actor, actor_opt=actor_opt, edit=edit, edit_opt=edit_opt, log_alpha=log_alpha,
                         alpha_opt=alpha_opt, critic_target=critic_target, step=state.step + 1, key=key), metrics


@common.chunk_act("expo", ACT_MODES)
def act(state: EXPOState, obs, key, mode: str = "sde", actor: str | None = None) -> jax.Array:
    """On-the-fly selection with the online critic: obs (B, obs_dim) -> (B, H, da). EXPO has no EMA
    actor: `actor` is accepted and ignored."""
    return common.during_warmup(
        state.step, state.config.critic_warmup_updates,
        lambda: sample_actions(state.config, state.chunk_shape, state.actor, obs, key, mode),
        lambda: on_the_fly(state, state.critic, obs, key, mode, sample_edits=mode == "sde").reshape(
            obs.shape[0], *state.chunk_shape))


def policy_alone(state: EXPOState, obs, key, actor: str | None = None) -> jax.Array:
    """The base flow's ODE chunk moved by the edit policy's mean, no selection: obs (B, obs_dim) ->
    (B, H, da)."""
    del actor
    dim = state.action_dim
    base = sample_actions(state.config, state.chunk_shape, state.actor, obs, key, "ode").reshape(-1, dim)
    edited, _ = edit_chunks(state, state.edit, obs, base, None)
    return edited.reshape(obs.shape[0], *state.chunk_shape)


ALGORITHM = Algorithm(name=NAME, description="EXPO: base flow policy + bounded Gaussian edits, on-the-fly selection by Q",
                      init=init, update=update, act=act, act_modes=ACT_MODES, check_config=check_config,
                      policy_alone=policy_alone, target_q=critic_lib.target_q,
                      config=EXPOConfig)
