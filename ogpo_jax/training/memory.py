"""Device-memory budget of a training run, checked before anything is allocated.

    python -c "from configs import can; from ogpo_jax.training import memory; \
               print(memory.describe(memory.estimate(can.get_config(), obs_dim=44, action_dim=7)))"

The replay ring dominates: a chunk transition stores obs and next_obs (float32), H x da actions,
H rewards, H valid flags and two flags; the success ring and the per-env success staging hold
the same rows. Networks and optimizer states are small next to a 2M-transition replay.
"""
from __future__ import annotations

import os

import jax

from ogpo_jax.algorithms.config import AlgoConfig
from ogpo_jax.data import replay as rb


def transition_bytes(obs_dim: int, horizon: int, action_dim: int) -> int:
    """Bytes of one chunk transition row (`data.replay.transition_spec`)."""
    return rb.buffer_nbytes(rb.transition_spec(obs_dim, (horizon, action_dim)), 1)


def _mlp_params(sizes) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def network_params(algo: AlgoConfig, obs_dim: int, horizon: int, action_dim: int) -> dict:
    """Approximate parameter counts of actor and critic ensemble (dense layers only)."""
    d = horizon * action_dim
    actor = _mlp_params((obs_dim + d + algo.time_emb_dim,) + tuple(algo.actor_hidden_dims) + (d,))
    critic = algo.num_critics * _mlp_params((obs_dim + d,) + tuple(algo.critic_hidden_dims) + (1,))
    return {"actor": actor, "critic": critic}


def estimate(config, obs_dim: int, action_dim: int, episode_length: int | None = None,
             num_seeds: int | None = None) -> dict:
    """Bytes per device of the run's state: replay, success ring, staging, networks + optimizers,
    for `num_seeds` stacked seeds (default `config.num_seeds`)."""
    t = config.train
    algo = AlgoConfig.from_dict(config.algo)
    horizon = config.env.chunk_horizon
    row = transition_bytes(obs_dim, horizon, action_dim)
    n = max(int(config.distributed.num_devices), 1) if config.distributed.num_devices else len(jax.devices())
    seeds = int(config.num_seeds if num_seeds is None else num_seeds)
    max_chunks = -(-(episode_length or 0) // horizon)
    p = network_params(algo, obs_dim, horizon, action_dim)
    # actor, EMA actor, Adam (2 moments); critic, target critic, Adam (2 moments); float32
    nets = 4 * (4 * p["actor"] + 4 * p["critic"])
    replay = t.replay_capacity * row
    if getattr(t, "replay_windows", "chunk") == "step":      # per-step rows, replay_capacity x H of them
        step_row = rb.buffer_nbytes(rb.step_spec(obs_dim, action_dim), 1)
        replay = (t.replay_capacity * horizon // t.num_envs) * t.num_envs * step_row
    out = {
        "replay": seeds * replay // n,
        "success": seeds * t.success_capacity * row // n,
        "staging": seeds * t.num_envs * max_chunks * row // n,
        "networks_and_optimizers": seeds * nets,
        "transition_bytes": row,
        "devices": n,
    }
    out["total"] = out["replay"] + out["success"] + out["staging"] + out["networks_and_optimizers"]
    return out


def device_capacity(device=None) -> tuple[int | None, str]:
    """(bytes the device can hold, what it is). Accelerators report `bytes_limit`; for the CPU it is
    the host's physical memory."""
    device = device or jax.local_devices()[0]
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:        # some backends do not implement it
        pass
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.platform}:{device.id} ({device.device_kind})"
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "host memory (CPU backend)"
    except (ValueError, OSError, AttributeError):
        return None, "unknown"


def gib(x: float) -> str:
    """Human-readable bytes (MiB below 1 GiB)."""
    return f"{x / 2**30:.2f} GiB" if x >= 2**30 else f"{x / 2**20:.1f} MiB"


def describe(est: dict) -> str:
    return (f"replay {gib(est['replay'])} + success ring {gib(est['success'])} + staging {gib(est['staging'])} "
            f"+ networks/optimizers {gib(est['networks_and_optimizers'])} = {gib(est['total'])} per device "
            f"({est['transition_bytes']} bytes per transition, {est['devices']} device(s))")


def check_fits(config, obs_dim: int, action_dim: int, episode_length: int, fraction: float = 0.9) -> dict:
    """Raise MemoryError (naming the bytes needed and the fields to change) when the run's state
    would not fit in `fraction` of one device's memory. Returns the estimate."""
    est = estimate(config, obs_dim, action_dim, episode_length)
    limit, what = device_capacity()
    if limit is not None and est["total"] > fraction * limit:
        raise MemoryError(
            f"the training state needs {est['total']} bytes ({gib(est['total'])}) per device but {what} holds "
            f"{limit} bytes ({gib(limit)}): {describe(est)}. Lower train.replay_capacity "
            f"(={config.train.replay_capacity}) or train.success_capacity (={config.train.success_capacity}), "
            "or spread the rings over more devices (distributed.num_devices)")
    return est


__all__ = ["transition_bytes", "network_params", "estimate", "device_capacity", "describe", "check_fits"]
