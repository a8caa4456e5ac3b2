"""Tiny pure-JAX tasks: a sparse-reward navigation task for learning checks, and debug tasks whose
chunk Q-values are known in closed form (rejax-style) for critic tests.

All tasks follow the paper's reward convention where it applies: -1 per step, +5 and terminate on
success; actions live in [-1, 1].
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from ogpo_jax.envs.core import EnvState


# ----------------------------------------------------------------------------- point mass + gaps

@dataclasses.dataclass(frozen=True)
class PointGapsParams:
    max_speed: float = 0.1          # displacement per step at |action| = 1
    wall_half_width: float = 0.06   # wall occupies |y| < wall_half_width (> max_speed / 2: no tunnelling)
    wide_gap: tuple = (-0.5, 0.15)  # (center x, half width)
    narrow_gap: tuple = (0.5, 0.05)
    goal: tuple = (0.0, 0.75)
    goal_radius: float = 0.15
    start_y: float = -0.75
    start_x_range: float = 0.9
    max_steps: int = 40             # used for the normalized-time observation
    success_bonus: float = 5.0


class PointGapsSim(struct.PyTreeNode):
    pos: jax.Array      # (2,)
    t: jax.Array        # int32 steps taken


class PointGaps:
    """2-D point mass that must pass one of two gaps (wide / narrow) in a wall to reach a goal.

    obs = (x, y, t / max_steps); action (2,) in [-1, 1] is a velocity; moving into the wall leaves
    the mass where it was. Reward -1 per step, +5 and terminate inside the goal disc. Wrap with
    `EpisodeWrapper(env, params.max_steps)` for the time limit (`make('point_gaps')` does).
    """

    observation_size = 3
    action_size = 2

    def __init__(self, params: PointGapsParams = PointGapsParams()):
        self.params = params

    def _obs(self, sim):
        return jnp.concatenate([sim.pos, (sim.t / self.params.max_steps)[None]]).astype(jnp.float32)

    def in_wall(self, pos):
        p = self.params
        in_gap = jnp.zeros((), bool)
        for center, half in (p.wide_gap, p.narrow_gap):
            in_gap = in_gap | (jnp.abs(pos[0] - center) < half)
        return (jnp.abs(pos[1]) < p.wall_half_width) & ~in_gap

    def at_goal(self, pos):
        return jnp.linalg.norm(pos - jnp.asarray(self.params.goal)) < self.params.goal_radius

    def reset(self, key):
        p = self.params
        x = jax.random.uniform(key, (), minval=-p.start_x_range, maxval=p.start_x_range)
        sim = PointGapsSim(pos=jnp.array([x, p.start_y], jnp.float32), t=jnp.zeros((), jnp.int32))
        info = {"success": jnp.zeros((), bool), "terminal": jnp.zeros((), bool)}
        return EnvState(sim=sim, obs=self._obs(sim), reward=jnp.zeros(()), done=jnp.zeros((), bool), info=info)

    def step(self, state, action):
        p = self.params
        pos = state.sim.pos
        new = jnp.clip(pos + p.max_speed * jnp.clip(action, -1.0, 1.0), -1.0, 1.0)
        # Check the midpoint too, so a diagonal move cannot cut a wall corner.
        blocked = self.in_wall(new) | self.in_wall(0.5 * (pos + new))
        new = jnp.where(blocked, pos, new)
        sim = PointGapsSim(pos=new, t=state.sim.t + 1)
        success = self.at_goal(new)
        reward = jnp.where(success, -1.0 + p.success_bonus, -1.0)
        info = dict(state.info, success=success, terminal=success)
        return EnvState(sim=sim, obs=self._obs(sim), reward=reward, done=success, info=info)


# ----------------------------------------------------------------------------- debug tasks

class CountdownSim(struct.PyTreeNode):
    remaining: jax.Array    # int32 steps left before the episode terminates


class Countdown:
    """Debug task with action-independent values: reward -1 per step, terminal after `n` steps.

    The episode starts with n ~ U{1..length} steps left; obs = (n / length,). The true chunk value
    from a state with n steps left is Q = -(1 - gamma^n) / (1 - gamma) for any actions, so it tests
    n-step targets, bootstrapping across chunks and termination inside a chunk.
    """

    action_size = 1
    observation_size = 1

    def __init__(self, length: int = 10):
        self.length = int(length)

    def _state(self, remaining, reward, done):
        sim = CountdownSim(remaining=remaining)
        obs = (remaining / self.length)[None].astype(jnp.float32)
        info = {"success": jnp.zeros((), bool), "terminal": done}
        return EnvState(sim=sim, obs=obs, reward=reward, done=done, info=info)

    def reset(self, key):
        n = jax.random.randint(key, (), 1, self.length + 1)
        return self._state(n, jnp.zeros(()), jnp.zeros((), bool))

    def step(self, state, action):
        n = state.sim.remaining - 1
        return self._state(n, -jnp.ones(()), n <= 0)

    def true_q(self, obs, gamma: float):
        n = jnp.round(obs[..., 0] * self.length)
        return -(1.0 - gamma**n) / (1.0 - gamma)


class BanditSim(struct.PyTreeNode):
    target: jax.Array
    t: jax.Array


class ChunkBandit:
    """Debug task with action-dependent values: one chunk of `horizon` steps, then terminal.

    obs = (target,) with target ~ U(-1, 1); reward at step i is -(a_i - target)^2. The true chunk
    value is Q(s, a_{0:H}) = -sum_i gamma^i (a_i - target)^2.
    """

    action_size = 1
    observation_size = 1

    def __init__(self, horizon: int = 4):
        self.horizon = int(horizon)

    def reset(self, key):
        target = jax.random.uniform(key, (), minval=-1.0, maxval=1.0)
        sim = BanditSim(target=target, t=jnp.zeros((), jnp.int32))
        info = {"success": jnp.zeros((), bool), "terminal": jnp.zeros((), bool)}
        return EnvState(sim=sim, obs=target[None], reward=jnp.zeros(()), done=jnp.zeros((), bool), info=info)

    def step(self, state, action):
        t = state.sim.t + 1
        reward = -jnp.square(action[0] - state.sim.target)
        done = t >= self.horizon
        info = dict(state.info, terminal=done)
        return state.replace(sim=state.sim.replace(t=t), reward=reward, done=done, info=info)

    @staticmethod
    def true_q(obs, chunk, gamma: float):
        h = chunk.shape[-2]
        disc = gamma ** jnp.arange(h)
        return -(jnp.square(chunk[..., 0] - obs[..., :1]) * disc).sum(-1)


class BlowUpSim(struct.PyTreeNode):
    t: jax.Array          # int32 steps taken
    doomed: jax.Array     # bool: this episode's "simulation" blows up at `at_step`
    x: jax.Array          # () float: the state that goes non-finite


class BlowUp:
    """Debug task whose simulation blows up: tests the non-finite guards end to end.

    Each episode lasts `length` steps and succeeds at its last step (reward -1 per step, +5 on
    success, terminal), unless it is *doomed* (probability `p_blowup`, drawn at reset): then its
    state, observation and reward turn NaN at step `at_step` and stay NaN, like a diverged
    physics state. The task does not flag this itself (`NonFiniteWrapper` must catch it from the
    observation). obs = (t / length, x) with x = 0 while finite.
    """

    action_size = 1
    observation_size = 2

    def __init__(self, length: int = 12, at_step: int = 6, p_blowup: float = 0.5):
        if not 1 <= at_step <= length:
            raise ValueError(f"BlowUp: at_step={at_step} must be in [1, length={length}]")
        self.length, self.at_step, self.p_blowup = int(length), int(at_step), float(p_blowup)

    def _state(self, sim, reward, success, done):
        obs = jnp.stack([sim.t / self.length, sim.x]).astype(jnp.float32)
        info = {"success": success, "terminal": done}
        return EnvState(sim=sim, obs=obs, reward=reward, done=done, info=info)

    def reset(self, key):
        doomed = jax.random.uniform(key) < self.p_blowup
        sim = BlowUpSim(t=jnp.zeros((), jnp.int32), doomed=doomed, x=jnp.zeros((), jnp.float32))
        no = jnp.zeros((), bool)
        return self._state(sim, jnp.zeros((), jnp.float32), no, no)

    def step(self, state, action):
        t = state.sim.t + 1
        x = jnp.where(state.sim.doomed & (t >= self.at_step), jnp.nan, state.sim.x)
        success = (t >= self.length) & jnp.isfinite(x)
        reward = jnp.where(success, 4.0, -1.0) + 0.0 * x            # NaN once x is
        sim = BlowUpSim(t=t, doomed=state.sim.doomed, x=x)
        return self._state(sim, reward.astype(jnp.float32), success, success)


@dataclasses.dataclass(frozen=True)
class PointGapsExpert:
    """Waypoint controller through a randomly chosen gap, with per-demo action noise.

    Mixed-quality demonstrations in the spirit of robomimic MH: each demo picks the wide gap with
    probability `p_wide`, and a noise level uniformly in [noise_min, noise_max] (std of Gaussian
    noise added to every action before clipping). With `speed` < 1 every action component is
    clipped to [-speed, speed] (after the noise): the demonstrations never move at the task's full
    speed, so a tight time limit puts the fast solutions outside their support.
    """

    env: PointGaps
    p_wide: float = 0.5
    noise_min: float = 0.0
    noise_max: float = 0.6
    align_tol: float = 0.02
    speed: float = 1.0

    def init(self, key):
        k_gap, k_noise = jax.random.split(key)
        wide = jax.random.bernoulli(k_gap, self.p_wide)
        p = self.env.params
        gap_x = jnp.where(wide, p.wide_gap[0], p.narrow_gap[0])
        noise = jax.random.uniform(k_noise, (), minval=self.noise_min, maxval=self.noise_max)
        return {"gap_x": gap_x, "noise": noise}

    def act(self, latent, obs, key):
        p = self.env.params
        pos = obs[:2]
        gx = latent["gap_x"]
        below = pos[1] < -p.wall_half_width - 0.02
        aligned = jnp.abs(pos[0] - gx) < self.align_tol
        target = jnp.where(
            below & ~aligned, jnp.array([gx, -0.2]),
            jnp.where(pos[1] < 0.15, jnp.array([gx, 0.25]), jnp.asarray(p.goal)))
        action = jnp.clip((target - pos) / p.max_speed, -1.0, 1.0)
        action = self.speed * action + latent["noise"] * jax.random.normal(key, action.shape)
        return jnp.clip(action, -self.speed, self.speed)
