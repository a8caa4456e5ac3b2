"""A worker process that steps CPU simulators for `ogpo_jax.envs.host` (the robosuite backend).

Runs as a script with any Python that has numpy (and robosuite for the robosuite tasks): it
imports nothing from ogpo_jax, so it can run in robosuite's own environment (robosuite 1.5.2
needs mujoco 3.3.x while mujoco-mjx here is 3.17):

    /path/to/robosuite-env/bin/python -m ogpo_jax.envs.host_worker   # or: python host_worker.py

The worker owns `num_envs` environments and executes whole action chunks for them, so one
message per chunk crosses the process boundary. Each episode follows this framework's task
convention: reward -1 per step and `success_bonus` on success, success terminates, the time
limit truncates. With `auto_reset` a finished episode restarts inside `step`, and the message
carries the true final observation; without it a finished env stays frozen (evaluation).

Messages on stdin/stdout: an 8-byte little-endian length, a JSON header, then the raw bytes of
the arrays the header lists as [name, dtype, shape] (no pickle: the two interpreters may have
different numpy versions). Anything a library prints goes to stderr.
"""
from __future__ import annotations

import json
import os
import struct
import sys
import time
import traceback

import numpy as np


# ---------------------------------------------------------------------------- wire format

def send(stream, header: dict, arrays: dict | None = None) -> None:
    arrays = {k: np.ascontiguousarray(v) for k, v in (arrays or {}).items()}
    header = dict(header, arrays=[[k, v.dtype.str, list(v.shape)] for k, v in arrays.items()])
    blob = json.dumps(header).encode()
    stream.write(struct.pack("<Q", len(blob)))
    stream.write(blob)
    for v in arrays.values():
        stream.write(v.tobytes())
    stream.flush()


