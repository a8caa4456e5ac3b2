"""Evaluate a trained policy from a train.py run directory; optionally render episodes to a GIF.

    python experiments/evaluate.py --workdir=runs/can_seed0                         # latest checkpoint
    python experiments/evaluate.py --workdir=runs/can_seed0 --source=bc --episodes=256
    python experiments/evaluate.py --workdir=runs/can_seed0 --modes=ode,sde,best_of_n --render=4
    python experiments/evaluate.py --workdir=runs/can_seed0 --source=bc --failures     # Can, Square, two_nuts

--source: 'latest' (newest finetune checkpoint, else the BC actor), 'bc', or an env-step number of
a finetune checkpoint. Success is over --episodes parallel episodes per sampler; results are
printed and written to <workdir>/eval_<source>.json. --render=N draws N ODE episodes into
<workdir>/eval_<source>.gif with mujoco.Renderer (MJX tasks; skipped with a message where no
OpenGL backend exists: try MUJOCO_GL=egl on GPU machines or MUJOCO_GL=osmesa). --failures
records --episodes ODE episodes and breaks the failures down into the JSON: Can (never lifted /
dropped / held at the time limit, grasp height and can tilt; ogpo_jax.envs.mjx.can_diagnostics),
Square (never grasped / misaligned at the peg / held at the time limit / dropped, closest approach
to the peg axis, final tilt; ogpo_jax.envs.mjx.square_diagnostics), two_nuts (stages done at the
end, and the Square breakdown of each nut).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from ogpo_jax.training import cli  # noqa: E402
from ogpo_jax.training import compile_cache, rundir  # noqa: E402
from ogpo_jax.training.evaluation import evaluate_policies, make_evaluator  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by train.py.", required=True)
_SOURCE = flags.DEFINE_string("source", "latest", "'latest', 'bc', or a finetune checkpoint env step.")
_EPISODES = flags.DEFINE_integer("episodes", 64, "Evaluation episodes per sampler.")
_MODES = flags.DEFINE_list("modes", ["ode", "sde"], "Samplers: ode, sde, best_of_n (finetuned agents).")
_SEED = flags.DEFINE_integer("seed", 12345, "Evaluation seed.")
_RENDER = flags.DEFINE_integer("render", 0, "Render this many ODE episodes to a GIF (0: none).")
_FAILURES = flags.DEFINE_bool("failures", False, "can, square, two_nuts: failure-mode breakdown of --episodes ODE episodes.")


def main(argv):
    del argv
    compile_cache.enable(print)
    logging.set_verbosity(logging.WARNING)
    if _EPISODES.value < 1:
        raise SystemExit(f"--episodes must be >= 1, got {_EPISODES.value}")
    config = rundir.load_run_config(_WORKDIR.value)
    params, policies, what = rundir.restore_policy(config, _WORKDIR.value, _SOURCE.value)
    unknown = [m for m in _MODES.value if m not in policies]
    if unknown:
        raise SystemExit(f"--modes: {unknown} not available for {what}; choose from {sorted(policies)}")
    env, episode_length = rundir.run_env(config, _WORKDIR.value, worlds=_EPISODES.value)
    horizon = config.env.chunk_horizon
    evaluate = make_evaluator(env, horizon, episode_length, _EPISODES.value, log=print)
    print(f"[eval] {what}: {_EPISODES.value} episodes per sampler")
    key = jax.random.PRNGKey(_SEED.value)
    result = {"source": what, "episodes": _EPISODES.value, "seed": _SEED.value}
    chosen = {m: policies[m] for m in _MODES.value}      # one compiled program for all of them
    for mode in _MODES.value:
        t0 = time.time()
        # the same key for every sampler: all are scored on the same initial states (as in training)
        out = jax.device_get(evaluate_policies(evaluate, chosen, params, key, [mode])[mode])
        succ = float(out["success"])
        stderr = float(np.sqrt(succ * (1 - succ) / _EPISODES.value))
        broken = int(out["nonfinite"])
        result[mode] = {"success": succ, "stderr": stderr, "return": float(out["return"]),
                        "length": float(out["length"]), "nonfinite_episodes": broken, "seconds": time.time() - t0}
        print(f"[eval] {mode:>9s}: success {succ:.3f} +- {stderr:.3f}, return {float(out['return']):.1f}, "
              f"length {float(out['length']):.0f} ({time.time() - t0:.1f}s incl. compile)"
              + (f"; {broken} episode(s) ended by a non-finite simulation state (failures)" if broken else ""))
    tag = _SOURCE.value
    if _FAILURES.value:
        if config.env.name not in ("can", "square", "two_nuts"):
            print(f"[failures] skipped: breakdowns exist for the can, square and two_nuts tasks, not {config.env.name!r}")
        else:
            from ogpo_jax.envs.mjx import can_diagnostics, square_diagnostics
            from ogpo_jax.envs.mjx.render import record_episodes
            t0 = time.time()
            rec = record_episodes(env, policies["ode"], params, jax.random.fold_in(key, 11), _EPISODES.value,
                                  horizon, episode_length)
            if config.env.name == "can":
                report = can_diagnostics.failure_report(rec["obs"], rec["alive"], rec["success"])
                text = can_diagnostics.format_report(report)
            elif config.env.name == "square":
                report = square_diagnostics.failure_report(rec["obs"], rec["alive"], rec["success"],
                                                           env.unwrapped.peg_pos)
                text = square_diagnostics.format_report(report)
            else:
                report = square_diagnostics.stage_report(rec["obs"], rec["alive"], rec["success"],
                                                         env.unwrapped.peg_positions)
                text = square_diagnostics.format_stage_report(report)
            result["failures"] = report
            print(f"[failures] ODE, {time.time() - t0:.0f}s incl. compile: " + text)
    if _RENDER.value > 0:
        if not hasattr(env.unwrapped, "mj_model"):
            print(f"[render] skipped: {config.env.name!r} is not an MJX task")
        else:
            from ogpo_jax.envs.mjx.render import render_episodes
            result["gif"] = render_episodes(env, policies["ode"], params, jax.random.fold_in(key, 7),
                                            os.path.join(_WORKDIR.value, f"eval_{tag}.gif"), _RENDER.value,
                                            horizon, episode_length)
    path = os.path.join(_WORKDIR.value, f"eval_{tag}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(f"[eval] -> {path}")


if __name__ == "__main__":
    app.run(cli.main(main))
