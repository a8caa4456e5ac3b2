"""Camera observations for the MJX arm tasks (and point_gaps): the policy sees an image, rendered once per chunk
boundary inside the same jitted program as the physics.

    env.kwargs.obs = 'state' (default) | 'pixels' | 'pixels+proprio'

with the camera in `env.kwargs` too: `camera` (a scene camera's name), or `camera_pos` and
`camera_lookat` (a camera fixed in the world), `camera_fovy` (degrees; default the scene
camera's, 45 for a fixed one), `image_width`, `image_height`, `camera_far` (metres).

The policy's observation is one flat vector, `concat(image.ravel(), proprio)`: the image (height,
width, channels) with values in [0, 1] (depth divided by `camera_far`, 1 where a ray hits
nothing), then with 'pixels+proprio' the end effector's position and quaternion and the gripper's
finger positions (robomimic's `robot0_eef_pos`, `robot0_eef_quat`, `robot0_gripper_qpos`). A flat
vector keeps every consumer of observations (demo files, BC windows, replay, evaluators) as it is;
the image encoder (`ogpo_jax.encoders`) reshapes it back.

Where the image is made. `PixelObservation` leaves the task's own `reset` and `step` alone: they
keep the simulator-state observation that the scripted expert, the reward and the non-finite
guard read. `observe(state)` makes the policy's observation from a state, and
`envs.core.batch_env` calls it once after each action chunk (`ObserveChunks`), so a chunk of H
control steps costs one image, not H. Demonstrations (`training.collect`) call it at every step
(BC trains on every step's image). `EncodedObservation` replaces the image by a frozen encoder's
features, which is what finetuning, its replay and its critics see.

Renderers. The MJX arm tasks, impl 'jax': depth from the ray-cast camera (`envs.mjx.camera`,
pure JAX: CPU, GPU, TPU), one channel. point_gaps (the toy task, for fast tests of the whole
pixel pipeline): the point drawn from above as a Gaussian blob, one channel; its proprioception is
the normalized time.
"""
from __future__ import annotations

import numpy as np

import jax.numpy as jnp

from ogpo_jax.envs.core import Wrapper

OBS_MODES = ("state", "pixels", "pixels+proprio")
PROPRIO_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
CAMERA_KWARGS = ("camera", "camera_pos", "camera_lookat", "camera_fovy", "image_width", "image_height",
                 "camera_far")


def pop_kwargs(kwargs: dict) -> dict:
    """Remove the observation fields (`obs` and the camera's) from env kwargs; -> them."""
    return {k: kwargs.pop(k) for k in ("obs",) + CAMERA_KWARGS if k in kwargs}


def wrap(env, name: str, fields: dict):
    """`env` (a made task) with the observation `fields.get('obs', 'state')` asks for."""
    fields = dict(fields)
    mode = fields.pop("obs", "state")
    if mode not in OBS_MODES:
        raise ValueError(f"env.kwargs.obs={mode!r} must be one of {list(OBS_MODES)}")
    if mode == "state":
        if fields:
            raise ValueError(f"env.kwargs {sorted(fields)} describe a camera, but env.kwargs.obs='state'; "
                             "set env.kwargs.obs='pixels' or 'pixels+proprio', or drop them")
        return env
    task = env.unwrapped
    width, height = int(fields.pop("image_width", 32)), int(fields.pop("image_height", 32))
    if hasattr(task, "mjx_model"):
        return _arm_camera(env, mode, width, height, fields)
    from ogpo_jax.envs.toy import PointGaps
    if isinstance(task, PointGaps):
        if fields:
            raise ValueError(f"env.kwargs {sorted(fields)}: point_gaps draws its image from above, it has no camera "
                             "to place; only env.kwargs.image_width / image_height apply")
        return PixelObservation(env, mode, point_image(task, width, height), (height, width, 1),
                                (("time", 2, 1),))
    raise ValueError(f"env.kwargs.obs={mode!r} needs an MJX arm task (can, square, two_nuts) or point_gaps, "
                     f"not {name!r}")


