"""Scripted-expert demonstrations: `num_demos` episodes of a task's expert rolled out in parallel,
in the layout `ogpo_jax.data.demos` writes to robomimic HDF5 files (`pipeline`'s demo stage).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from ogpo_jax.envs import core
from ogpo_jax.envs.core import batched, compiler_options
from ogpo_jax.training import progress


def collect_demos(env, expert, num_demos: int, max_steps: int, key, log=None, segment_steps: int = 50):
    """Roll out `num_demos` expert episodes in parallel (env must not auto-reset); an expert with
    its own `collect` (host simulators) collects them itself, in the same layout.

    Returns a dict of arrays: obs (N, T, obs_dim) (the policy's observation: for a camera
    observation, every step's image, while the expert acts on the simulator state), actions (N, T, da), rewards (N, T), dones (N, T),
    valid (N, T) (steps taken before the episode ended), success (N,), length (N,); T = max_steps.

    The episodes advance `segment_steps` steps per call of one compiled program, so `log` (if
    given) reports progress after each segment, and the rollout stops once every episode has ended
    (the remaining steps are returned as invalid zeros). Step t of episode i uses the same key for
    any `segment_steps`.
    """
    if hasattr(expert, "collect"):      # an expert that runs its own simulators (host workers, envs/host.py)
        return expert.collect(num_demos, max_steps, key, log=log)
    seg = max(1, min(int(segment_steps), int(max_steps)))
    # the policy's observation (a camera image: `envs.pixels`) is recorded; the expert reads the state
    observe = env.observe if hasattr(env, "observe") else (lambda s: s.obs)
    num_seg = -(-max_steps // seg)

    def start(k):
        k_reset, k_latent, k_act = jax.random.split(k, 3)
        step_keys = jax.random.split(k_act, max_steps)
        step_keys = jnp.concatenate([step_keys, jnp.zeros((num_seg * seg - max_steps,) + step_keys.shape[1:],
                                                          step_keys.dtype)])
        return env.reset(k_reset), expert.init(k_latent), step_keys.reshape((num_seg, seg) + step_keys.shape[1:])

    def segment(state, alive, latent, step_keys):
        def step(carry, k_step):
            s, alive = carry
            action = expert.act(latent, s.obs, k_step)
            nxt = env.step(s, action)
            out = dict(obs=observe(s), actions=action, rewards=nxt.reward, dones=nxt.done, valid=alive,
                       success=nxt.info["success"] & alive)
            nxt = core._select(alive, nxt, s)        # MuJoCo Warp states merge through Data.where
            return (nxt, alive & ~nxt.done), out

        (state, alive), out = jax.lax.scan(step, (state, alive), step_keys)
        return state, alive, out

    opts = compiler_options(env)
    start_fn = jax.jit(lambda keys: batched(start, env, keys), compiler_options=opts)
    segment_fn = jax.jit(lambda s, a, lat, k: batched(segment, env, s, a, lat, k), compiler_options=opts)
    keys = jax.random.split(key, num_demos)
    if log is not None:
        progress.compile_program(start_fn, (keys,), f"demo reset ({num_demos} episodes)", log)
    state, latent, step_keys = start_fn(keys)
    alive = jnp.ones((num_demos,), bool)
    if log is not None:
        progress.compile_program(segment_fn, (state, alive, latent, step_keys[:, 0]),
                                 f"demo rollout ({num_demos} episodes x {seg} steps per call)", log)
    chunks, t0 = [], time.time()
    for j in range(num_seg):
        state, alive, out = segment_fn(state, alive, latent, step_keys[:, j])
        chunks.append(jax.device_get(out))
        n_alive = int(np.asarray(alive).sum())
        if log is not None:
            done_steps = min((j + 1) * seg, max_steps)
            succ = int(np.concatenate([c["success"] for c in chunks], 1).any(1).sum())
            log(f"[demos] step {done_steps}/{max_steps}: {num_demos - n_alive}/{num_demos} episodes ended, "
                f"{succ} successful; {progress.rate_line(j + 1, num_seg, time.time() - t0, 'segments')}"
                + (" (all ended)" if n_alive == 0 and j + 1 < num_seg else ""))
        if n_alive == 0:
            break
    traj = {k: np.concatenate([c[k] for c in chunks], 1) for k in chunks[0]}
    pad = num_seg * seg - traj["valid"].shape[1]
    traj = {k: np.concatenate([v, np.zeros((v.shape[0], pad) + v.shape[2:], v.dtype)], 1)[:, :max_steps]
            for k, v in traj.items()}
    traj["success"] = traj["success"].any(1)
    traj["length"] = traj["valid"].sum(1)
    return traj
