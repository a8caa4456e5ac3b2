"""The end-to-end pipeline: collect demos -> clipped BC -> finetune -> summary.json.

Each stage writes its output into the workdir (layout: `training/rundir.py`) and is skipped when
that output already exists, so rerunning with the same workdir resumes (the finetune stage from
its latest checkpoint, `training/finetune.py`).
"""
from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

import jax
import numpy as np

from ogpo_jax import encoders
from ogpo_jax.data import demos as demo_io
from ogpo_jax.training import bc as bc_lib
from ogpo_jax.training import distributed, progress, rundir
from ogpo_jax.training import spec as spec_lib
from ogpo_jax.training import finetune as finetune_lib
from ogpo_jax.training.checkpoint import CheckpointError, Checkpointer, file_digest, move_aside
from ogpo_jax.training.collect import collect_demos
from ogpo_jax.training.spec import RunSpec
from ogpo_jax.training.evaluation import evaluate_policies, make_evaluator
from ogpo_jax.training.plots import try_plot_run
from ogpo_jax.training.rundir import actor_template, log_dirs, read_json, seed_dir, stage_keys, write_json


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
    # robosuite tasks store robomimic's env_args (robomimic can rebuild the env from the file)
    env_args = dict(getattr(env, "robomimic_env_args", None) or
                    {"env_name": config.env.name, "env_kwargs": config.env.kwargs.to_dict()})
    demo_io.write_hdf5(path, demo_io.episodes_from_rollouts(rollouts, obs_layout),
                       dict(env_args, expert_success=stats["expert_success"]))
    log(f"[demos] {stats['num_demos']} demos, expert success {stats['expert_success']:.3f}, mean length "
        f"{stats['mean_length']:.0f} steps, {stats['seconds']:.1f}s -> {path}")
    return stats


def _own_demos(config, task, path, obs_keys, key, log) -> list:
    """The workdir's demonstrations: read `path` if it is whole (its SHA-256 matches demos.json),
    otherwise move a damaged file aside and roll the scripted expert out again (the same episodes:
    the demo key is fixed by the seed)."""
    stats_path = os.path.join(os.path.dirname(path), "demos.json")
    if os.path.exists(path):
        problem = None
        try:
            stats = read_json(stats_path) if os.path.exists(stats_path) else {}
            if stats.get("sha256") not in (None, file_digest(path)):
                problem = "its SHA-256 differs from the one demos.json recorded"
            else:
                log(f"[demos] using {path}")
                return demo_io.read_hdf5(path, obs_keys)[0]
        except (demo_io.DatasetError, ValueError) as e:
            problem = str(e)
        dest = move_aside(path, problem, os.path.join(os.path.dirname(path), "damaged"))
        log(f"[demos] warning: {path} is damaged ({problem[:300]}); moved to {dest}; collecting the "
            "demonstrations again")
    stats = collect_demos_to_file(config, task.env, task.expert, task.episode_length, path, key, log)
    stats["sha256"] = file_digest(path)
    write_json(stats_path, stats)
    return demo_io.read_hdf5(path, obs_keys)[0]


def _restore_bc(ckpt, bc_json, template, policy, log):
    """The BC actor and bc.json of a finished BC stage -> (params, info), or (None, None) when
    there is none. A damaged one (unreadable bc.json, a checkpoint that fails its manifest or
    cannot be read) is moved aside into bc/damaged/ with a warning, and BC trains again."""
    if ckpt.latest_step() is None:
        return None, None
    step = ckpt.latest_step()
    if not os.path.exists(bc_json):
        # BC stopped between its checkpoint and bc.json: keep the actor, train again
        dest = ckpt.move_aside(step, "bc.json was never written (BC stopped before it finished)")
        log(f"[bc] found an actor without bc.json; moved to {dest}; training BC again")
        return None, None
    try:
        info = read_json(bc_json)
    except ValueError as e:
        info, problem = None, f"bc.json cannot be read ({e})"
    if info is not None:
        if info.get("policy", "flow") != policy:
            # same network shapes, different meaning (velocity vs noise): restoring would run silently
            raise ValueError(f"{os.path.dirname(bc_json)} holds a {info.get('policy', 'flow')!r} BC policy, but "
                             f"algo.policy={policy!r}; use another workdir (or --outdir) for this policy class")
        try:
            return ckpt.restore(template), info
        except CheckpointError as e:
            problem = str(e)
    dest = ckpt.move_aside(step, problem)
    move_aside(bc_json, problem, os.path.join(os.path.dirname(bc_json), "damaged"))
    log(f"[bc] warning: the BC actor is damaged ({problem[:300]}); moved to {dest}; training BC again")
    return None, None


