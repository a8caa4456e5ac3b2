"""Milliseconds per OGPO update with the cheaper PPO steps: top-k chains and truncated backprop.

    python benchmarks/cheaper_updates.py                         # Can :quick and GPU presets
    python benchmarks/cheaper_updates.py --scales=can_quick --repeats=30 --tag=cpu

For each scale (the Can presets' networks and batch shapes, from `configs/can.py`) and each
variant (`algo.ppo_top_k`, `algo.ft_flow_steps`, both, `algo.critic_updates_per_update`), the
actor step alone and the fused update (actor + critic + Polyak, what the loop runs), timed as in
`benchmarks/update_step.py`. Writes `benchmarks/results/cheaper_updates[_tag].{json,md}`.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks.update_step import fake_batch, machine, parse_scale_args, time_fn, write_results  # noqa: E402
from ogpo_jax.algorithms import ogpo  # noqa: E402

OBS_DIM, CHUNK = 23, (4, 7)        # Can's observation and chunk


def scale_config(preset: str):
    from configs import can
    from ogpo_jax.training.config import validate
    return validate(can.get_config(preset))


SCALES = {"can_quick": "quick", "can_gpu": ""}


def variants(cfg) -> dict:
    g, k = cfg.group_size, cfg.flow_steps
    return {
        "base": {},
        f"top_k={g // 2}": {"ppo_top_k": g // 2},
        f"top_k={g // 4}": {"ppo_top_k": max(g // 4, 1)},
        f"ft_flow_steps=1 of {k}": {"ft_flow_steps": 1},
        f"top_k={g // 2} + ft_flow_steps=1": {"ppo_top_k": g // 2, "ft_flow_steps": 1},
        "critic_updates_per_update=4": {"critic_updates_per_update": 4},
    }


def bench(cfg, repeats: int) -> dict:
    state = ogpo.init(jax.random.PRNGKey(0), OBS_DIM, CHUNK, cfg)
    state = state.replace(step=jnp.asarray(cfg.critic_warmup_updates, state.step.dtype))
    per = cfg.critic_updates_per_update
    batch = fake_batch(jax.random.PRNGKey(1), cfg.batch_size * per, OBS_DIM, CHUNK)
    success = fake_batch(jax.random.PRNGKey(2), cfg.success_batch_size * per, OBS_DIM, CHUNK)
    k = jax.random.PRNGKey(3)
    actor = jax.jit(lambda s, b, sb, k: ogpo.actor_step(s, b, sb, k)[0].actor)
    update = jax.jit(lambda s, b, sb: ogpo.update(s, b, sb)[0])
    first = {key: v[: cfg.batch_size] for key, v in batch.items()}
    first_s = {key: v[: cfg.success_batch_size] for key, v in success.items()}
    return {"actor": time_fn(actor, (state, first, first_s, k), repeats),
            "update": time_fn(update, (state, batch, success), repeats)}


def to_markdown(result) -> str:
    m = result["machine"]
    lines = ["# Cheaper OGPO updates: ms per update", "",
             f"Machine: {m['device']} ({m['backend']}), {m['cpu_count']} CPU cores, {m['processor']}; Python "
             f"{m['python']}, jax {m['jax']}. Date {result['date']}.", f"Command: `{result['command']}`", "",
             "| scale | variant | actor step ms | vs base | update ms (fused) | vs base | compile s (update) |",
             "|---|---|---|---|---|---|---|"]
    for scale, rows in result["scales"].items():
        base = rows["base"]
        for name, r in rows.items():
            lines.append(f"| {scale} ({r['shape']}) | {name} | {r['actor']['ms_median']:.1f} | "
                         f"{r['actor']['ms_median'] / base['actor']['ms_median']:.2f}x | {r['update']['ms_median']:.1f} | "
                         f"{r['update']['ms_median'] / base['update']['ms_median']:.2f}x | "
                         f"{r['update']['compile_s']:.1f} |")
    lines += ["", "Median over the repeats after compilation and one warm call. Top-k keeps the loss and gradient "
              "exact while a group has <= k nonzero advantages (conservative advantages zero most chains); "
              "critic_updates_per_update=4 is 4 critic steps per update (the update's cost, not per critic step)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args, names = parse_scale_args(argv, __doc__.splitlines()[0], SCALES, "can_quick,can_gpu")
    out = {}
    t0 = time.time()
    for name in names:
        base_cfg = scale_config(SCALES[name])
        rows = {}
        for vname, fields in variants(base_cfg).items():
            cfg = dataclasses.replace(base_cfg, **fields)
            r = bench(cfg, args.repeats)
            r["shape"] = (f"{len(cfg.actor_hidden_dims)}x{cfg.actor_hidden_dims[0]}, {cfg.ppo_batch_size} x "
                          f"{cfg.group_size} chains, K={cfg.flow_steps}, critic batch {cfg.batch_size}")
            rows[vname] = r
            print(f"[cheaper_updates] {name} {vname}: actor {r['actor']['ms_median']:.1f} ms, update "
                  f"{r['update']['ms_median']:.1f} ms ({time.time() - t0:.0f}s so far)", flush=True)
        out[name] = rows
    result = {"benchmark": "cheaper_updates", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "command": "python benchmarks/cheaper_updates.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "scales": out}
    write_results(os.path.join(args.out, "cheaper_updates" + (f"_{args.tag}" if args.tag else "")), result,
                  to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
