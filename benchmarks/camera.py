"""Depth images per second of the ray-cast camera (`ogpo_jax.envs.mjx.camera`) by resolution and
batch, next to the control steps per second of the same scene at the same batch, so the share a
once-per-chunk camera adds to stepping can be read off.

    python benchmarks/camera.py                                   # Can, 16x16 / 32x32 / 64x64, batch 16 and 64
    python benchmarks/camera.py --sizes=32,96 --batches=64 --tag=can_96

`jit(vmap(render))` over `batch` reset states of the task (compile excluded, median of
`--repeats` calls, blocking on the result). Writes `benchmarks/results/camera{_tag}.{json,md}`
naming the machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from env_throughput import benchmark_actions  # noqa: E402
from update_step import machine, write_results  # noqa: E402

from ogpo_jax import envs  # noqa: E402
from ogpo_jax.envs.core import batched  # noqa: E402
from ogpo_jax.envs.mjx import camera  # noqa: E402


def median_seconds(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))            # compile and warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def to_markdown(res) -> str:
    m = res["machine"]
    lines = [f"# Ray-cast depth camera, {res['task']} ({res['date']})", "",
             f"Machine: {m['device']} ({m['backend']}), {m['cpu_count']} CPU cores, Python {m['python']}, "
             f"jax {m['jax']}. Camera `{res['camera']}`; one ray per pixel through `mjx.ray`.",
             f"Command: `{res['command']}`", "",
             "| batch | image | depth images/s | rays/s | ms per batch of images | env control steps/s (same batch) |",
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['batch']} | {r['size']}x{r['size']} | {r['images_per_s']:,.0f} | {r['rays_per_s']:,.0f} | "
                     f"{r['ms_per_batch']:.1f} | {r['control_steps_per_s']:,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="can", choices=("can", "square", "two_nuts"))
    parser.add_argument("--camera", default="front")
    parser.add_argument("--sizes", default="16,32,64", help="square image sizes, comma-separated")
    parser.add_argument("--batches", default="16,64")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)
    try:
        sizes = [int(x) for x in args.sizes.split(",") if x]
        batches = [int(x) for x in args.batches.split(",") if x]
    except ValueError:
        parser.error(f"--sizes={args.sizes!r} and --batches={args.batches!r} must be comma-separated integers")
    if not sizes or not batches or min(sizes + batches) < 1 or args.repeats < 1:
        parser.error("--sizes, --batches and --repeats must be >= 1")
    env = envs.make(args.task)[0].unwrapped
    jit = lambda f: jax.jit(f, compiler_options=env.compiler_options)  # noqa: E731
    res = {"benchmark": "camera", "task": args.task, "camera": args.camera, "machine": machine(),
           "date": time.strftime("%Y-%m-%d"), "command": "python " + " ".join(sys.argv), "rows": []}
    stem = os.path.join(args.out, "camera" + (f"_{args.tag}" if args.tag else ""))
    for batch in batches:
        state = jit(lambda k: batched(env.reset, env, k))(jax.random.split(jax.random.PRNGKey(0), batch))
        actions = benchmark_actions(jax.random.PRNGKey(1), 1, batch, env.action_size)[0]   # a moving arm
        step_s = median_seconds(jit(lambda s, a: batched(env.step, env, s, a)), (state, actions), args.repeats)
        for size in sizes:
            render = camera.depth_renderer(env.mj_model, env.mjx_model,
                                           camera.DepthCamera(args.camera, width=size, height=size))
            dt = median_seconds(jit(jax.vmap(render)), (state.sim,), args.repeats)
            row = {"batch": batch, "size": size, "images_per_s": batch / dt, "rays_per_s": batch * size * size / dt,
                   "ms_per_batch": dt * 1e3, "control_steps_per_s": batch / step_s}
            res["rows"].append(row)
            print(row, flush=True)
            write_results(stem, res, to_markdown(res))     # a run stopped early keeps its rows
    print(to_markdown(res))


if __name__ == "__main__":
    main()
