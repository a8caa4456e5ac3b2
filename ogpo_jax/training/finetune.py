"""The finetune driver: the BC actor trained online by the config's algorithm, for one seed or
S seeds as one `vmap`-ed program. `train.py` (pipeline stage 3) and
`compare.py` (`compare.run_seeds`) both run it.

`run` drives `training/loop.py`'s compiled intervals through the small steps of `_Run`: `interval`
(one record per seed), `check_nonfinite` (one `NonFiniteError`), `evaluate` (every seed at once
when one is due, each with the eval key folded with the evaluation point, so every method meets
the same episodes there; a frozen policy is only evaluated), checkpoints by env steps
(resumed from the newest, with the logs trimmed to it), SIGTERM / SIGINT (finish the interval,
checkpoint, stop) and a wall-clock budget. A run directory holds

    finetune/checkpoints/, finetune/layout.json    the loop state and its devices / seeds
    metrics.jsonl (seed_<s>/metrics.jsonl per seed when S > 1)   one record per interval
"""
from __future__ import annotations

import dataclasses
import functools
import os
import signal
import time
from typing import Callable

import jax
import numpy as np

from ogpo_jax.algorithms import base as algorithms
from ogpo_jax.algorithms.config import AlgoConfig, with_hyperparams
from ogpo_jax.envs import core as env_core
from ogpo_jax.envs import host as host_env
from ogpo_jax.training import distributed, loop, memory, progress, rundir
from ogpo_jax.training.checkpoint import Checkpointer
from ogpo_jax.training.config import check_divisible
from ogpo_jax.training.evaluation import (SELECTION_MODES, agent_policy, alone_policy, evaluate_policies,
                                          has_selection, make_evaluator, select_policy)
from ogpo_jax.training.logging import Logger
from ogpo_jax.training.spec import RunSpec
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


def init_finetune_state(spec: RunSpec, bc_params, mesh=None):
    """The initial loop state of `spec`'s finetune run: one seed, S stacked members (leading seed
    axis), or one seed sharded over `mesh` (built directly in its shards). Each member with seed s
    uses the keys of `rundir.seed_stage_keys(s)`, so seed s reproduces `train.py --config.seed=s`;
    `spec.hparams` (one {field: value} per member) gives each member's agent the values of
    SWEEPABLE fields it carries as data (a sweep; seeds may repeat)."""
    tcfg, algo_cfg, task = spec.train, spec.algo, spec.task
    n = 1 if mesh is None else mesh.size
    seeds, hparams = list(spec.seeds), spec.hparams
    env, episode_length, obs_dim = task.env, task.episode_length, task.obs_dim

    def init_one(k_agent, k_loop, values=None):
        agent = algorithms.get(algo_cfg.name).init(k_agent, obs_dim, task.chunk_shape, algo_cfg,
                                                   actor_params=bc_params)
        if values:
            agent = with_hyperparams(agent, values)
        return loop.init_loop(k_loop, env, agent, obs_dim, tcfg, episode_length, num_shards=n)

    keys = [rundir.seed_stage_keys(s) for s in seeds]
    if n > 1:
        shapes = jax.eval_shape(init_one, keys[0][2], keys[0][3])
        shardings = distributed.loop_shardings(mesh, shapes)
        return _distinct_buffers(jax.jit(init_one, out_shardings=shardings,
                                         compiler_options=env_core.compiler_options(env))(keys[0][2], keys[0][3]))
    states = [init_one(k[2], k[3], None if hparams is None else hparams[i]) for i, k in enumerate(keys)]
    ls = states[0] if len(states) == 1 else loop.stack_seeds(states)
    # Commit the whole state to one device: the interval's outputs are committed, and a first call
    # on partly uncommitted inputs would compile the interval twice (measured on Can: +115 s).
    device = jax.devices()[0] if mesh is None else mesh.devices.flat[0]
    return _distinct_buffers(jax.device_put(ls, device))


