"""Fixed-size jittable ring buffers of chunk transitions, and per-env success staging.

A transition is a dict: obs (obs_dim,), actions (H, da), rewards (H,), valid (H,),
next_obs (obs_dim,), terminal (), success (). Buffers are pytrees (`flax.struct`), so they live in
the training carry, checkpoint with orbax and shard like params.

Success-buffer staging (DESIGN §4): success is only known at episode end, so each env keeps the
chunk transitions of its current episode in a staging area; when the episode ends successfully
they are copied into the success ring with one masked write.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


class ReplayBuffer(struct.PyTreeNode):
    data: dict                 # each leaf (capacity, ...)
    insert_pos: jax.Array      # int32: next row to write
    size: jax.Array            # int32: number of valid rows (<= capacity)

    @property
    def capacity(self) -> int:
        return jax.tree_util.tree_leaves(self.data)[0].shape[0]


def transition_spec(obs_dim: int, chunk_shape) -> dict:
    """Zero example transition (shapes and dtypes of one row)."""
    horizon, act_dim = chunk_shape
    f32 = jnp.float32
    return {
        "obs": jnp.zeros((obs_dim,), f32),
        "actions": jnp.zeros((horizon, act_dim), f32),
        "rewards": jnp.zeros((horizon,), f32),
        "valid": jnp.zeros((horizon,), bool),
        "next_obs": jnp.zeros((obs_dim,), f32),
        "terminal": jnp.zeros((), bool),
        "success": jnp.zeros((), bool),
    }


def init_buffer(example: dict, capacity: int) -> ReplayBuffer:
    if capacity < 1:
        raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
    data = jax.tree_util.tree_map(lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.asarray(x).dtype), example)
    return ReplayBuffer(data=data, insert_pos=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32))


def buffer_nbytes(example: dict, capacity: int) -> int:
    """Bytes a buffer of `capacity` rows of `example` needs (report before allocating)."""
    return capacity * sum(jnp.asarray(x).nbytes for x in jax.tree_util.tree_leaves(example))


def insert(buffer: ReplayBuffer, rows: dict, mask=None) -> ReplayBuffer:
    """Append a batch of N rows (leaves (N, ...)); rows with mask False are skipped.

    Rows kept are written contiguously from `insert_pos`, wrapping around (oldest overwritten).
    If more than `capacity` rows are kept at once, only the last `capacity` survive.
    """
    if isinstance(rows, dict) and set(rows) != set(buffer.data):
        missing, extra = sorted(set(buffer.data) - set(rows)), sorted(set(rows) - set(buffer.data))
        raise KeyError(f"rows for the buffer are missing {missing} and have unexpected {extra}; "
                       f"the buffer holds {sorted(buffer.data)} (`transition_spec`)")
    n = jax.tree_util.tree_leaves(rows)[0].shape[0]
    cap = buffer.capacity
    if mask is None:
        mask = jnp.ones((n,), bool)
    offsets = jnp.cumsum(mask) - 1                              # rank among kept rows
    count = mask.sum().astype(jnp.int32)
    # Of kept rows, drop all but the last `cap` so no slot is written twice in one call.
    keep = mask & (offsets >= count - cap)
    idx = jnp.where(keep, (buffer.insert_pos + offsets) % cap, cap)   # index cap = dropped
    data = jax.tree_util.tree_map(lambda d, r: d.at[idx].set(r.astype(d.dtype), mode="drop"), buffer.data, rows)
    return ReplayBuffer(
        data=data,
        insert_pos=((buffer.insert_pos + count) % cap).astype(jnp.int32),
        size=jnp.minimum(buffer.size + count, cap).astype(jnp.int32),
    )


def sample(buffer: ReplayBuffer, key, batch_size: int) -> dict:
    """Uniform sample (with replacement) of valid rows. An empty buffer returns copies of row 0
    (zeros): check `buffer.size` or use `sample_success` for a batch that must be real data."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    return jax.tree_util.tree_map(lambda d: d[idx], buffer.data)


def with_fallback(success_rows: dict, replay_rows: dict, ready, batch_size: int) -> dict:
    """The success batch while `ready`, else `batch_size` rows of the replay batch (its first rows,
    cycled if it is smaller): before the success buffer can fill a batch, OGPO+ regularizes on
    replay data (the paper's code). Jittable; `ready` may be traced. Keys of `success_rows`."""
    n = jax.tree_util.tree_leaves(replay_rows)[0].shape[0]
    idx = jnp.arange(batch_size) % n
    fallback = {k: replay_rows[k][idx] for k in success_rows}
    return jax.tree_util.tree_map(lambda a, b: jnp.where(ready, a, b), success_rows, fallback)


def sample_success(success_buffer: ReplayBuffer, replay_rows: dict, key, batch_size: int) -> dict:
    """A success batch for `update`: `batch_size` uniform rows of the success buffer once it holds
    that many, the replay batch's rows until then (`with_fallback`). Jittable."""
    rows = sample(success_buffer, key, batch_size)
    return with_fallback(rows, replay_rows, success_buffer.size >= batch_size, batch_size)


# ----------------------------------------------------------------------------- success staging

class SuccessStaging(struct.PyTreeNode):
    data: dict           # each leaf (num_envs, max_chunks, ...)
    count: jax.Array     # (num_envs,) int32: chunks staged in the current episode


def init_staging(example: dict, num_envs: int, max_chunks: int) -> SuccessStaging:
    data = jax.tree_util.tree_map(
        lambda x: jnp.zeros((num_envs, max_chunks) + jnp.shape(x), jnp.asarray(x).dtype), example)
    return SuccessStaging(data=data, count=jnp.zeros((num_envs,), jnp.int32))


