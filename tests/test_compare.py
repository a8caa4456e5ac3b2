"""Seeds as one vmapped program (equal to the seeds run one by one) and the comparison harness."""
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import toy
from ogpo_jax import envs
from ogpo_jax.algorithms import ogpo
from ogpo_jax.algorithms.config import AlgoConfig
from ogpo_jax.training import compare, loop, report
from ogpo_jax.training import spec as spec_lib
from ogpo_jax.training.config import validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_config():
    c = toy.get_config()
    a = c.algo
    a.actor_hidden_dims, a.critic_hidden_dims, a.num_critics, a.flow_steps = (16, 16), (16, 16), 2, 3
    a.batch_size = a.ppo_batch_size = a.success_batch_size = 8
    a.group_size = 4
    t = c.train
    t.num_envs, t.updates_per_iteration, t.log_every_iterations, t.start_training = 4, 2, 3, 16
    t.replay_capacity, t.success_capacity, t.eval_episodes = 512, 256, 8
    t.total_env_steps, t.eval_every_env_steps = 90, 40
    c.bc.max_steps, c.bc.eval_every, c.bc.eval_episodes, c.demos.num_demos = 20, 20, 8, 8
    return c


def _setup(c):
    """-> (the run spec of `c`, an untrained BC actor: OGPO's actor with `c`'s network fields,
    whichever algorithm `c` names)."""
    spec = spec_lib.make(c)
    actor_cfg = AlgoConfig.from_dict({**c.algo.to_dict(), "name": "ogpo"})
    bc = ogpo.init(jax.random.PRNGKey(42), spec.task.obs_dim, spec.task.chunk_shape, actor_cfg).actor
    return spec, bc


@pytest.mark.slow
def test_vmapped_seeds_equal_the_seeds_run_one_by_one():
    """Loop level; CI runs the pipeline-level version, test_resume.py::test_num_seeds_equals_single_seed_runs."""
    c = _tiny_config()
    spec, bc = _setup(c)
    env = spec.task.env
    stacked, _ = compare.init_seeds(spec, bc, [3, 4])
    vinterval = loop.make_interval(env, c.train, c.train.log_every_iterations, vmap_seeds=True)
    interval = loop.make_interval(env, c.train, c.train.log_every_iterations)
    vs = stacked
    for _ in range(3):                      # 9 iterations: acting, replay, 6 x 2 updates
        vs, vm = vinterval(vs)
    assert int(np.asarray(vs.agent.step).min()) > 0
    for i, seed in enumerate((3, 4)):
        single, _ = compare.init_seeds(spec, bc, [seed])
        s = loop.unstack_seed(single, 0)
        for _ in range(3):
            s, m = interval(s)
        assert int(s.env_steps) == int(vs.env_steps[i])
        np.testing.assert_array_equal(m["episodes"], vm["episodes"][i])
        for a, b in zip(jax.tree_util.tree_leaves(s.agent), jax.tree_util.tree_leaves(loop.unstack_seed(vs.agent, i))):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    # different seeds really differ
    assert not np.allclose(jax.tree_util.tree_leaves(vs.agent.critic)[0][0],
                           jax.tree_util.tree_leaves(vs.agent.critic)[0][1])


def test_bootstrap_ci_and_auc():
    lo, hi = report.bootstrap_ci([0.5, 0.5, 0.5])
    assert lo == hi == 0.5
    lo, hi = report.bootstrap_ci([0.0, 1.0, 1.0, 0.0, 1.0])
    assert 0.0 <= lo < 0.6 < hi <= 1.0
    assert report.bootstrap_ci([0.3]) == (0.3, 0.3)
    assert report.area_under_curve([0, 10], [0.0, 1.0]) == pytest.approx(0.5)
    assert report.area_under_curve([0, 10, 20], [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]) == pytest.approx(0.5)


