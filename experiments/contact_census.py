"""How many contact slots does an MJX arm task actually use? Roll out episodes and count.

    python experiments/contact_census.py --task=can --episodes=256                      # scripted expert
    python experiments/contact_census.py --task=can --episodes=256 --max_contact_points=none   # uncapped
    python experiments/contact_census.py --task=can --source=docs/results/cmp_can/base \
        --config=configs/can.py:quick --episodes=128                                     # the BC actor (ODE)
    python experiments/contact_census.py --task=can --impl=warp --episodes=64            # expert on MuJoCo Warp

MJX's JAX backend emits a fixed number of contact slots per geom pair every physics step (Can:
40, Square: 72) and the solver carries a constraint block for each, touching or not. This tool
rolls out `--episodes` episodes (no auto-reset: each runs to success, failure or the time limit)
of the scripted expert, or of a policy from a run directory, and records at every physics step
how many slots touch (distance below the contact margin), per condim group (what MJX's
`max_contact_points` caps) and per geom pair: the peak, and how many control steps reached each
count. With `--max_contact_points` it runs the capped scene instead, so the same command tells
whether a cap changes the task (success, non-finite episodes) and whether it ever binds (a group
at its cap in some step). Writes a JSON (default `runs/contact_census_<task>_<source>.json`).

--source: 'expert', or a directory with a `bc/actor` checkpoint (a run directory or a
`docs/results/*/` BC folder; --config then names its config) whose policy runs with `--mode`
(default 'ode'), `--checkpoint` picking 'bc' (default) or a finetune checkpoint.
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

from ogpo_jax import envs  # noqa: E402
from ogpo_jax.envs import core  # noqa: E402
from ogpo_jax.envs.core import batched, compiler_options  # noqa: E402
from ogpo_jax.envs.mjx.arm import contact_cap_kwargs  # noqa: E402
from ogpo_jax.training import cli, compile_cache, progress, rundir, spec  # noqa: E402

MJX_TASKS = ("can", "square", "two_nuts")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config of the policy's run (for --source=<dir>).")
_TASK = flags.DEFINE_enum("task", "can", MJX_TASKS, "MJX arm task.")
_SOURCE = flags.DEFINE_string("source", "expert", "'expert' or a directory with a bc/actor checkpoint.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "bc", "'bc', 'latest' or a finetune checkpoint env step (--source=<dir>).")
_MODE = flags.DEFINE_string("mode", "ode", "Policy sampler (--source=<dir>): ode, sde, best_of_n.")
_EPISODES = flags.DEFINE_integer("episodes", 128, "Episodes, all in parallel.")
_MAX_STEPS = flags.DEFINE_integer("max_steps", 0, "Time limit (default: the task's).")
_CAP = flags.DEFINE_string("max_contact_points", "default",
                           "MJX's per-condim-group contact cap: 'default' (the task's), 'none' or an integer >= 1.")
_IMPL = flags.DEFINE_enum("impl", "jax", ("jax", "warp"), "MJX backend (warp: success only, no census).")
_SEGMENT = flags.DEFINE_integer("segment_steps", 20, "Control steps per compiled call (progress granularity).")
_SEED = flags.DEFINE_integer("seed", 0, "Episode seed.")
_OUT = flags.DEFINE_string("out", None, "Result JSON.")


def make_segment(env, act, census: bool):
    """-> `segment(carry, keys) -> (carry, stats)`: `keys.shape[1]` control steps of every episode.

    carry = (state, alive, latent, chunk, t), batched over episodes; `act(latent, chunk, obs, t,
    key) -> (action, chunk)` gives one episode's action (the expert per step, a chunk policy every
    `horizon` steps). Stats are summed over the alive steps; with `census`, per-group histograms of
    the touching count and the peaks per group and pair.
    """
    u = env.unwrapped
    slots = max(u.contact_slots_per_condim) if census else 0

    def one(state, alive, latent, chunk, t, keys):           # one episode, vmapped by `batched`
        def body(c, key):
            s, alive, chunk, t = c
            action, chunk = act(latent, chunk, s.obs, t, key)
            nxt = env.step(s, action)
            ended = alive & nxt.done
            out = {"env_steps": alive, "episodes": ended, "successes": ended & nxt.info["success"],
                   "nonfinite": ended & nxt.info["nonfinite"]}
            if census:
                out.update(group=jnp.where(alive, nxt.info["contact_groups"], 0),
                           pair=jnp.where(alive, nxt.info["contact_pairs"], 0), counted=alive)
            # no auto-reset: an ended episode keeps its last state and its later steps do not count
            nxt = core._select(alive, nxt, s)
            return (nxt, alive & ~nxt.done, chunk, t + 1), out

        (state, alive, chunk, t), out = jax.lax.scan(body, (state, alive, chunk, t), keys)
        return (state, alive, latent, chunk, t), out

    def segment(carry, keys):
        carry, out = batched(one, env, *carry, keys)
        stats = {k: out[k].sum() for k in ("env_steps", "episodes", "successes", "nonfinite")}
        if census:
            g = out["group"].reshape(-1, out["group"].shape[-1])                       # (N * T, G)
            w = out["counted"].reshape(-1).astype(jnp.int32)
            stats.update(group_peak=g.max(0), pair_peak=out["pair"].max((0, 1)),
                         group_hist=jax.vmap(lambda col: jnp.zeros((slots + 1,), jnp.int32).at[col].add(w),
                                             in_axes=1)(g))
        return carry, stats

    return segment


def expert_actor(expert):
    def act(latent, chunk, obs, t, key):
        return expert.act(latent, obs, key), chunk
    return jax.vmap(expert.init), act


def policy_actor(policy, params, horizon: int):
    def act(latent, chunk, obs, t, key):
        chunk = jax.lax.cond(t % horizon == 0, lambda: policy(params, obs[None], key)[0], lambda: chunk)
        return chunk[t % horizon], chunk
    return (lambda keys: jnp.zeros((keys.shape[0],))), act


def main(argv):
    del argv
    compile_cache.enable(print)
    logging.set_verbosity(logging.WARNING)
    if _EPISODES.value < 1 or _SEGMENT.value < 1 or _MAX_STEPS.value < 0:
        raise SystemExit("--episodes and --segment_steps must be >= 1 and --max_steps >= 0")
    try:
        cap_kwargs = contact_cap_kwargs(_CAP.value, "--max_contact_points")
    except ValueError as e:
        raise SystemExit(str(e)) from None
    census = _IMPL.value == "jax"
    kwargs = {"impl": _IMPL.value, **cap_kwargs}
    if census:
        kwargs["record_contacts"] = True
    elif cap_kwargs:
        raise SystemExit("--max_contact_points acts on MJX's JAX backend; use it with --impl=jax")
    else:
        kwargs["warp_max_worlds"] = _EPISODES.value
    source = _SOURCE.value
    if source != "expert":
        if _CONFIG.value is None:
            raise SystemExit(f"--source={source!r} needs --config (the config its policy was trained with)")
        config = _CONFIG.value
        if config.env.name != _TASK.value:
            raise SystemExit(f"--config is for env {config.env.name!r} but --task={_TASK.value!r}")
        params, policies, what = rundir.restore_policy(config, source, _CHECKPOINT.value)
        if _MODE.value not in policies:
            raise SystemExit(f"--mode={_MODE.value!r} is not available for {what}; choose from {sorted(policies)}")
        kwargs = {**spec.env_kwargs(config, worlds=_EPISODES.value), **kwargs}
        horizon = int(config.env.chunk_horizon)
    env, expert, episode_length = envs.make(_TASK.value, **kwargs)
    max_steps = _MAX_STEPS.value or episode_length
    num = _EPISODES.value
    if source == "expert":
        init_latent, act = expert_actor(expert)
        what, chunk0 = "scripted expert", jnp.zeros((num, 1, env.action_size))
    else:
        init_latent, act = policy_actor(policies[_MODE.value], params, horizon)
        what, chunk0 = f"{what}, sampler {_MODE.value}", jnp.zeros((num, horizon, env.action_size))
    seg = min(_SEGMENT.value, max_steps)
    opts = compiler_options(env)
    segment = jax.jit(make_segment(env, act, census), compiler_options=opts)
    start = jax.jit(lambda k: (batched(env.reset, env, jax.random.split(k, num)),
                               init_latent(jax.random.split(jax.random.fold_in(k, 1), num))), compiler_options=opts)
    key = jax.random.PRNGKey(_SEED.value)
    cap_value = env.unwrapped.params.max_contact_points
    cap = f", max_contact_points {cap_value}" if cap_value != -1 and census else ""
    out = _OUT.value or os.path.join("runs", f"contact_census_{_TASK.value}_{'expert' if source == 'expert' else 'policy'}"
                                              f"{'_cap' + str(cap_value) if cap_value != -1 and census else ''}"
                                              f"{'_warp' if _IMPL.value == 'warp' else ''}.json")
    print(f"[census] {_TASK.value} ({_IMPL.value}{cap}), {what}: {num} episodes x up to {max_steps} steps, "
          f"{seg} steps per call -> {out}", flush=True)
    progress.compile_program(start, (key,), f"reset ({num} episodes)", print)
    state, latent = start(key)
    carry = (state, jnp.ones((num,), bool), latent, chunk0, jnp.zeros((num,), jnp.int32))
    # (segment, episode, step) keys: step t of episode i draws the same key for any --segment_steps
    num_seg = -(-max_steps // seg)
    step_keys = jax.random.split(jax.random.fold_in(key, 2), num * num_seg * seg).reshape(num, num_seg, seg, -1)
    step_keys = jnp.moveaxis(step_keys, 1, 0)
    progress.compile_program(segment, (carry, step_keys[0]), f"rollout ({num} episodes x {seg} steps)", print)
    u = env.unwrapped

    def report(totals, finished: bool) -> dict:
        # an episode still running at the time limit is a failure, as in evaluation
        result = {"task": _TASK.value, "impl": _IMPL.value, "source": what, "max_contact_points": cap_value if census else None,
                  "episodes": num, "max_steps": max_steps, "seed": _SEED.value, "finished": finished,
                  "success": int(totals["successes"]) / num, "successes": int(totals["successes"]),
                  "nonfinite_episodes": int(totals["nonfinite"]), "env_steps": int(totals["env_steps"]),
                  "seconds": time.time() - t0, "device": jax.devices()[0].device_kind, "jax": jax.__version__,
                  "command": " ".join(["python"] + sys.argv)}
        if census:
            result["condim_groups"] = [
                {"condim": c, "slots": s, "peak_touching": int(p),
                 "control_steps_at_count": {str(i): int(n) for i, n in enumerate(totals["group_hist"][gi]) if n},
                 # every slot the cap keeps touched at once: more may have wanted to
                 "cap_binds": bool(cap_value != -1 and p >= cap_value)}
                for gi, (c, s, p) in enumerate(zip(u.contact_condims, u.contact_slots_per_condim, totals["group_peak"]))]
            result["pairs"] = [{"pair": n, "condim": c, "slots": s, "peak_touching": int(p)}
                               for n, c, s, p in zip(u.contact_pairs, u.contact_condim_per_pair,
                                                     u.contact_slots_per_pair, totals["pair_peak"])]
        rundir.write_json(out, result)
        return result

    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):      # stop early, keeping the counts so far
        signal.signal(sig, lambda signum, _: stop.append(signal.Signals(signum).name))
    totals, t0 = None, time.time()
    for j in range(num_seg):
        carry, stats = segment(carry, step_keys[j])
        stats = jax.device_get(stats)
        totals = stats if totals is None else {k: (np.maximum if k.endswith("_peak") else np.add)(totals[k], v)
                                                for k, v in stats.items()}
        alive = int(np.asarray(carry[1]).sum())
        line = (f"[census] step {min((j + 1) * seg, max_steps)}/{max_steps}: {num - alive}/{num} ended, "
                f"{int(totals['successes'])} successful")
        if census:
            line += f"; peak touching slots per condim group {dict(zip(u.contact_condims, totals['group_peak'].tolist()))}"
        print(line + "; " + progress.rate_line(j + 1, num_seg, time.time() - t0, "segments"), flush=True)
        if alive == 0 or stop:
            break
        report(totals, False)          # a stopped census keeps what it counted
    if stop:
        print(f"[census] {stop[0]}: stopped early; the counts so far are in {out} (finished: false)")
    result = report(totals, not stop)
    print(f"[census] success {result['success']:.3f} ({result['successes']}/{num}), non-finite episodes "
          f"{result['nonfinite_episodes']}, {result['env_steps']} env steps in {result['seconds']:.0f}s")
    if census:
        for g in result["condim_groups"]:
            print(f"[census] condim {g['condim']}: {g['slots']} slots, peak touching {g['peak_touching']}"
                  + (" (the cap binds: some step had a group at its cap)" if g["cap_binds"] else ""))
        for p in result["pairs"]:
            print(f"[census]   {p['pair']:<28} condim {p['condim']}, {p['slots']} slots, peak touching {p['peak_touching']}")
    print(f"[census] -> {out}")


if __name__ == "__main__":
    app.run(cli.main(main))
