"""Failure-mode breakdown of Can episodes on hand-built observation trajectories."""
import numpy as np
import pytest

pytest.importorskip("mujoco.mjx")
from ogpo_jax.envs.mjx import can_diagnostics as cd  # noqa: E402

T, N = 12, 4
CAN = 9          # offset of `object`: can pos (3), can quat xyzw (4), rel pos (3), rel quat (4)


def _episodes():
    obs = np.zeros((T, N, cd.OBS_SIZE), np.float32)
    obs[..., CAN:CAN + 3] = [0.1, -0.25, 0.06]         # upright can resting in the source bin
    obs[..., CAN + 6] = 1.0                            # identity quaternion (w last)
    alive = np.zeros((T, N), bool)
    # 0: success, lifted from frame 3 on with a low grasp (0.02), ends at frame 8
    alive[:8, 0] = True
    obs[3:, 0, CAN + 2] = 0.20
    obs[3:, 0, CAN + 9] = 0.02
    # 1: never lifted, runs to the time limit
    alive[:T - 1, 1] = True
    # 2: lifted at frame 2 with a high grasp (0.04), tilted 90 deg, dropped at frame 6 onto its side
    alive[:T - 1, 2] = True
    obs[2:6, 2, CAN + 2] = 0.15
    obs[2:6, 2, CAN + 9] = 0.04
    obs[4:, 2, CAN + 3:CAN + 7] = [np.sin(np.pi / 4), 0.0, 0.0, np.cos(np.pi / 4)]
    obs[6:, 2, CAN + 2] = 0.033
    # 3: lifted at frame 5 (grasp 0.03) and still held at the time limit
    alive[:T - 1, 3] = True
    obs[5:, 3, CAN + 2] = 0.18
    obs[5:, 3, CAN + 9] = 0.03
    # frames after the end of episode 0 hold its final state, as record_episodes writes them
    return obs, alive, np.array([True, False, False, False])


def test_failure_report_categories_and_grasp_stats():
    report = cd.failure_report(*_episodes())
    assert report["categories"] == ["success", "never_lifted", "dropped", "held_at_timeout"]
    assert report["counts"] == {"success": 1, "never_lifted": 1, "dropped": 1, "held_at_timeout": 1}
    assert report["success_rate"] == 0.25
    s, f = report["lifted_success"], report["lifted_failure"]
    assert s["episodes"] == 1 and s["grasp_height_mean"] == pytest.approx(0.02)
    assert s["max_tilt_deg_mean"] == pytest.approx(0.0, abs=1e-3)
    assert f["episodes"] == 2 and f["grasp_height_mean"] == pytest.approx(0.035)
    assert f["grasp_height_std"] == pytest.approx(0.005)
    assert f["max_tilt_deg_mean"] == pytest.approx(45.0, abs=1e-3)       # (90 + 0) / 2
    assert "dropped 1" in cd.format_report(report)


def test_failure_report_ignores_frames_after_the_episode_end():
    obs, alive, success = _episodes()
    obs[10:, 1, CAN + 2] = 0.3          # after the last frame of episode 1 (index 11 is its final state)
    alive[:, 1] = False
    alive[:5, 1] = True                 # episode 1 now ends at frame 5: the late lift is not its own
    assert cd.failure_report(obs, alive, success)["categories"][1] == "never_lifted"


def test_failure_report_rejects_wrong_shapes():
    obs, alive, success = _episodes()
    with pytest.raises(ValueError, match="obs must have shape"):
        cd.failure_report(obs[..., :10], alive, success)
    with pytest.raises(ValueError, match="alive must be"):
        cd.failure_report(obs, alive[:, :2], success)
