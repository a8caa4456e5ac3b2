"""Non-finite simulation states: the environment ends such an episode, the loop never stores a
non-finite transition, evaluation counts the episode as failed, and a checkpoint that already
holds non-finite rows resumes and trains on.

`envs.make('blowup')` (`ogpo_jax.envs.toy.BlowUp`) is a task whose state turns NaN at a chosen
step inside a chunk, without flagging it itself."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import toy as toy_cfg
from ogpo_jax import envs
from ogpo_jax.algorithms import ogpo
from ogpo_jax.data import replay as rb
from ogpo_jax.envs.core import AutoResetWrapper, ChunkWrapper, VmapWrapper
from ogpo_jax.training import finetune, loop, pipeline
from ogpo_jax.training.checkpoint import Checkpointer
from ogpo_jax.training.config import validate
from ogpo_jax.training.evaluation import make_evaluator


def _floats_finite(tree) -> bool:
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]
    return all(np.isfinite(x).all() for x in leaves if np.issubdtype(x.dtype, np.floating))


def test_a_blow_up_inside_a_chunk_ends_the_episode_as_a_failure_and_resets():
    env, _, _ = envs.make("blowup", length=12, at_step=6, p_blowup=1.0)
    benv = VmapWrapper(AutoResetWrapper(ChunkWrapper(env, 4)), 2)
    step = jax.jit(benv.step)
    s = benv.reset(jax.random.PRNGKey(0))
    chunk = jnp.zeros((2, 4, 1))
    s = step(s, chunk)                                      # steps 1-4: fine
    assert not np.asarray(s.done).any() and not np.asarray(s.info["nonfinite"]).any()
    s = step(s, chunk)                                      # steps 5-8: NaN at step 6
    info = jax.device_get(s.info)
    np.testing.assert_array_equal(info["valid"], [[True, True, False, False]] * 2)
    assert info["nonfinite"].all() and info["terminal"].all() and np.asarray(s.done).all()
    assert not info["success"].any() and not info["truncated"].any()
    # the broken step keeps a finite reward (0: the task's reward was NaN), later steps are frozen
    np.testing.assert_array_equal(info["rewards"], [[-1.0, 0.0, 0.0, 0.0]] * 2)
    np.testing.assert_array_equal(info["final_obs"][:, 0], 0.5)   # the true last observation
    assert np.isnan(info["final_obs"][:, 1]).all()               # (step 6 of 12) is NaN ...
    assert np.isfinite(np.asarray(s.obs)).all()             # ... and a fresh episode has begun
    np.testing.assert_array_equal(np.asarray(s.obs)[:, 0], 0.0)


def test_evaluation_counts_blown_up_episodes_as_failures():
    def policy(_, obs, key):
        return jnp.zeros((obs.shape[0], 4, 1))
    for p, success, broken in ((1.0, 0.0, 16), (0.0, 1.0, 0)):
        env, _, ep_len = envs.make("blowup", length=12, at_step=6, p_blowup=p)
        out = jax.device_get(make_evaluator(env, 4, ep_len, 16)(policy, None, jax.random.PRNGKey(0)))
        assert float(out["success"]) == success and int(out["nonfinite"]) == broken
        assert np.isfinite(out["return"])


def _tiny_config():
    c = toy_cfg.get_config("quick")
    c.env.name = "blowup"
    c.env.kwargs = {"length": 12, "at_step": 6, "p_blowup": 0.5}
    a = c.algo
    a.actor_hidden_dims, a.critic_hidden_dims, a.num_critics, a.flow_steps = (16, 16), (16, 16), 2, 3
    a.batch_size = a.ppo_batch_size = a.success_batch_size = 8
    a.group_size = 4
    t = c.train
    t.num_envs, t.updates_per_iteration, t.log_every_iterations, t.start_training = 8, 2, 12, 0
    t.replay_capacity, t.success_capacity = 256, 256
    t.truncation_is_terminal = False
    return c


def test_the_loop_stores_no_nonfinite_transition_and_trains_on():
    c = _tiny_config()
    env, _, ep_len = envs.make(c.env.name, **c.env.kwargs)
    chunk_shape = (c.env.chunk_horizon, env.action_size)
    agent = ogpo.init(jax.random.PRNGKey(0), env.observation_size, chunk_shape, validate(c))
    ls = loop.init_loop(jax.random.PRNGKey(1), env, agent, env.observation_size, c.train, ep_len)
    interval = loop.make_interval(env, c.train, c.train.log_every_iterations)
    records = []
    for _ in range(2):
        ls, m = interval(ls)
        records.append(loop.summarize_interval(jax.device_get(m)))
    # 8 envs x 24 iterations of 3-chunk episodes: about half of the ~64 episodes blow up
    broken = sum(r["env/nonfinite_episodes"] for r in records)
    dropped = sum(r["env/nonfinite_transitions"] for r in records)
    assert broken >= 10 and dropped == broken             # one non-finite chunk per blown-up episode
    # nothing non-finite anywhere in the replay ring, the success ring or the staging area
    assert _floats_finite((ls.replay.data, ls.success.data, ls.staging.data))
    # every other row is stored: only the chunk that blew up (its next_obs is NaN) is missing
    assert int(ls.replay.size) == int(c.train.num_envs * 2 * c.train.log_every_iterations - dropped)
    # the success ring holds the 3 chunks of every episode that did not blow up (and succeeded)
    successes = sum(round(r["rollout/success"] * r["rollout/episodes"]) for r in records)
    assert successes > 0 and int(ls.success.size) == 3 * successes
    assert int(np.asarray(ls.success.data["success"]).sum()) == successes
    # training went on: every update kept, finite metrics and parameters
    assert int(ls.agent.step) == 2 * 2 * c.train.log_every_iterations
    assert all(r["nonfinite_updates"] == 0 for r in records)
    assert all(np.isfinite(v) for r in records for v in r.values())
    assert _floats_finite((ls.agent.actor, ls.agent.critic))
    # every episode either succeeds at its last step or blows up, which counts as a failure
    for r in records:
        assert round(r["rollout/success"] * r["rollout/episodes"]) + r["env/nonfinite_episodes"] == r["rollout/episodes"]
    assert 0.2 < records[-1]["rollout/success"] < 0.8


def test_drop_nonfinite_keeps_order_and_the_ring_overwrites_the_oldest_next():
    example = {"obs": jnp.zeros((2,)), "rewards": jnp.zeros((3,)), "terminal": jnp.zeros((), bool)}
    buf = rb.init_buffer(example, 6)
    rows = lambda v: {"obs": jnp.stack([v, v], -1), "rewards": jnp.stack([v, v, v], -1),  # noqa: E731
                      "terminal": v > 100}
    buf = rb.insert(buf, rows(jnp.arange(8.0)))              # wraps: holds 2..7, oldest 2 at row 2
    obs = buf.data["obs"].at[4, 1].set(jnp.nan)              # value 4
    rew = buf.data["rewards"].at[1, 0].set(jnp.inf)          # value 7
    buf = buf.replace(data=dict(buf.data, obs=obs, rewards=rew))
    assert int(rb.count_nonfinite(buf)) == 2
    out, n = jax.jit(rb.drop_nonfinite)(buf)
    assert int(n) == 2 and int(out.size) == 4 and int(out.insert_pos) == 4
    np.testing.assert_array_equal(np.asarray(out.data["obs"])[:4, 0], [2, 3, 5, 6])   # oldest first
    assert int(rb.count_nonfinite(out)) == 0 and _floats_finite(out.data)
    out = rb.insert(out, rows(jnp.array([8.0, 9.0, 10.0])))   # fills 4, 5, then overwrites the oldest (2)
    np.testing.assert_array_equal(np.asarray(out.data["obs"])[:, 0], [10, 3, 5, 6, 8, 9])
    # nothing to drop: the same rows in the same ring order
    clean, n = rb.drop_nonfinite(rb.insert(rb.init_buffer(example, 6), rows(jnp.arange(8.0))))
    assert int(n) == 0
    np.testing.assert_array_equal(np.asarray(clean.data["obs"])[:, 0], [2, 3, 4, 5, 6, 7])


def test_drop_nonfinite_staging_compacts_each_env():
    example = {"obs": jnp.zeros((1,)), "rewards": jnp.zeros((2,))}
    st = rb.init_staging(example, 2, 4)
    success = rb.init_buffer(example, 16)
    for v in (1.0, 2.0, 3.0):
        r = {"obs": jnp.array([[v], [10 + v]]), "rewards": jnp.full((2, 2), v)}
        st, success = rb.stage_and_flush(st, success, r, jnp.zeros(2, bool), jnp.zeros(2, bool))
    st = st.replace(data=dict(st.data, obs=st.data["obs"].at[0, 1, 0].set(jnp.nan)))   # env 0, value 2
    assert int(rb.count_nonfinite_staging(st)) == 1
    out, n = rb.drop_nonfinite_staging(st)
    assert int(n) == 1
    np.testing.assert_array_equal(np.asarray(out.count), [2, 3])
    np.testing.assert_array_equal(np.asarray(out.data["obs"])[:, :, 0], [[1, 3, 0, 0], [11, 12, 13, 0]])
    # a masked-out row is not staged, and a success flushes only the staged ones
    r = {"obs": jnp.array([[jnp.nan], [14.0]]), "rewards": jnp.zeros((2, 2))}
    keep = rb.finite_rows(r)
    np.testing.assert_array_equal(np.asarray(keep), [False, True])
    out, success = rb.stage_and_flush(out, success, r, jnp.ones(2, bool), jnp.ones(2, bool), keep)
    np.testing.assert_array_equal(np.sort(np.asarray(success.data["obs"])[: int(success.size), 0]),
                                  [1, 3, 11, 12, 13, 14])
    assert _floats_finite(success.data)


def _pipeline_config(total_env_steps):
    c = toy_cfg.get_config("quick")
    c.log.progress = False
    c.log.tensorboard = False
    c.demos.num_demos, c.bc.max_steps, c.bc.eval_every, c.bc.eval_episodes = 8, 20, 20, 8
    t = c.train
    t.num_envs, t.start_training, t.log_every_iterations, t.updates_per_iteration = 8, 100, 5, 2
    t.replay_capacity, t.success_capacity, t.eval_episodes = 1024, 256, 8
    t.total_env_steps, t.eval_every_env_steps, t.checkpoint_every_env_steps = total_env_steps, 10**6, 10**6
    a = c.algo
    a.actor_hidden_dims, a.critic_hidden_dims, a.num_critics, a.flow_steps = (16, 16), (16, 16), 2, 3
    a.batch_size = a.ppo_batch_size = a.success_batch_size = 8
    a.group_size = 4
    return c


def test_a_checkpoint_with_nonfinite_rows_resumes_and_trains_on(tmp_path):
    workdir = str(tmp_path / "run")
    c = _pipeline_config(600)
    pipeline.run(c, workdir, log=lambda *_: None)
    # poison the checkpoint the way a blown-up simulation did before the loop guarded against it:
    # NaN observations in the replay ring, the success staging and the success ring
    p = pipeline.prepare(c, workdir, log=lambda *_: None)
    template = finetune.init_finetune_state(p.spec, p.bc_params)
    ck = Checkpointer(os.path.join(workdir, "finetune", "checkpoints"))
    step = ck.latest_step()
    ls = ck.restore(template)
    assert int(ls.replay.size) > 40 and int(ls.staging.count.sum()) > 0
    rows = np.array([3, 17, 40])
    ls = ls.replace(
        replay=ls.replay.replace(data=dict(ls.replay.data, obs=ls.replay.data["obs"].at[rows].set(jnp.nan),
                                           next_obs=ls.replay.data["next_obs"].at[rows[:1]].set(jnp.inf))),
        staging=ls.staging.replace(data=dict(ls.staging.data, actions=ls.staging.data["actions"].at[
            int(np.argmax(np.asarray(ls.staging.count)))].set(jnp.nan))))
    staged_bad = int(rb.count_nonfinite_staging(ls.staging))
    assert staged_bad >= 1
    ck.manager.delete(step)
    ck.save(step, ls)
    ck.close()
    size_before = int(ls.replay.size)
    # without the drop every update that samples a poisoned row is non-finite: the run would stop
    c2 = _pipeline_config(1200)
    lines = []
    summary = pipeline.run(c2, workdir, log=lines.append)
    msg = [ln for ln in lines if "non-finite stored transitions" in ln]
    assert msg and f"replay 3, success buffer 0, success staging {staged_bad}" in msg[0]
    assert summary["env_steps"] >= 1200
    ck = Checkpointer(os.path.join(workdir, "finetune", "checkpoints"))
    final = ck.restore(template)
    ck.close()
    assert int(final.env_steps) >= 1200 and int(final.replay.size) > size_before - 3
    assert _floats_finite((final.replay.data, final.success.data, final.staging.data, final.agent.actor))


@pytest.mark.parametrize("blocks", [1, 2])
def test_loop_drop_handles_blocked_rings(blocks):
    example = rb.transition_spec(2, (4, 1))
    ring = rb.init_buffer(example, 8)
    rows = jax.tree_util.tree_map(lambda x: jnp.ones((5,) + x.shape, x.dtype), example)
    ring = rb.insert(ring, rows)
    ring = ring.replace(data=dict(ring.data, obs=ring.data["obs"].at[1].set(jnp.nan)))
    staging = rb.init_staging(example, 2, 3)
    stack = lambda t: jax.tree_util.tree_map(lambda *x: jnp.stack(x), *([t] * blocks)) if blocks > 1 else t  # noqa: E731
    ls = loop.LoopState(agent=None, replay=stack(ring), success=stack(ring), staging=stack(staging),
                        env_state=None, key=jax.random.PRNGKey(0), env_steps=jnp.zeros((), jnp.int32),
                        iteration=jnp.zeros((), jnp.int32), episode_return=jnp.zeros(2), episode_length=jnp.zeros(2))
    out, counts = loop.drop_nonfinite_rows(ls, log=lambda *_: None)
    assert counts == {"replay": blocks, "success": blocks, "staging": 0}
    assert np.asarray(out.replay.size).sum() == 4 * blocks and _floats_finite(out.replay.data)
    same, counts = loop.drop_nonfinite_rows(out, log=lambda *_: None)
    assert same is out and not any(counts.values())
