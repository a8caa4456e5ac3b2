"""The act / store / update loop as one compiled `lax.scan` per logging interval.

One *iteration* (the update unit): every env acts one chunk (num_envs x H env steps, fewer
where episodes end inside a chunk), the chunk transitions go into the replay ring and the success
staging area, then `updates_per_iteration` updates of the agent's algorithm run (once `start_training` env steps have
been collected). `make_interval(...)` returns an `Interval`, the jitted program that runs
`num_iterations` iterations and returns per-iteration metrics; Python only runs between intervals.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct

from ogpo_jax.algorithms import base as algorithms
from ogpo_jax.data import replay as rb
from ogpo_jax.data import rings
from ogpo_jax.envs import core as env_core
from ogpo_jax.training import compile_cache


class LoopState(struct.PyTreeNode):
    agent: object                 # the algorithm's state (algorithms/base.py), e.g. ogpo.OGPOState
    replay: rb.ReplayBuffer
    success: rb.ReplayBuffer
    staging: rb.SuccessStaging
    env_state: object
    key: jax.Array
    env_steps: jax.Array          # int32, environment steps taken (valid steps only)
    iteration: jax.Array          # int32
    episode_return: jax.Array     # (num_envs,) running return of the current episodes
    episode_length: jax.Array     # (num_envs,)
    # on-policy algorithms only (`Algorithm.on_policy`): the current rollout, see `init_rollout`
    rollout: object = None


def step_windows(train_cfg) -> bool:
    """True when the replay keeps every env step and samples length-H windows (`train.replay_windows`)."""
    return getattr(train_cfg, "replay_windows", "chunk") == "step"


def step_ring_length(train_cfg, horizon: int) -> int:
    """Steps per env ring in step-window mode: the env steps `train.replay_capacity` chunk
    transitions hold (capacity x H), split over the envs."""
    return int(train_cfg.replay_capacity) * int(horizon) // int(train_cfg.num_envs)


def restart_host_episodes(ls: LoopState, env, train_cfg, episode_length: int) -> LoopState:
    """Fresh episodes for every env of a host-simulated task after a restore: the simulators'
    state lives in worker processes, not in the checkpoint, so the saved observations, running
    returns and the success staging of the episodes in progress are dropped."""
    horizon = ls.agent.chunk_shape[0]
    benv = env_core.batch_env(env, train_cfg.num_envs, horizon)
    k_env, key = jax.random.split(ls.key)
    example = rb.transition_spec(ls.env_state.obs.shape[-1], ls.agent.chunk_shape)
    staging = rb.init_staging(example, train_cfg.num_envs, -(-episode_length // horizon))
    # distinct arrays: the training interval donates its input, and a buffer cannot be donated twice
    return ls.replace(env_state=_reset(benv, env, k_env), key=key, staging=staging,
                      episode_return=jnp.zeros((train_cfg.num_envs,)), episode_length=jnp.zeros((train_cfg.num_envs,)))


def init_loop(key, env, agent, obs_dim: int, train_cfg, episode_length: int,
              num_shards: int = 1) -> LoopState:
    """The loop state before the first iteration.

    `num_shards > 1` (data parallel, `training/distributed.py`): replay, success ring and staging
    are split into `num_shards` blocks (leading axis), block d holding what envs
    [d * num_envs / n, (d + 1) * num_envs / n) collect; sizes must divide by `num_shards`.
    """
    horizon = agent.chunk_shape[0]
    windows = step_windows(train_cfg)
    benv = env_core.batch_env(env, train_cfg.num_envs, horizon, record_obs=windows)
    k_env, k_loop = jax.random.split(key)
    example = rb.transition_spec(obs_dim, agent.chunk_shape)
    max_chunks = -(-episode_length // horizon)
    zeros = jnp.zeros((train_cfg.num_envs,))
    n = int(num_shards)

    replay, success, staging = rings.init(
        example, train_cfg.num_envs, train_cfg.replay_capacity, train_cfg.success_capacity, max_chunks, n,
        step_spec=rb.step_spec(obs_dim, agent.chunk_shape[1]) if windows else None,
        ring_length=step_ring_length(train_cfg, horizon) if windows else 0)
    rollout = None
    if algorithms.of(agent).on_policy:
        if n != 1:
            raise ValueError(f"algo.name={agent.config.name!r} is on-policy: it runs on one device "
                             f"(distributed.num_devices=1), got {n} shards")
        rollout = init_rollout(example, agent.config.rollout_iterations, train_cfg.num_envs)
    return LoopState(
        rollout=rollout,
        agent=agent,
        replay=replay,
        success=success,
        staging=staging,
        env_state=_reset(benv, env, k_env),
        key=k_loop,
        env_steps=jnp.zeros((), jnp.int32),
        iteration=jnp.zeros((), jnp.int32),
        episode_return=zeros,
        episode_length=zeros,
    )


def init_rollout(example: dict, length: int, num_envs: int) -> dict:
    """An empty on-policy rollout: `length` iterations x `num_envs` rows shaped like `example`
    (plus `done`, episode ended, and `keep`, the row is finite), the key each iteration's act drew
    its chunks with (`act_keys`, (length, 2)) and `count`, iterations recorded so far."""
    rows = {k: jnp.zeros((length, num_envs) + v.shape, v.dtype) for k, v in example.items()}
    rows["done"] = jnp.zeros((length, num_envs), bool)
    rows["keep"] = jnp.zeros((length, num_envs), bool)
    return {"rows": rows, "act_keys": jnp.zeros((length,) + jax.random.PRNGKey(0).shape, jnp.uint32),
            "count": jnp.zeros((), jnp.int32)}


def _record(rollout: dict, rows: dict, done, keep, act_key) -> dict:
    i = rollout["count"]
    rows = dict(rows, done=done, keep=keep)
    new_rows = {k: rollout["rows"][k].at[i].set(rows[k].astype(rollout["rows"][k].dtype)) for k in rollout["rows"]}
    return {"rows": new_rows, "act_keys": rollout["act_keys"].at[i].set(act_key), "count": i + 1}


def _reset(benv, env, key):
    # jitted: op-by-op MJX reset of the Can arm took minutes on the 2-core CPU. Under an outer
    # trace (jax.eval_shape of a checkpoint template, vmap) a nested jit may not carry
    # compiler_options, and the outer transformation compiles it anyway.
    if isinstance(key, jax.core.Tracer):
        return benv.reset(key)
    return jax.jit(benv.reset, compiler_options=env_core.compiler_options(env))(key)


# ----------------------------------------------------------------------------- update, with the guard

def _guarded(agent, new, metrics, halted, halt_on_nonfinite: bool):
    """The non-finite guard of every update: `new` replaces `agent` only if every metric (losses,
    gradient norms, Q-values, ...) is finite and no earlier update halted the interval. With
    `halt_on_nonfinite` a non-finite update halts it: every later update is discarded too, so the
    agent that comes out is the last good one. -> (agent, halted, kept, per-metric non-finite flags
    in sorted name order)."""
    bad = jnp.stack([~jnp.all(jnp.isfinite(metrics[name])) for name in sorted(metrics)])
    keep = ~bad.any() & ~halted
    agent = jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), new, agent)
    halted = jnp.asarray(halted) | (bad.any() & halt_on_nonfinite)
    return agent, halted, keep, bad


def _updates(agent, replay, success, key, num_updates: int, halted=False, halt_on_nonfinite: bool = True):
    """`num_updates` guarded updates (`_guarded`) of the agent's algorithm on fresh replay batches;
    the success batch falls back to replay rows until the success buffer holds a batch. Returns
    (agent, halted, metrics averaged over the kept updates, number of discarded updates, per-metric
    non-finite flags in the sorted order of the metric names)."""
    cfg = agent.config
    algo_update = algorithms.of(agent).update
    horizon = agent.chunk_shape[0]
    # OGPO with critic_updates_per_update = k takes k critic steps per update, one per slice
    per = getattr(cfg, "critic_updates_per_update", 1)

    def one(carry, k):
        agent, halted = carry
        k_batch, k_succ = jax.random.split(k)
        batch = rings.sample(replay, k_batch, cfg.batch_size * per, horizon)
        succ = rings.sample(success, k_succ, cfg.success_batch_size * per)
        ready = rings.success_ready(success, cfg.success_batch_size)
        succ = rb.with_fallback(succ, batch, ready, cfg.success_batch_size * per)
        new, metrics = algo_update(agent, batch, succ)
        agent, halted, keep, bad = _guarded(agent, new, metrics, halted, halt_on_nonfinite)
        return (agent, halted), (metrics, keep, bad)

    (agent, halted), (metrics, keep, bad) = jax.lax.scan(one, (agent, jnp.asarray(halted)),
                                                         jax.random.split(key, num_updates))
    return _kept_mean(agent, halted, metrics, keep, bad, num_updates)


def _onpolicy_update(agent, rollout, halted=False, halt_on_nonfinite: bool = True):
    """One guarded update of an on-policy algorithm on a full rollout; returns as `_updates`."""
    new, metrics = algorithms.of(agent).update(agent, rollout, None)
    agent, halted, keep, bad = _guarded(agent, new, metrics, halted, halt_on_nonfinite)
    add = lambda tree: jax.tree_util.tree_map(lambda x: x[None], tree)  # noqa: E731
    return _kept_mean(agent, halted, add(metrics), keep[None], bad[None], 1)


def _kept_mean(agent, halted, metrics, keep, bad, num_updates):
    kept = keep.sum()
    mean = jax.tree_util.tree_map(
        lambda v: jnp.where(keep, v, 0).sum() / jnp.maximum(kept, 1).astype(v.dtype), metrics)
    return agent, halted, mean, (num_updates - kept).astype(jnp.float32), bad.any(0)


# ----------------------------------------------------------------------------- one iteration

def _transitions(obs, actions, info, truncation_is_terminal: bool) -> dict:
    """The chunk transitions of one env step of the batched env, as the replay stores them."""
    return {
        "obs": obs, "actions": actions, "rewards": info["rewards"], "valid": info["valid"],
        "next_obs": info["final_obs"], "success": info["success"],
        # A time limit is a real termination when the task puts time in its observation (the
        # state at the limit is never acted from, so its value is never learned).
        "terminal": info["terminal"] | (info["truncated"] & truncation_is_terminal),
    }


def _episode_metrics(nxt, finite, env_steps, ep_ret, ep_len, replay, success) -> dict:
    """What one iteration's rollout logs: episodes that ended, their success, return and length,
    non-finite episodes and transitions, and the buffer fill."""
    info, done = nxt.info, nxt.done.astype(jnp.float32)
    return {
        "nonfinite_transitions": (~finite).sum().astype(jnp.float32),
        "nonfinite_episodes": (done * info.get("nonfinite", jnp.zeros_like(nxt.done))).sum(),
        "episodes": done.sum(),
        "episode_success_sum": (done * info["success"]).sum(),
        "episode_return_sum": (done * ep_ret).sum(),
        "episode_length_sum": (done * ep_len).sum(),
        "env_steps": env_steps,
        "replay_size": replay.size.sum(),
        "success_buffer_size": success.size.sum(),
    }


def _interval(ls: LoopState, env, train_cfg, num_iterations: int):
    """`num_iterations` iterations of act -> store -> update as one `lax.scan` (one seed)."""
    agent0 = ls.agent
    windows = step_windows(train_cfg)
    benv = env_core.batch_env(env, train_cfg.num_envs, agent0.chunk_shape[0], record_obs=windows)
    algo = algorithms.of(agent0)
    halt = getattr(train_cfg, "nonfinite", "stop") == "stop"
    if algo.on_policy:
        update = functools.partial(_onpolicy_update, halt_on_nonfinite=halt)
        update_shapes = jax.eval_shape(update, agent0, ls.rollout)
    else:
        update = functools.partial(_updates, num_updates=int(train_cfg.updates_per_iteration), halt_on_nonfinite=halt)
        update_shapes = jax.eval_shape(update, agent0, ls.replay, ls.success, ls.key)
    zeros = lambda tree: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), tree)  # noqa: E731

    def act_and_step(ls: LoopState, key):
        """Every env acts one chunk -> (next env state, its transitions)."""
        obs = ls.env_state.obs
        actions = algo.act(ls.agent, obs, key, mode=agent0.config.rollout_mode)
        nxt = benv.step(ls.env_state, actions)
        return nxt, _transitions(obs, actions, nxt.info, train_cfg.truncation_is_terminal)

    def maybe_update(ls: LoopState, replay, success, rollout, env_steps, key, halted):
        """The algorithm's updates once there is data for them, else the agent unchanged."""
        if algo.on_policy:
            # every iteration is recorded (start_training does not apply); the update runs once
            # `rollout_iterations` are in, then the rollout starts over
            ready = rollout["count"] >= agent0.config.rollout_iterations
            run = lambda a, k: update(a, rollout, halted=halted)  # noqa: E731
        else:
            ready = (env_steps >= train_cfg.start_training) & (replay.size.sum() >= agent0.config.batch_size)
            run = lambda a, k: update(a, replay, success, k, halted=halted)  # noqa: E731
        out = jax.lax.cond(ready, run, lambda a, k: (a, halted, *zeros(update_shapes[2:])), ls.agent, key)
        if algo.on_policy:
            rollout = dict(rollout, count=jnp.where(ready, 0, rollout["count"]))
        return ready, out, rollout

    def iteration(ls: LoopState, halted):
        key, k_act, k_upd = jax.random.split(ls.key, 3)
        nxt, rows = act_and_step(ls, k_act)
        info = nxt.info
        # A non-finite transition (a blown-up simulation, NaN actions) would poison every batch
        # that samples it for as long as it stays in the ring: never store one.
        finite = rb.finite_rows(rows)
        replay, success, staging = rings.store(ls.replay, ls.success, ls.staging, rows, nxt.done, info["success"],
                                               finite, info["step_obs"] if windows else None)
        rollout = _record(ls.rollout, rows, nxt.done, finite, k_act) if algo.on_policy else ls.rollout
        steps = info["valid"].sum(-1)
        env_steps = ls.env_steps + steps.sum().astype(jnp.int32)
        ep_ret, ep_len = ls.episode_return + nxt.reward, ls.episode_length + steps
        ready, (agent, halted, upd_metrics, n_bad, mask), rollout = maybe_update(
            ls, replay, success, rollout, env_steps, k_upd, halted)
        metrics = dict(upd_metrics, updated=ready.astype(jnp.float32), nonfinite_updates=n_bad,
                       nonfinite_mask=mask)
        metrics.update(_episode_metrics(nxt, finite, env_steps, ep_ret, ep_len, replay, success))
        done = nxt.done.astype(jnp.float32)
        ls = ls.replace(
            agent=agent, replay=replay, success=success, staging=staging, env_state=nxt, key=key, rollout=rollout,
            env_steps=env_steps, iteration=ls.iteration + 1,
            episode_return=ep_ret * (1.0 - done), episode_length=ep_len * (1.0 - done))
        return ls, halted, metrics

    metric_shapes = jax.eval_shape(iteration, ls, jnp.zeros((), bool))[2]

    def halted_iteration(ls: LoopState, halted):
        """After a non-finite update with nonfinite='stop': nothing moves for the rest of the interval."""
        m = zeros(metric_shapes)
        m.update(env_steps=ls.env_steps, replay_size=ls.replay.size.sum(), success_buffer_size=ls.success.size.sum())
        return ls, halted, m

    def step(carry, _):
        ls, halted, metrics = jax.lax.cond(carry[1], halted_iteration, iteration, *carry)
        return (ls, halted), metrics

    (ls, _), metrics = jax.lax.scan(step, (ls, jnp.zeros((), bool)), None, length=num_iterations)
    return ls, metrics


