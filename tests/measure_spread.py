"""Measure the spread over seeds of every learning check the CI suite asserts a bar on.

XLA's CPU code differs between processors, so a seeded training run is not the same computation on
every machine: another machine's run is, for the bar's purposes, another seed. Each check below
exposes its measurement as a function of a seed (the test itself runs seed 0); this script runs it
over seeds and reports mean, sd, min, max and the 3-sd tail against the test's bar, so a bar can
be placed where <= 1% of runs would fail and its docstring can quote the spread.

    python tests/measure_spread.py                      # every check, seeds 0-9
    python tests/measure_spread.py critic_bandit sb_bc --seeds=0-19
    python tests/measure_spread.py --list

Results accumulate in docs/results/ci_spread/spread.json (a seed already measured is skipped, so
an interrupted run resumes; --force measures again) and docs/results/ci_spread/spread.md. The
end-to-end toy check (tests/test_pipeline.py) takes minutes per seed and is measured with
experiments/seed_spread.py instead (RESULTS.md, "How much does the outcome vary across seeds?").
"""
import argparse
import importlib
import json
import math
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]
OUT = os.path.join(ROOT, "docs", "results", "ci_spread")

from ogpo_jax.training.report import parse_seeds, spread as stats  # noqa: E402


def _bandit(name):
    return ("test_baselines", "bandit_progress", (name,),
            {"distance_ratio": ("<", f"test_baselines.DISTANCE_RATIO[{name}]"),
             "td_error": ("<", "test_baselines.TD_ERROR")})


def _onpolicy(case):
    return ("test_baselines", "onpolicy_gain", (case,), {"relative_gain": (">", "test_baselines.ONPOLICY_GAIN")})


_MODES = {"pos_share": ("in", "test_diffusion.POS_SHARE"), "near_modes": (">", "test_diffusion.NEAR_MODES"),
          "middle": ("<", "test_diffusion.MIDDLE_FRACTION")}
# name: (module, function, args, {metric: (relation, "module.BAR")}); relation '<', '>' or 'in' (open interval)
CHECKS = {
    "critic_countdown": ("test_critic", "countdown_errors", (),
                         {"max_abs_error": ("<", "test_critic.COUNTDOWN_MAX_ERROR")}),
    "critic_bandit": ("test_critic", "bandit_errors", (),
                      {"mean_abs_error": ("<", "test_critic.BANDIT_MEAN_ERROR"),
                       "p95_abs_error": ("<", "test_critic.BANDIT_P95_ERROR")}),
    "bandit_qc": _bandit("qc"), "bandit_fql": _bandit("fql"), "bandit_expo": _bandit("expo"),
    "bandit_dsrl": _bandit("dsrl"),
    "onpolicy_dppo": _onpolicy("dppo"), "onpolicy_reinflow": _onpolicy("reinflow"),
    "onpolicy_dppo_diffusion": _onpolicy("dppo_diffusion"),
    "diffusion_bandit": ("test_diffusion", "diffusion_bandit_progress", (),
                         {"distance_ratio": ("<", "test_diffusion.DIFFUSION_DISTANCE_RATIO")}),
    "flow_modes": ("test_flow", "flow_modes", (), _MODES),
    "diffusion_modes": ("test_diffusion", "diffusion_modes", (),
                        {f"{s}_{m}": bar for s in ("ddim", "ddpm") for m, bar in _MODES.items()}),
    "value_baseline": ("test_variants", "value_baseline_fit", (),
                       {"loss_ratio": ("<", "test_variants.VALUE_LOSS_RATIO")}),
    "sb_bc": ("test_algorithms", "sb_bc_imitation", (),
              {"error_before": (">", "test_algorithms.SB_BC_START_ERROR"),
               "loss_ratio": ("<", "test_algorithms.SB_BC_LOSS_RATIO"),
               "error_current": ("<", "test_algorithms.SB_BC_ERROR_CURRENT"),
               "error_ema": ("<", "test_algorithms.SB_BC_ERROR_EMA")}),
    "bc_step": ("test_reuse_api", "bc_step_fit", (), {"loss_ratio": ("<", "test_reuse_api.BC_STEP_LOSS_RATIO")}),
    "distributed_curves": ("test_distributed", "dp_curves", (),
                           {"td_drop_1": ("<", "test_distributed.TD_DROP"), "td_drop_4": ("<", "test_distributed.TD_DROP"),
                            "curve_rel_gap": ("<", "test_distributed.CURVE_REL_GAP")}),
}


def bar_value(ref: str):
    """'module.NAME' or 'module.NAME[key]' -> the bar's value in the test module."""
    module, name = ref.split(".", 1)
    key = None
    if name.endswith("]"):
        name, key = name[:-1].split("[")
    value = getattr(importlib.import_module(module), name)
    return value if key is None else value[key]


