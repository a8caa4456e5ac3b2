"""brax / Playground environments through `ogpo_jax.envs.brax_adapter`: the protocol mapping
(done -> terminal, success predicate, sparse reward), the true terminal observation kept by our
auto-reset, dict observations, named errors; then Playground's `ReacherHard` (MJX) with its
scripted expert and a short end-to-end run of `configs/reacher.py:quick`."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from ogpo_jax import envs
from ogpo_jax.envs import brax_adapter as ba
from ogpo_jax.envs.core import AutoResetWrapper, ChunkWrapper, EpisodeWrapper, NonFiniteWrapper


@struct.dataclass
class _BraxState:          # the fields of brax.envs.State / mujoco_playground.State
    data: jax.Array
    obs: object
    reward: jax.Array
    done: jax.Array
    metrics: dict
    info: dict


class _Line:
    """brax-shaped: x moves by 0.1 * action; reward 1 within 0.05 of x = 0.5, done (1.0) once
    |x| > 1 (fell off). Starts at x = 0 (or x0)."""

    action_size = 1

    def __init__(self, dict_obs=False, x0=0.0):
        self.dict_obs = dict_obs
        self.x0 = x0
        self.observation_size = {"state": (2,), "privileged": (3,)} if dict_obs else 2

    def _state(self, x, t):
        reward = (jnp.abs(x - 0.5) < 0.05).astype(jnp.float32)
        done = (jnp.abs(x) > 1.0).astype(jnp.float32)
        obs = jnp.stack([x, t])
        if self.dict_obs:
            obs = {"state": obs, "privileged": jnp.stack([x, t, -x])}
        return _BraxState(data=x, obs=obs, reward=reward, done=done, metrics={}, info={"t": t})

    def reset(self, rng):
        return self._state(jnp.asarray(self.x0, jnp.float32), jnp.zeros((), jnp.float32))

    def step(self, state, action):
        return self._state(state.data + 0.1 * jnp.asarray(action).reshape(()), state.info["t"] + 1)


def _run(env, actions):
    state = env.reset(jax.random.PRNGKey(0))
    out = []
    for a in actions:
        state = env.step(state, jnp.asarray([a], jnp.float32))
        out.append(state)
    return out


def test_adapter_maps_done_to_terminal_and_success_from_the_predicate():
    env = ba.BraxAdapter(_Line(), success_fn=ba.reward_at_least(1.0))
    assert (env.observation_size, env.action_size) == (2, 1)
    s0 = env.reset(jax.random.PRNGKey(0))
    assert s0.obs.dtype == jnp.float32 and s0.obs.shape == (2,)
    assert not bool(s0.info["success"]) and not bool(s0.info["terminal"])
    states = _run(env, [1.0] * 5 + [1.0] * 6)       # x = 0.5 after 5 steps, 1.1 (off) after 11
    assert bool(states[4].info["success"]) and float(states[4].reward) == 1.0
    assert not bool(states[4].done)                   # the raw task does not stop on success
    assert not bool(states[3].info["success"])
    off = states[10]
    assert bool(off.done) and bool(off.info["terminal"]) and not bool(off.info["success"])


def test_success_at_reset_does_not_count():
    env = ba.BraxAdapter(_Line(x0=0.5), success_fn=ba.reward_at_least(1.0))
    assert not bool(env.reset(jax.random.PRNGKey(0)).info["success"])


def test_sparse_success_rewards_minus_one_then_bonus_and_terminates():
    env = ba.SparseSuccess(ba.BraxAdapter(_Line(), success_fn=ba.reward_at_least(1.0)), success_bonus=5.0)
    states = _run(env, [1.0] * 5)
    np.testing.assert_allclose([float(s.reward) for s in states], [-1, -1, -1, -1, 5])
    assert [bool(s.done) for s in states] == [False] * 4 + [True]
    assert bool(states[-1].info["terminal"]) and bool(states[-1].info["success"])
    assert float(states[-1].info["dense_reward"]) == 1.0


def _chain(env, horizon, episode_length):
    return AutoResetWrapper(ChunkWrapper(EpisodeWrapper(NonFiniteWrapper(env), episode_length), horizon))


def test_autoreset_keeps_the_true_terminal_observation():
    """Success in the middle of the second chunk: `final_obs` is the observation at x = 0.5 (the
    state the transition ended in), `obs` the next episode's first one (x = 0)."""
    env = _chain(ba.SparseSuccess(ba.BraxAdapter(_Line(), success_fn=ba.reward_at_least(1.0))), 4, 100)
    state = env.reset(jax.random.PRNGKey(0))
    state = env.step(state, jnp.ones((4, 1)))
    assert not bool(state.done)
    state = env.step(state, jnp.ones((4, 1)))
    assert bool(state.done) and bool(state.info["success"]) and bool(state.info["terminal"])
    np.testing.assert_allclose(np.asarray(state.info["final_obs"]), [0.5, 5.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(state.obs), [0.0, 0.0])
    np.testing.assert_array_equal(np.asarray(state.info["valid"]), [True, False, False, False])
    np.testing.assert_allclose(np.asarray(state.info["rewards"]), [5.0, 0, 0, 0])


def test_time_limit_truncates_without_terminal():
    env = _chain(ba.SparseSuccess(ba.BraxAdapter(_Line(), success_fn=ba.reward_at_least(1.0))), 2, 4)
    state = env.step(env.step(env.reset(jax.random.PRNGKey(0)), jnp.zeros((2, 1))), jnp.zeros((2, 1)))
    assert bool(state.done) and bool(state.info["truncated"]) and not bool(state.info["terminal"])
    np.testing.assert_allclose(np.asarray(state.info["final_obs"]), [0.0, 4.0])


def test_dict_observations_need_obs_key():
    with pytest.raises(ValueError, match=r"dict observations \['privileged', 'state'\]; set obs_key"):
        ba.BraxAdapter(_Line(dict_obs=True))
    with pytest.raises(ValueError, match=r"obs_key='pixels' is not one of"):
        ba.BraxAdapter(_Line(dict_obs=True), obs_key="pixels")
    with pytest.raises(ValueError, match=r"obs_key='state' given but"):
        ba.BraxAdapter(_Line(), obs_key="state")
    env = ba.BraxAdapter(_Line(dict_obs=True), obs_key="privileged")
    assert env.observation_size == 3
    state = env.step(env.reset(jax.random.PRNGKey(0)), jnp.ones((1,)))
    np.testing.assert_allclose(np.asarray(state.obs), [0.1, 1.0, -0.1], atol=1e-6)


def test_obs_fn_maps_observations_and_sets_the_size():
    env = ba.BraxAdapter(_Line(), obs_fn=lambda o: jnp.concatenate([o, o ** 2, o[:1]]))
    assert env.observation_size == 5
    state = env.step(env.reset(jax.random.PRNGKey(0)), jnp.ones((1,)))
    np.testing.assert_allclose(np.asarray(state.obs), [0.1, 1.0, 0.01, 1.0, 0.1], atol=1e-6)


def test_reacher_features_are_cos_sin_of_the_angles():
    obs = jnp.array([7.0, -1.0, 0.1, 0.2, 3.0, -4.0])
    f = ba.reacher_features(obs)
    np.testing.assert_allclose(np.asarray(f), [np.cos(7.0), np.cos(-1.0), np.sin(7.0), np.sin(-1.0), 1.0, 2.0,
                                               1.0, -4.0 / 3.0], rtol=1e-6)


def test_not_brax_shaped_is_named():
    with pytest.raises(TypeError, match="brax-shaped env with `reset`"):
        ba.BraxAdapter(object())


@pytest.mark.parametrize("preset", ["", "quick"])
def test_reacher_presets_validate_and_bootstrap_at_the_time_limit(preset):
    from configs import reacher
    from ogpo_jax.training.config import validate
    c = reacher.get_config(preset)
    validate(c)
    assert c.env.name == "playground" and not c.train.truncation_is_terminal
    assert c.train.sized_for == ("gpu" if preset == "" else "cpu")


# --- MuJoCo Playground (the `playground` extra) --------------------------------------------------

def _reacher(**kwargs):
    pytest.importorskip("mujoco_playground")
    kw = dict(env_name="ReacherHard", max_steps=40, success_threshold=1.0)
    kw.update(kwargs)
    return envs.make("playground", **kw)


def test_reacher_reset_observation_shows_the_target():
    """Playground's reacher moves its target (a mocap body) after the reset's forward pass; the
    adapter reruns the kinematics, so the first observation's finger-to-target vector points at the
    target where it is, not where the model put it before (~10% of the reacher's transitions)."""
    env, _, _ = _reacher(features=False)
    raw = env.unwrapped.env
    for seed in range(3):
        state = jax.jit(env.reset)(jax.random.PRNGKey(seed))
        data = state.sim.data
        target = np.asarray(data.mocap_pos[0, :2])
        finger = np.asarray(data.geom_xpos[raw._finger_geom_id, :2])
        np.testing.assert_allclose(np.asarray(state.obs[2:4]), target - finger, atol=1e-5)
        assert np.linalg.norm(target) >= 0.05                     # the target really moved off the origin
        # Playground's own reset observation still points at where the target was
        stale = raw.reset(jax.random.PRNGKey(seed)).obs[2:4]
        assert np.linalg.norm(np.asarray(stale) - (target - finger)) > 0.04


def test_reacher_loads_with_its_shapes():
    env, expert, length = _reacher()
    assert (env.observation_size, env.action_size, length) == (8, 2, 40)
    assert isinstance(expert, ba.ReacherExpert)
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    assert state.obs.shape == (8,) and not bool(state.done)
    raw = state.sim.obs                                  # Playground's own: angles, to-target, velocities
    np.testing.assert_allclose(np.asarray(state.obs), np.asarray(ba.reacher_features(raw)), atol=1e-6)
    raw_env, raw_expert, _ = _reacher(features=False)
    assert raw_env.observation_size == 6 and raw_expert.raw_obs
    np.testing.assert_allclose(np.asarray(expert.joint_goal(state.obs)), np.asarray(raw_expert.joint_goal(raw)),
                               atol=1e-5)
    state = jax.jit(env.step)(state, jnp.zeros(2))
    assert float(state.reward) == -1.0 and int(state.info["steps"]) == 1


def test_reacher_success_predicate_on_constructed_states():
    """Finger placed on the target by the expert's inverse kinematics: success (+5, terminal);
    the same arm 5 cm away from it: not."""
    env, expert, _ = _reacher()
    raw = env.unwrapped.env
    step = jax.jit(env.step)
    state = step(jax.jit(env.reset)(jax.random.PRNGKey(3)), jnp.zeros(2))   # Playground's reset
    # observation predates the target placement; one step later it is current
    dq = expert.joint_goal(state.obs)
    for offset, success in ((0.0, True), (0.4, False)):
        data = state.sim.data
        qpos = data.qpos + dq + jnp.array([offset, 0.0])
        data = data.replace(qpos=qpos, qvel=jnp.zeros_like(data.qvel))
        sim = state.sim.replace(data=data)
        nxt = step(state.replace(sim=sim), jnp.zeros(2))
        assert bool(nxt.info["success"]) == success, (offset, float(nxt.info["dense_reward"]))
        assert float(nxt.reward) == (5.0 if success else -1.0)
        assert bool(nxt.info["terminal"]) == success
    assert raw.action_size == 2


def test_reacher_expert_succeeds_within_the_time_limit():
    """>= 0.9 of 64: the expert succeeded in all 100 quick-preset demos (docs/results/reacher_quick);
    even at p = 0.97 the bar would fail on ~0.3% of seeds (binomial)."""
    env, expert, length = _reacher()

    def episode(key):
        k_reset, k_latent, k_steps = jax.random.split(key, 3)
        state, latent = env.reset(k_reset), expert.init(k_latent)

        def body(carry, k):
            s, done = carry
            nxt = env.step(s, expert.act(latent, s.obs, k))
            return (jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), s, nxt), done | nxt.done), \
                nxt.info["success"] & ~done

        _, success = jax.lax.scan(body, (state, jnp.zeros((), bool)), jax.random.split(k_steps, length))
        return success.any()

    success = jax.jit(jax.vmap(episode))(jax.random.split(jax.random.PRNGKey(0), 64))
    assert float(success.mean()) >= 0.9, float(success.mean())


