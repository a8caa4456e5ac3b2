"""Fixed-size jittable ring buffers of chunk transitions, and per-env success staging.

A transition is a dict: obs (obs_dim,), actions (H, da), rewards (H,), valid (H,),
next_obs (obs_dim,), terminal (), success (). Buffers are pytrees (`flax.struct`), so they live in
the training carry, checkpoint with orbax and shard like params.

Success-buffer staging: success is only known at episode end, so each env keeps the
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


# ----------------------------------------------------------------------------- step windows
#
# `train.replay_windows='step'`: the replay keeps every env step, in one ring per env, and a batch
# row is the length-H window that starts at any stored step (the paper's sampler), not only the
# executed, chunk-aligned transition: H times as many distinct (state, chunk) pairs for the critic
# and H times as many actor states from the same env steps. A window that runs past its episode's
# end keeps the steps up to the end (valid mask); its target bootstraps from the true final
# observation on a time limit and not at all on a terminal step. This keeps the success step in H
# windows at different offsets, where dropping the windows that cross an end (the reference's
# sampler) would keep it in one; `common.nstep_target` handles the mask as for chunks that an
# episode end cut short. Windows are sampled into the same transition rows as chunk mode, so the
# algorithms are unchanged.

class StepReplay(struct.PyTreeNode):
    data: dict                 # each leaf (num_envs, length, ...): env e's steps in a ring
    insert_pos: jax.Array      # (num_envs,) int32: env e's next row
    size: jax.Array            # (num_envs,) int32: env e's stored steps (<= length)

    @property
    def capacity(self) -> int:
        """Steps per env ring."""
        return jax.tree_util.tree_leaves(self.data)[0].shape[self.size.ndim]


def step_spec(obs_dim: int, action_dim: int) -> dict:
    """Zero example of one stored step: the observation before it, its action and reward, the
    observation after it (the true final one at an episode end), and whether the episode ended
    there, ended terminally (no bootstrap) or in success."""
    f32 = jnp.float32
    return {"obs": jnp.zeros((obs_dim,), f32), "action": jnp.zeros((action_dim,), f32), "reward": jnp.zeros((), f32),
            "next_obs": jnp.zeros((obs_dim,), f32), "end": jnp.zeros((), bool), "terminal": jnp.zeros((), bool),
            "success": jnp.zeros((), bool)}


def init_step_buffer(example: dict, num_envs: int, length: int) -> StepReplay:
    if length < 1 or num_envs < 1:
        raise ValueError(f"a step ring needs num_envs >= 1 and length >= 1, got {num_envs} and {length}")
    data = jax.tree_util.tree_map(
        lambda x: jnp.zeros((num_envs, length) + jnp.shape(x), jnp.asarray(x).dtype), example)
    return StepReplay(data=data, insert_pos=jnp.zeros((num_envs,), jnp.int32), size=jnp.zeros((num_envs,), jnp.int32))


def chunk_steps(rows: dict, step_obs, done) -> dict:
    """The H steps of one executed chunk per env, from its transition row (leaves (E, ...)), the
    observation before each step (E, H, obs_dim) and whether the chunk ended the episode (E,).

    Valid steps form a prefix of the chunk; after an episode end the chunk wrapper leaves the state
    frozen, so the observation after the last valid step is the true final one."""
    valid = rows["valid"]
    last = valid & ~jnp.concatenate([valid[:, 1:], jnp.zeros_like(valid[:, :1])], axis=1)   # last valid step
    end = last & done[:, None]
    # after step h comes step_obs[h + 1]; after the last step of the chunk, its next_obs. Where the
    # episode ended at step n - 1 < H - 1, step_obs[n] is the frozen final state's observation.
    next_obs = jnp.concatenate([step_obs[:, 1:], rows["next_obs"][:, None]], axis=1)
    return {"obs": step_obs, "action": rows["actions"], "reward": rows["rewards"], "next_obs": next_obs,
            "end": end, "terminal": end & rows["terminal"][:, None], "success": end & rows["success"][:, None]}


def insert_steps(buffer: StepReplay, steps: dict, valid, keep=None, done=None) -> StepReplay:
    """Append each env's valid steps (leaves (E, H, ...), `valid` (E, H) a prefix) to its ring.

    `keep` (E,): envs whose chunk is stored (False for a non-finite one: nothing of it is written).
    An env whose chunk is not kept but whose episode ended there (`done`) gets its last stored step
    marked as a terminal end, so no window runs from the stored part of that episode into the next."""
    num_envs, length = buffer.size.shape[0], buffer.capacity
    horizon = valid.shape[1]
    if keep is None:
        keep = jnp.ones((num_envs,), bool)
    write = valid & keep[:, None]
    idx = jnp.where(write, (buffer.insert_pos[:, None] + jnp.arange(horizon)[None]) % length, length)
    env_idx = jnp.broadcast_to(jnp.arange(num_envs)[:, None], idx.shape)
    data = jax.tree_util.tree_map(lambda d, r: d.at[env_idx, idx].set(r.astype(d.dtype), mode="drop"),
                                  buffer.data, steps)
    if done is not None:
        cut = ~keep & done & (buffer.size > 0)
        prev = jnp.where(cut, (buffer.insert_pos - 1) % length, length)
        env = jnp.arange(num_envs)
        data = dict(data, end=data["end"].at[env, prev].set(True, mode="drop"),
                    terminal=data["terminal"].at[env, prev].set(True, mode="drop"))
    count = write.sum(1).astype(jnp.int32)
    return StepReplay(data=data, insert_pos=((buffer.insert_pos + count) % length).astype(jnp.int32),
                      size=jnp.minimum(buffer.size + count, length).astype(jnp.int32))


def window_starts(buffer: StepReplay, horizon: int):
    """(E,) number of start rows per env whose window is complete: every stored step but the newest
    H - 1 (their windows would need steps not collected yet)."""
    return jnp.maximum(buffer.size - (horizon - 1), 0)


def sample_windows(buffer: StepReplay, key, batch_size: int, horizon: int) -> dict:
    """`batch_size` windows of H steps with uniform starts over all complete windows of all envs,
    as chunk transitions (obs, actions (H, da), rewards (H,), valid (H,), next_obs, terminal,
    success). An empty ring returns copies of env 0's row 0 (zeros), like `sample`."""
    total = window_starts(buffer, horizon).sum()
    return windows_at(buffer, jax.random.randint(key, (batch_size,), 0, jnp.maximum(total, 1)), horizon)