class Interval:
    """A compiled training interval: `interval(loop_state) -> (loop_state, metrics)`, `.lower(ls)`
    for ahead-of-time compiles, and `.compiles`, the programs built so far: one per input signature
    (tree, shapes, dtypes, shardings, committed-ness), so more than one means the inputs changed
    between intervals and XLA compiled the interval again."""

    def __init__(self, fn, compiler_options, donate: bool, mesh=None, vmap_seeds: bool = False):
        self._fn, self._options, self._mesh, self._vmap_seeds = fn, compiler_options, mesh, vmap_seeds
        self._donate = (0,) if donate else ()
        self._jitted = None
        self._signatures = set()

    @property
    def compiles(self) -> int:
        return len(self._signatures)

    def _program(self, ls):
        self._signatures.add(compile_cache.signature(ls))
        if self._jitted is None:
            if self._mesh is None:
                self._jitted = jax.jit(self._fn, compiler_options=self._options, donate_argnums=self._donate)
            else:                          # on a mesh the shardings come from the first state
                from ogpo_jax.training import distributed
                shardings = distributed.loop_shardings(self._mesh, ls, seed_axis=self._vmap_seeds)
                self._jitted = jax.jit(self._fn, in_shardings=(shardings,),
                                       out_shardings=(shardings, distributed.replicated(self._mesh)),
                                       compiler_options=self._options, donate_argnums=self._donate)
        return self._jitted

    def __call__(self, ls):
        return self._program(ls)(ls)

    def lower(self, ls):
        return self._program(ls).lower(ls)


