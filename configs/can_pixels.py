"""Can from a camera: the policy sees a 32x32 depth image and the gripper's proprioception.

    python experiments/train.py --config=configs/can_pixels.py          # one GPU (H100 / H200 class)
    python experiments/train.py --config=configs/can_pixels.py:quick    # 2-core CPU

Pipeline: scripted demos (the expert acts on the simulator state; every step's image is recorded)
-> clipped BC that trains a small conv encoder together with the flow actor, with +-2 pixel
random-shift augmentation (stop at SDE success >= 0.45) -> the encoder is frozen -> OGPO finetune
on its 64 features + 9 proprio dims (end-effector position and quaternion, fingers), which is also
what the replay stores (73 floats per observation instead of 1,033).

The camera is fixed above the table, in front of the arm, looking down at both bins
(`camera_pos`, `camera_lookat`, 50 degrees vertical field of view); depth is divided by
`camera_far` = 1.5 m, so values lie in [0, 1]. The image is rendered by ray casting inside the
jitted step (`ogpo_jax.envs.mjx.camera`) once per action chunk (docs/pixels.md).

Both presets are `configs/can.py`'s (its learning recipe and scale) with the camera; the quick
one finetunes for 100k env steps instead of 150k and gives BC at most 40k steps. RESULTS.md ("Can from pixels") has what they
reached.
"""
from configs import can


def camera_kwargs(kwargs) -> None:
    """The camera fields of `env.kwargs` (`ogpo_jax.envs.pixels`)."""
    kwargs.obs = "pixels+proprio"
    kwargs.camera_pos = (0.4, 0.0, 1.0)
    kwargs.camera_lookat = (0.12, 0.0, 0.0)
    kwargs.camera_fovy = 50.0
    kwargs.image_width = 32
    kwargs.image_height = 32
    kwargs.camera_far = 1.5


def get_config(preset: str = ""):
    if preset not in ("", "quick"):
        raise ValueError(f"unknown preset {preset!r} for configs/can_pixels.py; known: '' (one GPU), "
                         "'quick' (2-core CPU)")
    c = can.get_config(preset)
    camera_kwargs(c.env.kwargs)
    c.bc.encoder = "conv"
    c.bc.encoder_features = 64
    c.bc.augment_shift = 2
    if preset == "quick":
        c.train.total_env_steps = 100_000
        c.bc.max_steps = 40_000          # the state actor stopped at 10k; this bounds BC's CPU time
    return c
