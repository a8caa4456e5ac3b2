"""Orbax checkpoints of whole states, including the zero-size arrays an MJX Data carries."""
import dataclasses
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ogpo_jax.algorithms import ogpo
from ogpo_jax.algorithms.config import OGPOConfig
from ogpo_jax.training import compile_cache
from ogpo_jax.training.checkpoint import Checkpointer


def test_round_trip_with_zero_size_leaves(tmp_path):
    tree = {"act": jnp.zeros((32, 0)), "qpos": jnp.arange(12.0).reshape(3, 4),
            "n": jnp.array(7, jnp.int32), "flags": jnp.array([True, False]), "efc": jnp.zeros((0,), jnp.int32)}
    ckpt = Checkpointer(str(tmp_path / "c"), max_to_keep=2)
    ckpt.save(5, tree)
    ckpt.save(9, jax.tree_util.tree_map(lambda x: x + 1 if x.dtype != bool else ~x, tree))
    assert ckpt.latest_step() == 9
    like = jax.tree_util.tree_map(jnp.zeros_like, tree)
    back = ckpt.restore(like, step=5)
    for k in tree:
        assert back[k].shape == tree[k].shape and back[k].dtype == tree[k].dtype, k
        np.testing.assert_array_equal(np.asarray(back[k]), np.asarray(tree[k]))
    latest = ckpt.restore(jax.eval_shape(lambda: tree))       # abstract template works too
    assert int(latest["n"]) == 8 and latest["act"].shape == (32, 0)
    ckpt.close()


def test_restored_state_is_placed_like_the_template_and_does_not_recompile(tmp_path):
    """Every restored leaf (the empty ones too) is committed to the template's device, so a jitted
    step called with the restored state reuses the program compiled for the template."""
    dev = jax.devices()[0]
    tree = jax.device_put({"act": jnp.zeros((4, 0)), "qpos": jnp.arange(6.0), "n": jnp.array(3, jnp.int32)}, dev)
    step = jax.jit(lambda t: jax.tree_util.tree_map(lambda x: x + 1, t))
    out = step(tree)
    ckpt = Checkpointer(str(tmp_path / "c"))
    ckpt.save(1, out)
    back = ckpt.restore(tree, step=1)
    ckpt.close()
    for k in tree:
        assert back[k].committed and back[k].sharding == tree[k].sharding, k
    step(back)
    assert compile_cache.signature(back) == compile_cache.signature(tree)   # what jit keys its programs on


OLD_LAYOUT = os.path.join(os.path.dirname(__file__), "data", "ogpo_state_aux_layout")
_TINY = OGPOConfig(actor_hidden_dims=(8,), critic_hidden_dims=(8,), num_critics=2, time_emb_dim=4)


@pytest.mark.parametrize("name,cfg", [
    ("plain", _TINY),
    ("chi2", dataclasses.replace(_TINY, chi2_enabled=True, adv_strategy="vanilla")),
    ("value", dataclasses.replace(_TINY, baseline="value")),
])
def test_ogpo_checkpoints_with_the_aux_dict_layout_still_load(tmp_path, name, cfg):
    # Written by the OGPOState layout that kept optional state in an `aux` dict: the fresh state
    # of the same config and key, every float leaf + 0.5, saved inside {"agent", "env_steps"}.
    shutil.copytree(os.path.join(OLD_LAYOUT, name), tmp_path / name)
    fresh = ogpo.init(jax.random.PRNGKey(0), 3, (2, 2), cfg)
    want = jax.tree_util.tree_map(lambda x: x + 0.5 if jnp.issubdtype(x.dtype, jnp.floating) else x, fresh)
    ckpt = Checkpointer(str(tmp_path / name))
    back = ckpt.restore({"agent": fresh, "env_steps": jnp.array(0, jnp.int32)})
    ckpt.close()
    assert isinstance(back["agent"], ogpo.OGPOState) and int(back["env_steps"]) == 7
    assert jax.tree_util.tree_structure(back["agent"]) == jax.tree_util.tree_structure(fresh)
    for got, exp in zip(jax.tree_util.tree_leaves(back["agent"]), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(exp))
    assert (back["agent"].actor_slow is None) == (not cfg.chi2_enabled)
    assert (back["agent"].value is None) == (cfg.baseline != "value")


def test_a_checkpoint_of_another_config_fails_with_a_named_error(tmp_path):
    shutil.copytree(os.path.join(OLD_LAYOUT, "plain"), tmp_path / "plain")
    other = ogpo.init(jax.random.PRNGKey(0), 3, (2, 2), dataclasses.replace(_TINY, baseline="value"))
    ckpt = Checkpointer(str(tmp_path / "plain"))
    with pytest.raises(ValueError, match="different state layout"):
        ckpt.restore({"agent": other, "env_steps": jnp.array(0, jnp.int32)})
    ckpt.close()


def test_a_run_written_before_the_replay_and_update_fields_loads_with_todays_behaviour(tmp_path):
    """A committed run config from before `train.replay_windows`, `algo.critic_updates_per_update`,
    `algo.ppo_top_k`, `algo.ft_flow_steps` and `demos.successful_only` existed loads, validates and
    gets the defaults that reproduce what it ran (chunk windows, one critic step, the full group
    and chain)."""
    import json

    from ogpo_jax.training import rundir
    from ogpo_jax.training.config import validate
    src = os.path.join(os.path.dirname(__file__), "..", "docs", "results", "square_quick", "ogpo_ca_s0")
    raw = json.load(open(os.path.join(src, "config.json")))
    assert "replay_windows" not in raw["train"] and "ppo_top_k" not in raw["algo"]
    shutil.copy(os.path.join(src, "config.json"), tmp_path / "config.json")
    cfg = rundir.load_run_config(str(tmp_path))
    algo = validate(cfg)
    assert cfg.train.replay_windows == "chunk" and cfg.demos.successful_only is False
    assert (algo.critic_updates_per_update, algo.ppo_top_k, algo.ft_flow_steps) == (1, 0, 0)
    assert algo.adv_strategy == raw["algo"]["adv_strategy"] and algo.num_critics == raw["algo"]["num_critics"]
