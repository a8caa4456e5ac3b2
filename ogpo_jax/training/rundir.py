"""A run's directory: its files, how its randomness is derived, and reloading it.

    workdir/config.json            full resolved config (`load_run_config`)
    workdir/demos.hdf5, demos.json scripted-expert demonstrations and their statistics
    workdir/bc/                    BC actor checkpoint + bc.json (+ bc/encoder: a camera run's frozen image encoder)
    workdir/finetune/checkpoints/  whole loop state; finetune/layout.json: devices and seeds
    workdir/metrics.jsonl, tb/     logs (`seed_<s>/` per seed of a num_seeds run)
    workdir/summary.json           the run summary

`restore_policy` turns a run directory back into a policy for `experiments/evaluate.py`, `run_env`
into the env that policy acts in.
"""
from __future__ import annotations

import functools
import json
import os

import jax

from ogpo_jax import encoders, envs
from ogpo_jax.algorithms import base as algorithms
from ogpo_jax.algorithms.actor import init_actor_params
from ogpo_jax.training import bc as bc_lib
from ogpo_jax.training import distributed, loop, spec
from ogpo_jax.training.checkpoint import Checkpointer
from ogpo_jax.training.config import validate
from ogpo_jax.training.evaluation import agent_policy


def write_json(path, obj):
    """Write `obj` as JSON atomically (temporary file + rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def read_json(path):
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


def seed_dir(workdir: str, seed: int) -> str:
    """Log directory of one seed of a `num_seeds > 1` run."""
    return os.path.join(workdir, f"seed_{seed}")


def config_seeds(config) -> list:
    """The seeds a run finetunes: `config.seed + i` for i < `config.num_seeds`."""
    return [config.seed + i for i in range(config.num_seeds)]


def log_dirs(workdir: str, config) -> list:
    """Log directory of each seed of a run (`config_seeds`)."""
    return seed_log_dirs(workdir, config_seeds(config))


def seed_log_dirs(workdir: str, seeds) -> list:
    """The workdir itself for one seed, `seed_<s>/` for each of several."""
    if len(seeds) == 1:
        return [workdir]
    return [seed_dir(workdir, s) for s in seeds]


def read_log(log_dir: str) -> list:
    """The records of a run's metrics.jsonl (a last line cut short by a kill is left out)."""
    path = os.path.join(log_dir, "metrics.jsonl")
    out = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    break
    return out


def last_logged(log_dir: str, key: str, default=None):
    """The last value of `key` in a run's metrics.jsonl, or `default`."""
    values = [r[key] for r in read_log(log_dir) if key in r]
    return values[-1] if values else default


def trim_log(log_dir: str, env_steps: int) -> int:
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


def logged_sum(log_dir: str, key: str) -> float:
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


def _layout_path(workdir: str) -> str:
    return os.path.join(workdir, "finetune", "layout.json")


def read_layout(workdir: str) -> dict:
    """How a run's finetune checkpoints are laid out: ring blocks (devices) and stacked seeds."""
    path = _layout_path(workdir)
    return read_json(path) if os.path.exists(path) else {"num_shards": 1, "num_seeds": 1}


def check_layout(workdir: str, num_shards: int, num_seeds: int, has_checkpoint: bool, seeds=None) -> None:
    """A run resumes only with the device count and seeds its checkpoints were written with."""
    old = read_layout(workdir)
    if has_checkpoint and (old["num_shards"], old["num_seeds"]) != (num_shards, num_seeds):
        raise ValueError(
            f"{workdir}: its finetune checkpoints were written with {old['num_shards']} device(s) and "
            f"{old['num_seeds']} seed(s), this run has {num_shards} device(s) and {num_seeds} seed(s); resume "
            f"with --config.distributed.num_devices={old['num_shards']} --config.num_seeds={old['num_seeds']}")
    seeds = None if seeds is None else [int(s) for s in seeds]
    if has_checkpoint and seeds is not None and old.get("seeds", seeds) != seeds:
        raise ValueError(f"{workdir}: its finetune checkpoints are of seeds {old['seeds']}, this run has seeds "
                         f"{seeds}; resume with those seeds or use another directory")
    if distributed.is_main_process():
        os.makedirs(os.path.dirname(_layout_path(workdir)), exist_ok=True)
        layout = {"num_shards": int(num_shards), "num_seeds": int(num_seeds)}
        if seeds is not None:
            layout["seeds"] = seeds
        write_json(_layout_path(workdir), layout)


