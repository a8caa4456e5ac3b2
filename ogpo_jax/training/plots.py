"""Learning-curve PNG of a run from its `metrics.jsonl` (and `bc/bc.json`).

    python -c "from ogpo_jax.training.plots import plot_run; plot_run('runs/can_seed0')"

The pipeline redraws `<workdir>/learning_curve.png` after every evaluation and at the end.
"""
from __future__ import annotations

import json
import os


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _pooled_rollout_success(records, min_episodes: int = 32):
    """Success of the training episodes pooled over the last >= `min_episodes` finished episodes
    (a log interval of a long-horizon task finishes only a handful)."""
    window, out = [], []
    for r in records:
        n = r.get("rollout/episodes", 0.0)
        if n <= 0 or "rollout/success" not in r:
            continue
        window.append((n, r["rollout/success"] * n))
        while len(window) > 1 and sum(w[0] for w in window[1:]) >= min_episodes:
            window.pop(0)
        total = sum(w[0] for w in window)
        if total >= min(min_episodes, 8):
            out.append((r["env_steps"], sum(w[1] for w in window) / total))
    return out


def plot_run(workdir: str, path: str | None = None, title: str | None = None) -> str | None:
    """Draw evaluation success (ODE, SDE, other actor) and rollout success vs env steps, with the
    BC starting point; returns the PNG path (None when there is nothing to plot yet)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(workdir)
    if not records:
        return None
    path = path or os.path.join(workdir, "learning_curve.png")
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    eval_keys = sorted({k for r in records for k in r if k.startswith("eval/success_")})
    for k in eval_keys:
        pts = [(r["env_steps"], r[k]) for r in records if k in r]
        ax.plot(*zip(*pts), marker="o", ms=3, label=k.replace("eval/success_", "eval "))
    roll = _pooled_rollout_success(records)
    if roll:
        ax.plot(*zip(*roll), color="0.6", lw=0.8, label="rollout (training episodes, pooled)")
    bc_json = os.path.join(workdir, "bc", "bc.json")
    if os.path.exists(bc_json):
        with open(bc_json, encoding="utf-8") as f:
            bc = json.load(f)
        for mode, style in (("ode", "--"), ("sde", ":")):
            if f"bc_success_{mode}" in bc:
                ax.axhline(bc[f"bc_success_{mode}"], color="k", ls=style, lw=0.8, label=f"BC {mode}")
    ax.set_xlabel("env steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or os.path.basename(os.path.normpath(workdir)))
    # the algorithm's own health metrics: those it logs (sb_bc has neither critic nor PPO)
    for key, label in (("critic/td_error", "critic TD error"), ("actor/clip_frac", "PPO clip fraction"),
                       ("actor/adv_nonzero_frac", "nonzero advantage fraction"), ("actor/bc_loss", "BC loss")):
        pts = [(r["env_steps"], r[key]) for r in records if key in r]
        if pts and (key != "actor/bc_loss" or not ax2.lines):
            ax2.plot(*zip(*pts), lw=1, label=label)
    ax2.set_xlabel("env steps")
    ax2.grid(alpha=0.3)
    if ax2.lines:
        ax2.legend(fontsize=8)
    ax2.set_title("update health")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def try_plot_run(workdir: str, log=print) -> None:
    """`plot_run`, with a plotting problem logged instead of raised: it must never stop training."""
    try:
        plot_run(workdir)
    except Exception as e:
        log(f"[plot] learning curve not drawn: {type(e).__name__}: {e}")
