"""Diffusion (DDPM) generative control policy: epsilon-prediction BC loss, DDIM/DDPM samplers,
chain log-probability. The same interface as `gcp/flow.py`, so every algorithm runs on either.

Training (Ho et al. 2020): T discrete noise levels n = 0 .. T-1 with the cosine schedule of
Nichol & Dhariwal (DPPO's `cosine_beta_schedule`), alpha_bar_n the signal fraction;
`x_n = sqrt(alpha_bar_n) a + sqrt(1 - alpha_bar_n) eps`, and the network predicts eps.

Sampling uses K of the T levels (T = K * stride): step i = 0 .. K-1 goes from level
n_i = T - 1 - i * stride to n_{i+1} (n_K = -1, alpha_bar = 1: the clean chunk). With a = alpha_bar:

    eps    = eps_theta(obs, x_i, t_i)                      t_i = i / K, as the flow's times
    x0_hat = clip((x_i - sqrt(1 - a_i) eps) / sqrt(a_i), -1, 1);  eps re-derived from x0_hat
    s_i    = eta sqrt((1 - a_{i+1}) / (1 - a_i)) sqrt(1 - a_i / a_{i+1})      (DDIM sigma)
    mu_i   = sqrt(a_{i+1}) x0_hat + sqrt(1 - a_{i+1} - s_i^2) eps
    x_i+1  ~ N(mu_i, std_i^2 I), std_i = max(s_i, min_std), noise clipped to +- c std_i

eta = 1 is the DDPM posterior q(x_{n'} | x_n, x0_hat) on the sub-sequence (exactly DDPM's ancestral
step when K = T); `sample_ode` and `integrate_ode` are deterministic DDIM (eta = 0, no noise).
The std floor `min_std` (DPPO's `min_sampling_denoising_std`) keeps every step a proper Gaussian,
so the chain has a log-probability under any params. The network's time input t_i = i / K is the
flow's convention (0 = noise), so a network, DPPO's partial finetuning and the samplers' `times`
read the same way for both policy classes. `apply_fn(params, obs, x, t) -> eps`, t of shape (N,).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ogpo_jax.gcp.flow import ApplyFn, _gaussian_log_density, _normalize_log_prob, batch_time


@dataclasses.dataclass(frozen=True)
class DiffusionSpec:
    """Static settings of the DDPM policy (hashable, so usable as a jit static arg)."""

    num_steps: int = 10                 # K sampling steps (DDIM / DDPM on a sub-sequence)
    train_steps: int = 100              # T noise levels of training; a multiple of K
    eta: float = 1.0                    # stochastic sampler: 1 = DDPM posterior, 0 = DDIM
    min_std: float = 0.1                # floor of the stochastic sampler's step std
    clip_denoised: bool = True          # clip the predicted clean chunk x0_hat to [-1, 1]
    sample_clip_stds: float = 3.0       # clip each step's noise to +- c std (0 disables)
    normalize_horizon: bool = True      # divide chain log-prob by K + 1
    normalize_action_dim: bool = True   # divide chain log-prob by D

    def __post_init__(self):
        if self.num_steps < 1:
            raise ValueError(f"DiffusionSpec.num_steps must be >= 1, got {self.num_steps}")
        if self.train_steps < self.num_steps or self.train_steps % self.num_steps:
            raise ValueError(f"DiffusionSpec.train_steps must be a multiple of num_steps={self.num_steps}, "
                             f"got {self.train_steps}")
        if self.eta < 0:
            raise ValueError(f"DiffusionSpec.eta must be >= 0, got {self.eta}")
        if self.min_std <= 0:
            raise ValueError(f"DiffusionSpec.min_std must be > 0 (the chain log-prob needs it), got {self.min_std}")

    def times(self) -> jax.Array:
        """t_i = i / K for i = 0 .. K-1: the network's time input at each sampling step."""
        return jnp.arange(self.num_steps, dtype=jnp.float32) / self.num_steps

    def alphas_cumprod(self) -> np.ndarray:
        """alpha_bar_n, n = 0 .. T-1, of the cosine schedule (s = 0.008, betas clipped at 0.999)."""
        steps = self.train_steps + 1
        x = np.linspace(0, steps, steps)
        ac = np.cos(((x / steps) + 0.008) / 1.008 * np.pi * 0.5) ** 2
        ac = ac / ac[0]
        betas = np.clip(1.0 - ac[1:] / ac[:-1], 0.0, 0.999)
        return np.cumprod(1.0 - betas)

    def levels(self) -> np.ndarray:
        """n_i, i = 0 .. K-1: the noise level of each sampling step (descending)."""
        stride = self.train_steps // self.num_steps
        return self.train_steps - 1 - stride * np.arange(self.num_steps)

    def step_constants(self, eta: float | None = None):
        """-> (a_i, a_{i+1}, s_i) of the K steps as float32 arrays (K,); s_i is the DDIM sigma."""
        eta = self.eta if eta is None else eta
        ac = self.alphas_cumprod()
        a = ac[self.levels()]
        a_next = np.append(a[1:], 1.0)
        sigma = eta * np.sqrt((1.0 - a_next) / (1.0 - a)) * np.sqrt(np.maximum(1.0 - a / a_next, 0.0))
        return tuple(jnp.asarray(v, jnp.float32) for v in (a, a_next, sigma))


