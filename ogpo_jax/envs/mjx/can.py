"""robomimic-style "Can" pick-and-place, simulated with MuJoCo MJX.

A Panda-like 7-DoF arm must pick a can out of a source bin and put it into a target bin, with
robomimic `PickPlaceCan` semantics where they matter for learning. Control, action, observation
(`object` = can position, quaternion, and both in the end-effector frame), reward and the
non-finite guard are the shared arm's (`ogpo_jax.envs.mjx.arm`); this module adds the scene, where
the can starts and the success check: the can inside the target bin below the rim (+5 and
terminate); robomimic's 400-step horizon is applied by `EpisodeWrapper`.

Physics (`assets/can.xml`): the can collider is a capsule plus a flat box base, held by elliptic
friction cones; the MJX elliptic-cone Hessian is made consistent at the cone apex
(`solver_patch`): unpatched, a contact with a near-zero tangential residual (a can lying against a
bin wall) turns the state NaN.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp

from ogpo_jax.envs.core import EnvState
from ogpo_jax.envs.mjx.arm import (ARM_DOF, HOME_QPOS, IMPLS, OBS_KEYS, ArmParams, ArmTask, check_impl,
                                   rotation_error)

# the shared arm's names stay importable from here
__all__ = ["Can", "CanParams", "ASSET_PATH", "CAN_HALF_HEIGHT", "ARM_DOF", "HOME_QPOS", "IMPLS", "OBS_KEYS",
           "check_impl", "rotation_error"]

ASSET_PATH = os.path.join(os.path.dirname(__file__), "assets", "can.xml")
CAN_HALF_HEIGHT = 0.06


@dataclasses.dataclass(frozen=True)
class CanParams(ArmParams):
    can_x_range: tuple = (0.0, 0.2)  # can initial position (world x, y), uniform
    can_y_range: tuple = (-0.35, -0.15)
    target_center: tuple = (0.1, 0.28)
    target_half_extent: tuple = (0.17, 0.16)   # inside the target bin's walls
    success_max_z: float = 0.1       # can centre below this height (bin rim 0.08 + margin)
    success_bonus: float = 5.0
    max_steps: int = 400             # robomimic horizon (applied by EpisodeWrapper)
    impl: str = "jax"                # MJX backend: 'jax' (CPU, GPU, TPU) | 'warp' (MuJoCo Warp, NVIDIA only)


class Can(ArmTask):
    """The Can task as a functional environment (`reset(key)`, `step(state, action)`); jit/vmap-able."""

    asset_path = ASSET_PATH
    object_names = ("can",)

    def __init__(self, params: CanParams = CanParams()):
        super().__init__(params)

    def can_pose(self, data):
        return self.object_pose(data)

    def in_target(self, can_pos):
        p = self.params
        dx = jnp.abs(can_pos[0] - p.target_center[0])
        dy = jnp.abs(can_pos[1] - p.target_center[1])
        return (dx < p.target_half_extent[0]) & (dy < p.target_half_extent[1]) & (can_pos[2] < p.success_max_z)

    def is_success(self, data):
        return self.in_target(self.can_pose(data)[0])

    def reset(self, key) -> EnvState:
        p = self.params
        k_arm, k_x, k_y, k_yaw = jax.random.split(key, 4)
        arm = self.arm_reset_qpos(k_arm)
        x = jax.random.uniform(k_x, (), minval=p.can_x_range[0], maxval=p.can_x_range[1])
        y = jax.random.uniform(k_y, (), minval=p.can_y_range[0], maxval=p.can_y_range[1])
        yaw = jax.random.uniform(k_yaw, (), minval=-jnp.pi, maxval=jnp.pi)
        can = jnp.array([x, y, CAN_HALF_HEIGHT + 1e-4, jnp.cos(yaw / 2), 0.0, 0.0, jnp.sin(yaw / 2)])
        return self.initial_state(arm, can)
