"""The end-to-end pipeline: collect demos -> clipped BC -> OGPO finetune -> summary.json.

Each stage writes its output into the workdir and is skipped when that output already exists, so
rerunning with the same workdir resumes (the finetune stage from its latest orbax checkpoint).

    workdir/config.json            full resolved config
    workdir/demos.hdf5             scripted-expert demonstrations (robomimic layout), demos.json stats
    workdir/bc/                    BC actor checkpoint + bc.json (history, ODE/SDE success)
    workdir/finetune/checkpoints/  whole loop state (agent, replay, success buffer, envs, keys)
    workdir/metrics.jsonl, tb/     logs;  workdir/learning_curve.png  success vs env steps
    workdir/summary.json           the run summary
"""
from __future__ import annotations

import functools
import json
import os
import signal
import time

import jax
import numpy as np

from ogpo_jax import envs
from ogpo_jax.algorithms import ogpo
from ogpo_jax.algorithms.config import OGPOConfig
from ogpo_jax.data import demos as demo_io
from ogpo_jax.envs.experts import collect_demos
from ogpo_jax.training import bc as bc_lib
from ogpo_jax.training import distributed, loop, memory
from ogpo_jax.training.checkpoint import Checkpointer
from ogpo_jax.training.config import check_divisible, validate
from ogpo_jax.training import progress
from ogpo_jax.training.evaluation import evaluate_policies, make_evaluator
from ogpo_jax.training.logging import Logger
from ogpo_jax.training.plots import plot_run


def agent_policy(mode, actor, agent, obs, key):
    """Jittable policy of a whole TrainState for the evaluator (bind mode and actor with partial)."""
    return ogpo.act(agent, obs, key, mode=mode, actor=actor)