def _net_time(levels, train_steps: int):
    """Noise level n -> the network's time input (T - 1 - n) / T (0 at pure noise, as flow's t)."""
    return (train_steps - 1 - levels) / train_steps


def q_sample(spec: DiffusionSpec, actions, levels, noise):
    """Forward process: x_n = sqrt(alpha_bar_n) a + sqrt(1 - alpha_bar_n) eps; levels (B,) ints."""
    ac = jnp.asarray(spec.alphas_cumprod(), actions.dtype)[levels][:, None]
    return jnp.sqrt(ac) * actions + jnp.sqrt(1.0 - ac) * noise


def bc_loss(apply_fn: ApplyFn, params, obs, actions, valid, key, spec: DiffusionSpec, weights=None) -> jax.Array:
    """DDPM epsilon-prediction loss, masked by chunk validity (shapes as `flow.bc_loss`)."""
    batch, horizon, act_dim = actions.shape
    a = actions.reshape(batch, horizon * act_dim)
    k_noise, k_level = jax.random.split(key)
    noise = jax.random.normal(k_noise, a.shape, a.dtype)
    levels = jax.random.randint(k_level, (batch,), 0, spec.train_steps)
    x_n = q_sample(spec, a, levels, noise)
    eps = apply_fn(params, obs, x_n, _net_time(levels, spec.train_steps).astype(a.dtype))
    err = jnp.square(eps - noise).reshape(batch, horizon, act_dim).mean(-1)
    mask = valid.astype(err.dtype)
    weighted = err * mask if weights is None else err * mask * weights[:, None]
    return weighted.sum() / jnp.maximum(mask.sum(), 1.0)


def _step_mean(eps, x, a, a_next, sigma, spec: DiffusionSpec):
    """DDIM step mean from the predicted noise (per-step constants broadcast against x)."""
    x0 = (x - jnp.sqrt(1.0 - a) * eps) / jnp.sqrt(a)
    if spec.clip_denoised:
        x0 = jnp.clip(x0, -1.0, 1.0)
        eps = (x - jnp.sqrt(a) * x0) / jnp.sqrt(1.0 - a)
    return jnp.sqrt(a_next) * x0 + jnp.sqrt(jnp.maximum(1.0 - a_next - jnp.square(sigma), 0.0)) * eps


def sample_ode(apply_fn: ApplyFn, params, obs, key, spec: DiffusionSpec, action_dim: int) -> jax.Array:
    """Deterministic DDIM sampler (evaluation): obs (B, obs_dim) -> actions (B, D) in [-1, 1]."""
    x0 = jax.random.normal(key, (obs.shape[0], action_dim), obs.dtype)
    return integrate_ode(apply_fn, params, obs, x0, spec)


