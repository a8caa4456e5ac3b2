"""robomimic-style "Square" nut assembly, simulated with MuJoCo MJX.

The arm must pick a square nut up by its handle and put it over a square peg fixed to the table,
with robomimic `NutAssemblySquare` semantics where they matter for learning. Control, action,
observation (`object` = nut position, quaternion, and both in the end-effector frame: robomimic's
14-dim Square object state), reward and the non-finite guard are the shared arm's
(`ogpo_jax.envs.mjx.arm`). Success is robosuite's `on_peg` check: the nut centre within
`success_xy` of the peg axis in x and y and below `success_max_z` (the nut has slid at least
halfway down the 10 cm peg); +5 and terminate. The 400-step horizon is applied by `EpisodeWrapper`.

Why it is hard (`assets/square.xml`, plain-MuJoCo measurements in RESULTS.md): the hole is 45.5 mm
wide and the peg 32 mm, 6.75 mm of clearance per side when centred and aligned. A nut released
3 cm above the peg top slides down in 40/40 random releases within 5 mm and 5 deg of the peg
axis, 34/40 within 10 mm and 10 deg, 5/40 within 20 mm and 20 deg: a policy has to place to a
few millimetres, where Can's bin accepts errors of centimetres.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from ogpo_jax.envs.core import EnvState
from ogpo_jax.envs.mjx.arm import ArmParams, ArmTask, quat_rotate

ASSET_PATH = os.path.join(os.path.dirname(__file__), "assets", "square.xml")
NUT_HALF_HEIGHT = 0.01
HANDLE_OFFSET = 0.054          # handle centre along the nut's local x axis (m), from square.xml


def on_peg(nut_pos, peg_xy, success_xy: float, success_max_z: float):
    """robosuite's on_peg check: nut centre(s) (..., 3) within `success_xy` of the peg axis (..., 2)
    in x and in y, and below `success_max_z`."""
    d = jnp.abs(nut_pos[..., :2] - peg_xy)
    return (d[..., 0] < success_xy) & (d[..., 1] < success_xy) & (nut_pos[..., 2] < success_max_z)


def nut_qpos(x, y, yaw):
    """Free-joint qpos (7,) of a nut lying flat on the table at (x, y) with the given yaw."""
    return jnp.array([x, y, NUT_HALF_HEIGHT + 1e-4, jnp.cos(yaw / 2), 0.0, 0.0, jnp.sin(yaw / 2)])


@dataclasses.dataclass(frozen=True)
class SquareParams(ArmParams):
    nut_x_range: tuple = (0.0, 0.05)     # nut initial centre (world x, y), uniform
    nut_y_range: tuple = (-0.25, -0.1)
    nut_yaw_range: tuple = (-np.pi, np.pi)
    success_xy: float = 0.03             # robosuite's on_peg: |dx|, |dy| < 0.03 ...
    success_max_z: float = 0.05          # ... and the nut centre below 5 cm (peg top at 10 cm)
    success_bonus: float = 5.0
    max_steps: int = 400                 # robomimic horizon (applied by EpisodeWrapper)
    impl: str = "jax"                    # MJX backend: 'jax' (CPU, GPU, TPU) | 'warp' (NVIDIA only)

    def __post_init__(self):
        super().__post_init__()
        self.check_ranges("nut_x_range", "nut_y_range", "nut_yaw_range")


class Square(ArmTask):
    """The Square task as a functional environment (`reset(key)`, `step(state, action)`); jit/vmap-able."""

    asset_path = ASSET_PATH
    object_names = ("nut",)

    def __init__(self, params: SquareParams = SquareParams()):
        super().__init__(params)
        peg = mujoco.mj_name2id(self.mj_model, mujoco.mjtObj.mjOBJ_BODY, "peg")
        self.peg_pos = np.array(self.mj_model.body_pos[peg], np.float32)          # peg axis (x, y) at z = 0
        top = mujoco.mj_name2id(self.mj_model, mujoco.mjtObj.mjOBJ_SITE, "peg_top")
        self.peg_top_z = float(self.mj_model.body_pos[peg][2] + self.mj_model.site_pos[top][2])

    def nut_pose(self, data):
        return self.object_pose(data)

    def on_peg(self, nut_pos):
        """robosuite's success check on the nut centre position (3,)."""
        return on_peg(nut_pos, self.peg_pos[:2], self.params.success_xy, self.params.success_max_z)

    def is_success(self, data):
        return self.on_peg(self.nut_pose(data)[0])

    @staticmethod
    def handle_pos(nut_pos, nut_quat_wxyz):
        """World position of the handle's centre (what the expert grasps)."""
        return nut_pos + quat_rotate(nut_quat_wxyz, jnp.array([HANDLE_OFFSET, 0.0, 0.0]))

    def reset(self, key) -> EnvState:
        p = self.params
        k_arm, k_x, k_y, k_yaw = jax.random.split(key, 4)
        arm = self.arm_reset_qpos(k_arm)
        x = jax.random.uniform(k_x, (), minval=p.nut_x_range[0], maxval=p.nut_x_range[1])
        y = jax.random.uniform(k_y, (), minval=p.nut_y_range[0], maxval=p.nut_y_range[1])
        yaw = jax.random.uniform(k_yaw, (), minval=p.nut_yaw_range[0], maxval=p.nut_yaw_range[1])
        return self.initial_state(arm, nut_qpos(x, y, yaw))
