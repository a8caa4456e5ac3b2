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
import time

import jax
import numpy as np

from ogpo_jax import envs
from ogpo_jax.algorithms import ogpo
from ogpo_jax.algorithms.config import OGPOConfig
from ogpo_jax.data import demos as demo_io
from ogpo_jax.envs.experts import collect_demos
from ogpo_jax.training import bc as bc_lib
from ogpo_jax.training import loop
from ogpo_jax.training.checkpoint import Checkpointer
from ogpo_jax.training.config import validate
from ogpo_jax.training.evaluation import make_evaluator
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
    rollouts = jax.device_get(collect_demos(env, expert, config.demos.num_demos, episode_length, key))
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

    bc_eval = make_evaluator(env, horizon, episode_length, config.bc.eval_episodes)
    final_eval = make_evaluator(env, horizon, episode_length, config.train.eval_episodes)

    # ---------------------------------------------------------------- stage 2: clipped BC
    bc_dir = os.path.join(workdir, "bc")
    bc_json = os.path.join(bc_dir, "bc.json")
    bc_ckpt = Checkpointer(os.path.join(bc_dir, "actor"), max_to_keep=1)
    template = ogpo.init(k_agent, obs_dim, chunk_shape, algo_cfg)
    if os.path.exists(bc_json) and bc_ckpt.latest_step() is not None:
        bc_params = bc_ckpt.restore(template.actor)
        bc_info = _read_json(bc_json)
        log(f"[bc] restored from {bc_dir}: ODE {bc_info['bc_success_ode']:.3f}, SDE {bc_info['bc_success_sde']:.3f}")
    else:
        t0 = time.time()
        dataset = demo_io.chunk_windows(episodes, horizon)
        bc_params, history = bc_lib.train_bc(algo_cfg, chunk_shape, obs_dim, dataset, bc_eval, config.bc, k_bc, log)
        bc_info = {"history": history, "bc_seconds": time.time() - t0, "bc_steps": history[-1]["bc_step"]}
        for mode in ("ode", "sde"):
            policy = bc_lib.actor_policy(algo_cfg, chunk_shape, mode)
            bc_info[f"bc_success_{mode}"] = float(final_eval(policy, bc_params, k_eval)["success"])
        bc_ckpt.save(bc_info["bc_steps"], bc_params)
        write_json(bc_json, bc_info)
        log(f"[bc] done in {bc_info['bc_seconds']:.1f}s: ODE {bc_info['bc_success_ode']:.3f}, "
            f"SDE {bc_info['bc_success_sde']:.3f} over {config.train.eval_episodes} episodes")
    bc_ckpt.close()
    return Prepared(env=env, episode_length=episode_length, chunk_shape=chunk_shape, obs_dim=obs_dim,
                    algo_cfg=algo_cfg, bc_params=bc_params, bc_info=bc_info, final_eval=final_eval,
                    k_agent=k_agent, k_loop=k_loop, k_eval=k_eval)


def run(config, workdir: str, log=print) -> dict:
    """Run (or resume) the whole pipeline for `config` in `workdir`; returns the summary dict."""
    validate(config)
    start = time.time()
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, "config.json"), config.to_dict())
    p = prepare(config, workdir, log)
    bc_info = p.bc_info

    # ---------------------------------------------------------------- stage 3: OGPO finetune
    finetune = finetune_stage(config, p.algo_cfg, p.env, p.episode_length, p.chunk_shape, p.obs_dim, p.bc_params,
                              p.final_eval, p.k_agent, p.k_loop, p.k_eval, workdir, log)
    demos_json = os.path.join(workdir, "demos.json")
    demo_stats = _read_json(demos_json) if os.path.exists(demos_json) else {}
    summary = {
        "expert_success": demo_stats.get("expert_success"),
        "demos_seconds": demo_stats.get("seconds"),
        "bc_seconds": bc_info["bc_seconds"],
        "bc_success_ode": bc_info["bc_success_ode"],
        "bc_success_sde": bc_info["bc_success_sde"],
        "bc_steps": bc_info["bc_steps"],
        **finetune,
        "wall_seconds": time.time() - start,
        "config": config.to_dict(),
    }
    write_json(os.path.join(workdir, "summary.json"), summary)
    _plot(workdir, log)
    log(f"[done] BC ODE {summary['bc_success_ode']:.3f} -> final ODE {summary['final_success_ode']:.3f} "
        f"(SDE {summary['final_success_sde']:.3f}) in {summary['env_steps']} env steps; summary.json written")
    return summary


