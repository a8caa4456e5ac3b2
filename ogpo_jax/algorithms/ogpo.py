"""OGPO: off-policy chunked critic ensemble + PPO over the whole denoising chain.

Public API (pure, jittable, vmappable over seeds):

    actor_params = init_actor(key, obs_dim, chunk_shape, config)   # or a BC checkpoint's params
    state = init(key, obs_dim, chunk_shape, config, actor_params)  # -> OGPOState
    state, metrics = update(state, batch, success_batch)     # one actor + one critic step
    chunk = act(state, obs, key)                             # mode: config.rollout_mode, or
                                                             # 'ode' | 'sde' | 'best_of_n' (static)
    params, opt_state, metrics = bc_step(config, chunk_shape, params, opt_state, step, data, key)

`batch` is a dict of chunk transitions: obs (B, obs_dim), actions (B, H, da), rewards (B, H),
valid (B, H), next_obs (B, obs_dim), terminal (B,), B >= ppo_batch_size (extra keys are ignored).
`success_batch` holds obs, actions, valid from successful episodes (OGPO+ flow-matching BC); None
regularizes on `batch` instead (a trace-time choice: `ogpo_jax.data.replay.sample_success` gives a
jittable batch that falls back to replay rows until the success buffer holds enough). `init` and
`update` check params, keys and shapes at trace time and name the offending field.

`update` = `actor_step` (skipped during the critic-only warm-up) + `critic_step` + the critics'
Polyak average. `actor_step` reads top-down: `sample_group` (G chains per state from the EMA actor,
valued once by the target critics) -> `group_advantages` (baseline, strategy, chi-square) ->
`OBJECTIVES[config.extraction]` -> `_gradient_step` (+ lambda * success-buffer BC, then the EMA).
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from ogpo_jax.algorithms import checks, common, extraction
from ogpo_jax.algorithms import critic as critic_lib
from ogpo_jax.algorithms.actor import (actor_apply, actor_module, actor_optimizer, bc_step,  # noqa: F401
                                       init_actor_params, sample_actions)
from ogpo_jax.algorithms.advantages import awr_weights, chi2_advantage, chi2_upper_clip, compute_advantage
from ogpo_jax.algorithms.advantages import postprocess as postprocess_advantage
from ogpo_jax.algorithms.base import Algorithm
from ogpo_jax.algorithms.config import ROLLOUT_MODES, AlgoConfig, OGPOConfig, swept
from ogpo_jax import gcp
from ogpo_jax.gcp import flow
from ogpo_jax.networks import CriticEnsemble


NAME = "ogpo"
ACT_MODES = ROLLOUT_MODES


class OGPOState(struct.PyTreeNode):
    actor: Any                 # velocity-field params (theta)
    actor_ema: Any             # EMA target actor (theta-bar): collects data, is the PPO "old" policy
    critic: Any                # critic ensemble params, heads stacked on axis 0
    critic_target: Any         # Polyak target critics
    actor_opt: Any
    critic_opt: Any
    step: jax.Array            # number of updates done (int32)
    key: jax.Array             # PRNG key consumed by `update`
    config: OGPOConfig = struct.field(pytree_node=False)
    chunk_shape: tuple = struct.field(pytree_node=False)   # (H, da)
    # Optional stabilizer state, None (no leaves) unless its setting is on, so a checkpoint holds
    # only what its config uses.
    actor_slow: Any = None     # chi2_enabled: slow EMA reference actor of the chi-square ratio
    chi2_target_w: Any = None  # chi2_enabled: mean/min blend weight of the TD target, from the last actor step
    value: Any = None          # baseline='value': V(s) params
    value_opt: Any = None      # baseline='value': its optimizer state
    hparams: Any = None        # a sweep member's own values of SWEEPABLE fields (`config.swept`)
    obs_dim: int | None = struct.field(pytree_node=False, default=None)   # set by `init`; checks `update`'s batches

    @property
    def action_dim(self) -> int:
        return self.chunk_shape[0] * self.chunk_shape[1]


# ----------------------------------------------------------------------------- networks

def critic_module(config: OGPOConfig, num_heads: int | None = None) -> CriticEnsemble:
    return critic_lib.module(config, num_heads)


value_module = critic_lib.value_module


def actor_apply_fn(state: OGPOState):
    return actor_apply(state.config, state.action_dim)


def critic_values(state: OGPOState, params, obs, actions, heads=None) -> jax.Array:
    """Per-head Q: obs (B, obs_dim), actions (B, H, da) or (B, D) -> (M, B); `heads` (int array of
    m head indices) evaluates only those -> (m, B) (`critic.values`)."""
    return critic_lib.values(state.config, params, obs, actions, heads)


def critic_optimizer(config: OGPOConfig):
    return critic_lib.optimizer(config)


def as_config(config) -> OGPOConfig:
    if isinstance(config, AlgoConfig):       # another algorithm's config: `check_config` names it
        return config
    if config is None:
        return OGPOConfig()
    if isinstance(config, Mapping) or hasattr(config, "items"):
        return OGPOConfig.from_dict(config)
    raise TypeError(f"config must be an OGPOConfig or a mapping, got {type(config).__name__}")


def check_config(config: OGPOConfig) -> None:
    """OGPO runs every setting `OGPOConfig` accepts (it validates itself); only the name must match."""
    if config.name != NAME:
        raise ValueError(f"algo.name must be {NAME!r} for ogpo.init, got {config.name!r}")


def init_actor(key, obs_dim: int, chunk_shape, config=None):
    """Fresh velocity-field params (the inner 'params' of `actor_module(config, H * da)`) for
    observations of `obs_dim` and chunks of `chunk_shape` = (H, da): what `init(actor_params=...)`
    and `bc_step` take. Widths from `config.actor_hidden_dims` and `config.time_emb_dim`."""
    checks.check_key(key)
    obs_dim, horizon, act_dim = checks.check_dims(obs_dim, chunk_shape)
    return init_actor_params(as_config(config), key, obs_dim, horizon * act_dim)


def bc_optimizer(config=None):
    """The actor's optimizer (AdamW on the cyclic cosine schedule): `bc_optimizer(config).init(params)`
    is the `opt_state` that `bc_step` advances."""
    return actor_optimizer(as_config(config))[0]


def check_actor_params(actor_params, obs_dim: int, chunk_shape, config=None):
    """`actor_params` unwrapped from {'params': ...} if needed, after checking its structure and
    shapes against the network `config` describes. -> the params."""
    config = as_config(config)
    actor_params = checks.unwrap_params(actor_params)
    expected = jax.eval_shape(lambda k: init_actor(k, obs_dim, chunk_shape, config), jax.random.PRNGKey(0))
    checks.check_params_like(actor_params, expected, "actor_params",
                             f"actor_hidden_dims={tuple(config.actor_hidden_dims)}, time_emb_dim={config.time_emb_dim}, "
                             f"obs_dim={obs_dim}, chunk_shape={tuple(chunk_shape)}")
    for path, leaf in jax.tree_util.tree_flatten_with_path(actor_params)[0]:
        checks.check_array(leaf, f"actor_params{jax.tree_util.keystr(path)}")
    return actor_params


def init(key, obs_dim: int, chunk_shape, config=None, actor_params=None) -> OGPOState:
    """Fresh OGPO state. `actor_params` (e.g. a BC checkpoint: the velocity field's inner params,
    as `init_actor` makes them; {'params': p} is unwrapped) initialise actor and EMA actor; they
    must match the config's actor network (checked here, naming the field that differs)."""
    config = as_config(config)
    check_config(config)
    checks.check_key(key)
    obs_dim, horizon, act_dim = checks.check_dims(obs_dim, chunk_shape)
    k_actor, k_critic, k_state = jax.random.split(key, 3)
    dim = horizon * act_dim
    obs = jnp.zeros((1, obs_dim))
    if actor_params is None:
        actor_params = init_actor(k_actor, obs_dim, (horizon, act_dim), config)
    else:
        actor_params = check_actor_params(actor_params, obs_dim, (horizon, act_dim), config)
    critic_params = critic_module(config).init(k_critic, obs, jnp.zeros((1, dim)))["params"]
    actor_tx, _ = actor_optimizer(config)
    optional = {}
    if config.chi2_enabled:
        optional.update(actor_slow=actor_params, chi2_target_w=jnp.zeros(()))
    if config.baseline == "value":
        value = value_module(config).init(jax.random.fold_in(k_critic, 1), obs)["params"]
        optional.update(value=value, value_opt=critic_optimizer(config).init(value))
    return OGPOState(
        actor=actor_params,
        actor_ema=actor_params,
        critic=critic_params,
        critic_target=critic_params,
        actor_opt=actor_tx.init(actor_params),
        critic_opt=critic_optimizer(config).init(critic_params),
        step=jnp.zeros((), jnp.int32),
        key=k_state,
        config=config,
        chunk_shape=(horizon, act_dim),
        obs_dim=int(obs_dim),
        **optional,
    )


