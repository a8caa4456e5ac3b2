"""Method comparisons: S seeds of one method as one `vmap`-ed program (`run_seeds`). The report
(curves with 95% bootstrap CIs, CSV, markdown table, plots) is `training/report.py`.

All methods of a comparison finetune the same BC actor (one demo set, one clipped-BC run); the
seeds vary everything online: agent init, env resets, exploration noise, minibatches.

    outdir/base/                    demos + BC actor shared by every method (pipeline stages 1-2)
    outdir/methods/<name>.json      one finished method: per-seed curves and final success
    outdir/methods/<name>.run/      its finetune run directory (`finetune.run`): per-seed metrics.jsonl,
                                    checkpoints while it runs (a rerun resumes from them)
    outdir/curves.csv, comparison.md, success_vs_env_steps.png, success_vs_wall_clock.png
"""
from __future__ import annotations

import contextlib
import os
import platform
import tempfile

import jax
import numpy as np

from ogpo_jax.algorithms.config import SWEEPABLE
from ogpo_jax.training import finetune, loop, rundir
from ogpo_jax.training.evaluation import SELECTION_MODES
from ogpo_jax.training.spec import RunSpec


def init_seeds(spec: RunSpec, bc_params, seeds):
    """-> (stacked LoopState with a leading seed axis, stacked eval keys), the initial state and
    evaluation keys that `train.py --config.seed=s` uses for each seed s (same BC actor)."""
    ls = finetune.init_finetune_state(spec.with_members(seeds), bc_params)
    if len(seeds) == 1:
        ls = loop.stack_seeds([ls])
    eval_keys = np.stack([np.asarray(rundir.seed_stage_keys(int(s))[4]) for s in seeds])
    return ls, eval_keys


def run_seeds(spec: RunSpec, bc_params, seeds, log=print, eval_modes=("ode",), final_modes=("ode", "sde"),
              on_eval=None, checkpoint_dir=None, progress_every_s: float = 120.0) -> dict:
    """Finetune `bc_params` as `spec` says (its config and task; its own seeds aside) for every
    seed in `seeds` as one vmapped program: the finetune driver (`finetune.run`) in the run
    directory `checkpoint_dir` (a temporary one if None).

    Evaluates every seed at 0 env steps and every `train.eval_every_env_steps` with `eval_modes`,
    at the end with `final_modes`. Returns a JSON-able dict of per-seed curves, read back from the
    per-seed metrics.jsonl; `on_eval(partial_result)` is called after every evaluation (to save
    curves of unfinished runs). With `checkpoint_dir`, a rerun resumes from its newest checkpoint
    (the driver's: by env steps, logs trimmed to it) and its curves continue the saved ones.
    `progress_every_s`: log env steps/s and rollout success this often between evaluations.
    """
    partial = None if on_eval is None else (lambda results: on_eval(results[0]))
    return _run_members(spec, bc_params, seeds, None, log, eval_modes, final_modes, partial, checkpoint_dir,
                        progress_every_s)[0]


def run_sweep(spec: RunSpec, bc_params, seeds, field: str, values, log=print, eval_modes=("ode",),
              final_modes=("ode", "sde"), on_eval=None, checkpoint_dir=None, progress_every_s: float = 120.0) -> list:
    """`run_seeds` for each value of one continuous hyperparameter, all values x seeds as ONE
    vmapped program: each member's agent carries its value as data (`algorithms.config.SWEEPABLE`:
    taus, clip epsilon, lambda, learning rates). `field`: 'algo.<name>'. Returns one result per
    value, each like `run_seeds`'s plus `sweep: {field: value}`; `on_eval(list of partial results)`.
    """
    name = field[len("algo."):] if field.startswith("algo.") else field
    if name not in SWEEPABLE:
        raise ValueError(f"--sweep field must be one of {['algo.' + f for f in SWEEPABLE]}, got {field!r}")
    values = [float(v) for v in values]
    if not values or len(set(values)) != len(values):
        raise ValueError(f"--sweep needs distinct values, got {values}")
    if name == "bc_coeff" and (min(values) <= 0) != (spec.config.algo.bc_coeff <= 0):
        raise ValueError("a bc_coeff sweep needs every value > 0 when config.algo.bc_coeff > 0 (the BC term is "
                         f"computed or not for all members alike), got {values}")
    return _run_members(spec, bc_params, seeds, (name, values), log, eval_modes, final_modes, on_eval,
                        checkpoint_dir, progress_every_s)


