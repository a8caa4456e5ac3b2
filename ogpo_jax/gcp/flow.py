"""Flow-matching generative control policy: BC loss, ODE/SDE samplers, chain log-probability.

Conventions (those of the OGPO paper and its code): flow time t in [0, 1], t = 0 is Gaussian noise and t = 1 is data;
`x_t = (1 - t) x0 + t a`, velocity target `a - x0`. Chunks are flattened to D = H * da.

The stochastic sampler is the one used by OGPO for RL. Step i (t_i = i / K, dt = 1 / K):

    v     = v_theta(obs, x_i, t_i)
    drift = v + (sigma_i^2 / 2) * (t_i v - x_i) / (1 - t_i)   # marginal-preserving score correction
    mu_i  = clip(x_i + drift dt, -1, 1)                       # intermediate clipping (flag)
    x_i+1 ~ N(mu_i, sigma_i^2 I), clipped to mu_i +- 3 sigma_i, sigma_i = sigma sqrt(1 - t_i)

and the executed action is clip(x_K, -1, 1). The chain (x_0 .. x_K) is returned unclipped so its
log-probability can be recomputed exactly under any parameters (`chain_log_prob`).

`apply_fn(params, obs, x, t) -> v` is any velocity field, e.g. `VelocityField.apply`. Every
function here calls it with batched inputs, obs (N, obs_dim), x (N, D) and t (N,): one time per
row (the samplers broadcast their step's time with `batch_time`); it returns v (N, D).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

ApplyFn = Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]


NOISE_SCHEDULES = ("tapered", "constant")


def batch_time(t, x) -> jax.Array:
    """A step's time as one value per row of x (N, D) -> (N,): the `apply_fn` contract."""
    return jnp.broadcast_to(t, x.shape[:-1])


@dataclasses.dataclass(frozen=True)
class FlowSpec:
    """Static settings of the generative process (hashable, so usable as a jit static arg)."""

    num_steps: int = 10                 # K
    noise_std: float = 0.05             # sigma
    noise_schedule: str = "tapered"     # 'tapered': sigma sqrt(1 - t); 'constant': sigma
    score_correction: bool = True       # marginal-preserving drift correction
    clip_intermediate: bool = True      # clip the step mean to [-1, 1]
    sample_clip_stds: float = 3.0       # clip each sample to mean +- c sigma (0 disables)
    normalize_horizon: bool = True      # divide chain log-prob by K + 1
    normalize_action_dim: bool = True   # divide chain log-prob by D

    def __post_init__(self):
        if self.num_steps < 1:
            raise ValueError(f"FlowSpec.num_steps must be >= 1, got {self.num_steps}")
        if self.noise_std < 0:
            raise ValueError(f"FlowSpec.noise_std must be >= 0, got {self.noise_std}")
        if self.noise_schedule not in NOISE_SCHEDULES:
            raise ValueError(f"FlowSpec.noise_schedule must be one of {NOISE_SCHEDULES}, got {self.noise_schedule!r}")

    def times(self) -> jax.Array:
        """t_i = i / K for i = 0 .. K-1: the times at which the velocity is evaluated."""
        return jnp.arange(self.num_steps, dtype=jnp.float32) / self.num_steps

    def sigmas(self) -> jax.Array:
        t = self.times()
        if self.noise_schedule == "tapered":
            return self.noise_std * jnp.sqrt(1.0 - t)
        return jnp.full_like(t, self.noise_std)


def bc_loss(apply_fn: ApplyFn, params, obs, actions, valid, key, weights=None) -> jax.Array:
    """Conditional flow-matching loss, masked by chunk validity.

    obs (B, obs_dim), actions (B, H, da), valid (B, H) -> scalar. Optional per-sample `weights`
    (B,) (advantage-weighted flow matching) multiply each chunk's loss; the mean is still over the
    valid steps, so weights of 1 give the plain loss.
    """
    batch, horizon, act_dim = actions.shape
    a = actions.reshape(batch, horizon * act_dim)
    k_noise, k_time = jax.random.split(key)
    x0 = jax.random.normal(k_noise, a.shape, a.dtype)
    t = jax.random.uniform(k_time, (batch,), a.dtype)
    x_t = (1.0 - t[:, None]) * x0 + t[:, None] * a
    v = apply_fn(params, obs, x_t, t)
    err = jnp.square(v - (a - x0)).reshape(batch, horizon, act_dim).mean(-1)
    mask = valid.astype(err.dtype)
    weighted = err * mask if weights is None else err * mask * weights[:, None]
    return weighted.sum() / jnp.maximum(mask.sum(), 1.0)


