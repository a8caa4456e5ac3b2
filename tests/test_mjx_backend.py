"""The MJX backend (`env.kwargs.impl`) and the solver budget (`solver_iterations`, `ls_iterations`,
`solver_tolerance`) are fields of the MJX tasks, with named errors."""
import importlib.util

import pytest

from configs import can
from ogpo_jax import envs
from ogpo_jax.training import spec


def test_warp_without_warp_lang_is_a_named_error(monkeypatch):
    # warp-lang may be installed (MuJoCo Playground depends on it): hide it
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "warp" else real(name, *a, **k))
    with pytest.raises(ImportError, match=r"env\.kwargs\.impl='warp' needs the warp-lang package"):
        envs.make("can", impl="warp")


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match=r"env\.kwargs\.impl='cuda'.*\('jax', 'warp'\)"):
        envs.make("can", impl="cuda")


def test_backend_is_a_config_field_that_overrides():
    pytest.importorskip("warp")
    c = can.get_config("quick")
    c.env.kwargs.impl = "warp"
    c.env.kwargs.warp_max_worlds = 8
    env = envs.make(c.env.name, **spec.env_kwargs(c))[0].unwrapped
    # Warp's buffers: the scene's 40 contact slots per world (Can's 16 pairs) for 8 worlds
    assert env.params.impl == "warp" and env.max_vmap_batch is None
    assert env.contacts_per_world == 40 and env.naconmax == 8 * 40 and env.njmax > 0


def test_solver_budget_is_a_field_that_reaches_the_mjx_model():
    default = envs.make("can")[0].unwrapped
    assert (default.mj_model.opt.ls_iterations, default.mj_model.opt.tolerance) == (4, pytest.approx(1e-5))
    env = envs.make("can", solver_iterations=6, ls_iterations=8, solver_tolerance=1e-8)[0].unwrapped
    for opt in (env.mj_model.opt, env.mjx_model.opt):
        assert int(opt.iterations) == 6 and int(opt.ls_iterations) == 8
        assert float(opt.tolerance) == pytest.approx(1e-8)


@pytest.mark.parametrize("field,value", [("ls_iterations", 0), ("solver_iterations", 0), ("solver_tolerance", 0.0)])
def test_bad_solver_budget_is_named(field, value):
    with pytest.raises(ValueError, match=rf"{field}={value}"):
        envs.make("can", **{field: value})


def test_a_run_sizes_warps_contact_buffer_from_its_largest_call():
    c = can.get_config("quick")
    assert "warp_max_worlds" not in spec.env_kwargs(c)          # the JAX backend has no such buffer
    c.env.kwargs.impl = "warp"
    c.num_seeds = 2
    c.demos.num_demos, c.bc.eval_episodes, c.train.num_envs, c.train.eval_episodes = 100, 64, 32, 64
    # evaluation: 64 episodes x 2 vmapped seeds is the largest call
    assert spec.env_kwargs(c)["warp_max_worlds"] == 128
    c.env.kwargs.warp_max_worlds = 1000                          # an explicit value is kept
    assert spec.env_kwargs(c)["warp_max_worlds"] == 1000
    assert spec.env_kwargs(c, worlds=16)["warp_max_worlds"] == 1000   # ... over a script's own size
    c.env.kwargs.warp_max_worlds = 0                             # 0: sized again
    assert spec.env_kwargs(c, worlds=16)["warp_max_worlds"] == 16  # a script's own largest call


def test_the_contact_cap_is_a_config_field_the_command_line_can_set():
    c = can.get_config("quick")
    # 0: the task's default cap (Can: 12); -1: none, as the runs before the cap stepped
    assert c.env.kwargs.max_contact_points == 0 and "max_contact_points" not in spec.env_kwargs(c)
    assert envs.make(c.env.name, **spec.env_kwargs(c))[0].unwrapped.params.max_contact_points == 12
    c.env.kwargs.max_contact_points = -1
    assert envs.make(c.env.name, **spec.env_kwargs(c))[0].unwrapped.params.max_contact_points == -1


def test_vmapped_seeds_on_warp_are_a_named_error():
    from ogpo_jax.training.config import validate
    c = can.get_config("quick")
    c.env.kwargs.impl = "warp"
    c.num_seeds = 2
    with pytest.raises(ValueError, match=r"num_seeds must be 1 with env.kwargs.impl='warp'.*got 2"):
        validate(c)
