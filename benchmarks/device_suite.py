"""The device suite: what one accelerator does with this framework, in one prepared command.

    python benchmarks/device_suite.py                   # a GPU/TPU machine: <= 8 minutes incl. compiles
    python benchmarks/device_suite.py --cpu             # mechanics check on a CPU (a few minutes)
    python benchmarks/device_suite.py --budget_s=300 --sections=env,update

Sections, run in this order, each within its share of `--budget_s` (what a section does not use
passes to the next):
  env     MJX control and physics steps/s of each task of `--env_tasks` (default Can, Square, two_nuts)
          at each batch of `--batches` (default 256, 1024, 4096, 8192) under
          `env_throughput.benchmark_actions` (a moving arm), with the compile time of the reset
          and step programs; a batch that fails (out of memory) is recorded and the task's larger
          ones skipped.
  update  ms per actor, critic and fused OGPO update at paper scale (4x512, 10 heads,
          256 states x 32 chains, K = 10) and at the GPU preset's scale (configs/can.py), each in
          full fp32 (`highest`) and at the matmul precision the preset runs with (JAX's default,
          which lets GPUs use TF32-class matmuls), with compile times.
  e2e     `experiments/train.py --config=configs/can.py` from nothing: demos, clipped BC, finetune
          and final evaluation, cut at the remaining budget (finetuning stops at the first log
          interval past it, then checkpoints and evaluates): wall time of each stage and of each
          compile, env steps/s, updates/s and the success curve so far.

`--cpu` runs the same code at CPU scale: Can at batch 4, a small update scale, and the toy task's
pipeline for `e2e` (an MJX pipeline compiles for ~10 minutes on a 2-core CPU), so a test can check
that every figure is produced. Results go to `benchmarks/results/device_suite{_tag}.{json,md}`
(rewritten after every section, so a run cut short keeps what it measured), naming the device,
the jax / jaxlib / mujoco versions and the command.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import signal
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from env_throughput import benchmark_actions  # noqa: E402
from update_step import bench_scale, machine, write_results  # noqa: E402

SECTIONS = ("env", "update", "e2e")
MJX_TASKS = ("can", "square", "two_nuts")
# share of the whole budget each section may use; the e2e run gets whatever is left
SHARE = {"env": 0.2, "update": 0.15}
FINAL_RESERVE = 0.1          # of the budget, kept for the e2e run's final evaluation and report


def versions() -> dict:
    out = {}
    for pkg in ("jax", "jaxlib", "mujoco", "mujoco-mjx", "flax", "optax", "jax-cuda12-plugin", "jax-cuda13-plugin",
                "libtpu"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def device_memory_gib():
    try:
        stats = jax.devices()[0].memory_stats() or {}
        return round(stats.get("bytes_limit", 0) / 2**30, 1) or None
    except Exception:       # CPU and some backends have no memory stats
        return None


# ------------------------------------------------------------------------------------------ env
def bench_env(batches, repeats: int, deadline: float, log, task: str = "can") -> list:
    from ogpo_jax import envs
    from ogpo_jax.envs.core import batched
    from ogpo_jax.training import progress

    env = envs.make(task)[0].unwrapped
    name = type(env).__name__
    jit = lambda f: jax.jit(f, compiler_options=env.compiler_options)  # noqa: E731
    rows, last_cost = [], 0.0
    for batch in batches:
        if time.time() + last_cost > deadline:
            rows.append({"task": task, "batch": batch, "skipped": "section budget spent"})
            log(f"[env] {name} batch {batch}: skipped (budget)")
            continue
        t_row = time.time()
        try:
            reset = jit(lambda keys: batched(env.reset, env, keys))
            step = jit(lambda s, a: batched(env.step, env, s, a))
            keys = jax.random.split(jax.random.PRNGKey(0), batch)
            reset_c = progress.compile_program(reset, (keys,), f"{name} reset, batch {batch}", log)
            state = reset(keys)
            actions = benchmark_actions(jax.random.PRNGKey(1), repeats + 1, batch, env.action_size)
            step_c = progress.compile_program(step, (state, actions[0]), f"{name} step, batch {batch}", log)
            state = step(state, actions[0])           # warm call
            jax.block_until_ready(state.obs)
            times = []
            for i in range(repeats):
                t0 = time.perf_counter()
                state = step(state, actions[i + 1])
                jax.block_until_ready(state.obs)
                times.append(time.perf_counter() - t0)
            dt = float(np.median(times))
            n = env.params.n_substeps
            rows.append({"task": task, "batch": batch, "vmap_batch": min(batch, env.max_vmap_batch or batch),
                         "control_steps_per_s": batch / dt, "physics_steps_per_s": batch * n / dt,
                         "ms_per_batched_control_step": dt * 1e3, "compile_reset_s": reset_c,
                         "compile_step_s": step_c, "repeats": repeats})
            log(f"[env] {name} batch {batch}: {batch / dt:,.0f} control steps/s ({batch * n / dt:,.0f} physics), "
                f"{dt * 1e3:.1f} ms per step; compile reset {reset_c:.1f}s, step {step_c:.1f}s")
        except Exception as e:       # out of memory at a large batch: record it, skip larger ones
            rows.append({"task": task, "batch": batch, "error": f"{type(e).__name__}: {str(e)[:200]}"})
            log(f"[env] {name} batch {batch}: {rows[-1]['error']}")
            break
        last_cost = time.time() - t_row
    return rows


# --------------------------------------------------------------------------------------- update
def update_scales(cpu: bool) -> dict:
    from configs import can
    from ogpo_jax.algorithms.config import OGPOConfig

    obs_dim, chunk = 23, (4, 7)            # Can's observation and chunk shapes
    if cpu:
        small = OGPOConfig(actor_hidden_dims=(64, 64), critic_hidden_dims=(64, 64), num_critics=4, flow_steps=3,
                           batch_size=16, ppo_batch_size=8, group_size=4, success_batch_size=16)
        return {"cpu_small": dict(obs_dim=obs_dim, chunk_shape=chunk, config=small)}
    preset = OGPOConfig.from_dict(can.get_config("").algo)
    # the preset first: it is what the e2e run pays for, and the budget may stop the section
    return {"gpu_preset": dict(obs_dim=obs_dim, chunk_shape=chunk, config=preset),
            "paper": dict(obs_dim=obs_dim, chunk_shape=chunk, config=OGPOConfig())}


def bench_updates(cpu: bool, repeats: int, deadline: float, log) -> list:
    from configs import can

    preset_precision = can.get_config("").train.matmul_precision or "default"
    precisions = ["highest"] + ([preset_precision] if preset_precision != "highest" else [])
    rows = []
    for name, spec in update_scales(cpu).items():
        for precision in precisions:
            if time.time() > deadline:
                rows.append({"scale": name, "precision": precision, "skipped": "section budget spent"})
                continue
            log(f"[update] {name}, matmul precision {precision} ...")
            with jax.default_matmul_precision(precision):
                row = bench_scale(name, repeats=repeats, **spec)
            row["precision"] = precision
            rows.append(row)
            log(f"[update] {name} ({precision}): actor {row['actor']['ms_median']:.2f} ms, critic "
                f"{row['critic']['ms_median']:.2f} ms, fused update {row['update']['ms_median']:.2f} ms "
                f"(compile {row['update']['compile_s']:.1f}s)")
    return rows


# ------------------------------------------------------------------------------------------ e2e
def e2e_config(cpu: bool):
    if cpu:
        from configs import toy
        c = toy.get_config("quick")
        c.demos.num_demos = 32
        c.bc.max_steps = 500
        c.bc.eval_every = 250
        c.bc.eval_episodes = 32
        c.train.update(num_envs=8, total_env_steps=2_000, start_training=256, eval_every_env_steps=1_000,
                       eval_episodes=32, log_every_iterations=8, checkpoint_every_env_steps=2_000,
                       updates_per_iteration=2, replay_capacity=4_096, success_capacity=2_048)
        c.algo.update(actor_hidden_dims=(32, 32), critic_hidden_dims=(32, 32), num_critics=2, flow_steps=3,
                      batch_size=16, ppo_batch_size=8, group_size=4, success_batch_size=16)
        return c, "configs/toy.py:quick (shrunk for the CPU mode)"
    from configs import can
    return can.get_config(""), "configs/can.py"


def run_e2e(cpu: bool, workdir: str, stop_at: float, log) -> dict:
    from ogpo_jax.training import pipeline, progress

    config, name = e2e_config(cpu)
    config.log.progress = False
    t0 = time.time()
    n0 = len(progress.COMPILES)
    out = {"config": name, "workdir": workdir, "budget_cut_at": stop_at - t0}
    try:
        summary = pipeline.run(config, workdir, log=log, stop_at=stop_at)
        out["summary"] = {k: v for k, v in summary.items() if k != "config"}
    except KeyboardInterrupt as e:      # SIGTERM from an outer timeout: report what exists
        out["interrupted"] = str(e) or "interrupt"
    out["wall_seconds"] = time.time() - t0
    out["compiles"] = progress.COMPILES[n0:]
    out.update(read_run(workdir, config))
    return out


def read_run(workdir: str, config) -> dict:
    """Stage times, rates and the success curve from a run directory (also of a cut-short run)."""
    out = {}
    path = os.path.join(workdir, "demos.json")
    if os.path.exists(path):
        d = json.load(open(path))
        out["demos"] = {"seconds": d["seconds"], "expert_success": d["expert_success"]}
    path = os.path.join(workdir, "bc", "bc.json")
    if os.path.exists(path):
        b = json.load(open(path))
        out["bc"] = {k: b.get(k) for k in ("bc_seconds", "bc_steps", "bc_success_ode", "bc_success_sde",
                                           "bc_final_eval_seconds")}
    records = []
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
    if records:
        def med(key):
            vals = [r[key] for r in records[1:] if key in r] or [r[key] for r in records if key in r]
            return float(np.median(vals)) if vals else None
        out["finetune"] = {
            "env_steps": records[-1]["env_steps"], "grad_steps": records[-1].get("grad_steps"),
            "wall_seconds": records[-1].get("wall_seconds"),
            "median_env_steps_per_s": med("env_steps_per_s"), "median_updates_per_s": med("updates_per_s"),
            "grad_steps_per_env_step": records[-1].get("grad_steps_per_env_step"),
            "compile_s": next((r["compile_s"] for r in records if "compile_s" in r), None),
            "first_interval_s": next((r["compile_and_first_interval_s"] - r.get("compile_s", 0.0)
                                      for r in records if "compile_and_first_interval_s" in r), None),
        }
        out["curve"] = [{"env_steps": r["env_steps"], "wall_seconds": r.get("wall_seconds"),
                         **{k.replace("eval/success_", ""): r[k] for k in r if k.startswith("eval/success_")}}
                        for r in records if any(k.startswith("eval/success_") for k in r)]
        out["rollout_curve"] = [{"env_steps": r["env_steps"], "success": r["rollout/success"]}
                                for r in records if "rollout/success" in r]
    out["eval_episodes"] = int(config.train.eval_episodes)
    return out


# ------------------------------------------------------------------------------------- markdown
def _f(v, fmt="{:.1f}"):
    return "-" if v is None else fmt.format(v)


def to_markdown(res) -> str:
    m, v = res["machine"], res["versions"]
    lines = [f"# Device suite ({res['date']}{', CPU mode' if res['cpu_mode'] else ''})", "",
             f"Device: {m['device']} ({m['backend']}, {m['device_count']} device(s)"
             + (f", {res['device_memory_gib']} GiB" if res.get("device_memory_gib") else "") + f"), "
             f"{m['cpu_count']} CPU cores; Python {m['python']}, "
             + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
             f"Command: `{res['command']}` (budget {res['budget_s']:.0f} s; suite wall time "
             f"{_f(res.get('wall_seconds'), '{:.0f}')} s).", ""]
    if "env" in res:
        lines += ["## Env throughput (MJX: Can, Square)", "",
                  "| task | batch (vmapped sub-batch) | control steps/s | physics steps/s | ms per control step | "
                  "compile reset s | compile step s |", "|---|---|---|---|---|---|---|"]
        for r in res["env"]:
            task = r.get("task", "can")
            if "control_steps_per_s" in r:
                sub = f" ({r['vmap_batch']})" if r["vmap_batch"] != r["batch"] else ""
                lines.append(f"| {task} | {r['batch']}{sub} | {r['control_steps_per_s']:,.0f} | {r['physics_steps_per_s']:,.0f} | "
                             f"{r['ms_per_batched_control_step']:.1f} | {r['compile_reset_s']:.1f} | "
                             f"{r['compile_step_s']:.1f} |")
            else:
                lines.append(f"| {task} | {r['batch']} | {r.get('error') or r.get('skipped')} | | | | |")
        lines.append("")
    if "update" in res:
        lines += ["## OGPO update step", "",
                  "| scale | matmul precision | actor MLP | critics | K | states x chains | critic batch | actor ms | "
                  "critic ms | fused update ms | compile s (fused) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["update"]:
            if "skipped" in r:
                lines.append(f"| {r['scale']} | {r['precision']} | {r['skipped']} | | | | | | | | |")
                continue
            lines.append(
                f"| {r['scale']} | {r['precision']} | {len(r['actor_hidden'])}x{r['actor_hidden'][0]} | "
                f"{r['num_critics']} x {len(r['critic_hidden'])}x{r['critic_hidden'][0]} | {r['flow_steps']} | "
                f"{r['states']} x {r['chains_per_state']} | {r['critic_batch']} | {r['actor']['ms_median']:.2f} | "
                f"{r['critic']['ms_median']:.2f} | {r['update']['ms_median']:.2f} | {r['update']['compile_s']:.1f} |")
        lines.append("")
    if "e2e" in res:
        e = res["e2e"]
        s = e.get("summary", {})
        lines += [f"## End to end: `{e['config']}` (cut at {e['budget_cut_at']:.0f} s)", ""]
        if "interrupted" in e:
            lines += [f"Interrupted ({e['interrupted']}); figures below are what the run directory held.", ""]
        ft = e.get("finetune", {})
        lines += ["| stage | wall s | result |", "|---|---|---|"]
        if "demos" in e:
            lines.append(f"| scripted demos | {e['demos']['seconds']:.1f} | expert success {e['demos']['expert_success']:.3f} |")
        if "bc" in e:
            b = e["bc"]
            lines.append(f"| clipped BC ({b['bc_steps']} steps) | {_f(b['bc_seconds'])} | ODE {_f(b['bc_success_ode'], '{:.3f}')}, "
                         f"SDE {_f(b['bc_success_sde'], '{:.3f}')} ({e['eval_episodes']} episodes) |")
        if ft:
            final = (f"final ODE {s['final_success_ode']:.3f}, SDE {s['final_success_sde']:.3f}" if "final_success_ode" in s
                     else "no final evaluation")
            lines.append(f"| OGPO finetune ({ft['env_steps']:,} env steps, {ft['grad_steps']:,} updates"
                         f"{', cut by the budget' if s.get('stopped_at_budget') else ''}) | "
                         f"{_f(s.get('finetune_seconds', ft.get('wall_seconds')))} | {final} |")
        lines.append(f"| whole run | {_f(e.get('wall_seconds'))} | |")
        lines.append("")
        if ft:
            lines += [f"Finetune: {_f(ft['median_env_steps_per_s'], '{:,.0f}')} env steps/s and "
                      f"{_f(ft['median_updates_per_s'], '{:,.1f}')} updates/s (medians over log intervals, updates "
                      f"included, evaluation excluded); {_f(ft['grad_steps_per_env_step'], '{:.3f}')} grad steps per env step; "
                      f"first interval {_f(ft['first_interval_s'])} s after its compile.", ""]
        if e.get("compiles"):
            lines += ["| compiled program | s |", "|---|---|"]
            lines += [f"| {c['what']} | {c['seconds']:.1f} |" for c in e["compiles"]]
            lines += [f"| total | {sum(c['seconds'] for c in e['compiles']):.1f} |", ""]
        if e.get("curve"):
            keys = [k for k in e["curve"][0] if k not in ("env_steps", "wall_seconds")]
            lines += ["| env steps | finetune wall s | " + " | ".join(keys) + " |", "|---" * (2 + len(keys)) + "|"]
            for p in e["curve"]:
                lines.append(f"| {p['env_steps']:,} | {_f(p.get('wall_seconds'), '{:.0f}')} | "
                             + " | ".join(_f(p.get(k), '{:.3f}') for k in keys) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget_s", type=float, default=480.0, help="wall-clock budget of the whole suite")
    parser.add_argument("--cpu", action="store_true", help="CPU mode: small batches, toy pipeline")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--batches", default="", help="env batches (default 256,1024,4096,8192; CPU mode 4)")
    parser.add_argument("--env_tasks", default="", help="MJX tasks of the env section (default can,square,two_nuts; CPU mode can)")
    parser.add_argument("--repeats", type=int, default=0, help="timed repeats (default 20; CPU mode 3)")
    parser.add_argument("--workdir", default="", help="run directory of the e2e section (default: a temp dir)")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--tag", default="", help="suffix of the result files (e.g. 'h200')")
    args = parser.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        parser.error(f"--sections: unknown {bad}; known {list(SECTIONS)}")
    if args.budget_s <= 0:
        parser.error(f"--budget_s must be > 0, got {args.budget_s}")
    tasks = [t for t in (args.env_tasks or ("can" if args.cpu else ",".join(MJX_TASKS))).split(",") if t]
    if not tasks or any(t not in MJX_TASKS for t in tasks):
        parser.error(f"--env_tasks: {args.env_tasks!r} must name tasks of {list(MJX_TASKS)}")
    batches = [int(b) for b in (args.batches or ("4" if args.cpu else "256,1024,4096,8192")).split(",")]
    repeats = args.repeats or (3 if args.cpu else 20)
    if not args.cpu and jax.default_backend() == "cpu":
        print("[suite] note: JAX runs on the CPU here; the full suite is sized for an accelerator "
              "(--cpu runs the CPU-sized check)", flush=True)

    # SIGTERM (an outer timeout) ends the current section as an interrupt; the results so far are written
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt("SIGTERM")))

    def log(msg):
        print(msg, flush=True)

    start = time.time()
    res = {"benchmark": "device_suite", "date": time.strftime("%Y-%m-%d"), "cpu_mode": args.cpu,
           "command": "python benchmarks/device_suite.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "budget_s": args.budget_s, "machine": machine(), "versions": versions(),
           "device_memory_gib": device_memory_gib()}
    stem = os.path.join(args.out, "device_suite" + (f"_{args.tag}" if args.tag else ""))

    def save():
        res["wall_seconds"] = time.time() - start
        write_results(stem, res, to_markdown(res))

    log(f"[suite] {res['machine']['device']} ({res['machine']['backend']}), {res['versions']}; "
        f"budget {args.budget_s:.0f}s; sections {sections} -> {stem}.md")
    spent_share = 0.0
    try:
        for section in sections:
            spent_share += SHARE.get(section, 0.0)
            deadline = start + spent_share * args.budget_s
            t0 = time.time()
            if section == "env":
                res["env"] = []
                for i, task in enumerate(tasks):
                    # each task may use its share of what is left of the section's time
                    task_deadline = time.time() + (deadline - time.time()) / (len(tasks) - i)
                    res["env"] += bench_env(batches, repeats, task_deadline, log, task)
            elif section == "update":
                res["update"] = bench_updates(args.cpu, repeats, deadline, log)
            else:
                workdir = args.workdir or tempfile.mkdtemp(prefix="device-suite-e2e-")
                stop_at = start + (1.0 - FINAL_RESERVE) * args.budget_s
                res["e2e"] = run_e2e(args.cpu, workdir, stop_at, log)
            res.setdefault("section_seconds", {})[section] = time.time() - t0
            save()
    except KeyboardInterrupt as e:
        res["interrupted"] = str(e) or "interrupt"
        log(f"[suite] interrupted ({res['interrupted']}); writing what was measured")
    save()
    print(to_markdown(res))
    return res


if __name__ == "__main__":
    main()
