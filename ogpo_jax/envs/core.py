"""Functional environment protocol and wrappers (brax-shaped).

An environment is a pair of pure functions `reset(key) -> EnvState` and
`step(state, action) -> EnvState`. `EnvState` mirrors `brax.envs.State`: task-specific simulator
state plus `obs`, `reward`, `done` and an `info` dict. Every task reports per-step
`info['success']` and `info['terminal']` (the task ended: no bootstrap); `EpisodeWrapper` adds
`info['truncated']` (time limit: bootstrap from the true final observation) and
`NonFiniteWrapper` adds `info['nonfinite']` (the simulation produced NaN/inf: the episode ends as
a failure, see its docstring).

Wrapper order used by the training loop:

    task -> NonFiniteWrapper -> EpisodeWrapper(T) -> ChunkWrapper(H) -> AutoResetWrapper -> VmapWrapper(N)

(a task with a camera observation, `envs.pixels`, adds `ObserveChunks` after `ChunkWrapper`)

so one `step` executes an action chunk open-loop and episodes end on chunk boundaries (steps of a
chunk after the episode ended are frozen and marked invalid).
"""
from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp
from flax import struct

# info keys that describe the transition just taken; everything else in info is episode state
# that AutoResetWrapper resets together with the simulator.
TRANSITION_KEYS = ("success", "terminal", "truncated", "nonfinite", "contact_overflow", "rewards", "valid", "step_obs")


class EnvState(struct.PyTreeNode):
    sim: Any                # task-specific physics / simulator state
    obs: jax.Array
    reward: jax.Array       # scalar per step; summed over the chunk for ChunkWrapper
    done: jax.Array         # bool
    info: dict


class Env(Protocol):
    observation_size: int
    action_size: int

    def reset(self, key) -> EnvState: ...

    def step(self, state: EnvState, action) -> EnvState: ...


def _is_warp_data(x) -> bool:
    """An MJX `Data` of MuJoCo Warp (checked by name: this module does not import MJX)."""
    return type(x).__name__ == "Data" and str(getattr(x, "impl", "")).lower().endswith("warp")


def _select(pred, on_true, on_false):
    """Tree-wise where with a (batch-broadcast) scalar predicate.

    A MuJoCo Warp `Data` merges through its own `where`: its contact buffer is one for all the
    worlds of a call, not per world, and must stay so (a plain where would give it a batch axis,
    which the Warp step refuses). That merge needs the per-world predicate, i.e. a scalar inside
    `vmap`."""
    def sel(a, b):
        if _is_warp_data(a):
            if jnp.ndim(pred):
                raise ValueError("merging MuJoCo Warp states needs a scalar predicate (one per world, inside vmap), "
                                 f"got shape {jnp.shape(pred)}")
            return b.where(pred, a)
        p = jnp.reshape(pred, jnp.shape(pred) + (1,) * (jnp.ndim(a) - jnp.ndim(pred)))
        return jnp.where(p, a, b)
    return jax.tree_util.tree_map(sel, on_true, on_false, is_leaf=_is_warp_data)


def nonfinite(*trees) -> jax.Array:
    """True (a bool scalar) if any floating-point leaf of `trees` holds a NaN or an infinity."""
    leaves = [x for x in jax.tree_util.tree_leaves(trees)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact) and jnp.size(x) > 0]
    if not leaves:
        return jnp.zeros((), bool)
    return jnp.stack([~jnp.all(jnp.isfinite(x)) for x in leaves]).any()


class Wrapper:
    def __init__(self, env):
        self.env = env

    def __getattr__(self, name):
        return getattr(self.env, name)

    @property
    def unwrapped(self):
        return getattr(self.env, "unwrapped", self.env)


class NonFiniteWrapper(Wrapper):
    """Ends an episode whose step produced a non-finite observation or reward (or that the task
    itself flagged with `info['nonfinite']`, e.g. an MJX task checking qpos/qvel).

    Such a step is a failed terminal step: `done`, `terminal` and `nonfinite` are set, `success`
    is cleared, and a non-finite reward is replaced by `failure_reward` (0 unless given), so no
    target bootstraps from the broken state and episode returns stay finite. The observation is
    left as it is: the training loop never stores a non-finite transition, and the auto-reset
    starts a fresh episode. MuJoCo Playground ends MJX episodes on NaN qpos for the same reason:
    a blown-up simulator state never recovers.
    """

    def __init__(self, env, failure_reward: float = 0.0):
        super().__init__(env)
        self.failure_reward = float(failure_reward)

    def reset(self, key):
        state = self.env.reset(key)
        return state.replace(info=dict(state.info, nonfinite=jnp.zeros((), bool)))

    def step(self, state, action):
        nxt = self.env.step(state, action)
        bad = nonfinite(nxt.obs, nxt.reward)
        if "nonfinite" in nxt.info:
            bad = bad | nxt.info["nonfinite"]
        reward = jnp.where(jnp.isfinite(nxt.reward), nxt.reward, self.failure_reward)
        reward = reward.astype(jnp.asarray(nxt.reward).dtype)
        info = dict(nxt.info, nonfinite=bad, terminal=nxt.info["terminal"] | bad,
                    success=nxt.info["success"] & ~bad)
        return nxt.replace(reward=reward, done=nxt.done | bad, info=info)


