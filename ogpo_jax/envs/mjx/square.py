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
from ogpo_jax.envs.mjx import arm
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
    # 32 of the condim-3 group's 64 contact slots (the pads' 8 condim-4 slots stay): at most 24
    # touched at once over 128 expert episodes and 29 over 128 of the clipped BC actor's; capped,
    # the expert succeeds in 127 / 128 (uncapped 128 / 128) and a batched step is 1.46-1.68x
    # faster on the CPU (docs/tasks.md, "Contact slots")
    max_contact_points: int = 32

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


@dataclasses.dataclass(frozen=True)
class SquareExpert:
    """Scripted nut assembly for `ogpo_jax.envs.mjx.square.Square`, a function of the observation only.

    Phases, decided from the observation at every step (a dropped nut is simply re-grasped):
    turn the hand so the fingers close across the handle (the gripper is symmetric, so the yaw
    is matched modulo pi) while moving above the handle, descend until the grip site is
    `grasp_dz` above the handle centre (the pads then clear the table), close, wait for the
    fingers to squeeze, lift the nut to a carry height, turn it so its walls are parallel to the
    peg's faces (nut yaw to a multiple of pi/2) and carry its centre over the peg axis (the nut
    position is observed, so the grasp offset needs no model); hover with the nut's bottom
    `hover_gap` above the peg top until the centre is within `place_tol` of the axis, descend
    slowly, and open once the nut's walls are `engage_depth` down around the peg (a nut that
    lands on the peg top instead is lifted back to the hover height and re-centred: released
    there, it tips over the edge towards its handle). After opening the hand backs away upwards.

    Variability per demo (`init`): Gaussian action noise with std uniform in
    [noise_min, noise_max] on the position dims (x `rot_noise_frac` on rotation, none on the
    gripper; x `place_noise_frac` while the held nut is within 3 cm of the peg axis), a carry
    height in `carry_z_range` and a speed gain in `gain_range`. With the defaults the expert
    succeeds >= 90% of the time (tests/test_square.py; RESULTS.md).
    """

    env: Square
    noise_min: float = 0.0
    noise_max: float = 0.2
    rot_noise_frac: float = 0.2
    place_noise_frac: float = 0.3
    carry_z_range: tuple = (0.17, 0.22)   # grip-site height while carrying (m); peg top at 0.1
    gain_range: tuple = (0.4, 0.6)
    grasp_dz: float = 0.004           # grip site above the handle centre when grasping (m)
    yaw_tol: float = 0.08             # rad: hand-to-handle yaw error below which it descends
    place_tol: float = 0.003          # m: nut centre to peg axis below which it descends onto the peg
    hover_gap: float = 0.01           # m: nut bottom above the peg top while centring
    engage_depth: float = 0.005       # m: nut bottom below the peg top when it opens
    max_descent: float = 0.01         # m: lowering goal at most this far below the hand per step
    squeeze_width: float = 0.035      # m: finger opening above which a closing grip still waits to lift
    grasp_yaw: str = "nearest"        # hand yaw for a grasp: 'nearest' (the shorter turn, modulo pi) |
                                      # 'home' (the handle's yaw modulo pi nearest the home pose)
    hold_max_action: float = 1.0      # bound on the arm action dims while holding the nut (before noise)

    def __post_init__(self):
        if self.grasp_yaw not in ("nearest", "home"):
            raise ValueError(f"{type(self).__name__}: grasp_yaw={self.grasp_yaw!r} must be 'nearest' or 'home'")

    def init(self, key):
        k = jax.random.split(key, 3)
        return {
            "noise": jax.random.uniform(k[0], (), minval=self.noise_min, maxval=self.noise_max),
            "carry_z": jax.random.uniform(k[1], (), minval=self.carry_z_range[0], maxval=self.carry_z_range[1]),
            "gain": jax.random.uniform(k[2], (), minval=self.gain_range[0], maxval=self.gain_range[1]),
        }

    def act(self, latent, obs, key):
        o = self.env.split_obs(obs)
        return self.place(latent, o, o["object"][:14], self.env.peg_pos[:2], self.env.peg_top_z, key)

    @staticmethod
    def around_peg(nut_pos, peg_xy, peg_top_z):
        """The nut is down around the peg: centre within 12 mm of its axis, bottom below its top."""
        return (jnp.linalg.norm(jnp.asarray(peg_xy) - nut_pos[:2]) < 0.012) & (nut_pos[2] < peg_top_z + NUT_HALF_HEIGHT)

    def place(self, latent, o, nut_obs, peg_xy, peg_top_z, key):
        """The action that carries the nut described by `nut_obs` (its 14 `object` dims) onto the
        peg at `peg_xy` with its top at `peg_top_z`; `o` is the split observation."""
        env = self.env
        p = env.params
        eef = o["robot0_eef_pos"]
        quat = arm.quat_xyzw_to_wxyz(o["robot0_eef_quat"])
        width = o["robot0_gripper_qpos"].sum()
        nut, nut_q = nut_obs[:3], arm.quat_xyzw_to_wxyz(nut_obs[3:7])
        handle = Square.handle_pos(nut, nut_q)
        home = jnp.asarray(env.home_hand_quat)
        x_axis = jnp.array([1.0, 0.0, 0.0])
        hv = arm.quat_rotate(arm.quat_mul(quat, arm.quat_conj(home)), x_axis)
        hand_yaw = jnp.arctan2(hv[1], hv[0])                  # hand yaw relative to the home pose
        nv = arm.quat_rotate(nut_q, x_axis)
        nut_yaw = jnp.arctan2(nv[1], nv[0])
        peg = jnp.asarray(peg_xy)
        carry_z = latent["carry_z"]
        top = peg_top_z + NUT_HALF_HEIGHT                     # nut centre height with its bottom at the peg top

        rel = handle - eef
        hdist = jnp.linalg.norm(rel[:2])
        near = (hdist < 0.02) & (jnp.abs(rel[2] + self.grasp_dz) < 0.02)
        holding = near & (width > 0.008) & (width < 0.09)
        err = peg - nut[:2]
        dist = jnp.linalg.norm(err)

        def nut_to(z):                                        # hand height that puts the nut centre at z
            return (eef[2] + z - nut[2])[None]

        # --- holding: squeeze, lift, square the nut to the peg, carry, hover, centre, descend, open
        squeezing = width > self.squeeze_width
        yaw_off = arm.wrap_angle(nut_yaw, jnp.pi / 2)       # nut yaw off the peg's faces
        engaged = nut[2] < top                               # walls around the peg: position held by it
        tol = jnp.where(engaged, 0.008, jnp.where(nut[2] < top + self.hover_gap + 0.005, 1.7, 1.0) * self.place_tol)
        centred = (dist < tol) & (jnp.abs(yaw_off) < 0.05)
        high_enough = nut[2] > top + 0.02
        lift_goal = jnp.concatenate([eef[:2], carry_z[None]])
        carry_goal = jnp.concatenate([eef[:2] + err, carry_z[None]])
        hover_goal = jnp.concatenate([eef[:2] + err, nut_to(top + self.hover_gap)])
        down_z = jnp.maximum(nut_to(top - self.engage_depth - 0.01), eef[2] - self.max_descent)
        lower_goal = jnp.concatenate([eef[:2] + err, down_z])
        move_goal = jnp.where(
            centred, lower_goal,
            jnp.where(dist < 0.02, hover_goal, jnp.where(high_enough | (dist < 0.03), carry_goal, lift_goal)))
        hold_goal = jnp.where(squeezing, eef, move_goal)
        release = centred & (nut[2] < top - self.engage_depth)
        hold_grip = jnp.where(release, -1.0, 1.0)
        hold_yaw = jnp.where(squeezing | ~high_enough & ~(dist < 0.02), hand_yaw, hand_yaw - yaw_off)

        # --- not holding: turn to the handle's yaw, approach from above, descend, close
        grasp_point = handle + jnp.array([0.0, 0.0, self.grasp_dz])
        if self.grasp_yaw == "home":
            # the handle's yaw modulo pi nearest the home pose, reached without crossing the yaw
            # opposite home (the wrist's joint limit lies there): unwrapped, so a turn of more than
            # pi goes the long way round, commanded at most 1 rad ahead per step
            yaw_err = arm.wrap_angle(nut_yaw, jnp.pi) - hand_yaw
        else:
            yaw_err = arm.wrap_angle(nut_yaw - hand_yaw, jnp.pi)   # fingers across the handle, either way round
        above = handle + jnp.array([0.0, 0.0, 0.08])
        low_and_far = (eef[2] < handle[2] + 0.04) & (hdist > 0.015)
        approach_goal = jnp.where(low_and_far, jnp.concatenate([eef[:2], above[2:]]), above)
        aligned = (hdist <= jnp.where(eef[2] < handle[2] + 0.05, 0.012, 0.006)) & (jnp.abs(yaw_err) < self.yaw_tol)
        at_height = eef[2] - grasp_point[2] <= 0.004
        # a nut released around the peg is left alone: open fully, then back away upwards (pulling
        # up with the pads still on the handle tips it)
        at_peg = self.around_peg(nut, peg, peg_top_z)
        clear_goal = jnp.where(width < 0.09, eef, jnp.concatenate([eef[:2], (handle[2] + 0.1)[None]]))
        free_goal = jnp.where(at_peg, clear_goal, jnp.where(aligned, grasp_point, approach_goal))
        free_grip = jnp.where(aligned & at_height & ~at_peg, 1.0, -1.0)
        free_yaw = jnp.where(at_peg, hand_yaw, hand_yaw + jnp.clip(yaw_err, -1.0, 1.0))

        goal = jnp.where(holding, hold_goal, free_goal)
        # the workspace: a nut stuck to the fingers must not lead the hand away
        goal = jnp.clip(goal, jnp.array([-0.25, -0.45, 0.0]), jnp.array([0.35, 0.45, 0.3]))
        grip = jnp.where(holding, hold_grip, free_grip)
        target = arm.quat_mul(arm.yaw_quat(jnp.where(holding, hold_yaw, free_yaw)), home)
        gain = latent["gain"] / p.pos_scale
        lim = jnp.where(holding, self.hold_max_action, 1.0)   # a gentler carry keeps a light grip
        action = jnp.concatenate([
            jnp.clip((goal - eef) * gain, -lim, lim),
            jnp.clip(arm.rotation_error(quat, target) / p.rot_scale, -lim, lim),
            grip[None]])
        scale = jnp.concatenate([jnp.ones(3), jnp.full((3,), self.rot_noise_frac), jnp.zeros(1)])
        # steadier hands while placing, as in human demonstrations of the insertion
        noise = latent["noise"] * jnp.where(holding & (dist < 0.03), self.place_noise_frac, 1.0)
        action = action + noise * scale * jax.random.normal(key, action.shape)
        return jnp.clip(action, -1.0, 1.0)
