"""Never lose a run: bit-exact resume and `num_seeds=S` as one vmapped program equal to S
single-seed runs (SIGKILLs, damaged checkpoints and full disks: tests/test_faults.py)."""
import json
import os
import shutil
import sys

import jax
import numpy as np
import pytest

from configs import toy
from ogpo_jax import envs
from ogpo_jax.training import pipeline, rundir
from ogpo_jax.training.checkpoint import Checkpointer
from ogpo_jax.training.evaluation import make_evaluator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = ("wall_seconds", "cpu_seconds", "env_steps_per_s", "updates_per_s", "compile_s", "compile_and_first_interval_s")


def _quiet(*_):
    pass


def _tiny(**train):
    c = toy.get_config("quick")
    c.log.progress = False
    c.log.tensorboard = False
    a = c.algo
    a.actor_hidden_dims, a.critic_hidden_dims, a.num_critics, a.flow_steps = (32, 32), (32, 32), 2, 3
    a.batch_size = a.ppo_batch_size = a.success_batch_size = 16
    a.group_size = 4
    c.demos.num_demos, c.bc.max_steps, c.bc.eval_every, c.bc.eval_episodes = 16, 60, 30, 8
    t = c.train
    t.num_envs, t.start_training, t.log_every_iterations, t.updates_per_iteration = 8, 200, 5, 2
    t.replay_capacity, t.success_capacity, t.eval_episodes = 4096, 1024, 8
    t.eval_every_env_steps, t.checkpoint_every_env_steps = 600, 100_000
    for k, v in train.items():
        t[k] = v
    return c


