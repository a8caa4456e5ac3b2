"""Comparison statistics and the report: 95% bootstrap CIs over seeds, the spread of a quantity
over seeds, normalized AUC, and from
the per-method results of `compare.run_seeds` (OUTDIR/methods/<name>.json) the curves CSV, the
markdown table (each method as the policy alone and with selection where it was evaluated both
ways) and the success-vs-env-steps / wall-clock plots.
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np


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


def spread(values) -> dict:
    """n, mean, sample sd, min, max and mean - 3 sd of a quantity over seeds (sd nan for one)."""
    v = np.asarray(values, dtype=float)
    sd = float(v.std(ddof=1)) if v.size > 1 else float("nan")
    return {"n": int(v.size), "mean": float(v.mean()), "sd": sd, "min": float(v.min()), "max": float(v.max()),
            "mean_minus_3sd": float(v.mean()) - 3 * sd}


def parse_seeds(text: str, flag: str = "--seeds") -> list:
    """'0-9' -> [0, ..., 9] (inclusive); '0,3,5' -> [0, 3, 5]; anything else names the flag."""
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(x) for x in text.split("-"))
            if hi < lo:
                raise ValueError
            return list(range(lo, hi + 1))
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag}={text!r}: expected 'a-b' with a <= b or a comma list of integers") from None


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
                r["final"] = {k: v[-1] for k, v in r["curve"].items() if k.startswith("success_")}
                out[name] = r
    return out


# Views of a method's success: 'alone' (the policy, no selection) and 'select' (best-of-N by the
# target critics) when the run evaluated them (compare.py --eval_modes=alone,select); otherwise
# 'ode', the algorithm's own ODE act (for QC and EXPO that act already selects by the critic).
VIEWS = {"alone": "policy alone", "select": "with selection", "ode": "ODE act"}
THRESHOLDS = (0.8, 0.95)


def views(result) -> list:
    """The success views a result has, in table order."""
    c = result["curve"]
    if "success_alone" in c:
        return [v for v in ("alone", "select") if f"success_{v}" in c]
    return ["ode"]


def clock_key(results) -> str:
    """'cpu_seconds' when every result ran on a CPU and logged its CPU time (a run pinned to one core
    of a shared machine: its CPU seconds are the uncontended wall-clock of that core), else
    'wall_seconds'."""
    def cpu(r):
        t = r["curve"].get("cpu_seconds")
        return str(r.get("device", "")).startswith("cpu") and t is not None and np.all(np.isfinite(t))
    return "cpu_seconds" if results and all(cpu(r) for r in results.values()) else "wall_seconds"


def first_crossing(x, success, threshold: float):
    """The first x at which the seed-mean success reaches `threshold`, or None."""
    y = np.asarray(success, float)
    y = y.mean(-1) if y.ndim == 2 else y
    hit = np.nonzero(y >= threshold - 1e-9)[0]
    return None if hit.size == 0 else float(np.asarray(x, float)[hit[0]])


def _fmt_pair(values, fmt):
    return " / ".join("-" if v is None else fmt(v) for v in values)


def write_report(outdir: str, results: dict, order=None, bc=None, title: str = "") -> dict:
    """curves.csv, comparison.md and the two PNG plots from per-method results. Returns paths.

    One table row per method and view (`views`): final success with a 95% bootstrap CI over seeds,
    the normalized AUC, env steps and seconds (`clock_key`) until the seed mean first reaches 0.8
    and 0.95, the env steps and seconds run."""
    names = [n for n in (order or results) if n in results]
    clock = clock_key({n: results[n] for n in names})
    clock_name = "CPU s (1 core)" if clock == "cpu_seconds" else "wall s"
    paths = {"csv": os.path.join(outdir, "curves.csv"), "md": os.path.join(outdir, "comparison.md")}
    modes = ("ode", "alone", "select")
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["method", "seed", "env_steps", "wall_seconds", "cpu_seconds", "grad_steps"]
                   + [f"success_{m}" for m in modes])
        for n in names:
            c = results[n]["curve"]
            cpu = c.get("cpu_seconds")
            for j, seed in enumerate(results[n]["seeds"]):
                for i in range(len(c["env_steps"])):
                    w.writerow([n, seed, round(c["env_steps_per_seed"][i][j]), round(c["wall_seconds"][i], 2),
                                "" if cpu is None else round(cpu[i], 2), c["grad_steps"][i]]
                               + [c[f"success_{m}"][i][j] if f"success_{m}" in c else "" for m in modes])
    lines = []
    if title:
        lines += [f"### {title}", ""]
    if bc:
        lines += [f"BC start: ODE {bc.get('bc_success_ode', float('nan')):.3f}, "
                  f"SDE {bc.get('bc_success_sde', float('nan')):.3f}.", ""]
    thr = " / ".join(f"{t:g}" for t in THRESHOLDS)
    lines += [f"| method | view | seeds | final success [95% CI] | AUC [95% CI] | env steps to {thr} | "
              f"{clock_name} to {thr} | env steps | {clock_name} | device |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for n in names:
        r = results[n]
        c = r["curve"]
        label = f"{n} (unfinished: last evaluation)" if r.get("partial") else n
        seconds = c.get(clock) or c["wall_seconds"]
        for v in views(r):
            y = c[f"success_{v}"]
            final = np.asarray(r["final"].get(f"success_{v}", y[-1]), float)
            lo, hi = bootstrap_ci(final)
            auc = _per_seed_auc(c["env_steps"], y)
            alo, ahi = bootstrap_ci(auc)
            steps = [first_crossing(c["env_steps"], y, t) for t in THRESHOLDS]
            secs = [first_crossing(seconds, y, t) for t in THRESHOLDS]
            lines.append(f"| {label} | {VIEWS[v]} | {len(r['seeds'])} | {final.mean():.3f} [{lo:.3f}, {hi:.3f}] | "
                         f"{np.mean(auc):.3f} [{alo:.3f}, {ahi:.3f}] | {_fmt_pair(steps, lambda x: f'{x:,.0f}')} | "
                         f"{_fmt_pair(secs, lambda x: f'{x:,.0f}')} | {r['env_steps']:,.0f} | "
                         f"{seconds[-1] if seconds else r['seconds']:,.0f} | {r.get('device', '?')} |")
    if any("ode" in views(results[n]) for n in names):
        lines += ["", "ODE act: the algorithm's own ODE action, which for QC and EXPO already selects among "
                  "candidates by the critic (runs without --eval_modes=alone,select)."]
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    try:
        paths.update(_plot(outdir, results, names, clock, title))
    except Exception as e:  # plots must not lose the table
        print(f"[compare] plots not drawn: {type(e).__name__}: {e}")
    return paths


def _save(fig, ax, xlabel, ylabel, title, path):
    """Label, style and write one plot."""
    import matplotlib.pyplot as plt
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot(outdir, results, names, clock, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    cmap = plt.get_cmap("tab20")
    prefix = title + ": " if title else ""
    clock_label = ("CPU seconds (one core; all seeds in one program)" if clock == "cpu_seconds"
                   else "wall-clock seconds (all seeds in one program)")
    styles = {"alone": "-", "ode": "-", "select": "--"}
    for xkey, fname, xlabel in (("env_steps", "success_vs_env_steps.png", "env steps"),
                                (clock, "success_vs_wall_clock.png", clock_label)):
        fig, ax = plt.subplots(figsize=(8, 5))
        for i, n in enumerate(names):
            c = results[n]["curve"]
            x = np.asarray(c.get(xkey) or c["wall_seconds"], float)
            for v in views(results[n]):
                y = np.asarray(c[f"success_{v}"], float)          # (T, S)
                ci = np.array([bootstrap_ci(row, 2000) for row in y])
                label = (f"{n}, {VIEWS[v]} (n={y.shape[1]}"
                         + (", unfinished)" if results[n].get("partial") else ")"))
                ax.plot(x, y.mean(-1), styles[v], label=label, color=cmap(i % 20))
                ax.fill_between(x, ci[:, 0], ci[:, 1], color=cmap(i % 20), alpha=0.12)
        out[fname] = _save(fig, ax, xlabel, "success (solid: policy alone / ODE act; dashed: with selection)",
                           prefix + "mean over seeds, 95% bootstrap CI", os.path.join(outdir, fname))
    # the training rollouts' success per logged interval: the fine-grained curve between evaluations
    # (each method's own acting sampler: SDE chains, QC's best-of-N, ...)
    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = False
    for i, n in enumerate(names):
        ro = results[n].get("rollout") or {}
        if len(ro.get("env_steps", [])) < 2:
            continue
        y = np.asarray(ro["success"], float).mean(-1)
        k = min(5, y.size)
        smooth = np.convolve(y, np.ones(k) / k, mode="valid")
        ax.plot(np.asarray(ro["env_steps"], float)[k - 1:], smooth, label=n, color=cmap(i % 20))
        drawn = True
    if not drawn:
        plt.close(fig)
        return out
    fname = "rollout_success_vs_env_steps.png"
    out[fname] = _save(fig, ax, "env steps", "training rollout success (mean over seeds, 5-interval moving average)",
                       prefix + "success of the episodes each method collected", os.path.join(outdir, fname))
    return out