class EpisodeWrapper(Wrapper):
    """Ends an episode after `episode_length` steps with `truncated=True` (unless it terminated)."""

    def __init__(self, env, episode_length: int):
        super().__init__(env)
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        self.episode_length = int(episode_length)

    def reset(self, key):
        state = self.env.reset(key)
        info = dict(state.info, steps=jnp.zeros((), jnp.int32), truncated=jnp.zeros((), bool))
        return state.replace(info=info)

    def step(self, state, action):
        steps = state.info["steps"] + 1
        nxt = self.env.step(state, action)
        truncated = (steps >= self.episode_length) & ~nxt.info["terminal"]
        info = dict(nxt.info, steps=steps, truncated=truncated)
        return nxt.replace(done=nxt.done | truncated, info=info)


class ChunkWrapper(Wrapper):
    """Executes an action chunk (H, da) open-loop with `lax.scan`.

    Records `info['rewards']` (H,) and `info['valid']` (H,); steps after the episode ended inside
    the chunk are frozen (the simulator is not stepped) and invalid with zero reward. With
    `record_obs`, also `info['step_obs']` (H, obs_dim): the observation before each step (the
    frozen final one after an episode end), what per-step replay windows need.
    """

    def __init__(self, env, horizon: int, record_obs: bool = False):
        super().__init__(env)
        if horizon < 1:
            raise ValueError(f"chunk horizon must be >= 1, got {horizon}")
        self.horizon = int(horizon)
        self.record_obs = bool(record_obs)

    def _with_chunk_info(self, state, rewards, valid, step_obs=None):
        info = dict(state.info, rewards=rewards, valid=valid)
        if self.record_obs:
            info["step_obs"] = step_obs if step_obs is not None else jnp.zeros((self.horizon,) + state.obs.shape,
                                                                               state.obs.dtype)
        return state.replace(info=info)

    def reset(self, key):
        state = self.env.reset(key)
        return self._with_chunk_info(state, jnp.zeros(self.horizon), jnp.zeros(self.horizon, bool))

    def step(self, state, chunk):
        chunk = jnp.asarray(chunk)
        if chunk.shape[0] != self.horizon:
            raise ValueError(f"action chunk has length {chunk.shape[0]}, expected horizon {self.horizon}")
        inner = state.replace(info={k: v for k, v in state.info.items() if k not in ("rewards", "valid", "step_obs")})

        def body(carry, action):
            s, alive = carry
            nxt = _select(alive, self.env.step(s, action), s)
            reward = jnp.where(alive, nxt.reward, 0.0)
            return (nxt, alive & ~nxt.done), (reward, alive) + ((s.obs,) if self.record_obs else ())

        (final, _), out = jax.lax.scan(body, (inner, ~state.done), chunk)
        rewards, valid = out[:2]
        final = final.replace(reward=rewards.sum())
        return self._with_chunk_info(final, rewards, valid, out[2] if self.record_obs else None)


class ObserveChunks(Wrapper):
    """A chunked env whose observation is `env.observe(state)` (a camera image: `envs.pixels`),
    made once per chunk boundary: after reset and after each chunk. The task's own observation,
    which its steps read (the scripted expert, the non-finite guard), travels in
    `info['state_obs']` and goes back into `obs` for the inner steps."""

    def reset(self, key):
        state = self.env.reset(key)
        return state.replace(obs=self.env.observe(state), info=dict(state.info, state_obs=state.obs))

    def step(self, state, chunk):
        info = dict(state.info)
        inner = state.replace(obs=info.pop("state_obs"), info=info)
        nxt = self.env.step(inner, chunk)
        return nxt.replace(obs=self.env.observe(nxt), info=dict(nxt.info, state_obs=nxt.obs))


