"""ReinFlow: on-policy PPO for flow policies with learned noise injection (Zhang et al. 2025; code
github.com/ReinFlow/ReinFlow).

The flow's K Euler steps become a Markov chain by adding Gaussian noise whose per-dimension std
comes from a small network sigma(s, x_k, t_k) squashed into [reinflow_min_std, reinflow_max_std]:

    x_{k+1} ~ N(x_k + v_theta(s, x_k, t_k) / K, sigma(s, x_k, t_k)^2),   x_0 ~ N(0, I)

so the whole chain has an exact log-probability (sum of the K step densities and the initial
noise's, divided by (K + 1) and by D). PPO with one ratio per chain (against the rollout's
policy), clip `clip_epsilon`, an entropy bonus `entropy_coeff` x the chain's Gaussian entropy
(same normalization), GAE over chunk steps with a value net V(s), `ppo_epochs` minibatch passes.
Velocity field and noise net share the actor optimizer. Evaluation uses the noiseless Euler ODE.

Defaults of ReinFlow's robomimic configs: K = 1-4 (`flow_steps`), std in [0.08, 0.14], entropy
0.01, clip 0.01, 10 epochs, gamma 0.999, lambda 0.95, actor lr 2e-5 (Can) - 4.5e-5, critic lr
~5e-4; its noise net reads the state (and, for Transport, the flow time); here it reads
(s, x_k, t_k).

    state = init(key, obs_dim, chunk_shape, config, actor_params)
    state, metrics = update(state, rollout, None)
    chunk = act(state, obs, key, mode)     # 'sde' (noisy chain, rollouts) | 'ode' (evaluation)
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from ogpo_jax.algorithms import common, onpolicy
from ogpo_jax.algorithms.actor import actor_apply, actor_optimizer, init_actor_params
from ogpo_jax.algorithms.base import Algorithm
from ogpo_jax.algorithms.config import POLICY_HIDDEN_DIMS, OnPolicyConfig, check_field, swept
from ogpo_jax.algorithms.extraction import clipped_surrogate
from ogpo_jax.gcp import flow
from ogpo_jax.networks import NoiseStd

NAME = "reinflow"
ACT_MODES = ("ode", "sde")


@dataclasses.dataclass(frozen=True)
class ReinFlowConfig(OnPolicyConfig):
    """ReinFlow: the on-policy PPO fields plus its noise net's widths, std bounds and entropy bonus."""
    name: str = NAME
    policy_hidden_dims: tuple = POLICY_HIDDEN_DIMS   # the noise-std net's widths
    reinflow_min_std: float = 0.08        # learned noise std bounds
    reinflow_max_std: float = 0.14
    entropy_coeff: float = 0.0            # weight of the chain's Gaussian entropy bonus

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "policy_hidden_dims", tuple(int(w) for w in self.policy_hidden_dims))
        check_field(self, "policy_hidden_dims", len(self.policy_hidden_dims) >= 1 and min(self.policy_hidden_dims) >= 1,
                    "a non-empty sequence of positive widths")
        check_field(self, "reinflow_min_std", 0.0 < self.reinflow_min_std <= self.reinflow_max_std,
                    f"in (0, reinflow_max_std={self.reinflow_max_std}]")
        check_field(self, "entropy_coeff", self.entropy_coeff >= 0, ">= 0")


class ReinFlowState(common.AgentState, kw_only=True):
    actor: Any                 # {'velocity': velocity-field params, 'noise': noise-net params}
    actor_opt: Any
    value: Any
    value_opt: Any
    config: ReinFlowConfig = struct.field(pytree_node=False)


def check_config(config: ReinFlowConfig) -> None:
    if config.rollout_mode != "sde":
        raise ValueError(f"algo.rollout_mode must be 'sde' for algo.name='reinflow' (on-policy: the rollouts "
                         f"are the noisy chain PPO reweights), got {config.rollout_mode!r}")
    if config.policy != "flow":
        raise ValueError(f"algo.policy must be 'flow' for algo.name='reinflow' (its noise net perturbs the "
                         f"flow's Euler steps), got {config.policy!r}")


def noise_module(config: ReinFlowConfig, action_dim: int) -> NoiseStd:
    return NoiseStd(action_dim, config.policy_hidden_dims, config.time_emb_dim, config.reinflow_min_std,
                    config.reinflow_max_std)


def init(key, obs_dim: int, chunk_shape, config: ReinFlowConfig, actor_params=None) -> ReinFlowState:
    """`actor_params`: a BC velocity field (the noise net starts fresh), or the {'velocity', 'noise'}
    pair of a ReinFlow state."""
    horizon, act_dim = (int(c) for c in chunk_shape)
    dim = horizon * act_dim
    k_actor, k_noise, k_value, k_state = jax.random.split(key, 4)
    if actor_params is None:
        actor_params = init_actor_params(config, k_actor, obs_dim, dim)
    if not (isinstance(actor_params, dict) and set(actor_params) == {"velocity", "noise"}):
        noise = noise_module(config, dim).init(k_noise, jnp.zeros((1, obs_dim)), jnp.zeros((1, dim)),
                                               jnp.zeros((1,)))["params"]
        actor_params = {"velocity": actor_params, "noise": noise}
    value = onpolicy.init_value(config, k_value, obs_dim)
    return ReinFlowState(actor=actor_params, actor_opt=actor_optimizer(config)[0].init(actor_params), value=value,
                         value_opt=onpolicy.value_optimizer(config).init(value), step=jnp.zeros((), jnp.int32),
                         key=k_state, config=config, chunk_shape=(horizon, act_dim))


