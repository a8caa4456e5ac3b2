"""Compare OGPO variants and ablations over seeds on one task.

    python experiments/compare.py --config=configs/toy.py:quick --methods=ogpo,ogpo_plus,ogpo_ca --seeds=3
    python experiments/compare.py --config=configs/can.py:quick --methods=headline --seeds=2 --outdir=runs/cmp_can
    python experiments/compare.py --outdir=runs/cmp_toy --report_only     # redraw plots/table
    python experiments/compare.py --outdir=runs/cmp_can --report_only --include_partial   # while it runs

Every method finetunes the same BC actor (demos + clipped BC are made once in OUTDIR/base, or
taken from --bc_workdir, e.g. a finished train.py run). The S seeds of a method run as one
vmapped program. A finished method is saved in OUTDIR/methods/<name>.json and skipped on rerun,
so an interrupted comparison resumes at the first unfinished method, and that method from its
last checkpoint (OUTDIR/methods/<name>.run: its finetune run directory, checkpointed at every
evaluation; the per-seed metrics.jsonl stay when it finishes). Methods: configs/methods.py.
`--config.*` overrides apply to every method (e.g. --config.train.total_env_steps=60000).
"""
import dataclasses
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from configs import methods as methods_lib  # noqa: E402
from ogpo_jax.training import cli  # noqa: E402
from ogpo_jax.algorithms.config import SWEEPABLE  # noqa: E402
from ogpo_jax.training import compare, compile_cache, pipeline, report, rundir  # noqa: E402
from ogpo_jax.training import spec as spec_lib  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/toy.py:quick", "Task config, optionally with ':preset'.")
_METHODS = flags.DEFINE_string("methods", "ogpo,ogpo_plus,ogpo_ca",
                               "Comma-separated method presets (configs/methods.py), 'headline', 'baselines' or 'all'.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per method (config.seed, config.seed + 1, ...), vmapped.")
_OUTDIR = flags.DEFINE_string("outdir", None, "Output directory (default runs/compare_<env>).")
_BC_WORKDIR = flags.DEFINE_string("bc_workdir", None,
                                  "Take demos + BC actor from this train.py run directory instead of OUTDIR/base.")
_EVAL_MODES = flags.DEFINE_list(
    "eval_modes", ["ode"], "Samplers evaluated along the curve (final: ode and sde): ode, sde, or alone,select "
    "(each method's policy alone and with best-of-N selection by its target critics; the last evaluation is the final).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rebuild the table and plots from OUTDIR/methods.")
_PARTIAL = flags.DEFINE_bool("include_partial", False,
                              "With --report_only: also show unfinished methods up to their last evaluation.")
_TITLE = flags.DEFINE_string("title", "", "Title of the plots and table.")
_SWEEP = flags.DEFINE_string(
    "sweep", "", "One continuous hyperparameter's values, every value x seed of a method as one vmapped program, "
    "e.g. algo.actor_tau=0.005,0.02,0.05 (taus, clip_epsilon, bc_coeff, learning rates).")


