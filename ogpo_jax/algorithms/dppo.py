"""DPPO: diffusion policy policy optimization (Ren et al. 2024; code github.com/irom-princeton/dppo),
on the generative policy's stochastic sampler (DPPO's two-level MDP: environment steps x denoising
steps): the flow policy (DPPO's "flow" variant) or, with `algo.policy='diffusion'`, the DDPM policy
of `gcp/diffusion.py` (DPPO's own: eps prediction, DDIM/DDPM steps with the std floored at
`noise_std`).

On-policy: the loop collects `rollout_iterations` chunks from every env with the SDE sampler, then
`update` runs `ppo_epochs` passes of minibatches over them. Each denoising step k of a chain is a
PPO sample of its own: its ratio exp(log pi_theta(x_{k+1} | x_k, s) - log pi_old(...)) (Gaussian
step log-densities, `gcp.step_log_probs`), its advantage the chunk's GAE advantage times
gamma_denoising^(K - 1 - k), its clip epsilon growing exponentially from `dppo_clip_early` (the
earliest finetuned step) to `clip_epsilon` (the last). A value net V(s) gives GAE over chunk steps.
With `dppo_ft_steps = k < K` only the last k denoising steps are finetuned; the earlier ones keep
the frozen BC velocity field (DPPO's `ft_denoising_steps`).

DPPO's exploration comes from the sampler's noise: its code clips the DDPM step std below at 0.1
(`min_sampling_denoising_std`); the preset sets `noise_std` 0.1 (flow: constant step std;
diffusion: the floor of the DDPM step std).
Defaults of DPPO's robomimic state configs: 10 epochs, clip 0.01 (last step) / 0.001 (earliest),
rate 3, gamma_denoising 0.99, GAE lambda 0.95, gamma 0.999, actor lr 1e-4, critic lr 1e-3,
rollouts of 50 envs x 300-400 steps (K = 20 DDPM steps, 10 finetuned).

    state = init(key, obs_dim, chunk_shape, config, actor_params)
    state, metrics = update(state, rollout, None)
    chunk = act(state, obs, key, mode)     # 'sde' (rollouts) | 'ode' (evaluation)
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from ogpo_jax.algorithms import common, onpolicy
from ogpo_jax.algorithms.actor import actor_apply, actor_optimizer, init_actor_params
from ogpo_jax.algorithms.base import Algorithm
from ogpo_jax.algorithms.config import OnPolicyConfig, check_field, swept
from ogpo_jax.algorithms.extraction import clipped_surrogate
from ogpo_jax import gcp

NAME = "dppo"
ACT_MODES = ("ode", "sde")


@dataclasses.dataclass(frozen=True)
class DPPOConfig(OnPolicyConfig):
    """DPPO: the on-policy PPO fields plus which denoising steps are finetuned and how they are
    discounted and clipped."""
    name: str = NAME
    dppo_ft_steps: int = 0                # finetune only the last k denoising steps (0 = all K)
    dppo_gamma_denoising: float = 0.99    # step k's advantage x gamma^(K - 1 - k)
    dppo_clip_early: float = 0.001        # clip of the earliest finetuned step (clip_epsilon: the last)
    dppo_clip_rate: float = 3.0           # exponential interpolation rate between the two

    def __post_init__(self):
        super().__post_init__()
        check_field(self, "dppo_ft_steps", 0 <= self.dppo_ft_steps <= self.flow_steps,
                    f"in [0, flow_steps={self.flow_steps}]")
        check_field(self, "dppo_gamma_denoising", 0.0 < self.dppo_gamma_denoising <= 1.0, "in (0, 1]")
        check_field(self, "dppo_clip_early", 0.0 < self.dppo_clip_early <= self.clip_epsilon,
                    f"in (0, clip_epsilon={self.clip_epsilon}]")
        check_field(self, "dppo_clip_rate", self.dppo_clip_rate > 0, "> 0")


class DPPOState(common.AgentState, kw_only=True):
    actor: Any                 # finetuned velocity field
    actor_opt: Any
    value: Any                 # V(s)
    value_opt: Any
    actor_base: Any = None     # frozen BC field of the first K - dppo_ft_steps steps (None: all finetuned)
    config: DPPOConfig = struct.field(pytree_node=False)


def check_config(config: DPPOConfig) -> None:
    if config.rollout_mode != "sde":
        raise ValueError(f"algo.rollout_mode must be 'sde' for algo.name='dppo' (on-policy: the rollouts "
                         f"are the sampler whose step log-probs PPO reweights), got {config.rollout_mode!r}")


def ft_steps(config: DPPOConfig) -> int:
    return config.dppo_ft_steps or config.flow_steps


def init(key, obs_dim: int, chunk_shape, config: DPPOConfig, actor_params=None) -> DPPOState:
    horizon, act_dim = (int(c) for c in chunk_shape)
    k_actor, k_value, k_state = jax.random.split(key, 3)
    if actor_params is None:
        actor_params = init_actor_params(config, k_actor, obs_dim, horizon * act_dim)
    value = onpolicy.init_value(config, k_value, obs_dim)
    base = actor_params if ft_steps(config) < config.flow_steps else None
    return DPPOState(actor=actor_params, actor_opt=actor_optimizer(config)[0].init(actor_params), value=value,
                     value_opt=onpolicy.value_optimizer(config).init(value), step=jnp.zeros((), jnp.int32),
                     key=k_state, config=config, chunk_shape=(horizon, act_dim), actor_base=base)


def velocity_fn(state: DPPOState):
    """apply_fn(params, obs, x, t): the finetuned field at the last `dppo_ft_steps` steps, the
    frozen BC field before them."""
    apply_fn = actor_apply(state.config, state.action_dim)
    if state.actor_base is None:
        return apply_fn
    t_ft = (state.config.flow_steps - ft_steps(state.config)) / state.config.flow_steps - 1e-6

    def mixed(params, obs, x, t):
        late = jnp.asarray(t) >= t_ft
        late = late[..., None] if late.ndim else late
        return jnp.where(late, apply_fn(params, obs, x, t), apply_fn(state.actor_base, obs, x, t))

    return mixed


def clip_schedule(config: DPPOConfig) -> jax.Array:
    """Per-denoising-step clip epsilon (K,): 0 for frozen steps, exponential from dppo_clip_early
    (earliest finetuned step) to clip_epsilon (last step)."""
    k, ft = config.flow_steps, ft_steps(config)
    j = jnp.arange(ft, dtype=jnp.float32)
    if ft == 1:
        eps = jnp.full((1,), config.clip_epsilon)
    else:
        growth = (jnp.exp(config.dppo_clip_rate * j / (ft - 1)) - 1.0) / (jnp.exp(config.dppo_clip_rate) - 1.0)
        eps = config.dppo_clip_early + (config.clip_epsilon - config.dppo_clip_early) * growth
    return jnp.concatenate([jnp.zeros((k - ft,)), eps])


def _chain(state: DPPOState, obs, key):
    return gcp.sample_sde(velocity_fn(state), state.actor, obs, key, state.config.gcp_spec, state.action_dim)


@common.chunk_act("dppo", ACT_MODES)
def act(state: DPPOState, obs, key, mode: str = "sde", actor: str | None = None) -> jax.Array:
    """obs (B, obs_dim) -> (B, H, da); one actor (`actor` accepted and ignored)."""
    if mode == "ode":
        out = gcp.sample_ode(velocity_fn(state), state.actor, obs, key, state.config.gcp_spec, state.action_dim)
    else:
        out = _chain(state, obs, key)[1]
    return out.reshape(obs.shape[0], *state.chunk_shape)


def step_log_probs(state: DPPOState, params, obs, chains) -> jax.Array:
    """(B, K) per-denoising-step log-densities, averaged over the D action dims."""
    return gcp.step_log_probs(velocity_fn(state), params, obs, chains, state.config.gcp_spec) / state.action_dim


def policy_loss(params, state: DPPOState, mb):
    """DPPO's clipped surrogate over (chain, denoising step) samples of a minibatch."""
    cfg = swept(state)
    k = cfg.flow_steps
    lp = step_log_probs(state, params, mb["obs"], mb["chain"])                        # (M, K)
    ratio = jnp.exp(lp - mb["old_lp"])
    eps = clip_schedule(state.config)
    adv = mb["adv"][:, None] * cfg.dppo_gamma_denoising ** jnp.arange(k - 1, -1, -1, dtype=jnp.float32)
    surrogate = clipped_surrogate(ratio, adv, 1.0 - eps, 1.0 + eps)
    finetuned = (jnp.arange(k) >= k - ft_steps(state.config)).astype(lp.dtype)
    w = mb["weight"][:, None] * finetuned
    loss = -(surrogate * w).sum() / jnp.maximum(w.sum(), 1.0)
    clipped = (jnp.abs(ratio - 1.0) > eps) * w
    return loss, {"actor/ppo_loss": loss, "actor/clip_frac": clipped.sum() / jnp.maximum(w.sum(), 1.0),
                  "actor/ratio_max": jnp.where(w > 0, ratio, 0.0).max(),
                  "actor/approx_kl": ((ratio - 1.0 - jnp.log(ratio)) * w).sum() / jnp.maximum(w.sum(), 1.0)}


def update(state: DPPOState, rollout, success_batch=None):
    """One PPO phase on a full rollout: regenerate its chains, GAE, `ppo_epochs` minibatch passes
    of the actor and V(s). Pure."""
    return onpolicy.ppo_phase(state, rollout, lambda o, k: _chain(state, o, k)[0], lambda o, c: step_log_probs(state, state.actor, o, c), policy_loss)

ALGORITHM = Algorithm(name=NAME, description="DPPO: on-policy PPO over (env step x denoising step) of the flow sampler",
                      init=init, update=update, act=act, act_modes=ACT_MODES, check_config=check_config,
                      on_policy=True,
                      config=DPPOConfig)
