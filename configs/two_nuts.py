"""Long-horizon two-stage assembly in MJX (ogpo_jax.envs.mjx.two_nuts.TwoNuts): two square nuts
onto their own pegs, success only when both are down; 700-step horizon.

    python experiments/train.py --config=configs/two_nuts.py          # one GPU (H100 / H200 class)
    python experiments/train.py --config=configs/two_nuts.py:quick    # 2-core CPU

Pipeline: scripted demos -> clipped BC (stop at SDE success >= 0.45) -> OGPO finetune.

Derived from the Can presets (`configs/can.py`: the same learning recipe, evaluation schedule and
0.25 grad steps per env step) with the long-horizon settings of the paper's Tool Hang / Transport
runs: chunks of H = 8 actions, discount 0.999 (with -1 per step a 700-step episode's return
spans ~-500 .. +5, so the two stages' values stay apart), the 700-step horizon, 5x512 actor and
critics in the GPU preset. Updates per iteration double with the chunk length to keep
0.25 grad steps per env step: 512 per iteration of 256 envs (GPU, 2,048 env steps per
iteration, 300k env steps = 75k updates), 64 per iteration of 32 envs (`quick`, 2x256 networks,
100k env steps).
"""
from ml_collections import ConfigDict

from configs import base, can


def get_config(preset: str = "") -> ConfigDict:
    if preset not in ("", "quick"):
        raise ValueError(f"unknown preset {preset!r} for configs/two_nuts.py; known: '' (one GPU), 'quick' (2-core CPU)")
    c = can.get_config(preset)
    c.env.name = "two_nuts"
    c.env.kwargs = base.mjx_arm_kwargs(max_steps=700)
    c.env.chunk_horizon = 8
    c.algo.discount = 0.999
    c.demos.num_demos = 200
    c.train.updates_per_iteration = c.train.num_envs * c.env.chunk_horizon // 4
    if preset == "quick":
        # A 64-episode evaluation of a failing policy runs 700 steps per episode (~5 min on 2 cores),
        # so BC is evaluated every 20k steps rather than Can's 2k.
        c.bc.eval_every = 20_000
    if preset == "":
        c.algo.actor_hidden_dims = (512,) * 5
        c.algo.critic_hidden_dims = (512,) * 5
    return c


grad_steps_per_env_step = can.grad_steps_per_env_step
