"""The ray-cast depth camera (`ogpo_jax.envs.mjx.camera`) against C MuJoCo's `mj_ray` on the Can
scene: the same pixels, the same geoms, the same depths."""
import jax
import mujoco
import numpy as np
import pytest

from ogpo_jax import envs
from ogpo_jax.envs.mjx import camera

pytestmark = pytest.mark.xdist_group("mjx_camera")


@pytest.fixture(scope="module")
def can():
    # the arm at home and the can where the scene puts it, forwarded in C MuJoCo and handed to MJX
    # as data (no MJX reset program to compile)
    from mujoco import mjx

    env = envs.make("can")[0].unwrapped
    d = mujoco.MjData(env.mj_model)
    d.qpos[:7] = (0.0, 0.2, 0.0, -2.6, 0.0, 2.94, 0.785)
    mujoco.mj_forward(env.mj_model, d)
    return env, mjx.put_data(env.mj_model, d)


def test_rays_see_the_collider_where_the_drawn_shape_is_a_cylinder(can):
    env, _ = can
    m = env.mj_model
    visible = camera.ray_visible(m)
    name = lambda g: mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, g)  # noqa: E731
    seen = {name(g) for g in np.nonzero(visible)[0]}
    # the red cylinder the renderer draws is not ray-castable: its body's capsule and base stand in
    assert {"can", "can_base", "table", "left_pad", "right_pad"} <= seen
    assert "can_visual" not in seen


def test_depth_matches_c_mujoco_mj_ray_pixel_by_pixel(can):
    env, sim = can
    cam = camera.DepthCamera("front", width=12, height=10, far=4.0)
    depth = np.asarray(jax.jit(camera.depth_renderer(env.mj_model, env.mjx_model, cam))(sim))
    assert depth.shape == (10, 12) and depth.dtype == np.float32

    # C MuJoCo on the same state, the same rays and the same visible geoms (geomgroup: all)
    m = env.mj_model
    d = mujoco.MjData(m)
    d.qpos[:] = np.asarray(sim.qpos)
    mujoco.mj_forward(m, d)
    visible = camera.ray_visible(m)
    rgba = m.geom_rgba.copy()
    matid = m.geom_matid.copy()
    m.geom_rgba[:, 3] = visible
    m.geom_matid[:] = -1
    try:
        i = camera.camera_id(m, cam)
        origin, rot = d.cam_xpos[i].copy(), d.cam_xmat[i].reshape(3, 3)
        rays = camera.camera_rays(m, cam)
        want, hit = np.empty(len(rays)), set()
        geomid = np.zeros(1, np.int32)
        for k, r in enumerate(rays):
            n = np.linalg.norm(r)
            dist = mujoco.mj_ray(m, d, origin, rot @ (r / n), None, 1, -1, geomid)
            want[k] = cam.far if dist < 0 else min(dist / n, cam.far)
            hit.add(mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, int(geomid[0])) if dist >= 0 else None)
    finally:
        m.geom_rgba[:] = rgba
        m.geom_matid[:] = matid
    np.testing.assert_allclose(depth.reshape(-1), want, atol=1e-4)
    # the camera looks down from 1.3 m away at the table, the bins and the arm; its top rows see
    # past the table's edge (no hit: `far`)
    assert "table" in hit and None in hit and any(h and "wall" in h for h in hit)
    assert 0.5 < want.min() < want[want < cam.far].max() < cam.far


def test_camera_fields_are_checked(can):
    env, _ = can
    with pytest.raises(ValueError, match="width=0"):
        camera.DepthCamera(width=0)
    with pytest.raises(ValueError, match=r"camera='wrist'.*\['front'\]"):
        camera.depth_renderer(env.mj_model, env.mjx_model, camera.DepthCamera("wrist"))


def test_can_camera_observation_from_a_world_fixed_camera(can):
    """`env.kwargs.obs='pixels+proprio'` on Can: the depth image of a camera placed by position and
    look-at point, divided by `camera_far`, then the end effector and fingers of the state."""
    from ogpo_jax.envs.core import EnvState
    pos, lookat = (0.4, 0.0, 1.0), (0.12, 0.0, 0.0)
    env = envs.make("can", obs="pixels+proprio", image_width=9, image_height=7, camera_pos=pos, camera_lookat=lookat,
                    camera_fovy=50.0, camera_far=1.5)[0]
    assert env.observation_size == 9 * 7 + 9 and env.proprio_size == 9 and env.state_observation_size == 23
    assert [k for k, _ in env.obs_keys] == ["pixels", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]
    assert envs.make("can", obs="pixels", image_width=9, image_height=7)[0].observation_size == 63
    task, (_, sim) = env.unwrapped, can
    state = EnvState(sim=sim, obs=task._obs(sim), reward=0.0, done=False, info={})
    obs = np.asarray(jax.jit(env.observe)(state))
    depth = np.asarray(jax.jit(camera.depth_renderer(task.mj_model, task.mjx_model, env.camera))(sim))
    np.testing.assert_allclose(obs[:63], depth.reshape(-1) / 1.5, atol=1e-6)
    np.testing.assert_array_equal(obs[63:], np.asarray(state.obs[:9]))
    # the centre pixel's ray is the optical axis: it meets the table at the look-at point
    np.testing.assert_allclose(depth[3, 4], np.linalg.norm(np.subtract(pos, lookat)), rtol=1e-4)
    rot = camera.fixed_pose(env.camera)[1]
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-6)
    assert 0.3 < obs[:63].min() and obs[:63].max() <= 1.0
    with pytest.raises(ValueError, match="no such camera"):
        envs.make("can", obs="pixels", camera="side")
    with pytest.raises(ValueError, match="pos=.* and lookat=.* must differ"):
        envs.make("can", obs="pixels", camera_pos=(0.1, 0.0, 0.0), camera_lookat=(0.1, 0.0, 0.0))
