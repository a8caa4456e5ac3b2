"""Env wrappers: chunk execution and masks, time limits, auto-reset keeps the true final obs."""
import jax
import jax.numpy as jnp
import numpy as np

from ogpo_jax import envs
from ogpo_jax.envs import core, toy


def test_point_gaps_wall_blocks_and_gap_passes():
    env = toy.PointGaps()
    state = env.reset(jax.random.PRNGKey(0))
    state = state.replace(sim=state.sim.replace(pos=jnp.array([0.0, -0.1])))   # below solid wall
    nxt = env.step(state, jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(nxt.sim.pos, [0.0, -0.1])                       # blocked
    state = state.replace(sim=state.sim.replace(pos=jnp.array([-0.5, -0.1])))  # below the wide gap
    nxt = env.step(state, jnp.array([0.0, 1.0]))
    np.testing.assert_allclose(nxt.sim.pos, [-0.5, 0.0], atol=1e-6)
    assert float(nxt.reward) == -1.0 and not bool(nxt.done)
    state = state.replace(sim=state.sim.replace(pos=jnp.array([0.0, 0.66])))
    nxt = env.step(state, jnp.array([0.0, 1.0]))                               # into the goal
    assert bool(nxt.done) and bool(nxt.info["terminal"]) and float(nxt.reward) == 4.0


def test_chunk_wrapper_masks_steps_after_termination():
    env = core.ChunkWrapper(core.EpisodeWrapper(toy.Countdown(10), 11), horizon=4)
    state = env.reset(jax.random.PRNGKey(0))
    state = state.replace(sim=state.sim.replace(remaining=jnp.array(2)))
    nxt = env.step(state, jnp.zeros((4, 1)))
    np.testing.assert_array_equal(nxt.info["valid"], [True, True, False, False])
    np.testing.assert_array_equal(nxt.info["rewards"], [-1, -1, 0, 0])
    assert bool(nxt.done) and bool(nxt.info["terminal"]) and not bool(nxt.info["truncated"])
    assert int(nxt.info["steps"]) == 2      # frozen: the simulator was not stepped further


def test_episode_wrapper_truncates():
    env = core.EpisodeWrapper(toy.Countdown(10), 3)
    state = env.reset(jax.random.PRNGKey(0)).replace()
    state = state.replace(sim=state.sim.replace(remaining=jnp.array(9)))
    for _ in range(3):
        state = env.step(state, jnp.zeros(1))
    assert bool(state.done) and bool(state.info["truncated"]) and not bool(state.info["terminal"])


def test_auto_reset_keeps_true_terminal_observation():
    base, _, T = envs.make("countdown", length=10)
    env = core.VmapWrapper(core.AutoResetWrapper(core.ChunkWrapper(base, 4)), 3)
    state = env.reset(jax.random.PRNGKey(0))
    state = state.replace(sim=state.sim.replace(remaining=jnp.array([2, 6, 9])))
    nxt = env.step(state, jnp.zeros((3, 4, 1)))
    np.testing.assert_array_equal(nxt.done, [True, False, False])
    # Env 0 ended: final_obs is the true terminal observation (0 steps left), obs is a fresh episode.
    np.testing.assert_allclose(nxt.info["final_obs"][:, 0], [0.0, 0.2, 0.5])
    assert float(nxt.obs[0, 0]) > 0.0
    np.testing.assert_allclose(nxt.obs[1:, 0], [0.2, 0.5])
    assert int(nxt.info["steps"][0]) == 0 and int(nxt.info["steps"][1]) == 4   # counter reset
    # The reset episode keeps running on the next step.
    nxt2 = env.step(nxt, jnp.zeros((3, 4, 1)))
    assert bool(nxt2.info["valid"][0, 0])


def test_point_gaps_expert_succeeds_without_noise():
    from ogpo_jax.training.collect import collect_demos
    import dataclasses
    env, expert, T = envs.make("point_gaps")
    clean = dataclasses.replace(expert, noise_min=0.0, noise_max=0.0)
    demos = collect_demos(env, clean, 64, T, jax.random.PRNGKey(0))
    assert float(demos["success"].mean()) == 1.0
    assert np.all(np.asarray(demos["actions"]) <= 1.0) and np.all(np.asarray(demos["actions"]) >= -1.0)


class _Capped(core.Wrapper):
    """PointGaps with a vmap cap, as MJX tasks set on jaxlib 0.10 CPU."""
    max_vmap_batch = 3


def test_vmap_wrapper_sub_batches_equal_plain_vmap():
    env, _, _ = envs.make("point_gaps")
    plain = core.VmapWrapper(core.AutoResetWrapper(env), 8)
    capped = core.VmapWrapper(core.AutoResetWrapper(_Capped(env)), 8)   # 3 + 3 + 2 (padded)
    key = jax.random.PRNGKey(3)
    s1, s2 = plain.reset(key), capped.reset(key)
    actions = jax.random.uniform(jax.random.PRNGKey(4), (30, 8, env.action_size), minval=-1, maxval=1)
    for a in actions:
        s1, s2 = plain.step(s1, a), capped.step(s2, a)
    for x, y in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s2)):
        assert x.shape == y.shape
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-6)
    assert float(s1.obs.std()) > 0.0