def cfm_losses(apply_fn: ApplyFn, params, obs, actions, t, x0) -> jax.Array:
    """Per-sample conditional flow-matching losses for given (t, x0) draws (the FPO ratio's terms).

    obs (N, obs_dim), actions (N, D), t (N, S), x0 (N, S, D) -> (N, S): mean over D of
    |v(obs, (1 - t) x0 + t a, t) - (a - x0)|^2. All N * S evaluations go through the network once.
    """
    n, s, d = x0.shape
    a = jnp.broadcast_to(actions[:, None], (n, s, d))
    x_t = (1.0 - t[..., None]) * x0 + t[..., None] * a
    v = apply_fn(params, jnp.repeat(obs, s, axis=0), x_t.reshape(n * s, d), t.reshape(n * s))
    return jnp.square(v.reshape(n, s, d) - (a - x0)).mean(-1)


def sample_ode(apply_fn: ApplyFn, params, obs, key, spec: FlowSpec, action_dim: int) -> jax.Array:
    """Deterministic Euler ODE sampler (evaluation): obs (B, obs_dim) -> actions (B, D) in [-1, 1]."""
    x0 = jax.random.normal(key, (obs.shape[0], action_dim), obs.dtype)
    return integrate_ode(apply_fn, params, obs, x0, spec)


def integrate_ode(apply_fn: ApplyFn, params, obs, x0, spec: FlowSpec) -> jax.Array:
    """The Euler ODE map from given initial noise: obs (B, obs_dim), x0 (B, D) -> actions (B, D)
    in [-1, 1]. Deterministic in x0 (noise-space policies such as DSRL act through it)."""
    dt = 1.0 / spec.num_steps

    def step(x, t):
        return x + dt * apply_fn(params, obs, x, batch_time(t, x)), None

    x, _ = jax.lax.scan(step, x0, spec.times())
    return jnp.clip(x, -1.0, 1.0)


def _step_mean(v, x, t, sigma, spec: FlowSpec):
    dt = 1.0 / spec.num_steps
    drift = v
    if spec.score_correction:
        # CondOT marginal score from the velocity: (t v - x) / (1 - t); t <= (K-1)/K < 1 here.
        drift = v + 0.5 * jnp.square(sigma) * (t * v - x) / (1.0 - t)
    mu = x + dt * drift
    if spec.clip_intermediate:
        mu = jnp.clip(mu, -1.0, 1.0)
    return mu


def _gaussian_log_density(x, mu, sigma) -> jax.Array:
    """Per-element log N(x; mu, sigma^2)."""
    return -0.5 * jnp.square((x - mu) / sigma) - jnp.log(sigma) - 0.5 * math.log(2 * math.pi)


def _normalize_log_prob(lp, spec: FlowSpec, dim: int):
    if spec.normalize_horizon:
        lp = lp / (spec.num_steps + 1)
    if spec.normalize_action_dim:
        lp = lp / dim
    return lp


def sample_sde(apply_fn: ApplyFn, params, obs, key, spec: FlowSpec, action_dim: int, log_prob: bool = False):
    """Stochastic sampler that returns the whole denoising chain.

    obs (B, obs_dim) -> (chain (B, K+1, D) unclipped, actions (B, D) clipped to [-1, 1]).
    `log_prob=True` also returns the chain's log-probability under `params` (B,), from the step
    means the sampler computes anyway: equal to `chain_log_prob(apply_fn, params, obs, chain, spec)`
    up to float rounding, without its second pass through the network.
    """
    k0, k_steps = jax.random.split(key)
    x0 = jax.random.normal(k0, (obs.shape[0], action_dim), obs.dtype)
    step_keys = jax.random.split(k_steps, spec.num_steps)

    def step(x, inputs):
        t, sigma, k = inputs
        mu = _step_mean(apply_fn(params, obs, x, batch_time(t, x)), x, t, sigma, spec)
        x_next = mu + sigma * jax.random.normal(k, x.shape, x.dtype)
        if spec.sample_clip_stds > 0:
            bound = spec.sample_clip_stds * sigma
            x_next = jnp.clip(x_next, mu - bound, mu + bound)
        step_lp = _gaussian_log_density(x_next, mu, sigma).sum(-1) if log_prob else None
        return x_next, (x_next, step_lp)

    x_final, (xs, step_lps) = jax.lax.scan(step, x0, (spec.times(), spec.sigmas(), step_keys))
    chain = jnp.concatenate([x0[:, None], jnp.swapaxes(xs, 0, 1)], axis=1)
    actions = jnp.clip(x_final, -1.0, 1.0)
    if not log_prob:
        return chain, actions
    lp = step_lps.sum(0) + _gaussian_log_density(x0, 0.0, 1.0).sum(-1)
    return chain, actions, _normalize_log_prob(lp, spec, action_dim)


