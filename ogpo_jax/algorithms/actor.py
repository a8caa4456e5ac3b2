"""The flow actor shared by every algorithm: its network, its optimizer and sampling chunks from
its params alone (no critic). OGPO, success-buffer BC and the BC stage build on these.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from ogpo_jax.algorithms import common
from ogpo_jax.algorithms.config import AlgoConfig
from ogpo_jax import gcp
from ogpo_jax.networks import VelocityField


def actor_module(config: AlgoConfig, action_dim: int) -> VelocityField:
    return VelocityField(action_dim, config.actor_hidden_dims, config.time_emb_dim)


def actor_apply(config: AlgoConfig, action_dim: int):
    """-> apply_fn(params, obs, x, t) of the velocity field."""
    module = actor_module(config, action_dim)
    return lambda params, obs, x, t: module.apply({"params": params}, obs, x, t)


def init_actor_params(config: AlgoConfig, key, obs_dim: int, action_dim: int):
    """Fresh velocity-field params for observations of `obs_dim` and flat chunks of `action_dim`."""
    return actor_module(config, action_dim).init(
        key, jnp.zeros((1, obs_dim)), jnp.zeros((1, action_dim)), jnp.zeros((1,)))["params"]


def actor_optimizer(config: AlgoConfig):
    """-> (AdamW with the cyclic cosine schedule, the schedule)."""
    schedule = common.cyclic_cosine_schedule(
        config.actor_lr, config.actor_lr_floor, config.actor_lr_warmup, config.actor_lr_period)
    return common.adamw(schedule, config.actor_weight_decay, config.grad_clip, config.adam_eps), schedule


def sample_actions(config: AlgoConfig, chunk_shape, actor_params, obs, key, mode: str = "sde") -> jax.Array:
    """Chunks from actor params alone (no critic): obs (B, obs_dim) -> (B, H, da).

    mode 'ode': deterministic Euler (evaluation); 'sde': one stochastic chain (RL sampler).
    """
    dim = chunk_shape[0] * chunk_shape[1]
    apply_fn = actor_apply(config, dim)
    if mode == "ode":
        actions = gcp.sample_ode(apply_fn, actor_params, obs, key, config.gcp_spec, dim)
    elif mode == "sde":
        _, actions = gcp.sample_sde(apply_fn, actor_params, obs, key, config.gcp_spec, dim)
    else:
        raise ValueError(f"mode must be 'ode' or 'sde' for actor-only sampling, got {mode!r}")
    return actions.reshape(obs.shape[0], *chunk_shape)


def bc_step(config, chunk_shape, params, opt_state, step, data, key, coeff=1.0):
    """One optimizer step of coeff * flow-matching BC on `data` (obs, actions, valid), with the
    actor optimizer and its schedule at `step`. -> (params, opt_state, metrics)"""
    apply_fn = actor_apply(config, chunk_shape[0] * chunk_shape[1])

    def loss_fn(p):
        bc = gcp.bc_loss(apply_fn, p, data["obs"], data["actions"], data["valid"], key, config.gcp_spec)
        return coeff * bc, bc

    (loss, bc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    tx, schedule = actor_optimizer(config)
    updates, opt_state = tx.update(grads, opt_state, params)
    metrics = {"actor/loss": loss, "actor/bc_loss": bc, "actor/grad_norm": common.tree_norm(grads),
               "actor/lr": schedule(step)}
    return optax.apply_updates(params, updates), opt_state, metrics


def base_bc_step(config, chunk_shape, params, opt_state, step, batch, success_batch, key):
    """The base policy's BC step of QC, FQL and EXPO on `config.base_bc_data`: the replay batch,
    the success batch (the replay batch while there is none), or nothing ('none': the params and
    an empty metrics dict come back). -> (params, opt_state, metrics)"""
    if config.base_bc_data == "none":
        return params, opt_state, {}
    data = batch if config.base_bc_data == "replay" or success_batch is None else success_batch
    return bc_step(config, chunk_shape, params, opt_state, step, data, key)
