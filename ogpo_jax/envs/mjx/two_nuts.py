"""A long-horizon, two-stage assembly in MJX: two square nuts onto their own pegs.

robomimic NutAssembly semantics with two of the Square task's nuts and pegs: nut 1 belongs on
peg 1 (the Square task's peg), nut 2 on peg 2, 20 cm away; the episode succeeds only when both
nuts are down around their pegs (robosuite's `on_peg` check for each), +5 and terminate; -1 per
step otherwise, including while only one stage is done. Horizon 700 steps (robomimic's Tool Hang
horizon), so an untrained or half-trained policy sees long episodes of -1 and the value of the
first stage has to be carried across the second: the presets use chunks of H = 8 and discount
0.999 (`configs/two_nuts.py`).

Control, action and the non-finite guard are the shared arm's (`ogpo_jax.envs.mjx.arm`); the
observation is the arm's with `object` (28) = nut 1's 14 robomimic object dims followed by nut 2's.
Each insertion has the Square task's 6.75 mm clearance per side (`ogpo_jax.envs.mjx.square`).
"""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from ogpo_jax.envs.core import EnvState
from ogpo_jax.envs.mjx.arm import ArmParams, ArmTask, obs_layout
from ogpo_jax.envs.mjx import arm
from ogpo_jax.envs.mjx.square import Square, SquareExpert, nut_qpos, on_peg

ASSET_PATH = os.path.join(os.path.dirname(__file__), "assets", "two_nuts.xml")
OBS_KEYS = obs_layout(2)


@dataclasses.dataclass(frozen=True)
class TwoNutsParams(ArmParams):
    nut1_x_range: tuple = (0.0, 0.05)    # initial centres (world x, y), uniform; the two regions are
    nut1_y_range: tuple = (-0.3, -0.2)   # >= 18 cm apart, so the nuts never touch at the start
    nut2_x_range: tuple = (-0.05, 0.0)
    nut2_y_range: tuple = (-0.02, 0.05)
    nut_yaw_range: tuple = (-np.pi, np.pi)
    success_xy: float = 0.03             # robosuite's on_peg, per nut and its own peg
    success_max_z: float = 0.05
    max_steps: int = 700                 # robomimic Tool Hang's horizon (applied by EpisodeWrapper)

    def __post_init__(self):
        super().__post_init__()
        self.check_ranges("nut1_x_range", "nut1_y_range", "nut2_x_range", "nut2_y_range", "nut_yaw_range")


class TwoNuts(ArmTask):
    """Two nuts onto their pegs as a functional environment (`reset`, `step`); jit/vmap-able."""

    asset_path = ASSET_PATH
    object_names = ("nut", "nut2")
    obs_keys = OBS_KEYS
    observation_size = sum(n for _, n in OBS_KEYS)

    def __init__(self, params: TwoNutsParams = TwoNutsParams()):
        super().__init__(params)
        m = self.mj_model
        pegs = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, name) for name in ("peg", "peg2")]
        self.peg_positions = np.array([m.body_pos[b] for b in pegs], np.float32)     # (2, 3): axes at z = 0
        top = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "peg_top")
        self.peg_top_z = float(m.body_pos[pegs[0]][2] + m.site_pos[top][2])

    @property
    def max_vmap_batch(self):
        # On jaxlib 0.10 CPU a vmapped step of this scene over 100 environments hangs (the program
        # never returns and uses no CPU) where 64 runs, so the cap is lower than the arm's 128.
        limit = super().max_vmap_batch
        return None if limit is None else min(limit, 64)

    def on_pegs(self, nut_positions):
        """(2,) bool: robosuite's on_peg check of each nut (rows of (2, 3)) on its own peg."""
        return on_peg(nut_positions, self.peg_positions[:, :2], self.params.success_xy, self.params.success_max_z)

    def stages_done(self, data):
        return self.on_pegs(jnp.stack([self.object_pose(data, 0)[0], self.object_pose(data, 1)[0]]))

    def is_success(self, data):
        return self.stages_done(data).all()

    def reset(self, key) -> EnvState:
        p = self.params
        k_arm, k1x, k1y, k2x, k2y, k_yaw = jax.random.split(key, 6)
        arm = self.arm_reset_qpos(k_arm)
        yaws = jax.random.uniform(k_yaw, (2,), minval=p.nut_yaw_range[0], maxval=p.nut_yaw_range[1])

        def nut(kx, ky, xr, yr, yaw):
            x = jax.random.uniform(kx, (), minval=xr[0], maxval=xr[1])
            y = jax.random.uniform(ky, (), minval=yr[0], maxval=yr[1])
            return nut_qpos(x, y, yaw)

        nuts = jnp.concatenate([nut(k1x, k1y, p.nut1_x_range, p.nut1_y_range, yaws[0]),
                                nut(k2x, k2y, p.nut2_x_range, p.nut2_y_range, yaws[1])])
        return self.initial_state(arm, nuts)


@dataclasses.dataclass(frozen=True)
class TwoNutsExpert(SquareExpert):
    """Scripted two-stage assembly for `ogpo_jax.envs.mjx.two_nuts.TwoNuts`: nut 1 onto peg 1 with
    the Square expert's controller (`SquareExpert.place`), then, once nut 1 is down around its peg
    and the hand has let go of it (fingers fully open or the hand away from its handle), nut 2
    onto peg 2. Same noise knobs and per-demo variability as `SquareExpert`.

    Its grasp settings differ from Square's for the capsule handle collider of the two-nut scene
    (`assets/two_nuts.xml`): the fingers close to the 20 mm capsule (held at ~12 mm finger opening)
    before the hand lifts, so the pads close around the capsule's centre line instead of sliding
    up it (`squeeze_width`); the carry moves at under a third of full speed (`hold_max_action`):
    a fast carry pulls the light nut down through the grip; and the wrist turns to each grasp
    without crossing the yaw opposite its home pose (`grasp_yaw='home'`), where the second
    nut's handle could otherwise lie beyond its joint limit."""

    squeeze_width: float = 0.0145
    grasp_yaw: str = "home"
    hold_max_action: float = 0.3

    def act(self, latent, obs, key):
        env = self.env
        o = env.split_obs(obs)
        nut1, nut2 = o["object"][:14], o["object"][14:28]
        pegs = env.peg_positions
        on_peg = self.around_peg(nut1[:3], pegs[0, :2], env.peg_top_z)
        handle = Square.handle_pos(nut1[:3], arm.quat_xyzw_to_wxyz(nut1[3:7]))
        eef = o["robot0_eef_pos"]
        let_go = (o["robot0_gripper_qpos"].sum() > 0.09) | (jnp.linalg.norm(handle - eef) > 0.04)
        stage2 = on_peg & let_go
        k1, k2 = jax.random.split(key)
        a1 = self.place(latent, o, nut1, pegs[0, :2], env.peg_top_z, k1)
        a2 = self.place(latent, o, nut2, pegs[1, :2], env.peg_top_z, k2)
        return jnp.where(stage2, a2, a1)