def windows_at(buffer: StepReplay, u, horizon: int) -> dict:
    """The windows at flat start indices `u` (B,) into the complete starts of all envs, env 0's
    oldest first (`sample_windows` draws `u` uniformly), as chunk transitions."""
    num_envs, length = buffer.size.shape[0], buffer.capacity
    batch_size = u.shape[0]
    starts = window_starts(buffer, horizon)
    cum = jnp.cumsum(starts)
    env = jnp.minimum(jnp.searchsorted(cum, u, side="right"), num_envs - 1)
    offset = u - (cum[env] - starts[env])                         # among env's complete starts, oldest first
    oldest = jnp.where(buffer.size >= length, buffer.insert_pos, 0)
    rows = (oldest[env][:, None] + offset[:, None] + jnp.arange(horizon)[None]) % length   # (B, H)
    win = jax.tree_util.tree_map(lambda d: d[env[:, None], rows], buffer.data)              # leaves (B, H, ...)
    # step h is part of the window while no earlier step of it ended the episode
    ended_before = jnp.cumsum(win["end"], axis=1) - win["end"]
    valid = ended_before == 0
    n = valid.sum(1)
    last = jnp.maximum(n - 1, 0)
    pick = lambda x: x[jnp.arange(batch_size), last]  # noqa: E731
    mask = lambda x: jnp.where(valid.reshape(valid.shape + (1,) * (x.ndim - 2)), x, jnp.zeros((), x.dtype))  # noqa: E731
    return {"obs": win["obs"][:, 0], "actions": mask(win["action"]), "rewards": mask(win["reward"]),
            "valid": valid, "next_obs": pick(win["next_obs"]), "terminal": pick(win["terminal"]),
            "success": pick(win["success"])}


def count_nonfinite_steps(buffer: StepReplay) -> jax.Array:
    """Number of stored steps with a non-finite float field (the loop stores none)."""
    length = buffer.capacity
    stored = jnp.arange(length)[None, :] < buffer.size[:, None]
    flat = {k: buffer.data[k].reshape((-1,) + buffer.data[k].shape[2:]) for k in ("obs", "action", "reward", "next_obs")}
    bad = ~finite_rows({"obs": flat["obs"], "actions": flat["action"], "rewards": flat["reward"],
                        "next_obs": flat["next_obs"]}).reshape(stored.shape)
    return (stored & bad).sum().astype(jnp.int32)