# ----------------------------------------------------------------------------- acting

def _params_for(state: OGPOState, actor: str | None):
    actor = actor or state.config.act_with
    if actor not in ("ema", "current"):
        raise ValueError(f"actor must be 'ema' or 'current', got {actor!r}")
    return state.actor_ema if actor == "ema" else state.actor


def act(state: OGPOState, obs, key, mode: str | None = None, actor: str | None = None) -> jax.Array:
    """Action chunks for a batch of observations: obs (B, obs_dim) -> (B, H, da) in [-1, 1].

    mode (default: config.rollout_mode) 'ode': deterministic Euler (evaluation); 'sde': one
    stochastic chain; 'best_of_n': N stochastic chunks, pick the argmax of the min over
    `best_of_n_heads` random target-critic heads. `actor` is 'ema' or 'current' (default:
    config.act_with). A single obs (obs_dim,) gives (H, da). `jax.jit(act)` works as is; a mode or
    actor passed under `jit` must be static (`static_argnames=("mode", "actor")`).
    """
    _check_state(state)
    checks.check_key(key)
    if np.ndim(obs) not in (1, 2):
        raise ValueError(f"obs must have shape (B, obs_dim) or (obs_dim,), obs_dim = {state.obs_dim}; got shape "
                         f"{np.shape(obs)}")
    checks.check_array(obs, "obs", (None,) * (np.ndim(obs) - 1) + (state.obs_dim,))
    obs = checks.float_array(obs)
    if obs.ndim == 1:
        return _act(state, obs[None], key, mode, actor)[0]
    return _act(state, obs, key, mode, actor)


