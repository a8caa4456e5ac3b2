"""OGPO's update inside someone else's JAX program: its own task, its own demos, its own loop.

Only the public API is used (README, "Using the update in your own JAX code"): `ogpo.init_actor`,
`ogpo.bc_optimizer`, `ogpo.bc_step`, `ogpo.init`, `ogpo.act`, `ogpo.update`, `OGPOConfig` and the
replay buffer of `ogpo_jax.data.replay`. Nothing from the framework's env wrappers, training loop
or configs.

The task, "two doors": a point starts near the origin and moves by velocity actions (chunks of
H = 4 steps, 2-D, |v| <= 0.1 per step); reaching the right-hand door (0.5, 0.5) within 40 steps
is a success (terminal). The scripted demonstrator heads for either door with equal probability,
so the cloned policy splits between them, and its deterministic samples often stop in between:
it succeeds in ~0.2 of the episodes. OGPO's critic tells the doors apart and the policy moves to
the right one (seed 0 on a 2-core CPU: BC 0.184 -> 0.945 after 51k env steps, 1,588 updates,
38 s wall with two training jobs sharing the CPU).

    python examples/reuse_update.py                    # the run above
    python examples/reuse_update.py --iterations=20    # a smoke run

Prints BC success, then success (ODE evaluation, 256 episodes) every `--eval_every` iterations,
and exits 0 with a final line `improved: True/False`.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from ogpo_jax import OGPOConfig, ogpo
from ogpo_jax.data import replay

H, DA, OBS = 4, 2, 2
MAX_CHUNKS = 10                         # 40 steps
STEP = 0.1
DOOR = jnp.array([0.5, 0.5])
WRONG_DOOR = jnp.array([-0.5, 0.5])
RADIUS = 0.1


# ----------------------------------------------------------------------------- the task (pure JAX)

def reset(key):
    return {"pos": 0.05 * jax.random.normal(key, (2,)), "t": jnp.zeros((), jnp.int32),
            "done": jnp.zeros((), bool)}


def step_chunk(state, chunk):
    """Executes a chunk (H, 2) open loop; steps after the episode ended are frozen and invalid.
    -> (next state, transition row for the replay buffer)."""
    def one(s, a):
        alive = ~s["done"]
        pos = jnp.where(alive, jnp.clip(s["pos"] + STEP * jnp.clip(a, -1, 1), -1, 1), s["pos"])
        success = alive & (jnp.linalg.norm(pos - DOOR) < RADIUS)
        t = s["t"] + alive
        done = s["done"] | success | (t >= MAX_CHUNKS * H)
        reward = jnp.where(alive, jnp.where(success, 0.0, -1.0), 0.0)
        return {"pos": pos, "t": t, "done": done}, (reward, alive, success)

    nxt, (rewards, valid, success) = jax.lax.scan(one, state, chunk)
    succeeded = success.any()
    row = {"obs": state["pos"], "actions": chunk, "rewards": rewards, "valid": valid,
           "next_obs": nxt["pos"], "terminal": succeeded,            # the 40-step limit is not terminal
           "success": succeeded}
    return nxt, row


def rollout_success(act_fn, key, num):
    """Fraction of `num` episodes that reach the door, acting with `act_fn(obs (N, 2), key)`."""
    k0, k1 = jax.random.split(key)
    states = jax.vmap(reset)(jax.random.split(k0, num))

    def body(carry, k):
        states, won = carry
        chunks = act_fn(states["pos"], k)
        states, rows = jax.vmap(step_chunk)(states, chunks)
        return (states, won | rows["success"]), None

    (_, won), _ = jax.lax.scan(body, (states, jnp.zeros((num,), bool)), jax.random.split(k1, MAX_CHUNKS))
    return won.mean()


def demonstrations(key, num):
    """`num` scripted episodes, each heading for one door picked at random, with action noise.
    -> BC data {obs (M, 2), actions (M, H, 2), valid (M, H)} of every chunk taken."""
    k_door, k_reset, k_noise = jax.random.split(key, 3)
    right = jax.random.bernoulli(k_door, 0.5, (num,))
    states = jax.vmap(reset)(jax.random.split(k_reset, num))

    def expert(pos, right, k):
        goal = jnp.where(right, DOOR, WRONG_DOOR)
        # one heading per chunk, planned from its first observation as a chunked policy sees it
        direction = jnp.clip((goal - pos) / (STEP * H), -1, 1)
        return jnp.clip(direction + 0.2 * jax.random.normal(k, (H, 2)), -1, 1)

    def body(states, k):
        chunks = jax.vmap(expert)(states["pos"], right, jax.random.split(k, num))
        alive = ~states["done"]
        states, rows = jax.vmap(step_chunk)(states, chunks)
        return states, (rows, alive)

    _, (rows, alive) = jax.lax.scan(body, states, jax.random.split(k_noise, MAX_CHUNKS))
    keep = alive.reshape(-1)
    flat = {k: rows[k].reshape((-1,) + rows[k].shape[2:])[keep] for k in ("obs", "actions", "valid")}
    return flat


# ----------------------------------------------------------------------------- the program's own loop

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=400, help="online iterations (every env acts one chunk)")
    p.add_argument("--num_envs", type=int, default=32)
    p.add_argument("--updates_per_iteration", type=int, default=4)
    p.add_argument("--bc_steps", type=int, default=6000)
    p.add_argument("--eval_every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    config = OGPOConfig(actor_hidden_dims=(64, 64), critic_hidden_dims=(64, 64), num_critics=4, flow_steps=5,
                        batch_size=128, ppo_batch_size=64, group_size=8, success_batch_size=64,
                        critic_warmup_updates=100, actor_lr=3e-4, actor_lr_warmup=0, actor_lr_floor=1e-4,
                        bc_coeff=0.1, rollout_mode="sde", discount=0.97)
    chunk_shape = (H, DA)
    key = jax.random.PRNGKey(args.seed)
    k_demo, k_actor, k_bc, k_init, k_loop, k_eval = jax.random.split(key, 6)

    # 1. demos and behaviour cloning with the public BC step
    data = demonstrations(k_demo, 256)
    params = ogpo.init_actor(k_actor, OBS, chunk_shape, config)
    opt_state = ogpo.bc_optimizer(config).init(params)

    @jax.jit
    def bc_update(params, opt_state, i, k):
        idx = jax.random.randint(k, (256,), 0, data["obs"].shape[0])
        batch = jax.tree_util.tree_map(lambda x: x[idx], data)
        return ogpo.bc_step(config, chunk_shape, params, opt_state, i, batch, jax.random.fold_in(k, 1))

    t0 = time.time()
    for i in range(args.bc_steps):
        params, opt_state, _ = bc_update(params, opt_state, i, jax.random.fold_in(k_bc, i))

    # one compiled evaluator for every evaluation (same state structure each time)
    success_fn = jax.jit(lambda s, k: rollout_success(lambda o, kk: ogpo.act(s, o, kk, mode="ode"), k, 256))

    def evaluate(state, k):
        return float(success_fn(state, k))

    state = ogpo.init(k_init, OBS, chunk_shape, config, actor_params=params)
    bc_success = evaluate(state, k_eval)
    print(f"BC ({args.bc_steps} steps on {data['obs'].shape[0]} demo chunks, {time.time() - t0:.0f}s): "
          f"success {bc_success:.3f}", flush=True)

    # 2. online finetuning: the program's own envs, buffers and update schedule
    example = replay.transition_spec(OBS, chunk_shape)
    buffers = (replay.init_buffer(example, 50_000), replay.init_buffer(example, 20_000))
    envs = jax.vmap(reset)(jax.random.split(k_loop, args.num_envs))

    @jax.jit
    def iteration(state, envs, buffers, k):
        k_act, k_reset, k_upd = jax.random.split(k, 3)
        buf, succ_buf = buffers
        chunks = ogpo.act(state, envs["pos"], k_act)                 # config.rollout_mode ('sde')
        alive = ~envs["done"]
        nxt, rows = jax.vmap(step_chunk)(envs, chunks)
        buf = replay.insert(buf, rows, mask=alive)
        # the chunks that reached the door are the demonstrations OGPO+ regularizes towards
        succ_buf = replay.insert(succ_buf, rows, mask=alive & rows["success"])
        fresh = jax.vmap(reset)(jax.random.split(k_reset, args.num_envs))
        nxt = jax.tree_util.tree_map(lambda a, b: jnp.where(
            jnp.reshape(nxt["done"], (-1,) + (1,) * (a.ndim - 1)), b, a), nxt, fresh)

        def one(state, kk):
            k_b, k_s = jax.random.split(kk)
            batch = replay.sample(buf, k_b, config.batch_size)
            success_batch = replay.sample_success(succ_buf, batch, k_s, config.success_batch_size)
            return ogpo.update(state, batch, success_batch)

        state, metrics = jax.lax.scan(one, state, jax.random.split(k_upd, args.updates_per_iteration))
        ready = buf.size >= config.batch_size
        return state, nxt, (buf, succ_buf), jax.tree_util.tree_map(lambda m: m.mean(), metrics), ready

    before = state
    t0 = time.time()
    for it in range(1, args.iterations + 1):
        candidate, envs, buffers, metrics, ready = iteration(state, envs, buffers, jax.random.fold_in(k_loop, it))
        if bool(ready):                          # no updates until the replay holds one batch
            state = candidate
        if it % args.eval_every == 0 or it == args.iterations:
            succ = evaluate(state, jax.random.fold_in(k_eval, it))
            print(f"iteration {it}: env steps {it * args.num_envs * H}, updates {int(state.step)}, "
                  f"critic loss {float(metrics['critic/loss']):.3f}, success {succ:.3f} "
                  f"({time.time() - t0:.0f}s)", flush=True)
    final = evaluate(state, jax.random.fold_in(k_eval, 10**6))
    print(f"BC {bc_success:.3f} -> finetuned {final:.3f}; improved: {final > evaluate(before, jax.random.fold_in(k_eval, 10**6))}")
    return bc_success, final


if __name__ == "__main__":
    main()
