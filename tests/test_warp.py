"""MuJoCo Warp (`env.kwargs.impl='warp'`) steps the arm scenes through the same wrappers as the
JAX backend, here on Warp's CPU device.

`slow`: Warp compiles its kernels on first use (~70-100 s on the 2-core CPU, cached on disk under
~/.cache/warp after) and the JAX backend's reference compiles for ~2 minutes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ogpo_jax import envs
from ogpo_jax.envs import core

pytest.importorskip("warp")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("warp")]

N, H = 4, 4
PUSH = jnp.tile(jnp.array([0.5, 0.0, -0.5, 0.0, 0.0, 0.0, -1.0]), (N, H, 1))


def _rollout(impl, chunks, n=N, **kwargs):
    env, _, _ = envs.make("can", impl=impl, **kwargs)
    batch = core.batch_env(env, n, H, auto_reset=True)
    state = jax.jit(batch.reset)(jax.random.key(0))
    step = jax.jit(batch.step)
    states = [state]
    for _ in range(chunks):
        states.append(step(states[-1], jnp.broadcast_to(PUSH[:1], (n, H, 7))))
    return env.unwrapped, states


def test_warp_follows_the_jax_backend_through_chunks_and_auto_resets():
    # 6-step episodes: the second chunk ends every episode, so the auto-reset merges a fresh
    # Warp state into the batch (Data.where: the contact buffer stays one for all worlds)
    chunks = 3
    _, ref = _rollout("jax", chunks, max_steps=6)
    env, got = _rollout("warp", chunks, max_steps=6, warp_max_worlds=N)
    assert env.naconmax == N * env.contacts_per_world and env.njmax > 0
    for i, (a, b) in enumerate(zip(ref, got)):
        np.testing.assert_allclose(np.asarray(b.obs), np.asarray(a.obs), atol=5e-3, err_msg=f"chunk {i}")
        assert not np.asarray(b.info["contact_overflow"]).any()
        np.testing.assert_array_equal(np.asarray(b.done), np.asarray(a.done))
    assert np.asarray(got[2].done).all() and np.asarray(got[2].info["truncated"]).all()
    # after the reset, the observation is the fresh episode's, not the one that ended
    np.testing.assert_allclose(np.asarray(got[2].obs), np.asarray(ref[2].obs), atol=1e-5)
    assert not np.allclose(np.asarray(got[2].obs), np.asarray(got[2].info["final_obs"]))


def test_more_worlds_than_the_contact_buffer_holds_end_as_failures():
    # room for 1 world's 40 contact slots, 16 worlds with ~5 active contacts each at rest: Warp
    # drops contacts (the cans would sink through the table), so every episode ends as a failure
    # and says why
    env, states = _rollout("warp", 1, n=16, warp_max_worlds=1)
    last = states[-1]
    assert np.asarray(last.info["contact_overflow"]).all()
    assert np.asarray(last.info["nonfinite"]).all() and np.asarray(last.done).all()
    assert not np.asarray(last.info["success"]).any()


def test_warp_fields_are_checked():
    with pytest.raises(ValueError, match="warp_max_worlds"):
        envs.make("can", impl="warp", warp_max_worlds=0)
    with pytest.raises(ValueError, match="record_contacts=True counts MJX's JAX-backend contact slots"):
        envs.make("can", impl="warp", record_contacts=True)


def test_the_recorded_can_blow_up_steps_finitely_on_warp():
    """`tests/data/can_blowup_state.npz` turned MJX-JAX's unpatched Newton solver NaN (a contact at
    the elliptic cone's apex, test_can_blowup.py); MuJoCo Warp, with the solver settings it was
    recorded with, steps the same state and chunk finitely and leaves the can on the table."""
    import os

    from mujoco import mjx

    rec = np.load(os.path.join(os.path.dirname(__file__), "data", "can_blowup_state.npz"))
    env = envs.make("can", impl="warp", warp_max_worlds=1, solver_iterations=4, ls_iterations=8,
                    solver_tolerance=1e-8)[0].unwrapped
    data = mjx.make_data(env.mj_model, impl="warp", naconmax=env.naconmax, njmax=env.njmax)
    data = data.replace(**{k: jnp.asarray(rec[k]) for k in ("qpos", "qvel", "ctrl", "qacc_warmstart", "time")})
    data = jax.jit(mjx.forward)(env.mjx_model, data)
    info = {k: jnp.zeros((), bool) for k in ("success", "terminal", "nonfinite", "contact_overflow")}
    state = core.EnvState(sim=data, obs=env._obs(data), reward=jnp.zeros(()), done=jnp.zeros((), bool), info=info)
    np.testing.assert_allclose(np.asarray(state.obs), rec["obs"], atol=1e-3)

    def chunk(state, actions):
        def body(s, a):
            s = env.step(s, a)
            return s, s.info["nonfinite"]
        return jax.lax.scan(body, state, actions)

    final, broken = jax.device_get(jax.jit(chunk)(state, jnp.asarray(rec["chunk"])))
    assert not broken.any()
    assert np.isfinite(final.sim.qpos).all() and np.isfinite(final.sim.qvel).all()
    assert np.abs(final.sim.qvel).max() < 5.0
    np.testing.assert_allclose(final.sim.qpos[11], 0.033, atol=2e-3)     # the can still lies on the table
