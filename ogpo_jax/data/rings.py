"""The training loop's buffers behind one interface, whatever their layout.

The loop keeps three buffers (`data/replay.py`): the replay ring, the success ring and the
per-env success staging. Their layout varies with the run: the replay holds chunk transitions or,
with `train.replay_windows='step'`, every env step per env (sampled as length-H windows); on a
mesh each buffer is split into per-device blocks (a leading axis), and vmapped seeds add another.
`init`, `store`, `sample`, `count_nonfinite` and `drop_nonfinite` take any of these layouts, so
the loop never looks at one.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ogpo_jax.data import replay as rb


def init(example: dict, num_envs: int, replay_capacity: int, success_capacity: int, max_chunks: int,
         num_shards: int = 1, step_spec: dict | None = None, ring_length: int = 0):
    """-> (replay, success, staging). `step_spec` (with `ring_length` steps per env) makes the
    replay a step ring; `num_shards > 1` splits every buffer into that many blocks (leading axis),
    block d holding what envs [d * num_envs / n, (d + 1) * num_envs / n) collect."""
    def one(envs, capacity, succ_capacity):
        if step_spec is not None:
            replay = rb.init_step_buffer(step_spec, envs, ring_length)
        else:
            replay = rb.init_buffer(example, capacity)
        return replay, rb.init_buffer(example, succ_capacity), rb.init_staging(example, envs, max_chunks)

    n = int(num_shards)
    if n == 1:
        return one(num_envs, replay_capacity, success_capacity)
    return jax.vmap(lambda _: one(num_envs // n, replay_capacity // n, success_capacity // n))(jnp.arange(n))


def block_axes(buffer) -> int:
    """Leading axes of a buffer beyond its own layout (0: plain; 1: per-device blocks or seeds; 2: both)."""
    return buffer.size.ndim - (1 if isinstance(buffer, rb.StepReplay) else 0)


def num_blocks(buffer) -> int:
    """1 for a plain ring, n for a ring split into n per-device blocks (`init(num_shards=n)`)."""
    return 1 if block_axes(buffer) == 0 else buffer.size.shape[0]


def _sample_one(buffer, key, batch_size: int, horizon: int) -> dict:
    if isinstance(buffer, rb.StepReplay):
        return rb.sample_windows(buffer, key, batch_size, horizon)
    return rb.sample(buffer, key, batch_size)


def sample(buffer, key, batch_size: int, horizon: int | None = None) -> dict:
    """A batch of chunk transitions from a plain or blocked ring (`rb.sample`), or of length-H
    windows from a step ring (`rb.sample_windows`, `horizon` needed); a blocked ring gives
    batch_size / n rows per block, concatenated block by block (so the batch is sharded like the
    blocks)."""
    n = num_blocks(buffer)
    if n == 1:
        return _sample_one(buffer, key, batch_size, horizon)
    out = jax.vmap(_sample_one, in_axes=(0, 0, None, None))(buffer, jax.random.split(key, n), batch_size // n,
                                                             horizon)
    return jax.tree_util.tree_map(lambda x: x.reshape((batch_size,) + x.shape[2:]), out)


def success_ready(success, batch_size: int):
    """True once every block of the success ring holds a batch's share (a scalar bool)."""
    return jnp.min(success.size) * num_blocks(success) >= batch_size


def _blocks(x, n: int):
    return x.reshape((n, x.shape[0] // n) + x.shape[1:])


def _insert_replay(replay, rows, keep, done, step_obs):
    if isinstance(replay, rb.StepReplay):
        return rb.insert_steps(replay, rb.chunk_steps(rows, step_obs, done), rows["valid"], keep, done)
    return rb.insert(replay, rows, keep)


def store(replay, success, staging, rows, done, succ_flags, keep, step_obs=None):
    """Insert one chunk transition per env into the replay ring (or its steps into a step ring,
    `step_obs` (E, H, obs_dim) the observation before each) and the success staging, which flushes
    an env's episode into the success ring when it succeeds; rows with `keep` False (non-finite
    ones) are written nowhere. -> (replay, success, staging)."""
    n = num_blocks(replay)
    if n == 1:
        replay = _insert_replay(replay, rows, keep, done, step_obs)
        staging, success = rb.stage_and_flush(staging, success, rows, done, succ_flags, keep)
        return replay, success, staging
    rows_b = jax.tree_util.tree_map(lambda x: _blocks(x, n), rows)
    obs_b = None if step_obs is None else _blocks(step_obs, n)
    replay = jax.vmap(_insert_replay)(replay, rows_b, _blocks(keep, n), _blocks(done, n), obs_b)
    staging, success = jax.vmap(rb.stage_and_flush)(staging, success, rows_b, _blocks(done, n),
                                                    _blocks(succ_flags, n), _blocks(keep, n))
    return replay, success, staging


def _over_leading_axes(fn, depth: int):
    for _ in range(depth):
        fn = jax.vmap(fn)
    return fn


def count_nonfinite(replay, success, staging) -> dict:
    """{'replay', 'success', 'staging': stored rows with a non-finite entry}."""
    d = block_axes(success)
    count_replay = rb.count_nonfinite_steps if isinstance(replay, rb.StepReplay) else rb.count_nonfinite
    return {"replay": _over_leading_axes(count_replay, d)(replay).sum(),
            "success": _over_leading_axes(rb.count_nonfinite, d)(success).sum(),
            "staging": _over_leading_axes(rb.count_nonfinite_staging, d)(staging).sum()}


def drop_nonfinite(replay, success, staging):
    """The three buffers without their non-finite rows (`rb.drop_nonfinite`). -> (replay, success, staging)."""
    d = block_axes(success)
    if not isinstance(replay, rb.StepReplay):      # step rings postdate the guard: the loop stores no such step
        replay, _ = _over_leading_axes(rb.drop_nonfinite, d)(replay)
    success, _ = _over_leading_axes(rb.drop_nonfinite, d)(success)
    staging, _ = _over_leading_axes(rb.drop_nonfinite_staging, d)(staging)
    return replay, success, staging
