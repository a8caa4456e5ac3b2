"""Validation of a whole run config (before anything is compiled or allocated).

Every error names the offending field and value. `validate(config) -> AlgoConfig` checks
    - unknown keys, at the top level and in every section (against `training/defaults.py`);
    - types (an int where an int is expected, a float may be given as an int, no strings for numbers);
    - ranges, divisibility (sizes split over devices), and mutually exclusive options.
"""
from __future__ import annotations

import math
import numbers

from ogpo_jax.algorithms import base as algorithms
from ogpo_jax.algorithms.config import AlgoConfig

WANDB_MODES = ("", "online", "offline", "disabled")
HOST_ENVS = ("robosuite", "host_point")
SECTIONS = ("seed", "num_seeds", "env", "demos", "bc", "algo", "train", "log", "distributed")
NONFINITE = ("stop", "skip")
REPLAY_WINDOWS = ("chunk", "step")
MATMUL_PRECISIONS = ("", "default", "high", "highest", "bfloat16", "tensorfloat32", "float32")
SIZED_FOR = ("any", "cpu", "gpu")
# sections whose keys are free (task-specific keyword arguments)
_FREE = ("env.kwargs",)


def _require(ok: bool, field: str, value, requirement: str):
    if not ok:
        raise ValueError(f"{field} must be {requirement}, got {value!r}")


def _type_ok(value, default) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list))
    return True


def _type_name(default) -> str:
    return {bool: "a bool", int: "an integer", float: "a number", str: "a string",
            tuple: "a sequence", list: "a sequence"}.get(type(default), type(default).__name__)


def _check_against(section, reference, prefix: str):
    """Unknown keys and types of `section` against the defaults in `reference` (recursively)."""
    keys = set(section.keys())
    unknown = sorted(keys - set(reference.keys()))
    _require(not unknown, prefix, unknown, f"free of unknown keys (known: {sorted(reference.keys())})")
    for k in sorted(keys):
        field, value, default = f"{prefix}.{k}", section[k], reference[k]
        if field in _FREE:
            continue
        if hasattr(default, "keys"):
            _require(hasattr(value, "keys"), field, value, "a section")
            _check_against(value, default, field)
        else:
            _require(_type_ok(value, default), field, value, _type_name(default))


def _finite_positive(x) -> bool:
    return x > 0 and math.isfinite(x)