def eval_policies(algo_cfg: AlgoConfig, modes=("ode", "sde"), other_actor: bool = False, select_n: int = 8,
                  select_aggregation: str = "mean") -> dict:
    """{name: policy} for `evaluate_policies`: the data-collecting actor (`act_with`) with each
    sampler in `modes`; `other_actor` adds 'ode_<other>', the other actor's ODE sampler. The modes
    'alone' and 'select' (`evaluation.SELECTION_MODES`) are the policy with no selection and the
    best of `select_n` by the target critics (`select_aggregation` of the heads); 'select' is left
    out for an algorithm with no chunked critic."""
    algo = algorithms.get(algo_cfg.name)
    policies = {}
    for m in modes:
        if m == "alone":
            policies[m] = functools.partial(alone_policy, algo_cfg.act_with)
        elif m == "select":
            if has_selection(algo):
                policies[m] = functools.partial(select_policy, int(select_n), select_aggregation, algo_cfg.act_with)
        else:
            policies[m] = functools.partial(agent_policy, m, algo_cfg.act_with)
    if other_actor:
        other = "current" if algo_cfg.act_with == "ema" else "ema"
        policies[f"ode_{other}"] = functools.partial(agent_policy, "ode", other)
    return policies


def _distinct_buffers(tree):
    """Copy every leaf into its own buffer: the interval donates its input, and XLA refuses to
    donate one buffer twice (actor and EMA actor start as the same BC arrays)."""
    return jax.tree_util.tree_map(lambda x: x.copy(), tree)


@dataclasses.dataclass(frozen=True)
class Evaluations:
    """When and with which samplers a finetune run evaluates. `modes`: the samplers of every
    evaluation (every `train.eval_every_env_steps`; at 0 env steps too with `at_start`); 'select'
    is dropped for an algorithm with no chunked critic. `final_modes`: the final evaluation's
    samplers (None: every sampler the driver builds, `eval_policies`; () for none). `on_eval()`:
    called after each evaluation (e.g. to save partial curves)."""
    modes: tuple = ("ode", "sde")
    at_start: bool = False
    final_modes: tuple | None = None
    on_eval: Callable[[], None] | None = None


def run(spec: RunSpec, bc_params, workdir: str, log=print, *, evals: Evaluations = Evaluations(), evaluate=None,
        stop_at: float | None = None, heartbeat_s: float | None = None, log_dirs=None) -> list:
    """Finetune `bc_params` as `spec` says in `workdir`, resuming from its newest checkpoint; one
    program for all of `spec.seeds` (vmapped when there are several).

    `evals`: the evaluations (`Evaluations`). `evaluate`: a non-vmapped evaluator to share (e.g.
    the BC stage's); several members build their own. `stop_at` (a `time.time()` value): stop after
    the first interval that ends past it, checkpoint and evaluate as at the end (a wall-clock
    budget). `heartbeat_s`: log env steps/s and rollout success this often. `log_dirs`: one log
    directory per member (default: the workdir for one seed, `seed_<s>/` for several). Returns one
    summary dict per member.
    """
    eval_modes, on_eval = tuple(evals.modes), evals.on_eval
    host_env.take_failure()           # forget a worker failure that an earlier run already reported
    r = _Run(spec, bc_params, workdir, log, evaluate, log_dirs, eval_modes)
    eval_modes = [m for m in eval_modes if m in r.policies]      # 'select' needs a chunked critic
    try:
        if evals.at_start and not r.resumed:
            r.log_records(r.evaluate(list(eval_modes), 0), [{"grad_steps": int(g), "wall_seconds": 0.0,
                                                                                "cpu_seconds": 0.0}
                                                          for g in r.grad_steps])
            if on_eval is not None:
                on_eval()
        if algorithms.get(spec.algo.name).frozen:
            r.evaluate_frozen(list(eval_modes), on_eval)
        elif r.env_steps.min() < r.tcfg.total_env_steps:
            r.compile()
        while r.env_steps.min() < r.tcfg.total_env_steps:
            if stop_at is not None and time.time() >= stop_at:
                r.cut = True
                log(f"[finetune] wall-clock budget reached at {int(r.env_steps.min())} env steps; stopping here")
                break
            records, bad = r.interval()
            r.check_nonfinite(records, bad)
            point = r.due_point()
            if point is not None:
                for rec, res in zip(records, r.evaluate(list(eval_modes), point)):
                    rec.update(res)
            _check_finite_records(records, r.ckpt.directory)
            r.log_records(records)
            if point is not None and on_eval is not None:
                on_eval()
            if heartbeat_s is not None:
                r.heartbeat(records, heartbeat_s)
            if r.env_steps.min() >= r.next_ckpt:
                r.checkpoint()
            if r.stop.received is not None:
                r.checkpoint()
                log(f"[finetune] {r.stop.received}: checkpointed at {int(r.env_steps.min())} env steps in "
                    f"{r.ckpt.directory}; rerun with the same --workdir to resume")
                raise KeyboardInterrupt(r.stop.received)
    except BaseException as e:
        steps = r.ckpt.all_steps()
        r.close()
        _raise_worker_failure(r.ckpt.directory, steps, int(r.env_steps.max()), e)
        raise
    r.checkpoint()
    r.close()
    final = list(r.policies) if evals.final_modes is None else [m for m in evals.final_modes if m in r.policies]
    return r.summaries(r.evaluate(final, final=True) if final else [{} for _ in r.seeds])


