"""Depth images per second of the ray-cast camera (`ogpo_jax.envs.mjx.camera`) by resolution and
batch, next to the control steps per second of the same scene at the same batch, so the share a
once-per-chunk camera adds to stepping can be read off.

    python benchmarks/camera.py                                   # Can, 16x16 / 32x32 / 64x64, batch 16 and 64
    python benchmarks/camera.py --sizes=32,96 --batches=64 --tag=can_96
    python benchmarks/camera.py --training --tag=can_pixels_training   # configs/can_pixels.py:quick's chunk step

`--training`: the training env's chunk step of `configs/can_pixels.py:quick` (its envs, its chunk,
auto-reset, the conv encoder's features), jitted, against the same step with the state
observation: the difference is what rendering and encoding add per training iteration (an
auto-resetting step renders twice per chunk: the chunk's last state and the next episode's first).

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
    parser.add_argument("--training", action="store_true",
                        help="time configs/can_pixels.py:quick's training chunk step, camera against state")
    args = parser.parse_args(argv)
    if args.training:
        return training_step(args)
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


def training_step(args):
    """The chunk step finetuning runs (see the module docstring), state against camera observation."""
    import jax.numpy as jnp
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from configs import can_pixels
    from ogpo_jax import encoders
    from ogpo_jax.envs import core, pixels
    from ogpo_jax.training import spec as spec_lib
    config = can_pixels.get_config("quick")
    n, h = config.train.num_envs, config.env.chunk_horizon
    res = {"benchmark": "camera_training_step", "config": "configs/can_pixels.py:quick", "machine": machine(),
           "date": time.strftime("%Y-%m-%d"), "command": "python " + " ".join(sys.argv), "num_envs": n,
           "chunk_horizon": h, "rows": []}
    for obs in ("state", config.env.kwargs.obs):
        kwargs = spec_lib.env_kwargs(config)
        if obs == "state":
            kwargs = {k: v for k, v in kwargs.items() if k not in ("obs",) + pixels.CAMERA_KWARGS}
        env = envs.make(config.env.name, **kwargs)[0]
        encoder = encoders.for_env(config.bc, env)
        if encoder is not None:
            env = pixels.EncodedObservation(env, encoder, encoder.init(jax.random.PRNGKey(0)))
        benv = core.batch_env(env, n, h)
        jit = lambda f: jax.jit(f, compiler_options=core.compiler_options(env))  # noqa: E731
        state = jit(benv.reset)(jax.random.PRNGKey(0))
        chunk = 0.3 * jax.random.uniform(jax.random.PRNGKey(1), (n, h, env.action_size), minval=-1, maxval=1)
        dt = median_seconds(jit(benv.step), (state, chunk), args.repeats)
        row = {"observation": obs, "obs_dim": int(env.observation_size), "ms_per_chunk_step": dt * 1e3,
               "control_steps_per_s": n * h / dt}
        if encoder is not None:
            row["image"] = list(encoder.image_shape)
        res["rows"].append(row)
        print(row, flush=True)
    base, cam = res["rows"][0]["ms_per_chunk_step"], res["rows"][1]["ms_per_chunk_step"]
    res["camera_ms_per_chunk_step"] = cam - base
    lines = [f"# Camera cost in a training chunk step, {res['config']} ({res['date']})", "",
             f"Machine: {res['machine']['device']} ({res['machine']['backend']}), {res['machine']['cpu_count']} CPU cores, "
             f"jax {res['machine']['jax']}. {n} envs x {h} control steps per chunk, auto-reset, jitted; median of "
             f"{args.repeats}.", f"Command: `{res['command']}`", "",
             "| observation | obs dims (policy) | ms per chunk step | control steps/s |", "|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['observation']} | {r['obs_dim']} | {r['ms_per_chunk_step']:.1f} | "
                     f"{r['control_steps_per_s']:,.0f} |")
    lines += ["", f"The camera (two renders per env per chunk and the encoder) adds {cam - base:.1f} ms per chunk "
              f"step ({(cam - base) / base:.0%} of the state step)."]
    stem = os.path.join(args.out, "camera" + (f"_{args.tag}" if args.tag else "_training"))
    write_results(stem, res, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
