"""Policy evaluation: run `num_episodes` episodes in parallel to completion, report success.

An episode the environment ended as non-finite (`info['nonfinite']`: the simulation blew up, see
`ogpo_jax.envs.core.NonFiniteWrapper`) counts as a failure; `nonfinite` reports how many there were.

`policy(params, obs, key) -> chunks (B, H, da)` is any jittable policy; `params` is whatever it
needs (actor params, a whole algorithm state). The env must be chunked and must NOT auto-reset: a
finished episode stays frozen (ChunkWrapper marks its steps invalid) until all are done, and the
rollout stops as soon as every episode has ended.

Several samplers of the same params (ODE, SDE, Best-of-N, ...) share ONE compiled program:
`PolicySwitch(policies)` picks the sampler with a traced index (`lax.switch`), so the simulator
inside the evaluator, which dominates its compile time for MJX tasks, is compiled once.
`evaluate_policies` runs a dict of samplers through such a program.

Two samplers compare methods on equal terms (`SELECTION_MODES`): 'alone' is the method's own
policy with no critic selection (`Algorithm.policy_alone`: the ODE chunk; for QC its flow's ODE
chunk), 'select' the best of N candidates by the mean (or min) of the method's target-critic
heads, with the same N and aggregation for every method that has a chunked critic.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ogpo_jax.algorithms import base as algorithms
from ogpo_jax.algorithms import critic as critic_lib
from ogpo_jax.envs import core as env_core
from ogpo_jax.training import compile_cache, progress


class PolicySwitch:
    """Static, hashable set of policies chosen by a traced index: `switch(params, obs, key, index)`.

    Equal (and hashing equal) when its policies are the same objects, so an evaluator compiled for
    one switch is reused by every call with the same policies.
    """

    def __init__(self, policies, names=None):
        self.policies = tuple(policies)
        self.names = tuple(names) if names is not None else tuple(f"policy {i}" for i in range(len(self.policies)))
        if not self.policies or len(self.names) != len(self.policies):
            raise ValueError(f"PolicySwitch needs one name per policy and at least one policy, got "
                             f"{len(self.policies)} policies and names {self.names}")

    def __call__(self, params, obs, key, index):
        if len(self.policies) == 1:
            return self.policies[0](params, obs, key)
        return jax.lax.switch(index, self.policies, params, obs, key)

    def __hash__(self):
        return hash((self.policies, self.names))

    def __eq__(self, other):
        return isinstance(other, PolicySwitch) and (self.policies, self.names) == (other.policies, other.names)


def make_evaluator(env, horizon: int, episode_length: int, num_episodes: int, vmap_seeds: bool = False,
                   log=None, what: str = "evaluator"):
    """-> jitted `evaluate(policy, params, key, index=0) -> dict(success, return, length, nonfinite)`
    (policy static); success, return and length are means over the episodes, nonfinite a count.
    `policy` is a policy function or a `PolicySwitch`, whose sampler `index` (traced) selects.

    `vmap_seeds=True`: `params` and `key` carry a leading seed axis and every result has shape (S,).
    `log`: announce and time the compile of each new policy (`progress.compile_program`).
    """
    if num_episodes < 1:
        raise ValueError(f"eval episodes must be >= 1, got {num_episodes}")
    chunked = env_core.batch_env(env, num_episodes, horizon, auto_reset=False)
    num_chunks = -(-episode_length // horizon)

    def evaluate(policy, params, key, index):
        k_reset, k_act = jax.random.split(key)
        state = chunked.reset(k_reset)
        keys = jax.random.split(k_act, num_chunks)
        act = policy if isinstance(policy, PolicySwitch) else (lambda p, o, k, _i: policy(p, o, k))

        def body(carry):
            i, s, ret, length, success, broken = carry
            alive = ~s.done
            nxt = chunked.step(s, act(params, s.obs, keys[i], index))
            ret = ret + nxt.reward
            length = length + nxt.info["valid"].sum(-1)
            success = success | (nxt.info["success"] & alive)
            broken = broken | (nxt.info.get("nonfinite", jnp.zeros_like(alive)) & alive)
            return i + 1, nxt, ret, length, success, broken

        def running(carry):
            i, s = carry[:2]
            return (i < num_chunks) & ~jnp.all(s.done)

        zeros = jnp.zeros((num_episodes,))
        no = jnp.zeros((num_episodes,), bool)
        init = (jnp.zeros((), jnp.int32), state, zeros, zeros, no, no)
        _, _, ret, length, success, broken = jax.lax.while_loop(running, body, init)
        return {"success": (success & ~broken).mean(), "return": ret.mean(), "length": length.mean(),
                "nonfinite": broken.sum()}

    def evaluate_seeds(policy, params, keys, index):
        return jax.vmap(functools.partial(evaluate, policy), in_axes=(0, 0, None))(params, keys, index)

    jitted = jax.jit(evaluate_seeds if vmap_seeds else evaluate, static_argnums=0,
                     compiler_options=env_core.compiler_options(env))
    signatures = set()

    seen = set()

    def call(policy, params, key, index=0):
        index = jnp.asarray(index, jnp.int32)
        signatures.add((policy, compile_cache.signature((params, key, index))))
        call.compiles = len(signatures)
        if log is not None and policy not in seen:
            seen.add(policy)
            samplers = f"; {', '.join(policy.names)}" if isinstance(policy, PolicySwitch) else ""
            progress.compile_program(jitted, (policy, params, key, index),
                                     f"{what} ({num_episodes} episodes{samplers})", log)
        return jitted(policy, params, key, index)

    call.jitted = jitted
    call.compiles = 0                      # programs compiled so far: one per policy and input signature
    call.num_episodes = num_episodes
    return call


def evaluate_policies(evaluate, policies: dict, params, key, names=None) -> dict:
    """{name: evaluate result} for the samplers `names` (default: all) of `policies`, every one
    through the same compiled program (a `PolicySwitch` over all of `policies`: calls with the same
    policy objects reuse it)."""
    switch = PolicySwitch(policies.values(), names=policies)
    order = list(policies)
    return {n: evaluate(switch, params, key, order.index(n)) for n in (names or order)}


def agent_policy(mode, actor, agent, obs, key):
    """Jittable policy of an algorithm's whole state for the evaluator (bind mode and actor with
    partial)."""
    return algorithms.of(agent).act(agent, obs, key, mode=mode, actor=actor)


SELECTION_MODES = ("alone", "select")


def has_selection(algorithm) -> bool:
    """True when `algorithm` (an `Algorithm`) has a chunked critic to select with."""
    return algorithm.target_q is not None


def alone_policy(actor, agent, obs, key):
    """The method's own policy, no critic selection (bind `actor` with partial)."""
    algo = algorithms.of(agent)
    if algo.policy_alone is not None:
        return algo.policy_alone(agent, obs, key, actor)
    return algo.act(agent, obs, key, mode="ode", actor=actor)


def select_policy(n: int, aggregation: str, actor, agent, obs, key):
    """Best of `n` candidates per observation by the target-critic heads combined with
    `aggregation` ('mean' | 'min'); candidates are `Algorithm.candidates` (default: the policy
    alone, one key each). Bind `n`, `aggregation` and `actor` with partial."""
    algo = algorithms.of(agent)
    if not has_selection(algo):
        raise ValueError(f"algorithm {algo.name!r} has no chunked critic to select with")
    batch = obs.shape[0]
    obs_rep = jnp.repeat(obs, n, axis=0)
    sample = algo.candidates or (lambda a, o, k, act_with: alone_policy(act_with, a, o, k))
    cands = sample(agent, obs_rep, key, actor)                                          # (B*n, H, da)
    q = critic_lib.aggregate(algo.target_q(agent, obs_rep, cands), aggregation).reshape(batch, n)
    return critic_lib.select_best(q, cands.reshape(batch, n, *cands.shape[1:]))