def write_json(path, obj):
    """Write `obj` as JSON atomically (temporary file + rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _plot(workdir, log):
    try:
        plot_run(workdir)
    except Exception as e:      # a plotting problem must never stop training
        log(f"[plot] learning curve not drawn: {type(e).__name__}: {e}")


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def stage_keys(config):
    """(demos, bc, agent init, loop, eval) PRNG keys of a run: every tool that must reproduce a
    stage of `run` (demo collection, restoring checkpoints, multi-seed comparisons) derives its key
    here."""
    return seed_stage_keys(config.seed)


def seed_stage_keys(seed: int):
    """`stage_keys` of a run with `config.seed = seed`."""
    return jax.random.split(jax.random.PRNGKey(seed), 5)


def collect_demos_to_file(config, env, expert, episode_length: int, path: str, key, log=print) -> dict:
    """Roll out `config.demos.num_demos` scripted-expert episodes and write them to `path`
    (robomimic layout, written atomically). Returns summary statistics."""
    if expert is None:
        raise ValueError(f"env.name={config.env.name!r} has no scripted expert; set demos.path")
    t0 = time.time()
    log(f"[demos] rolling out {config.demos.num_demos} scripted-expert episodes of up to {episode_length} "
        f"steps in parallel")
    rollouts = collect_demos(env, expert, config.demos.num_demos, episode_length, key, log=log)
    obs_layout = getattr(env, "obs_keys", None)
    stats = {
        "num_demos": int(config.demos.num_demos),
        "expert_success": float(np.mean(rollouts["success"])),
        "mean_length": float(np.mean(rollouts["length"])),
        "mean_success_length": float(np.mean(rollouts["length"][rollouts["success"]]))
        if rollouts["success"].any() else float("nan"),
        "seconds": time.time() - t0,
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    demo_io.write_hdf5(path, demo_io.episodes_from_rollouts(rollouts, obs_layout),
                       {"env_name": config.env.name, "env_kwargs": config.env.kwargs.to_dict(),
                        "expert_success": stats["expert_success"]})
    log(f"[demos] {stats['num_demos']} demos, expert success {stats['expert_success']:.3f}, mean length "
        f"{stats['mean_length']:.0f} steps, {stats['seconds']:.1f}s -> {path}")
    return stats


class Prepared(dict):
    """What the demo and BC stages leave for finetuning (attribute access to dict entries)."""
    __getattr__ = dict.__getitem__


def prepare(config, workdir: str, log=print) -> Prepared:
    """Stages 1-2 (demonstrations, clipped BC) for `config` in `workdir`, each skipped when its
    output exists. Returns env, episode_length, chunk_shape, obs_dim, algo_cfg, bc_params, bc_info,
    the stage keys and the final evaluator."""
    algo_cfg = validate(config)
    os.makedirs(workdir, exist_ok=True)
    env, expert, episode_length = envs.make(config.env.name, **config.env.kwargs.to_dict())
    horizon = config.env.chunk_horizon
    chunk_shape = (horizon, env.action_size)
    obs_dim = env.observation_size
    obs_layout = getattr(env, "obs_keys", None)      # ((robomimic key, size), ...) for MJX tasks
    k_demo, k_bc, k_agent, k_loop, k_eval = stage_keys(config)

    # ---------------------------------------------------------------- stage 1: demonstrations
    demo_path = config.demos.path or os.path.join(workdir, "demos.hdf5")
    if not os.path.exists(demo_path):
        if config.demos.path:
            raise FileNotFoundError(f"demos.path={config.demos.path!r}: file not found")
        demo_stats = collect_demos_to_file(config, env, expert, episode_length, demo_path, k_demo, log)
        write_json(os.path.join(workdir, "demos.json"), demo_stats)
    else:
        log(f"[demos] using {demo_path}")
    episodes, _ = demo_io.read_hdf5(demo_path, tuple(key for key, _ in obs_layout) if obs_layout else ("state",))
    if episodes[0]["obs"].shape[1] != obs_dim or episodes[0]["actions"].shape[1] != env.action_size:
        raise ValueError(f"{demo_path}: demos have obs/action dims {episodes[0]['obs'].shape[1]}/"
                         f"{episodes[0]['actions'].shape[1]}, env {config.env.name!r} has {obs_dim}/{env.action_size}")

    # One evaluator program per episode count: the BC early stop and the BC / finetune
    # evaluations share it when bc.eval_episodes == train.eval_episodes.
    final_eval = make_evaluator(env, horizon, episode_length, config.train.eval_episodes, log=log)
    bc_eval = (final_eval if config.bc.eval_episodes == config.train.eval_episodes else
               make_evaluator(env, horizon, episode_length, config.bc.eval_episodes, log=log))
    bc_policies = {m: bc_lib.actor_policy(algo_cfg, chunk_shape, m) for m in ("ode", "sde")}

    # ---------------------------------------------------------------- stage 2: clipped BC
    bc_dir = os.path.join(workdir, "bc")
    bc_json = os.path.join(bc_dir, "bc.json")
    bc_ckpt = Checkpointer(os.path.join(bc_dir, "actor"), max_to_keep=1, process_local=True)
    template = ogpo.init(k_agent, obs_dim, chunk_shape, algo_cfg)
    if os.path.exists(bc_json) and bc_ckpt.latest_step() is not None:
        bc_params = bc_ckpt.restore(template.actor)
        bc_info = _read_json(bc_json)
        log(f"[bc] restored from {bc_dir}: ODE {bc_info['bc_success_ode']:.3f}, SDE {bc_info['bc_success_sde']:.3f}")
    else:
        t0 = time.time()
        dataset = demo_io.chunk_windows(episodes, horizon)
        stop_mode = config.bc.eval_mode

        def bc_evaluate(params, key):
            return evaluate_policies(bc_eval, bc_policies, params, key, [stop_mode])[stop_mode]

        bc_params, history = bc_lib.train_bc(algo_cfg, chunk_shape, obs_dim, dataset, bc_evaluate, config.bc, k_bc,
                                             log)
        bc_info = {"history": history, "bc_seconds": time.time() - t0, "bc_steps": history[-1]["bc_step"]}
        t1 = time.time()
        res = evaluate_policies(final_eval, bc_policies, bc_params, k_eval)
        for mode in ("ode", "sde"):
            bc_info[f"bc_success_{mode}"] = float(res[mode]["success"])
        bc_info["bc_final_eval_seconds"] = time.time() - t1
        bc_ckpt.save(bc_info["bc_steps"], bc_params)
        write_json(bc_json, bc_info)
        log(f"[bc] done in {bc_info['bc_seconds']:.1f}s: ODE {bc_info['bc_success_ode']:.3f}, "
            f"SDE {bc_info['bc_success_sde']:.3f} over {config.train.eval_episodes} episodes")
    bc_ckpt.close()
    return Prepared(env=env, episode_length=episode_length, chunk_shape=chunk_shape, obs_dim=obs_dim,
                    algo_cfg=algo_cfg, bc_params=bc_params, bc_info=bc_info, final_eval=final_eval,
                    k_agent=k_agent, k_loop=k_loop, k_eval=k_eval)


def run(config, workdir: str, log=print, stop_at: float | None = None) -> dict:
    """Run (or resume) the whole pipeline for `config` in `workdir`; returns the summary dict.

    `config.num_seeds = S > 1`: the demos and the BC actor are made once (seed `config.seed`) and
    finetuned with seeds seed, ..., seed + S - 1 as one vmapped program; each seed logs into
    `workdir/seed_<seed>/` (metrics.jsonl, tb/, learning_curve.png, summary.json) and
    `workdir/summary.json` holds every seed's summary and their mean.
    Multi-host: only process 0 prints and writes files; the others wait for its demos and BC.
    `stop_at` (a `time.time()` value): end finetuning at the first log interval past it (a
    wall-clock budget; `benchmarks/device_suite.py`), checkpointed and evaluated as at the end.
    `train.matmul_precision` applies to every program the run compiles.
    """
    validate(config)
    precision = config.train.matmul_precision or None
    with jax.default_matmul_precision(precision):
        return _run(config, workdir, log, stop_at)


def _run(config, workdir, log, stop_at):
    # the device-memory budget, before anything is written or allocated
    env, _, episode_length = envs.make(config.env.name, **config.env.kwargs.to_dict())
    memory.check_fits(config, env.observation_size, env.action_size, episode_length)
    main = distributed.is_main_process()
    if not main:
        log = _silent
    start = time.time()
    n_compiles = len(progress.COMPILES)
    os.makedirs(workdir, exist_ok=True)
    if main:
        write_json(os.path.join(workdir, "config.json"), config.to_dict())
        warn_if_oversized(config, log)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        if main:
            p = prepare(config, workdir, log)
        multihost_utils.sync_global_devices("ogpo_jax: demos and BC ready")
        if not main:
            p = prepare(config, workdir, log)
    else:
        p = prepare(config, workdir, log)
    bc_info = p.bc_info

    # ---------------------------------------------------------------- stage 3: OGPO finetune
    finetune = finetune_stage(config, p.algo_cfg, p.env, p.episode_length, p.chunk_shape, p.obs_dim, p.bc_params,
                              p.final_eval, p.k_agent, p.k_loop, p.k_eval, workdir, log, stop_at=stop_at)
    demos_json = os.path.join(workdir, "demos.json")
    demo_stats = _read_json(demos_json) if os.path.exists(demos_json) else {}
    head = {
        "expert_success": demo_stats.get("expert_success"),
        "demos_seconds": demo_stats.get("seconds"),
        "bc_seconds": bc_info["bc_seconds"],
        "bc_success_ode": bc_info["bc_success_ode"],
        "bc_success_sde": bc_info["bc_success_sde"],
        "bc_steps": bc_info["bc_steps"],
        # this process's compiles, in order (a resumed run lists only what it compiled again)
        "compiles": progress.COMPILES[n_compiles:],
    }
    if config.num_seeds == 1:
        summary = {**head, **finetune[0], "wall_seconds": time.time() - start, "config": config.to_dict()}
    else:
        seeds = [config.seed + i for i in range(config.num_seeds)]
        per_seed = []
        for seed, out in zip(seeds, finetune):
            per_seed.append({**head, **out, "seed": seed})
            if main:
                write_json(os.path.join(seed_dir(workdir, seed), "summary.json"), per_seed[-1])
        summary = {**head, "seeds": seeds, "per_seed": per_seed, "wall_seconds": time.time() - start,
                   "config": config.to_dict()}
        for k in finetune[0]:
            if k.startswith("final_success"):
                summary[k] = float(np.mean([out[k] for out in finetune]))
        summary["env_steps"] = int(np.max([out["env_steps"] for out in finetune]))
    if main:
        write_json(os.path.join(workdir, "summary.json"), summary)
        for d in _log_dirs(workdir, config):
            _plot(d, log)
    log(f"[done] BC ODE {summary['bc_success_ode']:.3f} -> final ODE {summary['final_success_ode']:.3f} "
        f"(SDE {summary['final_success_sde']:.3f}) in {summary['env_steps']} env steps"
        + (f", mean of {config.num_seeds} seeds" if config.num_seeds > 1 else "") + "; summary.json written")
    return summary


# Can control steps per second of MJX on a 2-core CPU at batches >= 64
# (benchmarks/results/env_throughput.md); the figure the warning below estimates with.
CPU_CAN_CONTROL_STEPS_PER_S = 400


def warn_if_oversized(config, log=print) -> str | None:
    """One line when a preset sized for an accelerator (`train.sized_for='gpu'`) starts on a CPU,
    with a lower bound on its wall time there and the CPU preset to use instead."""
    if config.train.sized_for != "gpu" or jax.default_backend() != "cpu":
        return None
    sim_s = config.train.total_env_steps / CPU_CAN_CONTROL_STEPS_PER_S
    iters = config.train.total_env_steps / (config.train.num_envs * config.env.chunk_horizon)
    updates = int(iters * config.train.updates_per_iteration)
    msg = (f"[train] note: this preset is sized for one GPU and JAX runs on the CPU here. Its "
           f"{config.train.total_env_steps:,} env steps alone take >= {progress.duration(sim_s)} of simulation on a "
           f"2-core CPU (~{CPU_CAN_CONTROL_STEPS_PER_S} control steps/s), plus {updates:,} updates of "
           f"{len(config.algo.actor_hidden_dims)}x{config.algo.actor_hidden_dims[0]} networks, demos and BC. "
           f"For a CPU-sized run use the ':quick' preset (e.g. --config=configs/{config.env.name}.py:quick).")
    log(msg)
    return msg


def _silent(*_args, **_kwargs):
    pass


def seed_dir(workdir: str, seed: int) -> str:
    """Log directory of one seed of a `num_seeds > 1` run."""
    return os.path.join(workdir, f"seed_{seed}")


def _log_dirs(workdir: str, config) -> list:
    if config.num_seeds == 1:
        return [workdir]
    return [seed_dir(workdir, config.seed + i) for i in range(config.num_seeds)]


class NonFiniteError(FloatingPointError):
    """Training stopped on a non-finite loss, gradient or Q-value (`train.nonfinite='stop'`)."""


class _StopSignal:
    """SIGTERM / SIGINT during finetuning: finish the interval, checkpoint, then stop."""

    def __init__(self):
        self.received = None
        self._old = {}
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        except ValueError:       # not the main thread: no handlers, stop only on exceptions
            self._old = {}

    def _handle(self, signum, _frame):
        if self.received is not None:            # second signal: stop at once
            self.restore()
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def restore(self):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}


def _trim_log(log_dir: str, env_steps: int) -> int:
    """Drop metrics.jsonl records written after the checkpoint being resumed (they will be
    logged again); returns the number of records kept (the logger position)."""
    path = os.path.join(log_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    keep = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:         # a line cut short by a kill
            break
        if rec.get("env_steps", 0) > env_steps:
            break
        keep.append(line if line.endswith("\n") else line + "\n")
    if len(keep) != len(lines):
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(keep)
        os.replace(tmp, path)
    return len(keep)


def init_finetune_state(config, algo_cfg, env, episode_length, chunk_shape, obs_dim, bc_params, mesh=None):
    """The initial loop state of a finetune run: one seed (`num_seeds == 1`), S stacked seeds, or
    one seed sharded over `mesh` (built directly in its shards). Seed i uses the keys of
    `config.seed + i` (`seed_stage_keys`)."""
    tcfg = config.train
    n = 1 if mesh is None else mesh.size
    seeds = [config.seed + i for i in range(config.num_seeds)]

    def init_one(k_agent, k_loop):
        agent = ogpo.init(k_agent, obs_dim, chunk_shape, algo_cfg, actor_params=bc_params)
        return loop.init_loop(k_loop, env, agent, obs_dim, tcfg, episode_length, num_shards=n)

    keys = [seed_stage_keys(s) for s in seeds]
    if n > 1:
        from ogpo_jax.envs import core as env_core
        shapes = jax.eval_shape(init_one, keys[0][2], keys[0][3])
        shardings = distributed.loop_shardings(mesh, shapes)
        return _distinct_buffers(jax.jit(init_one, out_shardings=shardings,
                                         compiler_options=env_core.compiler_options(env))(keys[0][2], keys[0][3]))
    states = [init_one(k[2], k[3]) for k in keys]
    ls = states[0] if len(states) == 1 else loop.stack_seeds(states)
    # Commit the whole state to one device: the interval's outputs are committed, and a first call
    # on partly uncommitted inputs would compile the interval twice (measured on Can: +115 s).
    device = jax.devices()[0] if mesh is None else mesh.devices.flat[0]
    return _distinct_buffers(jax.device_put(ls, device))


def _distinct_buffers(tree):
    """Copy every leaf into its own buffer: the interval donates its input, and XLA refuses to
    donate one buffer twice (actor and EMA actor start as the same BC arrays)."""
    return jax.tree_util.tree_map(lambda x: x.copy(), tree)


def finetune_stage(config, algo_cfg: OGPOConfig, env, episode_length, chunk_shape, obs_dim, bc_params,
                   evaluate, k_agent, k_loop, k_eval, workdir, log, stop_at: float | None = None) -> list:
    """Stage 3: OGPO finetuning (resumed from the latest checkpoint in workdir/finetune/checkpoints).
    Returns one summary dict per seed. `stop_at` (a `time.time()` value): stop after the first
    interval that ends past it, checkpoint and evaluate as at the end (a wall-clock budget)."""
    del k_agent, k_loop                       # per seed from seed_stage_keys (seed 0 = stage_keys)
    tcfg = config.train
    main = distributed.is_main_process()
    num_seeds = int(config.num_seeds)
    seeds = [config.seed + i for i in range(num_seeds)]
    vmapped = num_seeds > 1
    mesh = distributed.make_mesh(config.distributed.num_devices)
    check_divisible(tcfg, algo_cfg, mesh.size)
    est = memory.estimate(config, obs_dim, chunk_shape[1], episode_length)   # checked in run()
    log(f"[finetune] {mesh.size} device(s) ({jax.devices()[0].platform}), {jax.process_count()} process(es); "
        f"{num_seeds} seed(s) {seeds}; state {memory.describe(est)}")
    ckpt = Checkpointer(os.path.join(workdir, "finetune", "checkpoints"), tcfg.max_checkpoints)
    resumed = ckpt.latest_step() is not None
    try:
        check_layout(workdir, mesh.size, num_seeds, resumed)
    except ValueError:
        ckpt.close()
        raise
    ls = init_finetune_state(config, algo_cfg, env, episode_length, chunk_shape, obs_dim, bc_params,
                             mesh if mesh.size > 1 else None)
    if resumed:
        ls = _distinct_buffers(ckpt.restore(ls))
        log(f"[finetune] resumed from checkpoint at {ckpt.latest_step()} env steps")
        ls, _ = loop.drop_nonfinite_rows(ls, log)
    eval_keys = [seed_stage_keys(s)[4] for s in seeds]
    if vmapped:
        evaluate = make_evaluator(env, chunk_shape[0], episode_length, tcfg.eval_episodes, vmap_seeds=True, log=log,
                                  what=f"evaluator, {num_seeds} seeds")
    other = "current" if algo_cfg.act_with == "ema" else "ema"
    policies = {
        "ode": functools.partial(agent_policy, "ode", algo_cfg.act_with),
        "sde": functools.partial(agent_policy, "sde", algo_cfg.act_with),
        f"ode_{other}": functools.partial(agent_policy, "ode", other),
    }

    def run_eval(ls, tags, final=False):
        """-> per seed {eval/success_<policy>: value, eval/nonfinite_<policy>: episodes the
        simulation blew up in (counted as failures)}; tags: per-seed fold_in of the eval key."""
        # intermediate evaluations skip the actor that does not collect data (one policy less of
        # full-length episodes; that matters for MJX tasks on CPU)
        names = list(policies) if final else ["ode", "sde"]
        keys = [jax.random.fold_in(k, t) for k, t in zip(eval_keys, tags)]
        t0 = time.time()
        res = jax.device_get(evaluate_policies(evaluate, policies, ls.agent, jax.numpy.stack(keys) if vmapped
                                               else keys[0], names))
        if not vmapped:
            res = jax.tree_util.tree_map(lambda x: np.asarray(x)[None], res)
        log(f"[eval] {'final, ' if final else ''}{int(np.max(env_steps))} env steps: "
            + ", ".join(f"{n} {float(np.mean(res[n]['success'])):.3f}" for n in names)
            + f" over {tcfg.eval_episodes} episodes" + (f" x {num_seeds} seeds" if vmapped else "")
            + f" ({time.time() - t0:.1f}s)")
        out = []
        for i in range(num_seeds):
            r = {f"eval/success_{n}": float(res[n]["success"][i]) for n in names}
            r.update({f"eval/nonfinite_{n}": float(res[n]["nonfinite"][i]) for n in names})
            bad = {n: int(res[n]["nonfinite"][i]) for n in names if res[n]["nonfinite"][i] > 0}
            if bad:
                log(f"[eval] non-finite simulation (counted as failed) in {bad} evaluation episodes"
                    + (f" (seed {seeds[i]})" if vmapped else ""))
            out.append(r)
        return out

    interval = loop.make_interval(env, tcfg, tcfg.log_every_iterations, vmap_seeds=vmapped,
                                  mesh=mesh if mesh.size > 1 else None, donate=True)
    metric_names = loop.update_metric_names(ls, vmap_seeds=vmapped)
    steps0 = np.atleast_1d(np.asarray(jax.device_get(ls.env_steps))).astype(int)
    log_dirs = _log_dirs(workdir, config)
    loggers = []
    for i, d in enumerate(log_dirs):
        if resumed and main:
            _trim_log(d, int(steps0[i]))
        loggers.append(Logger(d, tcfg.total_env_steps, int(steps0[i]), config.log.tensorboard,
                              config.log.progress and i == 0, purge_step=int(steps0[i]) + 1 if resumed else None)
                       if main else None)
    every_eval, every_ckpt = tcfg.eval_every_env_steps, tcfg.checkpoint_every_env_steps
    next_eval = (steps0 // every_eval + 1) * every_eval
    next_ckpt = (int(steps0.min()) // every_ckpt + 1) * every_ckpt
    env_steps = steps0
    stop = _StopSignal()
    grad_steps = np.atleast_1d(np.asarray(jax.device_get(ls.agent.step)))
    t_start, first, warned_recompile, warned_skip = time.time(), True, False, False

    def save(step):
        if int(step) not in ckpt.manager.all_steps():
            ckpt.save(int(step), ls)

    def close_logs():
        for lg in loggers:
            if lg is not None:
                lg.close()

    cut = False                 # stopped at `stop_at` (a wall-clock budget) before total_env_steps
    try:
        if env_steps.min() < tcfg.total_env_steps:
            iters = tcfg.log_every_iterations
            compile_s = progress.compile_program(
                interval, (ls,), f"training interval ({iters} iterations of {tcfg.num_envs} envs x "
                f"{chunk_shape[0]} steps + {tcfg.updates_per_iteration} updates)", log)
        while env_steps.min() < tcfg.total_env_steps:
            if stop_at is not None and time.time() >= stop_at:
                cut = True
                log(f"[finetune] wall-clock budget reached at {int(env_steps.min())} env steps; stopping here")
                break
            t0 = time.time()
            prev_steps = env_steps
            prev_updates = grad_steps
            ls, metrics = interval(ls)
            metrics = jax.device_get(metrics)
            dt = time.time() - t0
            grad_steps = np.atleast_1d(np.asarray(jax.device_get(ls.agent.step)))
            per_seed = [metrics] if not vmapped else [{k: v[i] for k, v in metrics.items()} for i in range(num_seeds)]
            records = [loop.summarize_interval(m) for m in per_seed]
            env_steps = np.asarray([r["env_steps"] for r in records])
            bad = [loop.nonfinite_report(m, metric_names) for m in per_seed]
            for i, r in enumerate(records):
                r.update({
                    "grad_steps": int(grad_steps[i]),
                    "grad_steps_per_env_step": int(grad_steps[i]) / max(int(env_steps[i]), 1),
                    "env_steps_per_s": float(env_steps[i] - prev_steps[i]) / dt,
                    "updates_per_s": float(grad_steps[i] - prev_updates[i]) / dt,
                    "wall_seconds": time.time() - t_start,
                })
                if first:
                    r["compile_s"] = compile_s
                    r["compile_and_first_interval_s"] = compile_s + dt
            if not first and interval._cache_size() > 1 and not warned_recompile:
                log(f"[finetune] warning: the training interval was compiled again at env step {env_steps.max()} "
                    "(inputs changed type, sharding or committed-ness); report this as a bug")
                warned_recompile = True
            first = False
            if tcfg.nonfinite == "stop" and any(b is not None for b in bad):
                i = next(j for j, b in enumerate(bad) if b is not None)
                row, names = bad[i]
                at = int(np.asarray(per_seed[i]["env_steps"])[row])
                for lg, r in zip(loggers, records):
                    if lg is not None:
                        lg.log(int(r["env_steps"]), r)
                save(int(env_steps.min()))
                raise NonFiniteError(
                    f"non-finite {', '.join(names)} in the OGPO update at env step {at}"
                    + (f" (seed {seeds[i]})" if vmapped else "")
                    + f", after {int(grad_steps[i])} good updates; training stopped. The last good state is "
                    f"checkpointed at env step {int(env_steps.min())} in {ckpt.directory}. Set "
                    "train.nonfinite='skip' to discard such updates and go on.")
            for i, r in enumerate(records):
                if r.get("env/nonfinite_episodes", 0) > 0 or r.get("env/nonfinite_transitions", 0) > 0:
                    log(f"[finetune] {int(r.get('env/nonfinite_episodes', 0))} episode(s) ended by a non-finite "
                        f"simulation state before env step {int(env_steps[i])}"
                        + (f" (seed {seeds[i]})" if vmapped else "")
                        + f"; {int(r.get('env/nonfinite_transitions', 0))} non-finite transition(s) not stored")
            if tcfg.nonfinite == "skip" and not warned_skip and any(b is not None for b in bad):
                i = next(j for j, b in enumerate(bad) if b is not None)
                log(f"[finetune] warning: discarded update(s) with non-finite {', '.join(bad[i][1])} near env step "
                    f"{int(env_steps[i])} (train.nonfinite='skip'; the count is logged as nonfinite_updates)")
                warned_skip = True
            due = env_steps >= np.minimum(next_eval, tcfg.total_env_steps)
            if due.any():
                res = run_eval(ls, [int(x) for x in env_steps])
                for i in np.flatnonzero(due):
                    records[i].update(res[i])
                next_eval = np.where(due, (env_steps // every_eval + 1) * every_eval, next_eval)
            for r in records:
                finite = [np.isfinite(v) for v in r.values() if isinstance(v, float)]
                if not all(finite):
                    names = sorted(k for k, v in r.items() if isinstance(v, float) and not np.isfinite(v))
                    raise NonFiniteError(f"non-finite metrics at env step {r['env_steps']}: {names}; the last good "
                                         f"checkpoint is in {ckpt.directory}")
            for lg, r, d in zip(loggers, records, log_dirs):
                if lg is not None:
                    lg.log(int(r["env_steps"]), r)
                    if any(k.startswith("eval/") for k in r):
                        _plot(d, log)
            if env_steps.min() >= next_ckpt:
                save(int(env_steps.min()))
                next_ckpt = (int(env_steps.min()) // every_ckpt + 1) * every_ckpt
            if stop.received is not None:
                save(int(env_steps.min()))
                log(f"[finetune] {stop.received}: checkpointed at {int(env_steps.min())} env steps in "
                    f"{ckpt.directory}; rerun with the same --workdir to resume")
                raise KeyboardInterrupt(stop.received)
    except BaseException:
        ckpt.close()
        raise
    finally:
        stop.restore()
        close_logs()
    save(int(env_steps.min()))
    ckpt.close()
    final = run_eval(ls, [10**9] * num_seeds, final=True)
    outs = []
    for i in range(num_seeds):
        outs.append({
            "final_success_ode": final[i]["eval/success_ode"],
            "final_success_sde": final[i]["eval/success_sde"],
            f"final_success_ode_{other}": final[i][f"eval/success_ode_{other}"],
            "final_nonfinite_episodes": {n: final[i][f"eval/nonfinite_{n}"] for n in policies},
            "train_nonfinite_episodes": _logged_sum(log_dirs[i], "env/nonfinite_episodes") if main else None,
            "env_steps": int(env_steps[i]),
            "grad_steps": int(grad_steps[i]),
            "finetune_seconds": time.time() - t_start,
            "stopped_at_budget": cut,
            # compiled variants of the run's jitted programs: 1 training interval; evaluator
            # programs 2 when BC shares the evaluator (its samplers, then the agent's samplers)
            "compiled_programs": {"training_interval": int(interval._cache_size()),
                                  "evaluator": int(evaluate.jitted._cache_size())},
        })
    return outs


def _logged_sum(log_dir: str, key: str) -> float:
    """Sum of `key` over a run's metrics.jsonl (every interval since the start, across resumes)."""
    path = os.path.join(log_dir, "metrics.jsonl")
    total = 0.0
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    total += float(json.loads(line).get(key, 0.0))
                except (json.JSONDecodeError, TypeError, ValueError):
                    continue
    return total