def validate(config) -> AlgoConfig:
    from ogpo_jax.training import defaults   # the reference layout: every field with its default

    reference = defaults.get_config()
    unknown = sorted(set(config.keys()) - set(SECTIONS))
    _require(not unknown, "config", unknown, f"free of unknown top-level keys (known: {SECTIONS})")
    for name in SECTIONS:
        _require(name in config, "config", sorted(config.keys()), f"a config with a {name!r} entry")
    for name in ("seed", "num_seeds"):
        _require(isinstance(config[name], int) and not isinstance(config[name], bool), name, config[name],
                 "an integer")
    for name in SECTIONS:
        if hasattr(reference[name], "keys"):
            _require(hasattr(config[name], "keys"), name, config[name], "a section")
            _check_against(config[name], reference[name], name)
    algo = AlgoConfig.from_dict(config.algo)
    algorithms.get(algo.name).check_config(algo)
    e, d, b, t, dist = config.env, config.demos, config.bc, config.train, config.distributed
    _require(config.seed >= 0, "seed", config.seed, ">= 0")
    _require(config.num_seeds >= 1, "num_seeds", config.num_seeds, ">= 1")
    _require(e.chunk_horizon >= 1, "env.chunk_horizon", e.chunk_horizon, ">= 1")
    _require(d.num_demos >= 1, "demos.num_demos", d.num_demos, ">= 1")
    _require(not d.path or d.path.endswith((".hdf5", ".h5")), "demos.path", d.path,
             "'' or the path of an HDF5 file (.hdf5 / .h5)")
    _require(b.max_steps >= 1, "bc.max_steps", b.max_steps, ">= 1")
    _require(b.batch_size >= 1, "bc.batch_size", b.batch_size, ">= 1")
    _require(_finite_positive(b.lr), "bc.lr", b.lr, "> 0 and finite")
    _require(b.eval_every >= 1, "bc.eval_every", b.eval_every, ">= 1")
    _require(b.eval_mode in ("ode", "sde"), "bc.eval_mode", b.eval_mode, "'ode' or 'sde'")
    _require(0.0 <= b.stop_success <= 1.0, "bc.stop_success", b.stop_success, "in [0, 1]")
    _require(b.eval_episodes >= 1, "bc.eval_episodes", b.eval_episodes, ">= 1")
    _require(b.encoder in ("conv", "vit"), "bc.encoder", b.encoder, "'conv' or 'vit'")
    _require(b.encoder_features >= 1, "bc.encoder_features", b.encoder_features, ">= 1")
    _require(b.augment_shift >= 0, "bc.augment_shift", b.augment_shift, ">= 0")
    for name in ("num_envs", "total_env_steps", "log_every_iterations", "replay_capacity",
                 "success_capacity", "eval_every_env_steps", "eval_episodes",
                 "checkpoint_every_env_steps", "max_checkpoints"):
        _require(t[name] >= 1, f"train.{name}", t[name], ">= 1")
    _require(t.start_training >= 0, "train.start_training", t.start_training, ">= 0")
    _require(t.updates_per_iteration >= 0, "train.updates_per_iteration", t.updates_per_iteration, ">= 0")
    _require(t.replay_capacity >= algo.batch_size, "train.replay_capacity", t.replay_capacity,
             f">= algo.batch_size ({algo.batch_size})")
    _require(t.success_capacity >= algo.success_batch_size, "train.success_capacity", t.success_capacity,
             f">= algo.success_batch_size ({algo.success_batch_size})")
    _require(t.get("eval_select_n", 8) >= 2, "train.eval_select_n", t.get("eval_select_n"), ">= 2 (candidates to select from)")
    _require(t.get("eval_select_aggregation", "mean") in ("mean", "min"), "train.eval_select_aggregation",
             t.get("eval_select_aggregation"), "'mean' or 'min'")
    _require(t.nonfinite in NONFINITE, "train.nonfinite", t.nonfinite, f"one of {NONFINITE}")
    _require(t.replay_windows in REPLAY_WINDOWS, "train.replay_windows", t.replay_windows, f"one of {REPLAY_WINDOWS}")
    if t.replay_windows == "step":
        _require(e.name not in HOST_ENVS, "train.replay_windows", t.replay_windows,
                 f"'chunk' for env.name={e.name!r} (its worker processes execute whole chunks)")
        _require(e.kwargs.get("obs", "state") == "state", "train.replay_windows", t.replay_windows,
                 f"'chunk' with env.kwargs.obs={e.kwargs.get('obs')!r} (the camera image is made once per chunk)")
        per_env = t.replay_capacity * e.chunk_horizon // t.num_envs
        _require(per_env >= 2 * e.chunk_horizon, "train.replay_capacity", t.replay_capacity,
                 f"large enough for >= 2 x H steps per env ring with replay_windows='step' (it gives {per_env} "
                 f"steps: replay_capacity x H / num_envs)")
    _require(t.matmul_precision in MATMUL_PRECISIONS, "train.matmul_precision", t.matmul_precision,
             f"one of {MATMUL_PRECISIONS}")
    _require(t.sized_for in SIZED_FOR, "train.sized_for", t.sized_for, f"one of {SIZED_FOR}")
    _require(config.log.wandb_mode in WANDB_MODES, "log.wandb_mode", config.log.wandb_mode, f"one of {WANDB_MODES}")
    _require(not config.log.wandb or bool(config.log.wandb_project), "log.wandb_project", config.log.wandb_project,
             "a project name when log.wandb is True")
    _require(dist.num_devices >= 0, "distributed.num_devices", dist.num_devices, ">= 0 (0 = all devices)")
    _require(dist.num_processes >= 0, "distributed.num_processes", dist.num_processes, ">= 0 (0 = from the environment)")
    _require(dist.process_id >= -1, "distributed.process_id", dist.process_id, ">= -1 (-1 = from the environment)")
    if dist.enabled and dist.num_processes > 0:
        _require(dist.process_id < dist.num_processes, "distributed.process_id", dist.process_id,
                 f"< distributed.num_processes ({dist.num_processes})")
    if not dist.enabled:
        _require(not dist.coordinator_address and dist.num_processes == 0 and dist.process_id == -1,
                 "distributed.enabled", dist.enabled,
                 "True when coordinator_address, num_processes or process_id are set")
    _require(config.num_seeds == 1 or dist.num_devices == 1, "num_seeds", config.num_seeds,
             f"1 when distributed.num_devices != 1 (got {dist.num_devices}): vmapped seeds run on one device")
    _require(dist.num_devices == 1 or not dist.enabled or dist.num_devices == 0, "distributed.num_devices",
             dist.num_devices, "0 (every device) or 1 in a multi-host run")
    if dist.num_devices > 1:
        check_divisible(t, algo, dist.num_devices)
    if algorithms.get(algo.name).on_policy:     # its rollout is one time-ordered block, not sharded rings
        _require(dist.num_devices == 1 or (dist.num_devices == 0 and not dist.enabled), "distributed.num_devices",
                 dist.num_devices, f"1 for the on-policy algo.name={algo.name!r} (it runs on one device)")
    if e.get("kwargs") is not None and e.kwargs.get("impl") == "warp":
        # MuJoCo Warp's contact buffer is one for the worlds of a call; vmapping seeds over it (and
        # the interval's per-seed halt guard, a select over the whole state) is untested
        _require(config.num_seeds == 1, "num_seeds", config.num_seeds,
                 "1 with env.kwargs.impl='warp' (run seeds as separate commands)")
    if e.name in HOST_ENVS:     # simulators in worker processes, stepped through io_callback (envs/host.py)
        _require(config.num_seeds == 1, "num_seeds", config.num_seeds,
                 f"1 for env.name={e.name!r} (host-simulated: one seed per run)")
        _require(dist.num_devices == 1 and not dist.enabled, "distributed.num_devices", dist.num_devices,
                 f"1 (and distributed.enabled False) for env.name={e.name!r} (host-simulated: one device)")
    return algo


def check_divisible(train_cfg, algo_cfg, num_shards: int) -> None:
    """Every size that is split over the mesh must divide by its device count (named error)."""
    if num_shards == 1:
        return
    sizes = {
        "train.num_envs": train_cfg.num_envs,
        "train.replay_capacity": train_cfg.replay_capacity,
        "train.success_capacity": train_cfg.success_capacity,
        "algo.batch_size": algo_cfg.batch_size,
        "algo.success_batch_size": algo_cfg.success_batch_size,
    }
    for field, value in sizes.items():
        _require(value % num_shards == 0, field, value,
                 f"divisible by the number of devices ({num_shards}); change it or distributed.num_devices")
