"""FQL: flow Q-learning (Park, Li, Levine 2025; code github.com/seohongpark/fql), on action chunks
(QC-FQL, Li, Zhou, Levine 2025, github.com/ColinQiyangLi/qc `acfql`).

Two policies: the base flow policy (velocity field, trained by flow-matching BC on data) and a
one-step policy mu(s, z) that maps Gaussian noise z straight to a chunk. mu is trained with

    loss(mu) = alpha * |mu(s, z) - ODE_flow(s, z)|^2  -  mean_heads Q(s, mu(s, z))

(distillation towards the flow's ODE map from the same noise, plus Q maximisation; the Q term
divided by the batch's mean |Q| when `fql_normalize_q_loss`, off in both codes' paper runs), the
flow by BC on `base_bc_data`. Defaults of QC-FQL's code: alpha 100 (robomimic scripts; FQL's own
tasks use 10-1000), 2 heads with mean targets, 10 flow steps, lr 3e-4, tau 0.005.
mu acts and gives the TD target's next action. The framework executes chunks, so FQL here is
QC-FQL: the critic values whole chunks with n-step targets; FQL without chunking is the same module
with `env.chunk_horizon = 1` (and a BC checkpoint of that horizon).

Offline FQL distils mu during offline pretraining. Starting from a flow BC checkpoint, mu starts
untrained: for the first `critic_warmup_updates` updates it is trained by distillation alone and
the flow policy acts (ODE or SDE as `mode` says); after that mu acts and the Q term is on.

    state = init(key, obs_dim, chunk_shape, config, actor_params)
    state, metrics = update(state, batch, success_batch)
    chunk = act(state, obs, key, mode)     # 'ode' | 'sde': mu(s, z), z ~ N(0, I), in both

Config fields it reads: `fql_alpha`, `fql_normalize_q_loss`, `target_aggregation` (FQL's q_agg),
the critic fields, `base_bc_data`, `actor_hidden_dims` (mu has the flow's widths), `actor_lr`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from ogpo_jax.algorithms import common
from ogpo_jax.algorithms import critic as critic_lib
from ogpo_jax.algorithms.actor import actor_apply, actor_optimizer, base_bc_step, init_actor_params, sample_actions
from ogpo_jax.algorithms.base import Algorithm
from ogpo_jax.algorithms.config import BaseFlowConfig, check_field, swept
from ogpo_jax import gcp
from ogpo_jax.networks import OneStepPolicy

NAME = "fql"
ACT_MODES = ("ode", "sde")


@dataclasses.dataclass(frozen=True)
class FQLConfig(BaseFlowConfig):
    """FQL: the base flow's BC data plus the one-step policy's distillation weight."""
    name: str = NAME
    fql_alpha: float = 100.0              # weight of the one-step policy's distillation loss
    fql_normalize_q_loss: bool = False    # divide the -Q term by the batch's mean |Q|

    def __post_init__(self):
        super().__post_init__()
        check_field(self, "fql_alpha", self.fql_alpha >= 0 and math.isfinite(self.fql_alpha), ">= 0 and finite")


class FQLState(common.AgentState, kw_only=True):
    actor: Any                 # base flow policy (velocity-field params)
    onestep: Any               # one-step policy mu(s, z) params
    actor_opt: Any
    onestep_opt: Any
    critic: Any
    critic_target: Any
    critic_opt: Any
    config: FQLConfig = struct.field(pytree_node=False)


def check_config(config: FQLConfig) -> None:
    common.check_rollout_mode(config, "fql", ACT_MODES)


def onestep_module(config: FQLConfig, action_dim: int) -> OneStepPolicy:
    return OneStepPolicy(action_dim, config.actor_hidden_dims)


def init(key, obs_dim: int, chunk_shape, config: FQLConfig, actor_params=None) -> FQLState:
    horizon, act_dim = (int(c) for c in chunk_shape)
    dim = horizon * act_dim
    k_actor, k_one, k_critic, k_state = jax.random.split(key, 4)
    if actor_params is None:
        actor_params = init_actor_params(config, k_actor, obs_dim, dim)
    onestep = onestep_module(config, dim).init(k_one, jnp.zeros((1, obs_dim)), jnp.zeros((1, dim)))["params"]
    critic = critic_lib.init_params(config, k_critic, obs_dim, dim)
    tx = actor_optimizer(config)[0]
    return FQLState(actor=actor_params, onestep=onestep, actor_opt=tx.init(actor_params),
                    onestep_opt=tx.init(onestep), critic=critic, critic_target=critic,
                    critic_opt=critic_lib.optimizer(config).init(critic), step=jnp.zeros((), jnp.int32),
                    key=k_state, config=config, chunk_shape=(horizon, act_dim))


def onestep_actions(state: FQLState, params, obs, z) -> jax.Array:
    """mu(s, z) clipped to the action box: obs (B, obs_dim), z (B, D) -> (B, D)."""
    out = onestep_module(state.config, state.action_dim).apply({"params": params}, obs, z)
    return jnp.clip(out, -1.0, 1.0)


def distillation_loss(state: FQLState, params, obs, z) -> jax.Array:
    """Mean squared distance between mu(s, z) (unclipped) and the flow's ODE map of the same z
    (a constant target: no gradient into the flow)."""
    target = jax.lax.stop_gradient(gcp.integrate_ode(actor_apply(state.config, state.action_dim), state.actor,
                                                      obs, z, state.config.gcp_spec))
    out = onestep_module(state.config, state.action_dim).apply({"params": params}, obs, z)
    return jnp.mean(jnp.square(out - target))


def onestep_loss(params, state: FQLState, obs, z, q_weight):
    """alpha * distillation - q_weight * Q(s, mu(s, z)) / mean|Q| (normalised when configured)."""
    cfg = swept(state)
    distill = distillation_loss(state, params, obs, z)
    q = critic_lib.values(cfg, state.critic, obs, onestep_actions(state, params, obs, z)).mean(0)
    q_loss = -q.mean()
    if state.config.fql_normalize_q_loss:
        q_loss = q_loss / jax.lax.stop_gradient(jnp.abs(q).mean() + 1e-8)
    loss = cfg.fql_alpha * distill + q_weight * q_loss
    return loss, {"actor/distill_loss": distill, "actor/q_loss": q_loss, "actor/q_mean": q.mean()}


def update(state: FQLState, batch, success_batch=None):
    """Critic TD step (next chunk from mu), a BC step of the flow, a step of mu. Pure."""
    cfg = swept(state)
    key, k_next, k_bc, k_z = jax.random.split(state.key, 4)
    next_obs = batch["next_obs"]
    z_next = jax.random.normal(k_next, (next_obs.shape[0], state.action_dim))
    next_actions = common.during_warmup(      # the policy that acts: the flow's ODE map until mu is distilled
        state.step, cfg.critic_warmup_updates,
        lambda: gcp.integrate_ode(actor_apply(cfg, state.action_dim), state.actor, next_obs, z_next, cfg.gcp_spec),
        lambda: onestep_actions(state, state.onestep, next_obs, z_next))
    next_q = critic_lib.values(cfg, state.critic_target, next_obs, next_actions)
    target = critic_lib.chunk_target(cfg, batch, critic_lib.aggregate(next_q, cfg.target_aggregation))
    critic, critic_opt, metrics = critic_lib.td_step(cfg, state.critic, state.critic_opt, batch["obs"],
                                                     batch["actions"], target)
    tx, schedule = actor_optimizer(cfg)
    actor, actor_opt, bc_metrics = base_bc_step(cfg, state.chunk_shape, state.actor, state.actor_opt, state.step,
                                                batch, success_batch, k_bc)
    if bc_metrics:
        metrics.update({"flow/bc_loss": bc_metrics["actor/bc_loss"], "flow/grad_norm": bc_metrics["actor/grad_norm"]})
    obs = batch["obs"]
    z = jax.random.normal(k_z, (obs.shape[0], state.action_dim))
    q_weight = jnp.where(state.step >= cfg.critic_warmup_updates, 1.0, 0.0)
    (loss, one_metrics), grads = jax.value_and_grad(onestep_loss, has_aux=True)(state.onestep, state, obs, z, q_weight)
    updates, onestep_opt = tx.update(grads, state.onestep_opt, state.onestep)
    onestep = optax.apply_updates(state.onestep, updates)
    metrics.update(one_metrics, **{"actor/loss": loss, "actor/grad_norm": common.tree_norm(grads),
                                   "actor/lr": schedule(state.step)})
    critic_target = common.polyak(state.critic_target, critic, cfg.critic_tau)
    return state.replace(actor=actor, actor_opt=actor_opt, onestep=onestep, onestep_opt=onestep_opt, critic=critic,
                         critic_opt=critic_opt, critic_target=critic_target, step=state.step + 1, key=key), metrics


@common.chunk_act("fql", ACT_MODES)
def act(state: FQLState, obs, key, mode: str = "sde", actor: str | None = None) -> jax.Array:
    """Chunks of mu(s, z), z ~ N(0, I) (the flow's sampler `mode` during the warm-up): obs
    (B, obs_dim) -> (B, H, da). FQL has no EMA actor: `actor` is accepted and ignored."""
    z = jax.random.normal(key, (obs.shape[0], state.action_dim))
    return common.during_warmup(
        state.step, state.config.critic_warmup_updates,
        lambda: sample_actions(state.config, state.chunk_shape, state.actor, obs, key, mode),
        lambda: onestep_actions(state, state.onestep, obs, z).reshape(obs.shape[0], *state.chunk_shape))


ALGORITHM = Algorithm(name=NAME, description="FQL (QC-FQL on chunks): one-step policy distilled from the flow + Q",
                      init=init, update=update, act=act, act_modes=ACT_MODES, check_config=check_config,
                      target_q=critic_lib.target_q,
                      config=FQLConfig)
