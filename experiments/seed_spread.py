"""The spread of a run's outcome over seeds: where a learning check's bar can sit.

Runs the whole pipeline (demos -> clipped BC -> finetune) once per seed, each seed with its own
demos and BC actor, and reports the mean, standard deviation, minimum and `mean - 3 sd` of the
final success and of the success at every evaluation point. XLA's CPU code differs between
processors, so the same seed is not the same computation on every machine: from the first control
step on, another machine's run is as different as another seed's. The spread over seeds is
therefore what a bar checked on an unknown machine has to allow for (tests/test_pipeline.py).

    python experiments/seed_spread.py --config=configs/toy.py:quick --seeds=0-11 \
        --outdir=runs/spread_toy_quick --config.train.eval_episodes=512

Rerunning with the same --outdir skips the seeds whose summary.json exists and resumes a seed
that was cut short (train.py's resume). With `--config.num_seeds=S` every run finetunes S vmapped
seeds from one BC actor and the spread is that of their mean (also reported per seed).
Writes `<outdir>/spread.json` and `<outdir>/spread.md` after every seed.
"""
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from ogpo_jax.training import cli  # noqa: E402
from ogpo_jax.training import compile_cache, pipeline, progress  # noqa: E402
from ogpo_jax.training.config import validate  # noqa: E402
from ogpo_jax.training.report import parse_seeds, spread as stats  # noqa: E402
from ogpo_jax.training.rundir import log_dirs, read_json, read_log, write_json  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/toy.py:quick", "Config file, optionally with ':preset'.")
_SEEDS = flags.DEFINE_string("seeds", "0-9", "Seeds: 'a-b' (inclusive) or a comma list; with num_seeds S, "
                             "each value s runs seeds s..s+S-1.")
_OUTDIR = flags.DEFINE_string("outdir", None, "Directory of the runs and the spread files.", required=True)
_BAR = flags.DEFINE_float("bar", None, "Optional: also report how many runs end below this final success.")


def eval_curve(log_dir: str) -> dict:
    """{env steps: eval/success_ode} of a run's periodic evaluations."""
    return {int(r["env_steps"]): r["eval/success_ode"] for r in read_log(log_dir) if "eval/success_ode" in r}