def _records(log_dir):
    with open(os.path.join(log_dir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


def _final_state(cfg, workdir):
    """The newest finetune checkpoint of a run, restored as numpy leaves."""
    ckpt = Checkpointer(os.path.join(workdir, "finetune", "checkpoints"))
    step = ckpt.latest_step()
    item = ckpt.manager.restore(step)       # raw restore: any layout
    ckpt.close()
    return step, [np.asarray(x) for x in jax.tree_util.tree_leaves(item)]


_CACHE = {}     # per worker process: pytest may tear a module fixture down between reordered tests


@pytest.fixture
def prepared(tmp_path_factory):
    """Demos + BC actor of `_tiny()`, made once per worker and copied into each run directory."""
    if "prepared" not in _CACHE:
        d = str(tmp_path_factory.mktemp("prepared"))
        pipeline.prepare(_tiny(), d, log=_quiet)
        _CACHE["prepared"] = d
    return _CACHE["prepared"]


def _workdir(prepared, path):
    os.makedirs(path)
    for name in ("demos.hdf5", "demos.json", "bc"):
        src = os.path.join(prepared, name)
        if os.path.exists(src):
            (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(path, name))
    return path


@pytest.mark.xdist_group("resume")
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, prepared):
    straight = _workdir(prepared, str(tmp_path / "straight"))
    split = _workdir(prepared, str(tmp_path / "split"))
    pipeline.run(_tiny(total_env_steps=1200), straight, log=_quiet)
    first = pipeline.run(_tiny(total_env_steps=600), split, log=_quiet)
    assert first["env_steps"] < 1200
    messages = []
    second = pipeline.run(_tiny(total_env_steps=1200), split, log=messages.append)
    # finished stages are skipped, finetuning resumes
    assert any("using" in m and "demos.hdf5" in m for m in messages)
    assert any("[bc] restored" in m for m in messages)
    assert any("resumed from checkpoint at" in m for m in messages)
    assert second["bc_success_ode"] == first["bc_success_ode"]
    assert second["grad_steps"] > first["grad_steps"]
    s_step, s_leaves = _final_state(None, straight)
    r_step, r_leaves = _final_state(None, split)
    assert s_step == r_step == second["env_steps"]
    assert len(s_leaves) == len(r_leaves)
    for a, b in zip(s_leaves, r_leaves):        # params, EMA, optimizers, replay, success ring, envs, keys
        np.testing.assert_array_equal(a, b)
    assert _records(straight) == _records(split)            # every logged metric, evaluations included
    summary = json.load(open(os.path.join(straight, "summary.json")))
    assert summary["final_success_ode"] == second["final_success_ode"]
    assert os.path.getsize(os.path.join(split, "learning_curve.png")) > 10_000

    # reloading the run for experiments/evaluate.py: the finetuned agent and the BC actor
    config = rundir.load_run_config(split)
    assert config.algo.actor_hidden_dims == (32, 32)
    agent, policies, what = rundir.restore_policy(config, split, "latest")
    assert set(policies) == {"ode", "sde", "best_of_n"} and str(second["env_steps"]) in what
    assert int(agent.step) == second["grad_steps"]
    bc_params, bc_policies, what = rundir.restore_policy(config, split, "bc")
    assert set(bc_policies) == {"ode", "sde"} and "BC" in what
    env, _, length = envs.make(config.env.name)
    evaluate = make_evaluator(env, config.env.chunk_horizon, length, config.train.eval_episodes)
    # the episodes of the run's final evaluation (its key), so the rates are comparable episode for
    # episode; the run evaluated through its sampler switch, another compiled program, so one
    # episode may flip on float rounding
    key = jax.random.fold_in(rundir.seed_stage_keys(config.seed)[4], 10**9)
    ode = float(evaluate(policies["ode"], agent, key)["success"])
    assert abs(ode - second["final_success_ode"]) <= 1.0 / config.train.eval_episodes + 1e-9, ode
    evaluate(bc_policies["sde"], bc_params, key)
    with pytest.raises(FileNotFoundError, match="checkpoint step 17"):
        rundir.restore_policy(config, split, "17")
    with pytest.raises(FileNotFoundError, match="config.json"):
        rundir.load_run_config(str(tmp_path / "nothing"))


@pytest.mark.xdist_group("resume")
def test_num_seeds_equals_single_seed_runs(tmp_path, prepared):
    multi = _workdir(prepared, str(tmp_path / "multi"))
    cfg = _tiny(total_env_steps=800)
    cfg.num_seeds = 2
    summary = pipeline.run(cfg, multi, log=_quiet)
    assert summary["seeds"] == [0, 1] and len(summary["per_seed"]) == 2
    for seed in (0, 1):
        single = str(tmp_path / f"single{seed}")
        os.makedirs(single)
        for name in ("demos.hdf5", "bc"):        # seed 1 finetunes the same demos + BC actor
            src = os.path.join(multi, name)
            (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(single, name))
        c = _tiny(total_env_steps=800)
        c.seed = seed
        one = pipeline.run(c, single, log=_quiet)
        per_seed = json.load(open(os.path.join(multi, f"seed_{seed}", "summary.json")))
        assert per_seed["seed"] == seed
        assert per_seed["env_steps"] == one["env_steps"] and per_seed["grad_steps"] == one["grad_steps"]
        # Same machine, two programs (vmapped over seeds and not): they round differently, so the
        # runs agree to float drift, not bit for bit; over these 800 env steps the drift stays far
        # below the tolerances on the CPUs CI has run on, and one evaluation episode (of 8) may flip.
        assert per_seed["final_success_ode"] == pytest.approx(one["final_success_ode"], abs=0.13)
        a, b = _records(os.path.join(multi, f"seed_{seed}")), _records(single)
        assert [r["env_steps"] for r in a] == [r["env_steps"] for r in b]
        for ra, rb in zip(a, b):
            for k in ("critic/loss", "actor/loss", "rollout/success", "replay_size"):
                if k in rb:
                    assert ra[k] == pytest.approx(rb[k], rel=2e-3, abs=1e-4), (seed, k, ra["env_steps"])
    # the stacked checkpoint: evaluate.py restores the first seed; resuming needs the same layout
    agent, _, what = rundir.restore_policy(rundir.load_run_config(multi), multi, "latest")
    assert "seed 0 of 2" in what and int(agent.step) == summary["per_seed"][0]["grad_steps"]
    cfg.num_seeds = 1
    with pytest.raises(ValueError, match=r"written with 1 device\(s\) and 2 seed\(s\).*--config.num_seeds=2"):
        pipeline.run(cfg, multi, log=_quiet)
    s0 = json.load(open(os.path.join(multi, "seed_0", "summary.json")))
    s1 = json.load(open(os.path.join(multi, "seed_1", "summary.json")))
    assert _records(os.path.join(multi, "seed_0")) != _records(os.path.join(multi, "seed_1"))
    assert summary["final_success_ode"] == pytest.approx((s0["final_success_ode"] + s1["final_success_ode"]) / 2)


# ----------------------------------------------------------------------------- train.py command


def _train_cmd(workdir, total, **overrides):
    """train.py on a tiny toy config; `overrides`: {"config.section.field": value} on top."""
    flags = {
        "config.log.progress": False, "config.log.tensorboard": True,
        "config.algo.actor_hidden_dims": "(32,32)", "config.algo.critic_hidden_dims": "(32,32)",
        "config.algo.num_critics": 2, "config.algo.flow_steps": 3, "config.algo.batch_size": 16,
        "config.algo.ppo_batch_size": 16, "config.algo.success_batch_size": 16, "config.algo.group_size": 4,
        "config.demos.num_demos": 16, "config.bc.max_steps": 60, "config.bc.eval_every": 30,
        "config.bc.eval_episodes": 8, "config.train.num_envs": 8, "config.train.start_training": 200,
        "config.train.log_every_iterations": 5, "config.train.updates_per_iteration": 2,
        # a large replay ring makes every checkpoint write take a while (~120 MB)
        "config.train.replay_capacity": 1_500_000, "config.train.success_capacity": 1024,
        "config.train.eval_episodes": 8, "config.train.eval_every_env_steps": 100_000,
        "config.train.checkpoint_every_env_steps": 300, "config.train.max_checkpoints": 2,
        "config.train.total_env_steps": total, **overrides,
    }
    return ([sys.executable, os.path.join(ROOT, "experiments", "train.py"), "--config=configs/toy.py:quick",
             f"--workdir={workdir}"] + [f"--{k}={v}" for k, v in flags.items()])