# ----------------------------------------------------------------------------- reloading runs

def _layout_path(workdir: str) -> str:
    return os.path.join(workdir, "finetune", "layout.json")


def read_layout(workdir: str) -> dict:
    """How a run's finetune checkpoints are laid out: ring blocks (devices) and stacked seeds."""
    path = _layout_path(workdir)
    return _read_json(path) if os.path.exists(path) else {"num_shards": 1, "num_seeds": 1}


def check_layout(workdir: str, num_shards: int, num_seeds: int, has_checkpoint: bool) -> None:
    """A run resumes only with the device count and seed count its checkpoints were written with."""
    old = read_layout(workdir)
    if has_checkpoint and (old["num_shards"], old["num_seeds"]) != (num_shards, num_seeds):
        raise ValueError(
            f"{workdir}: its finetune checkpoints were written with {old['num_shards']} device(s) and "
            f"{old['num_seeds']} seed(s), this run has {num_shards} device(s) and {num_seeds} seed(s); resume "
            f"with --config.distributed.num_devices={old['num_shards']} --config.num_seeds={old['num_seeds']}")
    if distributed.is_main_process():
        os.makedirs(os.path.dirname(_layout_path(workdir)), exist_ok=True)
        write_json(_layout_path(workdir), {"num_shards": int(num_shards), "num_seeds": int(num_seeds)})


