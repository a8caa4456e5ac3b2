"""Policy evaluation: run `num_episodes` episodes in parallel to completion, report success.

An episode the environment ended as non-finite (`info['nonfinite']`: the simulation blew up, see
`ogpo_jax.envs.core.NonFiniteWrapper`) counts as a failure; `nonfinite` reports how many there were.

`policy(params, obs, key) -> chunks (B, H, da)` is any jittable policy; `params` is whatever it
needs (actor params, a whole TrainState). The env must be chunked and must NOT auto-reset: a
finished episode stays frozen (ChunkWrapper marks its steps invalid) until all are done.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ogpo_jax.envs import core as env_core
from ogpo_jax.envs.core import ChunkWrapper, VmapWrapper


def make_evaluator(env, horizon: int, episode_length: int, num_episodes: int, vmap_seeds: bool = False):
    """-> jitted `evaluate(policy, params, key) -> dict(success, return, length, nonfinite)` (policy
    static); success, return and length are means over the episodes, nonfinite a count.

    `vmap_seeds=True`: `params` and `key` carry a leading seed axis and every result has shape (S,).
    """
    if num_episodes < 1:
        raise ValueError(f"eval episodes must be >= 1, got {num_episodes}")
    chunked = VmapWrapper(ChunkWrapper(env, horizon), num_episodes)
    num_chunks = -(-episode_length // horizon)

    def evaluate(policy, params, key):
        k_reset, k_act = jax.random.split(key)
        state = chunked.reset(k_reset)

        def body(carry, k):
            s, ret, length, success, broken = carry
            alive = ~s.done
            nxt = chunked.step(s, policy(params, s.obs, k))
            ret = ret + nxt.reward
            length = length + nxt.info["valid"].sum(-1)
            success = success | (nxt.info["success"] & alive)
            broken = broken | (nxt.info.get("nonfinite", jnp.zeros_like(alive)) & alive)
            return (nxt, ret, length, success, broken), None

        zeros = jnp.zeros((num_episodes,))
        no = jnp.zeros((num_episodes,), bool)
        init = (state, zeros, zeros, no, no)
        (_, ret, length, success, broken), _ = jax.lax.scan(body, init, jax.random.split(k_act, num_chunks))
        return {"success": (success & ~broken).mean(), "return": ret.mean(), "length": length.mean(),
                "nonfinite": broken.sum()}

    def evaluate_seeds(policy, params, keys):
        return jax.vmap(functools.partial(evaluate, policy))(params, keys)

    return functools.partial(jax.jit, static_argnums=0, compiler_options=env_core.compiler_options(env))(
        evaluate_seeds if vmap_seeds else evaluate)
