"""Flow-matching behaviour cloning with the "clipped" early stop (the paper's weak BC initialization).

Trains in jitted blocks of `eval_every` steps; after each block evaluates the stochastic (SDE)
sampler and stops as soon as its success reaches `stop_success`, so finetuning starts from a
deliberately weak policy.
"""
from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import optax

from ogpo_jax.algorithms.actor import actor_apply, init_actor_params, sample_actions
from ogpo_jax.algorithms.config import AlgoConfig
from ogpo_jax import gcp
from ogpo_jax.training import progress


def make_bc_block(config: AlgoConfig, chunk_shape, dataset: dict, batch_size: int, lr: float, steps: int,
                  encoder=None, augment_shift: int = 0):
    """-> jitted `block(params, opt_state, key) -> (params, opt_state, mean_loss)` of `steps` steps.

    With an `encoder` (`ogpo_jax.encoders.PixelEncoder`, camera observations) the params are
    {'encoder', 'actor'}, trained together: each batch's images are shifted by up to
    `augment_shift` pixels, encoded, and the actor's flow-matching loss reaches the encoder."""
    apply_fn = actor_apply(config, chunk_shape[0] * chunk_shape[1])
    tx = optax.adam(lr)
    data = jax.tree_util.tree_map(jnp.asarray, dataset)
    n = data["obs"].shape[0]

    def loss_fn(params, key):
        k_idx, k_loss = jax.random.split(key)
        idx = jax.random.randint(k_idx, (batch_size,), 0, n)
        obs, actor_params = data["obs"][idx], params
        if encoder is not None:
            k_aug = jax.random.fold_in(k_idx, 1)
            # patches: the convolutions' gradient inside this scan is ~25x slower otherwise (XLA CPU)
            obs = encoder.encode(params["encoder"], encoder.augment(obs, k_aug, augment_shift), patches=True)
            actor_params = params["actor"]
        return gcp.bc_loss(apply_fn, actor_params, obs, data["actions"][idx], data["valid"][idx], k_loss,
                           config.gcp_spec)

    @jax.jit
    def block(params, opt_state, key):
        def step(carry, k):
            p, o = carry
            loss, grads = jax.value_and_grad(loss_fn)(p, k)
            updates, o = tx.update(grads, o, p)
            return (optax.apply_updates(p, updates), o), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), jax.random.split(key, steps))
        return params, opt_state, losses.mean()

    return block, tx


def actor_policy(config, chunk_shape, mode):
    """Policy function for the evaluator from actor params alone (static, hashable)."""
    return functools.partial(_actor_policy, config, tuple(chunk_shape), mode)


def _actor_policy(config, chunk_shape, mode, params, obs, key):
    return sample_actions(config, chunk_shape, params, obs, key, mode)


def encoded_policy(config, chunk_shape, encoder, mode):
    """Policy function of BC's {'encoder', 'actor'} params on camera observations: the images are
    encoded once per state, then the actor samples (static, hashable)."""
    return functools.partial(_encoded_policy, config, tuple(chunk_shape), encoder, mode)


def _encoded_policy(config, chunk_shape, encoder, mode, params, obs, key):
    feats = encoder.encode(params["encoder"], obs)
    return sample_actions(config, chunk_shape, params["actor"], feats, key, mode)


def train_bc(config, chunk_shape, obs_dim, dataset, evaluate, bc_cfg, key, log_fn=print, encoder=None):
    """Run clipped BC. Returns (actor_params, history list of dicts); with an `encoder` (camera
    observations) the params are {'encoder', 'actor'}, the actor reading `encoder.feature_size`.

    `evaluate(params, key) -> {'success': ...}` scores the `bc_cfg.eval_mode` sampler after every
    block of `bc_cfg.eval_every` steps (the early stop looks at it)."""
    k_init, key = jax.random.split(key)
    dim = chunk_shape[0] * chunk_shape[1]
    if encoder is None:
        params = init_actor_params(config, k_init, obs_dim, dim)
    else:
        params = {"encoder": encoder.init(jax.random.fold_in(k_init, 1)),
                  "actor": init_actor_params(config, k_init, encoder.feature_size, dim)}
        log_fn(f"[bc] {encoder.kind} encoder on {encoder.image_shape} images: "
               f"{sum(x.size for x in jax.tree_util.tree_leaves(params['encoder'])):,} params, "
               f"{encoder.features} features + {encoder.proprio_size} proprio dims; random shift "
               f"{bc_cfg.augment_shift} px")
    block, tx = make_bc_block(config, chunk_shape, dataset, bc_cfg.batch_size, bc_cfg.lr, bc_cfg.eval_every,
                              encoder=encoder, augment_shift=bc_cfg.augment_shift)
    opt_state = tx.init(params)
    stop_mode = bc_cfg.eval_mode
    n_data = int(jax.tree_util.tree_leaves(dataset)[0].shape[0])
    log_fn(f"[bc] {n_data} chunk windows, batch {bc_cfg.batch_size}, up to {bc_cfg.max_steps} steps; "
           f"{stop_mode} evaluation every {bc_cfg.eval_every} steps"
           + (f", stop at success >= {bc_cfg.stop_success}" if bc_cfg.clipped else ""))
    progress.compile_program(block, (params, opt_state, key), f"BC training block ({bc_cfg.eval_every} steps)", log_fn)
    history, step, start = [], 0, time.time()
    train_s = 0.0                     # gradient steps only: the rate excludes evaluation
    while step < bc_cfg.max_steps:
        key, k_block, k_eval = jax.random.split(key, 3)
        t0 = time.time()
        params, opt_state, loss = block(params, opt_state, k_block)
        loss = float(loss)
        train_s += time.time() - t0
        step += bc_cfg.eval_every
        t0 = time.time()
        success = float(evaluate(params, k_eval)["success"])
        eval_s = time.time() - t0
        history.append({"bc_step": step, "bc_loss": loss, f"bc_success_{stop_mode}": success,
                        "wall_seconds": time.time() - start})
        elapsed = time.time() - start
        log_fn(f"[bc] step {step:>7d}  loss {loss:.4f}  {stop_mode} success {success:.3f}  "
               f"({step / max(train_s, 1e-9):.0f} steps/s, eval {eval_s:.1f}s; {progress.duration(elapsed)} so far, "
               f"at most {progress.duration(elapsed / step * (bc_cfg.max_steps - step))} more)")
        if bc_cfg.clipped and success >= bc_cfg.stop_success:
            log_fn(f"[bc] clipped early stop: {stop_mode} success {success:.3f} >= {bc_cfg.stop_success}")
            break
    return params, history