def passes(value: float, relation: str, bar) -> bool:
    if relation == "<":
        return value < bar
    if relation == ">":
        return value > bar
    return bar[0] < value < bar[1]


def summarize(name: str, per_seed: dict) -> dict:
    """Per metric: the statistics over seeds, the bar, how many seeds miss it, and the distance from
    the mean to the bar in sds (the 3-sd rule wants >= 3)."""
    _, _, _, bars = CHECKS[name]
    out = {}
    for metric, (relation, ref) in bars.items():
        values = [m[metric] for m in per_seed.values() if metric in m]
        if len(values) < 2:
            continue
        s = stats(values)
        bar = bar_value(ref)
        if relation == "<":
            margin = (bar - s["mean"]) / s["sd"] if s["sd"] > 0 else math.inf
        elif relation == ">":
            margin = (s["mean"] - bar) / s["sd"] if s["sd"] > 0 else math.inf
        else:
            margin = min(s["mean"] - bar[0], bar[1] - s["mean"]) / s["sd"] if s["sd"] > 0 else math.inf
        out[metric] = {**s, "relation": relation, "bar": bar, "bar_ref": ref, "margin_sd": margin,
                       "seeds_failing": sum(not passes(v, relation, bar) for v in values)}
    return out


def markdown(results: dict) -> str:
    lines = ["# Spread of the CI learning checks over seeds", "",
             "`python tests/measure_spread.py` (the test runs seed 0). Margin: distance from the mean to",
             "the bar in standard deviations; a bar at >= 3 sd fails <= ~0.1-1% of machines.", "",
             f"Machine: {results.get('machine', '?')}", "",
             "| check | metric | seeds | mean | sd | min | max | bar | margin (sd) | seeds failing |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in sorted(results["checks"]):
        for metric, s in results["checks"][name]["summary"].items():
            bar = f"{s['relation']} {s['bar']}" if s["relation"] != "in" else f"in ({s['bar'][0]}, {s['bar'][1]})"
            lines.append(f"| {name} | {metric} | {s['n']} | {s['mean']:.4f} | {s['sd']:.4f} | {s['min']:.4f} | "
                         f"{s['max']:.4f} | {bar} | {s['margin_sd']:.1f} | {s['seeds_failing']} |")
    return "\n".join(lines) + "\n"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checks", nargs="*", help="check names (default: all)")
    parser.add_argument("--seeds", default="0-9")
    parser.add_argument("--force", action="store_true", help="drop the named checks' results and measure again")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(sorted(CHECKS)))
        return
    unknown = [c for c in args.checks if c not in CHECKS]
    if unknown:
        raise SystemExit(f"unknown check(s) {unknown}; known: {sorted(CHECKS)}")
    names = args.checks or sorted(CHECKS)
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "spread.json")
    results = json.load(open(path)) if os.path.exists(path) else {"checks": {}}
    import jax
    results["machine"] = f"{cpu_name()}, {os.cpu_count()} cores, jax {jax.__version__}"
    if args.force:                  # a check measured again starts afresh (its metrics may have changed)
        for n in names:
            results["checks"].pop(n, None)
    todo = [(n, s) for n in names for s in seeds if str(s) not in results["checks"].get(n, {}).get("per_seed", {})]
    t0 = time.time()
    for i, (name, seed) in enumerate(todo):
        module, fn, fargs, _ = CHECKS[name]
        t = time.time()
        out = getattr(importlib.import_module(module), fn)(*fargs, seed)
        metrics = out[0] if isinstance(out, tuple) else out
        entry = results["checks"].setdefault(name, {"per_seed": {}})
        entry["per_seed"][str(seed)] = {k: float(v) for k, v in metrics.items()}
        entry["summary"] = summarize(name, entry["per_seed"]) if len(entry["per_seed"]) > 1 else {}
        done = time.time() - t0
        eta = done / (i + 1) * (len(todo) - i - 1)
        print(f"[spread] {name} seed {seed}: {metrics} ({time.time() - t:.1f}s; {i + 1}/{len(todo)}, "
              f"ETA {eta / 60:.1f} min)", flush=True)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    results["checks"] = {k: v for k, v in results["checks"].items() if k in CHECKS}
    for name, entry in results["checks"].items():
        entry["summary"] = summarize(name, entry["per_seed"]) if len(entry["per_seed"]) > 1 else {}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    md = markdown({**results, "checks": {k: v for k, v in results["checks"].items() if v["summary"]}})
    with open(os.path.join(args.out, "spread.md"), "w", encoding="utf-8") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
