"""Demonstration datasets: robomimic-style HDF5 read/write and BC chunk windows.

Layout (robomimic): `data/demo_<i>/obs/<key>` (T, ...), `data/demo_<i>/actions` (T, da),
`rewards` (T,), `dones` (T,); attrs on `data`: `env_args` (JSON), `total`. The toy tasks store
their flat observation under the single obs key `state`.
"""
from __future__ import annotations

import json
import os

import h5py
import numpy as np


class DatasetError(ValueError):
    """A demonstration file is missing, malformed or inconsistent."""


def write_hdf5(path: str, episodes: list[dict], env_args: dict) -> None:
    """episodes: list of dicts with obs {key: (T, ...)} or a flat (T, obs_dim) array, actions (T, da), rewards (T,), dones (T,).

    Written to `path + '.tmp'` then renamed, so an interrupted write never leaves a partial file.
    """
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        total = 0
        for i, ep in enumerate(episodes):
            g = data.create_group(f"demo_{i}")
            obs = ep["obs"] if isinstance(ep["obs"], dict) else {"state": ep["obs"]}
            for key, value in obs.items():
                g.create_dataset(f"obs/{key}", data=np.asarray(value))
            for key in ("actions", "rewards", "dones"):
                g.create_dataset(key, data=np.asarray(ep[key]))
            g.attrs["num_samples"] = len(ep["actions"])
            total += len(ep["actions"])
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps(env_args)
    os.replace(tmp, path)


def read_hdf5(path: str, obs_keys: tuple[str, ...] = ("state",)) -> tuple[list[dict], dict]:
    """Read and validate a robomimic-style file. Returns (episodes, env_args).

    Each episode: obs (T, obs_dim) = concatenation of `obs_keys`, actions, rewards, dones.
    Every problem (missing, truncated or damaged file, wrong layout, non-finite values) raises
    `DatasetError` naming the file and what is wrong.
    """
    if not os.path.exists(path):
        raise DatasetError(f"{path}: demonstration file not found")
    if isinstance(obs_keys, str) or not all(isinstance(k, str) for k in obs_keys) or not obs_keys:
        raise DatasetError(f"obs_keys must be a non-empty tuple of key names, got {obs_keys!r}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"{path}: not a readable HDF5 file ({e})") from None
    try:
        with f:
            return _read_episodes(f, path, tuple(obs_keys))
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError) as e:
        # h5py reads lazily: a truncated or altered file fails on the dataset that lies past the damage
        raise DatasetError(f"{path}: damaged or malformed HDF5 data ({type(e).__name__}: {e})") from None


def _read_episodes(f, path, obs_keys):
    episodes = []
    if "data" not in f:
        raise DatasetError(f"{path}: missing group 'data'")
    names = sorted(f["data"].keys(), key=lambda n: int(n.split("_")[-1]) if n.split("_")[-1].isdigit() else n)
    if not names:
        raise DatasetError(f"{path}: group 'data' holds no demos")
    for name in names:
        g = f["data"][name]
        for key in ("actions", "rewards", "dones"):
            if key not in g:
                raise DatasetError(f"{path}: data/{name} is missing '{key}'")
        obs_parts = []
        for key in obs_keys:
            if f"obs/{key}" not in g:
                raise DatasetError(f"{path}: data/{name}/obs is missing key '{key}'")
            part = np.asarray(g[f"obs/{key}"], np.float32)
            obs_parts.append(part.reshape(part.shape[0], -1))
        obs = np.concatenate(obs_parts, axis=-1)
        actions = np.asarray(g["actions"], np.float32)
        rewards = np.asarray(g["rewards"], np.float32)
        dones = np.asarray(g["dones"]).astype(bool)
        length = actions.shape[0]
        if actions.ndim != 2 or length == 0:
            raise DatasetError(f"{path}: data/{name}/actions must have shape (T, da), got {actions.shape}")
        for key, arr in (("obs", obs), ("rewards", rewards), ("dones", dones)):
            if arr.shape[0] != length:
                raise DatasetError(f"{path}: data/{name}/{key} has {arr.shape[0]} steps, actions has {length}")
        for key, arr in (("obs", obs), ("actions", actions), ("rewards", rewards)):
            if not np.all(np.isfinite(arr)):
                raise DatasetError(f"{path}: data/{name}/{key} contains NaN or inf")
        episodes.append({"obs": obs, "actions": actions, "rewards": rewards, "dones": dones})
    env_args = json.loads(f["data"].attrs.get("env_args", "{}"))
    if not isinstance(env_args, dict):
        raise DatasetError(f"{path}: data.attrs['env_args'] is not a JSON object")
    dims = {(e["obs"].shape[1], e["actions"].shape[1]) for e in episodes}
    if len(dims) != 1:
        raise DatasetError(f"{path}: demos disagree on (obs_dim, action_dim): {sorted(dims)}")
    return episodes, env_args


def split_obs(obs, obs_layout) -> dict:
    """Flat observations (..., obs_dim) -> {key: (..., size)} for a layout ((key, size), ...)."""
    out, i = {}, 0
    for key, size in obs_layout:
        out[key] = obs[..., i:i + size]
        i += size
    if i != obs.shape[-1]:
        raise ValueError(f"obs layout {obs_layout} covers {i} dims, observations have {obs.shape[-1]}")
    return out


def episodes_from_rollouts(rollouts: dict, obs_layout=None) -> list[dict]:
    """Split `training.collect.collect_demos` output into per-episode arrays (valid steps only).

    With `obs_layout` ((key, size), ...) the flat observation is stored per key (robomimic's
    `obs/<key>` layout); without it under the single key `state`.
    """
    out = []
    for i in range(rollouts["obs"].shape[0]):
        n = int(rollouts["length"][i])
        obs = np.asarray(rollouts["obs"][i, :n])
        out.append({
            "obs": split_obs(obs, obs_layout) if obs_layout else obs,
            "actions": np.asarray(rollouts["actions"][i, :n]),
            "rewards": np.asarray(rollouts["rewards"][i, :n]),
            "dones": np.asarray(rollouts["dones"][i, :n]),
        })
    return out


def successful(episode: dict) -> bool:
    """Whether a demonstration succeeded, from its rewards: its last reward is positive (this
    project's tasks give +5 on the success step and -1 before; robomimic's sparse datasets 1 and 0)."""
    rewards = np.asarray(episode.get("rewards", ()))
    return bool(rewards.size and rewards[-1] > 0)


def successful_only(episodes: list[dict]) -> list[dict]:
    """The successful episodes (`successful`); a DatasetError when none is."""
    kept = [ep for ep in episodes if successful(ep)]
    if not kept:
        raise DatasetError(f"none of the {len(episodes)} demonstrations succeeded (no episode ends on a positive "
                           "reward): demos.successful_only=True would leave nothing to imitate")
    return kept


def chunk_windows(episodes: list[dict], horizon: int) -> dict:
    """BC dataset of (obs_t, actions[t:t+H], valid) for every step t of every episode.

    Windows that run past the episode end are padded with the last action and marked invalid.
    """
    obs, chunks, valid = [], [], []
    for ep in episodes:
        length = ep["actions"].shape[0]
        idx = np.arange(length)[:, None] + np.arange(horizon)[None, :]
        valid.append(idx < length)
        chunks.append(ep["actions"][np.minimum(idx, length - 1)])
        obs.append(ep["obs"])
    return {"obs": np.concatenate(obs), "actions": np.concatenate(chunks), "valid": np.concatenate(valid)}