class Prepared(NamedTuple):
    """What the demo and BC stages leave for finetuning."""
    spec: RunSpec            # for a camera observation: the task seen through the frozen encoder
    bc_params: Any
    bc_info: dict
    final_eval: Any          # the evaluator of train.eval_episodes episodes (shared with finetuning)


def prepare(spec, workdir: str, log=print) -> Prepared:
    """Stages 1-2 (demonstrations, clipped BC) for `spec` (a `RunSpec`, or a config, validated
    here) in `workdir`, each skipped when its output exists."""
    spec = spec if isinstance(spec, RunSpec) else spec_lib.make(spec)
    config, algo_cfg, task = spec.config, spec.algo, spec.task
    os.makedirs(workdir, exist_ok=True)
    env, episode_length = task.env, task.episode_length
    horizon, chunk_shape, obs_dim = task.horizon, task.chunk_shape, task.obs_dim
    obs_layout = task.obs_layout      # ((robomimic key, size), ...) for MJX tasks
    k_demo, k_bc, k_agent, _, k_eval = stage_keys(config)

    # ---------------------------------------------------------------- stage 1: demonstrations
    obs_keys = tuple(key for key, _ in obs_layout) if obs_layout else ("state",)
    if config.demos.path:                     # the user's file: read it, never touch it
        if not os.path.exists(config.demos.path):
            raise FileNotFoundError(f"demos.path={config.demos.path!r}: file not found")
        demo_path = config.demos.path
        log(f"[demos] using {demo_path}")
        episodes, _ = demo_io.read_hdf5(demo_path, obs_keys)
    else:
        demo_path = os.path.join(workdir, "demos.hdf5")
        episodes = _own_demos(config, task, demo_path, obs_keys, k_demo, log)
    if episodes[0]["obs"].shape[1] != obs_dim or episodes[0]["actions"].shape[1] != env.action_size:
        raise ValueError(f"{demo_path}: demos have obs/action dims {episodes[0]['obs'].shape[1]}/"
                         f"{episodes[0]['actions'].shape[1]}, env {config.env.name!r} has {obs_dim}/{env.action_size}")
    if config.demos.successful_only:
        kept = demo_io.successful_only(episodes)
        log(f"[demos] successful_only: BC on {len(kept)} of {len(episodes)} demonstrations "
            f"({len(episodes) - len(kept)} failed ones left out)")
        episodes = kept

    encoder = encoders.for_env(config.bc, env)
    bc_dir = os.path.join(workdir, "bc")
    bc_json = os.path.join(bc_dir, "bc.json")
    bc_ckpt = Checkpointer(os.path.join(bc_dir, "actor"), max_to_keep=1, process_local=True)
    if encoder is not None:          # camera observations: BC trains the image encoder too
        enc_ckpt = Checkpointer(os.path.join(bc_dir, "encoder"), max_to_keep=1, process_local=True)
        try:
            return _pixel_bc_stage(spec, encoder, episodes, bc_ckpt, enc_ckpt, bc_json, (k_bc, k_agent, k_eval), log)
        finally:
            bc_ckpt.close()
            enc_ckpt.close()

    # One evaluator program per episode count: the BC early stop and the BC / finetune
    # evaluations share it when bc.eval_episodes == train.eval_episodes.
    final_eval = make_evaluator(env, horizon, episode_length, config.train.eval_episodes, log=log)
    bc_eval = (final_eval if config.bc.eval_episodes == config.train.eval_episodes else
               make_evaluator(env, horizon, episode_length, config.bc.eval_episodes, log=log))

    # ---------------------------------------------------------------- stage 2: clipped BC
    try:
        bc_params, bc_info = _bc_stage(config, algo_cfg, chunk_shape, obs_dim, episodes, horizon, bc_ckpt, bc_json,
                                       bc_eval, final_eval, (k_bc, k_agent, k_eval), log)
    finally:
        bc_ckpt.close()
    return Prepared(spec=spec, bc_params=bc_params, bc_info=bc_info, final_eval=final_eval)


def _bc_stage(config, algo_cfg, chunk_shape, obs_dim, episodes, horizon, bc_ckpt, bc_json, bc_eval, final_eval,
              keys, log):
    """Restore the BC actor of a finished BC stage, or train it (clipped BC) and save it."""
    k_bc, k_agent, k_eval = keys
    bc_params, bc_info = _restore_bc(bc_ckpt, bc_json, actor_template(algo_cfg, k_agent, obs_dim, chunk_shape),
                                     algo_cfg.policy, log)
    if bc_params is not None:
        log(f"[bc] restored from {os.path.dirname(bc_json)}: ODE {bc_info['bc_success_ode']:.3f}, "
            f"SDE {bc_info['bc_success_sde']:.3f}")
        return bc_params, bc_info
    bc_policies = {m: bc_lib.actor_policy(algo_cfg, chunk_shape, m) for m in ("ode", "sde")}
    bc_params, bc_info = _train_bc(config, algo_cfg, chunk_shape, obs_dim, episodes, horizon, bc_eval, bc_policies,
                                   k_bc, log)
    _finish_bc(config, bc_params, bc_info, final_eval, bc_policies, bc_ckpt, bc_json, k_eval, log)
    return bc_params, bc_info