def integrate_ode(apply_fn: ApplyFn, params, obs, x0, spec: DiffusionSpec) -> jax.Array:
    """The DDIM map (eta = 0) from given initial noise: obs (B, obs_dim), x0 (B, D) -> (B, D)."""
    a, a_next, sigma = spec.step_constants(eta=0.0)

    def step(x, inputs):
        t, a_i, a_n, s_i = inputs
        return _step_mean(apply_fn(params, obs, x, batch_time(t, x)), x, a_i, a_n, s_i, spec), None

    x, _ = jax.lax.scan(step, x0, (spec.times(), a, a_next, sigma))
    return jnp.clip(x, -1.0, 1.0)


def _stds(spec: DiffusionSpec, sigma):
    return jnp.maximum(sigma, spec.min_std)


def sample_sde(apply_fn: ApplyFn, params, obs, key, spec: DiffusionSpec, action_dim: int, log_prob: bool = False):
    """Stochastic DDPM/DDIM(eta) sampler returning the whole chain (the contract of
    `flow.sample_sde`): obs (B, obs_dim) -> (chain (B, K+1, D), actions (B, D)[, log_prob (B,)])."""
    k0, k_steps = jax.random.split(key)
    x0 = jax.random.normal(k0, (obs.shape[0], action_dim), obs.dtype)
    a, a_next, sigma = spec.step_constants()
    step_keys = jax.random.split(k_steps, spec.num_steps)

    def step(x, inputs):
        t, a_i, a_n, s_i, k = inputs
        mu = _step_mean(apply_fn(params, obs, x, batch_time(t, x)), x, a_i, a_n, s_i, spec)
        std = _stds(spec, s_i)
        z = jax.random.normal(k, x.shape, x.dtype)
        if spec.sample_clip_stds > 0:
            z = jnp.clip(z, -spec.sample_clip_stds, spec.sample_clip_stds)
        x_next = mu + std * z
        step_lp = _gaussian_log_density(x_next, mu, std).sum(-1) if log_prob else None
        return x_next, (x_next, step_lp)

    x_final, (xs, step_lps) = jax.lax.scan(step, x0, (spec.times(), a, a_next, sigma, step_keys))
    chain = jnp.concatenate([x0[:, None], jnp.swapaxes(xs, 0, 1)], axis=1)
    actions = jnp.clip(x_final, -1.0, 1.0)
    if not log_prob:
        return chain, actions
    lp = step_lps.sum(0) + _gaussian_log_density(x0, 0.0, 1.0).sum(-1)
    return chain, actions, _normalize_log_prob(lp, spec, action_dim)


def step_log_probs(apply_fn: ApplyFn, params, obs, chain, spec: DiffusionSpec) -> jax.Array:
    """Per-step log N(x_{i+1}; mu_i(params), std_i^2 I) of stored chains, unnormalized:
    obs (B, obs_dim), chain (B, K+1, D) -> (B, K); the K steps in one batched network call."""
    batch, length, dim = chain.shape
    num_steps = spec.num_steps
    if length != num_steps + 1:
        raise ValueError(f"chain has {length} states, expected num_steps + 1 = {num_steps + 1}")
    a, a_next, sigma = (jnp.tile(v, batch)[:, None] for v in spec.step_constants())
    x = chain[:, :-1].reshape(batch * num_steps, dim)
    x_next = chain[:, 1:].reshape(batch * num_steps, dim)
    t = jnp.tile(spec.times(), batch)
    mu = _step_mean(apply_fn(params, jnp.repeat(obs, num_steps, axis=0), x, t), x, a, a_next, sigma, spec)
    return _gaussian_log_density(x_next, mu, _stds(spec, sigma)).sum(-1).reshape(batch, num_steps)


def chain_log_prob(apply_fn: ApplyFn, params, obs, chain, spec: DiffusionSpec) -> jax.Array:
    """Log-probability of stored chains under `params` (the contract of `flow.chain_log_prob`)."""
    lp = step_log_probs(apply_fn, params, obs, chain, spec).sum(-1)
    lp = lp + _gaussian_log_density(chain[:, 0], 0.0, 1.0).sum(-1)
    return _normalize_log_prob(lp, spec, chain.shape[-1])

