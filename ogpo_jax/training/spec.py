"""One validated run: the frozen facts every stage, the finetune driver and `compare.py` take.

    spec = spec_lib.make(config)          # validates once, builds the env once
    prep = pipeline.prepare(spec, workdir)           # demos, clipped BC
    finetune.run(spec, prep.bc_params, workdir)      # the online stage

`make` runs every check that can fail before anything is collected, trained or allocated: the
whole config (`training/config.validate`: fields, types, ranges, the cross-section rules such as
on-policy x devices and host envs x seeds), the env's keyword arguments (by building it), and
whether the training state fits one device. What it returns cannot be changed afterwards: a
variant (another method, other seeds) is a new spec, `make(other_config, task=spec.task)`,
`spec.with_members(seeds)`, so no stage can see a config that was not validated.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from ogpo_jax import encoders, envs
from ogpo_jax.algorithms.config import SWEEPABLE, AlgoConfig
from ogpo_jax.training import memory
from ogpo_jax.training.config import validate


@dataclasses.dataclass(frozen=True)
class Task:
    """The env of a run and the facts the stages read from it."""
    name: str
    env: Any                     # the wrapped single env (`envs.make`)
    expert: Any                  # its scripted expert, or None
    episode_length: int          # env steps per episode (the time limit)
    chunk_shape: tuple           # (H, action_dim): one action chunk
    obs_dim: int

    @property
    def horizon(self) -> int:
        return self.chunk_shape[0]

    @property
    def obs_layout(self):
        """((robomimic key, size), ...) for the MJX tasks, None for a flat state."""
        return getattr(self.env, "obs_keys", None)


def env_kwargs(config, worlds: int | None = None) -> dict:
    """`config.env.kwargs` as the env takes them. A 0 in the MJX presets' sizing fields means "not
    given" (`configs/base.mjx_arm_kwargs`): `max_contact_points` then is the task's default cap.
    On MuJoCo Warp (`impl='warp'`) without a `warp_max_worlds`, that is set to `worlds` (a
    script's own largest call) or else to the most worlds one call of this run steps (demos, BC
    and finetune evaluations, training envs, times the seeds vmapped together): Warp's contact
    buffer is shared by the worlds of a call and its kernels run over all of it: room for 4,096
    worlds makes a 16-env Can step ~30x slower on the CPU than room for 16 (docs/tasks.md)."""
    kwargs = config.env.kwargs.to_dict()
    for key in ("max_contact_points", "warp_max_worlds"):
        if key in kwargs and kwargs[key] == 0:
            del kwargs[key]
    if kwargs.get("impl") == "warp" and "warp_max_worlds" not in kwargs:
        if worlds is None:
            seeds = max(int(config.get("num_seeds", 1)), 1)
            worlds = max(int(config.demos.num_demos), int(config.bc.eval_episodes),
                         seeds * int(config.train.num_envs), seeds * int(config.train.eval_episodes))
        kwargs["warp_max_worlds"] = int(worlds)
    return kwargs


def make_task(config) -> Task:
    """Build `config.env` (one env; batched copies come from `envs.core.batch_env`)."""
    env, expert, episode_length = envs.make(config.env.name, **env_kwargs(config))
    return Task(name=config.env.name, env=env, expert=expert, episode_length=int(episode_length),
                chunk_shape=(int(config.env.chunk_horizon), int(env.action_size)), obs_dim=int(env.observation_size))


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """A validated run: its config (immutable), the algorithm config parsed from it, its task and
    the members it finetunes: their seeds (`config.seed + i` for i < `config.num_seeds` unless
    given) and, for a sweep, each member's values of `algorithms.config.SWEEPABLE` fields."""
    config: ml_collections.FrozenConfigDict
    algo: AlgoConfig
    task: Task
    seeds: tuple
    hparams: tuple | None = None       # one {field: value} per member, or None

    @property
    def train(self):
        return self.config.train

    def with_members(self, seeds, hparams=None, **train) -> "RunSpec":
        """The same run over other members on one device: seeds (they may repeat in a sweep), each
        one's SWEEPABLE values (`hparams`), and `train` fields to change; validated again (host
        envs take one seed)."""
        config = self.mutable_config()
        config.seed, config.num_seeds, config.distributed.num_devices = int(seeds[0]), len(seeds), 1
        for k, v in train.items():
            config.train[k] = v
        return make(config, seeds=seeds, task=self.task, hparams=hparams)

    def mutable_config(self) -> ml_collections.ConfigDict:
        """An unlocked copy of the config, to derive a variant from (then `make` it)."""
        return ml_collections.ConfigDict(self.config.to_dict())


def make(config, seeds=None, task: Task | None = None, hparams=None, check_memory: bool = True) -> RunSpec:
    """Validate `config` once and freeze it with its task and seeds. `task`: reuse an already built
    task (the same `env` section: checked), e.g. for every method of a comparison. `seeds`: the
    members to finetune, `config.num_seeds` of them (default `config.seed + i`); they may repeat
    (a sweep's members). `hparams`: one {SWEEPABLE field: value} per member (a sweep), each value
    range-checked as if it were the config's. `check_memory`: raise
    MemoryError now when the training state would not fit one device."""
    algo = validate(config)
    seeds = tuple(config.seed + i for i in range(config.num_seeds)) if seeds is None else tuple(int(s) for s in seeds)
    if len(seeds) != config.num_seeds:
        raise ValueError(f"seeds {list(seeds)} must number num_seeds={config.num_seeds} (the config's checks count them)")
    if hparams is not None:
        hparams = tuple(dict(h) for h in hparams)
        if len(hparams) != len(seeds):
            raise ValueError(f"hparams needs one entry per member ({len(seeds)}), got {len(hparams)}")
        for h in {tuple(sorted(h.items())): h for h in hparams}.values():     # each distinct value set once
            unknown = sorted(set(h) - set(SWEEPABLE))
            if unknown:
                raise ValueError(f"hparams fields must be among {list(SWEEPABLE)}, got {unknown}")
            probe = ml_collections.ConfigDict(config.to_dict())
            for k, v in h.items():
                probe.algo[k] = v
            validate(probe)
    if task is None:
        task = make_task(config)
    elif task.name != config.env.name or task.chunk_shape[0] != config.env.chunk_horizon:
        raise ValueError(f"task {task.name!r} (chunk {task.chunk_shape}) was built for another env section than "
                         f"env.name={config.env.name!r}, env.chunk_horizon={config.env.chunk_horizon}")
    if check_memory:
        # a camera observation is stored encoded: the replay holds the encoder's features
        encoder = encoders.for_env(config.bc, task.env)
        obs_dim = task.obs_dim if encoder is None else encoder.feature_size
        memory.check_fits(config, obs_dim, task.chunk_shape[1], task.episode_length)
    return RunSpec(config=ml_collections.FrozenConfigDict(config), algo=algo, task=task, seeds=seeds,
                   hparams=hparams)


def encoded(spec: RunSpec, encoder, params) -> RunSpec:
    """`spec` with its camera task seen through the frozen image encoder (`encoder`, `params`):
    the observation finetuning, its replay and its critics see (`envs.pixels.EncodedObservation`)."""
    from ogpo_jax.envs import pixels
    env = pixels.EncodedObservation(spec.task.env, encoder, params)
    return dataclasses.replace(spec, task=dataclasses.replace(spec.task, env=env, obs_dim=int(encoder.feature_size)))


__all__ = ["Task", "RunSpec", "make", "make_task", "encoded"]