def test_bad_playground_kwargs_are_named():
    pytest.importorskip("mujoco_playground")
    with pytest.raises(ValueError, match="env_name='Reachr' is not a Playground environment"):
        envs.make("playground", env_name="Reachr", success_threshold=1.0)
    with pytest.raises(ValueError, match="sparse=True needs env.kwargs.success_threshold"):
        envs.make("playground", env_name="ReacherHard")
    with pytest.raises(ValueError, match="has no field 'frame_skip'"):
        envs.make("playground", env_name="ReacherHard", success_threshold=1.0, playground_config={"frame_skip": 2})


@pytest.mark.slow
def test_reacher_config_runs_end_to_end(tmp_path):
    """`configs/reacher.py:quick`, shortened: demos -> clipped BC -> OGPO through the adapter.

    `slow`: its ~150 s on the 2-core CPU are compiles (demo reset and rollout 23 s, two evaluators
    38 s, the training interval 45 s), not learning, and CI covers both halves of the path apart:
    the adapter's episodes through the batched wrappers (the tests above, the expert's rollout) and
    the env-agnostic pipeline on the toy, Can and host tasks."""
    pytest.importorskip("mujoco_playground")
    from configs import reacher
    from ogpo_jax.training import pipeline
    c = reacher.get_config("quick")
    # small networks and chains: this checks the path, configs/reacher.py's learning is in RESULTS.md
    c.algo.actor_hidden_dims = (64, 64)
    c.algo.critic_hidden_dims = (64, 64)
    c.algo.num_critics = 2
    c.algo.flow_steps = 3
    c.algo.group_size = 4
    c.demos.num_demos = 32
    c.bc.max_steps = 1_000
    c.bc.eval_every = 500
    c.bc.eval_episodes = 32
    c.train.total_env_steps = 4_096
    c.train.start_training = 1_024
    c.train.eval_every_env_steps = 4_096
    c.train.eval_episodes = 32
    c.train.checkpoint_every_env_steps = 4_096
    c.log.progress = False
    c.log.tensorboard = False
    summary = pipeline.run(c, str(tmp_path / "reacher"), log=lambda *_: None)
    assert summary["env_steps"] >= 4_096 and summary["grad_steps"] > 0
    for key in ("bc_success_ode", "final_success_ode", "final_success_sde"):
        assert 0.0 <= summary[key] <= 1.0 and np.isfinite(summary[key])
