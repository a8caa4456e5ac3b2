"""End to end on the toy task: clipped BC lands weak, OGPO finetunes it to >= 0.9 ODE success."""
import json
import os

import pytest

from configs import toy
from ogpo_jax.training import pipeline


PPO_ALONE_STEPS = 40_000
# Episodes of each final evaluation in the end-to-end checks: at success ~0.9 the estimate's
# standard error is 0.027 with 128 episodes and 0.013 with 512.
BAR_EVAL_EPISODES = 512


def assert_reaches(summary, bar=0.9, key="final_success_ode"):
    """The measured success rate is consistent with a true rate >= `bar`: the point estimate is at
    most two standard errors (binomial, at p = bar, over the evaluation's episodes) below it.
    With 512 episodes that accepts >= 0.873 and rejects a policy at 0.85 with ~96% probability;
    a plain `>= bar` on a policy whose true rate is `bar` fails half the time."""
    n = summary["config"]["train"]["eval_episodes"]
    se = (bar * (1.0 - bar) / n) ** 0.5
    assert summary[key] >= bar - 2.0 * se, (f"{key} {summary[key]:.3f} over {n} episodes is more "
                                            f"than 2 SE ({se:.3f}) below {bar}", summary)


def _quiet_log(*_):
    pass


def _config(seed, **train):
    c = toy.get_config("quick")
    c.train.eval_episodes = BAR_EVAL_EPISODES
    c.seed = seed
    c.log.progress = False
    c.log.tensorboard = False
    for k, v in train.items():
        c.train[k] = v
    return c


@pytest.mark.heavy
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_toy_end_to_end_reaches_090(tmp_path, seed):
    """The bar at `configs/toy.py:quick` (150k env steps): BC <= 0.5, finetuned ODE success
    consistent with >= 0.9 (`assert_reaches`). Single runs of this preset land at 0.90-0.93
    (RESULTS.md), so a plain `>= 0.9` on 128 episodes turns on a couple of episodes.
    Seed 1 is `slow` (it costs ~8 min of the 20-min CI budget); the 3-seed comparisons in
    RESULTS.md cover more seeds of the same preset."""
    workdir = str(tmp_path / f"seed{seed}")
    summary = pipeline.run(_config(seed), workdir, log=_quiet_log)
    assert summary["bc_success_ode"] <= 0.5, summary
    assert_reaches(summary)
    on_disk = json.load(open(os.path.join(workdir, "summary.json")))
    for key in ("bc_success_ode", "bc_success_sde", "final_success_ode", "final_success_sde",
                "env_steps", "grad_steps", "wall_seconds", "config"):
        assert key in on_disk
    assert on_disk["config"]["algo"]["group_size"] == summary["config"]["algo"]["group_size"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_ppo_alone_improves_bc(tmp_path, seed):
    """The PPO path on its own: success-buffer BC off (lambda = 0), at least +0.15 over BC.

    With the toy's fast EMA (tau 0.05) pure PPO collapses to 0 success (DESIGN §7, RESULTS.md),
    so this uses the paper's slow EMA (tau 0.005), actor lr 1e-4, vanilla group-mean advantages
    and 64 states x 16 chains per actor step (32 states left seed 1 at +0.11..+0.13). 512 eval
    episodes keep the estimate's std under 0.025. Measured on the 2-core CPU (RESULTS.md):
    seed 0 0.352 -> 0.598, seed 1 0.352 -> 0.584. `slow` (~8-10 min per seed) to keep CI < 20 min:
    run with `python -m pytest -q --runslow -k ppo_alone`."""
    cfg = _config(seed, total_env_steps=PPO_ALONE_STEPS, eval_every_env_steps=PPO_ALONE_STEPS,
                  eval_episodes=512)
    cfg.algo.update(bc_coeff=0.0, actor_tau=0.005, actor_lr=1e-4, actor_lr_floor=5e-5, adv_strategy="vanilla",
                    batch_size=64, ppo_batch_size=64)
    summary = pipeline.run(cfg, str(tmp_path / f"ppo{seed}"), log=_quiet_log)
    assert summary["bc_success_ode"] <= 0.5, summary
    assert summary["final_success_ode"] >= summary["bc_success_ode"] + 0.15, summary


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4])
def test_toy_more_seeds_reach_090(tmp_path, seed):
    """More seeds of the same bar at `configs/toy.py:quick`."""
    summary = pipeline.run(_config(seed), str(tmp_path / f"seed{seed}"), log=_quiet_log)
    assert summary["bc_success_ode"] <= 0.5, summary
    assert_reaches(summary)


# Rerunning a workdir (stages skipped, finetune resumed bit-identically, restore_policy / evaluate):
# tests/test_resume.py::test_resume_is_bit_identical_to_an_uninterrupted_run.


@pytest.mark.parametrize("section,field,value,match", [
    ("algo", "flow_steps", 0, "algo.flow_steps"),
    ("algo", "group_size", 1, "algo.group_size"),
    ("algo", "clip_epsilon", -0.1, "algo.clip_epsilon"),
    ("env", "chunk_horizon", 0, "env.chunk_horizon"),
    ("train", "replay_capacity", 8, "train.replay_capacity"),
    ("train", "num_envs", 0, "train.num_envs"),
    ("bc", "eval_mode", "best", "bc.eval_mode"),
])
def test_bad_config_fails_before_anything_runs(tmp_path, section, field, value, match):
    cfg = _config(0)
    cfg[section][field] = value
    workdir = tmp_path / "bad"
    with pytest.raises(ValueError, match=match):
        pipeline.run(cfg, str(workdir), log=_quiet_log)
    assert not workdir.exists()      # failed before writing anything


def test_unknown_env_kwarg_is_named(tmp_path):
    cfg = _config(0)
    cfg.env.kwargs = {"max_stepz": 3}
    with pytest.raises(ValueError, match="max_stepz"):
        pipeline.run(cfg, str(tmp_path / "x"), log=_quiet_log)


def test_collect_demos_script_writes_and_never_overwrites(tmp_path):
    import subprocess
    import sys

    from ogpo_jax.data import demos

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "d.hdf5"
    cmd = [sys.executable, os.path.join(root, "experiments", "collect_demos.py"),
           f"--config={os.path.join(root, 'configs', 'toy.py')}", "--config.demos.num_demos=6", f"--out={out}"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    episodes, env_args = demos.read_hdf5(str(out))
    assert len(episodes) == 6 and env_args["env_name"] == "point_gaps"
    before = out.read_bytes()
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=300)
    assert again.returncode != 0 and "--overwrite" in again.stderr + again.stdout
    assert out.read_bytes() == before
