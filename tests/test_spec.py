"""The run spec: one validation, one env, frozen, and every cross-section rule before any stage."""
import dataclasses
import os
import subprocess
import sys

import pytest

from configs import toy
from ogpo_jax.training import spec as spec_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config():
    c = toy.get_config("quick")
    c.log.progress = c.log.tensorboard = False
    return c


def test_a_spec_is_validated_frozen_and_carries_its_task_and_seeds():
    c = _config()
    c.seed, c.num_seeds = 3, 2
    spec = spec_lib.make(c)
    assert spec.seeds == (3, 4) and spec.hparams is None
    assert spec.algo.group_size == c.algo.group_size and spec.train.num_envs == c.train.num_envs
    env = spec.task.env
    assert spec.task.chunk_shape == (c.env.chunk_horizon, env.action_size)
    assert spec.task.obs_dim == env.observation_size and spec.task.episode_length == c.env.kwargs.max_steps
    with pytest.raises(AttributeError):
        spec.config.train.num_envs = 1                        # the config inside is immutable
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seeds = (0,)
    c.train.num_envs = 1                                      # and independent of the caller's
    assert spec.train.num_envs != 1
    # a variant reuses the task (no second env) and is validated again
    c.train.num_envs = 16
    variant = spec_lib.make(c, task=spec.task)
    assert variant.task is spec.task and variant.train.num_envs == 16
    c.train.num_envs = 0
    with pytest.raises(ValueError, match="train.num_envs"):
        spec_lib.make(c, task=spec.task)


def test_members_seeds_and_sweep_values_are_checked_by_name():
    c = _config()
    spec = spec_lib.make(c)
    members = spec.with_members([5, 5, 6], [{"actor_tau": 0.01}, {"actor_tau": 0.3}, {"actor_tau": 0.01}],
                                checkpoint_every_env_steps=123)
    assert members.seeds == (5, 5, 6) and members.config.num_seeds == 3 and members.config.seed == 5
    assert members.config.distributed.num_devices == 1 and members.train.checkpoint_every_env_steps == 123
    assert members.hparams[1] == {"actor_tau": 0.3} and members.task is spec.task
    with pytest.raises(ValueError, match="must number num_seeds=1"):
        spec_lib.make(c, seeds=[0, 1])
    with pytest.raises(ValueError, match="one entry per member"):
        spec.with_members([0, 1], [{"actor_tau": 0.1}])
    with pytest.raises(ValueError, match=r"hparams fields must be among .*got \['group_size'\]"):
        spec.with_members([0], [{"group_size": 8}])
    with pytest.raises(ValueError, match="algo.actor_tau"):
        spec.with_members([0], [{"actor_tau": 2.0}])           # out of range, named
    other = _config()
    other.env.chunk_horizon = 2
    with pytest.raises(ValueError, match="built for another env section"):
        spec_lib.make(other, task=spec.task)


def test_cross_section_rules_fail_in_the_spec():
    """Rules that span sections (several seeds need one device; an on-policy method runs on one
    device) fail when the spec is made, before demos or BC."""
    c = _config()
    c.num_seeds, c.distributed.num_devices = 2, 2
    with pytest.raises(ValueError, match="num_seeds"):
        spec_lib.make(c)
    c = _config()
    c.algo.name, c.algo.rollout_mode, c.distributed.num_devices = "dppo", "sde", 2
    with pytest.raises(ValueError, match="distributed.num_devices"):
        spec_lib.make(c)


def test_compare_cli_rejects_a_bad_sweep_value_before_demos(tmp_path):
    out = tmp_path / "cmp"
    cmd = [sys.executable, "experiments/compare.py", "--config=configs/toy.py:quick", "--methods=ogpo",
           "--seeds=2", f"--outdir={out}", "--sweep=algo.actor_tau=0.01,2.0"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode != 0 and "algo.actor_tau" in run.stderr, run.stderr[-2000:]
    assert not (out / "base").exists()                         # no demos, no BC
