"""A depth camera inside the jitted step: one ray per pixel through MJX's ray caster (`mjx.ray`,
pure JAX, so it runs wherever the JAX backend runs: CPU, GPU, TPU) from a camera of the MJCF
scene, vmapped over pixels and over environments like the physics.

    render = depth_renderer(env.mj_model, env.mjx_model, DepthCamera("front", width=32, height=32))
    depth = jax.vmap(render)(state.sim)                         # (envs, 32, 32) float32, jittable

The image is the depth along the camera's optical axis (metres, what `mujoco.Renderer`'s depth
rendering gives), `cam.far` where no geom is hit; row 0 is the top of the image.

What the rays see. `mjx.ray` skips geoms drawn transparent (alpha 0) and has no cylinder or height
field. A scene drawn with a cylinder and collided through invisible primitives (Can: the red
cylinder `can_visual` is what the renderer shows, the capsule `can` and box `can_base` are what
collides) would show no object at all, so `ray_model` makes the rays see, on every body whose
drawn geoms include one `mjx.ray` cannot intersect, that body's invisible primitives instead: the
collision shape stands in for the drawn one (Can: a capsule of the cylinder's radius, 6 mm
shorter at each end, and its base box).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

# geom types mjx.ray intersects (mujoco/mjx/_src/ray.py, `_RAY_FUNC`)
RAY_TYPES = (mujoco.mjtGeom.mjGEOM_PLANE, mujoco.mjtGeom.mjGEOM_SPHERE, mujoco.mjtGeom.mjGEOM_CAPSULE,
             mujoco.mjtGeom.mjGEOM_ELLIPSOID, mujoco.mjtGeom.mjGEOM_BOX, mujoco.mjtGeom.mjGEOM_MESH)


@dataclasses.dataclass(frozen=True)
class DepthCamera:
    """A depth camera: the scene camera `camera` (its pose moves with its body; its `fovy`), or,
    with `pos` given, a camera fixed in the world at `pos` looking at `lookat` (the image's up is
    the world's +z as far as the view allows); `fovy` (degrees) overrides the scene camera's. The
    image size, and the depth reported where a ray hits nothing (`far`, metres)."""

    camera: str = "front"
    width: int = 32
    height: int = 32
    far: float = 3.0
    pos: tuple | None = None
    lookat: tuple = (0.0, 0.0, 0.0)
    fovy: float | None = None

    def __post_init__(self):
        if self.width < 1 or self.height < 1:
            raise ValueError(f"DepthCamera: width={self.width} and height={self.height} must be >= 1")
        if not self.far > 0:
            raise ValueError(f"DepthCamera: far={self.far} must be > 0")
        if self.fovy is not None and not 0 < self.fovy < 180:
            raise ValueError(f"DepthCamera: fovy={self.fovy} must be in (0, 180) degrees")
        if self.pos is not None:
            if len(self.pos) != 3 or len(self.lookat) != 3:
                raise ValueError(f"DepthCamera: pos={self.pos} and lookat={self.lookat} must be 3 numbers each")
            if np.linalg.norm(np.subtract(self.pos, self.lookat)) < 1e-6:
                raise ValueError(f"DepthCamera: pos={self.pos} and lookat={self.lookat} must differ")


def fixed_pose(cam: DepthCamera) -> tuple:
    """(position (3,), rotation (3, 3) whose columns are the camera's x, y, z axes in the world)
    of a world-fixed camera: z points from `lookat` back to `pos` (MuJoCo cameras look down -z)."""
    z = np.subtract(cam.pos, cam.lookat).astype(np.float64)
    z /= np.linalg.norm(z)
    up = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.999 else np.array([0.0, 1.0, 0.0])
    x = np.cross(up, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.asarray(cam.pos, np.float32), np.stack([x, y, z], 1).astype(np.float32)


def camera_id(mj_model: mujoco.MjModel, cam: DepthCamera) -> int:
    """The scene camera's id (-1 for a world-fixed camera, `cam.pos` given)."""
    if cam.pos is not None:
        return -1
    i = mujoco.mj_name2id(mj_model, mujoco.mjtObj.mjOBJ_CAMERA, cam.camera)
    if i < 0:
        names = [mujoco.mj_id2name(mj_model, mujoco.mjtObj.mjOBJ_CAMERA, k) for k in range(mj_model.ncam)]
        raise ValueError(f"DepthCamera.camera={cam.camera!r}: the scene has no such camera; it has {names}")
    return i


def camera_rays(mj_model: mujoco.MjModel, cam: DepthCamera) -> np.ndarray:
    """(height * width, 3) ray directions in the camera's frame (MuJoCo's: x right, y up, looking
    down -z) through the pixel centres, row-major from the top-left, with unit -z component (so
    the distance along a ray divided by its norm is the depth along the optical axis)."""
    index = camera_id(mj_model, cam)
    fovy = np.deg2rad(cam.fovy if cam.fovy is not None else mj_model.cam_fovy[index])
    half_h = np.tan(fovy / 2)
    half_w = half_h * cam.width / cam.height
    x = ((np.arange(cam.width) + 0.5) / cam.width * 2 - 1) * half_w
    y = (1 - (np.arange(cam.height) + 0.5) / cam.height * 2) * half_h
    xx, yy = np.meshgrid(x, y)
    return np.stack([xx, yy, -np.ones_like(xx)], -1).reshape(-1, 3).astype(np.float32)


def ray_visible(mj_model: mujoco.MjModel) -> np.ndarray:
    """(ngeom,) bool: the geoms the camera's rays intersect (see the module docstring)."""
    drawn = mj_model.geom_rgba[:, 3] > 0
    has_mat = mj_model.geom_matid >= 0
    drawn = np.where(has_mat, mj_model.mat_rgba[np.maximum(mj_model.geom_matid, 0), 3] > 0, drawn)
    supported = np.isin(mj_model.geom_type, RAY_TYPES)
    visible = drawn & supported
    for body in np.unique(mj_model.geom_bodyid[drawn & ~supported]):
        visible |= (mj_model.geom_bodyid == body) & ~drawn & supported
    return visible


def ray_model(mj_model: mujoco.MjModel, mjx_model):
    """`mjx_model` with the colours `mjx.ray` reads set so that it intersects exactly
    `ray_visible(mj_model)` (materials off, alpha 1 for those geoms, 0 for the rest). Only for
    the camera: the physics never reads colours."""
    visible = ray_visible(mj_model)
    rgba = np.array(mj_model.geom_rgba)
    rgba[:, 3] = visible.astype(rgba.dtype)
    matid = np.full_like(np.asarray(mj_model.geom_matid), -1)
    return mjx_model.replace(geom_rgba=jnp.asarray(rgba), geom_matid=jnp.asarray(matid))


def depth_renderer(mj_model: mujoco.MjModel, mjx_model, cam: DepthCamera):
    """-> jittable `render(data) -> (height, width) float32`: the depth along the optical axis
    from the scene camera `cam.camera` (or the world-fixed one at `cam.pos`) in one physics state (vmap it over environments); the
    rays, the camera's id and what the rays see are fixed here, once."""
    from mujoco import mjx
    index = camera_id(mj_model, cam)
    rays = camera_rays(mj_model, cam)
    norms = np.linalg.norm(rays, axis=-1)
    units = jnp.asarray(rays / norms[:, None])
    norms = jnp.asarray(norms)
    view = ray_model(mj_model, mjx_model)

    if index < 0:
        fixed_origin, fixed_rot = (jnp.asarray(a) for a in fixed_pose(cam))
        fixed_world = units @ fixed_rot.T

    def render(data):
        if index < 0:
            origin, world = fixed_origin, fixed_world
        else:
            origin = data.cam_xpos[index]
            world = units @ data.cam_xmat[index].reshape(3, 3).T
        dist = jax.vmap(lambda vec: mjx.ray(view, data, origin, vec)[0])(world)
        depth = jnp.where(dist >= 0, dist / norms, cam.far)
        return jnp.minimum(depth, cam.far).reshape(cam.height, cam.width).astype(jnp.float32)

    return render