def _act(state: OGPOState, obs, key, mode, actor) -> jax.Array:
    cfg = state.config
    mode = cfg.rollout_mode if mode is None else mode
    params = _params_for(state, actor)
    if mode in ("ode", "sde"):
        return sample_actions(cfg, state.chunk_shape, params, obs, key, mode)
    if mode != "best_of_n":
        raise ValueError(f"mode must be 'ode', 'sde' or 'best_of_n', got {mode!r}")
    k_sample, k_heads = jax.random.split(key)
    batch, n = obs.shape[0], cfg.best_of_n
    obs_rep = jnp.repeat(obs, n, axis=0)
    cands = sample_actions(cfg, state.chunk_shape, params, obs_rep, k_sample, "sde")
    heads = jax.random.choice(k_heads, cfg.num_critics, (cfg.best_of_n_heads,), replace=False)
    q = critic_values(state, state.critic_target, obs_rep, cands, heads).min(0).reshape(batch, n)
    best = jnp.argmax(q, axis=-1)
    return cands.reshape(batch, n, *state.chunk_shape)[jnp.arange(batch), best]


# ----------------------------------------------------------------------------- actor step
#
# One actor step reads top-down: sample a group of G chains per state from the EMA actor and value
# their final actions once (`sample_group`), turn the values into advantages (`group_advantages`),
# build the extraction objective `config.extraction` names (`OBJECTIVES`), take one gradient step
# on it plus lambda * success-buffer BC (`_gradient_step`).

class Group(NamedTuple):
    """B states x G chains of the EMA actor, with the target critics' values of their actions."""
    obs: jax.Array             # (B, obs_dim)
    obs_rep: jax.Array         # (B*G, obs_dim), each state repeated G times
    chains: jax.Array          # (B*G, K+1, D) whole denoising chains
    final: jax.Array           # (B*G, D) their final actions
    old_log_prob: jax.Array    # (B*G,) the EMA actor's log-probs of its chains (PPO's "old" policy)
    q: jax.Array               # (M, B, G) per-head target-critic values of the final actions


def actor_step(state: OGPOState, batch, bc_batch, key):
    """One actor step (+ EMA update) on the first `ppo_batch_size` replay states. -> (state, metrics)"""
    cfg = state.config
    k_chain, k_bc, k_obj = jax.random.split(key, 3)
    if cfg.ppo_coeff == 0:                      # success-buffer BC alone: no chains, no critic
        return _gradient_step(state, None, bc_batch, k_bc, {})
    obs = batch["obs"][: cfg.ppo_batch_size]
    if cfg.extraction == "bptt":                # differentiates Q through the sampler: no group
        return _gradient_step(state, _bptt_objective(state, obs, k_obj), bc_batch, k_bc, {})
    group = sample_group(state, obs, k_chain)
    state, adv, clip_high, metrics = group_advantages(state, group, batch)
    objective = OBJECTIVES[cfg.extraction](state, group, batch, adv, clip_high, k_obj)
    return _gradient_step(state, objective, bc_batch, k_bc, metrics)