def _train_bc(config, algo_cfg, chunk_shape, obs_dim, episodes, horizon, bc_eval, bc_policies, k_bc, log,
              encoder=None):
    """Clipped BC on the demonstrations' chunk windows -> (params, bc_info without its final evaluation)."""
    t0 = time.time()
    dataset = demo_io.chunk_windows(episodes, horizon)
    stop_mode = config.bc.eval_mode

    def bc_evaluate(params, key):
        return evaluate_policies(bc_eval, bc_policies, params, key, [stop_mode])[stop_mode]

    bc_params, history = bc_lib.train_bc(algo_cfg, chunk_shape, obs_dim, dataset, bc_evaluate, config.bc, k_bc, log,
                                         encoder=encoder)
    return bc_params, {"history": history, "bc_seconds": time.time() - t0, "bc_steps": history[-1]["bc_step"],
                       "policy": algo_cfg.policy}


def _finish_bc(config, actor_params, bc_info, final_eval, policies, bc_ckpt, bc_json, k_eval, log):
    """Score the BC actor with both samplers over train.eval_episodes, save it, then bc.json
    (written last: its presence marks a finished BC stage)."""
    t1 = time.time()
    res = evaluate_policies(final_eval, policies, actor_params, k_eval)
    for mode in ("ode", "sde"):
        bc_info[f"bc_success_{mode}"] = float(res[mode]["success"])
    bc_info["bc_final_eval_seconds"] = time.time() - t1
    bc_ckpt.save(bc_info["bc_steps"], actor_params)
    write_json(bc_json, bc_info)
    log(f"[bc] done in {bc_info['bc_seconds']:.1f}s: ODE {bc_info['bc_success_ode']:.3f}, "
        f"SDE {bc_info['bc_success_sde']:.3f} over {config.train.eval_episodes} episodes")


def _pixel_bc_stage(spec, encoder, episodes, bc_ckpt, enc_ckpt, bc_json, keys, log) -> Prepared:
    """BC on camera observations: the image encoder and the actor train together (the early stop
    evaluates them on the images), then the encoder is frozen and saved in bc/encoder, the actor
    (on the encoder's features) in bc/actor. Finetuning gets the spec whose env encodes with the
    frozen encoder, and an evaluator of it; the BC actor's final scores come from that evaluator.
    A finished stage is restored (the encoder first: the actor's input size depends on it)."""
    config, algo_cfg, task = spec.config, spec.algo, spec.task
    k_bc, k_agent, k_eval = keys
    horizon, chunk_shape = task.horizon, task.chunk_shape

    def finetune_side(enc_params):
        fspec = spec_lib.encoded(spec, encoder, enc_params)
        return fspec, make_evaluator(fspec.task.env, horizon, task.episode_length, config.train.eval_episodes,
                                     log=log, what="evaluator (encoded images)")

    template = actor_template(algo_cfg, k_agent, encoder.feature_size, chunk_shape)
    if enc_ckpt.latest_step() is not None and bc_ckpt.latest_step() is not None:
        try:
            enc_params = enc_ckpt.restore(jax.eval_shape(lambda: encoder.init(k_agent)))
        except CheckpointError as e:
            dest = enc_ckpt.move_aside(enc_ckpt.latest_step(), str(e))
            log(f"[bc] warning: the image encoder is damaged ({str(e)[:300]}); moved to {dest}; training BC again")
        else:
            actor_params, bc_info = _restore_bc(bc_ckpt, bc_json, template, algo_cfg.policy, log)
            if actor_params is not None:
                log(f"[bc] restored the encoder and actor from {os.path.dirname(bc_json)}: ODE "
                    f"{bc_info['bc_success_ode']:.3f}, SDE {bc_info['bc_success_sde']:.3f}")
                fspec, final_eval = finetune_side(enc_params)
                return Prepared(spec=fspec, bc_params=actor_params, bc_info=bc_info, final_eval=final_eval)
    if enc_ckpt.latest_step() is not None:
        # an encoder without its finished actor (BC stopped after saving it, or the actor was
        # damaged): the pair trains again, and the new encoder's step must not meet the old one
        dest = enc_ckpt.move_aside(enc_ckpt.latest_step(), "its BC actor is missing or damaged: BC trains both again")
        log(f"[bc] found an image encoder without a finished BC actor; moved to {dest}; training BC again")
    bc_eval = make_evaluator(task.env, horizon, task.episode_length, config.bc.eval_episodes, log=log,
                             what="evaluator (images)")
    joint = {m: bc_lib.encoded_policy(algo_cfg, chunk_shape, encoder, m) for m in ("ode", "sde")}
    params, bc_info = _train_bc(config, algo_cfg, chunk_shape, task.obs_dim, episodes, horizon, bc_eval, joint, k_bc,
                                log, encoder=encoder)
    bc_info["encoder"] = {"kind": encoder.kind, "image_shape": list(encoder.image_shape),
                          "features": encoder.features, "proprio_size": encoder.proprio_size,
                          "feature_size": encoder.feature_size}
    enc_ckpt.save(bc_info["bc_steps"], params["encoder"])
    fspec, final_eval = finetune_side(params["encoder"])
    policies = {m: bc_lib.actor_policy(algo_cfg, chunk_shape, m) for m in ("ode", "sde")}
    _finish_bc(config, params["actor"], bc_info, final_eval, policies, bc_ckpt, bc_json, k_eval, log)
    return Prepared(spec=fspec, bc_params=params["actor"], bc_info=bc_info, final_eval=final_eval)