def stage_and_flush(staging: SuccessStaging, success_buffer: ReplayBuffer, rows: dict, done, success,
                    mask=None):
    """Stage one chunk transition per env; flush finished episodes (successful ones to the buffer).

    rows: leaves (num_envs, ...); done, success: (num_envs,) for the episode that this chunk ended;
    mask: (num_envs,) rows to stage (default all); an env whose row is masked out stages nothing
    this step but its episode still ends (and flushes) with `done`.
    """
    num_envs, max_chunks = staging.count.shape[0], jax.tree_util.tree_leaves(staging.data)[0].shape[1]
    if mask is None:
        mask = jnp.ones((num_envs,), bool)
    slot = jnp.minimum(staging.count, max_chunks - 1)
    env_idx = jnp.arange(num_envs)

    def put(d, r):
        r = jnp.where(mask.reshape((num_envs,) + (1,) * (r.ndim - 1)), r.astype(d.dtype), d[env_idx, slot])
        return d.at[env_idx, slot].set(r)

    data = jax.tree_util.tree_map(put, staging.data, rows)
    count = jnp.where(mask, jnp.minimum(staging.count + 1, max_chunks), staging.count)
    write = (jnp.arange(max_chunks)[None, :] < count[:, None]) & (done & success)[:, None]
    flat = jax.tree_util.tree_map(lambda d: d.reshape((num_envs * max_chunks,) + d.shape[2:]), data)
    success_buffer = insert(success_buffer, flat, write.reshape(-1))
    count = jnp.where(done, 0, count)
    return SuccessStaging(data=data, count=count), success_buffer


# ----------------------------------------------------------------------------- non-finite rows

FLOAT_FIELDS = ("obs", "actions", "rewards", "next_obs")


def finite_rows(rows: dict) -> jax.Array:
    """(N,) bool: rows whose obs, actions, rewards and next_obs are all finite (leaves (N, ...))."""
    def ok(x):
        return jnp.all(jnp.isfinite(x).reshape(x.shape[0], -1), axis=-1)
    return jnp.stack([ok(rows[k]) for k in FLOAT_FIELDS if k in rows]).all(0)


def count_nonfinite(buffer: ReplayBuffer) -> jax.Array:
    """Number of stored rows (of the `size` valid ones) with a non-finite float field."""
    stored = jnp.arange(buffer.capacity) < buffer.size
    return (stored & ~finite_rows(buffer.data)).sum().astype(jnp.int32)


def drop_nonfinite(buffer: ReplayBuffer) -> tuple:
    """-> (buffer without its non-finite rows, number dropped). Jittable.

    The kept rows are rewritten oldest first from row 0 (so the ring still overwrites the oldest
    data next); a buffer without such rows comes back with the same rows in the same order.
    """
    cap = buffer.capacity
    full = buffer.size >= cap
    # ring order: oldest row first (insert_pos once the ring has wrapped, row 0 before)
    start = jnp.where(full, buffer.insert_pos, 0)
    order = (start + jnp.arange(cap)) % cap
    rows = jax.tree_util.tree_map(lambda d: d[order], buffer.data)
    keep = (jnp.arange(cap) < buffer.size) & finite_rows(rows)
    empty = buffer.replace(data=jax.tree_util.tree_map(jnp.zeros_like, buffer.data),
                           insert_pos=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32))
    out = insert(empty, rows, keep)
    return out, (buffer.size - out.size).astype(jnp.int32)


def count_nonfinite_staging(staging: SuccessStaging) -> jax.Array:
    """Number of staged rows (of each env's `count`) with a non-finite float field."""
    num_envs, max_chunks = staging.count.shape[0], jax.tree_util.tree_leaves(staging.data)[0].shape[1]
    flat = jax.tree_util.tree_map(lambda d: d.reshape((num_envs * max_chunks,) + d.shape[2:]), staging.data)
    staged = jnp.arange(max_chunks)[None, :] < staging.count[:, None]
    return (staged & ~finite_rows(flat).reshape(num_envs, max_chunks)).sum().astype(jnp.int32)


def drop_nonfinite_staging(staging: SuccessStaging) -> tuple:
    """-> (staging without its non-finite staged rows, number dropped); each env's remaining rows
    keep their order. Jittable."""
    num_envs, max_chunks = staging.count.shape[0], jax.tree_util.tree_leaves(staging.data)[0].shape[1]
    flat = jax.tree_util.tree_map(lambda d: d.reshape((num_envs * max_chunks,) + d.shape[2:]), staging.data)
    staged = jnp.arange(max_chunks)[None, :] < staging.count[:, None]
    keep = staged & finite_rows(flat).reshape(num_envs, max_chunks)
    # stable compaction per env: kept rows first, in their order
    order = jnp.argsort(~keep, axis=1, stable=True)
    count = keep.sum(1).astype(jnp.int32)
    live = jnp.arange(max_chunks)[None, :] < count[:, None]

    def compact(d):
        expand = (1,) * (d.ndim - 2)
        d = jnp.take_along_axis(d, order.reshape(order.shape + expand), axis=1)
        return jnp.where(live.reshape(live.shape + expand), d, jnp.zeros((), d.dtype))

    data = jax.tree_util.tree_map(compact, staging.data)
    return SuccessStaging(data=data, count=count), (staging.count.sum() - count.sum()).astype(jnp.int32)