def main(argv):
    del argv
    compile_cache.enable(print)
    logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value
    outdir = _OUTDIR.value or os.path.join("runs", f"compare_{config.env.name}")
    names = methods_lib.resolve(_METHODS.value)
    if _SEEDS.value < 1:
        raise ValueError(f"--seeds must be >= 1, got {_SEEDS.value}")
    if _PARTIAL.value and not _REPORT_ONLY.value:
        raise ValueError("--include_partial only applies to --report_only (a run reports finished methods)")
    os.makedirs(os.path.join(outdir, "methods"), exist_ok=True)
    title = _TITLE.value or config.env.name
    bc_info_path = os.path.join(outdir, "bc_info.json")
    if _REPORT_ONLY.value:
        results = report.load_results(outdir, include_partial=_PARTIAL.value)
        if not results:
            raise FileNotFoundError(f"no method results in {os.path.join(outdir, 'methods')}")
        bc = json.load(open(bc_info_path)) if os.path.exists(bc_info_path) else None
        if not _TITLE.value and not flags.FLAGS["config"].present:
            # no --config given: name the task the results were run on, not the default config's
            tasks = sorted({r.get("task") for r in results.values() if r.get("task")})
            title = ", ".join(tasks) or title
        _report(outdir, results, names if _METHODS.present else None, bc, title)
        return
    # every check before demos and BC: the task config (and its env, built once for all methods),
    # each method's config, and each method's members (seeds, sweep values) as they will run
    base_spec = spec_lib.make(config)
    sweep = _parse_sweep(_SWEEP.value)
    seeds = [config.seed + i for i in range(_SEEDS.value)]
    values = [None] if sweep is None else sweep[1]
    specs = {}
    for n in names:
        method_cfg = methods_lib.apply(config, n)
        if method_cfg.algo.policy != config.algo.policy:
            raise ValueError(f"method {n!r} sets algo.policy={method_cfg.algo.policy!r}, but the shared BC actor "
                             f"is a {config.algo.policy!r} policy: compare it in its own --outdir with "
                             f"--config.algo.policy={method_cfg.algo.policy}")
        specs[n] = spec_lib.make(method_cfg, task=base_spec.task)
        specs[n].with_members([s for _ in values for s in seeds],
                              None if sweep is None else [{sweep[0]: v} for v in values for _ in seeds])

    base = _BC_WORKDIR.value or os.path.join(outdir, "base")
    if _BC_WORKDIR.value:
        run_cfg = rundir.load_run_config(base)
        for section in ("env", "demos", "bc"):
            if run_cfg[section].to_dict() != config[section].to_dict():
                raise ValueError(f"--bc_workdir {base}: its config.{section} differs from --config's; "
                                 "the BC actor would not match the task")
    prep = pipeline.prepare(base_spec, base)
    if prep.spec.task is not base_spec.task:   # a camera run: every method finetunes on the frozen encoder's features
        specs = {n: dataclasses.replace(s, task=prep.spec.task) for n, s in specs.items()}
    bc = {k: prep.bc_info[k] for k in ("bc_success_ode", "bc_success_sde", "bc_steps")}
    rundir.write_json(bc_info_path, bc)
    print(f"[compare] {config.env.name}: {len(names)} method(s) x {len(seeds)} seeds {seeds}; BC ODE "
          f"{bc['bc_success_ode']:.3f} SDE {bc['bc_success_sde']:.3f}; device {compare.describe_device()}")
    order = []
    for n in names:
        # one result per method, or per method and sweep value ('<method>@<field>=<value>')
        labels = [n] if sweep is None else [f"{n}@{sweep[0]}={v:g}" for v in sweep[1]]
        order += labels
        paths = [os.path.join(outdir, "methods", f"{label}.json") for label in labels]
        if all(os.path.exists(p) for p in paths):
            print(f"[compare] {n}: done earlier ({', '.join(paths)})")
            continue
        print(f"[compare] {n}: {methods_lib.METHODS[n][0]}" + (f"; sweep {_SWEEP.value}" if sweep else ""))
        t0 = time.time()
        partial_paths = [os.path.join(outdir, "methods", f"{label}.partial") for label in labels]

        def save_partial(partials, labels=labels, partial_paths=partial_paths):
            for label, partial, path in zip(labels, partials, partial_paths):
                rundir.write_json(path, dict(partial, method=label, task=config.env.name))

        run_dir = os.path.join(outdir, "methods", f"{labels[0] if sweep is None else n + '@' + sweep[0]}.run")
        common = dict(eval_modes=tuple(_EVAL_MODES.value), checkpoint_dir=run_dir)
        args = (specs[n], prep.bc_params, seeds)
        if sweep is None:
            results = [compare.run_seeds(*args, on_eval=lambda r: save_partial([r]), **common)]
        else:
            results = compare.run_sweep(*args, "algo." + sweep[0], sweep[1], on_eval=save_partial, **common)
        for label, result, path, partial_path in zip(labels, results, paths, partial_paths):
            result.update({"method": label, "description": methods_lib.METHODS[n][0], "task": config.env.name,
                           "total_env_steps": config.train.total_env_steps})
            rundir.write_json(path, result)
            if os.path.exists(partial_path):
                os.remove(partial_path)
            finals = ", ".join(f"{k[len('success_'):]} {sum(v) / len(v):.3f} {v}" for k, v in result["final"].items())
            print(f"[compare] {label}: final {finals} in {time.time() - t0:.0f}s")
        # the per-seed training logs stay; the checkpoints are only for resuming
        shutil.rmtree(os.path.join(run_dir, "finetune", "checkpoints"), ignore_errors=True)
        report.write_report(outdir, report.load_results(outdir), order, bc, title)
    _report(outdir, report.load_results(outdir), order, bc, title)


def _parse_sweep(text: str):
    """'algo.actor_tau=0.005,0.02' -> ('actor_tau', [0.005, 0.02]); '' -> None."""
    if not text:
        return None
    field, eq, values = text.partition("=")
    if not eq or not field.startswith("algo."):
        raise ValueError(f"--sweep must look like algo.<field>=v1,v2,... , got {text!r}")
    if field[len("algo."):] not in SWEEPABLE:
        raise ValueError(f"--sweep field must be one of {['algo.' + f for f in SWEEPABLE]}, got {field!r}")
    try:
        return field[len("algo."):], [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--sweep values must be numbers, got {values!r}") from None


def _report(outdir, results, order, bc, title):
    paths = report.write_report(outdir, results, order, bc, title)
    print(open(paths["md"]).read())
    print(f"[compare] wrote {sorted(paths.values())}")


if __name__ == "__main__":
    app.run(cli.main(main))
