"""The OGPO act / store / update loop as one compiled `lax.scan` per logging interval.

One *iteration* (DESIGN §4, "update unit"): every env acts one chunk (num_envs x H env steps, fewer
where episodes end inside a chunk), the chunk transitions go into the replay ring and the success
staging area, then `updates_per_iteration` OGPO updates run (once `start_training` env steps have
been collected). `make_interval(...)` returns a jitted function that runs `num_iterations`
iterations and returns per-iteration metrics; Python only runs between intervals.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct

from ogpo_jax.algorithms import ogpo
from ogpo_jax.data import replay as rb
from ogpo_jax.envs import core as env_core
from ogpo_jax.envs.core import AutoResetWrapper, ChunkWrapper, VmapWrapper


class LoopState(struct.PyTreeNode):
    agent: ogpo.TrainState
    replay: rb.ReplayBuffer
    success: rb.ReplayBuffer
    staging: rb.SuccessStaging
    env_state: object
    key: jax.Array
    env_steps: jax.Array          # int32, environment steps taken (valid steps only)
    iteration: jax.Array          # int32
    episode_return: jax.Array     # (num_envs,) running return of the current episodes
    episode_length: jax.Array     # (num_envs,)


def training_env(env, horizon: int, num_envs: int):
    """task (with EpisodeWrapper) -> chunked, auto-resetting, batched env."""
    return VmapWrapper(AutoResetWrapper(ChunkWrapper(env, horizon)), num_envs)


def init_loop(key, env, agent: ogpo.TrainState, obs_dim: int, train_cfg, episode_length: int) -> LoopState:
    horizon = agent.chunk_shape[0]
    benv = training_env(env, horizon, train_cfg.num_envs)
    k_env, k_loop = jax.random.split(key)
    example = rb.transition_spec(obs_dim, agent.chunk_shape)
    max_chunks = -(-episode_length // horizon)
    zeros = jnp.zeros((train_cfg.num_envs,))
    return LoopState(
        agent=agent,
        replay=rb.init_buffer(example, train_cfg.replay_capacity),
        success=rb.init_buffer(example, train_cfg.success_capacity),
        staging=rb.init_staging(example, train_cfg.num_envs, max_chunks),
        env_state=_reset(benv, env, k_env),
        key=k_loop,
        env_steps=jnp.zeros((), jnp.int32),
        iteration=jnp.zeros((), jnp.int32),
        episode_return=zeros,
        episode_length=zeros,
    )


def _reset(benv, env, key):
    # jitted: op-by-op MJX reset of the Can arm took minutes on the 2-core CPU. Under an outer
    # trace (jax.eval_shape of a checkpoint template, vmap) a nested jit may not carry
    # compiler_options, and the outer transformation compiles it anyway.
    if isinstance(key, jax.core.Tracer):
        return benv.reset(key)
    return jax.jit(benv.reset, compiler_options=env_core.compiler_options(env))(key)


def _updates(agent, replay, success, key, num_updates: int):
    """`num_updates` OGPO updates on fresh replay batches; success batch once the buffer is full enough."""
    cfg = agent.config

    def one(agent, k):
        k_batch, k_succ = jax.random.split(k)
        batch = rb.sample(replay, k_batch, cfg.batch_size)
        succ = rb.sample(success, k_succ, cfg.success_batch_size)
        ready = success.size >= cfg.success_batch_size
        # Before the success buffer can fill a batch, regularize on the replay batch (paper code).
        fallback = {k: batch[k][: cfg.success_batch_size] if cfg.success_batch_size <= cfg.batch_size
                    else batch[k][jnp.arange(cfg.success_batch_size) % cfg.batch_size] for k in succ}
        succ = jax.tree_util.tree_map(lambda a, b: jnp.where(ready, a, b), succ, fallback)
        return ogpo.update(agent, batch, succ)

    agent, metrics = jax.lax.scan(one, agent, jax.random.split(key, num_updates))
    return agent, jax.tree_util.tree_map(jnp.mean, metrics)


def make_interval(env, train_cfg, num_iterations: int, vmap_seeds: bool = False):
    """-> jitted `interval(loop_state) -> (loop_state, metrics)`; metrics leaves have shape (num_iterations,).

    `vmap_seeds=True`: the loop state carries a leading seed axis (`stack_seeds`) and all seeds run
    as one `vmap`-ed program (one compile, one device run); metrics get shape (S, num_iterations).
    """
    num_updates = int(train_cfg.updates_per_iteration)

    def interval(ls: LoopState):
        agent0 = ls.agent
        benv = training_env(env, agent0.chunk_shape[0], train_cfg.num_envs)
        cfg = agent0.config
        metric_shapes = jax.eval_shape(
            functools.partial(_updates, num_updates=num_updates), agent0, ls.replay, ls.success, ls.key)[1]

        def iteration(ls: LoopState, _):
            key, k_act, k_upd = jax.random.split(ls.key, 3)
            obs = ls.env_state.obs
            actions = ogpo.act(ls.agent, obs, k_act, mode=cfg.rollout_mode)
            nxt = benv.step(ls.env_state, actions)
            info = nxt.info
            rows = {
                "obs": obs, "actions": actions, "rewards": info["rewards"], "valid": info["valid"],
                "next_obs": info["final_obs"], "success": info["success"],
                # A time limit is a real termination when the task puts time in its observation
                # (the state at the limit is never acted from, so its value is never learned).
                "terminal": info["terminal"] | (info["truncated"] & train_cfg.truncation_is_terminal),
            }
            replay = rb.insert(ls.replay, rows)
            staging, success = rb.stage_and_flush(ls.staging, ls.success, rows, nxt.done, info["success"])
            steps = info["valid"].sum(-1)
            env_steps = ls.env_steps + steps.sum().astype(jnp.int32)
            ep_ret = ls.episode_return + nxt.reward
            ep_len = ls.episode_length + steps
            done = nxt.done.astype(jnp.float32)

            can_update = (env_steps >= train_cfg.start_training) & (replay.size >= cfg.batch_size)
            agent, upd_metrics = jax.lax.cond(
                can_update,
                lambda a, k: _updates(a, replay, success, k, num_updates),
                lambda a, k: (a, jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)),
                ls.agent, k_upd)
            metrics = dict(upd_metrics)
            metrics.update({
                "updated": can_update.astype(jnp.float32),
                "episodes": done.sum(),
                "episode_success_sum": (done * info["success"]).sum(),
                "episode_return_sum": (done * ep_ret).sum(),
                "episode_length_sum": (done * ep_len).sum(),
                "env_steps": env_steps,
                "replay_size": replay.size,
                "success_buffer_size": success.size,
            })
            ls = ls.replace(
                agent=agent, replay=replay, success=success, staging=staging, env_state=nxt, key=key,
                env_steps=env_steps, iteration=ls.iteration + 1,
                episode_return=ep_ret * (1.0 - done), episode_length=ep_len * (1.0 - done))
            return ls, metrics

        return jax.lax.scan(iteration, ls, None, length=num_iterations)

    fn = jax.vmap(interval) if vmap_seeds else interval
    return jax.jit(fn, compiler_options=env_core.compiler_options(env))


def stack_seeds(states):
    """[LoopState per seed] -> one LoopState with a leading seed axis (for `vmap_seeds=True`)."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *states)


def unstack_seed(state, i: int):
    """Seed `i` of a stacked state."""
    return jax.tree_util.tree_map(lambda x: x[i], state)


def summarize_interval(metrics) -> dict:
    """Per-iteration metrics (numpy) -> one dict for logging: update metrics averaged over the
    iterations that updated, episode statistics pooled over the episodes that finished."""
    import numpy as np

    m = {k: np.asarray(v) for k, v in metrics.items()}
    updated = m.pop("updated")
    out = {}
    n_upd = updated.sum()
    for k, v in m.items():
        if "/" in k and n_upd > 0:
            out[k] = float((v * updated).sum() / n_upd)
    episodes = m["episodes"].sum()
    if episodes > 0:
        out["rollout/success"] = float(m["episode_success_sum"].sum() / episodes)
        out["rollout/return"] = float(m["episode_return_sum"].sum() / episodes)
        out["rollout/length"] = float(m["episode_length_sum"].sum() / episodes)
    out["rollout/episodes"] = float(episodes)
    out["env_steps"] = int(m["env_steps"][-1])
    out["replay_size"] = int(m["replay_size"][-1])
    out["success_buffer_size"] = int(m["success_buffer_size"][-1])
    out["updates_in_interval"] = float(n_upd)
    return out