def sample_group(state: OGPOState, obs, key) -> Group:
    """G SDE chains of the EMA actor per state and their per-head target-critic values."""
    cfg = state.config
    obs_rep = jnp.repeat(obs, cfg.group_size, axis=0)
    # the EMA actor's log-probs of its own chains come from the sampler's step means (no second pass)
    chains, final, old_log_prob = gcp.sample_sde(actor_apply_fn(state), state.actor_ema, obs_rep, key,
                                                  cfg.gcp_spec, state.action_dim, log_prob=True)
    q = critic_values(state, state.critic_target, obs_rep, final)
    q = q.reshape(cfg.num_critics, obs.shape[0], cfg.group_size)
    return Group(obs, obs_rep, chains, final, old_log_prob, q)


def group_advantages(state: OGPOState, group: Group, batch):
    """Advantages from the group's values -> (state, adv, clip_high, metrics), adv constant.

    The baseline is the group mean, or a learned V(s) (`baseline='value'`, regressed here onto the
    group-mean Q); the advantage is `adv_strategy`'s (vanilla, conservative, penultimate, GRPO-std),
    or the chi-square-regularized one, which also lowers the PPO upper clip (`clip_high`, else None)
    and sets the critic-target blend weight. AWR-FM's advantages are of the B replay actions (B,);
    every other objective's are of the B*G chains (B*G,).
    """
    cfg, q = state.config, group.q
    metrics = {"actor/q_mean": q.mean(), "actor/q_head_std": q.std(axis=0).mean(), **head_agreement(q)}
    baseline = None
    if cfg.baseline == "value":
        baseline = value_baseline(state, group.obs)
        state, value_metrics = _value_step(state, group.obs, q.mean(axis=(0, 2)))
        metrics.update(value_metrics, **{"value/v_mean": baseline.mean()})
    baseline = jax.lax.stop_gradient(baseline)
    clip_high = None
    # OGPO-NN clips advantages at 0; for AW-OGPO `nonneg_advantage` means positive-only weights
    clip_at_zero = cfg.nonneg_advantage and cfg.extraction != "aw_ogpo"

    if cfg.extraction == "awr_fm":
        # A = mean_m Q_m(s, a_replay) - baseline (group mean or V(s))
        q_data = critic_values(state, state.critic_target, group.obs, _replay_actions(state, batch)).mean(0)
        b = q.mean(axis=(0, 2)) if baseline is None else baseline
        adv = jax.lax.stop_gradient(q_data - b)
        metrics.update({"actor/adv_abs_mean": jnp.abs(adv).mean()})
        return state, adv, clip_high, metrics

    if cfg.chi2_enabled:
        apply_fn, spec = actor_apply_fn(state), cfg.gcp_spec
        num_states, group_size = q.shape[1:]
        lp_now = gcp.chain_log_prob(apply_fn, state.actor, group.obs_rep, group.chains, spec)
        lp_slow = gcp.chain_log_prob(apply_fn, state.actor_slow, group.obs_rep, group.chains, spec)
        ratio_slow = jnp.exp(lp_now - lp_slow).reshape(num_states, group_size)
        adv, beta, w = chi2_advantage(q, ratio_slow, cfg.chi2_beta_base, cfg.chi2_alpha, cfg.chi2_q_std_target)
        adv = postprocess_advantage(adv, q, cfg.adv_std_normalize, clip_at_zero)
        clip_high = chi2_upper_clip(swept(state).clip_epsilon, cfg.chi2_r_max, beta)
        state = state.replace(chi2_target_w=jax.nn.sigmoid(cfg.chi2_alpha * (ratio_slow.mean() - 1.0)))
        metrics.update({"chi2/ratio_mean": ratio_slow.mean(), "chi2/ratio_max": ratio_slow.max(),
                        "chi2/beta": beta, "chi2/blend_w": w.mean()})
    else:
        adv = compute_advantage(q, cfg.adv_strategy, baseline, cfg.adv_std_normalize, clip_at_zero)
    adv = jax.lax.stop_gradient(adv.reshape(-1))
    metrics.update({"actor/adv_nonzero_frac": jnp.mean(adv != 0), "actor/adv_abs_mean": jnp.abs(adv).mean(),
                    "actor/adv_min": adv.min()})
    if 0 < cfg.ppo_top_k < cfg.group_size:     # states whose nonzero chains all fit in the top k
        nonzero = (adv.reshape(q.shape[1:]) != 0).sum(-1)
        metrics["actor/top_k_exact_frac"] = jnp.mean(nonzero <= cfg.ppo_top_k)
    return state, adv, clip_high, metrics


