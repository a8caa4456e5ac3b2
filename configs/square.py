"""robomimic-style Square nut assembly in MJX (ogpo_jax.envs.mjx.square.Square).

    python experiments/train.py --config=configs/square.py          # one GPU (H100 / H200 class)
    python experiments/train.py --config=configs/square.py:quick    # 2-core CPU

Pipeline: scripted demos -> clipped BC (stop at SDE success >= 0.45) -> OGPO finetune.

Both presets are the Can presets (`configs/can.py`: the same learning recipe, networks, batch
sizes, env counts and evaluation schedule) on the Square task: chunk H = 4, discount 0.99, the
400-step robomimic horizon and 200 scripted demonstrations, as for Can and as in the paper's
Square setting. What differs from Can is the task only: the nut must go over the peg with
6.75 mm of clearance per side (README, "Tasks").
"""
from ml_collections import ConfigDict

from configs import can


def get_config(preset: str = "") -> ConfigDict:
    if preset not in ("", "quick"):
        raise ValueError(f"unknown preset {preset!r} for configs/square.py; known: '' (one GPU), 'quick' (2-core CPU)")
    c = can.get_config(preset)
    c.env.name = "square"
    c.env.kwargs = ConfigDict({"max_steps": 400, "impl": "jax"})
    c.env.chunk_horizon = 4
    c.algo.discount = 0.99
    c.demos.num_demos = 200
    return c


grad_steps_per_env_step = can.grad_steps_per_env_step
