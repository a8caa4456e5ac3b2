"""Base configuration: every field with its default, defined in `ogpo_jax/training/defaults.py`
(so that `validate` can check configs without this directory). Task configs start from this.

    python experiments/train.py --config=configs/toy.py --config.algo.group_size=8
"""
from ogpo_jax.training.defaults import get_config  # noqa: F401


def mjx_arm_kwargs(max_steps: int):
    """`env.kwargs` of the MJX arm tasks (Can, Square, two_nuts), every field the command line may
    set: `impl` ('jax' | 'warp'); `max_contact_points` (0: the task's default cap, -1: none, else
    the cap; docs/tasks.md, "Contact slots"); `warp_max_worlds` (0: sized from the run's largest
    call, `training.spec.env_kwargs`); `obs` ('state', or 'pixels' / 'pixels+proprio' with the
    default camera: docs/pixels.md; `configs/can_pixels.py` sets the camera's fields too)."""
    from ml_collections import ConfigDict
    return ConfigDict({"max_steps": max_steps, "impl": "jax", "max_contact_points": 0, "warp_max_worlds": 0,
                       "obs": "state"})