def _run_members(spec: RunSpec, bc_params, seeds, sweep, log, eval_modes, final_modes, on_eval, checkpoint_dir,
                 progress_every_s) -> list:
    """The driver over (sweep value x seed) members -> one result per sweep value (one if no sweep)."""
    seeds = [int(s) for s in seeds]
    name, values = sweep if sweep is not None else (None, [None])
    members = [(v, s) for v in values for s in seeds]
    t = spec.train
    # one program for all members on one device; a rerun continues from (about) the last evaluation
    run_spec = spec.with_members([s for _, s in members], None if sweep is None else [{name: v} for v, _ in members],
                                 checkpoint_every_env_steps=min(t.checkpoint_every_env_steps, t.eval_every_env_steps))
    algo_cfg = run_spec.algo
    other = ("ode_current" if algo_cfg.act_with == "ema" else "ode_ema",)
    known = ("ode", "sde") + SELECTION_MODES
    for m in eval_modes:
        if m not in known + other:
            raise ValueError(f"eval_modes must be among {known + other}, got {m!r}")
    if not eval_modes:
        raise ValueError("eval_modes needs at least one sampler")
    # the samplers the driver builds for this algorithm ('select' needs a chunked critic)
    available = finetune.eval_policies(algo_cfg, eval_modes, other_actor=True)
    eval_modes = tuple(m for m in eval_modes if m in available) or ("alone",)
    views_only = any(m in SELECTION_MODES for m in eval_modes)
    if views_only:
        # the two views are what the comparison reports, and the curve's last evaluation (at the
        # end of training, fresh episodes) is their final value: no separate final evaluation
        final_modes = ()
    for m in final_modes:
        if m not in known + other:
            raise ValueError(f"final_modes must be among {known + other}, got {m!r}")
    with contextlib.ExitStack() as stack:
        workdir = checkpoint_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="ogpo_compare_"))
        if sweep is None:
            dirs = rundir.seed_log_dirs(workdir, seeds)
        else:
            dirs = [os.path.join(workdir, f"{name}={v:g}", f"seed_{s}") for v, s in members]
        groups = [dirs[i * len(seeds):(i + 1) * len(seeds)] for i in range(len(values))]

        def partial():
            if on_eval is not None:
                on_eval([dict(_curves(g, eval_modes), seeds=seeds, device=describe_device(), partial=True,
                              **_sweep_entry(name, v)) for g, v in zip(groups, values)])

        evals = finetune.Evaluations(modes=tuple(eval_modes), at_start=True, final_modes=tuple(final_modes),
                                     on_eval=partial)
        outs = finetune.run(run_spec, bc_params, workdir, log, evals=evals, heartbeat_s=progress_every_s,
                            log_dirs=dirs)
        curves = [_curves(g, eval_modes) for g in groups]
    results = []
    for i, (v, res) in enumerate(zip(values, curves)):
        mine = outs[i * len(seeds):(i + 1) * len(seeds)]
        algo = {k: (list(x) if isinstance(x, tuple) else x) for k, x in spec.config.algo.to_dict().items()}
        if sweep is not None:
            algo[name] = v
        results.append({
            "seeds": seeds,
            "algo": algo,
            "curve": res["curve"],
            "rollout": res["rollout"],
            "final": ({f"success_{m}": res["curve"][f"success_{m}"][-1] for m in eval_modes} if views_only else
                      {f"success_{m}": [o[f"final_success_{m}"] for o in mine] for m in final_modes}),
            "grad_steps": int(np.mean([o["grad_steps"] for o in mine])),
            "env_steps": float(np.mean([o["env_steps"] for o in mine])),
            "nonfinite_episodes": float(np.sum(res["rollout"]["nonfinite_episodes"])),
            "compile_and_first_interval_s": res["compile_and_first_interval_s"],
            "seconds": mine[0]["finetune_seconds"],
            "device": describe_device(),
            **_sweep_entry(name, v),
        })
    return results


def _sweep_entry(name, value) -> dict:
    return {} if name is None else {"sweep": {f"algo.{name}": value}}


def _curves(log_dirs, eval_modes) -> dict:
    """Per-seed curves from the seeds' metrics.jsonl: evaluations (every seed at the same points)
    and rollout success / non-finite episodes per interval."""
    logs = [rundir.read_log(d) for d in log_dirs]
    evals = [[r for r in recs if f"eval/success_{eval_modes[0]}" in r] for recs in logs]
    intervals = [[r for r in recs if "rollout/episodes" in r] for recs in logs]
    n, k = min(len(e) for e in evals), min(len(x) for x in intervals)
    curve = {"env_steps": [], "env_steps_per_seed": [], "wall_seconds": [], "cpu_seconds": [], "grad_steps": []}
    curve.update({f"success_{m}": [] for m in eval_modes})
    for i in range(n):
        at = [e[i] for e in evals]
        steps = [float(r["env_steps"]) for r in at]
        curve["env_steps"].append(float(np.mean(steps)))
        curve["env_steps_per_seed"].append(steps)
        curve["wall_seconds"].append(float(at[0]["wall_seconds"]))
        curve["cpu_seconds"].append(float(at[0].get("cpu_seconds", float("nan"))))
        curve["grad_steps"].append(int(np.mean([r["grad_steps"] for r in at])))
        for m in eval_modes:
            curve[f"success_{m}"].append([r[f"eval/success_{m}"] for r in at])
    rollout = {"env_steps": [], "success": [], "nonfinite_episodes": []}
    for i in range(k):
        at = [x[i] for x in intervals]
        rollout["env_steps"].append(float(np.mean([r["env_steps"] for r in at])))
        rollout["success"].append([r.get("rollout/success", 0.0) for r in at])
        rollout["nonfinite_episodes"].append([r.get("env/nonfinite_episodes", 0.0) for r in at])
    firsts = [r["compile_and_first_interval_s"] for r in logs[0] if "compile_and_first_interval_s" in r]
    return {"curve": curve, "rollout": rollout, "env_steps": curve["env_steps"][-1] if n else 0.0,
            "seconds": curve["wall_seconds"][-1] if n else 0.0,
            "compile_and_first_interval_s": firsts[0] if firsts else None}


def describe_device() -> str:
    d = jax.devices()[0]
    if d.platform == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        used = f"{cores} cores" if cores == os.cpu_count() else f"{cores} of {os.cpu_count()} cores"
        return f"cpu ({used}, {platform.processor() or platform.machine()})"
    return f"{d.platform} ({d.device_kind})"
