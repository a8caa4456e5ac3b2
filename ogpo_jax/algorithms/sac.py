"""Tanh-squashed Gaussian policies and the SAC temperature, for the baselines that train a small
stochastic policy next to a frozen or imitating generative one (DSRL's noise policy, EXPO's edit
policy). No distrax: the two formulas below are all they need.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from ogpo_jax.algorithms import common
from ogpo_jax.networks import GaussianPolicy


def policy_module(config, action_dim: int) -> GaussianPolicy:
    return GaussianPolicy(action_dim, config.policy_hidden_dims)


def sample_tanh_gaussian(mean, log_std, key):
    """u = tanh(mean + std * eps), eps ~ N(0, I): -> (u in (-1, 1)^D, log-density of u (...,)).

    log pi(u) = sum_d [log N(x_d; mean_d, std_d^2) - log(1 - tanh(x_d)^2)], the second term in the
    stable form 2 (log 2 - x - softplus(-2 x)).
    """
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    x = mean + jnp.exp(log_std) * eps
    gauss = -0.5 * jnp.square(eps) - log_std - 0.5 * math.log(2.0 * math.pi)
    log_det = 2.0 * (math.log(2.0) - x - jax.nn.softplus(-2.0 * x))
    return jnp.tanh(x), (gauss - log_det).sum(-1)


def policy_optimizer(config):
    return common.adamw(config.policy_lr, 0.0, config.grad_clip, config.adam_eps)


def target_entropy(config, action_dim: int) -> float:
    """SAC's target entropy, -scale * action_dim."""
    return -config.sac_target_entropy_scale * action_dim


def init_temperature(config):
    log_alpha = jnp.asarray(math.log(config.sac_init_temperature), jnp.float32)
    return log_alpha, optax.adam(config.policy_lr).init(log_alpha)


def temperature_step(config, log_alpha, opt_state, log_prob, action_dim: int):
    """One step of alpha's loss -alpha (log pi + target entropy) on the policy's (constant) sample
    log-probs. -> (log_alpha, opt_state, metrics)"""
    gap = jax.lax.stop_gradient(log_prob.mean() + target_entropy(config, action_dim))
    grad = -jnp.exp(log_alpha) * gap
    updates, opt_state = optax.adam(config.policy_lr).update(grad, opt_state, log_alpha)
    log_alpha = optax.apply_updates(log_alpha, updates)
    return log_alpha, opt_state, {"sac/alpha": jnp.exp(log_alpha), "sac/entropy": -log_prob.mean()}
