"""Method comparisons: S seeds of one method as one `vmap`-ed program, and the report
(success-vs-env-steps / wall-clock curves with 95% bootstrap CIs, CSV, markdown table).

All methods of a comparison finetune the same BC actor (one demo set, one clipped-BC run); the
seeds vary everything online: agent init, env resets, exploration noise, minibatches.

    outdir/base/                    demos + BC actor shared by every method (pipeline stages 1-2)
    outdir/methods/<name>.json      one finished method: per-seed curves and final success
    outdir/curves.csv, comparison.md, success_vs_env_steps.png, success_vs_wall_clock.png
"""
from __future__ import annotations

import csv
import functools
import json
import os
import platform
import time

import jax
import numpy as np

from ogpo_jax.algorithms import base as algorithms
from ogpo_jax.training import loop, rundir
from ogpo_jax.training.config import validate
from ogpo_jax.training.evaluation import agent_policy, evaluate_policies, make_evaluator


def init_seeds(config, env, episode_length, chunk_shape, obs_dim, bc_params, seeds):
    """-> (stacked LoopState with a leading seed axis, stacked eval keys)."""
    algo_cfg = validate(config)
    algo = algorithms.get(algo_cfg.name)
    states, eval_keys = [], []
    for s in seeds:
        # the keys `train.py --config.seed=s` uses: seed s here reproduces that run (same BC actor)
        _, _, k_agent, k_loop, k_eval = rundir.seed_stage_keys(int(s))
        agent = algo.init(k_agent, obs_dim, chunk_shape, algo_cfg, actor_params=bc_params)
        states.append(loop.init_loop(k_loop, env, agent, obs_dim, config.train, episode_length))
        eval_keys.append(k_eval)
    return loop.stack_seeds(states), np.stack([np.asarray(k) for k in eval_keys])


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
    ls = jax.device_put(ls, jax.devices()[0])
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
    policies = {m: functools.partial(agent_policy, m, algo_cfg.act_with)
                for m in sorted(set(eval_modes) | set(final_modes))}

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
                raise FloatingPointError(f"non-finite metrics {bad[1]} in an update of seed {seed} at "
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


# ----------------------------------------------------------------------------- statistics

def bootstrap_ci(values, num_resamples: int = 10_000, level: float = 0.95, seed: int = 0):
    """Percentile bootstrap CI of the mean over seeds: values (S,) -> (lo, hi).

    With S = 1 the interval is the single value. With few seeds (S = 2-3) the bootstrap CI is
    narrow and optimistic; report S next to it.
    """
    v = np.asarray(values, dtype=float)
    if v.size <= 1:
        return float(v.mean()), float(v.mean())
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, (num_resamples, v.size))].mean(-1)
    alpha = (1.0 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def area_under_curve(env_steps, success):
    """Normalized AUC: trapezoid of mean-over-seeds success vs env steps / the step range (in [0, 1])."""
    x = np.asarray(env_steps, float)
    y = np.asarray(success, float)
    if y.ndim == 2:
        y = y.mean(-1)
    if x.size < 2 or x[-1] <= x[0]:
        return float(y.mean())
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / (x[-1] - x[0]))


def _per_seed_auc(env_steps, success):
    s = np.asarray(success, float)
    return [area_under_curve(env_steps, s[:, i]) for i in range(s.shape[1])]


# ----------------------------------------------------------------------------- report

def load_results(outdir: str, include_partial: bool = False) -> dict:
    """Finished methods (OUTDIR/methods/<name>.json); with `include_partial`, also the curves so far
    of unfinished ones (<name>.partial, written after every evaluation), marked `partial` and
    with their last evaluation standing in for the final one."""
    d = os.path.join(outdir, "methods")
    out = {}
    if not os.path.isdir(d):
        return out
    files = sorted(os.listdir(d))
    for f in files:
        if f.endswith(".json"):
            with open(os.path.join(d, f), encoding="utf-8") as fh:
                out[f[:-5]] = json.load(fh)
    if include_partial:
        for f in (f for f in files if f.endswith(".partial")):
            name = f[: -len(".partial")]
            if name not in out:
                with open(os.path.join(d, f), encoding="utf-8") as fh:
                    r = json.load(fh)
                r["final"] = {"success_ode": r["curve"]["success_ode"][-1]}
                out[name] = r
    return out