class AutoResetWrapper(Wrapper):
    """Resets finished episodes inside `step`; keeps the true final observation.

    After a step that ended the episode, `obs` is the first observation of the next episode,
    `info['final_obs']` the true last observation (for bootstrapping on truncation), and `done`,
    `reward` and the transition info keys describe the step that ended the episode.
    """

    def reset(self, key):
        k_env, k_next = jax.random.split(key)
        state = self.env.reset(k_env)
        return state.replace(info=dict(state.info, final_obs=state.obs, reset_key=k_next))

    def step(self, state, action):
        info = {k: v for k, v in state.info.items() if k not in ("final_obs", "reset_key")}
        # `done` describes the previous step; the episode in `state` was already reset if it ended.
        nxt = self.env.step(state.replace(done=jnp.zeros_like(state.done), info=info), action)
        key, k_reset = jax.random.split(state.info["reset_key"])
        fresh = self.env.reset(k_reset)
        merged = _select(nxt.done, fresh, nxt)
        new_info = dict(merged.info)
        for k in TRANSITION_KEYS:
            if k in nxt.info:
                new_info[k] = nxt.info[k]
        new_info.update(final_obs=nxt.obs, reset_key=key)
        return merged.replace(reward=nxt.reward, done=nxt.done, info=new_info)


def batch_env(env, num_envs: int, horizon: int, auto_reset: bool = True, record_obs: bool = False):
    """`env` (a task with its time limit, as `envs.make` returns it) as `num_envs` environments
    that each execute an action chunk of `horizon` steps per `step`, resetting finished episodes
    when `auto_reset` (training) or freezing them (evaluation). Every batched env in the package is
    made here: a task that batches itself (host simulators in worker processes, `envs.host`)
    answers with its own `batched`, a JAX task gets the wrapper stack. `record_obs`: the chunk
    wrapper also reports the observation before every step (step replay windows)."""
    if getattr(env, "host_batched", False):
        return env.batched(num_envs, horizon, auto_reset=auto_reset)
    chunked = ChunkWrapper(env, horizon, record_obs=record_obs)
    if hasattr(env, "observe"):           # a camera observation: one image per chunk boundary
        if record_obs:
            raise ValueError("per-step observations (train.replay_windows='step') are not recorded for a camera "
                             "observation (env.kwargs.obs): the image is made once per chunk")
        chunked = ObserveChunks(chunked)
    return VmapWrapper(AutoResetWrapper(chunked) if auto_reset else chunked, num_envs)


def state_in_checkpoint(env) -> bool:
    """False for a task whose simulator state lives outside JAX (host worker processes): a restored
    run starts fresh episodes there (`training.loop.restart_host_episodes`)."""
    return not getattr(env, "host_batched", False)


def compiler_options(env):
    """XLA options for a jitted program that steps `env` (MJX tasks need some on old jaxlib/CPU)."""
    return getattr(env, "compiler_options", None)


def batched(fn, env, *args):
    """`vmap(fn)(*args)` over the leading axis, run as a sequential map over vmapped sub-batches of
    at most `env.max_vmap_batch` where the env sets one (MJX on jaxlib 0.10 CPU, see
    `ogpo_jax.envs.mjx.compile_options`). A ragged last sub-batch is padded and sliced off."""
    limit = getattr(env, "max_vmap_batch", None)
    n = jax.tree_util.tree_leaves(args)[0].shape[0]
    if limit is None or n <= limit:
        return jax.vmap(fn)(*args)
    num = -(-n // int(limit))
    limit = -(-n // num)          # equal sub-batches: 200 envs at a cap of 128 run as 2 x 100
    pad = num * limit - n

    def split(x):
        if pad:
            x = jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad,) + x.shape[1:])])
        return x.reshape((num, limit) + x.shape[1:])

    # explicit shapes throughout: lax.map(batch_size=...) reshapes with -1, which fails on the
    # zero-size arrays an MJX Data carries
    out = jax.lax.map(lambda a: jax.vmap(fn)(*a), jax.tree_util.tree_map(split, args))
    return jax.tree_util.tree_map(lambda y: y.reshape((num * limit,) + y.shape[2:])[:n], out)


class VmapWrapper(Wrapper):
    """Batches an environment: `reset(key)` makes `num_envs` independent episodes."""

    def __init__(self, env, num_envs: int):
        super().__init__(env)
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = int(num_envs)

    def reset(self, key):
        return batched(self.env.reset, self.env, jax.random.split(key, self.num_envs))

    def step(self, state, action):
        return batched(self.env.step, self.env, state, action)
