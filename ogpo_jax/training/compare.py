"""Method comparisons: S seeds of one method as one `vmap`-ed program (`run_seeds`). The report
(curves with 95% bootstrap CIs, CSV, markdown table, plots) is `training/report.py`.

All methods of a comparison finetune the same BC actor (one demo set, one clipped-BC run); the
seeds vary everything online: agent init, env resets, exploration noise, minibatches.

    outdir/base/                    demos + BC actor shared by every method (pipeline stages 1-2)
    outdir/methods/<name>.json      one finished method: per-seed curves and final success
    outdir/curves.csv, comparison.md, success_vs_env_steps.png, success_vs_wall_clock.png
"""
from __future__ import annotations

import json
import os
import platform
import time

import jax
import numpy as np

from ogpo_jax.training import finetune, loop, rundir
from ogpo_jax.training.config import validate
from ogpo_jax.training.evaluation import evaluate_policies, make_evaluator


def init_seeds(config, env, episode_length, chunk_shape, obs_dim, bc_params, seeds):
    """-> (stacked LoopState with a leading seed axis, stacked eval keys), the initial state and
    evaluation keys that `train.py --config.seed=s` uses for each seed s (same BC actor)."""
    ls = finetune.init_finetune_state(config, validate(config), env, episode_length, chunk_shape, obs_dim,
                                      bc_params, seeds=seeds)
    if len(seeds) == 1:
        ls = loop.stack_seeds([ls])
    eval_keys = np.stack([np.asarray(rundir.seed_stage_keys(int(s))[4]) for s in seeds])
    return ls, eval_keys