def head_agreement(q) -> dict:
    """Whether the heads agree on the ranking of one state's chains, from per-head group
    advantages A_m = Q_m - mean_g Q_m (per-head offsets cancel, unlike in `actor/q_head_std`):

    actor/adv_head_agreement   mean over chains of |mean_m sign(A_m)|: 1 when every head gives a
                               chain the same sign, 0 when they split evenly
    actor/adv_head_std         mean over chains of the std over heads of A_m, against
    actor/adv_mean_abs         the mean |mean_m A_m|: a spread above it means the heads' advantages
                               are mostly disagreement."""
    adv = q - q.mean(axis=-1, keepdims=True)                 # (M, B, G)
    return {"actor/adv_head_agreement": jnp.abs(jnp.sign(adv).mean(0)).mean(),
            "actor/adv_head_std": adv.std(axis=0).mean(), "actor/adv_mean_abs": jnp.abs(adv.mean(0)).mean()}


def _replay_actions(state: OGPOState, batch):
    return batch["actions"][: state.config.ppo_batch_size]


# Extraction objectives: (state, group, batch, adv, clip_high, key) -> objective(params) -> (loss, metrics),
# a loss of the actor params alone (chains, advantages and old log-probs are constants).

def _ppo_objective(state: OGPOState, group: Group, batch, adv, clip_high, key):
    """OGPO: the clipped PPO surrogate over whole chains, ratio against the EMA actor; over the top
    `ppo_top_k` chains of each group by |advantage| and the last `ft_flow_steps` denoising steps
    where those are set."""
    cfg = state.config
    obs, chains, old_log_prob = jax.lax.stop_gradient((group.obs_rep, group.chains, group.old_log_prob))
    scale = 1.0
    if 0 < cfg.ppo_top_k < cfg.group_size:
        flat = top_k_chains(adv, group.obs.shape[0], cfg.group_size, cfg.ppo_top_k)
        obs, chains, old_log_prob, adv = obs[flat], chains[flat], old_log_prob[flat], adv[flat]
        scale = cfg.ppo_top_k / cfg.group_size
    log_prob_fn = None
    if 0 < cfg.ft_flow_steps < cfg.flow_steps:
        apply_fn, last = actor_apply_fn(state), cfg.ft_flow_steps
        log_prob_fn = lambda p, o, c: flow.late_log_prob(apply_fn, p, o, c, cfg.gcp_spec, last)  # noqa: E731
        old_log_prob = jax.lax.stop_gradient(log_prob_fn(state.actor_ema, obs, chains))
    return _ppo_surrogate(state, obs, chains, old_log_prob, adv, clip_high, log_prob_fn, scale)


def top_k_chains(adv, num_states: int, group_size: int, k: int) -> jax.Array:
    """Flat indices (B * k,) of the k chains of each state's group with the largest |advantage|."""
    _, idx = jax.lax.top_k(jnp.abs(adv.reshape(num_states, group_size)), k)
    return (jnp.arange(num_states)[:, None] * group_size + idx).reshape(-1)


def _ppo_surrogate(state: OGPOState, obs, chains, old_log_prob, adv, clip_high, log_prob_fn=None, scale=1.0):
    cfg = swept(state)
    high = 1.0 + cfg.clip_epsilon if clip_high is None else clip_high
    return lambda p: extraction.ppo_objective(actor_apply_fn(state), p, obs, chains, old_log_prob, adv,
                                              cfg.gcp_spec, 1.0 - cfg.clip_epsilon, high, log_prob_fn, scale)


def _awr_fm_objective(state: OGPOState, group: Group, batch, adv, clip_high, key):
    """AWR-FM: flow matching on the replay actions weighted by exp(A / beta)."""
    cfg = state.config
    weights = awr_weights(adv, cfg.awr_beta, cfg.awr_max_weight, cfg.nonneg_advantage)
    actions = _replay_actions(state, batch)
    return lambda p: extraction.weighted_fm_objective(actor_apply_fn(state), p, group.obs, actions, weights, key,
                                                      cfg.gcp_spec)


def _aw_ogpo_objective(state: OGPOState, group: Group, batch, adv, clip_high, key):
    """AW-OGPO: flow matching on the group's own final actions weighted by exp(A / beta)."""
    cfg = state.config
    weights = awr_weights(adv, cfg.awr_beta, cfg.awr_max_weight, cfg.nonneg_advantage)
    actions = jax.lax.stop_gradient(group.final).reshape(-1, *state.chunk_shape)
    return lambda p: extraction.weighted_fm_objective(actor_apply_fn(state), p, group.obs_rep, actions,
                                                      weights, key, cfg.gcp_spec)


