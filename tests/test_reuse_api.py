"""The public update API as another JAX program uses it: actor params from `init_actor` / BC,
checked at `init`; batches checked at `update` with the offending key named; `act` jittable with
its mode from the config; one time convention for a user's own velocity field; a jittable success
batch that falls back to replay rows."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ogpo_jax import ogpo
from ogpo_jax.algorithms.config import OGPOConfig
from ogpo_jax.data import replay as rb
from ogpo_jax.gcp import flow

CFG = OGPOConfig(actor_hidden_dims=(16, 16), critic_hidden_dims=(16, 16), num_critics=2, flow_steps=3,
                 batch_size=8, ppo_batch_size=4, group_size=2, success_batch_size=4, best_of_n=2,
                 best_of_n_heads=2, rollout_mode="ode")
OBS, CHUNK = 3, (2, 2)


def _batch(key, n=8, obs=OBS, chunk=CHUNK):
    ks = jax.random.split(key, 3)
    return {
        "obs": jax.random.normal(ks[0], (n, obs)),
        "actions": jax.random.uniform(ks[1], (n, *chunk), minval=-1, maxval=1),
        "rewards": -jnp.ones((n, chunk[0])),
        "valid": jnp.ones((n, chunk[0]), bool),
        "next_obs": jax.random.normal(ks[2], (n, obs)),
        "terminal": jnp.zeros((n,), bool),
    }


def test_init_rejects_actor_params_of_another_width_naming_the_field():
    small = ogpo.init_actor(jax.random.PRNGKey(0), OBS, CHUNK, OGPOConfig(actor_hidden_dims=(8, 8)))
    with pytest.raises(ValueError, match="actor_hidden_dims=\\(16, 16\\)"):
        ogpo.init(jax.random.PRNGKey(1), OBS, CHUNK, CFG, actor_params=small)
    wrong_obs = ogpo.init_actor(jax.random.PRNGKey(0), OBS + 1, CHUNK, CFG)
    with pytest.raises(ValueError, match="obs_dim=3"):
        ogpo.init(jax.random.PRNGKey(1), OBS, CHUNK, CFG, actor_params=wrong_obs)


def test_init_unwraps_flax_variables_and_keeps_the_params():
    params = ogpo.init_actor(jax.random.PRNGKey(0), OBS, CHUNK, CFG)
    state = ogpo.init(jax.random.PRNGKey(1), OBS, CHUNK, CFG, actor_params={"params": params})
    for a, b in zip(jax.tree_util.tree_leaves(state.actor), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mutate, error, match", [
    (lambda b: {k: v for k, v in b.items() if k != "terminal"}, KeyError, "terminal"),
    (lambda b: {**b, "actions": b["actions"].reshape(8, -1)}, ValueError, "'actions'.*\\(8, 4\\).*\\(8, 2, 2\\)"),
    (lambda b: {**b, "rewards": b["rewards"][:, 0]}, ValueError, "'rewards'"),
    (lambda b: {k: v[:3] for k, v in b.items()}, ValueError, "3 rows, fewer than the 4"),
    (lambda b: {**b, "next_obs": b["next_obs"][:, :2]}, ValueError, "'next_obs'"),
])
def test_update_names_the_bad_batch_field(mutate, error, match):
    state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, CFG)
    with pytest.raises(error, match=match):
        jax.jit(ogpo.update)(state, mutate(_batch(jax.random.PRNGKey(1))), None)


def test_update_checks_the_success_batch_and_accepts_extra_keys():
    state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, CFG)
    batch = {**_batch(jax.random.PRNGKey(1)), "success": jnp.zeros((8,), bool)}   # replay rows carry it
    succ = {k: _batch(jax.random.PRNGKey(2), 4)[k] for k in ("obs", "actions")}
    with pytest.raises(KeyError, match="success_batch is missing \\['valid'\\]"):
        ogpo.update(state, batch, succ)
    succ["valid"] = jnp.ones((4, CHUNK[0]), bool)
    new, metrics = jax.jit(ogpo.update)(state, batch, succ)
    assert int(new.step) == 1 and np.isfinite(float(metrics["critic/loss"]))


def test_act_jits_as_is_with_the_configured_mode():
    state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, CFG)
    obs, key = jnp.ones((5, OBS)), jax.random.PRNGKey(3)
    chunks = jax.jit(ogpo.act)(state, obs, key)
    assert chunks.shape == (5, *CHUNK)
    np.testing.assert_allclose(chunks, ogpo.act(state, obs, key, mode="ode"), rtol=1e-5, atol=1e-6)
    sde = jax.jit(ogpo.act, static_argnames=("mode",))(state, obs, key, mode="sde")
    assert not np.allclose(sde, chunks)          # the mode argument is honoured under jit


def test_samplers_call_a_user_field_with_one_time_per_row():
    """A field written against the (N,) time convention of `bc_loss` / `chain_log_prob` works in
    the samplers too."""
    seen = []

    def field(params, obs, x, t):
        seen.append(t.shape)
        return params * x + t[:, None] * obs[:, :1]   # indexes t per row: fails on a scalar t

    obs, spec, dim = jnp.ones((4, 2)), CFG.gcp_spec, 3
    flow.sample_ode(field, 0.5, obs, jax.random.PRNGKey(0), spec, dim)
    chain, _ = flow.sample_sde(field, 0.5, obs, jax.random.PRNGKey(1), spec, dim)
    lp = flow.chain_log_prob(field, 0.5, obs, chain, spec)
    _, _, lp_sampler = flow.sample_sde(field, 0.5, obs, jax.random.PRNGKey(1), spec, dim, log_prob=True)
    np.testing.assert_allclose(lp, lp_sampler, rtol=1e-5, atol=1e-5)
    assert set(seen) <= {(4,), (4 * CFG.flow_steps,)}


def bc_step_fit(seed: int = 0):
    """300 public `bc_step`s from `init_actor` on actions that are a function of the observation:
    the loss (mean of the last 20 over the first 20) and the trained parameters."""
    k_data, k_init, k_steps = jax.random.split(jax.random.PRNGKey(seed), 3)
    data = {k: v for k, v in _batch(k_data, 32).items() if k in ("obs", "actions", "valid")}
    data["actions"] = jnp.tanh(data["obs"][:, :2])[:, None, :].repeat(CHUNK[0], 1)   # a function of obs
    cfg = dataclasses.replace(CFG, actor_lr=1e-3, actor_lr_warmup=0)
    params = ogpo.init_actor(k_init, OBS, CHUNK, cfg)
    opt = ogpo.bc_optimizer(cfg).init(params)
    step = jax.jit(lambda p, o, i, k: ogpo.bc_step(cfg, CHUNK, p, o, i, data, k))
    losses = []
    for i in range(300):
        params, opt, m = step(params, opt, i, jax.random.fold_in(k_steps, i))
        losses.append(float(m["actor/bc_loss"]))
    return {"loss_ratio": float(np.mean(losses[-20:]) / np.mean(losses[:20]))}, params


BC_STEP_LOSS_RATIO = 0.5    # spread over seeds 0-9: python tests/measure_spread.py bc_step


def test_bc_step_from_init_actor_lowers_the_flow_matching_loss():
    """Loss ratio over seeds 0-9 (tests/measure_spread.py bc_step): 0.367 +- 0.035, max 0.451
    (bar 0.5)."""
    m, params = bc_step_fit(0)
    assert m["loss_ratio"] < BC_STEP_LOSS_RATIO, m
    ogpo.init(jax.random.PRNGKey(2), OBS, CHUNK, CFG, actor_params=params)   # accepted as is


def test_sample_success_falls_back_to_replay_rows_until_full():
    example = rb.transition_spec(OBS, CHUNK)
    success = rb.init_buffer(example, 16)
    replay_rows = {**_batch(jax.random.PRNGKey(0)), "success": jnp.zeros((8,), bool)}
    fn = jax.jit(lambda buf, k: rb.sample_success(buf, replay_rows, k, 4))
    rows = fn(success, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(rows["obs"], replay_rows["obs"][:4])          # empty: replay rows
    stored = {**_batch(jax.random.PRNGKey(5), 3), "success": jnp.ones((3,), bool)}
    success = rb.insert(success, stored)
    np.testing.assert_array_equal(fn(success, jax.random.PRNGKey(1))["obs"], replay_rows["obs"][:4])  # 3 < 4
    success = rb.insert(success, {**_batch(jax.random.PRNGKey(6), 1), "success": jnp.ones((1,), bool)})
    rows = fn(success, jax.random.PRNGKey(1))
    held = np.asarray(success.data["obs"][:4])
    assert all(any(np.array_equal(r, h) for h in held) for r in np.asarray(rows["obs"]))


def _readme_reuse_snippet() -> str:
    import pathlib
    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Using the update in your own JAX code", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_reuse_snippet_runs_as_shown():
    """The README's reuse code, run as written (small networks so it is quick on a CPU), with the
    user's data filled in: every name it shows exists and the calls compose."""
    code = _readme_reuse_snippet()
    assert "OGPOConfig(" in code
    small = "actor_hidden_dims=(16, 16), critic_hidden_dims=(16, 16), num_critics=2, flow_steps=3, " \
            "batch_size=8, ppo_batch_size=4, success_batch_size=4, "
    code = code.replace("OGPOConfig(", "OGPOConfig(" + small, 1)
    example = rb.transition_spec(OBS, CHUNK)
    batch = {**_batch(jax.random.PRNGKey(0)), "success": jnp.zeros((8,), bool)}
    namespace = dict(H=CHUNK[0], action_dim=CHUNK[1], obs_dim=OBS, step=0, key=jax.random.PRNGKey(1),
                     demo_batch={k: batch[k] for k in ("obs", "actions", "valid")},
                     obs=jnp.ones((5, OBS)), batch=batch, success_buffer=rb.init_buffer(example, 16))
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["chunk"].shape == (5, *CHUNK)
    assert int(namespace["state"].step) == 1
    assert np.isfinite(float(namespace["metrics"]["critic/loss"]))
    assert np.isfinite(float(namespace["bc_metrics"]["actor/bc_loss"]))


