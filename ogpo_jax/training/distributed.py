"""Data parallelism on a device mesh, and multi-host start-up.

One mesh axis, `data`. The training loop state is laid out on it as follows (`loop_shardings`):

    agent (params, EMA targets, optimizer states)        replicated
    env_state, episode_return, episode_length            sharded along the env axis
    replay, success, staging                             one block per device (leading axis sharded)
    key, env_steps, iteration                            replicated

With more than one device the replay and success rings are *blocked* (`loop.init_loop(num_shards=
n)`): device d's envs write into block d and every update samples batch_size / n rows from each
block, so the rings are never gathered. The update itself is the single-device code under a
sharded `jit` (GSPMD): the batch arrives sharded along `data`, params are replicated, and XLA
inserts the all-reduce that averages the gradients, so one update on n devices equals the same
global batch on one device up to float summation order.

Multi-host (`--config.distributed.enabled=True`): `initialize` calls `jax.distributed.initialize`
before anything touches a device; the mesh then spans every process's devices, each process feeds
its local ones (the jitted init builds only the local shards), only process 0 logs, and orbax
writes checkpoints cooperatively.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "data"


def initialize(dist_cfg) -> None:
    """`jax.distributed.initialize` from `config.distributed` (no-op unless `enabled`).

    Empty / negative fields fall back to the standard environment (JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES, JAX_PROCESS_ID) and then to cluster auto-detection (Cloud TPU, SLURM, ...).
    """
    if not dist_cfg.enabled:
        return
    env = os.environ
    address = dist_cfg.coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None
    nproc = dist_cfg.num_processes if dist_cfg.num_processes > 0 else int(env.get("JAX_NUM_PROCESSES", 0)) or None
    pid = dist_cfg.process_id if dist_cfg.process_id >= 0 else (
        int(env["JAX_PROCESS_ID"]) if "JAX_PROCESS_ID" in env else None)
    jax.distributed.initialize(coordinator_address=address, num_processes=nproc, process_id=pid)


def is_main_process() -> bool:
    return jax.process_index() == 0


def make_mesh(num_devices: int = 0) -> Mesh:
    """A 1-D mesh (`data`) over the first `num_devices` global devices (0 = all of them)."""
    devices = jax.devices()
    n = len(devices) if num_devices in (0, None) else int(num_devices)
    if n < 1 or n > len(devices):
        raise ValueError(f"distributed.num_devices must be in [0, {len(devices)}] (0 = all), got {num_devices}")
    if jax.process_count() > 1 and n != len(devices):
        raise ValueError(f"distributed.num_devices={num_devices}: a multi-host run uses every device "
                         f"({len(devices)}); set it to 0")
    return Mesh(np.asarray(devices[:n]), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def loop_shardings(mesh: Mesh, ls, seed_axis: bool = False):
    """NamedShardings for a `loop.LoopState` (arrays or ShapeDtypeStructs) on `mesh`.

    `seed_axis`: the state carries a leading (unsharded) seed axis (`loop.stack_seeds`).
    """
    rep = replicated(mesh)
    lead = (None,) if seed_axis else ()
    split = NamedSharding(mesh, P(*lead, AXIS))
    n = mesh.shape[AXIS]

    def along(tree):
        return jax.tree_util.tree_map(lambda _: split, tree)

    def everywhere(tree):
        return jax.tree_util.tree_map(lambda _: rep, tree)

    blocked = along if n > 1 else everywhere
    return ls.replace(
        agent=everywhere(ls.agent), replay=blocked(ls.replay), success=blocked(ls.success),
        staging=blocked(ls.staging), env_state=along(ls.env_state), key=rep, env_steps=rep, iteration=rep,
        episode_return=split, episode_length=split)