def chain_log_prob(apply_fn: ApplyFn, params, obs, chain, spec: FlowSpec) -> jax.Array:
    """Log-probability of stored chains under `params`: obs (B, obs_dim), chain (B, K+1, D) -> (B,).

    log N(x_0; 0, I) + sum_i log N(x_{i+1}; mu_i(params), sigma_i^2 I), divided by (K + 1) and by D
    when the spec says so (`step_log_probs` has the K step terms).
    """
    lp = step_log_probs(apply_fn, params, obs, chain, spec).sum(-1)
    lp = lp + _gaussian_log_density(chain[:, 0], 0.0, 1.0).sum(-1)
    return _normalize_log_prob(lp, spec, chain.shape[-1])


def late_log_prob(apply_fn: ApplyFn, params, obs, chain, spec: FlowSpec, last: int) -> jax.Array:
    """The log-probability terms of the last `last` denoising steps of stored chains, normalized as
    `chain_log_prob`: obs (B, obs_dim), chain (B, K+1, D) -> (B,). The network runs on those steps
    only, so a PPO ratio built from it (`ogpo`'s `ft_flow_steps`) backpropagates through `last` of
    the K steps and holds the earlier ones fixed (the x_0 term never depends on the params);
    `last = K` gives `chain_log_prob` minus its x_0 term."""
    batch, length, dim = chain.shape
    num_steps = spec.num_steps
    if not 1 <= last <= num_steps or length != num_steps + 1:
        raise ValueError(f"last must be in [1, num_steps={num_steps}] for chains of {num_steps + 1} states, "
                         f"got last={last} and {length} states")
    first = num_steps - last
    x = chain[:, first:-1].reshape(batch * last, dim)
    x_next = chain[:, first + 1:].reshape(batch * last, dim)
    t = jnp.tile(spec.times()[first:], batch)
    sigma = jnp.tile(spec.sigmas()[first:], batch)[:, None]
    mu = _step_mean(apply_fn(params, jnp.repeat(obs, last, axis=0), x, t), x, t[:, None], sigma, spec)
    lp = _gaussian_log_density(x_next, mu, sigma).sum(-1).reshape(batch, last).sum(-1)
    return _normalize_log_prob(lp, spec, dim)


def step_log_probs(apply_fn: ApplyFn, params, obs, chain, spec: FlowSpec) -> jax.Array:
    """Per-denoising-step log-densities log N(x_{i+1}; mu_i(params), sigma_i^2 I) of stored chains,
    unnormalized: obs (B, obs_dim), chain (B, K+1, D) -> (B, K) (DPPO's per-step ratios).

    The K step means do not depend on each other (the chain is given), so they are evaluated in
    one batched call of the network instead of a sequential scan: compile time stays flat in K and
    the matmuls are K times larger.
    """
    batch, length, dim = chain.shape
    num_steps = spec.num_steps
    if length != num_steps + 1:
        raise ValueError(f"chain has {length} states, expected num_steps + 1 = {num_steps + 1}")
    x = chain[:, :-1].reshape(batch * num_steps, dim)
    x_next = chain[:, 1:].reshape(batch * num_steps, dim)
    t = jnp.tile(spec.times(), batch)
    sigma = jnp.tile(spec.sigmas(), batch)[:, None]
    obs_rep = jnp.repeat(obs, num_steps, axis=0)
    mu = _step_mean(apply_fn(params, obs_rep, x, t), x, t[:, None], sigma, spec)
    return _gaussian_log_density(x_next, mu, sigma).sum(-1).reshape(batch, num_steps)