def _ofpo_objective(state: OGPOState, group: Group, batch, adv, clip_high, key):
    """OFPO: the clipped surrogate with FPO++ ratios from Monte-Carlo CFM losses of the group's actions."""
    cfg, apply_fn = swept(state), actor_apply_fn(state)
    actions = jax.lax.stop_gradient(group.final)
    t, x0 = extraction.ofpo_draws(key, actions.shape[0], cfg.ofpo_mc_samples, state.action_dim)
    old = jax.lax.stop_gradient(flow.cfm_losses(apply_fn, state.actor_ema, group.obs_rep, actions, t, x0))
    return lambda p: extraction.ofpo_objective(apply_fn, p, group.obs_rep, actions, old, adv, t, x0,
                                               1.0 - cfg.clip_epsilon, 1.0 + cfg.clip_epsilon)


def _bptt_objective(state: OGPOState, obs, key):
    """BPTT: -Q of the ODE sample, differentiated through the sampler (critic params held fixed)."""
    critic = jax.lax.stop_gradient(state.critic)
    q_fn = lambda o, a: critic_values(state, critic, o, a)
    return lambda p: extraction.bptt_objective(actor_apply_fn(state), p, obs, key, state.config.gcp_spec,
                                               state.action_dim, q_fn)


OBJECTIVES = {"ppo": _ppo_objective, "awr_fm": _awr_fm_objective, "aw_ogpo": _aw_ogpo_objective,
              "ofpo": _ofpo_objective}      # + 'bptt' (`_bptt_objective`), which needs no group


def actor_loss(params, state: OGPOState, obs, chains, old_log_prob, advantage, bc_batch, key,
               clip_high=None):
    """OGPO's actor loss: ppo_coeff * clipped PPO over whole chains + lambda * flow-matching BC.

    obs (N, obs_dim) and chains (N, K+1, D) for N = B * G chains drawn from the EMA actor;
    old_log_prob, advantage (N,) are constants (no gradient through sampling or the critic).
    `clip_high` overrides the upper ratio clip 1 + eps (chi-square regularization lowers it).
    Returns (loss, metrics).
    """
    objective = _ppo_surrogate(state, obs, chains, old_log_prob, advantage, clip_high)
    return _actor_loss_fn(state, objective, bc_batch, key)(params)


def _actor_loss_fn(state: OGPOState, objective, bc_batch, key):
    """params -> (ppo_coeff * objective + lambda * success-buffer BC, metrics); `objective` None:
    the BC term alone (`ppo_coeff == 0`)."""
    cfg = swept(state)
    apply_fn = actor_apply_fn(state)

    def bc_loss(params):
        return gcp.bc_loss(apply_fn, params, bc_batch["obs"], bc_batch["actions"], bc_batch["valid"], key,
                           state.config.gcp_spec)

    def loss_fn(params):
        if objective is None:
            bc = bc_loss(params)
            return cfg.bc_coeff * bc, {"actor/bc_loss": bc}
        loss, metrics = objective(params)
        bc = bc_loss(params) if state.config.bc_coeff > 0 else jnp.zeros(())
        return cfg.ppo_coeff * loss + cfg.bc_coeff * bc, dict(metrics, **{"actor/bc_loss": bc})

    return loss_fn


def _gradient_step(state: OGPOState, objective, bc_batch, key, extra):
    """One optimizer step of the actor on `_actor_loss_fn`, then its EMA (and the chi-square slow
    reference). -> (state, metrics + `extra`)."""
    cfg = swept(state)
    loss_fn = _actor_loss_fn(state, objective, bc_batch, key)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.actor)
    tx, schedule = actor_optimizer(cfg)
    updates, actor_opt = tx.update(grads, state.actor_opt, state.actor)
    actor = optax.apply_updates(state.actor, updates)
    actor_ema = common.polyak(state.actor_ema, actor, cfg.actor_tau)
    if cfg.chi2_enabled:
        state = state.replace(actor_slow=common.polyak(state.actor_slow, actor, cfg.chi2_tau_slow))
    metrics.update({
        "actor/loss": loss,
        "actor/grad_norm": common.tree_norm(grads),
        "actor/lr": schedule(jnp.maximum(state.step - cfg.critic_warmup_updates, 0)),
        "actor/ema_distance": common.tree_norm(jax.tree_util.tree_map(jnp.subtract, actor, actor_ema)),
        **extra,
    })
    return state.replace(actor=actor, actor_ema=actor_ema, actor_opt=actor_opt), metrics


def value_baseline(state: OGPOState, obs) -> jax.Array:
    """V(s) of the value-baseline ablation: obs (B, obs_dim) -> (B,)."""
    return value_module(state.config).apply({"params": state.value}, obs)