def test_run_seeds_and_report(tmp_path):
    c = _tiny_config()
    spec, bc = _setup(c)
    ck = str(tmp_path / "ckpt")
    res = compare.run_seeds(spec, bc, [0, 1], log=lambda *_: None,
                            checkpoint_dir=ck)
    curve = res["curve"]
    assert res["seeds"] == [0, 1] and len(curve["success_ode"][0]) == 2
    assert curve["env_steps"][0] == 0 and curve["env_steps"][-1] >= c.train.total_env_steps
    assert len(curve["env_steps"]) >= 3 and res["grad_steps"] > 0
    assert set(res["final"]) == {"success_ode", "success_sde"}
    os.makedirs(tmp_path / "methods")
    for name in ("a", "b"):
        with open(tmp_path / "methods" / f"{name}.json", "w") as f:
            json.dump(dict(res, method=name), f)
    paths = report.write_report(str(tmp_path), report.load_results(str(tmp_path)), ["b", "a"],
                                 {"bc_success_ode": 0.1, "bc_success_sde": 0.2}, "tiny")
    rows = open(paths["csv"]).read().strip().splitlines()
    assert len(rows) == 1 + 2 * 2 * len(curve["env_steps"])
    table = open(paths["md"]).read()
    assert table.index("| b |") < table.index("| a |") and "BC start: ODE 0.100" in table
    for png in ("success_vs_env_steps.png", "success_vs_wall_clock.png", "rollout_success_vs_env_steps.png"):
        assert os.path.getsize(tmp_path / png) > 1000

    # an unfinished method's curves so far (<name>.partial) show up only with include_partial, its
    # last evaluation standing in for the final one; a stale .partial of a finished method is ignored
    part = {"seeds": [0, 1], "curve": {k: v[:2] for k, v in curve.items()}, "rollout": res["rollout"],
            "env_steps": curve["env_steps"][1], "seconds": 1.0, "device": "cpu", "partial": True}
    for name in ("c", "a"):
        with open(tmp_path / "methods" / f"{name}.partial", "w") as f:
            json.dump(dict(part, method=name), f)
    assert set(report.load_results(str(tmp_path))) == {"a", "b"}
    with_partial = report.load_results(str(tmp_path), include_partial=True)
    assert set(with_partial) == {"a", "b", "c"} and "partial" not in with_partial["a"]
    paths = report.write_report(str(tmp_path), with_partial, ["a", "b", "c"], None, "tiny")
    last = float(np.mean(curve["success_ode"][1]))
    assert f"| c (unfinished: last evaluation) | ODE act | 2 | {last:.3f} " in open(paths["md"]).read()

    # a longer budget on the same checkpoint dir continues from the last evaluation's state
    c.train.total_env_steps = 150
    msgs = []
    more = compare.run_seeds(spec_lib.make(c, task=spec.task), bc, [0, 1], log=msgs.append, checkpoint_dir=ck,
                             progress_every_s=0.0)
    assert any("resumed from checkpoint at" in m for m in msgs)
    # progress between evaluations: the interval's compile time, then env steps/s
    assert sum(re.match(r"\[compile\] training interval .*: [0-9.]+s$", m) is not None for m in msgs) == 1
    beats = [re.search(r"rollout success ([0-9.]+) over (\d+) episodes", m) for m in msgs
             if "env steps/s (per seed)" in m]
    assert beats and all(b is not None and 0.0 <= float(b.group(1)) <= 1.0 for b in beats)
    n = len(curve["env_steps"]) - 1          # the last point of the first run is its final state
    assert more["curve"]["env_steps"][:n + 1] == curve["env_steps"]
    assert more["curve"]["success_ode"][:n + 1] == curve["success_ode"]
    assert more["curve"]["env_steps"][-1] >= 150 > curve["env_steps"][-1]
    # the process's CPU seconds: 0 at the start, growing, and carried across the resume
    cpu = more["curve"]["cpu_seconds"]
    assert cpu[0] == 0.0 and all(b > a for a, b in zip(cpu, cpu[1:])) and cpu[n] == curve["cpu_seconds"][n]
    assert more["grad_steps"] > res["grad_steps"]


