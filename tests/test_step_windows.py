"""Step replay windows (`train.replay_windows='step'`): per-env step rings, uniform window starts,
valid masks and n-step targets at episode ends, and the training loop on them."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import toy
from ogpo_jax import envs, ogpo
from ogpo_jax.algorithms import common
from ogpo_jax.data import replay as rb
from ogpo_jax.data import rings
from ogpo_jax.envs.core import ChunkWrapper
from ogpo_jax.training import loop
from ogpo_jax.training.config import validate

H = 4


def _steps(t, ends=(), terminals=(), successes=()):
    """Steps t (a list of global step numbers) of one env: obs = (t,), action = (t, -t), reward = t,
    next_obs = (t + 1,) (1000 + t at an episode end, the true final observation)."""
    t = np.asarray(t, np.float32)
    end = np.isin(t, ends)
    return {"obs": t[:, None], "action": np.stack([t, -t], -1), "reward": t,
            "next_obs": np.where(end, 1000 + t, t + 1)[:, None], "end": end,
            "terminal": np.isin(t, terminals), "success": np.isin(t, successes)}


def _ring(steps_per_env, length):
    buf = rb.init_step_buffer(rb.step_spec(1, 2), len(steps_per_env), length)
    n = max(len(s["obs"]) for s in steps_per_env)
    # insert one step at a time per env (valid prefix of length 1 or 0)
    for i in range(n):
        rows = {k: np.stack([s[k][min(i, len(s[k]) - 1)] for s in steps_per_env])[:, None] for k in steps_per_env[0]}
        valid = np.array([[i < len(s["obs"])] for s in steps_per_env])
        buf = rb.insert_steps(buf, rows, valid)
    return buf


def test_every_complete_start_is_sampled_uniformly():
    from scipy.stats import chisquare
    buf = _ring([_steps(range(20)), _steps(range(100, 110))], length=32)
    assert buf.size.tolist() == [20, 10]
    assert rb.window_starts(buf, H).tolist() == [17, 7]              # the newest H - 1 starts wait
    batch = jax.jit(rb.sample_windows, static_argnums=(2, 3))(buf, jax.random.PRNGKey(0), 24_000, H)
    starts = np.asarray(batch["obs"][:, 0]).astype(int)
    allowed = list(range(17)) + list(range(100, 107))
    assert set(starts) == set(allowed)
    counts = np.array([(starts == s).sum() for s in allowed])
    assert chisquare(counts).pvalue > 1e-3, counts


def test_windows_stop_at_an_episode_end_and_bootstrap_like_chunks():
    # env 0: episode A = steps 0-5, ends at 5 by a time limit (bootstrap from the final obs);
    # episode B = steps 6-13, terminal success at 13; then steps 14-17 of episode C
    steps = _steps(range(18), ends=(5, 13), terminals=(13,), successes=(13,))
    buf = _ring([steps], length=32)
    starts = jnp.arange(15)                                         # every complete start
    batch = {k: np.asarray(v) for k, v in _windows_at(buf, starts).items()}
    for s in range(15):
        end = 5 if s <= 5 else (13 if s <= 13 else None)
        n = min(H, end - s + 1) if end is not None else H
        assert batch["valid"][s].tolist() == [True] * n + [False] * (H - n), s
        np.testing.assert_array_equal(batch["rewards"][s][:n], np.arange(s, s + n))
        assert (batch["rewards"][s][n:] == 0).all() and (batch["actions"][s][n:] == 0).all()
        last = s + n - 1
        assert batch["next_obs"][s, 0] == (1000 + last if last in (5, 13) else last + 1), s
        assert batch["terminal"][s] == (last == 13) and batch["success"][s] == (last == 13)
    # the n-step target: 4 steps inside an episode, 2 up to the time limit (bootstrap), 1 terminal
    g, v = 0.9, np.full(15, 10.0)
    y = np.asarray(common.nstep_target(jnp.asarray(batch["rewards"]), jnp.asarray(batch["valid"]),
                                       jnp.asarray(batch["terminal"]), jnp.asarray(v), g))
    assert y[0] == pytest.approx(0 + 1 * g + 2 * g ** 2 + 3 * g ** 3 + g ** 4 * 10)
    assert y[4] == pytest.approx(4 + 5 * g + g ** 2 * 10)          # truncated at step 5: bootstrap
    assert y[13] == pytest.approx(13.0)                             # terminal: no bootstrap


def _windows_at(buf, starts):
    return rb.windows_at(buf, jnp.asarray(starts), H)


def test_a_ring_that_wrapped_starts_at_its_oldest_step():
    buf = _ring([_steps(range(40))], length=16)                     # keeps steps 24-39
    assert int(buf.size[0]) == 16
    batch = _windows_at(buf, jnp.arange(13))
    np.testing.assert_array_equal(np.asarray(batch["obs"][:, 0]), np.arange(24, 37))
    assert np.asarray(batch["valid"]).all()


def test_chunk_steps_from_a_chunk_that_ended_the_episode():
    # PointGaps chunks through the chunk wrapper: the per-step rows of the chunk, the last valid
    # step ends the episode and its next_obs is the true final observation
    env, _, length = envs.make("point_gaps", max_steps=6)
    chunked = ChunkWrapper(env, H, record_obs=True)
    state = chunked.reset(jax.random.PRNGKey(0))
    first = chunked.step(state, jnp.zeros((H, 2)))
    second = chunked.step(first, jnp.zeros((H, 2)))                 # steps 5-6 run, 7-8 frozen
    assert np.asarray(second.info["valid"]).tolist() == [True, True, False, False]
    np.testing.assert_allclose(second.info["step_obs"][0], first.obs)
    rows = {"actions": jnp.ones((1, H, 2)), "rewards": second.info["rewards"][None], "valid": second.info["valid"][None],
            "next_obs": second.obs[None], "terminal": jnp.asarray([False]), "success": jnp.asarray([False])}
    steps = rb.chunk_steps(rows, second.info["step_obs"][None], jnp.asarray([True]))
    assert np.asarray(steps["end"][0]).tolist() == [False, True, False, False]
    np.testing.assert_allclose(steps["next_obs"][0, 1], second.obs)        # the frozen final observation
    np.testing.assert_allclose(steps["next_obs"][0, 0], second.info["step_obs"][1])


def test_a_dropped_final_chunk_marks_the_stored_part_of_its_episode_ended():
    buf = _ring([_steps(range(6))], length=16)
    rows = {k: v[None, :H] for k, v in _steps(range(6, 10)).items()}
    buf = rb.insert_steps(buf, rows, jnp.ones((1, H), bool), keep=jnp.asarray([False]), done=jnp.asarray([True]))
    assert int(buf.size[0]) == 6
    assert bool(buf.data["end"][0, 5]) and bool(buf.data["terminal"][0, 5])


def _tiny(**train):
    c = toy.get_config("quick")
    a = c.algo
    a.actor_hidden_dims, a.critic_hidden_dims, a.num_critics, a.flow_steps = (16, 16), (16, 16), 2, 3
    a.batch_size = a.ppo_batch_size = a.success_batch_size = 16
    a.group_size = 4
    t = c.train
    t.num_envs, t.updates_per_iteration, t.log_every_iterations, t.start_training = 8, 2, 6, 0
    t.replay_capacity, t.success_capacity = 256, 256
    for k, v in train.items():
        t[k] = v
    return c


def test_the_loop_stores_every_step_and_trains_on_windows():
    c = _tiny(replay_windows="step")
    algo_cfg = validate(c)
    env, _, ep_len = envs.make(c.env.name, **c.env.kwargs)
    chunk_shape = (c.env.chunk_horizon, env.action_size)
    agent = ogpo.init(jax.random.PRNGKey(0), env.observation_size, chunk_shape, algo_cfg)
    ls = loop.init_loop(jax.random.PRNGKey(1), env, agent, env.observation_size, c.train, ep_len)
    assert isinstance(ls.replay, rb.StepReplay) and ls.replay.capacity == 256 * H // 8
    interval = loop.make_interval(env, c.train, c.train.log_every_iterations)
    ls, m = interval(ls)
    r = loop.summarize_interval(jax.device_get(m))
    # every valid env step is in the rings (none overwritten yet)
    assert int(ls.replay.size.sum()) == int(ls.env_steps) == r["env_steps"]
    assert int(ls.agent.step) == 2 * 6 and np.isfinite(r["critic/loss"])
    batch = rings.sample(ls.replay, jax.random.PRNGKey(2), 64, H)
    assert batch["actions"].shape == (64, H, 2) and batch["valid"].shape == (64, H)
    # a window's steps are consecutive env steps of one episode: consecutive observations differ
    # by at most one step's motion, and the window's last next_obs follows its last valid step
    assert bool(batch["valid"][:, 0].all())


def test_step_windows_are_validated_by_name():
    c = _tiny(replay_windows="steps")
    with pytest.raises(ValueError, match="train.replay_windows"):
        validate(c)
    c = _tiny(replay_windows="step", replay_capacity=8)
    c.algo.batch_size = c.algo.ppo_batch_size = c.algo.success_batch_size = 8
    c.train.success_capacity = 8
    with pytest.raises(ValueError, match="train.replay_capacity"):
        validate(c)
