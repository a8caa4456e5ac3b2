"""Scripted experts that generate demonstrations, and a jitted demo collector.

An expert is a pair of pure functions: `init(key) -> latent` (per-episode choices such as which
gap to use and how noisy this demonstrator is) and `act(latent, obs, key) -> action`.
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp

from ogpo_jax.envs.toy import PointGaps


@dataclasses.dataclass(frozen=True)
class PointGapsExpert:
    """Waypoint controller through a randomly chosen gap, with per-demo action noise.

    Mixed-quality demonstrations in the spirit of robomimic MH: each demo picks the wide gap with
    probability `p_wide`, and a noise level uniformly in [noise_min, noise_max] (std of Gaussian
    noise added to every action before clipping). With `speed` < 1 every action component is
    clipped to [-speed, speed] (after the noise): the demonstrations never move at the task's full
    speed, so a tight time limit puts the fast solutions outside their support.
    """

    env: PointGaps
    p_wide: float = 0.5
    noise_min: float = 0.0
    noise_max: float = 0.6
    align_tol: float = 0.02
    speed: float = 1.0

    def init(self, key):
        k_gap, k_noise = jax.random.split(key)
        wide = jax.random.bernoulli(k_gap, self.p_wide)
        p = self.env.params
        gap_x = jnp.where(wide, p.wide_gap[0], p.narrow_gap[0])
        noise = jax.random.uniform(k_noise, (), minval=self.noise_min, maxval=self.noise_max)
        return {"gap_x": gap_x, "noise": noise}

    def act(self, latent, obs, key):
        p = self.env.params
        pos = obs[:2]
        gx = latent["gap_x"]
        below = pos[1] < -p.wall_half_width - 0.02
        aligned = jnp.abs(pos[0] - gx) < self.align_tol
        target = jnp.where(
            below & ~aligned, jnp.array([gx, -0.2]),
            jnp.where(pos[1] < 0.15, jnp.array([gx, 0.25]), jnp.asarray(p.goal)))
        action = jnp.clip((target - pos) / p.max_speed, -1.0, 1.0)
        action = self.speed * action + latent["noise"] * jax.random.normal(key, action.shape)
        return jnp.clip(action, -self.speed, self.speed)


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

    env: object                       # ogpo_jax.envs.mjx.can.Can (not imported: keeps MJX optional)
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
        from ogpo_jax.envs.mjx.can import rotation_error   # local: experts.py must import without MJX
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

    env: object                       # ogpo_jax.envs.mjx.square.Square (not imported: keeps MJX optional)
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
        from ogpo_jax.envs.mjx.square import NUT_HALF_HEIGHT
        return (jnp.linalg.norm(jnp.asarray(peg_xy) - nut_pos[:2]) < 0.012) & (nut_pos[2] < peg_top_z + NUT_HALF_HEIGHT)

    def place(self, latent, o, nut_obs, peg_xy, peg_top_z, key):
        """The action that carries the nut described by `nut_obs` (its 14 `object` dims) onto the
        peg at `peg_xy` with its top at `peg_top_z`; `o` is the split observation."""
        from ogpo_jax.envs.mjx import arm   # local: experts.py must import without MJX
        from ogpo_jax.envs.mjx.square import NUT_HALF_HEIGHT, Square
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
        from ogpo_jax.envs.mjx import arm   # local: experts.py must import without MJX
        from ogpo_jax.envs.mjx.square import Square
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


def collect_demos(env, expert, num_demos: int, max_steps: int, key, log=None, segment_steps: int = 50):
    """Roll out `num_demos` expert episodes in parallel (env must not auto-reset).

    Returns a dict of arrays: obs (N, T, obs_dim), actions (N, T, da), rewards (N, T), dones (N, T),
    valid (N, T) (steps taken before the episode ended), success (N,), length (N,); T = max_steps.

    The episodes advance `segment_steps` steps per call of one compiled program, so `log` (if
    given) reports progress after each segment, and the rollout stops once every episode has ended
    (the remaining steps are returned as invalid zeros). Step t of episode i uses the same key for
    any `segment_steps`.
    """
    import numpy as np

    from ogpo_jax.envs.core import batched, compiler_options
    from ogpo_jax.training import progress

    seg = max(1, min(int(segment_steps), int(max_steps)))
    num_seg = -(-max_steps // seg)

    def start(k):
        k_reset, k_latent, k_act = jax.random.split(k, 3)
        step_keys = jax.random.split(k_act, max_steps)
        step_keys = jnp.concatenate([step_keys, jnp.zeros((num_seg * seg - max_steps,) + step_keys.shape[1:],
                                                          step_keys.dtype)])
        return env.reset(k_reset), expert.init(k_latent), step_keys.reshape((num_seg, seg) + step_keys.shape[1:])

    def segment(state, alive, latent, step_keys):
        def step(carry, k_step):
            s, alive = carry
            action = expert.act(latent, s.obs, k_step)
            nxt = env.step(s, action)
            out = dict(obs=s.obs, actions=action, rewards=nxt.reward, dones=nxt.done, valid=alive,
                       success=nxt.info["success"] & alive)
            nxt = jax.tree_util.tree_map(lambda a, b: jnp.where(alive, a, b), nxt, s)
            return (nxt, alive & ~nxt.done), out

        (state, alive), out = jax.lax.scan(step, (state, alive), step_keys)
        return state, alive, out

    opts = compiler_options(env)
    start_fn = jax.jit(lambda keys: batched(start, env, keys), compiler_options=opts)
    segment_fn = jax.jit(lambda s, a, lat, k: batched(segment, env, s, a, lat, k), compiler_options=opts)
    keys = jax.random.split(key, num_demos)
    if log is not None:
        progress.compile_program(start_fn, (keys,), f"demo reset ({num_demos} episodes)", log)
    state, latent, step_keys = start_fn(keys)
    alive = jnp.ones((num_demos,), bool)
    if log is not None:
        progress.compile_program(segment_fn, (state, alive, latent, step_keys[:, 0]),
                                 f"demo rollout ({num_demos} episodes x {seg} steps per call)", log)
    chunks, t0 = [], time.time()
    for j in range(num_seg):
        state, alive, out = segment_fn(state, alive, latent, step_keys[:, j])
        chunks.append(jax.device_get(out))
        n_alive = int(np.asarray(alive).sum())
        if log is not None:
            done_steps = min((j + 1) * seg, max_steps)
            succ = int(np.concatenate([c["success"] for c in chunks], 1).any(1).sum())
            log(f"[demos] step {done_steps}/{max_steps}: {num_demos - n_alive}/{num_demos} episodes ended, "
                f"{succ} successful; {progress.rate_line(j + 1, num_seg, time.time() - t0, 'segments')}"
                + (" (all ended)" if n_alive == 0 and j + 1 < num_seg else ""))
        if n_alive == 0:
            break
    traj = {k: np.concatenate([c[k] for c in chunks], 1) for k in chunks[0]}
    pad = num_seg * seg - traj["valid"].shape[1]
    traj = {k: np.concatenate([v, np.zeros((v.shape[0], pad) + v.shape[2:], v.dtype)], 1)[:, :max_steps]
            for k, v in traj.items()}
    traj["success"] = traj["success"].any(1)
    traj["length"] = traj["valid"].sum(1)
    return traj