def _value_step(state: OGPOState, obs, target):
    """One regression step of V(s) onto `target` (B,) (the group-mean Q of the EMA actor)."""
    cfg = swept(state)

    def loss_fn(params):
        v = value_module(cfg).apply({"params": params}, obs)
        return jnp.mean(jnp.square(v - target))

    loss, grads = jax.value_and_grad(loss_fn)(state.value)
    updates, opt = critic_optimizer(cfg).update(grads, state.value_opt, state.value)
    return state.replace(value=optax.apply_updates(state.value, updates), value_opt=opt), {"value/loss": loss}


# ----------------------------------------------------------------------------- critic step

def reduce_samples(x, how: str):
    """Reduce over the last axis (Q-variance reduction over G' next-action samples)."""
    if how == "mean":
        return x.mean(-1)
    if how == "median":
        return jnp.median(x, axis=-1)
    n = x.shape[-1]
    lo, hi = n // 4, n - n // 4
    return jnp.sort(x, axis=-1)[..., lo:hi].mean(-1)   # trimmed mean of the middle half


def td_target(state: OGPOState, batch, key) -> jax.Array:
    """n-step chunk TD target at a' ~ EMA actor (SDE), heads combined by `aggregate_heads`. -> (B,)

    With `q_vr_num_samples` = G' > 1, each head's value at s' is reduced over G' next-action
    samples (mean / median / trimmed mean of the middle half) before the heads are combined.
    """
    cfg, spec, dim = state.config, state.config.gcp_spec, state.action_dim
    n = cfg.q_vr_num_samples
    next_obs = jnp.repeat(batch["next_obs"], n, axis=0)
    _, next_actions = gcp.sample_sde(actor_apply_fn(state), state.actor_ema, next_obs, key, spec, dim)
    next_q = critic_values(state, state.critic_target, next_obs, next_actions)      # (M, B*n)
    next_q = next_q.reshape(cfg.num_critics, -1, n)
    next_q = reduce_samples(next_q, cfg.q_vr_reduction) if n > 1 else next_q[..., 0]
    next_v = aggregate_heads(state, next_q)
    return common.nstep_target(batch["rewards"], batch["valid"], batch["terminal"], next_v, cfg.discount)


def aggregate_heads(state: OGPOState, next_q) -> jax.Array:
    """Combine target heads (M, B) -> (B,): mean (paper), min (pessimistic ablation), or with
    chi-square regularization the blend (1 - w) mean + w min, w from the last actor step."""
    cfg = state.config
    if cfg.target_aggregation == "min":
        return next_q.min(0)
    if cfg.chi2_enabled:
        w = state.chi2_target_w
        return (1.0 - w) * next_q.mean(0) + w * next_q.min(0)
    return next_q.mean(0)


def critic_loss(params, state: OGPOState, batch, target):
    return critic_lib.td_loss(state.config, params, batch["obs"], batch["actions"], target)


def critic_step(state: OGPOState, batch, key):
    target = jax.lax.stop_gradient(td_target(state, batch, key))
    (_, metrics), grads = jax.value_and_grad(critic_loss, has_aux=True)(state.critic, state, batch, target)
    updates, critic_opt = critic_optimizer(swept(state)).update(grads, state.critic_opt, state.critic)
    critic = optax.apply_updates(state.critic, updates)
    metrics["critic/grad_norm"] = common.tree_norm(grads)
    return state.replace(critic=critic, critic_opt=critic_opt), metrics


def _check_state(state) -> None:
    if not isinstance(state, OGPOState):
        raise TypeError(f"state must be the OGPOState that ogpo.init returns, got {type(state).__name__}")


def _checked_batches(state: OGPOState, batch, success_batch):
    """`batch` and `success_batch` checked (named errors) and as arrays, float where the networks
    read them (nested lists and integer inputs pass the checks)."""
    _check_state(state)
    cfg = state.config
    k = cfg.critic_updates_per_update
    min_rows = cfg.ppo_batch_size if cfg.ppo_coeff != 0 else 1
    if k > 1:
        min_rows = max(min_rows, k * cfg.batch_size)
    checks.check_batch(batch, state.obs_dim, state.chunk_shape, "batch", min_rows=min_rows)
    if success_batch is not None:
        checks.check_batch(success_batch, state.obs_dim, state.chunk_shape, "success_batch", checks.BC_SHAPES,
                           min_rows=k * cfg.success_batch_size if k > 1 and cfg.success_critic_td else 1)
    def as_arrays(b):
        if b is None:
            return None
        return {k: checks.float_array(v) if k in ("obs", "next_obs", "actions", "rewards") else jnp.asarray(v)
                for k, v in b.items()}

    return as_arrays(batch), as_arrays(success_batch)


