"""Guards: a catalogue of bad configs and malformed files, each with its named error (before any
compilation), the device-memory check, and the non-finite update guard (NaN injection)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from configs import toy
from ogpo_jax import envs
from ogpo_jax.algorithms import ogpo
from ogpo_jax.data.demos import DatasetError
from ogpo_jax.training import finetune, loop, memory, pipeline, rundir
from ogpo_jax.training.checkpoint import CheckpointError, Checkpointer
from ogpo_jax.training.config import validate


def _set(path, value):
    """Breaker: set a (possibly new) field, bypassing ConfigDict's own type safety (configs may also
    come from JSON or plain dicts)."""
    def apply(c):
        d = c.to_dict()
        node = d
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
        return ConfigDict(d)
    return apply


def _many(*fns):
    def apply(c):
        for f in fns:
            c = f(c)
        return c
    return apply


BAD_CONFIGS = [
    ("unknown top-level key", _set("foo", 1), r"config must be free of unknown top-level keys.*foo"),
    ("unknown train key", _set("train.num_env", 8), r"train must be free of unknown keys.*num_env"),
    ("unknown algo key", _set("algo.lr", 1e-3), r"algo must be free of unknown keys.*'lr'"),
    ("string for an int", _set("train.num_envs", "32"), r"train.num_envs must be an integer, got '32'"),
    ("string for a float", _set("algo.actor_lr", "1e-4"), r"algo.actor_lr must be a number, got '1e-4'"),
    ("int for a bool", _set("log.progress", 1), r"log.progress must be a bool, got 1"),
    ("float for an int", _set("algo.group_size", 8.0), r"algo.group_size must be an integer, got 8.0"),
    ("no envs", _set("train.num_envs", 0), r"train.num_envs must be >= 1, got 0"),
    ("no flow steps", _set("algo.flow_steps", 0), r"algo.flow_steps must be >= 1"),
    ("group of one", _set("algo.group_size", 1), r"algo.group_size must be >= 2"),
    ("negative clip", _set("algo.clip_epsilon", -0.1), r"algo.clip_epsilon must be > 0"),
    ("discount > 1", _set("algo.discount", 1.5), r"algo.discount must be in \[0, 1\]"),
    ("PPO batch > TD batch", _set("algo.ppo_batch_size", 64), r"algo.ppo_batch_size must be <= batch_size"),
    ("replay smaller than a batch", _set("train.replay_capacity", 8), r"train.replay_capacity must be >= algo.batch_size"),
    ("unknown sampler", _set("bc.eval_mode", "best"), r"bc.eval_mode must be 'ode' or 'sde'"),
    ("unknown guard mode", _set("train.nonfinite", "ignore"), r"train.nonfinite must be one of"),
    ("zero seeds", _set("num_seeds", 0), r"num_seeds must be >= 1, got 0"),
    ("negative seed", _set("seed", -1), r"seed must be >= 0"),
    ("negative device count", _set("distributed.num_devices", -2), r"distributed.num_devices must be >= 0"),
    ("process id out of range", _many(_set("distributed.enabled", True), _set("distributed.num_processes", 2),
                                      _set("distributed.process_id", 3)), r"distributed.process_id must be < "),
    ("coordinator without enabled", _set("distributed.coordinator_address", "10.0.0.1:1234"),
     r"distributed.enabled must be True when coordinator_address"),
    ("vmapped seeds on a mesh", _many(_set("num_seeds", 2), _set("distributed.num_devices", 4)),
     r"num_seeds must be 1 when distributed.num_devices != 1"),
    ("on-policy on a mesh", _many(_set("algo.name", "dppo"), _set("distributed.num_devices", 4)),
     r"distributed.num_devices must be 1 for the on-policy algo.name='dppo'"),
    ("envs not divisible by devices", _set("distributed.num_devices", 3),
     r"train.num_envs must be divisible by the number of devices \(3\).*got 32"),
    ("chi2 with conservative advantages", _many(_set("algo.chi2_enabled", True), _set("algo.adv_strategy", "conservative")),
     r"algo.adv_strategy must be 'vanilla' when chi2_enabled"),
    ("unknown rollout mode", _set("algo.rollout_mode", "greedy"), r"algo.rollout_mode must be one of"),
    ("zero chunk horizon", _set("env.chunk_horizon", 0), r"env.chunk_horizon must be >= 1"),
    ("demos path not HDF5", _set("demos.path", "demos.txt"), r"demos.path must be '' or the path of an HDF5 file"),
    ("empty actor", _set("algo.actor_hidden_dims", ()), r"algo.actor_hidden_dims must be a non-empty sequence"),
    ("stop success > 1", _set("bc.stop_success", 2.0), r"bc.stop_success must be in \[0, 1\]"),
    ("section replaced by a number", _set("bc", 3), r"bc must be a section, got 3"),
]


@pytest.mark.parametrize("what,breaker,match", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_is_named_before_anything_runs(tmp_path, what, breaker, match):
    cfg = breaker(toy.get_config("quick"))
    with pytest.raises(ValueError, match=match):
        validate(cfg)
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        pipeline.run(cfg, str(workdir), log=lambda *_: None)
    assert not workdir.exists()          # nothing written, nothing compiled


def test_catalogue_probes_every_config_section():
    """Each section of the run config (and the config as a whole) has at least one bad value in the
    catalogue above whose error names a field of that section."""
    import re
    from ogpo_jax.training.config import SECTIONS
    named = {re.match(r"[a-z_]+", match.replace("\\", "")).group(0) for _, _, match in BAD_CONFIGS}
    assert set(SECTIONS) | {"config"} <= named, sorted(set(SECTIONS) - named)


# ----------------------------------------------------------------------------- files


def _quick(tmp_path, **demos):
    cfg = toy.get_config("quick")
    for k, v in demos.items():
        cfg.demos[k] = v
    return cfg


def test_missing_demo_file_is_named(tmp_path):
    cfg = _quick(tmp_path, path=str(tmp_path / "nope.hdf5"))
    with pytest.raises(FileNotFoundError, match="nope.hdf5'?: file not found"):
        pipeline.run(cfg, str(tmp_path / "run"), log=lambda *_: None)


def test_non_hdf5_demo_file_is_named(tmp_path):
    bad = tmp_path / "demos.hdf5"
    bad.write_text("not an hdf5 file")
    cfg = _quick(tmp_path, path=str(bad))
    with pytest.raises(DatasetError, match="demos.hdf5: not a readable HDF5 file"):
        pipeline.run(cfg, str(tmp_path / "run"), log=lambda *_: None)


def test_malformed_run_config_json_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{ not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        rundir.load_run_config(str(tmp_path))
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a run config"):
        rundir.load_run_config(str(tmp_path))


def test_damaged_and_foreign_checkpoints_are_named(tmp_path):
    tree = {"a": jnp.arange(1000.0), "b": {"c": jnp.ones((4, 3))}}
    ck = Checkpointer(str(tmp_path / "ck"))
    ck.save(10, tree)
    with pytest.raises(ValueError, match="different state layout"):
        ck.restore({"a": jnp.arange(1000.0), "b": {"c": jnp.ones((5, 3))}})
    # damage the stored array data
    damaged = 0
    for root, _, files in os.walk(tmp_path / "ck" / "10"):
        for f in files:
            if "manifest" in f or f.endswith((".ocdbt", "d")) or "ocdbt" in root:
                path = os.path.join(root, f)
                if os.path.getsize(path) > 0:
                    with open(path, "wb") as fh:
                        fh.write(b"garbage")
                    damaged += 1
    assert damaged
    ck2 = Checkpointer(str(tmp_path / "ck"))
    with pytest.raises(CheckpointError, match=r"ck/10 cannot be read .* damaged"):
        ck2.restore(tree)


def test_a_replay_that_does_not_fit_is_reported_before_allocation(tmp_path):
    cfg = toy.get_config("quick")
    cfg.train.replay_capacity = 10**12
    cfg.log.progress = False
    with pytest.raises(MemoryError, match=r"needs \d+ bytes .*train.replay_capacity \(=1000000000000\)"):
        pipeline.run(cfg, str(tmp_path / "run"), log=lambda *_: None)
    assert not (tmp_path / "run").exists()         # reported before anything ran


def test_memory_estimate_matches_the_allocated_buffers():
    cfg = toy.get_config("quick")
    env, _, ep_len = envs.make(cfg.env.name)
    est = memory.estimate(cfg, env.observation_size, env.action_size, ep_len)
    agent = ogpo.init(jax.random.PRNGKey(0), env.observation_size, (cfg.env.chunk_horizon, env.action_size), cfg.algo)
    ls = jax.eval_shape(lambda: loop.init_loop(jax.random.PRNGKey(0), env, agent, env.observation_size, cfg.train, ep_len))
    nbytes = lambda t: sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(t))  # noqa: E731
    assert nbytes(ls.replay.data) == est["replay"]
    assert nbytes(ls.success.data) == est["success"]
    assert nbytes(ls.staging.data) == est["staging"]
    params = nbytes((agent.actor, agent.critic))
    assert 0.9 * 4 * params <= est["networks_and_optimizers"] <= 1.2 * 4 * params


# ----------------------------------------------------------------------------- NaN guard


def _tiny():
    c = toy.get_config("quick")
    a = c.algo
    a.actor_hidden_dims, a.critic_hidden_dims, a.num_critics, a.flow_steps = (16, 16), (16, 16), 2, 3
    a.batch_size = a.ppo_batch_size = a.success_batch_size = 8
    a.group_size = 4
    t = c.train
    t.num_envs, t.updates_per_iteration, t.log_every_iterations, t.start_training = 4, 2, 4, 0
    t.replay_capacity, t.success_capacity = 256, 64
    return c


def _state(c):
    env, _, ep_len = envs.make(c.env.name)
    chunk_shape = (c.env.chunk_horizon, env.action_size)
    agent = ogpo.init(jax.random.PRNGKey(0), env.observation_size, chunk_shape, validate(c))
    ls = loop.init_loop(jax.random.PRNGKey(1), env, agent, env.observation_size, c.train, ep_len)
    return env, ls


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_nan_injection_triggers_the_guard(mode):
    c = _tiny()
    c.train.nonfinite = mode
    env, ls = _state(c)
    interval = loop.make_interval(env, c.train, 4)
    ls, _ = interval(ls)                     # 4 good iterations; updates once 8 rows are stored
    good = ls.agent
    assert int(good.step) == 6
    names = loop.update_metric_names(ls)
    # inject: NaN rewards everywhere in the replay ring -> NaN TD targets, critic loss, gradients
    data = dict(ls.replay.data, rewards=jnp.full_like(ls.replay.data["rewards"], jnp.nan))
    ls = ls.replace(replay=ls.replay.replace(data=data))
    new, m = interval(ls)
    m = jax.device_get(m)
    report = loop.nonfinite_report(m, names)
    assert report is not None and report[0] == 0
    assert "critic/loss" in report[1] and "critic/grad_norm" in report[1]
    # the bad updates were discarded: the agent is exactly the last good one, and finite
    for a, b in zip(jax.tree_util.tree_leaves((new.agent.actor, new.agent.critic, new.agent.critic_opt)),
                    jax.tree_util.tree_leaves((good.actor, good.critic, good.critic_opt))):
        np.testing.assert_array_equal(a, b)
    if mode == "stop":
        # frozen after the first bad update: no more env steps or updates in this interval
        assert int(new.env_steps) == int(np.asarray(m["env_steps"])[0])
        assert int(np.asarray(m["nonfinite_updates"]).sum()) == 2
    else:
        # every update was bad and skipped, but acting went on
        assert int(new.env_steps) > int(np.asarray(m["env_steps"])[0])
        assert int(np.asarray(m["nonfinite_updates"]).sum()) == 8
    summary = loop.summarize_interval(m)
    assert all(np.isfinite(v) for v in summary.values())


def test_pipeline_stops_on_nan_with_a_checkpoint_of_the_last_good_state(tmp_path, monkeypatch):
    c = toy.get_config("quick")
    c.log.progress = False
    c.log.tensorboard = False
    c.demos.num_demos, c.bc.max_steps, c.bc.eval_every, c.bc.eval_episodes = 8, 20, 20, 8
    t = c.train
    t.num_envs, t.start_training, t.log_every_iterations, t.updates_per_iteration = 8, 100, 5, 2
    t.replay_capacity, t.success_capacity, t.eval_episodes, t.total_env_steps = 1024, 256, 8, 5000
    a = c.algo
    a.actor_hidden_dims, a.critic_hidden_dims, a.num_critics, a.flow_steps = (16, 16), (16, 16), 2, 3
    a.batch_size = a.ppo_batch_size = a.success_batch_size = 8
    a.group_size = 4
    real_update = ogpo.update

    def poisoned(state, batch, success_batch=None):          # Q-values go NaN from update 30 on
        new, metrics = real_update(state, batch, success_batch)
        metrics = dict(metrics)
        metrics["critic/q_mean"] = jnp.where(state.step >= 30, jnp.nan, metrics["critic/q_mean"])
        return new, metrics

    monkeypatch.setattr(ogpo, "ALGORITHM", ogpo.ALGORITHM._replace(update=poisoned))
    workdir = str(tmp_path / "run")
    with pytest.raises(finetune.NonFiniteError, match=r"non-finite critic/q_mean in the OGPO update at env step \d+"):
        pipeline.run(c, workdir, log=lambda *_: None)
    ck = Checkpointer(os.path.join(workdir, "finetune", "checkpoints"))
    step = ck.latest_step()
    assert step is not None and step < 5000
    item = ck.manager.restore(step)
    ck.close()
    leaves = jax.tree_util.tree_leaves(item)
    assert all(np.all(np.isfinite(x)) for x in leaves if np.issubdtype(np.asarray(x).dtype, np.floating))
