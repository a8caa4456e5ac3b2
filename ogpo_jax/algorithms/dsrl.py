"""DSRL: diffusion steering by RL in the noise space of a frozen generative policy (Wagenmaker et
al. 2025, "Steering Your Diffusion Policy with Latent Space Reinforcement Learning"), the noise-
aliasing variant DSRL-NA, on action chunks.

The base flow policy is frozen; its deterministic ODE map a = f(s, w) from initial noise w is the
"environment" of a SAC agent whose actions are noises w = b tanh(x) in [-b, b]^D
(`noise_action_bound` b). Two critics:

    Q^A(s, a)   chunked ensemble on executed chunks, n-step TD with next chunk f(s', w'), w' ~ pi(s')
    Q^W(s, w)   ensemble on noises, regressed onto mean-or-min-heads Q^A(s, f(s, w)) for w ~ N(0, I)
                (noise aliasing: every noise that maps to a good chunk is valued as good, also
                noises the policy never took)

and the noise policy minimises alpha log pi(w | s) - Q^W(s, w), alpha tuned to a target entropy.
The base policy acts alone (w ~ N(0, I), the BC policy's own ODE sampler) until
`critic_warmup_updates` updates are done.

    state = init(key, obs_dim, chunk_shape, config, actor_params)
    state, metrics = update(state, batch, success_batch)
    chunk = act(state, obs, key, mode)   # 'sde': w ~ pi; 'ode': w = b tanh(mean);
                                         # 'best_of_n': N noises ~ pi, best f(s, w) by Q^A

Config fields it reads: `noise_action_bound`, `policy_hidden_dims`, `policy_lr`,
`sac_init_temperature`, `sac_target_entropy_scale`, `best_of_n`, `target_aggregation`, the
critic fields (both critics). The base policy's own fields (`flow_steps`, widths) define f.
Defaults of DSRL's robomimic configs: 2 heads aggregated by min, soft (entropy) TD backup,
temperature 1.0 learned towards target entropy 0, lr 3e-4, tau 0.005, 20 updates per env step,
noise bound 1 for DSRL-NA (1.5 for its plain-SAC variant), 3x2048 tanh networks with LayerNorm
(here the task's critic widths and `policy_hidden_dims`), a deterministic 8-step DDIM base.
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
from ogpo_jax.algorithms.actor import actor_apply, init_actor_params
from ogpo_jax.algorithms.base import Algorithm
from ogpo_jax.algorithms.config import SACPolicyConfig, check_field, swept
from ogpo_jax import gcp

NAME = "dsrl"
ACT_MODES = ("ode", "sde", "best_of_n")


@dataclasses.dataclass(frozen=True)
class DSRLConfig(SACPolicyConfig):
    """DSRL: SAC's noise policy (`SACPolicyConfig`) acting in [-b, b]^D of the flow's noise space."""
    name: str = NAME
    noise_action_bound: float = 1.0       # noise-space actions in [-b, b]^D

    def __post_init__(self):
        super().__post_init__()
        check_field(self, "noise_action_bound", self.noise_action_bound > 0 and math.isfinite(self.noise_action_bound),
                    "> 0 and finite")


class DSRLState(common.AgentState, kw_only=True):
    actor: Any                 # frozen base flow policy (velocity-field params)
    noise_policy: Any          # pi(w | s) params
    noise_policy_opt: Any
    log_alpha: jax.Array
    alpha_opt: Any
    critic: Any                # Q^A(s, chunk) ensemble
    critic_target: Any
    critic_opt: Any
    noise_critic: Any          # Q^W(s, w) ensemble
    noise_critic_opt: Any
    config: DSRLConfig = struct.field(pytree_node=False)


def check_config(config: DSRLConfig) -> None:
    common.check_rollout_mode(config, "dsrl", ACT_MODES)


def init(key, obs_dim: int, chunk_shape, config: DSRLConfig, actor_params=None) -> DSRLState:
    horizon, act_dim = (int(c) for c in chunk_shape)
    dim = horizon * act_dim
    k_actor, k_pi, k_qa, k_qw, k_state = jax.random.split(key, 5)
    if actor_params is None:
        actor_params = init_actor_params(config, k_actor, obs_dim, dim)
    pi = sac.policy_module(config, dim).init(k_pi, jnp.zeros((1, obs_dim)))["params"]
    q_a = critic_lib.init_params(config, k_qa, obs_dim, dim)
    q_w = critic_lib.init_params(config, k_qw, obs_dim, dim)
    log_alpha, alpha_opt = sac.init_temperature(config)
    tx = critic_lib.optimizer(config)
    return DSRLState(actor=actor_params, noise_policy=pi, noise_policy_opt=sac.policy_optimizer(config).init(pi),
                     log_alpha=log_alpha, alpha_opt=alpha_opt, critic=q_a, critic_target=q_a,
                     critic_opt=tx.init(q_a), noise_critic=q_w, noise_critic_opt=tx.init(q_w),
                     step=jnp.zeros((), jnp.int32), key=k_state, config=config, chunk_shape=(horizon, act_dim))


def base_map(state: DSRLState, obs, w) -> jax.Array:
    """The frozen policy's ODE map f(s, w): obs (B, obs_dim), noise (B, D) -> chunk (B, D)."""
    return gcp.integrate_ode(actor_apply(state.config, state.action_dim), state.actor, obs, w, state.config.gcp_spec)


