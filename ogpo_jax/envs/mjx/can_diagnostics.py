"""Why Can episodes fail: a failure-mode breakdown from recorded observation trajectories.

    rec = render.record_episodes(env, policy, params, key, 64, horizon, episode_length)
    report = can_diagnostics.failure_report(rec["obs"], rec["alive"], rec["success"])

Pure numpy on the flat robomimic-style observation of `ogpo_jax.envs.mjx.can.Can` (`OBS_KEYS`).
Each episode is one of:

* `success`
* `never_lifted`: the can centre never rose `lift_dz` above its initial height;
* `dropped`: it was lifted but is back down at the end (the usual sign of a slipping grasp);
* `held_at_timeout`: still lifted when the time limit ended the episode.

For every lifted episode it also reads the *grasp height* (the can centre below the grip site
along the hand's axis, `object` relative position z, at the first lifted frame; the scripted
expert grasps at `CanExpert.grasp_dz` = 0.02 m) and the largest can tilt while lifted, split by
success, because a grasp too high on the can lets it pivot out of the fingers (RESULTS.md).
"""
from __future__ import annotations

import numpy as np

from ogpo_jax.data.demos import split_obs
from ogpo_jax.envs.mjx.arm import episode_arrays, tilt_degrees
from ogpo_jax.envs.mjx.can import OBS_KEYS, Can

OBS_SIZE = Can.observation_size
CATEGORIES = ("success", "never_lifted", "dropped", "held_at_timeout")


def failure_report(obs, alive, success, lift_dz: float = 0.03) -> dict:
    """obs (T, N, 23), alive (T, N) bool (frame belongs to a running episode), success (N,) bool.

    Returns counts per category, per-episode categories, and grasp statistics (mean / std of the
    grasp height and of the largest tilt while lifted, for successful and failed lifted episodes).
    """
    obs, alive, success = episode_arrays(obs, alive, success, OBS_SIZE, "Can observations")
    steps, num = obs.shape[:2]
    obj = split_obs(obs, OBS_KEYS)["object"]      # can pos (3), quat xyzw (4), rel pos (3), rel quat (4)
    can_pos, can_quat, rel_pos = obj[..., 0:3], obj[..., 3:7], obj[..., 7:10]
    # frames of each episode: the alive ones plus the final state right after them
    last = np.minimum(alive.sum(0), steps - 1)
    frames = np.arange(steps)[:, None] <= last[None, :]
    z0 = can_pos[0, :, 2]
    lifted = (can_pos[..., 2] > z0[None] + lift_dz) & frames
    ever = lifted.any(0)
    held_end = lifted[last, np.arange(num)]
    categories = np.where(success, "success",
                          np.where(~ever, "never_lifted", np.where(held_end, "held_at_timeout", "dropped")))
    first = np.argmax(lifted, axis=0)
    grasp_height = rel_pos[first, np.arange(num), 2]
    tilt = np.where(lifted, tilt_degrees(can_quat), 0.0).max(0)

    def stats(mask):
        mask = mask & ever
        if not mask.any():
            return {"episodes": 0}
        return {"episodes": int(mask.sum()),
                "grasp_height_mean": float(grasp_height[mask].mean()), "grasp_height_std": float(grasp_height[mask].std()),
                "max_tilt_deg_mean": float(tilt[mask].mean())}

    return {
        "episodes": int(num),
        "success_rate": float(success.mean()),
        "counts": {c: int((categories == c).sum()) for c in CATEGORIES},
        "categories": categories.tolist(),
        "lifted_success": stats(success),
        "lifted_failure": stats(~success),
    }


def format_report(report: dict) -> str:
    counts = ", ".join(f"{c} {n}" for c, n in report["counts"].items())
    lines = [f"{report['episodes']} episodes: {counts}"]
    for name in ("lifted_success", "lifted_failure"):
        s = report[name]
        if s["episodes"]:
            lines.append(f"  {name}: {s['episodes']} episodes, grasp height {s['grasp_height_mean']:.3f} "
                         f"+- {s['grasp_height_std']:.3f} m, largest tilt while lifted {s['max_tilt_deg_mean']:.0f} deg")
    return "\n".join(lines)