def make_interval(env, train_cfg, num_iterations: int, vmap_seeds: bool = False, mesh=None,
                  donate: bool = False) -> Interval:
    """-> `Interval`: `interval(loop_state) -> (loop_state, metrics)`, jitted; metrics leaves have
    shape (num_iterations,).

    `vmap_seeds=True`: the loop state carries a leading seed axis (`stack_seeds`) and all seeds run
    as one `vmap`-ed program (one compile, one device run); metrics get shape (S, num_iterations).
    `mesh`: run data parallel on this mesh (`training/distributed.py`); the state must come from
    `init_loop(num_shards=mesh.size)` and is kept in `distributed.loop_shardings`.
    `donate`: reuse the input state's memory for the output (the caller must drop its reference).

    Non-finite guard (`train_cfg.nonfinite`, `_guarded`): 'stop' discards the first update with a
    non-finite metric and everything after it in the interval (the returned state is the last good
    one); 'skip' discards only the bad updates. Metrics `nonfinite_updates` (discarded updates per
    iteration) and `nonfinite_mask` (per iteration, which of `update_metric_names` were
    non-finite) report it.
    """
    fn = functools.partial(_interval, env=env, train_cfg=train_cfg, num_iterations=int(num_iterations))
    return Interval(jax.vmap(fn) if vmap_seeds else fn, env_core.compiler_options(env), donate, mesh, vmap_seeds)