def run(config, workdir: str, log=print, stop_at: float | None = None) -> dict:
    """Run (or resume) the whole pipeline for `config` (a config, validated here, or a `RunSpec`)
    in `workdir`; returns the summary dict.

    `config.num_seeds = S > 1`: the demos and the BC actor are made once (seed `config.seed`) and
    finetuned with seeds seed, ..., seed + S - 1 as one vmapped program; each seed logs into
    `workdir/seed_<seed>/` (metrics.jsonl, tb/, learning_curve.png, summary.json) and
    `workdir/summary.json` holds every seed's summary and their mean.
    Multi-host: only process 0 prints and writes files; the others wait for its demos and BC.
    `stop_at` (a `time.time()` value): end finetuning at the first log interval past it (a
    wall-clock budget; `benchmarks/device_suite.py`), checkpointed and evaluated as at the end.
    `train.matmul_precision` applies to every program the run compiles.
    """
    # every check (config, env kwargs, the device-memory budget) before anything is written or allocated
    spec = config if isinstance(config, RunSpec) else spec_lib.make(config)
    precision = spec.train.matmul_precision or None
    with jax.default_matmul_precision(precision):
        return _run(spec, workdir, log, stop_at)


def _run(spec, workdir, log, stop_at):
    config = spec.config
    main = distributed.is_main_process()
    if not main:
        log = _silent
    start = time.time()
    n_compiles = len(progress.COMPILES)
    os.makedirs(workdir, exist_ok=True)
    if main:
        write_json(os.path.join(workdir, "config.json"), config.to_dict())
        warn_if_oversized(config, log)
        warn_if_top_k_inexact(config, log)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        if main:
            p = prepare(spec, workdir, log)
        multihost_utils.sync_global_devices("ogpo_jax: demos and BC ready")
        if not main:
            p = prepare(spec, workdir, log)
    else:
        p = prepare(spec, workdir, log)
    bc_info = p.bc_info

    # ---------------------------------------------------------------- stage 3: OGPO finetune
    # resumes from the newest checkpoint in workdir/finetune/checkpoints; each seed takes its keys
    # from rundir.seed_stage_keys (seed 0's are the stage keys)
    # p.spec: for a camera observation, the task seen through BC's frozen image encoder
    finetune = finetune_lib.run(p.spec, p.bc_params, workdir, log, evaluate=p.final_eval, stop_at=stop_at)
    demos_json = os.path.join(workdir, "demos.json")
    demo_stats = read_json(demos_json) if os.path.exists(demos_json) else {}
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
        seeds = rundir.config_seeds(config)
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
        for d in log_dirs(workdir, config):
            try_plot_run(d, log)
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


def warn_if_top_k_inexact(config, log=print) -> str | None:
    """One line when `algo.ppo_top_k` meets an advantage that is rarely zero: top-k is exact only
    while a group has <= k nonzero advantages, which conservative (sign-consensus) advantages give
    and group-mean ones almost never do."""
    a = config.algo
    if a.ppo_top_k <= 0 or a.ppo_top_k >= a.group_size or a.adv_strategy == "conservative":
        return None
    msg = (f"[train] note: algo.ppo_top_k={a.ppo_top_k} with algo.adv_strategy={a.adv_strategy!r}: nearly every "
           f"chain's advantage is nonzero, so the PPO step drops {a.group_size - a.ppo_top_k} of {a.group_size} "
           f"chains per group instead of only zeros (Can, OGPO+ with top-k 4 of 8: 0.63 ODE at 51k env steps "
           f"against 0.84 with the full group). It is exact with adv_strategy='conservative'; "
           f"`actor/top_k_exact_frac` logs how often it is.")
    log(msg)
    return msg


def _silent(*_args, **_kwargs):
    pass