def _raise_worker_failure(ckpt_dir: str, steps: list, env_step, error: BaseException) -> None:
    """If a host worker failed inside the jitted env step that raised `error` (XLA wraps the
    worker's error in its own), raise it as the named WorkerError with where the run stands."""
    failure = host_env.take_failure()
    if failure is None or isinstance(error, host_env.WorkerError):
        return
    # the interval's input state was donated: what survives is the newest checkpoint
    raise host_env.WorkerError(
        f"{failure} (near env step {env_step}). Training stopped; "
        + (f"the newest checkpoint ({steps[-1]} env steps, in {ckpt_dir}) is intact: rerun the same command to "
           "continue from it with fresh workers and episodes." if steps else
           "no checkpoint was written yet: rerun the same command to start finetuning again.")) from None


def _wandb_settings(config, workdir: str, seed: int) -> dict | None:
    """`start_wandb` arguments of one seed's W&B run (None unless log.wandb): runs of one workdir
    form a group named after it, each run named after the workdir and its seed."""
    lc = config.log
    if not lc.wandb:
        return None
    base = os.path.basename(os.path.abspath(workdir))
    return dict(project=lc.wandb_project, entity=lc.wandb_entity, mode=lc.wandb_mode,
                name=f"{base}/seed{seed}", group=base, config=config.to_dict())