def _rows(tree, start: int, count: int):
    return jax.tree_util.tree_map(lambda x: x[start:start + count], tree)


def update(state: OGPOState, batch, success_batch=None):
    """One OGPO update: actor PPO step (+ EMA), critic TD step(s), critic Polyak. Pure.

    During the first `config.critic_warmup_updates` updates the actor step is skipped (its metrics
    read 0) and only the critic learns. With `critic_updates_per_update` = k > 1, `batch` holds
    k x batch_size rows (and `success_batch` k x success_batch_size with `success_critic_td`): the
    critic takes one TD step per slice (each followed by its success-slice step), the actor step
    uses the first slice, and the critics' Polyak average follows once per update.
    """
    cfg = state.config
    k = cfg.critic_updates_per_update
    batch, success_batch = _checked_batches(state, batch, success_batch)
    key, k_actor, k_critic, k_succ = jax.random.split(state.key, 4)
    state = state.replace(key=key)
    if k > 1:
        batches = [_rows(batch, i * cfg.batch_size, cfg.batch_size) for i in range(k)]
        success_batches = ([_rows(success_batch, i * cfg.success_batch_size, cfg.success_batch_size)
                            for i in range(k)] if success_batch is not None else [None] * k)
        batch, success_batch = batches[0], success_batches[0]
    else:
        batches, success_batches = [batch], [success_batch]
    bc_batch = success_batch if success_batch is not None else batch
    if cfg.critic_warmup_updates > 0:
        def skip(state, *_):
            shapes = jax.eval_shape(actor_step, state, batch, bc_batch, k_actor)[1]
            return state, jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        state, metrics = jax.lax.cond(state.step >= cfg.critic_warmup_updates, actor_step, skip,
                                      state, batch, bc_batch, k_actor)
    else:
        state, metrics = actor_step(state, batch, bc_batch, k_actor)
    critic_metrics, succ_losses = [], []
    for i, (b, sb) in enumerate(zip(batches, success_batches)):
        state, m = critic_step(state, b, jax.random.fold_in(k_critic, i) if k > 1 else k_critic)
        critic_metrics.append(m)
        if cfg.success_critic_td and sb is not None:
            state, succ = critic_step(state, sb, jax.random.fold_in(k_succ, i) if k > 1 else k_succ)
            succ_losses.append(succ["critic/loss"])
    metrics.update(jax.tree_util.tree_map(lambda *v: sum(v) / len(v), *critic_metrics))
    if succ_losses:
        metrics["critic/success_loss"] = sum(succ_losses) / len(succ_losses)
    critic_target = common.polyak(state.critic_target, state.critic, swept(state).critic_tau)
    return state.replace(critic_target=critic_target, step=state.step + 1), metrics


# ----------------------------------------------------------------------------- checkpoints

_OPTIONAL_FIELDS = ("actor_slow", "chi2_target_w", "value", "value_opt")


def older_layout(state: OGPOState) -> dict:
    """`state` in the layout of checkpoints that kept the optional fields in one `aux` dict, so the
    checkpointer can still read them (`training/checkpoint.py`)."""
    fields = ("actor", "actor_ema", "critic", "critic_target", "actor_opt", "critic_opt", "step", "key")
    tree = {name: getattr(state, name) for name in fields}
    tree["aux"] = {name: getattr(state, name) for name in _OPTIONAL_FIELDS if getattr(state, name) is not None}
    return tree


def from_older_layout(tree: dict, like: OGPOState) -> OGPOState:
    """Inverse of `older_layout`: the restored tree back into an `OGPOState` shaped like `like`."""
    fields = {name: value for name, value in tree.items() if name != "aux"}
    return like.replace(**fields, **tree["aux"])


ALGORITHM = Algorithm(name=NAME, description="OGPO: chunked critic ensemble + PPO over the whole denoising chain",
                      init=init, update=update, act=act, act_modes=ACT_MODES, check_config=check_config,
                      target_q=critic_lib.target_q, config=OGPOConfig)


# ----------------------------------------------------------------------------- deprecated names

_DEPRECATED = {"TrainState": ("OGPOState", OGPOState)}


def __getattr__(name: str):
    """Names renamed in 0.2.0 stay importable, with a warning, until 0.3.0 (CHANGELOG.md)."""
    if name in _DEPRECATED:
        new, value = _DEPRECATED[name]
        warnings.warn(f"ogpo.{name} is deprecated since ogpo-jax 0.2.0 and is removed in 0.3.0: use ogpo.{new}",
                      DeprecationWarning, stacklevel=2)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
