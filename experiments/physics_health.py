"""How often does a task's simulation blow up to NaN/inf under a policy? Roll it out and count.

    python experiments/physics_health.py --workdir=runs/can_seed0 --env_steps=1000000
    python experiments/physics_health.py --workdir=docs/results/cmp_can/base --source=bc \
        --config=configs/can.py:quick --env_steps=1000000 --out=runs/health_bc.json

Rolls out the policy (the training rollout's sampler by default: `algo.rollout_mode`) in
`--num_envs` auto-resetting environments, exactly as the training loop does but without updates,
until `--env_steps` environment steps are taken, and counts the episodes the task ended as
non-finite (`info['nonfinite']`, see `ogpo_jax.envs.core.NonFiniteWrapper`). Prints a progress
line with the rate and ETA (SIGTERM / Ctrl-C stops early and keeps the counts); writes a JSON
with the counts and the rate per million env steps and, for MJX tasks, an .npz with the physics
state (qpos, qvel, ctrl, qacc_warmstart, time) and the action chunk right before each of the last
`--captures` blow-ups, so a blow-up can be replayed step by step (`tests/test_can_blowup.py`
replays one).

--workdir: a train.py run directory (its config.json), or any directory with a `bc/actor`
checkpoint when --config is given. --source: 'latest' (newest finetune checkpoint, else BC),
'bc', or a finetune checkpoint env step.
"""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from ogpo_jax.training import cli  # noqa: E402
from ogpo_jax.data import replay as rb  # noqa: E402
from ogpo_jax.envs import core as env_core  # noqa: E402
from ogpo_jax.training import compile_cache, rundir  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config (default: the run's config.json).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory with the policy.", required=True)
_SOURCE = flags.DEFINE_string("source", "latest", "'latest', 'bc', or a finetune checkpoint env step.")
_MODE = flags.DEFINE_string("mode", None, "Sampler (ode, sde, best_of_n); default: the config's rollout_mode.")
_ENV_STEPS = flags.DEFINE_integer("env_steps", 1_000_000, "Environment steps to roll out.")
_NUM_ENVS = flags.DEFINE_integer("num_envs", 128, "Parallel environments.")
_CHUNKS = flags.DEFINE_integer("chunks_per_call", 50, "Action chunks per compiled call (progress granularity).")
_CAPTURES = flags.DEFINE_integer("captures", 16, "Keep the pre-step state of this many blow-ups.")
_SEED = flags.DEFINE_integer("seed", 0, "Rollout seed.")
_OUT = flags.DEFINE_string("out", None, "Result JSON (default: <workdir>/physics_health_<source>_<mode>.json).")

CAPTURE_FIELDS = ("qpos", "qvel", "ctrl", "qacc_warmstart", "time")


def make_rollout(env, policy, horizon: int, num_envs: int, num_chunks: int, capacity: int):
    """-> jitted `rollout(params, carry) -> (carry, counts)` of `num_chunks` chunk steps."""
    benv = env_core.batch_env(env, num_envs, horizon)
    mjx_task = hasattr(env.unwrapped, "mjx_model")

    def pre_state(state, chunk):
        row = {"chunk": chunk, "obs": state.obs, "episode_step": state.info["steps"]}
        if mjx_task:
            row.update({f: getattr(state.sim, f) for f in CAPTURE_FIELDS})
        return row

    def rollout(params, carry):
        def body(c, k):
            state, captures = c
            chunk = policy(params, state.obs, k)
            nxt = benv.step(state, chunk)
            bad = nxt.done & nxt.info["nonfinite"]
            captures = rb.insert(captures, pre_state(state, chunk), bad)
            stats = {"env_steps": nxt.info["valid"].sum(), "episodes": nxt.done.sum(),
                     "successes": (nxt.done & nxt.info["success"]).sum(), "nonfinite": bad.sum()}
            return (nxt, captures), stats

        state, captures, key = carry
        key, k = jax.random.split(key)
        (state, captures), stats = jax.lax.scan(body, (state, captures), jax.random.split(k, num_chunks))
        return (state, captures, key), jax.tree_util.tree_map(jnp.sum, stats)

    def init(key):
        k_env, k = jax.random.split(key)
        state = benv.reset(k_env)
        example = jax.tree_util.tree_map(lambda x: x[0], pre_state(state, jnp.zeros((num_envs, horizon, env.action_size))))
        return state, rb.init_buffer(example, capacity), k

    options = env_core.compiler_options(env)
    return jax.jit(rollout, compiler_options=options), jax.jit(init, compiler_options=options)


def main(argv):
    del argv
    compile_cache.enable(print)
    logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value if _CONFIG.value is not None else rundir.load_run_config(_WORKDIR.value)
    params, policies, what = rundir.restore_policy(config, _WORKDIR.value, _SOURCE.value)
    mode = _MODE.value or config.algo.rollout_mode
    if mode not in policies:
        raise SystemExit(f"--mode={mode!r} is not available for {what}; choose from {sorted(policies)}")
    if _ENV_STEPS.value < 1 or _NUM_ENVS.value < 1 or _CHUNKS.value < 1:
        raise SystemExit("--env_steps, --num_envs and --chunks_per_call must be >= 1")
    env, _ = rundir.run_env(config, _WORKDIR.value, worlds=_NUM_ENVS.value)
    horizon = config.env.chunk_horizon
    rollout, init = make_rollout(env, policies[mode], horizon, _NUM_ENVS.value, _CHUNKS.value,
                                 max(_CAPTURES.value, 1))
    out = _OUT.value or os.path.join(_WORKDIR.value, f"physics_health_{_SOURCE.value}_{mode}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    print(f"[health] {what}, sampler {mode}: {_NUM_ENVS.value} envs x {_CHUNKS.value} chunks of {horizon} "
          f"steps per call, to {_ENV_STEPS.value} env steps (first call compiles) -> {out}")
    t0 = time.time()
    # one device for everything: a first call on uncommitted inputs would compile a second program
    device = jax.devices()[0]
    params = jax.device_put(params, device)
    carry = jax.device_put(init(jax.random.PRNGKey(_SEED.value)), device)
    totals = {"env_steps": 0, "episodes": 0, "successes": 0, "nonfinite": 0}
    t_compile, saved, calls = None, 0, 0

    def write(done: bool):
        result = {"source": what, "mode": mode, "env": config.env.name,
                  "env_kwargs": config.env.kwargs.to_dict(), "num_envs": _NUM_ENVS.value, "seed": _SEED.value,
                  **totals, "nonfinite_per_million_env_steps": totals["nonfinite"] / max(totals["env_steps"], 1) * 1e6,
                  "compile_seconds": t_compile, "seconds": time.time() - t0, "finished": done,
                  "device": jax.devices()[0].device_kind, "jax": jax.__version__,
                  "command": " ".join(["python"] + sys.argv)}
        captures = jax.device_get(carry[1])
        kept = int(captures.size)
        if kept:
            # a ring: once more than --captures blow-ups happened, the newest ones are kept
            npz = os.path.splitext(out)[0] + "_captures.npz"
            np.savez(npz, **{k: np.asarray(v[:kept]) for k, v in captures.data.items()})
            result["captures"] = npz
        rundir.write_json(out, result)
        return result

    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):      # stop early, keeping the counts so far
        signal.signal(sig, lambda signum, _: stop.append(signal.Signals(signum).name))
    while totals["env_steps"] < _ENV_STEPS.value and not stop:
        t1 = time.time()
        carry, stats = rollout(params, carry)
        stats = jax.device_get(stats)
        for k in totals:
            totals[k] += int(stats[k])
        calls += 1
        if totals["nonfinite"] > saved or calls % 10 == 0:   # every blow-up found so far is on disk
            write(False)
            saved = totals["nonfinite"]
        if t_compile is None:
            t_compile = time.time() - t1
            t_run, steps_run = time.time(), 0
            print(f"[health] compile + first call {t_compile:.0f}s")
            continue
        steps_run += int(stats["env_steps"])
        rate = steps_run / max(time.time() - t_run, 1e-9)
        eta = (_ENV_STEPS.value - totals["env_steps"]) / max(rate, 1e-9)
        print(f"[health] {totals['env_steps']:>9d} env steps, {totals['episodes']} episodes "
              f"(success {totals['successes'] / max(totals['episodes'], 1):.3f}), non-finite episodes "
              f"{totals['nonfinite']}; {rate:.0f} env steps/s, ETA {eta / 60:.1f} min", flush=True)
    if stop:
        print(f"[health] {stop[0]}: stopped early at {totals['env_steps']} env steps")
    result = write(not stop)
    print(f"[health] {totals['nonfinite']} non-finite episodes in {totals['env_steps']} env steps "
          f"({result['nonfinite_per_million_env_steps']:.2f} per million; {totals['episodes']} episodes, success "
          f"{totals['successes'] / max(totals['episodes'], 1):.3f}) -> {out}")


if __name__ == "__main__":
    app.run(cli.main(main))