def _fields(state: ReinFlowState):
    velocity = actor_apply(state.config, state.action_dim)
    noise = noise_module(state.config, state.action_dim)
    return velocity, lambda p, obs, x, t: noise.apply({"params": p}, obs, x, t)


def sample_chain(state: ReinFlowState, params, obs, key):
    """obs (B, obs_dim) -> (chain (B, K+1, D), actions (B, D) clipped to [-1, 1])."""
    velocity, noise = _fields(state)
    k_steps = state.config.flow_steps
    k0, k_rest = jax.random.split(key)
    x0 = jax.random.normal(k0, (obs.shape[0], state.action_dim), obs.dtype)
    times = jnp.arange(k_steps, dtype=jnp.float32) / k_steps

    def step(x, inputs):
        t, k = inputs
        mean = x + velocity(params["velocity"], obs, x, t) / k_steps
        std = noise(params["noise"], obs, x, t)
        x_next = mean + std * jax.random.normal(k, x.shape, x.dtype)
        return x_next, x_next

    x_final, xs = jax.lax.scan(step, x0, (times, jax.random.split(k_rest, k_steps)))
    chain = jnp.concatenate([x0[:, None], jnp.swapaxes(xs, 0, 1)], axis=1)
    return chain, jnp.clip(x_final, -1.0, 1.0)


def chain_log_prob(state: ReinFlowState, params, obs, chain):
    """-> (normalized log-probability (B,), normalized Gaussian entropy of the steps (B,)) of stored
    chains under `params`; all K steps in one batched network call."""
    velocity, noise = _fields(state)
    batch, length, dim = chain.shape
    k_steps = length - 1
    x = chain[:, :-1].reshape(batch * k_steps, dim)
    x_next = chain[:, 1:].reshape(batch * k_steps, dim)
    t = jnp.tile(jnp.arange(k_steps, dtype=jnp.float32) / k_steps, batch)
    obs_rep = jnp.repeat(obs, k_steps, axis=0)
    mean = x + velocity(params["velocity"], obs_rep, x, t) / k_steps
    std = noise(params["noise"], obs_rep, x, t)
    step_lp = (-0.5 * jnp.square((x_next - mean) / std) - jnp.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)
    lp = step_lp.reshape(batch, k_steps).sum(-1) + (-0.5 * jnp.square(chain[:, 0]) - 0.5 * math.log(2 * math.pi)).sum(-1)
    entropy = (jnp.log(std) + 0.5 * math.log(2 * math.pi * math.e)).sum(-1).reshape(batch, k_steps).sum(-1)
    scale = (k_steps + 1) * dim
    return lp / scale, entropy / scale


@common.chunk_act("reinflow", ACT_MODES)
def act(state: ReinFlowState, obs, key, mode: str = "sde", actor: str | None = None) -> jax.Array:
    """obs (B, obs_dim) -> (B, H, da); one actor (`actor` accepted and ignored)."""
    if mode == "ode":
        velocity, _ = _fields(state)
        out = flow.sample_ode(velocity, state.actor["velocity"], obs, key, state.config.gcp_spec, state.action_dim)
    else:
        out = sample_chain(state, state.actor, obs, key)[1]
    return out.reshape(obs.shape[0], *state.chunk_shape)


def policy_loss(params, state: ReinFlowState, mb):
    cfg = swept(state)
    lp, entropy = chain_log_prob(state, params, mb["obs"], mb["chain"])
    ratio = jnp.exp(lp - mb["old_lp"])
    eps = cfg.clip_epsilon
    surrogate = clipped_surrogate(ratio, mb["adv"], 1.0 - eps, 1.0 + eps)
    w, n = mb["weight"], jnp.maximum(mb["weight"].sum(), 1.0)
    pg = -(surrogate * w).sum() / n
    ent = (entropy * w).sum() / n
    return pg - cfg.entropy_coeff * ent, {
        "actor/ppo_loss": pg, "actor/entropy": ent, "actor/clip_frac": ((jnp.abs(ratio - 1.0) > eps) * w).sum() / n,
        "actor/ratio_max": jnp.where(w > 0, ratio, 0.0).max(),
        "actor/approx_kl": ((ratio - 1.0 - jnp.log(ratio)) * w).sum() / n}


def update(state: ReinFlowState, rollout, success_batch=None):
    """One PPO phase on a full rollout (chains regenerated from the act keys). Pure."""
    return onpolicy.ppo_phase(state, rollout, lambda o, k: sample_chain(state, state.actor, o, k)[0], lambda o, c: chain_log_prob(state, state.actor, o, c)[0], policy_loss)

ALGORITHM = Algorithm(name=NAME, description="ReinFlow: on-policy PPO of the flow with a learned noise-injection net",
                      init=init, update=update, act=act, act_modes=ACT_MODES, check_config=check_config,
                      on_policy=True,
                      config=ReinFlowConfig)
