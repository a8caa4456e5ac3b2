"""Policy-extraction objectives: how critic advantages become an actor gradient.

OGPO's own objective is the clipped PPO surrogate over whole denoising chains (`ppo_objective`);
the others are the paper's extraction ablations, selected by `algo.extraction`.
Every function is a pure loss of the actor params `params` returning (loss, metrics); everything
else (chains, advantages, old log-probs, critic params) arrives as constants.

`apply_fn(params, obs, x, t) -> v` is the velocity field (see gcp/flow.py).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ogpo_jax import gcp
from ogpo_jax.gcp import flow


def clipped_surrogate(ratio, advantage, clip_low, clip_high):
    """PPO's pessimistic surrogate per sample: min(r A, clip(r, lo, hi) A)."""
    return jnp.minimum(ratio * advantage, jnp.clip(ratio, clip_low, clip_high) * advantage)


def ppo_objective(apply_fn, params, obs, chains, old_log_prob, advantage, spec, clip_low, clip_high,
                  log_prob_fn=None, scale: float = 1.0):
    """Clipped PPO surrogate over chains: -scale * mean min(r A, clip(r, lo, hi) A), r = exp(lp - lp_old).

    obs (N, obs_dim), chains (N, K+1, D), old_log_prob and advantage (N,). `log_prob_fn(params, obs,
    chains)` replaces the whole-chain log-probability (e.g. only the last denoising steps); `scale`
    rescales the mean (k / G when the N chains are the top k of groups of G: the group's mean with
    the other chains' zero terms).
    """
    log_prob = (log_prob_fn or (lambda p, o, c: gcp.chain_log_prob(apply_fn, p, o, c, spec)))(params, obs, chains)
    ratio = jnp.exp(log_prob - old_log_prob)
    loss = -scale * jnp.mean(clipped_surrogate(ratio, advantage, clip_low, clip_high))
    return loss, {
        "actor/ppo_loss": loss,
        "actor/ratio_mean": ratio.mean(),
        "actor/ratio_max": ratio.max(),
        "actor/clip_frac": jnp.mean((ratio < clip_low) | (ratio > clip_high)),
        **clip_by_sign(ratio, advantage, clip_low, clip_high),
        "actor/log_prob": log_prob.mean(),
    }


def clip_by_sign(ratio, advantage, clip_low, clip_high) -> dict:
    """The chains the clip takes the gradient from, split by the sign of their advantage: of the
    chains with A > 0, the share with r > clip_high; of those with A < 0, the share with
    r < clip_low (0 where there are none). A high negative share makes the update positive-only."""
    pos, neg = advantage > 0, advantage < 0
    share = lambda hit, of: jnp.sum(hit & of) / jnp.maximum(jnp.sum(of), 1)  # noqa: E731
    return {"actor/clip_frac_pos_adv": share(ratio > clip_high, pos),
            "actor/clip_frac_neg_adv": share(ratio < clip_low, neg)}


def bptt_objective(apply_fn, params, obs, key, spec, action_dim, q_fn):
    """BPTT ablation: -mean_heads Q(s, a(params)), a = the deterministic Euler ODE sample.

    The gradient flows through all K velocity evaluations of the sampler (a `lax.scan`) and
    through the critic's action input; `q_fn(obs, actions) -> (M, B)` must hold its params fixed.
    """
    actions = gcp.sample_ode(apply_fn, params, obs, key, spec, action_dim)
    q = q_fn(obs, actions).mean(axis=0)
    loss = -q.mean()
    return loss, {"actor/ppo_loss": loss, "actor/bptt_q": q.mean()}


def weighted_fm_objective(apply_fn, params, obs, actions, weights, key, spec):
    """Advantage-weighted BC (flow matching or eps prediction, per `spec`): mean_i w_i L_bc(obs_i, a_i).
    actions (N, H, da), weights (N,)."""
    valid = jnp.ones(actions.shape[:2], bool)
    loss = gcp.bc_loss(apply_fn, params, obs, actions, valid, key, spec, weights=weights)
    return loss, {
        "actor/ppo_loss": loss,
        "actor/awr_weight_mean": weights.mean(),
        "actor/awr_weight_max": weights.max(),
    }


def ofpo_draws(key, num, num_samples: int, action_dim: int):
    """The shared (t, x0) Monte-Carlo draws of the FPO ratio: (num, S), (num, S, D)."""
    k_t, k_x = jax.random.split(key)
    t = jax.random.uniform(k_t, (num, num_samples))
    x0 = jax.random.normal(k_x, (num, num_samples, action_dim))
    return t, x0


def ofpo_objective(apply_fn, params, obs, actions, old_losses, advantage, t, x0, clip_low, clip_high):
    """OFPO (FPO++ per-sample clipping): r_ij = exp(L_old_ij - L_ij) for each (t, x0) draw j,
    loss -mean_ij min(r_ij A_i, clip(r_ij) A_i).

    obs (N, obs_dim), actions (N, D), old_losses (N, S) from the old (EMA) actor, advantage (N,).
    The CFM loss stands in for -log-likelihood (its ELBO), so lowering it on a positive-advantage
    action raises the ratio.
    """
    losses = flow.cfm_losses(apply_fn, params, obs, actions, t, x0)
    ratio = jnp.exp(old_losses - losses)
    adv = advantage[:, None]
    loss = -jnp.mean(clipped_surrogate(ratio, adv, clip_low, clip_high))
    return loss, {
        "actor/ppo_loss": loss,
        "actor/ratio_mean": ratio.mean(),
        "actor/ratio_max": ratio.max(),
        "actor/clip_frac": jnp.mean((ratio < clip_low) | (ratio > clip_high)),
        "actor/cfm_loss": losses.mean(),
    }
