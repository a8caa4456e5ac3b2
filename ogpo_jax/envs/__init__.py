"""Environments: functional protocol + wrappers (core), pure-JAX toy tasks, scripted experts.

`make(name, **kwargs) -> (env, expert, episode_length)` builds a registered task with its
non-finite guard (`NonFiniteWrapper`) and time limit (`EpisodeWrapper`) applied; chunking,
auto-reset and batching are added by the caller.
"""
from __future__ import annotations

import dataclasses

from ogpo_jax.envs import core, experts, toy
from ogpo_jax.envs.core import (AutoResetWrapper, ChunkWrapper, EnvState, EpisodeWrapper,
                                NonFiniteWrapper, VmapWrapper)


def _point_gaps(**kwargs):
    expert_keys = {"p_wide", "noise_min", "noise_max", "speed"}
    expert_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in expert_keys}
    params = toy.PointGapsParams(**kwargs)
    env = toy.PointGaps(params)
    return env, toy.PointGapsExpert(env, **expert_kwargs), params.max_steps


def _countdown(length: int = 10):
    env = toy.Countdown(length)
    return env, None, length + 1


def _chunk_bandit(horizon: int = 4):
    env = toy.ChunkBandit(horizon)
    return env, None, horizon


def _blowup(length: int = 12, at_step: int = 6, p_blowup: float = 0.5):
    env = toy.BlowUp(length, at_step, p_blowup)
    return env, None, length


def tuples(kwargs: dict) -> dict:
    """Config lists (ml_collections turns tuples into lists) back into the tuples dataclasses hold."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def _arm_task(module: str, task: str, params: str, expert: str):
    """Factory of an MJX arm task: kwargs split into the expert's fields and the task params."""
    def make_task(**kwargs):
        import importlib
        mod = importlib.import_module(f"ogpo_jax.envs.mjx.{module}")   # lazily: MJX only when used
        expert_cls = getattr(mod, expert)
        expert_keys = {f.name for f in dataclasses.fields(expert_cls)} - {"env"}
        expert_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in expert_keys}
        p = getattr(mod, params)(**tuples(kwargs))
        env = getattr(mod, task)(p)
        return env, expert_cls(env, **tuples(expert_kwargs)), p.max_steps
    return make_task


def _playground(env_name: str = "ReacherHard", max_steps: int = 1000, impl: str = "jax", obs_key=None,
                success_threshold=None, sparse: bool = True, success_bonus: float = 5.0,
                playground_config=None, features: bool = True, **expert_kwargs):
    """A MuJoCo Playground environment through `brax_adapter` (the `playground` extra).

    `success_threshold`: success when the environment's own step reward is >= it; with `sparse`
    the reward becomes -1 per step / `success_bonus` and success terminates. `features`: the
    reacher's angles as cos/sin (`brax_adapter.reacher_features`). Remaining kwargs configure the
    scripted expert, which exists for the reacher (`ReacherExpert`).
    """
    from ogpo_jax.envs import brax_adapter as ba    # lazily: Playground only when used
    if sparse and success_threshold is None:
        raise ValueError("env.kwargs.sparse=True needs env.kwargs.success_threshold (what counts as success)")
    raw = ba.make_playground(env_name, impl=impl, config_overrides=playground_config)
    success_fn = None if success_threshold is None else ba.reward_at_least(success_threshold)
    reacher = env_name.startswith("Reacher")
    # Playground's reacher places its target after computing the reset observation
    env = ba.BraxAdapter(raw, success_fn=success_fn, obs_key=obs_key,
                         obs_fn=ba.reacher_features if reacher and features else None,
                         reset_fn=ba.refreshed_reset(raw) if reacher else None)
    if sparse:
        env = ba.SparseSuccess(env, success_bonus=success_bonus)
    if reacher:
        expert = ba.ReacherExpert(env, raw_obs=not features, **tuples(expert_kwargs))
    elif expert_kwargs:
        raise ValueError(f"{env_name!r} has no scripted expert, so {sorted(expert_kwargs)} are unknown env.kwargs")
    else:
        expert = None
    return env, expert, int(max_steps)


