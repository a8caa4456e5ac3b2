"""OGPO: off-policy chunked critic ensemble + PPO over the whole denoising chain.

Public API (pure, jittable, vmappable over seeds):

    state = init(key, obs_dim, chunk_shape, config)          # -> TrainState
    state, metrics = update(state, batch, success_batch)     # one actor + one critic step
    chunk = act(state, obs, key, mode)                       # mode: 'ode' | 'sde' | 'best_of_n'

`batch` is a dict of chunk transitions: obs (B, obs_dim), actions (B, H, da), rewards (B, H),
valid (B, H), next_obs (B, obs_dim), terminal (B,). `success_batch` holds obs, actions, valid from
successful episodes (OGPO+ flow-matching BC); pass None to regularize on `batch` instead.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import struct

from ogpo_jax.algorithms import common, extraction
from ogpo_jax.algorithms.actor import actor_apply, actor_module, actor_optimizer, sample_actions  # noqa: F401
from ogpo_jax.algorithms.advantages import awr_weights, chi2_advantage, chi2_upper_clip, compute_advantage
from ogpo_jax.algorithms.advantages import postprocess as postprocess_advantage
from ogpo_jax.algorithms.base import Algorithm
from ogpo_jax.algorithms.config import ROLLOUT_MODES, OGPOConfig
from ogpo_jax.gcp import flow
from ogpo_jax.networks import CriticEnsemble, ValueNet


NAME = "ogpo"
ACT_MODES = ROLLOUT_MODES


class TrainState(struct.PyTreeNode):
    actor: Any                 # velocity-field params (theta)
    actor_ema: Any             # EMA target actor (theta-bar): collects data, is the PPO "old" policy
    critic: Any                # critic ensemble params, heads stacked on axis 0
    critic_target: Any         # Polyak target critics
    actor_opt: Any
    critic_opt: Any
    step: jax.Array            # number of updates done (int32)
    key: jax.Array             # PRNG key consumed by `update`
    # State of the optional stabilizers/ablations, present only when enabled (so checkpoints of
    # plain OGPO keep their structure): chi2 -> 'actor_slow' (slow EMA reference actor) and
    # 'chi2_target_w' (mean/min blend weight of the critic target from the last actor step);
    # baseline='value' -> 'value', 'value_opt'.
    aux: Any
    config: OGPOConfig = struct.field(pytree_node=False)
    chunk_shape: tuple = struct.field(pytree_node=False)   # (H, da)

    @property
    def action_dim(self) -> int:
        return self.chunk_shape[0] * self.chunk_shape[1]


# ----------------------------------------------------------------------------- networks

def critic_module(config: OGPOConfig, num_heads: int | None = None) -> CriticEnsemble:
    return CriticEnsemble(num_heads or config.num_critics, config.critic_hidden_dims, config.critic_layer_norm)


def value_module(config: OGPOConfig) -> ValueNet:
    return ValueNet(config.critic_hidden_dims, config.critic_layer_norm)


def actor_apply_fn(state: TrainState):
    return actor_apply(state.config, state.action_dim)


def critic_values(state: TrainState, params, obs, actions, heads=None) -> jax.Array:
    """Per-head Q: obs (B, obs_dim), actions (B, H, da) or (B, D) -> (M, B).

    `heads` (an int array of head indices, length m) evaluates only those heads -> (m, B): the
    ensemble's params are gathered first, so unselected heads cost nothing.
    """
    flat = actions.reshape(actions.shape[0], -1)
    if heads is None:
        return critic_module(state.config).apply({"params": params}, obs, flat)
    params = jax.tree_util.tree_map(lambda p: p[heads], params)
    return critic_module(state.config, heads.shape[0]).apply({"params": params}, obs, flat)


def critic_optimizer(config: OGPOConfig):
    return common.adamw(config.critic_lr, config.critic_weight_decay, config.grad_clip, config.adam_eps)


def as_config(config) -> OGPOConfig:
    if isinstance(config, OGPOConfig):
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


def init(key, obs_dim: int, chunk_shape, config=None, actor_params=None) -> TrainState:
    """Fresh OGPO state. `actor_params` (e.g. a BC checkpoint) initialise actor and EMA actor."""
    config = as_config(config)
    check_config(config)
    horizon, act_dim = (int(c) for c in chunk_shape)
    if obs_dim < 1 or horizon < 1 or act_dim < 1:
        raise ValueError(f"obs_dim and chunk_shape must be positive, got {obs_dim}, {chunk_shape}")
    k_actor, k_critic, k_state = jax.random.split(key, 3)
    dim = horizon * act_dim
    obs = jnp.zeros((1, obs_dim))
    if actor_params is None:
        actor_params = actor_module(config, dim).init(k_actor, obs, jnp.zeros((1, dim)), jnp.zeros((1,)))["params"]
    critic_params = critic_module(config).init(k_critic, obs, jnp.zeros((1, dim)))["params"]
    actor_tx, _ = actor_optimizer(config)
    aux = {}
    if config.chi2_enabled:
        aux["actor_slow"] = actor_params
        aux["chi2_target_w"] = jnp.zeros(())
    if config.baseline == "value":
        k_value = jax.random.fold_in(k_critic, 1)
        aux["value"] = value_module(config).init(k_value, obs)["params"]
        aux["value_opt"] = critic_optimizer(config).init(aux["value"])
    return TrainState(
        actor=actor_params,
        actor_ema=actor_params,
        critic=critic_params,
        critic_target=critic_params,
        actor_opt=actor_tx.init(actor_params),
        critic_opt=critic_optimizer(config).init(critic_params),
        step=jnp.zeros((), jnp.int32),
        key=k_state,
        aux=aux,
        config=config,
        chunk_shape=(horizon, act_dim),
    )


# ----------------------------------------------------------------------------- acting

def _params_for(state: TrainState, actor: str | None):
    actor = actor or state.config.act_with
    if actor not in ("ema", "current"):
        raise ValueError(f"actor must be 'ema' or 'current', got {actor!r}")
    return state.actor_ema if actor == "ema" else state.actor


def act(state: TrainState, obs, key, mode: str = "sde", actor: str | None = None) -> jax.Array:
    """Action chunks for a batch of observations: obs (B, obs_dim) -> (B, H, da) in [-1, 1].

    mode 'ode': deterministic Euler (evaluation); 'sde': one stochastic chain; 'best_of_n': N
    stochastic chunks, pick the argmax of the min over `best_of_n_heads` random target-critic heads.
    `actor` is 'ema' or 'current' (default: config.act_with). A single obs (obs_dim,) gives (H, da).
    """
    if obs.ndim == 1:
        return act(state, obs[None], key, mode, actor)[0]
    cfg = state.config
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


# ----------------------------------------------------------------------------- losses

def actor_loss(params, state: TrainState, obs, chains, old_log_prob, advantage, bc_batch, key,
               clip_high=None):
    """Clipped PPO surrogate over whole chains + lambda * flow-matching BC. Returns (loss, metrics).

    obs (N, obs_dim) and chains (N, K+1, D) for N = B * G chains drawn from the EMA actor;
    old_log_prob, advantage (N,) are constants (no gradient through sampling or the critic).
    `clip_high` overrides the upper ratio clip 1 + eps (chi-square regularization lowers it).
    """
    cfg = state.config
    high = 1.0 + cfg.clip_epsilon if clip_high is None else clip_high
    ppo_loss, metrics = extraction.ppo_objective(
        actor_apply_fn(state), params, obs, chains, old_log_prob, advantage, cfg.flow_spec,
        1.0 - cfg.clip_epsilon, high)
    return _with_bc(params, state, cfg.ppo_coeff * ppo_loss, metrics, bc_batch, key)


def _with_bc(params, state: TrainState, loss, metrics, bc_batch, key):
    """Add lambda * flow-matching BC on the success batch (OGPO+) to an extraction loss."""
    cfg = state.config
    if cfg.bc_coeff > 0:
        bc = flow.bc_loss(actor_apply_fn(state), params, bc_batch["obs"], bc_batch["actions"],
                          bc_batch["valid"], key)
    else:
        bc = jnp.zeros(())
    metrics = dict(metrics, **{"actor/bc_loss": bc})
    return loss + cfg.bc_coeff * bc, metrics


def value_baseline(state: TrainState, obs) -> jax.Array:
    """V(s) of the value-baseline ablation: obs (B, obs_dim) -> (B,)."""
    return value_module(state.config).apply({"params": state.aux["value"]}, obs)


def _value_step(state: TrainState, obs, target):
    """One regression step of V(s) onto `target` (B,) (the group-mean Q of the EMA actor)."""
    cfg = state.config

    def loss_fn(params):
        v = value_module(cfg).apply({"params": params}, obs)
        return jnp.mean(jnp.square(v - target))

    loss, grads = jax.value_and_grad(loss_fn)(state.aux["value"])
    updates, opt = critic_optimizer(cfg).update(grads, state.aux["value_opt"], state.aux["value"])
    aux = dict(state.aux, value=optax.apply_updates(state.aux["value"], updates), value_opt=opt)
    return state.replace(aux=aux), {"value/loss": loss}


def actor_step(state: TrainState, batch, bc_batch, key):
    """One actor step (+ EMA update): PPO on B states x G chains of the EMA actor, or the
    extraction objective `config.extraction` selects."""
    cfg, spec, dim = state.config, state.config.flow_spec, state.action_dim
    apply_fn = actor_apply_fn(state)
    k_chain, k_bc, k_obj = jax.random.split(key, 3)
    if cfg.ppo_coeff == 0:
        return _bc_only_actor_step(state, bc_batch, k_bc)
    obs = batch["obs"][: cfg.ppo_batch_size]
    num_states, group = obs.shape[0], cfg.group_size

    if cfg.extraction == "bptt":
        critic = jax.lax.stop_gradient(state.critic)
        q_fn = lambda o, a: critic_values(state, critic, o, a)
        objective = lambda p: extraction.bptt_objective(apply_fn, p, obs, k_obj, spec, dim, q_fn)
        return _objective_step(state, objective, bc_batch, k_bc, {})

    obs_rep = jnp.repeat(obs, group, axis=0)                             # (B*G, obs_dim)
    # the EMA actor's log-probs of its own chains come from the sampler's step means (no second pass)
    chains, final, old_log_prob = flow.sample_sde(apply_fn, state.actor_ema, obs_rep, k_chain, spec, dim,
                                                  log_prob=True)
    q = critic_values(state, state.critic_target, obs_rep, final)        # (M, B*G)
    q = q.reshape(cfg.num_critics, num_states, group)
    extra = {"actor/q_mean": q.mean(), "actor/q_head_std": q.std(axis=0).mean()}
    baseline = None
    if cfg.baseline == "value":
        baseline = value_baseline(state, obs)
        state, value_metrics = _value_step(state, obs, q.mean(axis=(0, 2)))
        extra.update(value_metrics, **{"value/v_mean": baseline.mean()})
    baseline = jax.lax.stop_gradient(baseline)
    clip_high = None
    # OGPO-NN clips advantages at 0; for AW-OGPO `nonneg_advantage` means positive-only weights
    clip_at_zero = cfg.nonneg_advantage and cfg.extraction != "aw_ogpo"

    if cfg.extraction == "awr_fm":
        # AWR on replay actions: A = mean_m Q_m(s, a_replay) - baseline (group mean or V(s))
        data_actions = batch["actions"][: cfg.ppo_batch_size]
        q_data = critic_values(state, state.critic_target, obs, data_actions).mean(0)     # (B,)
        b = q.mean(axis=(0, 2)) if baseline is None else baseline
        adv = jax.lax.stop_gradient(q_data - b)
        weights = awr_weights(adv, cfg.awr_beta, cfg.awr_max_weight, cfg.nonneg_advantage)
        objective = lambda p: extraction.weighted_fm_objective(apply_fn, p, obs, data_actions, weights, k_obj)
        extra.update({"actor/adv_abs_mean": jnp.abs(adv).mean()})
        return _objective_step(state, objective, bc_batch, k_bc, extra)

    if cfg.chi2_enabled:
        lp_now = flow.chain_log_prob(apply_fn, state.actor, obs_rep, chains, spec)
        lp_slow = flow.chain_log_prob(apply_fn, state.aux["actor_slow"], obs_rep, chains, spec)
        ratio_slow = jnp.exp(lp_now - lp_slow).reshape(num_states, group)
        adv, beta, w = chi2_advantage(q, ratio_slow, cfg.chi2_beta_base, cfg.chi2_alpha, cfg.chi2_q_std_target)
        adv = postprocess_advantage(adv, q, cfg.adv_std_normalize, clip_at_zero)
        clip_high = chi2_upper_clip(cfg.clip_epsilon, cfg.chi2_r_max, beta)
        aux = dict(state.aux, chi2_target_w=jax.nn.sigmoid(cfg.chi2_alpha * (ratio_slow.mean() - 1.0)))
        state = state.replace(aux=aux)
        extra.update({"chi2/ratio_mean": ratio_slow.mean(), "chi2/ratio_max": ratio_slow.max(),
                      "chi2/beta": beta, "chi2/blend_w": w.mean()})
    else:
        adv = compute_advantage(q, cfg.adv_strategy, baseline, cfg.adv_std_normalize, clip_at_zero)
    adv = jax.lax.stop_gradient(adv.reshape(-1))
    extra.update({"actor/adv_nonzero_frac": jnp.mean(adv != 0), "actor/adv_abs_mean": jnp.abs(adv).mean(),
                  "actor/adv_min": adv.min()})

    if cfg.extraction == "aw_ogpo":
        weights = awr_weights(adv, cfg.awr_beta, cfg.awr_max_weight, cfg.nonneg_advantage)
        actions = jax.lax.stop_gradient(final).reshape(-1, *state.chunk_shape)
        objective = lambda p: extraction.weighted_fm_objective(apply_fn, p, obs_rep, actions, weights, k_obj)
        return _objective_step(state, objective, bc_batch, k_bc, extra)

    if cfg.extraction == "ofpo":
        actions = jax.lax.stop_gradient(final)
        t, x0 = extraction.ofpo_draws(k_obj, actions.shape[0], cfg.ofpo_mc_samples, dim)
        old = jax.lax.stop_gradient(flow.cfm_losses(apply_fn, state.actor_ema, obs_rep, actions, t, x0))
        objective = lambda p: extraction.ofpo_objective(apply_fn, p, obs_rep, actions, old, adv, t, x0,
                                                        1.0 - cfg.clip_epsilon, 1.0 + cfg.clip_epsilon)
        return _objective_step(state, objective, bc_batch, k_bc, extra)

    chains, old_log_prob = jax.lax.stop_gradient((chains, old_log_prob))
    grad_fn = jax.value_and_grad(actor_loss, has_aux=True)
    (loss, metrics), grads = grad_fn(state.actor, state, obs_rep, chains, old_log_prob, adv, bc_batch,
                                     k_bc, clip_high)
    return _apply_actor_grads(state, grads, loss, metrics, extra)


def _objective_step(state: TrainState, objective, bc_batch, key, extra):
    """One actor gradient step on ppo_coeff * objective(params) + lambda * success-buffer BC,
    for the extraction ablations; `objective(params) -> (loss, metrics)`."""
    def loss_fn(params):
        loss, metrics = objective(params)
        return _with_bc(params, state, state.config.ppo_coeff * loss, metrics, bc_batch, key)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.actor)
    return _apply_actor_grads(state, grads, loss, metrics, extra)


def _bc_only_actor_step(state: TrainState, bc_batch, key):
    """`ppo_coeff == 0`: flow-matching BC on the success batch only; no chains, no critic."""
    cfg = state.config
    apply_fn = actor_apply_fn(state)

    def loss_fn(params):
        bc = flow.bc_loss(apply_fn, params, bc_batch["obs"], bc_batch["actions"], bc_batch["valid"], key)
        return cfg.bc_coeff * bc, {"actor/bc_loss": bc}

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.actor)
    return _apply_actor_grads(state, grads, loss, metrics, {})


def _apply_actor_grads(state: TrainState, grads, loss, metrics, extra):
    cfg = state.config
    tx, schedule = actor_optimizer(cfg)
    updates, actor_opt = tx.update(grads, state.actor_opt, state.actor)
    actor = optax.apply_updates(state.actor, updates)
    actor_ema = common.polyak(state.actor_ema, actor, cfg.actor_tau)
    if cfg.chi2_enabled:
        aux = dict(state.aux, actor_slow=common.polyak(state.aux["actor_slow"], actor, cfg.chi2_tau_slow))
        state = state.replace(aux=aux)
    metrics.update({
        "actor/loss": loss,
        "actor/grad_norm": common.tree_norm(grads),
        "actor/lr": schedule(jnp.maximum(state.step - cfg.critic_warmup_updates, 0)),
        "actor/ema_distance": common.tree_norm(jax.tree_util.tree_map(jnp.subtract, actor, actor_ema)),
        **extra,
    })
    return state.replace(actor=actor, actor_ema=actor_ema, actor_opt=actor_opt), metrics


def reduce_samples(x, how: str):
    """Reduce over the last axis (Q-variance reduction over G' next-action samples)."""
    if how == "mean":
        return x.mean(-1)
    if how == "median":
        return jnp.median(x, axis=-1)
    n = x.shape[-1]
    lo, hi = n // 4, n - n // 4
    return jnp.sort(x, axis=-1)[..., lo:hi].mean(-1)   # trimmed mean of the middle half


def td_target(state: TrainState, batch, key) -> jax.Array:
    """n-step chunk TD target at a' ~ EMA actor (SDE), heads combined by `aggregate_heads`. -> (B,)

    With `q_vr_num_samples` = G' > 1, each head's value at s' is reduced over G' next-action
    samples (mean / median / trimmed mean of the middle half) before the heads are combined.
    """
    cfg, spec, dim = state.config, state.config.flow_spec, state.action_dim
    n = cfg.q_vr_num_samples
    next_obs = jnp.repeat(batch["next_obs"], n, axis=0)
    _, next_actions = flow.sample_sde(actor_apply_fn(state), state.actor_ema, next_obs, key, spec, dim)
    next_q = critic_values(state, state.critic_target, next_obs, next_actions)      # (M, B*n)
    next_q = next_q.reshape(cfg.num_critics, -1, n)
    next_q = reduce_samples(next_q, cfg.q_vr_reduction) if n > 1 else next_q[..., 0]
    next_v = aggregate_heads(state, next_q)
    return common.nstep_target(batch["rewards"], batch["valid"], batch["terminal"], next_v, cfg.discount)


def aggregate_heads(state: TrainState, next_q) -> jax.Array:
    """Combine target heads (M, B) -> (B,): mean (paper), min (pessimistic ablation), or with
    chi-square regularization the blend (1 - w) mean + w min, w from the last actor step."""
    cfg = state.config
    if cfg.target_aggregation == "min":
        return next_q.min(0)
    if cfg.chi2_enabled:
        w = state.aux["chi2_target_w"]
        return (1.0 - w) * next_q.mean(0) + w * next_q.min(0)
    return next_q.mean(0)


def critic_loss(params, state: TrainState, batch, target):
    q = critic_values(state, params, batch["obs"], batch["actions"])                # (M, B)
    loss = jnp.mean(jnp.square(q - target[None]))
    return loss, {
        "critic/loss": loss,
        "critic/q_mean": q.mean(),
        "critic/q_head_std": q.std(axis=0).mean(),
        "critic/td_error": jnp.abs(q.mean(0) - target).mean(),
        "critic/target_mean": target.mean(),
    }


def critic_step(state: TrainState, batch, key):
    target = jax.lax.stop_gradient(td_target(state, batch, key))
    (_, metrics), grads = jax.value_and_grad(critic_loss, has_aux=True)(state.critic, state, batch, target)
    updates, critic_opt = critic_optimizer(state.config).update(grads, state.critic_opt, state.critic)
    critic = optax.apply_updates(state.critic, updates)
    metrics["critic/grad_norm"] = common.tree_norm(grads)
    return state.replace(critic=critic, critic_opt=critic_opt), metrics


def update(state: TrainState, batch, success_batch=None):
    """One OGPO update: actor PPO step (+ EMA), critic TD step(s), critic Polyak. Pure.

    During the first `config.critic_warmup_updates` updates the actor step is skipped (its metrics
    read 0) and only the critic learns.
    """
    cfg = state.config
    key, k_actor, k_critic, k_succ = jax.random.split(state.key, 4)
    bc_batch = success_batch if success_batch is not None else batch
    state = state.replace(key=key)
    if cfg.critic_warmup_updates > 0:
        def skip(state, *_):
            shapes = jax.eval_shape(actor_step, state, batch, bc_batch, k_actor)[1]
            return state, jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        state, metrics = jax.lax.cond(state.step >= cfg.critic_warmup_updates, actor_step, skip,
                                      state, batch, bc_batch, k_actor)
    else:
        state, metrics = actor_step(state, batch, bc_batch, k_actor)
    state, critic_metrics = critic_step(state, batch, k_critic)
    metrics.update(critic_metrics)
    if cfg.success_critic_td and success_batch is not None:
        state, succ_metrics = critic_step(state, success_batch, k_succ)
        metrics["critic/success_loss"] = succ_metrics["critic/loss"]
    critic_target = common.polyak(state.critic_target, state.critic, cfg.critic_tau)
    return state.replace(critic_target=critic_target, step=state.step + 1), metrics


ALGORITHM = Algorithm(name=NAME, description="OGPO: chunked critic ensemble + PPO over the whole denoising chain",
                      init=init, update=update, act=act, act_modes=ACT_MODES, check_config=check_config)
