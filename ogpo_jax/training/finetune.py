"""Stage 3 of a run: finetuning the BC actor online with the config's algorithm.

`finetune_stage` drives `training/loop.py`'s compiled intervals: logging, non-finite handling,
evaluation of both samplers, checkpoints by env steps (resumed from the newest), SIGTERM /
SIGINT (finish the interval, checkpoint, stop) and a wall-clock budget.
"""
from __future__ import annotations

import functools
import os
import signal
import time

import jax
import numpy as np

from ogpo_jax.algorithms import base as algorithms
from ogpo_jax.algorithms.config import OGPOConfig
from ogpo_jax.training import distributed, loop, memory, progress, rundir
from ogpo_jax.training.checkpoint import Checkpointer
from ogpo_jax.training.config import check_divisible
from ogpo_jax.training.evaluation import agent_policy, evaluate_policies, make_evaluator
from ogpo_jax.training.logging import Logger
from ogpo_jax.training.plots import try_plot_run


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


def init_finetune_state(config, algo_cfg, env, episode_length, chunk_shape, obs_dim, bc_params, mesh=None,
                        seeds=None):
    """The initial loop state of a finetune run: one seed, S stacked seeds (leading seed axis), or
    one seed sharded over `mesh` (built directly in its shards). Each seed s uses the keys of
    `rundir.seed_stage_keys(s)`, so seed s reproduces `train.py --config.seed=s`; `seeds` defaults
    to `config.seed + i` for i < `config.num_seeds`."""
    tcfg = config.train
    n = 1 if mesh is None else mesh.size
    seeds = [config.seed + i for i in range(config.num_seeds)] if seeds is None else [int(s) for s in seeds]

    def init_one(k_agent, k_loop):
        agent = algorithms.get(algo_cfg.name).init(k_agent, obs_dim, chunk_shape, algo_cfg, actor_params=bc_params)
        return loop.init_loop(k_loop, env, agent, obs_dim, tcfg, episode_length, num_shards=n)

    keys = [rundir.seed_stage_keys(s) for s in seeds]
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


def eval_policies(algo_cfg: OGPOConfig, modes=("ode", "sde"), other_actor: bool = False) -> dict:
    """{name: policy} for `evaluate_policies`: the data-collecting actor (`act_with`) with each
    sampler in `modes`; `other_actor` adds 'ode_<other>', the other actor's ODE sampler."""
    policies = {m: functools.partial(agent_policy, m, algo_cfg.act_with) for m in modes}
    if other_actor:
        other = "current" if algo_cfg.act_with == "ema" else "ema"
        policies[f"ode_{other}"] = functools.partial(agent_policy, "ode", other)
    return policies


def _distinct_buffers(tree):
    """Copy every leaf into its own buffer: the interval donates its input, and XLA refuses to
    donate one buffer twice (actor and EMA actor start as the same BC arrays)."""
    return jax.tree_util.tree_map(lambda x: x.copy(), tree)


def finetune_stage(config, algo_cfg: OGPOConfig, env, episode_length, chunk_shape, obs_dim, bc_params,
                   evaluate, k_agent, k_loop, k_eval, workdir, log, stop_at: float | None = None) -> list:
    """Stage 3: OGPO finetuning (resumed from the latest checkpoint in workdir/finetune/checkpoints).
    Returns one summary dict per seed. `stop_at` (a `time.time()` value): stop after the first
    interval that ends past it, checkpoint and evaluate as at the end (a wall-clock budget)."""
    del k_agent, k_loop                       # per seed from rundir.seed_stage_keys (seed 0 = stage_keys)
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
        rundir.check_layout(workdir, mesh.size, num_seeds, resumed)
    except ValueError:
        ckpt.close()
        raise
    ls = init_finetune_state(config, algo_cfg, env, episode_length, chunk_shape, obs_dim, bc_params,
                             mesh if mesh.size > 1 else None)
    if resumed:
        ls = _distinct_buffers(ckpt.restore(ls))
        log(f"[finetune] resumed from checkpoint at {ckpt.latest_step()} env steps")
        ls, _ = loop.drop_nonfinite_rows(ls, log)
    eval_keys = [rundir.seed_stage_keys(s)[4] for s in seeds]
    if vmapped:
        evaluate = make_evaluator(env, chunk_shape[0], episode_length, tcfg.eval_episodes, vmap_seeds=True, log=log,
                                  what=f"evaluator, {num_seeds} seeds")
    other = "current" if algo_cfg.act_with == "ema" else "ema"
    policies = eval_policies(algo_cfg, other_actor=True)

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
    log_dirs = rundir.log_dirs(workdir, config)
    loggers = []
    for i, d in enumerate(log_dirs):
        if resumed and main:
            rundir.trim_log(d, int(steps0[i]))
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
                        try_plot_run(d, log)
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
            "train_nonfinite_episodes": rundir.logged_sum(log_dirs[i], "env/nonfinite_episodes") if main else None,
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
