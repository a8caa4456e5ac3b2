"""Group-relative advantages of denoising chains from per-head critic values.

All functions take `q` of shape (M, B, G): M critic heads, B states, G chains per state, and
return advantages of shape (B, G). Advantages are used under `stop_gradient`.

The baseline is the per-head group mean (OGPO) unless a state value `baseline` (B,) or (M, B) is
given (the V(s)-baseline ablation). Strategies:

    vanilla       mean over heads of A_m                          (OGPO)
    conservative  min_m A_m if all A_m > 0, max_m A_m if all < 0, else 0   (OGPO-CA, "two-sided")
    penultimate   the same with the 2nd-smallest / 2nd-largest head: nonzero when all heads but
                  one agree, magnitude of the second most conservative head
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

STRATEGIES = ("vanilla", "conservative", "penultimate")


def per_head_group_advantage(q, baseline=None):
    """A_{m,b,g} = Q_m(s_b, a_bg) - b_m(s_b): (M, B, G) -> (M, B, G).

    b_m(s_b) = mean_g' Q_m(s_b, a_bg') (group mean) or the given `baseline` ((B,) or (M, B)).
    """
    if baseline is None:
        return q - q.mean(axis=-1, keepdims=True)
    baseline = jnp.asarray(baseline)
    if baseline.ndim == 1:
        baseline = baseline[None]
    return q - baseline[..., None]


def group_mean_advantage(q, baseline=None):
    """Vanilla OGPO: mean over heads minus the baseline (no std normalization)."""
    return per_head_group_advantage(q, baseline).mean(axis=0)


def conservative_advantage(q, baseline=None):
    """Sign-consensus advantage (OGPO-CA, "two-sided").

    min_m A_m if every head says A > 0, max_m A_m if every head says A < 0, else 0.
    """
    adv = per_head_group_advantage(q, baseline)
    lo, hi = adv.min(axis=0), adv.max(axis=0)
    return jnp.where(lo > 0, lo, jnp.where(hi < 0, hi, 0.0))


def penultimate_advantage(q, baseline=None):
    """Sign consensus of all heads but one: 2nd-smallest A_m if it is > 0, 2nd-largest if < 0, else 0.

    Needs M >= 2. Less conservative than `conservative_advantage`: one dissenting (or outlier) head
    neither vetoes the update nor sets its magnitude.
    """
    adv = jnp.sort(per_head_group_advantage(q, baseline), axis=0)
    if adv.shape[0] < 2:
        raise ValueError(f"penultimate advantages need >= 2 critic heads, got {adv.shape[0]}")
    lo2, hi2 = adv[1], adv[-2]
    return jnp.where(lo2 > 0, lo2, jnp.where(hi2 < 0, hi2, 0.0))


ADVANTAGE_FNS = {
    "vanilla": group_mean_advantage,
    "conservative": conservative_advantage,
    "penultimate": penultimate_advantage,
}


def std_normalize(adv, q, eps: float = 1e-6):
    """GRPO-style ablation: divide each group's advantages by the std over the group of the
    head-mean Q: adv (B, G), q (M, B, G) -> (B, G)."""
    return adv / (q.mean(axis=0).std(axis=-1, keepdims=True) + eps)


def compute_advantage(q, strategy: str, baseline=None, std_norm: bool = False, nonneg: bool = False):
    """(M, B, G) per-head Q -> (B, G) advantages for `strategy`, optionally GRPO std-normalized
    and clipped at 0 (OGPO-NN)."""
    try:
        fn = ADVANTAGE_FNS[strategy]
    except KeyError:
        raise ValueError(
            f"algo.adv_strategy must be one of {sorted(ADVANTAGE_FNS)}, got {strategy!r}") from None
    return postprocess(fn(q, baseline), q, std_norm, nonneg)


def postprocess(adv, q, std_norm: bool = False, nonneg: bool = False):
    """The optional steps after any advantage (strategy or chi-square): GRPO std normalization
    (`std_normalize`), then clipping at 0 (OGPO-NN). adv (B, G), q (M, B, G) -> (B, G)."""
    if std_norm:
        adv = std_normalize(adv, q)
    if nonneg:
        adv = jnp.maximum(adv, 0.0)
    return adv


def chi2_advantage(q, ratio, beta_base: float, alpha: float, q_std_target: float = 1.0):
    """Chi-square regularized advantage (the paper's chi-square variant).

    q (M, B, G) per-head Q of the chains, ratio (B, G) = exp(lp_theta - lp_slow) of the same chains
    against a slow reference actor (stop-gradient). With the ensemble spread
    s = mean_{B,G} std_m Q_m:

        beta  = beta_base * s / q_std_target
        w     = sigmoid(alpha (ratio - 1))
        Q~    = (1 - w) mean_m Q_m + w min_m Q_m - beta * ratio
        A     = Q~ - mean_G Q~

    Chains the current actor already over-weights relative to the reference (ratio > 1) are
    valued pessimistically (towards the min head) and pay a penalty linear in the ratio, the
    gradient of the chi-square divergence. Returns (A (B, G), beta scalar, w (B, G)).
    """
    beta = beta_base * q.std(axis=0).mean() / q_std_target
    w = jax.nn.sigmoid(alpha * (ratio - 1.0))
    q_tilde = (1.0 - w) * q.mean(axis=0) + w * q.min(axis=0) - beta * ratio
    return q_tilde - q_tilde.mean(axis=-1, keepdims=True), beta, w


def chi2_upper_clip(clip_epsilon: float, r_max: float, beta):
    """Upper PPO ratio clip under chi-square regularization: min(1 + eps, 1 + r_max / beta)."""
    return jnp.minimum(1.0 + clip_epsilon, 1.0 + r_max / beta)


def awr_weights(adv, beta: float, max_weight: float, positive_only: bool = False):
    """Advantage weights exp(A / beta) clipped at `max_weight`; `positive_only` zeroes A <= 0."""
    w = jnp.minimum(jnp.exp(adv / beta), max_weight)
    if positive_only:
        w = jnp.where(adv > 0, w, 0.0)
    return w
