"""Pieces of the on-policy PPO baselines (DPPO, ReinFlow): the state-value net, chunk rewards, GAE
over chunk steps, regenerating the rollout's denoising chains from the keys `act` drew them with,
and minibatch epochs.

A rollout (`training/loop.py`, `init_rollout`) holds `rows` with leaves (T, N, ...) for T
iterations of N envs (obs, actions, rewards (H,), valid (H,), next_obs, terminal, done, keep) and
`act_keys` (T, 2). Time runs along T; `done` cuts an episode (auto-reset), `terminal` stops the
bootstrap, `next_obs` is the true final observation (so truncated episodes bootstrap from it).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from ogpo_jax.algorithms import common
from ogpo_jax.algorithms import critic as critic_lib


value_module = critic_lib.value_module


def init_value(config, key, obs_dim: int):
    return value_module(config).init(key, jnp.zeros((1, obs_dim)))["params"]


def value_optimizer(config):
    return common.adamw(config.critic_lr, 0.0, config.grad_clip, config.adam_eps)


def values(config, params, obs) -> jax.Array:
    """V(obs): (..., obs_dim) -> (...)."""
    return value_module(config).apply({"params": params}, obs)


chunk_rewards = common.chunk_return      # (sum_i gamma^i r_i valid_i, gamma^n) of a chunk


def gae(rewards, discounts, values_now, values_next, terminal, done, lam: float) -> jax.Array:
    """Generalized advantage estimates over chunk steps, all arguments (T, N) -> (T, N):

        delta_t = r_t + d_t (1 - terminal_t) V(next_obs_t) - V(obs_t)
        A_t     = delta_t + d_t lam (1 - done_t) A_{t+1},   A_T = 0

    with d_t the discount to the chunk's next observation (gamma^n). The rollout's last chunk
    bootstraps through its delta alone.
    """
    terminal = terminal.astype(rewards.dtype)
    done = done.astype(rewards.dtype)
    deltas = rewards + discounts * (1.0 - terminal) * values_next - values_now

    def step(next_adv, x):
        delta, disc, d = x
        adv = delta + disc * lam * (1.0 - d) * next_adv
        return adv, adv

    _, adv = jax.lax.scan(step, jnp.zeros_like(deltas[0]), (deltas, discounts, done), reverse=True)
    return adv


def regenerate(sample_fn, obs, keys):
    """The rollout's chains, drawn again: `sample_fn(obs (N, obs_dim), key) -> chain (N, ...)`,
    called once per iteration exactly as `act` was (same params, shapes and key), so the chains
    are the executed ones. obs (T, N, obs_dim), keys (T, 2) -> (T, N, ...)."""
    return jax.lax.map(lambda ok: sample_fn(ok[0], ok[1]), (obs, keys))


def normalize(adv, weights):
    """(adv - mean) / std over the rows with weight 1 (non-finite rows have weight 0)."""
    n = jnp.maximum(weights.sum(), 1.0)
    mean = (adv * weights).sum() / n
    std = jnp.sqrt((jnp.square(adv - mean) * weights).sum() / n)
    return (adv - mean) / (std + 1e-8)


def minibatch_epochs(carry, samples: dict, key, epochs: int, minibatch_size: int, step_fn):
    """`epochs` shuffled passes over `samples` (leaves (S, ...)) in minibatches of
    `minibatch_size` (a remainder of S is left out of each pass); `step_fn(carry, minibatch) ->
    (carry, metrics)`. Returns (carry, metrics averaged over all minibatch steps)."""
    size = jax.tree_util.tree_leaves(samples)[0].shape[0]
    mb = min(minibatch_size, size)
    num = size // mb

    def epoch(carry, k):
        perm = jax.random.permutation(k, size)[: num * mb].reshape(num, mb)
        batches = jax.tree_util.tree_map(lambda x: x[perm], samples)
        return jax.lax.scan(step_fn, carry, batches)

    carry, metrics = jax.lax.scan(epoch, carry, jax.random.split(key, epochs))
    return carry, jax.tree_util.tree_map(jnp.mean, metrics)


def value_step(config, params, opt_state, obs, returns, weights):
    """One optimizer step of the weighted squared error of V(obs) against `returns`."""
    def loss_fn(p):
        err = jnp.square(values(config, p, obs) - returns)
        return (err * weights).sum() / jnp.maximum(weights.sum(), 1.0)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = value_optimizer(config).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def advantages(config, value_params, rows):
    """Rollout rows -> (normalized advantages (T, N), returns (T, N), weights (T, N), metrics)."""
    r, disc = chunk_rewards(rows["rewards"], rows["valid"], config.discount)
    v_now = values(config, value_params, rows["obs"])
    v_next = values(config, value_params, rows["next_obs"])
    adv = gae(r, disc, v_now, v_next, rows["terminal"], rows["done"], config.gae_lambda)
    weights = rows["keep"].astype(adv.dtype)
    returns = adv + v_now
    metrics = {"value/v_mean": v_now.mean(), "ppo/adv_abs_mean": jnp.abs(adv).mean(),
               "ppo/return_mean": returns.mean()}
    return normalize(adv, weights), returns, weights, metrics


def zero_dropped(rows: dict) -> dict:
    """Rows with `keep` False (non-finite transitions) set to zeros, so they cannot turn the GAE
    scan or a loss into NaN; their weight is 0 everywhere."""
    keep = rows["keep"]

    def clean(x):
        mask = keep.reshape(keep.shape + (1,) * (x.ndim - keep.ndim))
        return jnp.where(mask, x, jnp.zeros_like(x))

    return {k: (v if k == "keep" else clean(v)) for k, v in rows.items()}


def ppo_phase(state, rollout, chain_fn, log_prob_fn, policy_loss):
    """One PPO phase of an on-policy algorithm on a full rollout: regenerate its chains
    (`chain_fn(obs, key) -> chain`), old log-probs (`log_prob_fn(obs, chains)`), GAE, then
    `ppo_epochs` minibatch passes, each a step of the actor on `policy_loss(params, state, mb) ->
    (loss, metrics)` and a step of V(s). -> (state with actor, value and their optimizers updated
    and step + 1, metrics)."""
    from ogpo_jax.algorithms.actor import actor_optimizer
    from ogpo_jax.algorithms.config import swept

    cfg = swept(state)
    key, k_epochs = jax.random.split(state.key)
    rows = zero_dropped(rollout["rows"])
    chains = regenerate(chain_fn, rows["obs"], rollout["act_keys"])
    adv, returns, weights, metrics = advantages(cfg, state.value, rows)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])                                   # noqa: E731
    obs, chains = flat(rows["obs"]), flat(chains)
    samples = {"obs": obs, "chain": chains, "old_lp": log_prob_fn(obs, chains), "adv": flat(adv),
               "ret": flat(returns), "weight": flat(weights)}
    tx, schedule = actor_optimizer(cfg)

    def step(carry, mb):
        actor, actor_opt, value, value_opt = carry
        (_, m), grads = jax.value_and_grad(policy_loss, has_aux=True)(actor, state, mb)
        updates, actor_opt = tx.update(grads, actor_opt, actor)
        actor = optax.apply_updates(actor, updates)
        value, value_opt, v_loss = value_step(cfg, value, value_opt, mb["obs"], mb["ret"], mb["weight"])
        return (actor, actor_opt, value, value_opt), dict(m, **{"value/loss": v_loss,
                                                                "actor/grad_norm": common.tree_norm(grads)})

    (actor, actor_opt, value, value_opt), epoch_metrics = minibatch_epochs(
        (state.actor, state.actor_opt, state.value, state.value_opt), samples, k_epochs, cfg.ppo_epochs,
        cfg.ppo_minibatch_size, step)
    metrics.update(epoch_metrics, **{"actor/lr": schedule(state.step)})
    return state.replace(actor=actor, actor_opt=actor_opt, value=value, value_opt=value_opt, step=state.step + 1,
                         key=key), metrics