def load_run_config(workdir: str):
    """The resolved config a run wrote into `workdir/config.json`, as a ConfigDict."""
    from ml_collections import ConfigDict
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: not found; is {workdir!r} the --workdir of a train.py run?")
    try:
        cfg = read_json(path)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("algo"), dict):
        raise ValueError(f"{path}: not a run config (no 'algo' section)")
    # JSON turns tuples into lists; the algorithm configs want tuples for their layer sizes
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


def actor_template(algo_cfg, key, obs_dim: int, chunk_shape):
    """Shapes of the actor params a BC checkpoint holds (for `Checkpointer.restore`)."""
    dim = chunk_shape[0] * chunk_shape[1]
    return jax.eval_shape(lambda: init_actor_params(algo_cfg, key, obs_dim, dim))


def run_env(config, workdir: str, worlds: int | None = None):
    """-> (env, episode_length): the env a run's policies act in. For a camera observation
    (`env.kwargs.obs`) that is the task seen through the frozen image encoder BC saved in
    `workdir/bc/encoder`. `worlds`: the most envs one call steps (MuJoCo Warp's buffer size)."""
    env, _, episode_length = envs.make(config.env.name, **spec.env_kwargs(config, worlds=worlds))
    encoder = encoders.for_env(config.bc, env)
    if encoder is not None:
        from ogpo_jax.envs.pixels import EncodedObservation
        path = os.path.join(workdir, "bc", "encoder")
        ckpt = Checkpointer(path, max_to_keep=1)
        try:
            if ckpt.latest_step() is None:
                raise FileNotFoundError(f"no image encoder in {path}: this camera-observation run has not finished BC")
            params = ckpt.restore(jax.eval_shape(lambda: encoder.init(jax.random.PRNGKey(0))))
        finally:
            ckpt.close()
        env = EncodedObservation(env, encoder, params)
    return env, episode_length


def restore_policy(config, workdir: str, source: str = "latest"):
    """Restore a trained policy from a run directory.

    source: 'bc' (the clipped BC actor), 'latest' (the newest finetune checkpoint, or the BC actor
    if finetuning has not saved one) or an env-step number of a finetune checkpoint.
    Returns (params, policies, description): `policies` maps sampler names to jittable
    `policy(params, obs, key) -> chunks` (BC: 'ode', 'sde'; finetune: also 'best_of_n').
    """
    algo_cfg = validate(config)
    algo = algorithms.get(algo_cfg.name)
    env, episode_length = run_env(config, workdir)
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
                k_loop, env, algo.init(k_agent, env.observation_size, chunk_shape, algo_cfg),
                env.observation_size, config.train, episode_length, num_shards=layout["num_shards"])
            seeds = layout["num_seeds"]
            template = jax.eval_shape(lambda: loop.stack_seeds([one()] * seeds) if seeds > 1 else one())
            ls = ckpt.restore(template, step)
            ckpt.close()
            what = f"finetune checkpoint at {{}} env steps ({ckpt_dir})"
            if seeds > 1:                  # a num_seeds run: the first seed's agent
                ls = loop.unstack_seed(ls, 0)
                what += f", seed {config.seed} of {seeds}"
            policies = {m: functools.partial(agent_policy, m, algo_cfg.act_with) for m in algo.act_modes}
            return ls.agent, policies, what.format(int(ls.env_steps))
    bc_ckpt = Checkpointer(os.path.join(workdir, "bc", "actor"), max_to_keep=1)
    if bc_ckpt.latest_step() is None:
        raise FileNotFoundError(f"no BC actor in {os.path.join(workdir, 'bc', 'actor')}")
    params = bc_ckpt.restore(actor_template(algo_cfg, k_agent, env.observation_size, chunk_shape))
    bc_ckpt.close()
    policies = {m: bc_lib.actor_policy(algo_cfg, chunk_shape, m) for m in ("ode", "sde")}
    return params, policies, f"BC actor ({os.path.join(workdir, 'bc', 'actor')})"
