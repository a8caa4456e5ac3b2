"""Time and env steps for `configs/can.py:quick` from the clipped BC policy to its final success.

    python benchmarks/can_finetune.py --run --workdir=runs/can_quick_s0     # run the pipeline, then report
    python benchmarks/can_finetune.py --workdir=runs/can_quick_s0           # report a finished run

The run is exactly `python experiments/train.py --config=configs/can.py:quick --workdir=...`
(`--run` calls the same pipeline in-process, `--seed` overrides the seed). The report takes the
stage wall times and the success curve from the workdir (`summary.json`, `bc/bc.json`,
`metrics.jsonl`, `demos.json`, and for runs without `demos.json` the `[demos]` line of
`<workdir>.log`) and writes `benchmarks/results/can_finetune{_tag}.{json,md}` naming the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from update_step import machine, write_results  # noqa: E402


def _read(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def report(workdir: str) -> dict:
    summary = _read(os.path.join(workdir, "summary.json"))
    bc = _read(os.path.join(workdir, "bc", "bc.json"))
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    demos_seconds = summary.get("demos_seconds")
    if demos_seconds is None and os.path.exists(workdir.rstrip("/") + ".log"):
        with open(workdir.rstrip("/") + ".log", encoding="utf-8") as f:
            m = re.search(r"\[demos\] .*expert success ([0-9.]+).*?([0-9.]+)s ->", f.read())
        if m:
            demos_seconds = float(m.group(2))
            summary.setdefault("expert_success", float(m.group(1)))
    curve = [{"env_steps": r["env_steps"], "wall_seconds": r.get("wall_seconds"),
              **{k.replace("eval/success_", ""): r[k] for k in r if k.startswith("eval/success_")}}
             for r in records if any(k.startswith("eval/") for k in r)]
    # A resumed run restarts the wall clock: summary.json's finetune_seconds then covers only the
    # last process. Estimate the total as the last logged wall time plus the last process's time.
    # (records logged after the restored checkpoint by the interrupted process are not counted)
    logged = max((r["wall_seconds"] for r in records
                  if "wall_seconds" in r and r["env_steps"] <= summary["env_steps"]), default=0.0)
    resumed = logged > summary["finetune_seconds"]
    finetune_seconds = logged + summary["finetune_seconds"] if resumed else summary["finetune_seconds"]
    curve.append({"env_steps": summary["env_steps"], "wall_seconds": finetune_seconds,
                  "ode": summary["final_success_ode"], "sde": summary["final_success_sde"], "final": True})
    sps = sorted(r["env_steps_per_s"] for r in records if "env_steps_per_s" in r)
    first_080 = next((p for p in curve if p.get("ode", 0) >= 0.8), None)
    return {
        "workdir": workdir,
        "expert_success": summary.get("expert_success"),
        "demos_seconds": demos_seconds,
        "bc_seconds": summary.get("bc_seconds", bc.get("bc_seconds")),
        "bc_steps": summary["bc_steps"],
        "bc_success_ode": summary["bc_success_ode"],
        "bc_success_sde": summary["bc_success_sde"],
        "finetune_seconds": finetune_seconds,
        "resumed": resumed,
        "wall_seconds": None if resumed else summary["wall_seconds"],
        "env_steps": summary["env_steps"],
        "grad_steps": summary["grad_steps"],
        "final_success_ode": summary["final_success_ode"],
        "final_success_sde": summary["final_success_sde"],
        "median_env_steps_per_s": sps[len(sps) // 2] if sps else None,
        "compile_and_first_interval_s": next((r["compile_and_first_interval_s"] for r in records
                                              if "compile_and_first_interval_s" in r), None),
        "env_steps_to_ode_080": first_080["env_steps"] if first_080 else None,
        "eval_episodes": summary["config"]["train"]["eval_episodes"],
        "curve": curve,
    }


def to_markdown(result) -> str:
    m, r = result["machine"], result["run"]
    fmt = lambda v, f="{:.0f}": "-" if v is None else f.format(v)  # noqa: E731
    lines = [
        f"# Can finetune, `configs/can.py:quick` ({result['date']})", "",
        f"Machine: {m['device']} ({m['backend']}), {m['cpu_count']} CPU cores, Python {m['python']}, jax {m['jax']}.",
        f"Command: `{result['command']}`; workdir `{r['workdir']}`; success over {r['eval_episodes']} episodes.", "",
        "| stage | wall s | result |", "|---|---|---|",
        f"| scripted demos | {fmt(r['demos_seconds'])} | expert success {fmt(r['expert_success'], '{:.3f}')} |",
        f"| clipped BC ({r['bc_steps']} steps) | {fmt(r['bc_seconds'])} | ODE {r['bc_success_ode']:.3f}, SDE {r['bc_success_sde']:.3f} |",
        f"| OGPO finetune ({r['env_steps']} env steps, {r['grad_steps']} updates) | {fmt(r['finetune_seconds'])} | "
        f"ODE {r['final_success_ode']:.3f}, SDE {r['final_success_sde']:.3f} |",
        f"| total | {fmt(r['wall_seconds'])} | |", "",
        *(["The finetune ran in more than one process (resumed from a checkpoint): its wall time is the last "
           "logged interval's plus the final process's, and no single-process total exists.", ""]
          if r.get("resumed") else []),
        f"Finetune env steps/s (median over logging intervals, including updates): {fmt(r['median_env_steps_per_s'])}; "
        f"compile + first interval {fmt(r['compile_and_first_interval_s'])} s; first evaluation with ODE >= 0.8 at "
        f"{fmt(r['env_steps_to_ode_080'])} env steps.", "",
        "| env steps | finetune wall s | ODE | SDE |", "|---|---|---|---|",
        f"| 0 (BC) | 0 | {r['bc_success_ode']:.3f} | {r['bc_success_sde']:.3f} |",
    ]
    for p in r["curve"]:
        lines.append(f"| {p['env_steps']}{' (final)' if p.get('final') else ''} | {fmt(p.get('wall_seconds'))} | "
                     f"{fmt(p.get('ode'), '{:.3f}')} | {fmt(p.get('sde'), '{:.3f}')} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/can_quick_s0")
    parser.add_argument("--run", action="store_true", help="run (or resume) the pipeline first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)
    if args.run:
        from configs import can
        from ogpo_jax.training import pipeline
        config = can.get_config("quick")
        config.seed = args.seed
        pipeline.run(config, args.workdir)
    if not os.path.exists(os.path.join(args.workdir, "summary.json")):
        raise SystemExit(f"{args.workdir}/summary.json not found: run with --run or train.py first")
    result = {"benchmark": "can_finetune", "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "command": "python " + " ".join(sys.argv), "run": report(args.workdir)}
    write_results(os.path.join(args.out, "can_finetune" + (f"_{args.tag}" if args.tag else "")),
                  result, to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