def test_report_shows_each_method_alone_and_with_selection(tmp_path):
    """Hand-made curves: one row per method and view, the first evaluation at which the seed mean
    reaches 0.8 / 0.95 in env steps and in the clock the runs logged (CPU seconds on a CPU)."""
    steps = [0.0, 50.0, 100.0, 150.0]
    curve = {"env_steps": steps, "env_steps_per_seed": [[x, x] for x in steps], "grad_steps": [0, 5, 10, 15],
             "wall_seconds": [0.0, 20.0, 40.0, 60.0], "cpu_seconds": [0.0, 10.0, 21.0, 33.0],
             "success_alone": [[0.5, 0.5], [0.7, 0.8], [0.9, 0.9], [0.95, 1.0]],
             "success_select": [[0.5, 0.5], [0.9, 0.9], [1.0, 0.9], [1.0, 1.0]]}
    r = {"seeds": [0, 1], "curve": curve, "final": {"success_alone": [0.95, 1.0], "success_select": [1.0, 1.0]},
         "env_steps": 150.0, "seconds": 70.0, "device": "cpu (1 of 2 cores, x86_64)"}
    bc = {"seeds": [0, 1], "curve": {k: v for k, v in curve.items() if k != "success_select"},
          "final": {"success_alone": [0.95, 1.0]}, "env_steps": 150.0, "seconds": 70.0, "device": "cpu"}
    paths = report.write_report(str(tmp_path), {"m": r, "b": bc}, ["m", "b"], None, "t")
    md = open(paths["md"]).read()
    assert "CPU s (1 core) to 0.8 / 0.95" in md
    assert "| m | policy alone | 2 | 0.975 [0.950, 1.000] | " in md and "| 100 / 150 | 21 / 33 | 150 | 33 |" in md
    assert "| m | with selection | 2 | 1.000 [1.000, 1.000] | " in md and "| 50 / 100 | 10 / 21 |" in md
    assert md.count("| b |") == 1 and "| b | policy alone |" in md          # no critic: no selection row
    # AUC of the selection view by hand: trapezoids of the seed means 0.5, 0.9, 0.95, 1.0 over 150 steps
    auc = (50 * (0.5 + 0.9) / 2 + 50 * (0.9 + 0.95) / 2 + 50 * (0.95 + 1.0) / 2) / 150
    assert f"| {auc:.3f} [" in md.split("| m | with selection |")[1].splitlines()[0]
    rows = open(paths["csv"]).read().splitlines()
    assert rows[0].split(",")[-3:] == ["success_ode", "success_alone", "success_select"] and len(rows) == 1 + 2 * 2 * 4
    assert report.first_crossing(steps, curve["success_alone"], 0.99) is None
    # a run without CPU seconds (a GPU, or logged before them): wall-clock
    del bc["curve"]["cpu_seconds"]
    assert report.clock_key({"m": r, "b": bc}) == "wall_seconds"


