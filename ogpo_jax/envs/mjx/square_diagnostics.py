"""Why Square episodes fail: a failure-mode breakdown from recorded observation trajectories.

    rec = render.record_episodes(env, policy, params, key, 64, horizon, episode_length)
    report = square_diagnostics.failure_report(rec["obs"], rec["alive"], rec["success"], env.peg_pos)

Pure numpy on the flat robomimic-style observation of `ogpo_jax.envs.mjx.square.Square`
(`OBS_KEYS`; `object` = nut position, quaternion, relative position, relative quaternion). Each
episode is one of:

* `success`
* `never_grasped`: the nut centre never rose `lift_dz` above its initial height;
* `misaligned_at_peg`: at the end the nut is near the peg (centre within `peg_radius` of its axis
  in x and y) but not down around it: resting on the peg top or jammed tilted on it;
* `held_at_timeout`: still lifted, away from the peg, when the time limit ended the episode;
* `dropped`: lifted at some point, back on the table away from the peg at the end.

It also gives, per category, the nut's closest approach to the peg axis while lifted, and, for
episodes that reached the peg, the nut's tilt at the end (a nut tipped over the peg top's edge
is tilted by tens of degrees).
"""
from __future__ import annotations

import numpy as np

from ogpo_jax.data.demos import split_obs
from ogpo_jax.envs.mjx.arm import OBS_KEYS, episode_arrays, tilt_degrees

OBS_SIZE = sum(n for _, n in OBS_KEYS)
CATEGORIES = ("success", "never_grasped", "misaligned_at_peg", "held_at_timeout", "dropped")



def failure_report(obs, alive, success, peg_pos, lift_dz: float = 0.03, peg_radius: float = 0.06) -> dict:
    """obs (T, N, 23), alive (T, N) bool (frame belongs to a running episode), success (N,) bool,
    peg_pos: the peg axis (x, y[, z]) (`Square.peg_pos`).

    Returns counts per category, per-episode categories, and per category the mean closest
    approach of the lifted nut to the peg axis and the mean final tilt.
    """
    obs, alive, success = episode_arrays(obs, alive, success, OBS_SIZE, "Square observations")
    steps, num = obs.shape[:2]
    peg = np.asarray(peg_pos, np.float64)[:2]
    obj = split_obs(obs, OBS_KEYS)["object"]
    nut_pos, nut_quat = obj[..., 0:3], obj[..., 3:7]
    last = np.minimum(alive.sum(0), steps - 1)
    frames = np.arange(steps)[:, None] <= last[None, :]
    idx = np.arange(num)
    z0 = nut_pos[0, :, 2]
    lifted = (nut_pos[..., 2] > z0[None] + lift_dz) & frames
    ever = lifted.any(0)
    end = nut_pos[last, idx]
    off = np.abs(end[:, :2] - peg).max(-1)
    at_peg = off < peg_radius
    held_end = lifted[last, idx]
    categories = np.where(
        success, "success",
        np.where(~ever, "never_grasped",
                 np.where(at_peg, "misaligned_at_peg", np.where(held_end, "held_at_timeout", "dropped"))))
    axis_dist = np.linalg.norm(nut_pos[..., :2] - peg, axis=-1)
    closest = np.where(lifted, axis_dist, np.inf).min(0)
    tilt_end = tilt_degrees(nut_quat[last, idx])

    def stats(name):
        mask = categories == name
        out = {"episodes": int(mask.sum())}
        if mask.any():
            c = closest[mask & ever]
            out["closest_to_peg_axis_m"] = float(c.mean()) if c.size else None
            # an episode ended by a non-finite state has no tilt to report
            tilts = tilt_end[mask][np.isfinite(tilt_end[mask])]
            out["final_tilt_deg"] = float(tilts.mean()) if tilts.size else None
        return out

    return {
        "episodes": int(num),
        "success_rate": float(success.mean()),
        "counts": {c: int((categories == c).sum()) for c in CATEGORIES},
        "categories": categories.tolist(),
        "per_category": {c: stats(c) for c in CATEGORIES},
    }


def format_report(report: dict) -> str:
    counts = ", ".join(f"{c} {n}" for c, n in report["counts"].items())
    lines = [f"{report['episodes']} episodes: {counts}"]
    for name, s in report["per_category"].items():
        if s["episodes"] and name != "never_grasped":
            closest = s.get("closest_to_peg_axis_m")
            lines.append(f"  {name}: {s['episodes']} episodes, lifted nut's closest approach to the peg axis "
                         + (f"{1000 * closest:.1f} mm" if closest is not None else "-")
                         + (f", final tilt {s['final_tilt_deg']:.0f} deg" if s["final_tilt_deg"] is not None else ""))
    return "\n".join(lines)


def stage_report(obs, alive, success, peg_positions, success_xy: float = 0.03, success_max_z: float = 0.05) -> dict:
    """The two-nut task's breakdown: obs (T, N, 37) of `ogpo_jax.envs.mjx.two_nuts.TwoNuts`, alive
    (T, N), success (N,), peg_positions (2, 2 or 3). Counts episodes by the stages done at their end
    (nut i down around peg i: robosuite's on_peg check), and gives each nut's `failure_report`
    against its own peg, where that nut's "success" is its stage being done at the end."""
    obs, alive, success = episode_arrays(obs, alive, success, OBS_SIZE + 14, "two-nut observations")
    steps, num = obs.shape[:2]
    pegs = np.asarray(peg_positions, np.float64)[:, :2]
    last = np.minimum(alive.sum(0), steps - 1)
    end = obs[last, np.arange(num)]
    robot = obs[..., :OBS_SIZE - 14]
    out, done = {"episodes": int(num), "success_rate": float(success.mean())}, []
    for i in range(2):
        nut_end = end[:, OBS_SIZE - 14 + 14 * i: OBS_SIZE + 14 * i]
        off = np.abs(nut_end[:, :2] - pegs[i])
        stage = success | ((off < success_xy).all(-1) & (nut_end[:, 2] < success_max_z))
        done.append(stage)
        view = np.concatenate([robot, obs[..., OBS_SIZE - 14 + 14 * i: OBS_SIZE + 14 * i]], -1)
        out[f"nut{i + 1}"] = failure_report(view, alive, stage, pegs[i])
    out["stages"] = {"none": int((~done[0] & ~done[1]).sum()), "nut1_only": int((done[0] & ~done[1]).sum()),
                     "nut2_only": int((~done[0] & done[1]).sum()), "both": int((done[0] & done[1]).sum())}
    return out


def format_stage_report(report: dict) -> str:
    s = report["stages"]
    lines = [f"{report['episodes']} episodes, stages done at the end: both {s['both']}, nut 1 only {s['nut1_only']}, "
             f"nut 2 only {s['nut2_only']}, none {s['none']}"]
    for i in (1, 2):
        lines.append(f"nut {i}: " + format_report(report[f"nut{i}"]).replace("\n", "\n  "))
    return "\n".join(lines)