def _robosuite(task: str = "can", python=None, num_workers=None, max_steps=None, env_kwargs=None,
               env_args_from=None, obs_keys=None, success_bonus: float = 5.0, noise_min: float = 0.0,
               noise_max: float = 0.3, worker_timeout_s: float = 300.0):
    """robomimic's tasks on robosuite in host worker processes (`envs.host`; README, "robosuite").

    `python`: the interpreter of robosuite's own environment; `env_args_from`: a robomimic HDF5
    whose `env_args` (robosuite env name and kwargs, e.g. its controller) the workers use;
    `max_steps`: the time limit (default: robomimic's rollout horizon of the task);
    `worker_timeout_s`: how long one chunk step may take before its worker counts as hung.
    """
    from ogpo_jax.envs import host
    if task not in host.ROBOMIMIC_TASKS:
        raise ValueError(f"env.kwargs.task={task!r} must be one of {sorted(host.ROBOMIMIC_TASKS)}")
    env_name, horizon, robots = host.ROBOMIMIC_TASKS[task]
    kwargs = {"robots": robots}
    if task == "transport":
        kwargs["env_configuration"] = "single-arm-opposed"
    if env_args_from:             # '' in configs: robomimic's settings
        args = host.env_args_from_file(env_args_from)
        if args.get("env_name", env_name) != env_name:
            raise ValueError(f"{env_args_from} is a {args.get('env_name')!r} dataset, env.kwargs.task={task!r} is {env_name!r}")
        kwargs = dict(args.get("env_kwargs", {}))
    kwargs.update(env_kwargs or {})
    keys = tuple(obs_keys) if obs_keys else (host.TRANSPORT_OBS_KEYS if task == "transport" else host.ROBOMIMIC_OBS_KEYS)
    length = int(max_steps or horizon)
    env = host.HostEnv("robosuite", env_name, kwargs, keys, length, python=python, num_workers=num_workers,
                       success_bonus=success_bonus, worker_timeout_s=worker_timeout_s)
    # what robomimic reads from a dataset to rebuild the env (type 1: robosuite)
    env.robomimic_env_args = {"env_name": env_name, "type": 1, "env_kwargs": kwargs}
    return env, host.HostExpert(env, noise_min, noise_max), length


def _host_point(max_steps: int = 60, python=None, num_workers=None, noise_min: float = 0.0, noise_max: float = 0.5,
                step_sleep_s: float = 0.0, worker_timeout_s: float = 300.0):
    """A numpy point-reaching task in host worker processes: the robosuite path without robosuite.
    `step_sleep_s` makes each simulated step take that long (a slow simulator, for fault tests)."""
    from ogpo_jax.envs import host
    if step_sleep_s < 0:
        raise ValueError(f"env.kwargs.step_sleep_s must be >= 0, got {step_sleep_s}")
    env = host.HostEnv("debug_point", "debug_point", {"step_sleep_s": float(step_sleep_s)}, ("state",), max_steps,
                       python=python, num_workers=num_workers, worker_timeout_s=worker_timeout_s)
    return env, host.HostExpert(env, noise_min, noise_max), int(max_steps)


_can = _arm_task("can", "Can", "CanParams", "CanExpert")
_square = _arm_task("square", "Square", "SquareParams", "SquareExpert")
_two_nuts = _arm_task("two_nuts", "TwoNuts", "TwoNutsParams", "TwoNutsExpert")


REGISTRY = {"point_gaps": _point_gaps, "countdown": _countdown, "chunk_bandit": _chunk_bandit,
            "blowup": _blowup, "can": _can, "square": _square, "two_nuts": _two_nuts, "playground": _playground,
            "robosuite": _robosuite, "host_point": _host_point}


def make(name: str, **kwargs):
    """`kwargs` are the task's, plus the observation fields of `envs.pixels` (`obs`, the camera)."""
    if name not in REGISTRY:
        raise ValueError(f"env.name must be one of {sorted(REGISTRY)}, got {name!r}")
    from ogpo_jax.envs import pixels
    observation = pixels.pop_kwargs(kwargs)
    try:
        env, expert, episode_length = REGISTRY[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"bad env.kwargs for {name!r}: {e}") from None
    if getattr(env, "host_batched", False):      # host workers keep the time limit and flag non-finite steps
        if observation.get("obs", "state") != "state":
            raise ValueError(f"env.kwargs.obs={observation['obs']!r} needs an MJX arm task, not {name!r}")
        return env, expert, episode_length
    env = EpisodeWrapper(NonFiniteWrapper(env), episode_length)
    return pixels.wrap(env, name, observation), expert, episode_length


__all__ = ["make", "REGISTRY", "EnvState", "EpisodeWrapper", "ChunkWrapper", "AutoResetWrapper",
           "VmapWrapper", "NonFiniteWrapper", "core", "toy", "experts"]
