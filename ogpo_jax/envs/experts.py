"""Scripted experts that generate demonstrations, and a jitted demo collector.

An expert is a pair of pure functions: `init(key) -> latent` (per-episode choices such as which
gap to use and how noisy this demonstrator is) and `act(latent, obs, key) -> action`.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ogpo_jax.envs.toy import PointGaps


@dataclasses.dataclass(frozen=True)
class PointGapsExpert:
    """Waypoint controller through a randomly chosen gap, with per-demo action noise.

    Mixed-quality demonstrations in the spirit of robomimic MH: each demo picks the wide gap with
    probability `p_wide`, and a noise level uniformly in [noise_min, noise_max] (std of Gaussian
    noise added to every action before clipping).
    """

    env: PointGaps
    p_wide: float = 0.5
    noise_min: float = 0.0
    noise_max: float = 0.6
    align_tol: float = 0.02

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
        action = action + latent["noise"] * jax.random.normal(key, action.shape)
        return jnp.clip(action, -1.0, 1.0)


def collect_demos(env, expert, num_demos: int, max_steps: int, key):
    """Roll out `num_demos` expert episodes in parallel (env must not auto-reset).

    Returns a dict of arrays: obs (N, T, obs_dim), actions (N, T, da), rewards (N, T), dones (N, T),
    valid (N, T) (steps taken before the episode ended), success (N,), length (N,).
    """

    def episode(k):
        k_reset, k_latent, k_act = jax.random.split(k, 3)
        state = env.reset(k_reset)
        latent = expert.init(k_latent)

        def step(carry, k_step):
            s, alive = carry
            action = expert.act(latent, s.obs, k_step)
            nxt = env.step(s, action)
            out = dict(obs=s.obs, actions=action, rewards=nxt.reward, dones=nxt.done, valid=alive,
                       success=nxt.info["success"] & alive)
            nxt = jax.tree_util.tree_map(lambda a, b: jnp.where(alive, a, b), nxt, s)
            return (nxt, alive & ~nxt.done), out

        _, traj = jax.lax.scan(step, (state, jnp.ones((), bool)), jax.random.split(k_act, max_steps))
        traj["success"] = traj["success"].any()
        traj["length"] = traj["valid"].sum()
        return traj

    return jax.jit(jax.vmap(episode))(jax.random.split(key, num_demos))