class _Run:
    """The state of one finetune run between intervals (host side) and its named steps."""

    def __init__(self, spec: RunSpec, bc_params, workdir, log, evaluate, log_dirs=None, eval_modes=()):
        config, algo_cfg, task = spec.config, spec.algo, spec.task
        tcfg = self.tcfg = config.train
        self.algo_cfg, self.chunk_shape, self.log = algo_cfg, task.chunk_shape, log
        self.main = distributed.is_main_process()
        self.seeds = list(spec.seeds)
        self.vmapped = len(self.seeds) > 1
        self.log_dirs = list(log_dirs) if log_dirs is not None else rundir.seed_log_dirs(workdir, self.seeds)
        if len(self.log_dirs) != len(self.seeds) or len(set(self.log_dirs)) != len(self.log_dirs):
            raise ValueError(f"log_dirs must be {len(self.seeds)} distinct directories, got {self.log_dirs}")
        mesh = distributed.make_mesh(config.distributed.num_devices)
        check_divisible(tcfg, algo_cfg, mesh.size)
        est = memory.estimate(config, task.obs_dim, task.chunk_shape[1], task.episode_length,
                              num_seeds=len(self.seeds))
        log(f"[finetune] {mesh.size} device(s) ({jax.devices()[0].platform}), {jax.process_count()} process(es); "
            f"{len(self.seeds)} seed(s) {self.seeds}; state {memory.describe(est)}")
        self.ckpt = Checkpointer(os.path.join(workdir, "finetune", "checkpoints"), tcfg.max_checkpoints)
        step = None
        try:
            had_checkpoints = self.ckpt.latest_step() is not None
            rundir.check_layout(workdir, mesh.size, len(self.seeds), had_checkpoints, self.seeds)
            env, episode_length = task.env, task.episode_length
            ls = init_finetune_state(spec, bc_params, mesh if mesh.size > 1 else None)
            # the newest checkpoint that passes its manifest; damaged newer ones are moved aside
            restored, step = self.ckpt.restore_newest_good(ls, log) if had_checkpoints else (None, None)
            self.resumed = restored is not None
            if self.resumed:
                ls = _distinct_buffers(restored)
                log(f"[finetune] resumed from checkpoint at {step} env steps")
                ls, _ = loop.drop_nonfinite_rows(ls, log)
                if not env_core.state_in_checkpoint(env):
                    ls = loop.restart_host_episodes(ls, env, tcfg, episode_length)
                    log("[finetune] host-simulated envs start fresh episodes (their simulator state is not "
                        "checkpointed)")
        except BaseException as e:
            steps = self.ckpt.all_steps()
            self.ckpt.close()
            _raise_worker_failure(self.ckpt.directory, steps, step or 0, e)
            raise
        self.ls = ls
        self.eval_keys = [rundir.seed_stage_keys(s)[4] for s in self.seeds]
        if self.vmapped or evaluate is None:
            evaluate = make_evaluator(env, task.horizon, episode_length, tcfg.eval_episodes,
                                      vmap_seeds=self.vmapped, log=log,
                                      what=f"evaluator, {len(self.seeds)} seeds" if self.vmapped else "evaluator")
        self.evaluator = evaluate
        extra = tuple(m for m in SELECTION_MODES if m in eval_modes)
        self.policies = eval_policies(algo_cfg, ("ode", "sde") + extra, other_actor=True,
                                      select_n=tcfg.get("eval_select_n", 8),
                                      select_aggregation=tcfg.get("eval_select_aggregation", "mean"))
        self.interval_fn = loop.make_interval(env, tcfg, tcfg.log_every_iterations, vmap_seeds=self.vmapped,
                                              mesh=mesh if mesh.size > 1 else None, donate=True)
        self.metric_names = loop.update_metric_names(ls, vmap_seeds=self.vmapped)
        self.env_steps = np.atleast_1d(np.asarray(jax.device_get(ls.env_steps))).astype(int)
        self.grad_steps = np.atleast_1d(np.asarray(jax.device_get(ls.agent.step)))
        self.loggers, elapsed, cpu_elapsed = [], 0.0, 0.0
        for i, d in enumerate(self.log_dirs):
            if had_checkpoints and not self.resumed and self.main:
                rundir.trim_log(d, -1)        # every checkpoint was damaged: the run starts over
            if self.resumed and self.main:
                rundir.trim_log(d, int(self.env_steps[i]))
                # wall-clock since the run's start, across resumes
                elapsed = max(elapsed, rundir.last_logged(d, "wall_seconds", 0.0))
                cpu_elapsed = max(cpu_elapsed, rundir.last_logged(d, "cpu_seconds", 0.0))
            self.loggers.append(
                Logger(d, tcfg.total_env_steps, int(self.env_steps[i]), config.log.tensorboard,
                       config.log.progress and i == 0,
                       purge_step=(int(self.env_steps[i]) + 1 if self.resumed else 0 if had_checkpoints else None),
                       wandb=_wandb_settings(config, workdir, self.seeds[i])) if self.main else None)
        every_eval, every_ckpt = tcfg.eval_every_env_steps, tcfg.checkpoint_every_env_steps
        self.next_eval = (int(self.env_steps.max()) // every_eval + 1) * every_eval
        self.next_ckpt = (int(self.env_steps.min()) // every_ckpt + 1) * every_ckpt
        self.stop = _StopSignal()
        self.t_start = time.time() - elapsed
        # the process's CPU time (all threads): on a machine shared with other jobs, a run pinned to
        # one core (taskset) has CPU seconds ~ the wall-clock it would take on that core alone
        self.cpu_start = time.process_time() - cpu_elapsed
        self.first, self.cut, self.compile_s = True, False, None
        self.warned_recompile = self.warned_skip = False
        self.beat = None           # (time, mean env steps, episodes, successes) at the last heartbeat

    def compile(self):
        tcfg = self.tcfg
        self.compile_s = progress.compile_program(
            self.interval_fn, (self.ls,), f"training interval ({tcfg.log_every_iterations} iterations of "
            f"{tcfg.num_envs} envs x {self.chunk_shape[0]} steps + {tcfg.updates_per_iteration} updates)", self.log)

    def interval(self):
        """Run one compiled interval -> (one record per seed, per seed None or (env step of the first
        discarded non-finite update, names of its non-finite metrics))."""
        t0 = time.time()
        prev_steps, prev_updates = self.env_steps, self.grad_steps
        self.ls, metrics = self.interval_fn(self.ls)
        metrics = jax.device_get(metrics)
        dt = time.time() - t0
        self.grad_steps = np.atleast_1d(np.asarray(jax.device_get(self.ls.agent.step)))
        per_seed = ([metrics] if not self.vmapped else
                    [{k: v[i] for k, v in metrics.items()} for i in range(len(self.seeds))])
        records = [loop.summarize_interval(m) for m in per_seed]
        self.env_steps = np.asarray([r["env_steps"] for r in records])
        for i, r in enumerate(records):
            r.update({
                "grad_steps": int(self.grad_steps[i]),
                "grad_steps_per_env_step": int(self.grad_steps[i]) / max(int(self.env_steps[i]), 1),
                "env_steps_per_s": float(self.env_steps[i] - prev_steps[i]) / dt,
                "updates_per_s": float(self.grad_steps[i] - prev_updates[i]) / dt,
                "wall_seconds": time.time() - self.t_start,
                "cpu_seconds": time.process_time() - self.cpu_start,
            })
            if self.first and self.compile_s is not None:
                r["compile_s"] = self.compile_s
                r["compile_and_first_interval_s"] = self.compile_s + dt
        if not self.first and self.interval_fn.compiles > 1 and not self.warned_recompile:
            self.log(f"[finetune] warning: the training interval was compiled again at env step "
                     f"{self.env_steps.max()} (inputs changed type, sharding or committed-ness); report this as a bug")
            self.warned_recompile = True
        self.first = False
        bad = []
        for m in per_seed:
            report = loop.nonfinite_report(m, self.metric_names)
            bad.append(None if report is None else (int(np.asarray(m["env_steps"])[report[0]]), report[1]))
        return records, bad

    def check_nonfinite(self, records, bad):
        """`train.nonfinite='stop'`: log, checkpoint the last good state and raise NonFiniteError on a
        discarded update; 'skip': warn once. Simulation blow-ups are logged either way."""
        seeds, vmapped = self.seeds, self.vmapped
        if self.tcfg.nonfinite == "stop" and any(b is not None for b in bad):
            i = next(j for j, b in enumerate(bad) if b is not None)
            at, names = bad[i]
            self.log_records(records)
            self.checkpoint()
            raise NonFiniteError(
                f"non-finite {', '.join(names)} in the {self.algo_cfg.name.upper()} update at env step {at}"
                + (f" (seed {seeds[i]})" if vmapped else "")
                + f", after {int(self.grad_steps[i])} good updates; training stopped. The last good state is "
                f"checkpointed at env step {int(self.env_steps.min())} in {self.ckpt.directory}. Set "
                "train.nonfinite='skip' to discard such updates and go on.")
        for i, r in enumerate(records):
            if r.get("env/nonfinite_episodes", 0) > 0 or r.get("env/nonfinite_transitions", 0) > 0:
                self.log(f"[finetune] {int(r.get('env/nonfinite_episodes', 0))} episode(s) ended by a non-finite "
                         f"simulation state before env step {int(self.env_steps[i])}"
                         + (f" (seed {seeds[i]})" if vmapped else "")
                         + f"; {int(r.get('env/nonfinite_transitions', 0))} non-finite transition(s) not stored")
        if self.tcfg.nonfinite == "skip" and not self.warned_skip and any(b is not None for b in bad):
            i = next(j for j, b in enumerate(bad) if b is not None)
            self.log(f"[finetune] warning: discarded update(s) with non-finite {', '.join(bad[i][1])} near env step "
                     f"{int(self.env_steps[i])} (train.nonfinite='skip'; the count is logged as nonfinite_updates)")
            self.warned_skip = True

    def evaluate_frozen(self, names, on_eval=None):
        """A frozen policy's run: evaluate it at every evaluation point up to
        `train.total_env_steps`, on the episodes any other method meets there, with no rollouts or
        updates in between (they could not change it); the loop state's env steps jump to each
        point so that the logs, checkpoints and summaries read as a finished run's."""
        total = self.tcfg.total_env_steps
        while self.env_steps.min() < total:
            point = min(self.next_eval, total)
            self.ls = self.ls.replace(env_steps=jax.numpy.full_like(self.ls.env_steps, point))
            self.env_steps = np.full_like(self.env_steps, point)
            records = [{"env_steps": point, "grad_steps": int(g), "wall_seconds": time.time() - self.t_start,
                        "cpu_seconds": time.process_time() - self.cpu_start} for g in self.grad_steps]
            for rec, res in zip(records, self.evaluate(names, point)):
                rec.update(res)
            self.log_records(records)
            if on_eval is not None:
                on_eval()
            if self.stop.received is not None:
                self.checkpoint()
                raise KeyboardInterrupt(self.stop.received)

    def due_point(self):
        """The evaluation point (env steps: a multiple of `train.eval_every_env_steps`, or
        `train.total_env_steps`) that the seeds have reached since the last evaluation, or None."""
        point = min(self.next_eval, self.tcfg.total_env_steps)
        return point if self.env_steps.max() >= point else None

    def evaluate(self, names, point=None, final=False):
        """Evaluate every seed with the samplers `names` -> per seed {eval/success_<name>,
        eval/nonfinite_<name>: episodes the simulation blew up in, counted as failures, eval_point}.
        Each seed's key is its eval key folded with the evaluation point `point` (10**9 for the
        final evaluation), not with the env steps the run happens to be at: every method and every
        interval size meets the same episodes at the same point."""
        if not final and point is None:
            raise ValueError("evaluate needs the evaluation point (env steps) or final=True")
        tag = 10**9 if final else int(point)
        keys = [jax.random.fold_in(k, tag) for k in self.eval_keys]
        t0 = time.time()
        res = jax.device_get(evaluate_policies(self.evaluator, self.policies, self.ls.agent,
                                               jax.numpy.stack(keys) if self.vmapped else keys[0], names))
        if not self.vmapped:
            res = jax.tree_util.tree_map(lambda x: np.asarray(x)[None], res)
        self.log(f"[eval] {'final, ' if final else ''}{int(np.max(self.env_steps))} env steps: "
                 + ", ".join(f"{n} {float(np.mean(res[n]['success'])):.3f}" for n in names)
                 + f" over {self.tcfg.eval_episodes} episodes" + (f" x {len(self.seeds)} seeds" if self.vmapped else "")
                 + f" ({time.time() - t0:.1f}s)")
        out = []
        for i in range(len(self.seeds)):
            r = {f"eval/success_{n}": float(res[n]["success"][i]) for n in names}
            r.update({f"eval/nonfinite_{n}": float(res[n]["nonfinite"][i]) for n in names})
            bad = {n: int(res[n]["nonfinite"][i]) for n in names if res[n]["nonfinite"][i] > 0}
            if bad:
                self.log(f"[eval] non-finite simulation (counted as failed) in {bad} evaluation episodes"
                         + (f" (seed {self.seeds[i]})" if self.vmapped else ""))
            if not final:
                r["eval_point"] = tag
            out.append(r)
        if not final:
            every = self.tcfg.eval_every_env_steps
            self.next_eval = (max(int(self.env_steps.max()), tag) // every + 1) * every
        return out

    def log_records(self, records, extra=None):
        for i, (lg, r, d) in enumerate(zip(self.loggers, records, self.log_dirs)):
            if extra is not None:
                r = dict(r, **extra[i])
            if lg is not None:
                lg.log(int(r.get("env_steps", self.env_steps[i])), r)
                if any(k.startswith("eval/") for k in r):
                    try_plot_run(d, self.log)

    def heartbeat(self, records, every_s):
        """A line with env steps/s (per seed) and the rollout success of the episodes finished since
        the last line (early on mostly the short, successful ones; failures end at the time limit)."""
        now = time.time()
        eps = sum(r.get("rollout/episodes", 0.0) for r in records)
        succ = sum(r.get("rollout/success", 0.0) * r.get("rollout/episodes", 0.0) for r in records)
        if self.beat is None:
            self.beat = (now, self.env_steps.mean(), 0.0, 0.0)
            return
        t, steps, b_eps, b_succ = self.beat
        b_eps, b_succ = b_eps + eps, b_succ + succ
        if now - t < every_s:
            self.beat = (t, steps, b_eps, b_succ)
            return
        rate = (self.env_steps.mean() - steps) / max(now - t, 1e-9)
        self.log(f"[finetune] {int(self.env_steps.mean())} env steps, {now - self.t_start:.1f}s: {rate:.0f} env "
                 f"steps/s (per seed), rollout success {b_succ / max(b_eps, 1):.2f} over {int(b_eps)} episodes")
        self.beat = (now, self.env_steps.mean(), 0.0, 0.0)

    def checkpoint(self):
        step = int(self.env_steps.min())
        if step not in self.ckpt.manager.all_steps():
            self.ckpt.save(step, self.ls)
        every = self.tcfg.checkpoint_every_env_steps
        self.next_ckpt = (step // every + 1) * every

    def close(self):
        self.ckpt.close()
        self.stop.restore()
        for lg in self.loggers:
            if lg is not None:
                lg.close()

    def summaries(self, final) -> list:
        outs = []
        for i in range(len(self.seeds)):
            outs.append({
                **{f"final_success_{m}": final[i][f"eval/success_{m}"] for m in self.policies
                   if f"eval/success_{m}" in final[i]},
                "final_nonfinite_episodes": {n: final[i][f"eval/nonfinite_{n}"] for n in self.policies
                                             if f"eval/nonfinite_{n}" in final[i]},
                "train_nonfinite_episodes": (rundir.logged_sum(self.log_dirs[i], "env/nonfinite_episodes")
                                             if self.main else None),
                "env_steps": int(self.env_steps[i]),
                "grad_steps": int(self.grad_steps[i]),
                "finetune_seconds": time.time() - self.t_start,
                "stopped_at_budget": self.cut,
                # compiled variants of the run's jitted programs: 1 training interval; evaluator
                # programs 2 when BC shares the evaluator (its samplers, then the agent's samplers)
                "compiled_programs": {"training_interval": int(self.interval_fn.compiles),
                                      "evaluator": int(getattr(self.evaluator, "compiles", 0))},
            })
        return outs


def _check_finite_records(records, ckpt_dir):
    for r in records:
        if not all(np.isfinite(v) for v in r.values() if isinstance(v, float)):
            names = sorted(k for k, v in r.items() if isinstance(v, float) and not np.isfinite(v))
            raise NonFiniteError(f"non-finite metrics at env step {r['env_steps']}: {names}; the last good "
                                 f"checkpoint is in {ckpt_dir}")
