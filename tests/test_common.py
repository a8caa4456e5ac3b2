"""n-step targets, advantages, schedules, Polyak: against hand-computed values."""
import jax.numpy as jnp
import numpy as np

from ogpo_jax.algorithms import advantages, common


def test_nstep_target_termination_inside_chunk():
    gamma = 0.9
    # Chunk of H=4; the episode terminates (success) at step index 1: steps 2, 3 invalid.
    rewards = jnp.array([[-1.0, 4.0, 0.0, 0.0]])
    valid = jnp.array([[True, True, False, False]])
    y = common.nstep_target(rewards, valid, jnp.array([True]), jnp.array([123.0]), gamma)
    np.testing.assert_allclose(y, [-1.0 + 0.9 * 4.0])
    # Full chunk, not terminal: bootstrap with gamma^4.
    rewards = jnp.array([[-1.0, -1.0, -1.0, -1.0]])
    y = common.nstep_target(rewards, jnp.ones((1, 4), bool), jnp.array([False]), jnp.array([-10.0]), gamma)
    np.testing.assert_allclose(y, [-(1 + 0.9 + 0.81 + 0.729) + 0.9**4 * -10.0], rtol=1e-6)
    # Truncated after 2 steps (time limit): bootstrap from the true final state with gamma^2.
    rewards = jnp.array([[-1.0, -1.0, 0.0, 0.0]])
    y = common.nstep_target(rewards, jnp.array([[True, True, False, False]]), jnp.array([False]),
                            jnp.array([-5.0]), gamma)
    np.testing.assert_allclose(y, [-1.9 + 0.81 * -5.0], rtol=1e-6)


def test_conservative_advantage_truth_table():
    # q: (M=3 heads, B=1 state, G=3 chains). Per-head group advantages chosen by construction.
    q = jnp.array([
        [[1.0, 0.0, -1.0]],   # head 0: adv (+1, 0, -1)
        [[2.0, 0.0, -2.0]],   # head 1: adv (+2, 0, -2)
        [[3.0, -1.0, -2.0]],  # head 2: adv (+3, -1, -2)
    ])
    adv = advantages.conservative_advantage(q)
    # chain 0: all > 0 -> min = 1; chain 1: signs (0, 0, -1) disagree -> 0; chain 2: all < 0 -> max = -1
    np.testing.assert_allclose(adv, [[1.0, 0.0, -1.0]])
    # mixed signs -> 0
    q = jnp.array([[[1.0, -1.0]], [[-1.0, 1.0]]])
    np.testing.assert_allclose(advantages.conservative_advantage(q), [[0.0, 0.0]])


def test_group_mean_advantage_no_std_normalization():
    q = jnp.array([[[1.0, 2.0, 6.0]], [[3.0, 4.0, 8.0]]])   # head mean: (2, 3, 7), group mean 4
    np.testing.assert_allclose(advantages.group_mean_advantage(q), [[-2.0, -1.0, 3.0]])
    np.testing.assert_allclose(advantages.compute_advantage(q, "vanilla"), [[-2.0, -1.0, 3.0]])


def test_cyclic_cosine_schedule():
    s = common.cyclic_cosine_schedule(peak=4.5e-5, floor=2e-5, warmup_steps=2000, period=50_000)
    np.testing.assert_allclose(s(0), 2e-5)
    np.testing.assert_allclose(s(1000), 3.25e-5, rtol=1e-5)
    np.testing.assert_allclose(s(2000), 4.5e-5, rtol=1e-5)
    np.testing.assert_allclose(s(26_000), 3.25e-5, rtol=1e-4)     # half-way down the cosine
    np.testing.assert_allclose(s(50_000), 2e-5, rtol=1e-5)        # period repeats
    np.testing.assert_allclose(s(52_000), 4.5e-5, rtol=1e-5)


def test_polyak():
    out = common.polyak({"a": jnp.array(0.0)}, {"a": jnp.array(10.0)}, 0.05)
    np.testing.assert_allclose(out["a"], 0.5)
