"""The chunked critic ensemble every critic-based algorithm shares: M heads Q_m(s, chunk) on
concat(obs, flat chunk) (`networks.CriticEnsemble`), their optimizer, the n-step TD regression
step, head aggregation and Best-of-N selection among candidate chunks.

Functions take the algorithm's config (an `OGPOConfig`, or a sweep member's `swept` view) and
plain params, so OGPO, QC, FQL, EXPO and DSRL value chunks the same way.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from ogpo_jax.algorithms import common
from ogpo_jax.networks import CriticEnsemble, ValueNet

AGGREGATIONS = ("mean", "min")


def module(config, num_heads: int | None = None) -> CriticEnsemble:
    return CriticEnsemble(num_heads or config.num_critics, config.critic_hidden_dims, config.critic_layer_norm)


def init_params(config, key, obs_dim: int, input_dim: int):
    """Fresh ensemble params for observations of `obs_dim` and flat inputs (chunks, or DSRL's
    noise vectors) of `input_dim`."""
    return module(config).init(key, jnp.zeros((1, obs_dim)), jnp.zeros((1, input_dim)))["params"]


def values(config, params, obs, actions, heads=None) -> jax.Array:
    """Per-head Q: obs (B, obs_dim), actions (B, H, da) or (B, D) -> (M, B).

    `heads` (an int array of head indices, length m) evaluates only those heads -> (m, B): the
    ensemble's params are gathered first, so unselected heads cost nothing.
    """
    flat = actions.reshape(actions.shape[0], -1)
    if heads is None:
        return module(config).apply({"params": params}, obs, flat)
    params = jax.tree_util.tree_map(lambda p: p[heads], params)
    return module(config, heads.shape[0]).apply({"params": params}, obs, flat)


def target_q(state, obs, chunks) -> jax.Array:
    """Per-head target-critic Q of an algorithm state with `config` and `critic_target`:
    obs (B, obs_dim), chunks (B, H, da) -> (M, B) (`Algorithm.target_q`)."""
    return values(state.config, state.critic_target, obs, chunks)


def optimizer(config):
    return common.adamw(config.critic_lr, config.critic_weight_decay, config.grad_clip, config.adam_eps)


def aggregate(q, how: str) -> jax.Array:
    """Combine heads (M, ...) -> (...): 'mean' or 'min' (pessimistic)."""
    if how == "mean":
        return q.mean(0)
    if how == "min":
        return q.min(0)
    raise ValueError(f"head aggregation must be one of {AGGREGATIONS}, got {how!r}")


def select_best(scores, candidates) -> jax.Array:
    """Best-of-N: scores (B, N), candidates (B, N, ...) -> the argmax candidate per row (B, ...)."""
    best = jnp.argmax(scores, axis=-1)
    return candidates[jnp.arange(candidates.shape[0]), best]


def td_loss(config, params, obs, actions, target):
    """Mean squared TD error of every head against one target (B,). -> (loss, metrics)"""
    q = values(config, params, obs, actions)                                  # (M, B)
    loss = jnp.mean(jnp.square(q - target[None]))
    return loss, {
        "critic/loss": loss,
        "critic/q_mean": q.mean(),
        "critic/q_head_std": q.std(axis=0).mean(),
        "critic/td_error": jnp.abs(q.mean(0) - target).mean(),
        "critic/target_mean": target.mean(),
    }


def td_step(config, params, opt_state, obs, actions, target):
    """One optimizer step of `td_loss` (target held constant). -> (params, opt_state, metrics)"""
    target = jax.lax.stop_gradient(target)
    (_, metrics), grads = jax.value_and_grad(td_loss, argnums=1, has_aux=True)(config, params, obs, actions, target)
    updates, opt_state = optimizer(config).update(grads, opt_state, params)
    metrics["critic/grad_norm"] = common.tree_norm(grads)
    return optax.apply_updates(params, updates), opt_state, metrics


def chunk_target(config, batch, next_value) -> jax.Array:
    """n-step chunk TD target of `batch` given the value of its next observations (B,)."""
    return common.nstep_target(batch["rewards"], batch["valid"], batch["terminal"], next_value, config.discount)


def value_module(config) -> ValueNet:
    """The state-value net V(s) (OGPO's `baseline='value'`, the on-policy baselines' critic), as
    wide as the chunk critic."""
    return ValueNet(config.critic_hidden_dims, config.critic_layer_norm)