def load_run_config(workdir: str):
    """The resolved config a run wrote into `workdir/config.json`, as a ConfigDict."""
    from ml_collections import ConfigDict
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: not found; is {workdir!r} the --workdir of a train.py run?")
    try:
        cfg = _read_json(path)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("algo"), dict):
        raise ValueError(f"{path}: not a run config (no 'algo' section)")
    # JSON turns tuples into lists; OGPOConfig wants tuples for its layer sizes
    for k, v in cfg["algo"].items():
        if isinstance(v, list):
            cfg["algo"][k] = tuple(v)
    # runs written by older versions lack newer fields: take their defaults
    from ogpo_jax.training import defaults
    full = defaults.get_config().to_dict()
    for k, v in full.items():
        if k not in cfg:
            cfg[k] = v
        elif isinstance(v, dict) and isinstance(cfg[k], dict) and k != "env":
            cfg[k] = {**v, **cfg[k]}
    return ConfigDict(cfg)


def restore_policy(config, workdir: str, source: str = "latest"):
    """Restore a trained policy from a run directory.

    source: 'bc' (the clipped BC actor), 'latest' (the newest finetune checkpoint, or the BC actor
    if finetuning has not saved one) or an env-step number of a finetune checkpoint.
    Returns (params, policies, description): `policies` maps sampler names to jittable
    `policy(params, obs, key) -> chunks` (BC: 'ode', 'sde'; finetune: also 'best_of_n').
    """
    algo_cfg = validate(config)
    env, _, episode_length = envs.make(config.env.name, **config.env.kwargs.to_dict())
    chunk_shape = (config.env.chunk_horizon, env.action_size)
    _, _, k_agent, k_loop, _ = stage_keys(config)
    ckpt_dir = os.path.join(workdir, "finetune", "checkpoints")
    use_bc = source == "bc"
    if not use_bc:
        ckpt = Checkpointer(ckpt_dir, config.train.max_checkpoints) if os.path.isdir(ckpt_dir) else None
        step = None if source == "latest" else int(source)
        if ckpt is None or ckpt.latest_step() is None:
            if ckpt is not None:
                ckpt.close()
            if source != "latest":
                raise FileNotFoundError(f"no finetune checkpoints in {ckpt_dir}")
            use_bc = True
        else:
            steps = ckpt.manager.all_steps()
            if step is not None and step not in steps:
                ckpt.close()
                raise FileNotFoundError(f"checkpoint step {step} not in {ckpt_dir} (have {sorted(steps)})")
            layout = read_layout(workdir)
            one = lambda: loop.init_loop(  # noqa: E731
                k_loop, env, ogpo.init(k_agent, env.observation_size, chunk_shape, algo_cfg),
                env.observation_size, config.train, episode_length, num_shards=layout["num_shards"])
            seeds = layout["num_seeds"]
            template = jax.eval_shape(lambda: loop.stack_seeds([one()] * seeds) if seeds > 1 else one())
            ls = ckpt.restore(template, step)
            ckpt.close()
            what = f"finetune checkpoint at {{}} env steps ({ckpt_dir})"
            if seeds > 1:                  # a num_seeds run: the first seed's agent
                ls = loop.unstack_seed(ls, 0)
                what += f", seed {config.seed} of {seeds}"
            modes = ("ode", "sde", "best_of_n")
            policies = {m: functools.partial(agent_policy, m, algo_cfg.act_with) for m in modes}
            return ls.agent, policies, what.format(int(ls.env_steps))
    bc_ckpt = Checkpointer(os.path.join(workdir, "bc", "actor"), max_to_keep=1)
    if bc_ckpt.latest_step() is None:
        raise FileNotFoundError(f"no BC actor in {os.path.join(workdir, 'bc', 'actor')}")
    template = jax.eval_shape(lambda: ogpo.init(k_agent, env.observation_size, chunk_shape, algo_cfg).actor)
    params = bc_ckpt.restore(template)
    bc_ckpt.close()
    policies = {m: bc_lib.actor_policy(algo_cfg, chunk_shape, m) for m in ("ode", "sde")}
    return params, policies, f"BC actor ({os.path.join(workdir, 'bc', 'actor')})"
