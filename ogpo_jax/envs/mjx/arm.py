"""The Panda-like arm every MJX manipulation task shares: model loading, the differential-IK
controller, the robomimic-style observation, the step with its non-finite guard.

A task is a subclass of `ArmTask` that names its MJCF scene and its object bodies (free joints of
the same names), and supplies `reset(key)` (where the objects start) and `is_success(data)`.
Everything else is here:

* control at `1 / control_dt` Hz (`control_dt = timestep * n_substeps`, 20 Hz by default);
* action (7,) in [-1, 1]: end-effector position delta (3, scaled by `pos_scale` metres), rotation
  delta (3, axis-angle in the world frame, scaled by `rot_scale` radians) and gripper (1, -1 open,
  +1 closed). The pose delta becomes joint-position targets inside the jitted step through
  damped-least-squares differential IK on the MJX Jacobian of the grip site;
* observation with robomimic's low-dim keys and sizes (`OBS_KEYS`): `robot0_eef_pos` (3),
  `robot0_eef_quat` (4, xyzw like robosuite), `robot0_gripper_qpos` (2), and `object` (14 per
  object) = each object's position, quaternion (xyzw), and position and quaternion in the
  end-effector frame, objects in `object_names` order;
* reward -1 per step, `success_bonus` and terminate on success; a step whose physics state (qpos,
  qvel) or observation is non-finite ends the episode as a failure (`info['nonfinite']`, terminal,
  reward -1). The time limit is applied by `EpisodeWrapper` (see `ogpo_jax.envs.make`).

The scenes (`assets/*.xml`) include one arm (`assets/panda_arm.xml`): arm links are visual-only
capsules, the hand and the two friction pads collide through each scene's explicit contact-pair
list, elliptic friction cones hold grasps (no welds), Newton solver with few iterations and MJX's
elliptic-cone Hessian made consistent at the cone apex (`solver_patch`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    from mujoco import mjx  # mujoco-mjx prints "Failed to import warp" when warp is absent

from ogpo_jax.data import demos
from ogpo_jax.envs import core
from ogpo_jax.envs.core import EnvState
from ogpo_jax.envs.mjx import compile_options, solver_patch

OBS_KEYS = (("robot0_eef_pos", 3), ("robot0_eef_quat", 4), ("robot0_gripper_qpos", 2), ("object", 14))
ARM_DOF = 7
HOME_QPOS = (0.0, 0.2, 0.0, -2.6, 0.0, 2.94, 0.785)
IMPLS = ("jax", "warp")


def obs_layout(num_objects: int) -> tuple:
    """robomimic-style observation keys and sizes of an arm task with `num_objects` objects."""
    return OBS_KEYS[:3] + (("object", 14 * num_objects),)


def touching(contact):
    """Bool per contact slot of an MJX (JAX backend) `Data._impl.contact`: the slot touches, i.e.
    its distance is below the contact margin, where `mjx/_src/constraint.py` makes its rows active."""
    return contact.dist < contact.includemargin


def contact_cap_kwargs(text: str, flag: str) -> dict:
    """A command-line contact cap -> env kwargs: 'default' (the task's own) -> {}, 'none' ->
    max_contact_points -1, an integer >= 1 -> that cap; anything else a ValueError naming `flag`."""
    text = text.strip()
    if text == "default":
        return {}
    if text == "none":
        return {"max_contact_points": -1}
    if text.isdigit() and int(text) >= 1:
        return {"max_contact_points": int(text)}
    raise ValueError(f"{flag}={text!r}: must be 'default', 'none' or an integer >= 1")


def check_impl(impl: str) -> None:
    """Fail early, naming the field, where the MJX backend `impl` cannot run here.

    'warp' runs MJX on MuJoCo Warp (mujoco-mjx's vendored `mujoco_warp`), which needs the
    `warp-lang` package and JAX on an NVIDIA GPU or the CPU (Warp's CPU device: slow, for
    development and tests); 'jax' runs everywhere JAX does.
    """
    if impl not in IMPLS:
        raise ValueError(f"env.kwargs.impl={impl!r}: the MJX backend must be one of {IMPLS}")
    if impl == "warp":
        import importlib.util
        if importlib.util.find_spec("warp") is None:
            raise ImportError(
                "env.kwargs.impl='warp' needs the warp-lang package (pip install warp-lang); it is not "
                "installed. Use env.kwargs.impl='jax' (the default; CPU, GPU and TPU).")
        if jax.default_backend() not in ("gpu", "cpu"):
            raise ValueError(f"env.kwargs.impl='warp' runs on NVIDIA GPUs (and Warp's CPU device); the JAX "
                             f"backend here is {jax.default_backend()!r}. Use env.kwargs.impl='jax'.")


@dataclasses.dataclass(frozen=True)
class ArmParams:
    """Simulation, controller and episode settings shared by the arm tasks (a task's params extend
    these with where its objects start and what counts as success)."""

    timestep: float = 0.005          # physics step (s)
    n_substeps: int = 10             # physics steps per control step: 20 Hz control
    # Newton solver budget per physics step. Under vmap every environment runs as many solver and
    # line-search iterations as the slowest one, so these caps set the cost of a batched step;
    # 4 line-search iterations and tolerance 1e-5 cut it 1.5-2x against 8 and 1e-8 while the
    # scripted Can expert still succeeds in >= 0.99 of episodes (RESULTS.md, Can, "Simulator speed").
    solver_iterations: int = 4
    ls_iterations: int = 4
    solver_tolerance: float = 1e-5
    pos_scale: float = 0.03          # metres per unit action (per control step)
    rot_scale: float = 0.3           # radians per unit action
    ik_damping: float = 0.05         # damped least squares lambda
    max_target_lead: float = 0.15    # rad: joint targets stay within this of the measured joints
    finger_open: float = 0.05        # finger joint target at gripper action -1 (m)
    arm_init_noise: float = 0.02     # std of the initial joint-angle noise (robosuite's default)
    success_bonus: float = 5.0       # reward of the successful step (every other step: -1)
    max_steps: int = 400             # time limit (robomimic's horizon; applied by EpisodeWrapper)
    impl: str = "jax"                # MJX backend: 'jax' (CPU, GPU, TPU) | 'warp' (MuJoCo Warp)
    # impl='warp' only. MuJoCo Warp keeps one contact buffer for every world of a call (envs x
    # seeds, or evaluation episodes x seeds) and one constraint buffer per world; it drops what
    # does not fit and carries on with wrong physics. Each world gets the scene's contact slots and
    # constraint rows as the JAX backend sizes them (they never bind), for up to `warp_max_worlds`
    # worlds per call; a step that needed more ends every episode as a failure
    # (info['nonfinite'], info['contact_overflow']).
    warp_max_worlds: int = 4096
    # impl='jax' only (Warp sizes its own buffers). MJX's collision step emits a fixed number of
    # contact slots per pair type (Can: 40, Square: 72) and the solver carries constraint rows for
    # every one, touching or not. A cap keeps, per condim group, the `max_contact_points` slots of
    # least distance (MJX's `max_contact_points` numeric; -1: no cap). Above the most slots that
    # ever touch at once it drops no contact, but it reorders the rows the few-iteration solver
    # works through, so a default is kept only where the expert's success holds
    # (`experiments/contact_census.py`; docs/tasks.md, "Contact slots").
    max_contact_points: int = -1
    # impl='jax' only: record, per control step, the peak number of touching contact slots over
    # its physics steps, per condim group (info['contact_groups']) and per geom pair
    # (info['contact_pairs'], `ArmTask.contact_pairs` names them); for the contact census
    record_contacts: bool = False

    def __post_init__(self):
        name = type(self).__name__
        if self.impl not in IMPLS:
            raise ValueError(f"env.kwargs.impl={self.impl!r}: the MJX backend must be one of {IMPLS}")
        if self.timestep <= 0 or self.n_substeps < 1:
            raise ValueError(f"{name}: timestep={self.timestep} must be > 0 and n_substeps={self.n_substeps} >= 1")
        if self.solver_iterations < 1 or self.ls_iterations < 1 or self.solver_tolerance <= 0:
            raise ValueError(f"{name}: solver_iterations={self.solver_iterations} and ls_iterations="
                             f"{self.ls_iterations} must be >= 1 and solver_tolerance={self.solver_tolerance} > 0")
        if self.max_steps < 1:
            raise ValueError(f"{name}: max_steps must be >= 1, got {self.max_steps}")
        if self.warp_max_worlds < 1:
            raise ValueError(f"env.kwargs.warp_max_worlds must be >= 1, got {self.warp_max_worlds}")
        if self.max_contact_points != -1 and self.max_contact_points < 1:
            raise ValueError(f"env.kwargs.max_contact_points must be -1 (no cap) or >= 1, got {self.max_contact_points}")
        if self.impl == "warp" and self.record_contacts:
            raise ValueError("env.kwargs.record_contacts=True counts MJX's JAX-backend contact slots; "
                             "use it with impl='jax'")

    @property
    def control_dt(self) -> float:
        return self.timestep * self.n_substeps

    def check_ranges(self, *names: str) -> None:
        """Each named field must be a (low, high) pair with low <= high."""
        for name in names:
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"{type(self).__name__}: {name}={getattr(self, name)} must be (low, high) with low <= high")


def quat_wxyz_to_xyzw(q):
    return jnp.concatenate([q[..., 1:], q[..., :1]], axis=-1)


def quat_xyzw_to_wxyz(q):
    return jnp.concatenate([q[..., 3:], q[..., :3]], axis=-1)


def quat_mul(a, b):
    aw, ax, ay, az = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
    bw, bx, by, bz = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return jnp.stack([aw * bw - ax * bx - ay * by - az * bz,
                      aw * bx + ax * bw + ay * bz - az * by,
                      aw * by - ax * bz + ay * bw + az * bx,
                      aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def quat_conj(q):
    return q * jnp.array([1.0, -1.0, -1.0, -1.0])


def quat_rotate(q, v):
    """Rotate vector(s) `v` (..., 3) by unit quaternion(s) `q` (..., 4, wxyz)."""
    w, u = q[..., :1], q[..., 1:]
    t = 2.0 * jnp.cross(u, v)
    return v + w * t + jnp.cross(u, t)


def yaw_quat(angle):
    """Quaternion (wxyz) of a rotation by `angle` about the world z axis."""
    zero = jnp.zeros_like(angle)
    return jnp.stack([jnp.cos(angle / 2), zero, zero, jnp.sin(angle / 2)], axis=-1)


def wrap_angle(a, period=2 * jnp.pi):
    """`a` wrapped into [-period / 2, period / 2)."""
    return (a + period / 2) % period - period / 2


def tilt_degrees(quat_xyzw):
    """Angle (degrees, numpy) between a body's z axis and the world z axis, for quaternions
    (..., 4) in the observation's xyzw order."""
    x, y = quat_xyzw[..., 0], quat_xyzw[..., 1]
    cos = 1.0 - 2.0 * (x * x + y * y)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def episode_arrays(obs, alive, success, size: int, what: str):
    """obs (T, N, size), alive (T, N) and success (N,) as numpy arrays (the
    failure diagnostics' input), or a ValueError naming the shapes."""
    obs, alive, success = np.asarray(obs), np.asarray(alive, bool), np.asarray(success, bool)
    if obs.ndim != 3 or obs.shape[-1] != size:
        raise ValueError(f"obs must have shape (T, N, {size}) ({what}), got {obs.shape}")
    steps, num = obs.shape[:2]
    if alive.shape != (steps, num) or success.shape != (num,):
        raise ValueError(f"alive must be {(steps, num)} and success {(num,)}, got {alive.shape} and {success.shape}")
    return obs, alive, success


def rotation_error(q_current, q_desired):
    """World-frame axis-angle vector that rotates `q_current` onto `q_desired` (wxyz quaternions)."""
    e = quat_mul(q_desired, quat_conj(q_current))
    e = e * jnp.where(e[..., :1] < 0, -1.0, 1.0)            # shortest way round
    vec = e[..., 1:]
    s = jnp.linalg.norm(vec, axis=-1, keepdims=True)
    angle = 2.0 * jnp.arctan2(s, e[..., :1])
    return jnp.where(s > 1e-9, vec / jnp.maximum(s, 1e-9) * angle, 2.0 * vec)


class ArmTask:
    """Base of the arm tasks: a functional environment (`reset(key)`, `step(state, action)`),
    jit/vmap-able. Subclasses set `asset_path` and `object_names` and implement `reset` and
    `is_success`; one with several objects also sets `obs_keys` and `observation_size`
    (`obs_layout(n)`)."""

    action_size = 7
    obs_keys = OBS_KEYS
    observation_size = sum(n for _, n in OBS_KEYS)
    asset_path: str = ""
    object_names: tuple = ()         # the free bodies the `object` observation describes, in order

    def __init__(self, params: ArmParams):
        check_impl(params.impl)
        solver_patch.apply()
        self.params = params
        if params.max_contact_points != -1 and params.impl == "jax":
            spec = mujoco.MjSpec.from_file(self.asset_path)
            spec.add_numeric(name="max_contact_points", data=[float(params.max_contact_points)])
            model = spec.compile()
        else:
            model = mujoco.MjModel.from_xml_path(self.asset_path)
        model.opt.timestep = params.timestep
        model.opt.iterations = params.solver_iterations
        model.opt.ls_iterations = params.ls_iterations
        model.opt.tolerance = params.solver_tolerance
        self.mj_model = model
        self.mjx_model = mjx.put_model(model, impl=params.impl)
        if params.impl == "warp":
            # the JAX backend's static sizes: every contact slot of the scene's pairs and every
            # constraint row they can make, so the per-world share never binds
            sizes = mjx.make_data(mjx.put_model(model))
            self.contacts_per_world = int(sizes._impl.contact.dist.shape[0])
            self.njmax = max(int(sizes._impl.efc_J.shape[0]), 1)
            self.naconmax = self.contacts_per_world * params.warp_max_worlds
            # the solver budget is capped on purpose (`solver_iterations`, `ls_iterations`): Warp
            # would print a warning for every step that uses it all; its buffer-overflow warnings stay
            from mujoco.mjx.third_party.mujoco_warp._src.types import OverflowType
            budget = int(OverflowType.ITERATIONS) | int(OverflowType.LS_ITERATIONS)
            warn = int(self.mjx_model.opt._impl.warn_overflow) & ~budget
            self.mjx_model = self.mjx_model.tree_replace({"opt._impl.warn_overflow": warn})
        if params.record_contacts:
            self._init_contact_census(model)
        self._site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "grip")
        self._hand = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "hand")
        if dict(self.obs_keys)["object"] != 14 * len(self.object_names):
            raise ValueError(f"{type(self).__name__}: obs_keys must give 'object' 14 x {len(self.object_names)} dims")
        self._objects, self._object_qadrs = [], []
        for name in self.object_names:
            body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
            joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
            if body < 0 or joint < 0:
                raise ValueError(f"{self.asset_path} has no body and free joint named {name!r}")
            self._objects.append(body)
            self._object_qadrs.append(int(model.jnt_qposadr[joint]))
        self._object_qadr = self._object_qadrs[0]
        self._arm_range = jnp.asarray(model.jnt_range[:ARM_DOF], jnp.float32)
        # the hand's orientation at the home pose: gripper pointing down (used by the experts)
        data = mujoco.MjData(model)
        data.qpos[:ARM_DOF] = HOME_QPOS
        mujoco.mj_forward(model, data)
        self.home_hand_quat = np.array(data.xquat[self._hand], np.float32)
        self.home_grip_pos = np.array(data.site_xpos[self._site], np.float32)
        self.home_hand_xmat = np.array(data.xmat[self._hand], np.float32).reshape(3, 3)

    def _init_contact_census(self, model):
        # every contact slot belongs to one geom pair (named `geom1/geom2`) and one condim group;
        # the cap acts per condim group, so both are counted
        # (the slots' geoms are filled in by the collision step, so they come from MJX's grouping
        # of the scene's pairs, the table its collision step reads, not from a fresh Data)
        from mujoco.mjx._src import collision_driver
        data = mjx.make_data(self.mjx_model)
        groups = collision_driver._contact_groups(self.mjx_model, data)
        slots = {}                     # (geom1, geom2) -> [condim, slots] before any cap
        for key, group in groups.items():
            ncon = collision_driver._COLLISION_FUNC[key.types].ncon
            for a, b in np.asarray(group.geom):
                slots.setdefault((int(a), int(b)), [int(key.condim), 0])[1] += int(ncon)
        name = lambda g: mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g) or f"geom{g}"  # noqa: E731
        pairs = sorted(slots)
        table = np.zeros((model.ngeom, model.ngeom), np.int32)
        for i, (a, b) in enumerate(pairs):
            table[a, b] = table[b, a] = i
        self.contact_pairs = tuple(f"{name(a)}/{name(b)}" for a, b in pairs)
        self.contact_slots_per_pair = tuple(slots[p][1] for p in pairs)
        self.contact_condim_per_pair = tuple(slots[p][0] for p in pairs)
        dims = np.asarray(data._impl.contact.dim)
        self.contact_condims = tuple(sorted({int(c) for c in dims}))
        self.contact_slots_per_condim = tuple(int((dims == c).sum()) for c in self.contact_condims)
        self._pair_table = jnp.asarray(table)

    def _touching(self, data):
        """(touching slots per condim group, per geom pair) of one physics state."""
        c = data._impl.contact
        touch = touching(c).astype(jnp.int32)
        groups = jnp.stack([jnp.sum(touch * (c.dim == d)) for d in self.contact_condims])
        pair = self._pair_table[c.geom[:, 0], c.geom[:, 1]]
        pairs = jax.ops.segment_sum(touch, pair, num_segments=len(self.contact_pairs))
        return groups, pairs

    def _census_info(self, peaks=None) -> dict:
        if peaks is None:
            peaks = (jnp.zeros((len(self.contact_condims),), jnp.int32), jnp.zeros((len(self.contact_pairs),), jnp.int32))
        return {"contact_groups": peaks[0], "contact_pairs": peaks[1]}

    def simulate(self, data):
        """`n_substeps` physics steps; with `record_contacts`, also the peak touching slots over
        them (per condim group, per geom pair)."""
        n, model = self.params.n_substeps, self.mjx_model
        if not self.params.record_contacts:
            return jax.lax.fori_loop(0, n, lambda _, d: mjx.step(model, d), data), None

        def body(_, carry):
            d, (g, p) = carry
            d = mjx.step(model, d)
            g1, p1 = self._touching(d)
            return d, (jnp.maximum(g, g1), jnp.maximum(p, p1))

        zeros = self._census_info()
        return jax.lax.fori_loop(0, n, body, (data, (zeros["contact_groups"], zeros["contact_pairs"])))

    @property
    def compiler_options(self):
        """Pass to `jax.jit(..., compiler_options=...)` for programs that step this env (see
        `ogpo_jax.envs.mjx.compile_options`)."""
        return compile_options.compiler_options()

    @property
    def max_vmap_batch(self):
        """Largest batch to vmap `step` over in one program (None: any); see `compile_options`.
        The cap is for XLA's code for the JAX backend; MuJoCo Warp's step is one foreign call
        whose contact buffer is shared by all worlds, so it is never split."""
        return None if self.params.impl == "warp" else compile_options.max_vmap_batch()

    # ------------------------------------------------------------------ observation
    def eef_pose(self, data):
        """(grip-site position (3,), hand quaternion wxyz (4,))."""
        return data.site_xpos[self._site], data.xquat[self._hand]

    def object_pose(self, data, i: int = 0):
        """(position (3,), quaternion wxyz (4,)) of object `i` of `object_names`."""
        return data.xpos[self._objects[i]], data.xquat[self._objects[i]]

    def _obs(self, data):
        eef_pos, eef_quat = self.eef_pose(data)
        rot = data.xmat[self._hand]                            # (3, 3) columns = hand axes in world
        obs = [eef_pos, quat_wxyz_to_xyzw(eef_quat), data.qpos[ARM_DOF:ARM_DOF + 2]]
        for i in range(len(self.object_names)):
            obj_pos, obj_quat = self.object_pose(data, i)
            rel_pos = rot.T @ (obj_pos - eef_pos)
            rel_quat = quat_mul(quat_conj(eef_quat), obj_quat)
            obs += [obj_pos, quat_wxyz_to_xyzw(obj_quat), rel_pos, quat_wxyz_to_xyzw(rel_quat)]
        return jnp.concatenate(obs).astype(jnp.float32)

    def split_obs(self, obs) -> dict:
        """Flat observation(s) (..., observation_size) -> {robomimic key: (..., size)}."""
        return demos.split_obs(obs, self.obs_keys)

    # ------------------------------------------------------------------ dynamics
    def arm_reset_qpos(self, key):
        """Home joint angles plus Gaussian noise (`arm_init_noise`), within the joint ranges."""
        arm = jnp.asarray(HOME_QPOS) + self.params.arm_init_noise * jax.random.normal(key, (ARM_DOF,))
        return jnp.clip(arm, self._arm_range[:, 0], self._arm_range[:, 1])

    def initial_state(self, arm, object_qpos) -> EnvState:
        """The episode's first state: arm joints (7,), open fingers, the objects' free joints (7 each)."""
        fingers = jnp.full((2,), self.params.finger_open)
        qpos = jnp.concatenate([arm, fingers, object_qpos])
        if self.params.impl == "warp":     # MuJoCo Warp sizes its buffers from the MjModel itself
            data = mjx.make_data(self.mj_model, impl="warp", naconmax=self.naconmax, njmax=self.njmax)
        else:
            data = mjx.make_data(self.mjx_model, impl=self.params.impl)
        data = data.replace(qpos=qpos, ctrl=jnp.concatenate([arm, fingers]))
        data = mjx.forward(self.mjx_model, data)
        info = {"success": jnp.zeros((), bool), "terminal": jnp.zeros((), bool), "nonfinite": jnp.zeros((), bool)}
        if self.params.impl == "warp":
            info["contact_overflow"] = jnp.zeros((), bool)
        if self.params.record_contacts:
            info.update(self._census_info())
        return EnvState(sim=data, obs=self._obs(data), reward=jnp.zeros((), jnp.float32),
                        done=jnp.zeros((), bool), info=info)

    def reset(self, key) -> EnvState:
        raise NotImplementedError

    def is_success(self, data):
        """Scalar bool: the task is solved in this physics state."""
        raise NotImplementedError

    def joint_targets(self, data, action):
        """Differential IK: joint-position targets for the arm that realise the commanded pose delta."""
        p = self.params
        eef_pos, _ = self.eef_pose(data)
        jacp, jacr = mjx.jac(self.mjx_model, data, eef_pos, self._hand)     # (nv, 3) each
        jac = jnp.concatenate([jacp[:ARM_DOF].T, jacr[:ARM_DOF].T])          # (6, 7)
        delta = jnp.concatenate([action[:3] * p.pos_scale, action[3:6] * p.rot_scale])
        gram = jac @ jac.T + (p.ik_damping ** 2) * jnp.eye(6)
        dq = jac.T @ jnp.linalg.solve(gram, delta)
        # Integrate on the previous target, not the measured joints: position servos lag within
        # one control step, and re-basing on qpos would shrink every command to that lag. The
        # clamp stops the target winding up while the hand is blocked (e.g. pressing the table).
        qpos = data.qpos[:ARM_DOF]
        base = jnp.clip(data.ctrl[:ARM_DOF], qpos - p.max_target_lead, qpos + p.max_target_lead)
        q = base + dq
        return jnp.clip(q, self._arm_range[:, 0], self._arm_range[:, 1])

    def contact_overflow(self, data):
        """Scalar bool: MuJoCo Warp needed more contacts (all worlds of the call together) or
        constraint rows (this world) than it holds, so it dropped some (always False on 'jax')."""
        if self.params.impl != "warp":
            return jnp.zeros((), bool)
        return (jnp.max(data._impl.nacon) > self.naconmax) | (jnp.max(data._impl.nefc) > self.njmax)

    def step(self, state: EnvState, action) -> EnvState:
        p = self.params
        action = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
        data = state.sim
        finger = p.finger_open * 0.5 * (1.0 - action[6])
        ctrl = jnp.concatenate([self.joint_targets(data, action), jnp.stack([finger, finger])])
        data = data.replace(ctrl=ctrl)
        data, peaks = self.simulate(data)
        obs = self._obs(data)
        # A blown-up physics state (NaN/inf) never recovers: end the episode as a failure (no
        # bootstrap, the reward of a failed step); the auto-reset starts a fresh one.
        broken = core.nonfinite(data.qpos, data.qvel, obs)
        overflow = self.contact_overflow(data)
        broken = broken | overflow
        success = self.is_success(data) & ~broken
        reward = jnp.where(success, p.success_bonus, -1.0).astype(jnp.float32)
        info = {"success": success, "terminal": success | broken, "nonfinite": broken}
        if p.impl == "warp":
            info["contact_overflow"] = overflow
        if p.record_contacts:
            info.update(self._census_info(peaks))
        return EnvState(sim=data, obs=obs, reward=reward, done=success | broken, info=info)
