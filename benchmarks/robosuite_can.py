"""robosuite PickPlaceCan control steps/s in one process: the CPU reference the MJX Can task is held to.

    python benchmarks/robosuite_can.py --steps=400            # in an environment that has robosuite

Runs without this package (only robosuite and numpy), so it can live in its own environment:
robosuite 1.5.2 fails on the mujoco that mujoco-mjx 3.17 needs (an AssertionError in
`binding_utils.get_joint_qpos_addr`) and works on mujoco 3.3.7:

    python3 -m venv /tmp/rs && /tmp/rs/bin/pip install "robosuite==1.5.2" "mujoco==3.3.7"
    python benchmarks/env_throughput.py --robosuite_python=/tmp/rs/bin/python   # both, same machine state

The setting is robomimic's Can: Panda, its default composite controller (OSC_POSE arm), 20 Hz
control, low-dimensional observations, no rendering. Actions are the benchmark's shared
distribution (0.3 x standard normal, clipped to [-1, 1], a new draw every step); episodes reset
every `--horizon` steps, and the reset time counts. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800, help="timed control steps")
    parser.add_argument("--horizon", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import robosuite
    env = robosuite.make("PickPlaceCan", robots="Panda", has_renderer=False, has_offscreen_renderer=False,
                         use_camera_obs=False, use_object_obs=True, reward_shaping=False, control_freq=20,
                         horizon=args.horizon, ignore_done=True)
    rng = np.random.default_rng(args.seed)
    dim = env.action_spec[0].shape[0]
    draw = lambda: np.clip(0.3 * rng.standard_normal(dim), -1.0, 1.0)  # noqa: E731
    env.reset()
    for _ in range(20):                                 # warm-up: first steps build caches
        env.step(draw())
    t0, since_reset = time.perf_counter(), 0
    for _ in range(args.steps):
        if since_reset == args.horizon:
            env.reset()
            since_reset = 0
        env.step(draw())
        since_reset += 1
    dt = (time.perf_counter() - t0) / args.steps
    substeps = int(round(env.control_timestep / env.model_timestep))
    import mujoco
    print(json.dumps({"simulator": "robosuite PickPlaceCan", "robosuite": robosuite.__version__,
                      "mujoco": mujoco.__version__, "control_steps_per_s": 1.0 / dt,
                      "physics_steps_per_s": substeps / dt, "substeps": substeps,
                      "model_timestep": env.model_timestep, "steps": args.steps}))


if __name__ == "__main__":
    main()
