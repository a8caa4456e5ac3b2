"""Host-simulated environments (`ogpo_jax.envs.host`, the robosuite backend): env steps/s through
the jitted io_callback path by worker count, per worker, and what the process boundary costs.

    python benchmarks/host_env.py --python=$HOME/rs/bin/python --task=can --workers=1,2 --envs=8
    python benchmarks/host_env.py --env=host_point --workers=1,2 --envs=8      # numpy task, no robosuite

Each row: `envs` environments over `workers` processes, one jitted `lax.scan` of `--chunks`
chunk steps (H = `--horizon`, actions 0.3 x standard normal, clipped; auto-reset on) calling the
pool through `io_callback`, timed after a warm-up call. `sim s` is the slowest worker's own
simulation time per chunk step (robosuite's `env.step`s and resets), `overhead` the rest of the
wall time per chunk step (pipes, (de)serialisation, the callback, JAX): the boundary's cost.
Writes `benchmarks/results/host_env{_tag}.{json,md}` naming the machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from update_step import machine, write_results  # noqa: E402

from ogpo_jax import envs  # noqa: E402
from ogpo_jax.envs import host  # noqa: E402


def bench(env_name, kwargs, workers, num_envs, horizon, chunks):
    env, _, _ = envs.make(env_name, num_workers=workers, **kwargs)
    batch = env.batched(num_envs, horizon, auto_reset=True)
    da = env.action_size
    sims = []

    def run(state, key):
        def body(s, k):
            a = jnp.clip(0.3 * jax.random.normal(k, (num_envs, horizon, da)), -1, 1)
            nxt = batch.step(s, a)
            return nxt, nxt.info["valid"].sum()
        return jax.lax.scan(body, state, jax.random.split(key, chunks))

    run = jax.jit(run)
    state = jax.jit(batch.reset)(jax.random.PRNGKey(0))
    pool = env.pool(num_envs, True)
    state, _ = run(state, jax.random.PRNGKey(1))          # compile + warm-up
    jax.block_until_ready(state)
    orig = pool.step

    def timed(chunks_np):
        out = orig(chunks_np)
        sims.append(max(pool.last_sim_s))
        return out

    pool.step = timed
    t0 = time.perf_counter()
    state, steps = run(state, jax.random.PRNGKey(2))
    steps = int(jax.block_until_ready(steps).sum())
    wall = time.perf_counter() - t0
    pool.step = orig
    per_chunk = wall / chunks
    sim = float(np.mean(sims))
    return {"env": env_name, "workers": workers, "envs": num_envs, "horizon": horizon, "chunks": chunks,
            "env_steps": steps, "wall_s": wall, "env_steps_per_s": steps / wall,
            "env_steps_per_s_per_worker": steps / wall / workers, "chunk_step_ms": 1e3 * per_chunk,
            "sim_ms": 1e3 * sim, "overhead_ms": 1e3 * (per_chunk - sim),
            "overhead_frac": (per_chunk - sim) / per_chunk}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="robosuite", choices=["robosuite", "host_point"])
    p.add_argument("--task", default="can")
    p.add_argument("--python", default="", help="interpreter with robosuite (robosuite only)")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--envs", type=int, default=8)
    p.add_argument("--horizon", type=int, default=4)
    p.add_argument("--chunks", type=int, default=50)
    p.add_argument("--tag", default="")
    a = p.parse_args()
    kwargs = {"task": a.task, "python": a.python} if a.env == "robosuite" else {}
    rows = []
    for w in [int(x) for x in a.workers.split(",")]:
        r = bench(a.env, kwargs, w, a.envs, a.horizon, a.chunks)
        print(f"[host_env] {r['env']} {a.task if a.env == 'robosuite' else ''} workers {w}, envs {a.envs}: "
              f"{r['env_steps_per_s']:.1f} env steps/s ({r['env_steps_per_s_per_worker']:.1f} per worker), "
              f"chunk step {r['chunk_step_ms']:.1f} ms = sim {r['sim_ms']:.1f} + boundary {r['overhead_ms']:.2f} ms", flush=True)
        rows.append(r)
    host._close_pools()
    m = machine()
    md = [f"# Host-simulated env throughput ({a.env}{' ' + a.task if a.env == 'robosuite' else ''})", "",
          f"Machine: {m['processor']}, {m['cpu_count']} CPUs, Python {m['python']}, jax {m['jax']}; "
          f"{a.envs} envs, H = {a.horizon}, {a.chunks} chunk steps per row "
          "(`python benchmarks/host_env.py " + " ".join(sys.argv[1:]) + "`).", "",
          "| workers | env steps/s | per worker | ms per chunk step | of which simulation | boundary | boundary share |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['workers']} | {r['env_steps_per_s']:.1f} | {r['env_steps_per_s_per_worker']:.1f} | "
                  f"{r['chunk_step_ms']:.1f} | {r['sim_ms']:.1f} | {r['overhead_ms']:.2f} | {100 * r['overhead_frac']:.1f}% |")
    stem = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "host_env" + (f"_{a.tag}" if a.tag else ""))
    write_results(stem, {"machine": m, "args": vars(a), "rows": rows}, "\n".join(md) + "\n")
    print(f"[host_env] wrote {stem}.json / .md")


if __name__ == "__main__":
    main()
