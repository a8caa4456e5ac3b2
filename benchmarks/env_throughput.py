"""MJX task throughput (Can, Square, two_nuts): control steps/s and physics steps/s by batch size, next to C
MuJoCo and (Can, optionally) robosuite's PickPlaceCan measured in the same run.

    python benchmarks/env_throughput.py                         # Can, batches 1,16,64,256,1024,4096
    python benchmarks/env_throughput.py --task=square --batches=1,16,64,256 --tag=square_cpu
    python benchmarks/env_throughput.py --batches=64,256 --repeats=5 --robosuite_python=/tmp/rs/bin/python
    python benchmarks/env_throughput.py --impls=jax,warp --batches=4,16,64 --tag=can_jax_vs_warp_cpu
    python benchmarks/env_throughput.py --caps=none,8 --batches=16,64,256 --tag=can_contact_cap_cpu

MJX: `jit(vmap(env.step))` on the default backend (compiled with `env.compiler_options`; batches
above `env.max_vmap_batch` run as `lax.map` over vmapped sub-batches, as in training), from reset
states with `benchmark_actions` (0.3 x standard normal, clipped: the arm moves, so the solver
works as in a rollout; zero actions leave it at rest and flatter the simulator), timed after
compilation and blocking on the result; `--impls` picks the MJX backends, one row each per batch
(`warp`: MuJoCo Warp, its contact buffer sized for the largest batch); `--caps` times the JAX
backend at each `max_contact_points` (contact slots kept per condim group). C MuJoCo: the same MJCF stepped with `mujoco.mj_step` in
one thread (`n_substeps` physics steps per control step, the differential-IK controller excluded,
so it is an upper bound for a C-side env). robosuite: `benchmarks/robosuite_can.py` run by the
interpreter `--robosuite_python` names (robosuite needs its own environment, see that script),
one process, the same action distribution; the table then gives MJX's speed as a multiple of it.
Machines like the 2-core CI box change speed from hour to hour, so only ratios measured in one
run compare. Writes `benchmarks/results/env_throughput{_tag}.{json,md}` naming the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import mujoco  # noqa: E402

from update_step import machine, write_results  # noqa: E402

from ogpo_jax.envs.core import batched  # noqa: E402
from ogpo_jax.envs.mjx.arm import HOME_QPOS, ArmParams, ArmTask  # noqa: E402
from ogpo_jax.envs.mjx.can import Can, CanParams  # noqa: E402
from ogpo_jax.envs.mjx.square import Square, SquareParams  # noqa: E402
from ogpo_jax.envs.mjx.two_nuts import TwoNuts, TwoNutsParams  # noqa: E402

TASKS = {"can": (Can, CanParams), "square": (Square, SquareParams), "two_nuts": (TwoNuts, TwoNutsParams)}


def benchmark_actions(key, num: int, batch: int, action_size: int) -> jax.Array:
    """`num` batches of actions (num, batch, action_size): 0.3 x standard normal, clipped to [-1, 1]."""
    return jnp.clip(0.3 * jax.random.normal(key, (num, batch, action_size)), -1.0, 1.0)


def bench_mjx(env: ArmTask, batch: int, repeats: int) -> dict:
    jit = lambda f: jax.jit(f, compiler_options=env.compiler_options)  # noqa: E731
    reset = jit(lambda keys: batched(env.reset, env, keys))
    step = jit(lambda s, a: batched(env.step, env, s, a))
    actions = benchmark_actions(jax.random.PRNGKey(1), repeats + 1, batch, env.action_size)
    t0 = time.perf_counter()
    state = reset(jax.random.split(jax.random.PRNGKey(0), batch))
    jax.block_until_ready(state.obs)
    state = step(state, actions[0])
    jax.block_until_ready(state.obs)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(repeats):
        state = step(state, actions[i + 1])
    jax.block_until_ready(state.obs)
    dt = (time.perf_counter() - t0) / repeats
    n = env.params.n_substeps
    return {"impl": env.params.impl, "max_contact_points": env.params.max_contact_points, "batch": batch, "vmap_batch": min(batch, env.max_vmap_batch or batch), "control_steps_per_s": batch / dt, "physics_steps_per_s": batch * n / dt,
            "ms_per_batch_step": dt * 1e3, "compile_s": compile_s}


def bench_c(env: ArmTask, seconds: float = 3.0) -> dict:
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


def bench_robosuite(python: str, steps: int) -> dict:
    """Run `robosuite_can.py` with another interpreter (robosuite's own environment); its JSON line."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "robosuite_can.py")
    if not os.path.exists(python):
        raise FileNotFoundError(f"--robosuite_python={python!r} does not exist (see benchmarks/robosuite_can.py)")
    proc = subprocess.run([python, script, f"--steps={steps}"], capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"robosuite_can.py with {python} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def to_markdown(result) -> str:
    m = result["machine"]
    p = result["params"]
    lines = [
        f"# {result.get('task', 'can').capitalize()} env throughput ({result['date']})", "",
        f"Machine: {m['device']} ({m['backend']}), {m['cpu_count']} CPU cores, {m['processor']}, "
        f"Python {m['python']}, jax {m['jax']}, mujoco {result['mujoco']}.",
        f"Physics: timestep {p['timestep']} s x {p['n_substeps']} substeps = {p['control_dt']} s control step (20 Hz)"
        + (f"; Newton solver {p['solver_iterations']} iterations, {p['ls_iterations']} line-search iterations, "
           f"tolerance {p['solver_tolerance']:g}." if "ls_iterations" in p else "."),
        f"Command: `{result['command']}`", "",
        "| simulator | batch (vmapped sub-batch) | control steps/s | physics steps/s | ms per batched step | compile s |",
        "|---|---|---|---|---|---|",
    ]
    rs = result.get("robosuite")
    if rs:
        lines[-2] = lines[-2].rstrip("|") + "| x robosuite |"
        lines[-1] += "---|"
    tail = " |" if rs else ""
    c = result["c_mujoco"]
    lines.append(f"| C MuJoCo mj_step, 1 thread | 1 | {c['control_steps_per_s']:.0f} | {c['physics_steps_per_s']:.0f} | - | -"
                 + (f" | {c['control_steps_per_s'] / rs['control_steps_per_s']:.1f} |" if rs else " |"))
    if rs:
        lines.append(f"| robosuite {rs['robosuite']} PickPlaceCan (mujoco {rs['mujoco']}, {rs['substeps']} substeps), "
                     f"1 process | 1 | {rs['control_steps_per_s']:.0f} | {rs['physics_steps_per_s']:.0f} | - | - | 1.0 |")
    for r in result["mjx"]:
        cap = r.get("max_contact_points", -1)
        name = f"MJX ({r.get('impl', 'jax')}" + ("" if r.get("impl", "jax") != "jax" else
                                                   f", max_contact_points {cap}" if cap != -1 else ", no contact cap") + ")"
        if "error" in r:
            lines.append(f"| {name} | {r['batch']} | {r['error']} | | | |" + tail)
        else:
            sub = f" ({r['vmap_batch']})" if r.get("vmap_batch", r["batch"]) != r["batch"] else ""
            ratio = f" {r['control_steps_per_s'] / rs['control_steps_per_s']:.1f} |" if rs else ""
            lines.append(f"| {name} | {r['batch']}{sub} | {r['control_steps_per_s']:.0f} | {r['physics_steps_per_s']:.0f} | "
                         f"{r['ms_per_batch_step']:.1f} | {r['compile_s']:.0f} |" + ratio)
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="can", choices=sorted(TASKS))
    parser.add_argument("--batches", default="1,16,64,256,1024,4096")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--impls", default="jax", help="MJX backends to time, comma-separated: jax, warp")
    parser.add_argument("--caps", default="default", help="max_contact_points values to time on the JAX backend, "
                        "comma-separated: 'default' (the task's), 'none' (no cap) or an integer >= 1")
    parser.add_argument("--n_substeps", type=int, default=ArmParams.n_substeps)
    parser.add_argument("--timestep", type=float, default=ArmParams.timestep)
    parser.add_argument("--ls_iterations", type=int, default=ArmParams.ls_iterations)
    parser.add_argument("--solver_tolerance", type=float, default=ArmParams.solver_tolerance)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--tag", default="")
    parser.add_argument("--robosuite_python", default="",
                        help="interpreter of an environment with robosuite: adds its PickPlaceCan row and ratios")
    parser.add_argument("--robosuite_steps", type=int, default=800)
    args = parser.parse_args(argv)
    if args.robosuite_python and args.task != "can":
        parser.error("--robosuite_python: the robosuite comparison exists for --task=can only")
    cls, params = TASKS[args.task]
    batches = [int(x) for x in args.batches.split(",")]
    impls = [x for x in args.impls.split(",") if x]
    from ogpo_jax.envs.mjx.arm import check_impl
    for impl in impls:
        try:
            check_impl(impl)
        except (ValueError, ImportError) as e:
            parser.error(f"--impls: {e}")

    from ogpo_jax.envs.mjx.arm import contact_cap_kwargs
    try:
        caps = [contact_cap_kwargs(x, "--caps") for x in args.caps.split(",") if x.strip()]
    except ValueError as e:
        parser.error(str(e))
    if not caps:
        parser.error(f"--caps={args.caps!r}: name at least one cap")

    def make(impl, cap=None):
        return cls(params(timestep=args.timestep, n_substeps=args.n_substeps, ls_iterations=args.ls_iterations,
                          solver_tolerance=args.solver_tolerance, impl=impl, warp_max_worlds=max(batches),
                          **(cap or {})))

    env = make("jax")
    result = {"benchmark": "env_throughput", "task": args.task, "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "mujoco": mujoco.__version__, "command": "python " + " ".join(sys.argv),
              "params": {"timestep": args.timestep, "n_substeps": args.n_substeps,
                         "control_dt": env.params.control_dt, "solver_iterations": env.params.solver_iterations,
                         "ls_iterations": args.ls_iterations, "solver_tolerance": args.solver_tolerance},
              "c_mujoco": bench_c(env), "mjx": []}
    if args.robosuite_python:
        # first, before the MJX compiles heat the machine, and again at the end (the mean of the two)
        runs = [bench_robosuite(args.robosuite_python, args.robosuite_steps)]
        print(runs[0], flush=True)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "env_throughput" + (f"_{args.tag}" if args.tag else ""))
    for impl, cap in [(i, c) for i in impls for c in (caps if i == "jax" else [{}])]:
        env = make(impl, cap)
        for b in batches:
            try:
                result["mjx"].append(bench_mjx(env, b, args.repeats))
            except Exception as e:      # e.g. out of memory at large batch: record and go on
                result["mjx"].append({"impl": impl, "batch": b, "error": f"{type(e).__name__}: {str(e)[:80]}"})
            print(result["mjx"][-1], flush=True)
            # rewritten after every batch size: a run stopped at a large batch keeps its table
            write_results(stem, result, to_markdown(result))
    if args.robosuite_python:
        runs.append(bench_robosuite(args.robosuite_python, args.robosuite_steps))
        rates = [r["control_steps_per_s"] for r in runs]
        result["robosuite"] = dict(runs[-1], control_steps_per_s=float(sum(rates) / len(rates)),
                                   physics_steps_per_s=float(sum(r["physics_steps_per_s"] for r in runs) / len(runs)),
                                   runs=rates)
        write_results(stem, result, to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