def _example():
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "reuse_update.py"
    spec = importlib.util.spec_from_file_location("reuse_update", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reuse_example_imports_only_the_public_api_and_runs():
    import ast
    example = _example()
    tree = ast.parse(open(example.__file__).read())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {m for m in imported if m.startswith("ogpo_jax")} == {"ogpo_jax", "ogpo_jax.data"}
    bc, final = example.main(["--bc_steps=200", "--iterations=12", "--eval_every=6", "--num_envs=16"])
    assert 0.0 <= bc <= 1.0 and 0.0 <= final <= 1.0


@pytest.mark.slow
def test_reuse_example_improves_over_its_bc_policy():
    bc, final = _example().main([])
    assert bc < 0.4 and final > bc + 0.3


def test_insert_names_missing_transition_keys():
    buf = rb.init_buffer(rb.transition_spec(OBS, CHUNK), 8)
    with pytest.raises(KeyError, match="missing \\['success'\\]"):
        rb.insert(buf, _batch(jax.random.PRNGKey(0), 2))


def _readme_public_names() -> dict:
    """{module path: [names]} from the README's "Public API" list (backticked `module`: `name`, ...)."""
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = " ".join(text.split("**Public API.**", 1)[1].split("\n\nWhat `update` reads", 1)[0].split())
    names = {}
    for module, listed in re.findall(r"`(ogpo_jax[\w.]*)`:\s*(.*?)(?=`ogpo_jax[\w.]*`:|$)", block):
        names[module] = re.findall(r"`(\w+)`", listed)
    return names


def test_every_public_name_in_the_readme_exists():
    """The README's public list names only things a user can import (a rename without an alias
    would fail here)."""
    import importlib
    listed = _readme_public_names()
    assert {"ogpo_jax.ogpo", "ogpo_jax.data.replay", "ogpo_jax.gcp", "ogpo_jax.envs.core"} <= set(listed)
    assert len(sum(listed.values(), [])) >= 20
    for module, names in listed.items():
        mod = importlib.import_module(module.replace("ogpo_jax.ogpo", "ogpo_jax.algorithms.ogpo"))
        for name in names:
            assert hasattr(mod, name), f"README lists {module}.{name}, which does not exist"
    assert hasattr(OGPOConfig(), "gcp_spec")


def test_renamed_public_names_warn_and_still_work():
    """0.2.0 renames (CHANGELOG.md) keep their old names for a minor version, with a warning."""
    config = OGPOConfig()
    with pytest.warns(DeprecationWarning, match="gcp_spec"):
        assert config.flow_spec == config.gcp_spec
    with pytest.warns(DeprecationWarning, match="OGPOState"):
        assert ogpo.TrainState is ogpo.OGPOState
    with pytest.raises(AttributeError, match="no attribute 'TrainStat'"):
        ogpo.TrainStat