def _arm_camera(env, mode, width, height, fields):
    task = env.unwrapped
    if getattr(task.params, "impl", "jax") != "jax":
        raise ValueError(f"env.kwargs.obs={mode!r}: the camera renders with impl 'jax' (ray-cast depth); "
                         f"env.kwargs.impl={task.params.impl!r} has no camera here yet")
    from ogpo_jax.envs.mjx.camera import DepthCamera, camera_id, depth_renderer
    pos = fields.get("camera_pos")
    cam = DepthCamera(camera=fields.get("camera", "front"), width=width, height=height,
                      far=float(fields.get("camera_far", 3.0)), pos=tuple(float(v) for v in pos) if pos else None,
                      lookat=tuple(float(v) for v in fields.get("camera_lookat", (0.0, 0.0, 0.0))),
                      fovy=(float(fields["camera_fovy"]) if fields.get("camera_fovy") else (45.0 if pos else None)))
    camera_id(task.mj_model, cam)                 # a named error for an unknown scene camera, now
    render = depth_renderer(task.mj_model, task.mjx_model, cam)
    proprio, start = [], 0
    for key, size in env.obs_keys:
        if key in PROPRIO_KEYS:
            proprio.append((key, start, size))
        start += size
    wrapped = PixelObservation(env, mode, lambda state: (render(state.sim) / cam.far)[..., None],
                               (height, width, 1), tuple(proprio))
    wrapped.camera = cam
    return wrapped


def point_image(task, width: int, height: int):
    """point_gaps seen from above: a Gaussian blob (sigma 1.5 pixels, peak 1) where the point is,
    over [-1, 1]^2 (row 0 at y = +1)."""
    xs = jnp.asarray((np.arange(width) + 0.5) / width * 2 - 1, jnp.float32)
    ys = jnp.asarray(1 - (np.arange(height) + 0.5) / height * 2, jnp.float32)
    sigma = 1.5 * 2.0 / max(width, height)

    def image(state):
        x, y = state.sim.pos[0], state.sim.pos[1]
        d2 = (xs[None, :] - x) ** 2 + (ys[:, None] - y) ** 2
        return jnp.exp(-d2 / (2 * sigma ** 2))[..., None]
    return image


class PixelObservation(Wrapper):
    """A task whose policy observation is an image (and, with 'pixels+proprio', proprioception);
    see the module docstring. `image(state)` -> (height, width, channels) in [0, 1]; `proprio`:
    (name, offset, size) slices of the task's state observation. `observation_size` is the
    policy observation's, `state_observation_size` the task's own; `image_shape`, `proprio_size`."""

    def __init__(self, env, mode: str, image, image_shape: tuple, proprio: tuple):
        super().__init__(env)
        self.mode, self.image, self.image_shape = mode, image, tuple(image_shape)
        proprio = proprio if mode == "pixels+proprio" else ()
        self._proprio = np.asarray([i for _, start, size in proprio for i in range(start, start + size)], np.int32)
        self.proprio_size = len(self._proprio)
        self.state_observation_size = int(env.observation_size)
        self.observation_size = int(np.prod(self.image_shape)) + self.proprio_size
        # the demo file's layout: one 'pixels' key (the flattened image), then the proprio keys
        self.obs_keys = (("pixels", int(np.prod(self.image_shape))),) + tuple((k, n) for k, _, n in proprio)

    def observe(self, state) -> jnp.ndarray:
        """The policy's flat observation of one (unbatched) state, from its simulator state and
        its state observation (`state.obs`)."""
        parts = [self.image(state).reshape(-1)]
        if self.proprio_size:
            parts.append(state.obs[self._proprio])
        return jnp.concatenate(parts).astype(jnp.float32)


class EncodedObservation(Wrapper):
    """A `PixelObservation` task seen through a frozen image encoder: the policy observation is
    `encoder.encode(params, pixel observation)`, the encoder's features then the proprioception
    (`encoder.feature_size`). The params are constants of every program that steps the env: they
    never change after BC."""

    def __init__(self, env, encoder, params):
        super().__init__(env)
        if not isinstance(env, PixelObservation):
            raise ValueError(f"EncodedObservation wraps a PixelObservation task, got {type(env).__name__}")
        if tuple(encoder.image_shape) != tuple(env.image_shape) or encoder.proprio_size != env.proprio_size:
            raise ValueError(f"the encoder reads images {encoder.image_shape} + {encoder.proprio_size} proprio dims, "
                             f"the env makes {env.image_shape} + {env.proprio_size}")
        self.encoder, self.params = encoder, params
        self.observation_size = int(encoder.feature_size)

    def observe(self, state):
        return self.encoder.encode(self.params, self.env.observe(state)[None])[0]


def is_pixels(env) -> bool:
    """Whether `env`'s policy observation is a camera image (before any encoder)."""
    return isinstance(env, PixelObservation)
