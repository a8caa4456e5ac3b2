"""The Square scene's geometry (`ogpo_jax/envs/mjx/assets/square.xml`) under plain MuJoCo: the nut's
hole clears the peg by 6.75 mm per side, so a nut released centred over the peg slides down to
the table, one released 10 mm off jams above it, and one set down beside the peg rests on the
table. Plain `mujoco` (C) steps this in milliseconds; the MJX task builds on the same model.
"""
import os

import numpy as np
import pytest

mujoco = pytest.importorskip("mujoco")

ASSET = os.path.join(os.path.dirname(__file__), "..", "ogpo_jax", "envs", "mjx", "assets", "square.xml")
CLEARANCE = 0.00675        # per side, aligned: hole half-width 0.02275 - peg half-width 0.016


@pytest.fixture(scope="module")
def scene():
    model = mujoco.MjModel.from_xml_path(ASSET)
    return model, mujoco.MjData(model)


def _peg_xy(model):
    return model.body("peg").pos[:2].copy()


def _nut_rest_z(model):
    """Nut centre height when it lies flat on the table: its half-thickness."""
    return model.geom("nut_handle").size[2]


def _release(scene, dx, dy, yaw_deg, z=0.13, seconds=1.0):
    """Release the nut at rest with its centre at peg + (dx, dy), height z; its position after `seconds`."""
    model, data = scene
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    adr = model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "nut")]
    yaw = np.radians(yaw_deg)
    peg = _peg_xy(model)
    data.qpos[adr:adr + 7] = [peg[0] + dx, peg[1] + dy, z, np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
    for _ in range(int(seconds / model.opt.timestep)):
        mujoco.mj_step(model, data)
    assert np.isfinite(data.qpos).all()
    return data.qpos[adr:adr + 3].copy()


def test_scene_has_the_nut_peg_and_arm(scene):
    model, _ = scene
    names = {mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, i) for i in range(model.ngeom)}
    assert {"peg", "nut_handle", "nut_wall_px", "left_pad", "right_pad", "hand", "table"} <= names
    nut = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "nut")
    assert model.body_mass[nut] == pytest.approx(0.0158, abs=5e-4)     # robosuite's density 100
    assert model.nq == 7 + 2 + 7 and model.nu == 9


@pytest.mark.parametrize("dx,dy,yaw", [(0.0, 0.0, 0.0), (0.0, 0.0, 30.0), (0.005, 0.0, 0.0), (0.003, 0.003, 15.0)])
def test_nut_released_over_the_peg_slides_down_to_the_table(scene, dx, dy, yaw):
    model, _ = scene
    pos = _release(scene, dx, dy, yaw)
    assert pos[2] == pytest.approx(_nut_rest_z(model), abs=2e-3)
    assert np.abs(pos[:2] - _peg_xy(model)).max() < CLEARANCE + 1e-3       # around the peg


def test_nut_released_a_centimetre_off_jams_above_the_table(scene):
    pos = _release(scene, 0.010, 0.0, 0.0)
    assert pos[2] > 0.05


def test_nut_beside_the_peg_rests_on_the_table_off_the_peg(scene):
    model, _ = scene
    pos = _release(scene, 0.12, 0.0, 0.0, z=0.02)
    assert pos[2] == pytest.approx(_nut_rest_z(model), abs=2e-3)
    assert np.abs(pos[:2] - _peg_xy(model)).max() > 0.1
