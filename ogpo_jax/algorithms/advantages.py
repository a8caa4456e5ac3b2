"""Group-relative advantages of denoising chains from per-head critic values.

All functions take `q` of shape (M, B, G): M critic heads, B states, G chains per state, and
return advantages of shape (B, G). Advantages are used under `stop_gradient`.
"""
from __future__ import annotations

import jax.numpy as jnp


def per_head_group_advantage(q):
    """A_{m,b,g} = Q_m(s_b, a_bg) - mean_g' Q_m(s_b, a_bg'): (M, B, G) -> (M, B, G)."""
    return q - q.mean(axis=-1, keepdims=True)


def group_mean_advantage(q):
    """Vanilla OGPO: mean over heads minus the group mean (no std normalization)."""
    q_mean = q.mean(axis=0)
    return q_mean - q_mean.mean(axis=-1, keepdims=True)


def conservative_advantage(q):
    """Sign-consensus advantage (OGPO-CA, PAPER_NOTES §4.2).

    min_m A_m if every head says A > 0, max_m A_m if every head says A < 0, else 0.
    """
    adv = per_head_group_advantage(q)
    lo, hi = adv.min(axis=0), adv.max(axis=0)
    return jnp.where(lo > 0, lo, jnp.where(hi < 0, hi, 0.0))


ADVANTAGE_FNS = {
    "vanilla": group_mean_advantage,
    "conservative": conservative_advantage,
}


def compute_advantage(q, strategy: str):
    try:
        fn = ADVANTAGE_FNS[strategy]
    except KeyError:
        raise ValueError(
            f"algo.adv_strategy must be one of {sorted(ADVANTAGE_FNS)}, got {strategy!r}") from None
    return fn(q)
