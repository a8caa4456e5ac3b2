"""Environments stepped outside JAX: CPU simulators (robosuite) in worker processes, behind the
functional protocol through ordered `io_callback`s.

`HostEnv` describes a task; `HostEnv.batched(num_envs, horizon, auto_reset)` gives the batched,
chunked env the training loop and the evaluator use in place of
`VmapWrapper(AutoResetWrapper(ChunkWrapper(env)))`: its `reset` and `step` are jittable functions
whose bodies call the worker pool on the host (`io_callback(ordered=True)`), so
the one compiled training interval (act -> env step -> store -> updates) and everything around it
(evaluation, checkpoints, logging, compare.py) run unchanged; only the env step leaves the device.
A step sends every worker its envs' action chunks at once and waits for all of them, so workers
simulate in parallel. Each worker executes whole chunks (`host_worker.py`: the reward convention,
time limit, success termination and auto-reset with the true final observation), so one message
per chunk crosses the process boundary.

The workers run `host_worker.py` with the interpreter `python` names: robosuite 1.5.2 needs mujoco
3.3.x while this package's mujoco-mjx is 3.17, so robosuite lives in its own virtualenv
(README, "robosuite"). Pools start on first use, are shared by every `HostEnv` with the same
settings (train.py makes the env more than once) and stop at exit.

Limits: one seed per run (no `vmap` over the loop: `num_seeds` must be 1), one device, and the
simulators' state is not in checkpoints: a resumed run starts fresh episodes
(`loop.restart_host_episodes`).
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import select
import tempfile
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from ogpo_jax.envs import host_worker as wire
from ogpo_jax.envs.core import EnvState

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "host_worker.py")


class WorkerError(RuntimeError):
    """A worker process failed: its error and traceback, its exit code and stderr tail (it died,
    e.g. a simulator segfault or an OOM kill), or no answer within `worker_timeout_s` (it hung)."""


# The newest worker failure: a WorkerError raised inside an `io_callback` reaches the caller of the
# jitted program wrapped in an XLA runtime error; `take_failure` gives the named error back.
_FAILURE: list = []


def take_failure() -> WorkerError | None:
    """The WorkerError of the newest failure inside a jitted env step or reset since the last call,
    or None."""
    return _FAILURE.pop() if _FAILURE else None


def _in_callback(fn):
    """Record the WorkerError of a host callback for `take_failure` (XLA re-raises it as its own)."""
    def wrapped(*args):
        try:
            return fn(*args)
        except WorkerError as e:
            _FAILURE[:] = [e]
            raise
    return wrapped


class _Worker:
    def __init__(self, python: str, spec: dict, index: int, timeout_s: float | None = None):
        self.log = tempfile.NamedTemporaryFile(prefix=f"ogpo_host_worker{index}_", suffix=".log", delete=False)
        self.proc = subprocess.Popen([python, WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.index, self.timeout_s = index, timeout_s
        self.send({"cmd": "init", "spec": spec})
        self.info = self.recv()[0]

    def send(self, header, arrays=None):
        try:
            wire.send(self.proc.stdin, header, arrays)
        except (BrokenPipeError, OSError):
            self._died()

    def recv(self, timeout_s: float | None = -1.0):
        """The worker's next reply; `timeout_s` (default: the pool's) bounds the wait, None waits
        as long as the worker lives (a whole demo collection)."""
        timeout_s = self.timeout_s if timeout_s == -1.0 else timeout_s
        try:
            header, arrays = wire.recv(_Reader(self.proc.stdout.fileno(), timeout_s))
        except TimeoutError:
            self.proc.kill()
            raise WorkerError(f"host worker {self.index} did not answer within {timeout_s:g}s (a hung simulator?; "
                       "env.kwargs.worker_timeout_s sets the limit); it was killed")
        except (EOFError, OSError):
            self._died()
        if not header.get("ok"):
            raise WorkerError(f"host worker {self.index}: {header.get('error')}\n{header.get('traceback', '')}")
        return header, arrays

    def _died(self):
        code = self.proc.wait(timeout=10)
        self.log.flush()
        with open(self.log.name, errors="replace") as f:
            tail = f.read()[-3000:]
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        raise WorkerError(f"host worker {self.index} {how}" + (f"; its stderr ends with:\n{tail}" if tail.strip() else ""))

    def close(self):
        if self.proc.poll() is None:
            try:
                wire.send(self.proc.stdin, {"cmd": "close"})
                self.proc.wait(timeout=10)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass


class _Reader:
    """`read(n)` on a pipe's file descriptor that gives up with TimeoutError once `timeout_s` has
    passed since the reader was made (None: no limit), and returns b'' at end of file."""

    def __init__(self, fd: int, timeout_s: float | None):
        self.fd = fd
        self.deadline = None if timeout_s is None else time.monotonic() + float(timeout_s)

    def read(self, n: int) -> bytes:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            ready, _, _ = select.select([self.fd], [], [], max(left, 0.0))
            if not ready:
                raise TimeoutError
        return os.read(self.fd, n)


class WorkerPool:
    """`num_envs` envs split over `num_workers` processes (contiguous blocks)."""

    def __init__(self, spec: dict, num_envs: int, num_workers: int, python: str, timeout_s: float | None = None):
        num_workers = max(1, min(int(num_workers), int(num_envs)))
        sizes = [num_envs // num_workers + (i < num_envs % num_workers) for i in range(num_workers)]
        self.workers, self.blocks, start = [], [], 0
        self.broken = False
        try:
            for i, n in enumerate(sizes):
                self.workers.append(_Worker(python, dict(spec, num_envs=n, seed=i), i, timeout_s))
                self.blocks.append(slice(start, start + n))
                start += n
        except BaseException:
            self.close()
            raise
        self.info = self.workers[0].info
        self.lock = threading.Lock()

    def _all(self, make_msg, timeout_s=-1.0):
        with self.lock:
            if self.broken:
                raise WorkerError("this host worker pool lost a worker earlier; make a new one")
            try:
                for w, b in zip(self.workers, self.blocks):
                    w.send(*make_msg(w, b))
                replies = [w.recv(timeout_s) for w in self.workers]
            except WorkerError:
                # the others are mid-chunk or idle with episodes that cannot continue without it
                self.broken = True
                self.close()
                raise
        # seconds each worker spent simulating the last step (benchmarks/host_env.py: the
        # process boundary's cost is the wall time beyond the slowest worker's)
        self.last_sim_s = [h.get("sim_s", 0.0) for h, _ in replies]
        return [a for _, a in replies]

    def reset(self, seed: int) -> np.ndarray:
        out = self._all(lambda w, b: ({"cmd": "reset", "seed": int(seed) * 1009 + w.index},))
        return np.concatenate([o["obs"] for o in out]).astype(np.float32)

    def step(self, chunks: np.ndarray) -> dict:
        chunks = np.asarray(chunks, np.float32)
        out = self._all(lambda w, b: ({"cmd": "step"}, {"chunks": chunks[b]}))
        return {k: np.concatenate([o[k] for o in out]) for k in out[0]}

    def demos(self, seed: int, noise_min: float, noise_max: float) -> dict:
        out = self._all(lambda w, b: ({"cmd": "demos", "seed": int(seed) * 1009 + w.index,
                                       "noise_min": noise_min, "noise_max": noise_max},), timeout_s=None)
        return {k: np.concatenate([o[k] for o in out]) for k in out[0]}

    def close(self):
        for w in self.workers:
            w.close()
        self.workers = []


_POOLS: dict = {}
_INFO: dict = {}


def _close_pools():
    for pool in _POOLS.values():
        pool.close()
    _POOLS.clear()


atexit.register(_close_pools)


def _pool(spec: dict, num_envs: int, num_workers: int, python: str, timeout_s: float | None) -> WorkerPool:
    key = json.dumps([spec, num_envs, num_workers, python, timeout_s], sort_keys=True)
    if key not in _POOLS or _POOLS[key].broken:      # a pool that lost a worker starts anew
        _POOLS[key] = WorkerPool(spec, num_envs, num_workers, python, timeout_s)
    return _POOLS[key]


_INFO_KEYS = ("rewards", "valid", "success", "terminal", "truncated", "nonfinite", "final_obs")


class HostEnv:
    """A task simulated by `host_worker.py` processes (`kind` 'robosuite' or 'debug_point').

    Args:
      kind, env_name, env_kwargs, obs_keys: what each worker builds (`host_worker.make_task`).
      episode_length: the time limit (steps).
      python: the interpreter the workers run (default: this one).
      num_workers: processes per batch of envs (default: the CPU count).
      success_bonus: reward of the successful step (every other step: -1).
      worker_timeout_s: the longest a reset or chunk step may take before its worker counts as hung
        (killed, `WorkerError`); a dead worker is noticed at once.
    """

    host_batched = True

    def __init__(self, kind: str, env_name: str, env_kwargs: dict, obs_keys, episode_length: int,
                 python: str | None = None, num_workers: int | None = None, success_bonus: float = 5.0,
                 worker_timeout_s: float = 300.0):
        self.python = shutil.which(python) or python if python else sys.executable
        if not os.path.exists(self.python):
            raise FileNotFoundError(f"env.kwargs.python={python!r} does not exist")
        self.num_workers = int(num_workers or os.cpu_count() or 1)
        if self.num_workers < 1:
            raise ValueError(f"env.kwargs.num_workers must be >= 1, got {num_workers}")
        if not worker_timeout_s > 0:
            raise ValueError(f"env.kwargs.worker_timeout_s must be > 0 seconds, got {worker_timeout_s}")
        self.worker_timeout_s = float(worker_timeout_s)
        self.episode_length = int(episode_length)
        self.spec = {"kind": kind, "env_name": env_name, "env_kwargs": dict(env_kwargs or {}),
                     "obs_keys": list(obs_keys), "episode_length": self.episode_length,
                     "success_bonus": float(success_bonus)}
        key = json.dumps([self.spec, self.python], sort_keys=True)
        if key not in _INFO:      # one short-lived worker tells the observation layout
            probe = WorkerPool(dict(self.spec, auto_reset=False), 1, 1, self.python)
            _INFO[key] = probe.info
            probe.close()
        info = _INFO[key]
        self.obs_keys = tuple((k, int(n)) for k, n in info["obs_sizes"])
        self.observation_size = sum(n for _, n in self.obs_keys)
        self.action_size = int(info["action_size"])

    @property
    def unwrapped(self):
        return self

    def batched(self, num_envs: int, horizon: int, auto_reset: bool) -> "HostBatch":
        return HostBatch(self, int(num_envs), int(horizon), bool(auto_reset))

    def pool(self, num_envs: int, auto_reset: bool) -> WorkerPool:
        return _pool(dict(self.spec, auto_reset=bool(auto_reset)), num_envs, self.num_workers, self.python,
                     self.worker_timeout_s)

    def collect(self, num_demos: int, seed: int, noise_min: float, noise_max: float) -> dict:
        """Scripted-expert episodes run inside the workers (`training.collect.collect_demos` layout)."""
        pool = WorkerPool(dict(self.spec, auto_reset=False), num_demos, self.num_workers, self.python)
        try:
            return pool.demos(seed, noise_min, noise_max)
        finally:
            pool.close()


# robomimic's tasks on robosuite: (robosuite env name, robomimic rollout horizon, robots)
ROBOMIMIC_TASKS = {
    "lift": ("Lift", 400, "Panda"),
    "can": ("PickPlaceCan", 400, "Panda"),
    "square": ("NutAssemblySquare", 400, "Panda"),
    "tool_hang": ("ToolHang", 700, "Panda"),
    "transport": ("TwoArmTransport", 700, ["Panda", "Panda"]),
}
ROBOMIMIC_OBS_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")
TRANSPORT_OBS_KEYS = ROBOMIMIC_OBS_KEYS[:3] + ("robot1_eef_pos", "robot1_eef_quat", "robot1_gripper_qpos", "object")


def env_args_from_file(path: str) -> dict:
    """The `env_args` JSON a robomimic dataset stores on its `data` group (env_name, env_kwargs)."""
    import h5py
    if not os.path.exists(path):
        raise FileNotFoundError(f"env.kwargs.env_args_from={path!r}: file not found")
    with h5py.File(path, "r") as f:
        if "data" not in f or "env_args" not in f["data"].attrs:
            raise ValueError(f"{path}: no data.attrs['env_args'] (not a robomimic dataset)")
        return json.loads(f["data"].attrs["env_args"])


class HostExpert:
    """The scripted expert of a `HostEnv`, run inside its workers (`host_worker.py`)."""

    def __init__(self, env: HostEnv, noise_min: float = 0.0, noise_max: float = 0.3):
        self.env, self.noise_min, self.noise_max = env, float(noise_min), float(noise_max)

    def collect(self, num_demos: int, max_steps: int, key, log=None) -> dict:
        seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
        if log is not None:
            log(f"[demos] {num_demos} scripted episodes in {min(self.env.num_workers, num_demos)} host worker(s)")
        return self.env.collect(num_demos, seed, self.noise_min, self.noise_max)


class HostBatch:
    """`num_envs` envs of a `HostEnv` as one batched, chunked env with the functional protocol."""

    def __init__(self, env: HostEnv, num_envs: int, horizon: int, auto_reset: bool):
        self.env, self.num_envs, self.horizon, self.auto_reset = env, num_envs, horizon, auto_reset
        self.observation_size, self.action_size = env.observation_size, env.action_size
        n, h, d = num_envs, horizon, env.observation_size
        f, b, sds = jnp.float32, jnp.bool_, jax.ShapeDtypeStruct
        # what every reset / step callback returns
        self.shapes = {"obs": sds((n, d), f), "final_obs": sds((n, d), f), "rewards": sds((n, h), f),
                       "valid": sds((n, h), b), "done": sds((n,), b), "success": sds((n,), b),
                       "terminal": sds((n,), b), "truncated": sds((n,), b), "nonfinite": sds((n,), b)}

    def _pool(self):
        return self.env.pool(self.num_envs, self.auto_reset)

    def _state(self, sim, out) -> EnvState:
        info = {k: out[k] for k in _INFO_KEYS}
        return EnvState(sim=sim, obs=out["obs"], reward=out["rewards"].sum(-1), done=out["done"], info=info)

    def reset(self, key) -> EnvState:
        seed = jax.random.randint(key, (), 0, 2**31 - 1)

        def host_reset(seed):
            obs = self._pool().reset(int(seed))
            out = {k: np.zeros(s.shape, s.dtype) for k, s in self.shapes.items()}   # no transition yet
            out.update(obs=obs, final_obs=obs.copy())
            return out

        out = io_callback(_in_callback(host_reset), self.shapes, seed, ordered=True)
        return self._state(jnp.zeros((), jnp.int32), out)

    def step(self, state: EnvState, chunks) -> EnvState:
        chunks = jnp.asarray(chunks, jnp.float32)
        expect = (self.num_envs, self.horizon, self.action_size)
        if chunks.shape != expect:
            raise ValueError(f"action chunks have shape {chunks.shape}, expected {expect}")

        def host_step(chunks):
            out = self._pool().step(chunks)
            return {k: out[k].astype(s.dtype) for k, s in self.shapes.items()}

        out = io_callback(_in_callback(host_step), self.shapes, chunks, ordered=True)
        return self._state(state.sim + 1, out)


