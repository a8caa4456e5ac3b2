"""brax / MuJoCo Playground environments behind ogpo-jax's `Env` protocol.

A brax-shaped environment has `reset(rng) -> State` and `step(state, action) -> State`, where
`State` carries `obs`, `reward`, `done` (a float: the episode terminated), `metrics` and `info`
(`brax.envs.Env`, `mujoco_playground.MjxEnv`). `BraxAdapter` turns one into our `Env`: the brax
state becomes `EnvState.sim`, `done` becomes `info['terminal']` (no bootstrap), and
`info['success']` comes from a success predicate. `SparseSuccess` then gives the task this
framework's reward convention: -1 per step, `success_bonus` and terminate on success.

Wrap the raw environment (`mujoco_playground.registry.load(name)`), not Playground's training
wrappers: their auto-reset replaces the observation of the step that ended an episode with the
next episode's first one, so an off-policy target would bootstrap from the wrong state, and their
time limit marks a truncation `done` like a terminal. Here the time limit is `EpisodeWrapper`
(truncation bootstraps) and `AutoResetWrapper` keeps the true final observation, as for every
task (`ogpo_jax.envs.make('playground', env_name=...)` applies them).

`make_playground` builds a registered Playground environment (needs the `playground` extra:
`pip install -e ".[playground]"`); `ReacherExpert` is a scripted demonstrator for the
dm_control-suite reacher, so `configs/reacher.py` runs demos -> clipped BC -> finetune.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from ogpo_jax.envs.core import EnvState, Wrapper


def _flat_size(size) -> int:
    return size if isinstance(size, int) else int(math.prod(size))


class BraxAdapter:
    """A brax-shaped environment as an ogpo-jax `Env`.

    Args:
      env: object with `reset(rng)`, `step(state, action)` and `action_size`; its states have
        `obs`, `reward`, `done`.
      success_fn: `brax_state -> bool` scalar, evaluated after reset and after every step (e.g.
        `reward_at_least(1.0)`); without it `info['success']` is always False.
      obs_key: for environments whose observation is a dict (Playground's `{'state': ...,
        'privileged_state': ...}`), the entry to use; required then.
      obs_fn: `(observation array) -> array`, a feature map applied after `obs_key` (e.g.
        `reacher_features`: joint angles as cos/sin); `observation_size` is its output's size.
      reset_fn: `brax_state -> brax_state` applied after the wrapped env's reset (e.g.
        `refreshed_reset(env)`: an env whose reset builds the observation before it finishes
        placing the scene).
    """

    def __init__(self, env, success_fn: Optional[Callable[[Any], jax.Array]] = None,
                 obs_key: Optional[str] = None, obs_fn: Optional[Callable[[jax.Array], jax.Array]] = None,
                 reset_fn: Optional[Callable[[Any], Any]] = None):
        for attr in ("reset", "step", "action_size"):
            if not hasattr(env, attr):
                raise TypeError(f"BraxAdapter needs a brax-shaped env with `{attr}`; got {type(env).__name__}")
        self.env = env
        self.success_fn = success_fn
        self.reset_fn = reset_fn
        self.obs_key = obs_key
        size = getattr(env, "observation_size")
        if isinstance(size, dict):
            if obs_key is None:
                raise ValueError(f"{type(env).__name__} has dict observations {sorted(size)}; set obs_key "
                                 "(env.kwargs.obs_key) to one of them")
            if obs_key not in size:
                raise ValueError(f"obs_key={obs_key!r} is not one of the observation keys {sorted(size)}")
            size = size[obs_key]
        elif obs_key is not None:
            raise ValueError(f"obs_key={obs_key!r} given but {type(env).__name__} has array observations")
        self.obs_fn = obs_fn
        self.observation_size = _flat_size(size)
        if obs_fn is not None:
            out = jax.eval_shape(obs_fn, jax.ShapeDtypeStruct((self.observation_size,), jnp.float32))
            self.observation_size = int(math.prod(out.shape))
        self.action_size = int(env.action_size)

    @property
    def unwrapped(self):
        return self

    def _obs(self, bstate) -> jax.Array:
        obs = bstate.obs[self.obs_key] if self.obs_key is not None else bstate.obs
        obs = jnp.reshape(obs, (-1,)).astype(jnp.float32)
        return obs if self.obs_fn is None else jnp.reshape(self.obs_fn(obs), (-1,)).astype(jnp.float32)

    def _wrap(self, bstate, reward) -> EnvState:
        terminal = jnp.asarray(bstate.done) > 0
        if self.success_fn is None:
            success = jnp.zeros((), bool)
        else:
            success = jnp.asarray(self.success_fn(bstate), bool).reshape(())
        info = {"success": success & ~terminal, "terminal": terminal}
        return EnvState(sim=bstate, obs=self._obs(bstate), reward=jnp.asarray(reward, jnp.float32).reshape(()),
                        done=terminal, info=info)

    def reset(self, key) -> EnvState:
        bstate = self.env.reset(key)
        if self.reset_fn is not None:
            bstate = self.reset_fn(bstate)
        state = self._wrap(bstate, 0.0)
        # an episode never starts as a success: a success predicate true at reset would end the
        # episode before any action was taken
        return state.replace(info=dict(state.info, success=jnp.zeros((), bool)))

    def step(self, state: EnvState, action) -> EnvState:
        bstate = self.env.step(state.sim, action)
        return self._wrap(bstate, bstate.reward)


def refreshed_reset(env) -> Callable[[Any], Any]:
    """A `reset_fn` for MJX Playground envs whose reset moves a mocap body (the reacher's target)
    after its last `mjx.forward`, so the reset observation still shows the body where it was: run
    forward kinematics again and rebuild the observation with the env's own `_get_obs`."""
    from mujoco import mjx

    def reset_fn(bstate):
        data = mjx.kinematics(env.mjx_model, bstate.data)
        return bstate.replace(data=data, obs=env._get_obs(data, bstate.info))

    return reset_fn


def reward_at_least(threshold: float) -> Callable[[Any], jax.Array]:
    """Success predicate: the wrapped environment's own step reward is >= `threshold` (e.g. the
    dm_control reacher's reward is 1 exactly while the finger touches the target)."""
    threshold = float(threshold)
    return lambda bstate: jnp.asarray(bstate.reward) >= threshold


class SparseSuccess(Wrapper):
    """Sparse reward from the success predicate: -1 per step, `success_bonus` on the successful
    step, and the episode terminates on success (the paper's convention, as for Can). The inner
    reward is kept in `info['dense_reward']` for logging."""

    def __init__(self, env, success_bonus: float = 5.0):
        super().__init__(env)
        self.success_bonus = float(success_bonus)

    def reset(self, key):
        state = self.env.reset(key)
        return state.replace(reward=jnp.zeros((), jnp.float32), info=dict(state.info, dense_reward=state.reward))

    def step(self, state, action):
        nxt = self.env.step(state, action)
        success = nxt.info["success"]
        reward = jnp.where(success, self.success_bonus, -1.0).astype(jnp.float32)
        info = dict(nxt.info, dense_reward=nxt.reward, terminal=nxt.info["terminal"] | success)
        return nxt.replace(reward=reward, done=nxt.done | success, info=info)


# scales that bring the reacher's features to order one (demo std: finger-to-target 0.13 m,
# joint velocities 3.4 rad/s), so no input dominates the networks' first layer
REACHER_TO_TARGET_SCALE = 10.0
REACHER_QVEL_SCALE = 1.0 / 3.0


def reacher_features(obs: jax.Array) -> jax.Array:
    """The reacher's observation (shoulder, wrist, finger-to-target x/y, joint velocities) with
    the joint angles as (cos, sin): the raw shoulder angle grows without bound as the arm turns,
    so the same pose reaches the network as many different inputs. Finger-to-target (m) and the
    joint velocities (rad/s) are scaled to order one."""
    q = obs[0:2]
    return jnp.concatenate([jnp.cos(q), jnp.sin(q), REACHER_TO_TARGET_SCALE * obs[2:4],
                            REACHER_QVEL_SCALE * obs[4:6]])


@dataclasses.dataclass(frozen=True)
class ReacherExpert:
    """Scripted demonstrator for the dm_control-suite two-link reacher (Playground `ReacherEasy` /
    `ReacherHard`), a function of the observation only.

    The observation is `reacher_features`' (cos, sin of the shoulder and wrist angles,
    finger-to-target x/y, joint velocities), or with `raw_obs` Playground's own (the angles
    themselves, finger-to-target, joint velocities). The
    expert solves the arm's inverse kinematics for the target (of the two elbow solutions, the
    one nearer the current joint angles), and drives the joints there with a PD torque
    (`kp` per radian, `kd` per rad/s, in units of the motors' control range). Per demo (`init`):
    a gain factor in `gain_range` and Gaussian action noise with std uniform in
    [noise_min, noise_max].
    """

    env: Any = None
    link_lengths: tuple = (0.12, 0.12)   # shoulder -> wrist, wrist -> finger (reacher.xml)
    kp: float = 4.0
    kd: float = 0.4
    gain_range: tuple = (0.7, 1.0)
    noise_min: float = 0.0
    noise_max: float = 0.5
    raw_obs: bool = False

    def init(self, key):
        k_gain, k_noise = jax.random.split(key)
        return {"gain": jax.random.uniform(k_gain, (), minval=self.gain_range[0], maxval=self.gain_range[1]),
                "noise": jax.random.uniform(k_noise, (), minval=self.noise_min, maxval=self.noise_max)}

    def joint_goal(self, obs):
        """Joint-angle errors that put the finger on the target (nearest elbow solution)."""
        q, to_target, _ = self._split(obs)
        l1, l2 = self.link_lengths
        finger = jnp.stack([l1 * jnp.cos(q[0]) + l2 * jnp.cos(q[0] + q[1]),
                            l1 * jnp.sin(q[0]) + l2 * jnp.sin(q[0] + q[1])])
        x, y = finger + to_target
        c2 = jnp.clip((x * x + y * y - l1 * l1 - l2 * l2) / (2 * l1 * l2), -1.0, 1.0)
        wrap = lambda a: jnp.arctan2(jnp.sin(a), jnp.cos(a))  # noqa: E731
        goals, costs = [], []
        for sign in (1.0, -1.0):
            q2 = sign * jnp.arccos(c2)
            q1 = jnp.arctan2(y, x) - jnp.arctan2(l2 * jnp.sin(q2), l1 + l2 * jnp.cos(q2))
            dq = jnp.stack([wrap(q1 - q[0]), q2 - q[1]])
            goals.append(dq)
            costs.append(jnp.abs(dq).sum())
        return jnp.where(costs[0] <= costs[1], goals[0], goals[1])   # (shoulder, wrist) errors

    def _split(self, obs):
        if self.raw_obs:
            return obs[0:2], obs[2:4], obs[4:6]
        return (jnp.arctan2(obs[2:4], obs[0:2]), obs[4:6] / REACHER_TO_TARGET_SCALE,
                obs[6:8] / REACHER_QVEL_SCALE)

    def act(self, latent, obs, key):
        dq, qvel = self.joint_goal(obs), self._split(obs)[2]
        action = latent["gain"] * (self.kp * dq - self.kd * qvel)
        action = action + latent["noise"] * jax.random.normal(key, action.shape)
        return jnp.clip(action, -1.0, 1.0)


def _mjspec_compat():
    """Playground 0.2.0's reacher compares mujoco versions as strings ('3.17.0' < '3.3.0') and then
    calls `MjSpec.find_body`, which mujoco >= 3.3 no longer has; alias it to its successor
    `MjSpec.body` (same lookup by name) so the dm_control reacher loads on current mujoco."""
    import mujoco
    if not hasattr(mujoco.MjSpec, "find_body") and hasattr(mujoco.MjSpec, "body"):
        mujoco.MjSpec.find_body = mujoco.MjSpec.body


def make_playground(env_name: str, impl: str = "jax", config_overrides: Optional[dict] = None):
    """Load a MuJoCo Playground environment by registry name (e.g. 'ReacherHard'), offline.

    `impl='jax'` selects MJX, which runs under our jit/vmap on CPU, GPU and TPU; 'warp' is
    Playground's default for the dm_control suite (NVIDIA GPUs).
    """
    try:
        from mujoco_playground import registry
    except ImportError as e:
        raise ImportError("env.name='playground' needs MuJoCo Playground: pip install -e \".[playground]\" "
                          f"({e})") from None
    _mjspec_compat()
    names = list(registry.ALL_ENVS) if hasattr(registry, "ALL_ENVS") else None
    if names is not None and env_name not in names:
        raise ValueError(f"env.kwargs.env_name={env_name!r} is not a Playground environment; known: {sorted(names)}")
    config = registry.get_default_config(env_name)
    if "impl" in config:
        config.impl = impl
    for k, v in (config_overrides or {}).items():
        if k not in config:
            raise ValueError(f"Playground config of {env_name!r} has no field {k!r}; fields: {sorted(config.keys())}")
        config[k] = v
    return registry.load(env_name, config=config)
