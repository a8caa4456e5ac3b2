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
    """Uniform sample (with replacement) of valid rows. An empty buffer returns row 0 (zeros)."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    return jax.tree_util.tree_map(lambda d: d[idx], buffer.data)


# ----------------------------------------------------------------------------- success staging

class SuccessStaging(struct.PyTreeNode):
    data: dict           # each leaf (num_envs, max_chunks, ...)
    count: jax.Array     # (num_envs,) int32: chunks staged in the current episode


def init_staging(example: dict, num_envs: int, max_chunks: int) -> SuccessStaging:
    data = jax.tree_util.tree_map(
        lambda x: jnp.zeros((num_envs, max_chunks) + jnp.shape(x), jnp.asarray(x).dtype), example)
    return SuccessStaging(data=data, count=jnp.zeros((num_envs,), jnp.int32))


def stage_and_flush(staging: SuccessStaging, success_buffer: ReplayBuffer, rows: dict, done, success):
    """Stage one chunk transition per env; flush finished episodes (successful ones to the buffer).

    rows: leaves (num_envs, ...); done, success: (num_envs,) for the episode that this chunk ended.
    """
    num_envs, max_chunks = staging.count.shape[0], jax.tree_util.tree_leaves(staging.data)[0].shape[1]
    slot = jnp.minimum(staging.count, max_chunks - 1)
    env_idx = jnp.arange(num_envs)
    data = jax.tree_util.tree_map(lambda d, r: d.at[env_idx, slot].set(r.astype(d.dtype)), staging.data, rows)
    count = jnp.minimum(staging.count + 1, max_chunks)
    write = (jnp.arange(max_chunks)[None, :] < count[:, None]) & (done & success)[:, None]
    flat = jax.tree_util.tree_map(lambda d: d.reshape((num_envs * max_chunks,) + d.shape[2:]), data)
    success_buffer = insert(success_buffer, flat, write.reshape(-1))
    count = jnp.where(done, 0, count)
    return SuccessStaging(data=data, count=count), success_buffer
