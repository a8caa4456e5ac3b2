"""Milliseconds per OGPO actor update and per critic update, at paper scale and at toy scale.

    python benchmarks/update_step.py                      # both scales, writes benchmarks/results/
    python benchmarks/update_step.py --scales=toy --repeats=50

Each step is jitted on its own (`ogpo.actor_step`, `ogpo.critic_step`) and also as the fused
`ogpo.update` (actor + critic + Polyak, what the training loop runs). Timings exclude compilation
(reported separately) and block on the result. Writes `benchmarks/results/update_step.json` and
`benchmarks/results/update_step.md`, both naming the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from ogpo_jax.algorithms import ogpo
from ogpo_jax.algorithms.config import OGPOConfig

# Paper scale: the paper's defaults (4x512 actor and critics, 10 heads, 256 states x 32 chains, K=10),
# with robomimic Can's shapes (low-dim obs 23, 7-D action, H=4). Toy scale: configs/toy.py.
SCALES = {
    "paper": dict(obs_dim=23, chunk_shape=(4, 7), config=OGPOConfig()),
    "toy": dict(obs_dim=3, chunk_shape=(4, 2), config=OGPOConfig(
        actor_hidden_dims=(128, 128, 128), critic_hidden_dims=(128, 128), num_critics=10,
        batch_size=32, ppo_batch_size=32, group_size=16, success_batch_size=32)),
}


def machine() -> dict:
    dev = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
    }


def write_results(stem: str, result: dict, markdown: str) -> None:
    """`stem.json` (the full result) and `stem.md` (its table); shared by the benchmark scripts."""
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(stem + ".md", "w") as f:
        f.write(markdown)


def fake_batch(key, n, obs_dim, chunk_shape):
    k = jax.random.split(key, 4)
    h, da = chunk_shape
    return {
        "obs": jax.random.normal(k[0], (n, obs_dim)),
        "actions": jax.random.uniform(k[1], (n, h, da), minval=-1, maxval=1),
        "rewards": -jnp.ones((n, h)),
        "valid": jnp.ones((n, h), bool),
        "next_obs": jax.random.normal(k[2], (n, obs_dim)),
        "terminal": jax.random.bernoulli(k[3], 0.05, (n,)),
    }


def time_fn(fn, args, repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(fn(*args))                       # one warm call before timing
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    times = np.asarray(times) * 1e3
    return {"ms_median": float(np.median(times)), "ms_p10": float(np.percentile(times, 10)),
            "ms_p90": float(np.percentile(times, 90)), "compile_s": compile_s, "repeats": repeats}


def bench_scale(name, obs_dim, chunk_shape, config, repeats):
    key = jax.random.PRNGKey(0)
    state = ogpo.init(key, obs_dim, chunk_shape, config)
    # past the critic-only warm-up, so the fused update times the actor step it runs from then on
    state = state.replace(step=jnp.asarray(config.critic_warmup_updates, state.step.dtype))
    batch = fake_batch(jax.random.PRNGKey(1), config.batch_size, obs_dim, chunk_shape)
    success = fake_batch(jax.random.PRNGKey(2), config.success_batch_size, obs_dim, chunk_shape)
    k = jax.random.PRNGKey(3)
    actor = jax.jit(lambda s, b, sb, k: ogpo.actor_step(s, b, sb, k)[0].actor)
    critic = jax.jit(lambda s, b, k: ogpo.critic_step(s, b, k)[0].critic)
    update = jax.jit(lambda s, b, sb: ogpo.update(s, b, sb)[0])
    row = {
        "scale": name,
        "actor_hidden": list(config.actor_hidden_dims),
        "critic_hidden": list(config.critic_hidden_dims),
        "num_critics": config.num_critics,
        "flow_steps": config.flow_steps,
        "states": config.ppo_batch_size,
        "chains_per_state": config.group_size,
        "critic_batch": config.batch_size,
        "chunk_shape": list(chunk_shape),
        "actor": time_fn(actor, (state, batch, success, k), repeats),
        "critic": time_fn(critic, (state, batch, k), repeats),
        "update": time_fn(update, (state, batch, success), repeats),
    }
    return row


def to_markdown(result) -> str:
    m = result["machine"]
    lines = [
        "# OGPO update step timings",
        "",
        f"Machine: {m['device']} ({m['backend']}, {m['device_count']} device(s)), {m['cpu_count']} CPU cores, "
        f"{m['processor']}; Python {m['python']}, jax {m['jax']}. Date {result['date']}.",
        f"Command: `{result['command']}`",
        "",
        "| scale | actor MLP | critics | K | states x chains | actor ms | critic ms | update ms (fused) | compile s (update) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['scale']} | {len(r['actor_hidden'])}x{r['actor_hidden'][0]} | "
            f"{r['num_critics']} x {len(r['critic_hidden'])}x{r['critic_hidden'][0]} | {r['flow_steps']} | "
            f"{r['states']} x {r['chains_per_state']} | {r['actor']['ms_median']:.1f} | "
            f"{r['critic']['ms_median']:.1f} | {r['update']['ms_median']:.1f} | {r['update']['compile_s']:.1f} |")
    lines += ["", "Median over the repeats, after compilation and one warm call; `update` is actor + critic + "
              "Polyak in one jit (what the training loop runs)."]
    return "\n".join(lines) + "\n"


def parse_scale_args(argv, description: str, scales, default: str):
    """The update benchmarks' shared flags (--scales, --repeats, --out, --tag), checked.
    -> (args, the chosen scale names)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--scales", default=default, help="comma-separated subset of: " + ",".join(scales))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--tag", default="", help="suffix for the output file names (e.g. 'h100')")
    args = parser.parse_args(argv)
    names = [s for s in args.scales.split(",") if s]
    unknown = [s for s in names if s not in scales]
    if unknown:
        parser.error(f"--scales: unknown {unknown}; known {list(scales)}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    return args, names


def main(argv=None):
    args, names = parse_scale_args(argv, __doc__.splitlines()[0], SCALES, "paper,toy")
    rows = []
    for name in names:
        print(f"[update_step] {name} ...", flush=True)
        rows.append(bench_scale(name, repeats=args.repeats, **SCALES[name]))
        r = rows[-1]
        print(f"  actor {r['actor']['ms_median']:.1f} ms  critic {r['critic']['ms_median']:.1f} ms  "
              f"update {r['update']['ms_median']:.1f} ms", flush=True)
    result = {"benchmark": "update_step", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "command": "python benchmarks/update_step.py " + " ".join(argv if argv is not None else
                                                                      __import__("sys").argv[1:]),
              "rows": rows}
    write_results(os.path.join(args.out, "update_step" + (f"_{args.tag}" if args.tag else "")),
                  result, to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