def run_seeds(config, env, episode_length, chunk_shape, obs_dim, bc_params, seeds, log=print,
              eval_modes=("ode",), final_modes=("ode", "sde"), on_eval=None, checkpoint_dir=None,
              progress_every_s: float = 120.0) -> dict:
    """Finetune `bc_params` with `config` for every seed in `seeds` as one vmapped program.

    Evaluates every `train.eval_every_env_steps` (mean env steps over seeds) with `eval_modes`
    and at the end with `final_modes`. Returns a JSON-able dict of per-seed curves;
    `on_eval(partial_result)` is called after every evaluation (to save curves of unfinished runs).
    `checkpoint_dir`: after every evaluation the whole stacked loop state and the curves so far are
    saved there, and a rerun continues from the newest one (a long method survives a killed
    process; the continuation equals an uninterrupted run).
    `progress_every_s`: between evaluations, log env steps, env steps/s and rollout success this
    often (the first interval's compile time too), so a run stopped early still shows its pace.
    """
    tcfg = config.train
    algo_cfg = validate(config)
    seeds = [int(s) for s in seeds]
    t_start = time.time()
    ls, eval_keys = init_seeds(config, env, episode_length, chunk_shape, obs_dim, bc_params, seeds)
    ckpt, progress_path, resumed = None, None, None
    if checkpoint_dir:
        from ogpo_jax.training.checkpoint import Checkpointer
        ckpt = Checkpointer(checkpoint_dir, max_to_keep=2)
        progress_path = os.path.join(os.path.abspath(checkpoint_dir), "progress.json")
        if os.path.exists(progress_path):
            resumed = json.load(open(progress_path))
            if resumed["seeds"] != seeds or resumed["step"] not in ckpt.manager.all_steps():
                resumed = None          # another seed set, or killed between the two writes
        if resumed is not None:
            ls = ckpt.restore(ls, resumed["step"])
            t_start = time.time() - resumed["seconds"]
            log(f"  resumed at {resumed['env_steps']:.0f} env steps from {checkpoint_dir}")
            ls, _ = loop.drop_nonfinite_rows(ls, log)
    interval = loop.make_interval(env, tcfg, tcfg.log_every_iterations, vmap_seeds=True)
    metric_names = loop.update_metric_names(ls, vmap_seeds=True)
    evaluate = make_evaluator(env, chunk_shape[0], episode_length, tcfg.eval_episodes, vmap_seeds=True, log=log,
                              what=f"evaluator, {len(seeds)} seeds")
    # one policy object per sampler, all in one compiled evaluator program (evaluate_policies)
    policies = finetune.eval_policies(algo_cfg, sorted(set(eval_modes) | set(final_modes)))

    def run_eval(ls, modes, tag):
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(eval_keys, tag)
        res = evaluate_policies(evaluate, policies, ls.agent, keys, list(modes))
        return {m: np.asarray(res[m]["success"]).tolist() for m in modes}

    curve = {"env_steps": [], "env_steps_per_seed": [], "wall_seconds": [], "grad_steps": []}
    curve.update({f"success_{m}": [] for m in eval_modes})
    rollout = {"env_steps": [], "success": []}

    def record(ls, env_steps_seeds):
        res = run_eval(ls, eval_modes, int(env_steps_seeds.mean()))
        curve["env_steps"].append(float(env_steps_seeds.mean()))
        curve["env_steps_per_seed"].append(env_steps_seeds.tolist())
        curve["wall_seconds"].append(time.time() - t_start)
        curve["grad_steps"].append(int(np.asarray(ls.agent.step).mean()))
        for m in eval_modes:
            curve[f"success_{m}"].append(res[m])
        return res

    if resumed is None:
        res = record(ls, np.zeros(len(seeds)))
        log(f"  [{0:>8d} env steps] " + "  ".join(f"{m} {np.mean(v):.3f}" for m, v in res.items()))
        env_steps = np.zeros(len(seeds))
        next_eval = tcfg.eval_every_env_steps
        compile_s = None
    else:
        curve, rollout = resumed["curve"], resumed["rollout"]
        env_steps = np.asarray(resumed["env_steps_per_seed"], float)
        next_eval, compile_s = resumed["next_eval"], resumed["compile_s"]
    beat_t = None            # last progress line (None: before this process's first interval)
    beat_steps = beat_eps = beat_succ = 0.0
    while env_steps.mean() < tcfg.total_env_steps:
        t0 = time.time()
        ls, metrics = interval(ls)
        metrics = jax.device_get(metrics)
        env_steps = np.asarray(metrics["env_steps"])[:, -1].astype(float)
        if compile_s is None:
            compile_s = time.time() - t0
        eps = np.asarray(metrics["episodes"]).sum(-1)
        succ = np.asarray(metrics["episode_success_sum"]).sum(-1)
        rollout_success = succ / np.maximum(eps, 1)
        now = time.time()
        beat_eps, beat_succ = beat_eps + eps.sum(), beat_succ + succ.sum()
        if beat_t is None:       # the first interval of this process includes its compile
            log(f"  compile + first interval {now - t0:.1f}s")
            beat_t, beat_steps, beat_eps, beat_succ = now, env_steps.mean(), 0.0, 0.0
        elif now - beat_t >= progress_every_s:
            # episodes finished since the last line, all seeds: early on these are mostly the short
            # (successful) ones, the failures end later at the time limit
            rate = (env_steps.mean() - beat_steps) / (now - beat_t)
            log(f"  [{int(env_steps.mean()):>8d} env steps, {now - t_start:7.1f}s] {rate:.0f} env steps/s "
                f"(per seed), rollout success {beat_succ / max(beat_eps, 1):.2f} over {int(beat_eps)} episodes")
            beat_t, beat_steps, beat_eps, beat_succ = now, env_steps.mean(), 0.0, 0.0
        rollout["env_steps"].append(float(env_steps.mean()))
        rollout["success"].append(rollout_success.tolist())
        broken = np.asarray(metrics["nonfinite_episodes"]).sum(-1)
        rollout.setdefault("nonfinite_episodes", [[0] * len(seeds)] * (len(rollout["success"]) - 1))
        rollout["nonfinite_episodes"].append(broken.tolist())
        if broken.any():
            log(f"  {broken.astype(int).tolist()} episode(s) per seed ended by a non-finite simulation state "
                f"before {int(env_steps.mean())} env steps (not stored, counted as failures)")
        # the loop discards non-finite updates itself (train.nonfinite); 'stop' ends the comparison
        for i, seed in enumerate(seeds):
            bad = loop.nonfinite_report({"nonfinite_mask": metrics["nonfinite_mask"][i]}, metric_names)
            if bad is not None and tcfg.nonfinite == "stop":
                raise finetune.NonFiniteError(f"non-finite metrics {bad[1]} in an update of seed {seed} at "
                                              f"{env_steps[i]:.0f} env steps")
        if env_steps.mean() >= next_eval or env_steps.mean() >= tcfg.total_env_steps:
            res = record(ls, env_steps)
            next_eval = (env_steps.mean() // tcfg.eval_every_env_steps + 1) * tcfg.eval_every_env_steps
            log(f"  [{int(env_steps.mean()):>8d} env steps, {time.time() - t_start:7.1f}s] "
                + "  ".join(f"{m} {np.mean(v):.3f} ({' '.join(f'{x:.2f}' for x in v)})" for m, v in res.items()))
            if on_eval is not None:
                on_eval({"seeds": seeds, "curve": curve, "rollout": rollout, "env_steps": float(env_steps.mean()),
                         "seconds": time.time() - t_start, "device": describe_device(), "partial": True})
            if beat_t is not None:   # the next env steps/s leaves out the evaluation
                beat_t, beat_steps = time.time(), env_steps.mean()
            if ckpt is not None:
                step = int(ls.iteration.max())
                ckpt.save(step, ls)
                rundir.write_json(progress_path, {
                    "step": step, "seeds": seeds, "curve": curve, "rollout": rollout,
                    "env_steps": float(env_steps.mean()), "env_steps_per_seed": env_steps.tolist(),
                    "next_eval": float(next_eval), "compile_s": compile_s, "seconds": time.time() - t_start})
    final = run_eval(ls, final_modes, 10**9)
    if ckpt is not None:
        ckpt.close()
    return {
        "seeds": seeds,
        "algo": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.algo.to_dict().items()},
        "curve": curve,
        "rollout": rollout,
        "final": {f"success_{m}": v for m, v in final.items()},
        "grad_steps": int(np.asarray(ls.agent.step).mean()),
        "env_steps": float(env_steps.mean()),
        "nonfinite_episodes": float(np.sum(rollout.get("nonfinite_episodes", 0))),
        "compile_and_first_interval_s": compile_s,
        "seconds": time.time() - t_start,
        "device": describe_device(),
    }


def describe_device() -> str:
    d = jax.devices()[0]
    if d.platform == "cpu":
        return f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    return f"{d.platform} ({d.device_kind})"