def collect(outdir: str, config, seeds: list, bar) -> dict:
    """The spread files' content from the summaries present under `outdir`."""
    runs = []
    for s in seeds:
        path = os.path.join(outdir, f"seed_{s}", "summary.json")
        if not os.path.exists(path):
            continue
        summary = read_json(path)
        cfg = summary["config"]
        dirs = log_dirs(os.path.dirname(path), _with_seed(config, s))
        curves = [eval_curve(d) for d in dirs]
        runs.append({
            "seed": s, "bc_success_ode": summary["bc_success_ode"], "bc_success_sde": summary["bc_success_sde"],
            "final_success_ode": summary["final_success_ode"], "final_success_sde": summary["final_success_sde"],
            "per_seed_final_success_ode": [p["final_success_ode"] for p in summary.get("per_seed", [summary])],
            "env_steps": summary["env_steps"], "wall_seconds": summary["wall_seconds"],
            "eval_episodes": cfg["train"]["eval_episodes"],
            # the mean over vmapped seeds at each evaluation point all of them reached
            "curve": {str(k): sum(c[k] for c in curves) / len(curves)
                      for k in sorted(set.intersection(*(set(c) for c in curves)))} if curves else {},
        })
    out = {"config": config.to_dict(), "seeds": seeds, "runs": runs}
    if len(runs) >= 2:
        out["final_success_ode"] = stats([r["final_success_ode"] for r in runs])
        out["bc_success_ode"] = stats([r["bc_success_ode"] for r in runs])
        out["gain_over_bc"] = stats([r["final_success_ode"] - r["bc_success_ode"] for r in runs])
        per = [v for r in runs for v in r["per_seed_final_success_ode"]]
        if config.num_seeds > 1:
            out["per_seed_final_success_ode"] = stats(per)
        # evaluation points: runs log at slightly different env steps; bucket by the eval interval
        every = config.train.eval_every_env_steps
        points = {}
        for r in runs:
            for k, v in r["curve"].items():
                points.setdefault(int(k) // every * every, []).append(v)
        out["curve"] = {str(k): stats(v) for k, v in sorted(points.items()) if len(v) == len(runs)}
        if bar is not None:
            out["bar"] = bar
            out["runs_below_bar"] = sum(r["final_success_ode"] < bar for r in runs)
    return out


def _with_seed(config, seed):
    c = config.copy_and_resolve_references()
    c.seed = seed
    return c


def markdown(res: dict, command: str) -> str:
    lines = ["# Seed spread", "", f"`{command}`", "",
             "| seed | BC ODE | final ODE | final SDE | env steps | wall s |", "|---|---|---|---|---|---|"]
    for r in res["runs"]:
        per = r["per_seed_final_success_ode"]
        final = f"{r['final_success_ode']:.3f}" + (f" ({', '.join(f'{v:.3f}' for v in per)})" if len(per) > 1 else "")
        lines.append(f"| {r['seed']} | {r['bc_success_ode']:.3f} | {final} | {r['final_success_sde']:.3f} | "
                     f"{r['env_steps']:,} | {r['wall_seconds']:.0f} |")
    if "final_success_ode" in res:
        lines += ["", "| quantity | n | mean | sd | min | max | mean - 3 sd |", "|---|---|---|---|---|---|---|"]
        rows = [("BC ODE", res["bc_success_ode"]), ("final ODE", res["final_success_ode"]),
                ("final - BC", res["gain_over_bc"])]
        if "per_seed_final_success_ode" in res:
            rows.append(("final ODE, each vmapped seed", res["per_seed_final_success_ode"]))
        rows += [(f"ODE at {int(k):,} env steps", s) for k, s in res.get("curve", {}).items()]
        for name, s in rows:
            lines.append(f"| {name} | {s['n']} | {s['mean']:.3f} | {s['sd']:.3f} | {s['min']:.3f} | {s['max']:.3f} | "
                         f"{s['mean_minus_3sd']:.3f} |")
        if "bar" in res:
            lines += ["", f"Runs below the bar {res['bar']}: {res['runs_below_bar']} of {len(res['runs'])}."]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    compile_cache.enable(print)
    logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value
    try:
        seeds = parse_seeds(_SEEDS.value)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    outdir = _OUTDIR.value
    config.log.progress = False          # one line per stage and evaluation is enough over many seeds
    config.log.tensorboard = False
    validate(config)
    os.makedirs(outdir, exist_ok=True)
    command = "python experiments/seed_spread.py " + " ".join(sys.argv[1:])
    todo = [s for s in seeds if not os.path.exists(os.path.join(outdir, f"seed_{s}", "summary.json"))]
    t0 = time.time()
    for s in seeds:
        workdir = os.path.join(outdir, f"seed_{s}")
        if s in todo:
            summary = pipeline.run(_with_seed(config, s), workdir, log=lambda msg: print(f"[seed {s}] {msg}", flush=True))
            print(f"[spread] seed {s}: BC ODE {summary['bc_success_ode']:.3f} -> final ODE "
                  f"{summary['final_success_ode']:.3f}; " + progress.rate_line(todo.index(s) + 1, len(todo), time.time() - t0, "runs"),
                  flush=True)
        res = collect(outdir, config, seeds, _BAR.value)
        write_json(os.path.join(outdir, "spread.json"), res)
        with open(os.path.join(outdir, "spread.md"), "w", encoding="utf-8") as f:
            f.write(markdown(res, command))
    print(open(os.path.join(outdir, "spread.md"), encoding="utf-8").read())


if __name__ == "__main__":
    app.run(cli.main(main))
