"""Data-parallel scaling of the training loop: env steps/s and updates/s on 1, 2, 4, (8) devices.

    python benchmarks/scaling.py --cpu_devices=4            # CPU: forced host devices, mechanics only
    python benchmarks/scaling.py --task=can                 # a lent GPU/TPU machine: every device

Two regimes per device count n:
  strong  the same global run (num_envs, batch sizes) split over n devices;
  weak    per-device work fixed (num_envs and batch sizes grow with n).
Each timing runs compiled `loop.make_interval` intervals (act + store + updates) on a mesh of the
first n devices, after a compile-and-warm-up interval, and reports the median. On a CPU with
forced host devices the "devices" share the same cores, so the numbers check the mechanics
(no recompiles, sharded rings, the overhead of the collectives), not real speed-ups. Writes
`benchmarks/results/scaling[_<tag>].json` and `.md`, naming the machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="toy", choices=["toy", "can"])
    p.add_argument("--cpu_devices", type=int, default=0, help="force this many CPU host devices (0 = leave)")
    p.add_argument("--devices", default="", help="comma-separated device counts (default 1,2,4,8 up to all)")
    p.add_argument("--intervals", type=int, default=5, help="timed intervals per setting")
    p.add_argument("--iterations", type=int, default=10, help="iterations per interval")
    p.add_argument("--envs_per_device", type=int, default=0, help="weak scaling: envs per device (default task's / 4)")
    p.add_argument("--regimes", default="strong,weak")
    p.add_argument("--tag", default="")
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None and ARGS.cpu_devices:
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={ARGS.cpu_devices}"
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from update_step import machine, write_results  # noqa: E402

from ogpo_jax import envs  # noqa: E402
from ogpo_jax.algorithms import ogpo  # noqa: E402
from ogpo_jax.training import distributed, loop, spec  # noqa: E402
from ogpo_jax.training.config import check_divisible, validate  # noqa: E402


def task_config(task: str):
    if task == "toy":
        from configs import toy
        c = toy.get_config("quick")
    else:
        from configs import can
        c = can.get_config("quick" if jax.default_backend() == "cpu" else "")
    c.train.start_training = 0
    c.train.replay_capacity = 65_536
    c.train.success_capacity = 16_384
    return c


def measure(c, n: int, intervals: int, iterations: int) -> dict:
    env, _, ep_len = envs.make(c.env.name, **spec.env_kwargs(c))
    algo = validate(c)
    check_divisible(c.train, algo, n)
    chunk_shape = (c.env.chunk_horizon, env.action_size)
    mesh = distributed.make_mesh(n)

    def init():
        agent = ogpo.init(jax.random.PRNGKey(0), env.observation_size, chunk_shape, algo)
        return loop.init_loop(jax.random.PRNGKey(1), env, agent, env.observation_size, c.train, ep_len, num_shards=n)

    shardings = distributed.loop_shardings(mesh, jax.eval_shape(init))
    ls = jax.tree_util.tree_map(lambda x: x.copy(), jax.jit(init, out_shardings=shardings)())
    interval = loop.make_interval(env, c.train, iterations, mesh=mesh, donate=True)
    t0 = time.time()
    ls, m = interval(ls)
    jax.block_until_ready(m)
    compile_s = time.time() - t0
    times, steps, updates = [], [], []
    for _ in range(intervals):
        s0, u0 = int(ls.env_steps), int(ls.agent.step)
        t0 = time.time()
        ls, m = interval(ls)
        jax.block_until_ready((ls.env_steps, m))
        times.append(time.time() - t0)
        steps.append(int(ls.env_steps) - s0)
        updates.append(int(ls.agent.step) - u0)
    dt = float(np.median(times))
    return {
        "devices": n, "num_envs": c.train.num_envs, "batch_size": algo.batch_size, "ppo_batch_size": algo.ppo_batch_size,
        "updates_per_iteration": c.train.updates_per_iteration, "compile_s": compile_s, "interval_s": dt,
        "env_steps_per_s": float(np.median(steps)) / dt, "updates_per_s": float(np.median(updates)) / dt,
        "td_rows_per_s": float(np.median(updates)) * algo.batch_size / dt, "recompiles": interval.compiles - 1,
    }


def main(args):
    available = len(jax.devices())
    counts = [int(x) for x in args.devices.split(",")] if args.devices else [n for n in (1, 2, 4, 8) if n <= available]
    base = task_config(args.task)
    per_dev_envs = args.envs_per_device or max(base.train.num_envs // 4, 1)
    rows = []
    for regime in args.regimes.split(","):
        for n in counts:
            c = task_config(args.task)
            if regime == "weak":
                scale = n
                c.train.num_envs = per_dev_envs * n
                for k in ("batch_size", "ppo_batch_size", "success_batch_size"):
                    c.algo[k] = max(base.algo[k] // 4, 1) * scale
            r = measure(c, n, args.intervals, args.iterations)
            r["regime"] = regime
            rows.append(r)
            print(f"[scaling] {regime:6s} {n} device(s): {r['env_steps_per_s']:9.1f} env steps/s, "
                  f"{r['updates_per_s']:7.2f} updates/s, interval {r['interval_s']:.3f}s, compile {r['compile_s']:.1f}s, "
                  f"recompiles {r['recompiles']}", flush=True)
    mach = machine()
    forced = f" ({args.cpu_devices} forced host devices sharing {os.cpu_count()} cores)" if args.cpu_devices else ""
    cmd = "python benchmarks/scaling.py " + " ".join(sys.argv[1:])
    lines = [f"# Data-parallel scaling ({args.task})", "",
             f"Machine: {mach['backend']} ({mach['device']}, {mach['device_count']} device(s)){forced}, "
             f"{mach['cpu_count']} CPU cores, {mach['processor']}; Python {mach['python']}, jax {mach['jax']}. "
             f"Date {time.strftime('%Y-%m-%d')}.", f"Command: `{cmd}`", "",
             "| regime | devices | num_envs | batch (TD / PPO) | env steps/s | updates/s | TD rows/s | "
             "interval s | compile s | recompiles |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['regime']} | {r['devices']} | {r['num_envs']} | {r['batch_size']} / {r['ppo_batch_size']} | "
                     f"{r['env_steps_per_s']:.1f} | {r['updates_per_s']:.2f} | {r['td_rows_per_s']:.0f} | "
                     f"{r['interval_s']:.3f} | {r['compile_s']:.1f} | {r['recompiles']} |")
    lines += ["", f"Median of {args.intervals} intervals of {args.iterations} iterations (act one chunk in every env, "
              "store, `updates_per_iteration` OGPO updates), after one compile-and-warm-up interval. strong: the same "
              "global run split over the devices; weak: envs and batch sizes per device fixed."]
    if args.cpu_devices:
        lines.append("Forced host devices share the CPU's cores: this table checks the mechanics (sharded rings, "
                     "one compile, collective overhead), not speed-ups.")
    stem = os.path.join(ROOT, "benchmarks", "results", "scaling" + (f"_{args.tag}" if args.tag else ""))
    write_results(stem, {"machine": mach, "command": cmd, "rows": rows}, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(ARGS)
