"""robomimic's tasks on the real robosuite simulator (CPU, worker processes; `ogpo_jax.envs.host`).

    # robosuite in its own environment (robosuite 1.5.2 needs mujoco 3.3.x; README, "robosuite"):
    python3 -m venv ~/rs && ~/rs/bin/pip install "robosuite==1.5.2" "mujoco==3.3.7"
    # your robomimic low_dim file: clipped BC on it, then OGPO on robosuite
    python experiments/train.py --config=configs/robomimic.py --config.env.kwargs.task=square \\
        --config.env.kwargs.python=$HOME/rs/bin/python --config.demos.path=/path/to/low_dim_v15.hdf5
    # no dataset: Can with the scripted robosuite expert, at 2-core CPU scale
    python experiments/train.py --config=configs/robomimic.py:quick --config.env.kwargs.python=$HOME/rs/bin/python

Tasks (`env.kwargs.task`): lift, can, square, tool_hang, transport, with robomimic's robosuite
settings (OSC pose controller, 20 Hz, no reward shaping), its low-dim observation keys
(`robot0_eef_pos`, `robot0_eef_quat`, `robot0_gripper_qpos`, `object`; both arms for transport)
and rollout horizons (400 steps; 700 for tool_hang and transport) as the time limit; success is
robosuite's `_check_success()`, with this framework's reward (-1 per step, +5 and terminate on
success). `env.kwargs.env_args_from=/path/file.hdf5` builds the env from a dataset's own
`env_args` (robosuite env kwargs such as its controller) instead. Only `can` has a scripted
expert; the other tasks need `demos.path`.

The learning recipe is Can's (`configs/can.py`): K = 5, SDE rollouts, success-buffer BC 0.1,
critic-only warm-up, actor lr 1e-4, EMA tau 0.005, chunk H = 4, discount 0.99. The default
preset is sized for a many-core host (64 envs over `num_workers` processes: robosuite steps ~40
control steps/s per core); `quick` for a 2-core CPU (8 envs, 20k env steps, 16-episode
evaluations) shows the path end to end, not a finetuned policy.
"""
from ml_collections import ConfigDict

from configs import can


def get_config(preset: str = "") -> ConfigDict:
    if preset not in ("", "quick"):
        raise ValueError(f"unknown preset {preset!r} for configs/robomimic.py; known: '' (many-core host), "
                         "'quick' (2-core CPU)")
    c = can.get_config("quick")
    c.env.name = "robosuite"
    c.env.kwargs = ConfigDict({"task": "can", "python": "", "num_workers": 0, "env_args_from": ""})
    c.env.chunk_horizon = 4
    c.algo.discount = 0.99
    c.demos.num_demos = 200
    t = c.train
    t.sized_for = "any"
    if preset == "":
        c.bc.eval_every = 5_000
        c.bc.eval_episodes = 50
        t.num_envs = 64
        t.updates_per_iteration = 64
        t.total_env_steps = 1_000_000
        t.start_training = 10_000
        t.eval_every_env_steps = 50_000
        t.eval_episodes = 50
        t.checkpoint_every_env_steps = 50_000
        t.log_every_iterations = 5
    else:
        c.demos.num_demos = 32
        c.bc.max_steps = 10_000
        c.bc.eval_every = 5_000
        c.bc.eval_episodes = 16
        t.num_envs = 8
        t.updates_per_iteration = 8
        t.total_env_steps = 20_000
        t.start_training = 2_000
        t.eval_every_env_steps = 20_000
        t.eval_episodes = 16
        t.checkpoint_every_env_steps = 10_000
        t.log_every_iterations = 25
        c.algo.critic_warmup_updates = 500
    return c
