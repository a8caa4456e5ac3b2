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
    # 12 of the condim-3 group's 36 contact slots (the pads' 4 condim-4 slots stay): at most 6
    # touched at once over 128 expert episodes and 10 over 128 of the BC-10 actor's; capped, the
    # expert still succeeds in 128 / 128 and a batched step is 1.5-2x faster on the CPU
    # (docs/tasks.md, "Contact slots")
    max_contact_points: int = 12


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


@dataclasses.dataclass(frozen=True)
class CanExpert:
    """Scripted pick-and-place for `ogpo_jax.envs.mjx.can.Can`, a function of the observation only.

    Phases, decided from the observation at every step (so a dropped can is simply re-grasped):
    approach above the can (rising first if the hand is low and far), descend to the grasp
    height, close, wait for the fingers to squeeze, lift to a carry height, move over the target
    bin, lower and release. The orientation is servoed to the home "pointing down" pose.

    Variability per demo (`init`): Gaussian action noise with std uniform in
    [noise_min, noise_max] on the position dims (x `rot_noise_frac` on rotation, none on the
    gripper), a carry height in `carry_z_range`, a release point jittered by `drop_jitter` inside
    the target bin, and a speed gain in `gain_range` (fraction of full speed per metre of error,
    in units of `pos_scale`). With the defaults the expert succeeds >= 95% of the time
    (tests/test_can.py; RESULTS.md).
    """

    env: Can
    noise_min: float = 0.0
    noise_max: float = 0.2
    rot_noise_frac: float = 0.2
    carry_z_range: tuple = (0.2, 0.26)
    drop_jitter: float = 0.05
    gain_range: tuple = (0.4, 0.6)
    grasp_dz: float = 0.02            # grip site above the can centre when grasping (m)
    release_z: float = 0.17           # open the gripper below this height over the target

    def init(self, key):
        k = jax.random.split(key, 4)
        return {
            "noise": jax.random.uniform(k[0], (), minval=self.noise_min, maxval=self.noise_max),
            "carry_z": jax.random.uniform(k[1], (), minval=self.carry_z_range[0], maxval=self.carry_z_range[1]),
            "drop": jax.random.uniform(k[2], (2,), minval=-self.drop_jitter, maxval=self.drop_jitter),
            "gain": jax.random.uniform(k[3], (), minval=self.gain_range[0], maxval=self.gain_range[1]),
        }

    def act(self, latent, obs, key):
        p = self.env.params
        o = self.env.split_obs(obs)
        eef = o["robot0_eef_pos"]
        quat = jnp.concatenate([o["robot0_eef_quat"][3:], o["robot0_eef_quat"][:3]])   # xyzw -> wxyz
        width = o["robot0_gripper_qpos"].sum()
        can = o["object"][:3]
        target = jnp.asarray(p.target_center) + latent["drop"]
        carry_z = latent["carry_z"]
        grasp_point = can + jnp.array([0.0, 0.0, self.grasp_dz])

        rel = can - eef
        hdist = jnp.linalg.norm(rel[:2])
        near = (hdist < 0.03) & (jnp.abs(rel[2] + self.grasp_dz) < 0.03)
        holding = near & (width > 0.03) & (width < 0.085)

        # --- holding the can: squeeze, carry, lower, release
        over_target = jnp.linalg.norm(target - eef[:2]) <= 0.02
        carry_goal = jnp.where(eef[2] > carry_z - 0.06, jnp.concatenate([target, carry_z[None]]),
                               jnp.concatenate([eef[:2], carry_z[None]]))
        lower_goal = jnp.concatenate([target, jnp.array([self.release_z - 0.02])])
        squeezing = width > 0.07
        hold_goal = jnp.where(squeezing, eef, jnp.where(over_target, lower_goal, carry_goal))
        hold_grip = jnp.where(~squeezing & over_target & (eef[2] < self.release_z), -1.0, 1.0)

        # --- not holding: approach from above, descend, close
        above = can + jnp.array([0.0, 0.0, 0.1])
        low_and_far = (eef[2] < can[2] + 0.06) & (hdist > 0.02)
        approach_goal = jnp.where(low_and_far, jnp.concatenate([eef[:2], above[2:]]), above)
        aligned = hdist <= 0.01
        at_height = rel[2] + self.grasp_dz >= -0.006
        free_goal = jnp.where(aligned, grasp_point, approach_goal)
        free_grip = jnp.where(aligned & at_height, 1.0, -1.0)

        goal = jnp.where(holding, hold_goal, free_goal)
        grip = jnp.where(holding, hold_grip, free_grip)
        gain = latent["gain"] / p.pos_scale
        action = jnp.concatenate([
            jnp.clip((goal - eef) * gain, -1.0, 1.0),
            jnp.clip(rotation_error(quat, jnp.asarray(self.env.home_hand_quat)) / p.rot_scale, -1.0, 1.0),
            grip[None]])
        scale = jnp.concatenate([jnp.ones(3), jnp.full((3,), self.rot_noise_frac), jnp.zeros(1)])
        action = action + latent["noise"] * scale * jax.random.normal(key, action.shape)
        return jnp.clip(action, -1.0, 1.0)