def noise_actions(state: DSRLState, params, obs, key=None):
    """Noise actions w = b tanh(x) of pi(. | s): -> (w (B, D), log pi(w) (B,)). `key` None: the
    mean noise b tanh(mean) (log-prob 0). The log-density is of tanh(x); the constant -D log b of
    the scaling does not change any gradient."""
    mean, log_std = sac.policy_module(state.config, state.action_dim).apply({"params": params}, obs)
    if key is None:
        u, log_prob = jnp.tanh(mean), jnp.zeros(obs.shape[0])
    else:
        u, log_prob = sac.sample_tanh_gaussian(mean, log_std, key)
    return state.config.noise_action_bound * u, log_prob


def noise_policy_loss(params, state: DSRLState, obs, key):
    cfg = swept(state)
    w, log_prob = noise_actions(state, params, obs, key)
    q = critic_lib.aggregate(critic_lib.values(cfg, state.noise_critic, obs, w), cfg.target_aggregation)
    loss = jnp.mean(jnp.exp(state.log_alpha) * log_prob - q)
    return loss, (log_prob, {"noise_policy/loss": loss, "noise_policy/q_mean": q.mean(),
                             "noise_policy/w_abs_mean": jnp.abs(w).mean()})


def update(state: DSRLState, batch, success_batch=None):
    """Q^A TD step, Q^W aliasing step, noise-policy step, temperature, Q^A Polyak. Pure."""
    cfg = swept(state)
    key, k_next, k_alias, k_pi = jax.random.split(state.key, 4)
    next_obs = batch["next_obs"]
    w_next, next_log_prob = noise_actions(state, state.noise_policy, next_obs, k_next)
    next_q = critic_lib.values(cfg, state.critic_target, next_obs, base_map(state, next_obs, w_next))
    # SAC's soft backup, as DSRL's code: the next value carries the noise policy's entropy bonus
    next_v = critic_lib.aggregate(next_q, cfg.target_aggregation) - jnp.exp(state.log_alpha) * next_log_prob
    target = critic_lib.chunk_target(cfg, batch, next_v)
    critic, critic_opt, metrics = critic_lib.td_step(cfg, state.critic, state.critic_opt, batch["obs"],
                                                     batch["actions"], target)
    state = state.replace(critic=critic, critic_opt=critic_opt)

    obs = batch["obs"]
    w = jax.random.normal(k_alias, (obs.shape[0], state.action_dim))
    alias_target = critic_lib.aggregate(critic_lib.values(cfg, critic, obs, base_map(state, obs, w)),
                                        cfg.target_aggregation)
    noise_critic, noise_critic_opt, qw_metrics = critic_lib.td_step(cfg, state.noise_critic, state.noise_critic_opt,
                                                                    obs, w, alias_target)
    state = state.replace(noise_critic=noise_critic, noise_critic_opt=noise_critic_opt)
    metrics.update({"noise_critic/loss": qw_metrics["critic/loss"], "noise_critic/q_mean": qw_metrics["critic/q_mean"]})

    (_, (log_prob, pi_metrics)), grads = jax.value_and_grad(noise_policy_loss, has_aux=True)(
        state.noise_policy, state, obs, k_pi)
    updates, pi_opt = sac.policy_optimizer(cfg).update(grads, state.noise_policy_opt, state.noise_policy)
    pi = optax.apply_updates(state.noise_policy, updates)
    log_alpha, alpha_opt, alpha_metrics = sac.temperature_step(cfg, state.log_alpha, state.alpha_opt, log_prob,
                                                               state.action_dim)
    metrics.update(pi_metrics, **alpha_metrics, **{"noise_policy/grad_norm": common.tree_norm(grads)})
    critic_target = common.polyak(state.critic_target, critic, cfg.critic_tau)
    return state.replace(noise_policy=pi, noise_policy_opt=pi_opt, log_alpha=log_alpha, alpha_opt=alpha_opt,
                         critic_target=critic_target, step=state.step + 1, key=key), metrics


@common.chunk_act("dsrl", ACT_MODES)
def act(state: DSRLState, obs, key, mode: str = "sde", actor: str | None = None) -> jax.Array:
    """Chunks f(s, w) for noises chosen by `mode`: obs (B, obs_dim) -> (B, H, da). The base policy
    is frozen (one actor): `actor` is accepted and ignored."""
    cfg, batch, dim = state.config, obs.shape[0], state.action_dim

    def steered():
        if mode == "ode":
            return base_map(state, obs, noise_actions(state, state.noise_policy, obs)[0])
        if mode == "sde":
            return base_map(state, obs, noise_actions(state, state.noise_policy, obs, key)[0])
        obs_rep = jnp.repeat(obs, cfg.best_of_n, axis=0)
        cands = base_map(state, obs_rep, noise_actions(state, state.noise_policy, obs_rep, key)[0])
        q = critic_lib.aggregate(critic_lib.values(cfg, state.critic, obs_rep, cands), cfg.target_aggregation)
        return critic_lib.select_best(q.reshape(batch, cfg.best_of_n), cands.reshape(batch, cfg.best_of_n, dim))

    chunks = common.during_warmup(state.step, cfg.critic_warmup_updates,
                                  lambda: base_map(state, obs, jax.random.normal(key, (batch, dim))), steered)
    return chunks.reshape(batch, *state.chunk_shape)


def candidates(state: DSRLState, obs, key, actor: str | None = None) -> jax.Array:
    """Selection candidates: the flow's chunks of noises drawn from the noise policy (its 'ode'
    chunk, the mean noise's, is the same for every key)."""
    return act(state, obs, key, "sde", actor)


ALGORITHM = Algorithm(name=NAME, description="DSRL-NA: SAC in the noise space of the frozen flow policy",
                      init=init, update=update, act=act, act_modes=ACT_MODES, check_config=check_config,
                      target_q=critic_lib.target_q, candidates=candidates,
                      config=DSRLConfig)