def write_report(outdir: str, results: dict, order=None, bc=None, title: str = "") -> dict:
    """curves.csv, comparison.md and the two PNG plots from per-method results. Returns paths."""
    names = [n for n in (order or results) if n in results]
    mode = "ode"
    paths = {"csv": os.path.join(outdir, "curves.csv"), "md": os.path.join(outdir, "comparison.md")}
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["method", "seed", "env_steps", "wall_seconds", "grad_steps", "success_ode"])
        for n in names:
            c = results[n]["curve"]
            for j, seed in enumerate(results[n]["seeds"]):
                for i in range(len(c["env_steps"])):
                    w.writerow([n, seed, round(c["env_steps_per_seed"][i][j]), round(c["wall_seconds"][i], 2),
                                c["grad_steps"][i], c[f"success_{mode}"][i][j]])
    rows = []
    for n in names:
        r = results[n]
        c = r["curve"]
        final = np.asarray(r["final"]["success_ode"])
        final_sde = np.asarray(r["final"].get("success_sde", [np.nan]))
        auc = _per_seed_auc(c["env_steps"], c[f"success_{mode}"])
        lo, hi = bootstrap_ci(final)
        alo, ahi = bootstrap_ci(auc)
        label = f"{n} (unfinished: last evaluation)" if r.get("partial") else n
        rows.append((label, len(r["seeds"]), final.mean(), lo, hi, final_sde.mean(), np.mean(auc), alo, ahi,
                     r["env_steps"], r["seconds"], r.get("device", "?")))
    lines = []
    if title:
        lines += [f"### {title}", ""]
    if bc:
        lines += [f"BC start: ODE {bc.get('bc_success_ode', float('nan')):.3f}, "
                  f"SDE {bc.get('bc_success_sde', float('nan')):.3f}.", ""]
    lines += ["| method | seeds | final ODE success [95% CI] | final SDE | AUC (ODE) [95% CI] | env steps | wall s | device |",
              "|---|---|---|---|---|---|---|---|"]
    for (n, s, f, lo, hi, fs, a, alo, ahi, es, sec, dev) in rows:
        fs = "-" if np.isnan(fs) else f"{fs:.3f}"
        lines.append(f"| {n} | {s} | {f:.3f} [{lo:.3f}, {hi:.3f}] | {fs} | {a:.3f} [{alo:.3f}, {ahi:.3f}] "
                     f"| {es:,.0f} | {sec:,.0f} | {dev} |")
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    try:
        paths.update(_plot(outdir, results, names, mode, title))
    except Exception as e:  # plots must not lose the table
        print(f"[compare] plots not drawn: {type(e).__name__}: {e}")
    return paths


def _plot(outdir, results, names, mode, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    cmap = plt.get_cmap("tab20")
    for xkey, fname, xlabel in (("env_steps", "success_vs_env_steps.png", "env steps"),
                                ("wall_seconds", "success_vs_wall_clock.png", "wall-clock seconds (all seeds in one program)")):
        fig, ax = plt.subplots(figsize=(8, 5))
        for i, n in enumerate(names):
            c = results[n]["curve"]
            x = np.asarray(c[xkey], float)
            y = np.asarray(c[f"success_{mode}"], float)          # (T, S)
            ci = np.array([bootstrap_ci(row, 2000) for row in y])
            label = f"{n} (n={y.shape[1]}" + (", unfinished)" if results[n].get("partial") else ")")
            ax.plot(x, y.mean(-1), label=label, color=cmap(i % 20))
            ax.fill_between(x, ci[:, 0], ci[:, 1], color=cmap(i % 20), alpha=0.15)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"success ({mode.upper()} sampler)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title((title + ": " if title else "") + "mean over seeds, 95% bootstrap CI")
        ax.legend(fontsize=7, ncol=2, loc="lower right")
        fig.tight_layout()
        path = os.path.join(outdir, fname)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out[fname] = path
    return out
