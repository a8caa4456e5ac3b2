"""The `Algorithm` interface and its registry: names resolve (or fail by name), and the second
registered algorithm, success-buffer BC alone (`sb_bc`), learns and runs through the same driver
as OGPO (train, resume bit for bit, compare, restore, train.py)."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import methods as methods_lib
from configs import toy
from ogpo_jax.algorithms import base as algorithms
from ogpo_jax.algorithms import ogpo, sb_bc
from ogpo_jax.algorithms.config import AlgoConfig, OGPOConfig
from ogpo_jax.training import compare, pipeline, rundir
from ogpo_jax.training.config import validate
from test_resume import ROOT, _final_state, _records, _tiny, _workdir, prepared  # noqa: F401

OBS, CHUNK = 3, (2, 2)


def test_registry_resolves_names_and_rejects_unknown_ones():
    assert algorithms.names()[:2] == ("ogpo", "sb_bc")
    assert algorithms.get("ogpo") is ogpo.ALGORITHM and algorithms.get("sb_bc") is sb_bc.ALGORITHM
    with pytest.raises(ValueError, match="algo.name must be one of .*'nope'"):
        algorithms.get("nope")
    with pytest.raises(ValueError, match="algo.name must be one of .*'nope'"):
        AlgoConfig.from_dict({"name": "nope"})
    c = toy.get_config("quick")
    c.algo.name = "nope"
    with pytest.raises(ValueError, match="algo.name"):
        validate(c)
    state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, OGPOConfig(actor_hidden_dims=(8,), critic_hidden_dims=(8,)))
    assert algorithms.of(state) is ogpo.ALGORITHM
    with pytest.raises(ValueError, match="algo.name must be 'ogpo'"):
        ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, sb_bc.SBBCConfig())


def test_sb_bc_rejects_settings_it_cannot_run():
    c = toy.get_config("quick")
    c.algo.name = "sb_bc"
    validate(c)                                        # the toy task rolls out with SDE
    c.algo.rollout_mode = "best_of_n"
    with pytest.raises(ValueError, match=r"algo.rollout_mode .* \(Best-of-N needs a critic\)"):
        validate(c)
    c.algo.rollout_mode, c.algo.bc_coeff = "sde", 0.0
    with pytest.raises(ValueError, match="algo.bc_coeff must be > 0 for algo.name='sb_bc'"):
        validate(c)
    state = sb_bc.init(jax.random.PRNGKey(0), OBS, CHUNK, sb_bc.SBBCConfig(actor_hidden_dims=(8,)))
    with pytest.raises(ValueError, match="mode must be one of .* got 'best_of_n'"):
        sb_bc.act(state, jnp.ones((2, OBS)), jax.random.PRNGKey(1), mode="best_of_n")


def sb_bc_imitation(seed: int = 0) -> dict:
    """Every success chunk is the same target a*: the largest ODE-action error of the current and the
    EMA actor before and after 400 BC updates, and the BC loss (mean of the last 20 over the first 20)."""
    k_init, k_obs, k_act = jax.random.split(jax.random.PRNGKey(seed), 3)
    cfg = sb_bc.SBBCConfig(actor_hidden_dims=(64, 64), flow_steps=5, actor_lr=3e-3, actor_lr_floor=3e-3,
                           actor_lr_warmup=0, actor_tau=0.1, rollout_mode="sde")
    target = jnp.asarray([[0.5, -0.25], [0.75, 0.0]])
    obs = jax.random.normal(k_obs, (64, OBS))
    succ = {"obs": obs, "actions": jnp.broadcast_to(target, (64, *CHUNK)), "valid": jnp.ones((64, CHUNK[0]))}
    state = sb_bc.init(k_init, OBS, CHUNK, cfg)

    def err(state, actor):
        chunks = sb_bc.act(state, obs[:16], k_act, mode="ode", actor=actor)
        return float(jnp.abs(chunks - target).max())

    out = {"error_before": err(state, "current")}
    step = jax.jit(sb_bc.update)
    losses = []
    for _ in range(400):
        state, m = step(state, None, succ)
        losses.append(float(m["actor/bc_loss"]))
    assert int(state.step) == 400 and not hasattr(state, "critic")
    return {**out, "loss_ratio": float(np.mean(losses[-20:]) / np.mean(losses[:20])),
            "error_current": err(state, "current"), "error_ema": err(state, "ema")}


# Bars; spread over seeds 0-9: python tests/measure_spread.py sb_bc. At this constant learning rate the
# current actor jitters about a* (its largest error 0.10 +- 0.02, up to 0.13); the EMA averages the
# jitter out (0.05 +- 0.02)
SB_BC_START_ERROR, SB_BC_LOSS_RATIO, SB_BC_ERROR_CURRENT, SB_BC_ERROR_EMA = 0.2, 0.2, 0.2, 0.15


def test_sb_bc_imitates_its_success_batch():
    """After a few hundred BC updates the ODE sampler of the current and of the EMA actor returns a*,
    starting far from it. Seeds 0-9 (tests/measure_spread.py sb_bc): loss ratio 0.093 +- 0.009
    (bar 0.2), largest error of the current actor 0.097 +- 0.023 (max 0.128, bar 0.2), of the EMA
    0.054 +- 0.016 (bar 0.15), from 1.75 before training."""
    m = sb_bc_imitation(0)
    assert m["error_before"] > SB_BC_START_ERROR, m
    assert m["loss_ratio"] < SB_BC_LOSS_RATIO, m
    assert m["error_current"] < SB_BC_ERROR_CURRENT and m["error_ema"] < SB_BC_ERROR_EMA, m


@pytest.mark.xdist_group("resume")
def test_sb_bc_trains_resumes_bit_identically_and_compares(tmp_path, prepared):  # noqa: F811
    """The driver runs sb_bc as it runs OGPO: the same demos and BC actor, a resumed run equal
    to an uninterrupted one, the policy restored for evaluate.py, and seeds vmapped by compare."""
    def cfg(total):
        c = _tiny(total_env_steps=total)
        c.algo.name = "sb_bc"
        return c

    straight = _workdir(prepared, str(tmp_path / "straight"))
    split = _workdir(prepared, str(tmp_path / "split"))
    done = pipeline.run(cfg(1200), straight, log=lambda *_: None)
    first = pipeline.run(cfg(600), split, log=lambda *_: None)
    second = pipeline.run(cfg(1200), split, log=lambda *_: None)
    assert first["env_steps"] < 1200 <= second["env_steps"] == done["env_steps"]
    assert second["grad_steps"] == done["grad_steps"] > first["grad_steps"] > 0
    s_step, s_leaves = _final_state(None, straight)
    r_step, r_leaves = _final_state(None, split)
    assert s_step == r_step and len(s_leaves) == len(r_leaves)
    for a, b in zip(s_leaves, r_leaves):
        np.testing.assert_array_equal(a, b)
    records = _records(split)
    assert records == _records(straight)
    trained = [r for r in records if r.get("updates_in_interval", 0) > 0]
    assert trained and all("actor/bc_loss" in r and not any(k.startswith("critic/") for k in r) for r in trained)
    assert second["final_success_ode"] == done["final_success_ode"]

    config = rundir.load_run_config(split)
    agent, policies, _ = rundir.restore_policy(config, split, "latest")
    assert isinstance(agent, sb_bc.SBBCState) and set(policies) == {"ode", "sde"}
    assert int(agent.step) == second["grad_steps"]

    c = methods_lib.apply(cfg(400), "sb_bc")
    prep = pipeline.prepare(c, split, log=lambda *_: None)
    res = compare.run_seeds(prep.spec, prep.bc_params, [0, 1], log=lambda *_: None)
    assert res["grad_steps"] > 0 and len(res["final"]["success_ode"]) == 2
    assert res["algo"]["name"] == "sb_bc"


def test_train_cli_runs_sb_bc(tmp_path):
    workdir = str(tmp_path / "run")
    flags = ["--config=configs/toy.py:quick", f"--workdir={workdir}", "--config.algo.name=sb_bc",
             "--config.log.progress=False", "--config.algo.actor_hidden_dims=(16,16)", "--config.algo.flow_steps=2",
             "--config.algo.success_batch_size=16", "--config.algo.batch_size=16", "--config.algo.ppo_batch_size=16", "--config.demos.num_demos=8",
             "--config.bc.max_steps=20", "--config.bc.eval_every=20", "--config.bc.eval_episodes=8",
             "--config.train.num_envs=4", "--config.train.start_training=40", "--config.train.total_env_steps=200",
             "--config.train.eval_episodes=8", "--config.train.eval_every_env_steps=100",
             "--config.train.log_every_iterations=5"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "train.py")] + flags, cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    assert summary["config"]["algo"]["name"] == "sb_bc" and summary["grad_steps"] > 0
    assert "[done]" in r.stdout + r.stderr