def _read_exact(stream, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = stream.read(n - len(out))
        if not chunk:
            raise EOFError("the other side closed the pipe")
        out += chunk
    return bytes(out)


def recv(stream) -> tuple[dict, dict]:
    (n,) = struct.unpack("<Q", _read_exact(stream, 8))
    header = json.loads(_read_exact(stream, n).decode())
    arrays = {}
    for name, dtype, shape in header.pop("arrays", []):
        dt = np.dtype(dtype)
        size = int(np.prod(shape)) * dt.itemsize
        arrays[name] = np.frombuffer(_read_exact(stream, size), dt).reshape(shape)
    return header, arrays


# ---------------------------------------------------------------------------- tasks

# robomimic's low-dim observation keys -> robosuite's observation names
_ROBOSUITE_KEYS = {"object": "object-state"}


class RobosuiteTask:
    """One robosuite environment (robomimic's settings: OSC pose controller, 20 Hz, no shaping)."""

    def __init__(self, env_name: str, env_kwargs: dict, obs_keys: list):
        import robosuite
        kwargs = dict(env_kwargs)
        if "controller_configs" not in kwargs:
            from robosuite.controllers import load_composite_controller_config
            kwargs["controller_configs"] = load_composite_controller_config(controller="BASIC")
        kwargs.setdefault("robots", "Panda")
        for k, v in dict(has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False,
                         use_object_obs=True, reward_shaping=False, control_freq=20,
                         ignore_done=True).items():
            kwargs[k] = v          # the worker runs headless and keeps its own time limit
        self.env = robosuite.make(env_name, **kwargs)
        self.obs_keys = list(obs_keys)
        low, high = self.env.action_spec
        self.action_size = int(np.shape(low)[0])
        self.expert_fn = _EXPERTS.get(env_name)
        self.phase = 0

    def _obs(self, raw) -> np.ndarray:
        missing = [k for k in self.obs_keys if _ROBOSUITE_KEYS.get(k, k) not in raw]
        if missing:
            raise KeyError(f"observation keys {missing} are not in the robosuite observation {sorted(raw)}")
        return np.concatenate([np.ravel(raw[_ROBOSUITE_KEYS.get(k, k)]) for k in self.obs_keys]).astype(np.float32)

    def obs_sizes(self) -> dict:
        raw = self.env.reset()
        return {k: int(np.size(raw[_ROBOSUITE_KEYS.get(k, k)])) for k in self.obs_keys}

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        np.random.seed(int(rng.integers(2**31 - 1)))     # robosuite's object placement draws from np.random
        self.phase, self.phase_steps = 0, 0
        return self._obs(self.env.reset())

    def expert(self, rng, noise: float):
        if self.expert_fn is None:
            raise ValueError(f"no scripted expert for {type(self.env).__name__}; give demos.path (a robomimic "
                             "low_dim HDF5 file)")
        action = self.expert_fn(self, rng)
        action[:6] += noise * rng.standard_normal(6) * np.array([1, 1, 1, 0.2, 0.2, 0.2])
        return np.clip(action, -1, 1)

    def step(self, action) -> tuple[np.ndarray, bool]:
        raw, _, _, _ = self.env.step(np.clip(np.asarray(action, np.float64), -1.0, 1.0))
        return self._obs(raw), bool(self.env._check_success())


def _can_expert(task, rng):
    """Scripted PickPlaceCan (OSC pose deltas: 1 = 5 cm / step): above the can, down, close, lift,
    over the can's bin compartment, lower, open. Phases advance on reaching each waypoint."""
    env = task.env
    eef = np.asarray(env.sim.data.site_xpos[env.robots[0].eef_site_id["right"]])
    can = np.asarray(env.sim.data.body_xpos[env.obj_body_id["Can"]])
    target = np.asarray(env.target_bin_placements[env.object_to_id["can"]])
    lift_z = env.bin2_pos[2] + 0.25
    waypoints = [  # (goal, gripper, tolerance)
        (can + [0, 0, 0.10], -1.0, 0.01),
        (can + [0, 0, 0.005], -1.0, 0.01),
        (can + [0, 0, 0.005], 1.0, None),      # close for a fixed number of steps
        (np.array([can[0], can[1], lift_z]), 1.0, 0.03),
        (np.array([target[0], target[1], lift_z]), 1.0, 0.02),
        (np.array([target[0], target[1], env.bin2_pos[2] + 0.15]), 1.0, 0.02),
        (np.array([target[0], target[1], env.bin2_pos[2] + 0.15]), -1.0, None),
    ]
    goal, grip, tol = waypoints[min(task.phase, len(waypoints) - 1)]
    task.phase_steps += 1
    reached = (np.linalg.norm(goal - eef) < tol) if tol is not None else task.phase_steps >= 10
    if reached and task.phase < len(waypoints) - 1:
        task.phase, task.phase_steps = task.phase + 1, 0
    action = np.zeros(task.action_size)
    action[:3] = np.clip((goal - eef) / 0.05 * 0.8, -1, 1)
    action[-1] = grip
    return action


_EXPERTS = {"PickPlaceCan": _can_expert}


class PointTask:
    """A 2-D point that must reach a random goal within 0.05 (velocity actions, 0.05 per step):
    a numpy task that exercises the worker protocol and the host loop without robosuite."""

    action_size = 2

    def __init__(self, env_name="debug_point", env_kwargs=None, obs_keys=("state",)):
        self.obs_keys = list(obs_keys)
        self.sleep_s = float((env_kwargs or {}).get("step_sleep_s", 0.0))
        self.pos = np.zeros(2)
        self.goal = np.zeros(2)

    def obs_sizes(self) -> dict:
        return {"state": 4}

    def _obs(self):
        return np.concatenate([self.pos, self.goal - self.pos]).astype(np.float32)

    def reset(self, rng):
        self.pos = rng.uniform(-1, 1, 2)
        self.goal = rng.uniform(-1, 1, 2)
        return self._obs()

    def expert(self, rng, noise: float):
        action = np.clip((self.goal - self.pos) / 0.05 * 0.6, -1, 1)
        return np.clip(action + noise * rng.standard_normal(2), -1, 1)

    def step(self, action):
        if self.sleep_s:
            time.sleep(self.sleep_s)
        self.pos = np.clip(self.pos + 0.05 * np.clip(np.asarray(action, np.float64), -1, 1), -1.5, 1.5)
        return self._obs(), bool(np.linalg.norm(self.goal - self.pos) < 0.05)


def make_task(kind: str, env_name: str, env_kwargs: dict, obs_keys: list):
    if kind == "robosuite":
        return RobosuiteTask(env_name, env_kwargs, obs_keys)
    if kind == "debug_point":
        return PointTask(env_name, env_kwargs, obs_keys)
    raise ValueError(f"unknown host task kind {kind!r}")


# ---------------------------------------------------------------------------- the batch

class Batch:
    """`num_envs` tasks with chunk execution, the reward convention, time limit and auto-reset."""

    def __init__(self, spec: dict):
        self.tasks = [make_task(spec["kind"], spec["env_name"], spec.get("env_kwargs", {}), spec["obs_keys"])
                      for _ in range(int(spec["num_envs"]))]
        self.episode_length = int(spec["episode_length"])
        self.auto_reset = bool(spec["auto_reset"])
        self.success_bonus = float(spec.get("success_bonus", 5.0))
        self.rng = np.random.default_rng(int(spec.get("seed", 0)))
        n = len(self.tasks)
        self.obs = None
        self.steps = np.zeros(n, np.int64)
        self.finished = np.zeros(n, bool)

    def describe(self) -> dict:
        sizes = self.tasks[0].obs_sizes()
        return {"obs_sizes": [[k, sizes[k]] for k in self.tasks[0].obs_keys],
                "action_size": int(self.tasks[0].action_size)}

    def reset(self, seed: int) -> dict:
        self.rng = np.random.default_rng(int(seed))
        self.obs = np.stack([t.reset(self.rng) for t in self.tasks])
        self.steps[:] = 0
        self.finished[:] = False
        return {"obs": self.obs}

    def step(self, chunks: np.ndarray) -> dict:
        n, horizon = chunks.shape[:2]
        if n != len(self.tasks):
            raise ValueError(f"got {n} action chunks for {len(self.tasks)} envs")
        out = {"rewards": np.zeros((n, horizon), np.float32), "valid": np.zeros((n, horizon), bool),
               "success": np.zeros(n, bool), "terminal": np.zeros(n, bool), "truncated": np.zeros(n, bool),
               "nonfinite": np.zeros(n, bool), "done": np.zeros(n, bool)}
        final = self.obs.copy()
        for i, task in enumerate(self.tasks):
            if self.finished[i]:              # evaluation: a finished episode stays frozen
                out["done"][i] = True
                continue
            obs = self.obs[i]
            for h in range(horizon):
                obs, success = task.step(chunks[i, h])
                self.steps[i] += 1
                out["valid"][i, h] = True
                out["rewards"][i, h] = self.success_bonus if success else -1.0
                broken = not np.all(np.isfinite(obs))
                if success or broken or self.steps[i] >= self.episode_length:
                    out["success"][i] = success and not broken
                    out["nonfinite"][i] = broken
                    out["terminal"][i] = success or broken
                    out["truncated"][i] = not (success or broken)
                    out["done"][i] = True
                    if broken:
                        out["rewards"][i, h] = 0.0
                    break
            final[i] = obs
            if out["done"][i]:
                if self.auto_reset:
                    obs = task.reset(self.rng)
                    self.steps[i] = 0
                else:
                    self.finished[i] = True
            self.obs[i] = obs
        out["final_obs"] = final
        out["obs"] = self.obs.copy()
        return out


def rollout_expert(batch: "Batch", seed: int, noise_min: float, noise_max: float) -> dict:
    """One scripted-expert episode per env (no auto-reset), one step at a time; arrays shaped like
    `ogpo_jax.training.collect.collect_demos`' output (T = the time limit)."""
    n, t_max = len(batch.tasks), batch.episode_length
    rng = np.random.default_rng(int(seed))
    noise = rng.uniform(noise_min, noise_max, n)
    obs0 = batch.reset(int(seed) + 1)["obs"]
    da = batch.tasks[0].action_size
    out = {"obs": np.zeros((n, t_max, obs0.shape[1]), np.float32), "actions": np.zeros((n, t_max, da), np.float32),
           "rewards": np.zeros((n, t_max), np.float32), "dones": np.zeros((n, t_max), bool),
           "valid": np.zeros((n, t_max), bool), "success": np.zeros(n, bool), "length": np.zeros(n, np.int64)}
    for t in range(t_max):
        alive = ~batch.finished
        if not alive.any():
            break
        actions = np.zeros((n, 1, da), np.float32)
        for i in np.flatnonzero(alive):
            actions[i, 0] = batch.tasks[i].expert(rng, noise[i])
        obs = batch.obs.copy()
        res = batch.step(actions)
        out["obs"][alive, t] = obs[alive]
        out["actions"][alive, t] = actions[alive, 0]
        out["rewards"][alive, t] = res["rewards"][alive, 0]
        out["dones"][alive, t] = res["done"][alive]
        out["valid"][alive, t] = True
        out["success"] |= res["success"] & alive
    out["length"] = out["valid"].sum(1)
    return out


def serve(inp, out) -> None:
    batch = None
    while True:
        try:
            header, arrays = recv(inp)
        except EOFError:
            return
        cmd = header.get("cmd")
        try:
            if cmd == "init":
                batch = Batch(header["spec"])
                send(out, {"ok": True, **batch.describe()})
            elif cmd == "reset":
                send(out, {"ok": True}, batch.reset(header["seed"]))
            elif cmd == "step":
                t0 = time.perf_counter()
                result = batch.step(arrays["chunks"])
                send(out, {"ok": True, "sim_s": time.perf_counter() - t0}, result)
            elif cmd == "demos":
                if batch.auto_reset:
                    raise ValueError("demos need a batch without auto_reset")
                send(out, {"ok": True}, rollout_expert(batch, header["seed"], header["noise_min"], header["noise_max"]))
            elif cmd == "close":
                send(out, {"ok": True})
                return
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except Exception as e:    # report to the parent, which raises it with the worker's traceback
            send(out, {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})


def main() -> None:
    # the protocol owns the original stdout; library prints (robosuite logs to stdout) go to stderr
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, proto_out)


if __name__ == "__main__":
    main()