def drop_nonfinite_rows(ls: LoopState, log=print) -> tuple:
    """-> (loop state, {'replay', 'success', 'staging': rows dropped}): a restored state with its
    non-finite stored transitions removed (`rb.drop_nonfinite`), placed like the input.

    The loop never stores such rows; a checkpoint written before it guarded against them can hold
    some (a NaN simulation step), and every update that sampled one would be non-finite. A state
    without them is returned as it is (nothing is recompiled or copied).
    """
    buffers = (ls.replay, ls.success, ls.staging)
    counts = {k: int(v) for k, v in jax.device_get(jax.jit(rings.count_nonfinite)(*buffers)).items()}
    if not any(counts.values()):
        return ls, counts
    replay, success, staging = jax.jit(rings.drop_nonfinite)(*buffers)
    out = ls.replace(replay=replay, success=success, staging=staging)
    out = jax.tree_util.tree_map(
        lambda x, ref: jax.device_put(x, ref.sharding) if isinstance(ref, jax.Array) else x, out, ls)
    log(f"[finetune] dropped {sum(counts.values())} non-finite stored transitions from the restored state "
        f"(replay {counts['replay']}, success buffer {counts['success']}, success staging {counts['staging']})")
    return out, counts


def update_metric_names(ls: LoopState, vmap_seeds: bool = False) -> list:
    """Sorted names of the per-update metrics: the order of the `nonfinite_mask` metric."""
    def names(ls):
        if algorithms.of(ls.agent).on_policy:
            return _onpolicy_update(ls.agent, ls.rollout)[2]
        return _updates(ls.agent, ls.replay, ls.success, ls.key, num_updates=1)[2]

    return sorted(jax.eval_shape(jax.vmap(names) if vmap_seeds else names, ls))


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
        if "/" in k and n_upd > 0 and v.ndim == updated.ndim:
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
    if "nonfinite_updates" in m:
        out["nonfinite_updates"] = float(m["nonfinite_updates"].sum())
    for k in ("nonfinite_episodes", "nonfinite_transitions"):     # sums over the interval
        if k in m:
            out[f"env/{k}"] = float(m[k].sum())
    return out


def nonfinite_report(metrics, names) -> tuple | None:
    """-> (index of the first iteration with a discarded non-finite update, names of the metrics
    that were non-finite in it) or None. `metrics` per iteration (numpy, no seed axis)."""
    import numpy as np

    mask = np.asarray(metrics["nonfinite_mask"]).reshape(-1, len(names))
    rows = np.flatnonzero(mask.any(-1))
    if rows.size == 0:
        return None
    return int(rows[0]), [n for n, bad in zip(names, mask[rows[0]]) if bad]
