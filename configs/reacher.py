"""A MuJoCo Playground environment through the brax adapter: the dm_control-suite reacher
(`ReacherEasy`: touch a 5 cm target with a two-link arm) as a sparse-success task.

    pip install -e ".[playground]"
    python experiments/train.py --config=configs/reacher.py:quick    # 2-core CPU
    python experiments/train.py --config=configs/reacher.py          # one GPU

Pipeline: scripted demos (`brax_adapter.ReacherExpert`, inverse kinematics + PD with per-demo
action noise) -> clipped BC (stop at SDE success >= 0.45) -> OGPO finetune, as for Can.

Task: Playground's raw `ReacherEasy` (MJX, `impl='jax'`), wrapped by `BraxAdapter` +
`SparseSuccess`: success when the environment's own reward reaches 1 (the finger sphere touches
the target sphere: centres within 6 cm; `ReacherHard`'s target is 15 mm, within 25 mm), reward -1
per step and +5 on success, which ends the episode; a 40-step (0.8 s) time limit, which
truncates (bootstrap: the observation holds no time). Observations: the joint angles as cos/sin,
finger-to-target and joint velocities, scaled to order one (`brax_adapter.reacher_features`). The targets lie 5-20 cm
from the shoulder; H = 4 chunks run 80 ms open-loop. Clipped BC on 100 noisy demos lands at
~0.4 (RESULTS.md, "MuJoCo Playground").

The learning recipe is the toy task's (`configs/toy.py`: 3x128 actor, 10 x 2x128 critics, 8
updates per iteration of 32 envs, actor EMA tau 0.05, SDE rollouts), sized for seconds per
thousand updates on a CPU; the GPU preset scales the env count and updates per iteration.
"""
from ml_collections import ConfigDict

from configs import toy


def get_config(preset: str = "") -> ConfigDict:
    if preset not in ("", "quick"):
        raise ValueError(f"unknown preset {preset!r} for configs/reacher.py; known: '' (one GPU), 'quick' (2-core CPU)")
    c = toy.get_config()                   # the toy task's learning recipe, networks and 32-env loop
    c.env.name = "playground"
    c.env.kwargs = ConfigDict({"env_name": "ReacherEasy", "max_steps": 40, "impl": "jax",
                               "success_threshold": 1.0, "noise_max": 1.0})
    c.env.chunk_horizon = 4
    c.demos.num_demos = 100
    c.bc.eval_every = 500
    c.bc.stop_success = 0.45

    t = c.train
    t.truncation_is_terminal = False       # the reacher does not observe time: a time limit bootstraps
    t.total_env_steps = 100_000
    t.checkpoint_every_env_steps = 25_000
    t.sized_for = "cpu"
    if preset == "":
        t.num_envs = 256
        t.updates_per_iteration = 64
        t.total_env_steps = 300_000
        t.start_training = 10_000
        t.log_every_iterations = 5
        t.replay_capacity = 1_000_000
        t.success_capacity = 200_000
        t.eval_every_env_steps = 25_000
        t.eval_episodes = 256
        t.checkpoint_every_env_steps = 100_000
        t.sized_for = "gpu"
    return c
