"""Can task throughput: MJX control steps/s and physics steps/s by batch size, next to C MuJoCo.

    python benchmarks/env_throughput.py                         # batches 1,16,64,256,1024,4096
    python benchmarks/env_throughput.py --batches=1,64,256 --repeats=5

MJX: `jit(vmap(Can.step))` on the default backend (compiled with `Can.compiler_options`; batches
above `Can.max_vmap_batch` run as `lax.map` over vmapped sub-batches, as in training), zero
actions from reset states, timed after compilation and blocking on the result. C MuJoCo: the same
MJCF stepped with `mujoco.mj_step` in one thread (`n_substeps` physics steps per control step,
the differential-IK controller excluded, so it is an upper bound for a C-side env). Writes
`benchmarks/results/env_throughput{_tag}.{json,md}` naming the machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import mujoco  # noqa: E402

from update_step import machine, write_results  # noqa: E402

from ogpo_jax.envs.core import batched  # noqa: E402
from ogpo_jax.envs.mjx.can import HOME_QPOS, Can, CanParams  # noqa: E402


def bench_mjx(env: Can, batch: int, repeats: int) -> dict:
    jit = lambda f: jax.jit(f, compiler_options=env.compiler_options)  # noqa: E731
    reset = jit(lambda keys: batched(env.reset, env, keys))
    step = jit(lambda s, a: batched(env.step, env, s, a))
    t0 = time.perf_counter()
    state = reset(jax.random.split(jax.random.PRNGKey(0), batch))
    jax.block_until_ready(state.obs)
    action = jnp.zeros((batch, env.action_size), jnp.float32)
    state = step(state, action)
    jax.block_until_ready(state.obs)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(repeats):
        state = step(state, action)
    jax.block_until_ready(state.obs)
    dt = (time.perf_counter() - t0) / repeats
    n = env.params.n_substeps
    return {"batch": batch, "vmap_batch": min(batch, env.max_vmap_batch or batch), "control_steps_per_s": batch / dt, "physics_steps_per_s": batch * n / dt,
            "ms_per_batch_step": dt * 1e3, "compile_s": compile_s}


def bench_c(env: Can, seconds: float = 3.0) -> dict:
    m = env.mj_model
    d = mujoco.MjData(m)
    d.qpos[:7] = HOME_QPOS
    d.ctrl[:7] = HOME_QPOS
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        mujoco.mj_step(m, d, nstep=env.params.n_substeps)
        steps += 1
    dt = (time.perf_counter() - t0) / steps
    return {"control_steps_per_s": 1 / dt, "physics_steps_per_s": env.params.n_substeps / dt}


def to_markdown(result) -> str:
    m = result["machine"]
    p = result["params"]
    lines = [
        f"# Can env throughput ({result['date']})", "",
        f"Machine: {m['device']} ({m['backend']}), {m['cpu_count']} CPU cores, {m['processor']}, "
        f"Python {m['python']}, jax {m['jax']}, mujoco {result['mujoco']}.",
        f"Physics: timestep {p['timestep']} s x {p['n_substeps']} substeps = {p['control_dt']} s control step (20 Hz).",
        f"Command: `{result['command']}`", "",
        "| simulator | batch (vmapped sub-batch) | control steps/s | physics steps/s | ms per batched step | compile s |",
        "|---|---|---|---|---|---|",
    ]
    c = result["c_mujoco"]
    lines.append(f"| C MuJoCo mj_step, 1 thread | 1 | {c['control_steps_per_s']:.0f} | {c['physics_steps_per_s']:.0f} | - | - |")
    for r in result["mjx"]:
        if "error" in r:
            lines.append(f"| MJX | {r['batch']} | {r['error']} | | | |")
        else:
            sub = f" ({r['vmap_batch']})" if r.get("vmap_batch", r["batch"]) != r["batch"] else ""
            lines.append(f"| MJX | {r['batch']}{sub} | {r['control_steps_per_s']:.0f} | {r['physics_steps_per_s']:.0f} | "
                         f"{r['ms_per_batch_step']:.1f} | {r['compile_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,16,64,256,1024,4096")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n_substeps", type=int, default=CanParams.n_substeps)
    parser.add_argument("--timestep", type=float, default=CanParams.timestep)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)
    env = Can(CanParams(timestep=args.timestep, n_substeps=args.n_substeps))
    result = {"benchmark": "env_throughput", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "mujoco": mujoco.__version__, "command": "python " + " ".join(sys.argv),
              "params": {"timestep": args.timestep, "n_substeps": args.n_substeps,
                         "control_dt": env.params.control_dt},
              "c_mujoco": bench_c(env), "mjx": []}
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "env_throughput" + (f"_{args.tag}" if args.tag else ""))
    for b in [int(x) for x in args.batches.split(",")]:
        try:
            result["mjx"].append(bench_mjx(env, b, args.repeats))
        except Exception as e:      # e.g. out of memory at large batch: record and go on
            result["mjx"].append({"batch": b, "error": f"{type(e).__name__}: {str(e)[:80]}"})
        print(result["mjx"][-1], flush=True)
        # rewritten after every batch size: a run stopped at a large batch keeps its table
        write_results(stem, result, to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
