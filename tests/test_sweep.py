"""Continuous hyperparameters as data: values x seeds as one vmapped program equal the separate runs."""
import jax
import numpy as np
import pytest

from ogpo_jax.algorithms import ogpo
from ogpo_jax.algorithms.config import swept, with_hyperparams
from ogpo_jax.training import compare, finetune, loop
from ogpo_jax.training import spec as spec_lib
from ogpo_jax.training.config import validate
from tests.test_compare import _setup, _tiny_config

VALUES = (0.01, 0.3)          # algo.actor_tau of the two sweep members
SEEDS = (0, 1)


def test_state_hyperparams_replace_the_config_values_and_are_checked():
    cfg = validate(_tiny_config())
    state = ogpo.init(jax.random.PRNGKey(0), 3, (4, 2), cfg)
    assert swept(state) is state.config                       # no sweep: the static config itself
    member = with_hyperparams(state, {"actor_tau": 0.3, "critic_lr": 1e-3})
    assert float(swept(member).actor_tau) == pytest.approx(0.3)
    assert float(swept(member).critic_lr) == pytest.approx(1e-3)
    assert swept(member).group_size == cfg.group_size         # other fields: the config's
    with pytest.raises(ValueError, match="algo.group_size cannot be swept"):
        with_hyperparams(state, {"group_size": 8})
    with pytest.raises(ValueError, match="actor_tau"):
        with_hyperparams(state, {"actor_tau": 2.0})            # out of range, named


def test_values_x_seeds_as_one_program_equal_the_separate_runs():
    c = _tiny_config()
    spec, bc = _setup(c)
    env = spec.task.env
    members = [(v, s) for v in VALUES for s in SEEDS]
    grid = finetune.init_finetune_state(
        spec.with_members([s for _, s in members], [{"actor_tau": v} for v, _ in members]), bc)
    vinterval = loop.make_interval(env, c.train, c.train.log_every_iterations, vmap_seeds=True)
    for _ in range(3):                       # 9 iterations: acting, replay, 2 updates each once training
        grid, gm = vinterval(grid)
    assert int(np.asarray(grid.agent.step).min()) > 0
    for j, v in enumerate(VALUES):
        cv = _tiny_config()
        cv.algo.actor_tau = v
        sep = finetune.init_finetune_state(spec_lib.make(cv, task=spec.task).with_members(list(SEEDS)), bc)
        for _ in range(3):
            sep, sm = vinterval(sep)
        for i in range(len(SEEDS)):
            k = j * len(SEEDS) + i
            np.testing.assert_array_equal(np.asarray(sm["episodes"])[i], np.asarray(gm["episodes"])[k])
            assert int(sep.env_steps[i]) == int(grid.env_steps[k])
            for a, b in zip(jax.tree_util.tree_leaves(loop.unstack_seed(sep.agent, i).actor_ema),
                            jax.tree_util.tree_leaves(loop.unstack_seed(grid.agent, k).actor_ema)):
                np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    # the value matters: the same seed under the two taus has moved its EMA actor differently
    ema = [loop.unstack_seed(grid.agent, k).actor_ema for k in (0, len(SEEDS))]
    gap = max(float(np.abs(a - b).max()) for a, b in zip(*map(jax.tree_util.tree_leaves, ema)))
    assert gap > 1e-4


def test_run_sweep_reports_one_result_per_value(tmp_path):
    c = _tiny_config()
    spec, bc = _setup(c)
    partials = []
    res = compare.run_sweep(spec, bc, list(SEEDS), "algo.actor_tau", VALUES,
                            log=lambda *_: None, on_eval=partials.append, checkpoint_dir=str(tmp_path / "run"))
    assert [r["sweep"] for r in res] == [{"algo.actor_tau": v} for v in VALUES]
    assert [r["algo"]["actor_tau"] for r in res] == list(VALUES)
    for r in res:
        assert r["seeds"] == list(SEEDS) and r["curve"]["env_steps"][0] == 0
        assert len(r["curve"]["success_ode"][-1]) == len(SEEDS) and r["grad_steps"] > 0
        assert set(r["final"]) == {"success_ode", "success_sde"}
    assert partials and all(len(p) == len(VALUES) and p[0]["partial"] for p in partials)
    with pytest.raises(ValueError, match="--sweep field must be one of"):
        compare.run_sweep(spec, bc, [0], "algo.group_size", [4, 8])