def test_compare_cli_runs_and_resumes(tmp_path):
    out = str(tmp_path / "cmp")
    flags = ["--config=configs/toy.py", "--config.demos.num_demos=8", "--config.bc.max_steps=20",
             "--config.bc.eval_every=20", "--config.bc.eval_episodes=8", "--config.train.eval_episodes=8",
             "--config.train.num_envs=4", "--config.train.total_env_steps=40", "--config.train.start_training=16",
             "--config.train.log_every_iterations=3", "--config.train.updates_per_iteration=1",
             "--config.algo.actor_hidden_dims=(16,16)", "--config.algo.critic_hidden_dims=(16,16)",
             "--config.algo.num_critics=2", "--config.algo.flow_steps=2", "--config.algo.batch_size=8",
             "--config.algo.ppo_batch_size=8", "--config.algo.success_batch_size=8", "--config.algo.group_size=2",
             f"--outdir={out}", "--seeds=2"]
    cmd = [sys.executable, "experiments/compare.py"] + flags
    r = subprocess.run(cmd + ["--methods=ogpo_ca,ogpo_nn", "--eval_modes=alone,select"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert os.path.exists(os.path.join(out, "methods", "ogpo_nn.json"))
    table = open(os.path.join(out, "comparison.md")).read()
    assert "| ogpo_ca | policy alone | 2 |" in table and "| ogpo_ca | with selection | 2 |" in table
    again = subprocess.run(cmd + ["--methods=ogpo_ca"], cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and "ogpo_ca: done earlier" in again.stdout
    # --report_only without --config titles the table with the task the results ran on
    path = os.path.join(out, "methods", "ogpo_nn.json")
    res = json.load(open(path))
    json.dump(dict(res, task="other_task"), open(path, "w"))
    rep = subprocess.run([sys.executable, "experiments/compare.py", f"--outdir={out}", "--report_only"],
                         cwd=ROOT, capture_output=True, text=True)
    assert rep.returncode == 0, rep.stderr[-3000:]
    assert rep.stdout.startswith("### other_task, point_gaps"), rep.stdout[:200]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(__import__("configs.methods", fromlist=["METHODS"]).METHODS))
def test_every_method_runs_the_toy_loop_without_nans(name):
    """Every preset through the real loop on point_gaps (acting, replay, success buffer, updates),
    2 seeds vmapped; ~20 s of compile each on 2 cores, hence `slow`."""
    from configs import methods as methods_lib
    c = methods_lib.apply(_tiny_config(), name)
    spec, bc = _setup(c)
    ls, _ = compare.init_seeds(spec, bc, [0, 1])
    interval = loop.make_interval(spec.task.env, c.train, c.train.log_every_iterations, vmap_seeds=True)
    for _ in range(3):
        ls, metrics = interval(ls)
    updated = np.asarray(metrics["updated"]).sum()
    assert updated > 0
    for k, v in metrics.items():
        assert np.all(np.isfinite(np.asarray(v))), k
    assert np.asarray(ls.agent.step).min() > 0


def test_selection_settings_and_eval_modes_are_checked_early():
    c = _tiny_config()
    c.train.eval_select_n = 1
    with pytest.raises(ValueError, match="train.eval_select_n"):
        validate(c)
    c = _tiny_config()
    c.train.eval_select_aggregation = "median"
    with pytest.raises(ValueError, match="train.eval_select_aggregation"):
        validate(c)
    c = _tiny_config()
    spec, bc = _setup(c)
    with pytest.raises(ValueError, match="eval_modes must be among .*'alone', 'select'.*got 'best'"):
        compare.run_seeds(spec, bc, [0], eval_modes=("alone", "best"))


def test_evaluations_meet_the_same_episodes_whatever_the_interval_and_frozen_bc_only_evaluates(tmp_path, monkeypatch):
    """Evaluation keys come from the evaluation point, not from the env steps a run happens to be
    at: frozen BC run through the whole loop with two interval sizes (so evaluated at different env
    steps) scores exactly the same at every point, and its evaluate-only run (`Algorithm.frozen`)
    scores the same again without a single rollout."""
    from ogpo_jax.algorithms import bc as bc_algo
    from ogpo_jax.training import pipeline
    c = _tiny_config()
    c.train.total_env_steps, c.train.eval_every_env_steps, c.train.eval_episodes = 160, 40, 16
    # a weak BC actor (ODE ~0.4, SDE ~0.1): episodes differ, so equal scores mean equal episodes
    c.demos.num_demos, c.algo.actor_hidden_dims, c.log.progress = 64, (64, 64), False
    c.bc.max_steps = c.bc.eval_every = 6000
    prep = pipeline.prepare(c, str(tmp_path / "base"), log=lambda *_: None)
    c.algo.name, c.algo.rollout_mode = "bc", "sde"
    spec, bc = spec_lib.make(c, task=prep.spec.task), prep.bc_params

    def run(log_every, frozen):
        monkeypatch.setattr(bc_algo, "ALGORITHM", bc_algo.ALGORITHM._replace(frozen=frozen))
        c.train.log_every_iterations = log_every
        res = compare.run_seeds(spec_lib.make(c, task=spec.task), bc, [0, 1], log=lambda *_: None,
                                eval_modes=("ode", "sde"), checkpoint_dir=str(tmp_path / f"{log_every}_{frozen}"))
        return res

    looped_a, looped_b, frozen = run(1, False), run(3, False), run(1, True)
    # the two looped runs pass the points at different env steps
    assert looped_a["curve"]["env_steps"] != looped_b["curve"]["env_steps"]
    for r in (looped_a, looped_b, frozen):
        assert len(r["curve"]["success_ode"]) == 5         # 0, 40, 80, 120, 160
    for m in ("success_ode", "success_sde"):
        assert looped_a["curve"][m] == looped_b["curve"][m] == frozen["curve"][m]
    # independent episodes per point: not one number repeated (16 episodes x 2 seeds, 5 points)
    assert len({tuple(x) for x in frozen["curve"]["success_ode"]}) > 1
    assert frozen["curve"]["env_steps"] == [0.0, 40.0, 80.0, 120.0, 160.0]
    assert frozen["rollout"]["env_steps"] == [] and looped_a["rollout"]["env_steps"]
    assert frozen["final"] == looped_a["final"]
    logged = [json.loads(x) for x in open(tmp_path / "1_True" / "seed_0" / "metrics.jsonl")]
    assert [r["eval_point"] for r in logged if "eval_point" in r] == [0, 40, 80, 120, 160]