def finetune_stage(config, algo_cfg: OGPOConfig, env, episode_length, chunk_shape, obs_dim, bc_params,
                   evaluate, k_agent, k_loop, k_eval, workdir, log) -> dict:
    tcfg = config.train
    agent = ogpo.init(k_agent, obs_dim, chunk_shape, algo_cfg, actor_params=bc_params)
    ls = loop.init_loop(k_loop, env, agent, obs_dim, tcfg, episode_length)
    ckpt = Checkpointer(os.path.join(workdir, "finetune", "checkpoints"), tcfg.max_checkpoints)
    if ckpt.latest_step() is not None:
        ls = ckpt.restore(ls)
        log(f"[finetune] resumed from checkpoint at {int(ls.env_steps)} env steps")
    other = "current" if algo_cfg.act_with == "ema" else "ema"
    policies = {
        "ode": functools.partial(agent_policy, "ode", algo_cfg.act_with),
        "sde": functools.partial(agent_policy, "sde", algo_cfg.act_with),
        f"ode_{other}": functools.partial(agent_policy, "ode", other),
    }

    def run_eval(ls, key, final=False):
        # intermediate evaluations skip the actor that does not collect data (one policy less of
        # full-length episodes; that matters for MJX tasks on CPU)
        names = list(policies) if final else ["ode", "sde"]
        return {f"eval/success_{name}": float(evaluate(policies[name], ls.agent, key)["success"]) for name in names}

    # Commit the whole state to one device: the interval's outputs are committed, and a first call
    # on partly uncommitted inputs would compile the interval twice (measured on Can: +115 s).
    ls = jax.device_put(ls, jax.devices()[0])
    interval = loop.make_interval(env, tcfg, tcfg.log_every_iterations)
    logger = Logger(workdir, tcfg.total_env_steps, int(ls.env_steps), config.log.tensorboard, config.log.progress)
    env_steps = int(ls.env_steps)
    next_eval = (env_steps // tcfg.eval_every_env_steps + 1) * tcfg.eval_every_env_steps
    next_ckpt = (env_steps // tcfg.checkpoint_every_env_steps + 1) * tcfg.checkpoint_every_env_steps
    t_start, first, warned_recompile = time.time(), True, False
    while env_steps < tcfg.total_env_steps:
        t0 = time.time()
        prev_steps, prev_updates = env_steps, int(ls.agent.step)
        ls, metrics = interval(ls)
        record = loop.summarize_interval(jax.device_get(metrics))
        dt = time.time() - t0
        env_steps, grad_steps = record["env_steps"], int(ls.agent.step)
        record.update({
            "grad_steps": grad_steps,
            "grad_steps_per_env_step": grad_steps / max(env_steps, 1),
            "env_steps_per_s": (env_steps - prev_steps) / dt,
            "updates_per_s": (grad_steps - prev_updates) / dt,
            "wall_seconds": time.time() - t_start,
        })
        if first:
            record["compile_and_first_interval_s"] = dt
            first = False
        elif getattr(interval, "_cache_size", lambda: 1)() > 1 and not warned_recompile:
            log(f"[finetune] warning: the training interval was compiled again at env step {env_steps} "
                "(inputs changed type, sharding or committed-ness); report this as a bug")
            warned_recompile = True
        if env_steps >= next_eval or env_steps >= tcfg.total_env_steps:
            record.update(run_eval(ls, jax.random.fold_in(k_eval, env_steps)))
            next_eval = (env_steps // tcfg.eval_every_env_steps + 1) * tcfg.eval_every_env_steps
        if not all(np.isfinite(v) for v in record.values() if isinstance(v, float)):
            bad = sorted(k for k, v in record.items() if isinstance(v, float) and not np.isfinite(v))
            logger.close()
            raise FloatingPointError(f"non-finite metrics at env step {env_steps}: {bad}; "
                                     f"last good checkpoint is in {ckpt.directory}")
        logger.log(env_steps, record)
        if any(k.startswith("eval/") for k in record):
            _plot(workdir, log)
        if env_steps >= next_ckpt:
            ckpt.save(env_steps, ls)
            next_ckpt = (env_steps // tcfg.checkpoint_every_env_steps + 1) * tcfg.checkpoint_every_env_steps
    logger.close()
    if ckpt.latest_step() != env_steps:
        ckpt.save(env_steps, ls)
    ckpt.close()
    final = run_eval(ls, jax.random.fold_in(k_eval, 10**9), final=True)
    out = {
        "final_success_ode": final["eval/success_ode"],
        "final_success_sde": final["eval/success_sde"],
        f"final_success_ode_{other}": final[f"eval/success_ode_{other}"],
        "env_steps": env_steps,
        "grad_steps": int(ls.agent.step),
        "finetune_seconds": time.time() - t_start,
    }
    return out


# ----------------------------------------------------------------------------- reloading runs

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
            template = jax.eval_shape(lambda: loop.init_loop(
                k_loop, env, ogpo.init(k_agent, env.observation_size, chunk_shape, algo_cfg),
                env.observation_size, config.train, episode_length))
            ls = ckpt.restore(template, step)
            step = int(ls.env_steps)
            ckpt.close()
            modes = ("ode", "sde", "best_of_n")
            policies = {m: functools.partial(agent_policy, m, algo_cfg.act_with) for m in modes}
            return ls.agent, policies, f"finetune checkpoint at {step} env steps ({ckpt_dir})"
    bc_ckpt = Checkpointer(os.path.join(workdir, "bc", "actor"), max_to_keep=1)
    if bc_ckpt.latest_step() is None:
        raise FileNotFoundError(f"no BC actor in {os.path.join(workdir, 'bc', 'actor')}")
    template = jax.eval_shape(lambda: ogpo.init(k_agent, env.observation_size, chunk_shape, algo_cfg).actor)
    params = bc_ckpt.restore(template)
    bc_ckpt.close()
    policies = {m: bc_lib.actor_policy(algo_cfg, chunk_shape, m) for m in ("ode", "sde")}
    return params, policies, f"BC actor ({os.path.join(workdir, 'bc', 'actor')})"
