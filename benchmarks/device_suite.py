"""The device suite: what one accelerator does with this framework, in one prepared command.

    python benchmarks/device_suite.py --tag=h200           # a GPU/TPU machine: ~8 minutes incl. compiles
    python benchmarks/device_suite.py --cpu                # mechanics check on a CPU (~2.5 minutes)
    python benchmarks/device_suite.py --sections=env --env_s=400 --batches=4096,16384
    python benchmarks/device_suite.py --sections=e2e --e2e_s=900 --tag=h200_e2e

Every section is bounded and leaves figures:
  * Each section has its own budget (`--env_s`, `--update_s`, `--e2e_s`; `--budget_s` shares one
    total among the chosen sections in proportion to the defaults) and runs in child processes:
    at the section's deadline the child gets SIGTERM and, 5 s later, SIGKILL, so a compile that
    overruns never eats the next section. Time a section leaves unused passes to the next.
  * Before each row a section predicts its cost from the last row (compile + run time, the run
    scaled by the batch ratio, at least the last row's time) and skips it when the time left is
    shorter, recording `"skipped"` with the numbers.
  * Every row is appended to `device_suite{_tag}.rows.jsonl` (one JSON object per line, with a
    `section` field) the moment it is measured, so a killed run keeps everything measured so far;
    a row cut by the deadline is recorded as `"killed"` with what the child was doing.
    `device_suite{_tag}.{json,md}` are rebuilt from the rows after each section, at the end and
    when the suite itself gets SIGTERM.
  * The persistent XLA compilation cache (`--cache_dir`; default `$JAX_COMPILATION_CACHE_DIR`, else
    the one `experiments/train.py` uses, `~/.cache/ogpo-jax/xla`) is on in every child; each
    section reports its cache lookups, hits and writes (`jax.monitoring` events), so a second run
    shows which compiles the cache saved.

Sections, in this order (`--sections` picks a subset; each runs alone too):
  env     MJX throughput of each task of `--env_tasks` (default Can, Square, two_nuts) at each batch of
          `--batches` (default 1,024 / 4,096 / 8,192 / 16,384, smallest first; memory permitting:
          an out-of-memory batch is recorded and the task's larger ones skipped), one child per
          task and `--impls` backend. Per batch: one compiled `lax.scan` of `--scan_steps` (25)
          control steps with the env state donated, under `env_throughput.benchmark_actions` (a
          moving arm; the actions are an input, so nothing is constant-folded), timed as the median
          of `--env_repeats` calls after a warm-up call: control and physics steps/s, ms per control
          step, reset and scan compile seconds, contact slots per env and the peak (and mean)
          active contacts per env over the timed steps (JAX backend: slots with dist <
          includemargin, the rows `mjx/_src/constraint.py` makes active, counted after each
          control step; Warp: `nacon` / batch, a mean over envs).
  update  ms per actor, critic and fused OGPO update at the GPU preset's scale (configs/can.py) and
          at paper scale (4x512, 10 heads, 256 states x 32 chains, K = 10), each in full fp32
          (`highest`) and at the preset's matmul precision (JAX's default: TF32-class matmuls on
          GPUs), with compile times.
  e2e     the user's command itself, `python experiments/train.py --config=configs/can.py`, from
          nothing with `--time_budget_s` set so that finetuning stops in time for the final
          checkpoint and evaluation (`--e2e_reserve_s` before the deadline): wall time of each stage
          and of each compile, env steps/s, updates/s and the success curve; the exact command
          line is in the row and its output in `<workdir>/device_suite_train.log`.

`--cpu` runs the same code at CPU scale (Can at batch 4, a small update scale, and for `e2e`
`configs/toy.py:quick` shrunk by `--config.*` overrides: an MJX pipeline compiles for ~10 minutes
on a 2-core CPU), so `tests/test_device_suite.py` can check that every figure is produced. Results
go to `benchmarks/results/device_suite{_tag}.{rows.jsonl,json,md}`, naming the device, the jax /
jaxlib / mujoco versions and the command.
"""
from __future__ import annotations

import argparse
import glob
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SECTIONS = ("env", "update", "e2e")
MJX_TASKS = ("can", "square", "two_nuts")
IMPLS = ("jax", "warp")
# Seconds per section: on an accelerator one call of ~8 minutes (an H200 compiles a Can reset or
# step in ~26-32 s, so the env section needs ~200 s for Can's four batches); on a CPU enough for the
# small work with room for a loaded machine.
BUDGETS = {"env": 200.0, "update": 60.0, "e2e": 220.0}
CPU_BUDGETS = {"env": 150.0, "update": 90.0, "e2e": 240.0}
# Seconds of the e2e section kept after train.py's time budget for the final checkpoint and
# evaluation (Can on an H200: ~15 s per mode over 128 episodes).
E2E_RESERVE_S = {"gpu": 45.0, "cpu": 20.0}
KILL_GRACE_S = 5.0               # SIGTERM -> SIGKILL of a child that outlives its deadline
GPU_BATCHES, CPU_BATCHES = "1024,4096,8192,16384", "4"
# train.py's last line (experiments/train.py prints it at exit)
TRAIN_CACHE_LINE = re.compile(
    r"XLA compilation cache: (\d+) hits, (\d+) misses \((\d+) lookups; (\d+) programs written\)")


def versions() -> dict:
    out = {}
    for pkg in ("jax", "jaxlib", "mujoco", "mujoco-mjx", "warp-lang", "flax", "optax", "jax-cuda12-plugin",
                "jax-cuda13-plugin", "libtpu"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


# ------------------------------------------------------------------------------- rows and status
def append_row(path: str, record: dict) -> None:
    """One JSON line, flushed to disk at once: a run killed a moment later keeps it."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_rows(path: str) -> list:
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:      # a line cut by SIGKILL mid-write
                pass
    return out


def is_row(r: dict) -> bool:
    return "kind" not in r


def predicted_cost(last: dict | None, batch: int = 1) -> float | None:
    """Seconds the next row should take, from the last measured one (`compile_s`, `run_s`, `seconds`,
    `batch`): its compile plus its run scaled by the batch ratio, at least its whole time."""
    if not last:
        return None
    scaled = last["compile_s"] + last["run_s"] * batch / last.get("batch", batch)
    return max(scaled, last["seconds"])


def skip_reason(last: dict | None, batch: int, left: float) -> str | None:
    """Why the next row (at `batch`) cannot finish in the `left` seconds, or None when it may."""
    if left <= 0:
        return "not reached: the section's deadline had passed"
    pred = predicted_cost(last, batch)
    if pred is None or pred <= left:
        return None
    ratio = batch / last.get("batch", batch)
    return (f"predicted {pred:.0f} s (last row: compile {last['compile_s']:.0f} s + run {last['run_s']:.1f} s"
            + (f" x batch ratio {ratio:g}" if ratio != 1 else "") + f", at least its {last['seconds']:.0f} s) "
            f"> {left:.0f} s left of the section")


class Status:
    """What a child is doing now, in a small file the parent reads when it kills the child."""

    def __init__(self, path: str):
        self.path = path

    def set(self, what: str, **ident):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"what": what, "since": time.time(), **ident}, f)
        os.replace(tmp, self.path)

    def get(self) -> dict:
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, json.JSONDecodeError):
            return {}


# -------------------------------------------------------------------------------- child process
def child_main(spec: dict) -> None:
    """A section's work in its own process (`--_child=<json>`): rows appended as measured."""
    sys.path[:0] = [HERE, ROOT]
    import warnings

    import jax

    # the CPU backend cannot donate buffers; donation is what the GPU run measures
    warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
    from ogpo_jax.training.compile_cache import count_events

    counts = count_events()
    if spec["cache_dir"]:
        jax.config.update("jax_compilation_cache_dir", spec["cache_dir"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", spec["cache_min_compile_s"])

    def write(record):
        append_row(spec["rows"], {"section": spec["section"], "child": spec["child"], **record,
                                  "cache": dict(counts)})

    from update_step import machine
    write({"kind": "start", "machine": machine(), "device_memory_gib": device_memory_gib()})
    status = Status(spec["status"])
    if spec["section"] == "env":
        env_child(spec, write, status)
    elif spec["section"] == "update":
        update_child(spec, write, status)
    write({"kind": "end"})


def device_memory_gib(key: str = "bytes_limit"):
    import jax
    try:
        stats = jax.devices()[0].memory_stats() or {}
        return round(stats[key] / 2**30, 2) if stats.get(key) else None
    except Exception:       # CPU and some backends have no memory stats
        return None


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------ env
def is_oom(e: BaseException) -> bool:
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def env_child(spec: dict, write, status: Status) -> None:
    """One task and backend at each batch, smallest first; see the module docstring."""
    task, impl, batches = spec["task"], spec["impl"], spec["batches"]
    # the cost of the previous task's first row: this task's first row is predicted from it
    last = spec.get("estimate")
    base = None
    env = None
    for i, batch in enumerate(batches):
        ident = {"task": task, "impl": impl, "batch": batch}
        why = skip_reason(last, batch, spec["deadline"] - time.time())
        if why:
            write({**ident, "skipped": why})
            log(f"[env] {task} ({impl}) batch {batch}: skipped, {why}")
            continue
        t_row = time.time()
        try:
            if env is None or impl == "warp":
                # Warp's contact buffer is shared by the worlds of a call: sized for this batch
                status.set(f"building the env for batch {batch}", **ident)
                env = make_env(task, impl, batch)
            row, base = measure_env(env, task, impl, batch, spec["scan_steps"], spec["repeats"], base, status)
        except Exception as e:
            oom = is_oom(e)
            write({**ident, "error": f"{type(e).__name__}: {str(e)[:300]}", "out_of_memory": oom})
            log(f"[env] {task} ({impl}) batch {batch}: {'out of memory' if oom else 'error'}: {str(e)[:300]}")
            for b in batches[i + 1:]:
                write({**ident, "batch": b,
                       "skipped": f"after the {'out-of-memory ' if oom else ''}error at batch {batch}"})
            return
        row["seconds"] = time.time() - t_row
        write({**ident, **row})
        # the reset compiles once per task: later rows repeat only the scan's compile and run
        last = {"batch": batch, "compile_s": row["compile_scan_s"], "run_s": row["run_s"],
                "seconds": row["seconds"] - (row["compile_reset_s"] or 0.0)}


def make_env(task: str, impl: str, batch: int):
    from ogpo_jax import envs
    kwargs = {} if impl == "jax" else {"impl": impl, "warp_max_worlds": batch}
    if impl == "warp":
        import warp
        warp.config.log_level = warp.LOG_WARNING   # a line per kernel module loaded would bury the figures
    return envs.make(task, **kwargs)[0].unwrapped


def active_contacts(data, impl: str, batch: int):
    """(max over envs, mean over envs) of the contacts in use in `data` (a batch of MJX Data)."""
    import jax.numpy as jnp
    if impl == "warp":
        # MuJoCo Warp keeps one contact buffer for all the worlds of a call: only its total is known
        n = jnp.max(data._impl.nacon).astype(jnp.float32) / batch
        return n, n
    from ogpo_jax.envs.mjx.arm import touching
    n = jnp.sum(touching(data._impl.contact), axis=-1)
    return jnp.max(n).astype(jnp.float32), jnp.mean(n.astype(jnp.float32))


def measure_env(env, task, impl, batch, steps, repeats, base, status):
    """-> (row, base): one batch's row, and the reset states larger batches start from."""
    import jax
    import numpy as np

    from env_throughput import benchmark_actions
    from ogpo_jax.envs.core import batched
    from ogpo_jax.training import progress

    name = f"{type(env).__name__} ({impl})"
    ident = {"task": task, "impl": impl, "batch": batch}

    def jit(f, **kw):
        return jax.jit(f, compiler_options=env.compiler_options, **kw)

    row = {"vmap_batch": min(batch, env.max_vmap_batch or batch), "scan_steps": steps, "repeats": repeats,
           "n_substeps": env.params.n_substeps, "compile_reset_s": None}
    if base is None or impl == "warp":
        keys = jax.random.split(jax.random.PRNGKey(0), batch)
        reset = jit(lambda k: batched(env.reset, env, k))
        status.set(f"compiling the reset program of batch {batch}", **ident)
        row["compile_reset_s"] = progress.compile_program(reset, (keys,), f"{name} reset, batch {batch}", log)
        status.set(f"resetting batch {batch}", **ident)
        state = reset(keys)
        jax.block_until_ready(state.obs)
        if impl == "jax":
            base = (batch, state)
    else:
        row["reset_from_batch"] = base[0]
    if impl == "jax":
        # Larger batches start from the first batch's reset states, repeated: the reset program
        # compiles once per task (~26-32 s on an H200), not once per batch. A copy, since the
        # scan consumes (donates) its input state.
        status.set(f"repeating batch {base[0]}'s reset states for batch {batch}", **ident)
        idx = np.arange(batch) % base[0]
        state = jax.jit(lambda s, i: jax.tree_util.tree_map(lambda x: x[i], s))(base[1], idx)

    def rollout(state, actions):
        def body(s, a):
            s = batched(env.step, env, s, a)
            return s, active_contacts(s.sim, impl, batch)
        return jax.lax.scan(body, state, actions)

    scan = jit(rollout, donate_argnums=0)
    # every call's actions as an input: a program with constant actions could be folded
    actions = benchmark_actions(jax.random.PRNGKey(1), (repeats + 1) * steps, batch, env.action_size)
    actions = actions.reshape(repeats + 1, steps, batch, env.action_size)
    status.set(f"compiling the scan program of batch {batch}", **ident)
    row["compile_scan_s"] = progress.compile_program(
        scan, (state, actions[0]), f"{name} scan of {steps} control steps, batch {batch}", log)
    status.set(f"measuring batch {batch}", **ident)
    t_run = time.perf_counter()
    times, peaks, means = [], [], []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        state, (peak, mean) = scan(state, actions[i])
        jax.block_until_ready(state.obs)
        dt = time.perf_counter() - t0
        if i:                                  # the first call warms up
            times.append(dt)
            peaks.append(np.asarray(peak))
            means.append(np.asarray(mean))
        left = (repeats - i) * (float(np.median(times)) if times else dt)
        log(f"[env] {name} batch {batch}: {'warm-up call' if i == 0 else f'call {i}/{repeats}'} {dt:.2f}s "
            f"({batch * steps / dt:,.0f} control steps/s), ETA {left:.0f}s")
    row["run_s"] = time.perf_counter() - t_run
    dt = float(np.median(times))
    n = env.params.n_substeps
    sim = state.sim
    slots = env.contacts_per_world if impl == "warp" else int(sim._impl.contact.dist.shape[-1])
    row.update({
        "control_steps_per_s": batch * steps / dt, "physics_steps_per_s": batch * steps * n / dt,
        "ms_per_control_step": dt / steps * 1e3, "contact_slots_per_env": slots,
        "peak_active_contacts_per_env": float(np.max(peaks)), "mean_active_contacts_per_env": float(np.mean(means)),
        "contacts_counted": ("MuJoCo Warp nacon / batch after each control step (a mean over envs; its max over "
                             "steps is the peak)" if impl == "warp" else
                             "slots with dist < includemargin after each control step; peak: max over envs and "
                             "timed steps, mean: over envs and timed steps"),
        "peak_memory_gib": device_memory_gib("peak_bytes_in_use"),
    })
    log(f"[env] {name} batch {batch}: {row['control_steps_per_s']:,.0f} control steps/s "
        f"({row['physics_steps_per_s']:,.0f} physics), {row['ms_per_control_step']:.2f} ms per control step; "
        + (f"compile reset {row['compile_reset_s']:.1f}s" if row["compile_reset_s"] is not None
           else f"reset states from batch {base[0]}") + f", compile scan {row['compile_scan_s']:.1f}s; active contacts "
        f"per env peak {row['peak_active_contacts_per_env']:.0f} (mean {row['mean_active_contacts_per_env']:.1f}) "
        f"of {slots} slots")
    return row, base


# --------------------------------------------------------------------------------------- update
def update_scales(cpu: bool) -> dict:
    from configs import can
    from ogpo_jax.algorithms.config import OGPOConfig

    obs_dim, chunk = 23, (4, 7)            # Can's observation and chunk shapes
    if cpu:
        small = OGPOConfig(actor_hidden_dims=(64, 64), critic_hidden_dims=(64, 64), num_critics=4, flow_steps=3,
                           batch_size=16, ppo_batch_size=8, group_size=4, success_batch_size=16)
        return {"cpu_small": dict(obs_dim=obs_dim, chunk_shape=chunk, config=small)}
    preset = OGPOConfig.from_dict(can.get_config("").algo)
    # the preset first: it is what the e2e run pays for, and the deadline may stop the section
    return {"gpu_preset": dict(obs_dim=obs_dim, chunk_shape=chunk, config=preset),
            "paper": dict(obs_dim=obs_dim, chunk_shape=chunk, config=OGPOConfig())}


def update_rows(cpu: bool) -> list:
    """[(scale, precision)] in the order the section measures them."""
    from configs import can

    preset_precision = can.get_config("").train.matmul_precision or "default"
    precisions = ["highest"] + ([preset_precision] if preset_precision != "highest" else [])
    return [(s, p) for s in update_scales(cpu) for p in precisions]


def update_child(spec: dict, write, status: Status) -> None:
    import jax

    from update_step import bench_scale

    scales = update_scales(spec["cpu"])
    last = None
    for name, precision in update_rows(spec["cpu"]):
        ident = {"scale": name, "precision": precision}
        # a new scale is larger: it takes at least the last row's time
        why = skip_reason(last, 1, spec["deadline"] - time.time())
        if why:
            write({**ident, "skipped": why})
            log(f"[update] {name} ({precision}): skipped, {why}")
            continue
        status.set(f"compiling and timing {name}'s actor, critic and fused update steps at precision {precision}",
                   **ident)
        log(f"[update] {name}, matmul precision {precision}: compiling and timing the actor, critic and fused "
            f"update steps ...")
        t0 = time.time()
        with jax.default_matmul_precision(precision):
            row = bench_scale(name, repeats=spec["repeats"], **scales[name])
        row.update(precision=precision, seconds=time.time() - t0)
        write(row)
        compile_s = sum(row[p]["compile_s"] for p in ("actor", "critic", "update"))
        last = {"compile_s": compile_s, "run_s": row["seconds"] - compile_s, "seconds": row["seconds"]}
        log(f"[update] {name} ({precision}): actor {row['actor']['ms_median']:.2f} ms, critic "
            f"{row['critic']['ms_median']:.2f} ms, fused update {row['update']['ms_median']:.2f} ms "
            f"(compile {row['update']['compile_s']:.1f}s); {row['seconds']:.0f}s")


# ------------------------------------------------------------------------------------------ e2e
# The CPU mode's e2e run: configs/toy.py:quick shrunk to a couple of minutes on a 2-core CPU.
CPU_E2E_OVERRIDES = {
    "demos.num_demos": 32, "bc.max_steps": 500, "bc.eval_every": 250, "bc.eval_episodes": 32,
    "train.num_envs": 8, "train.total_env_steps": 2_000, "train.start_training": 256,
    "train.eval_every_env_steps": 1_000, "train.eval_episodes": 32, "train.log_every_iterations": 8,
    "train.checkpoint_every_env_steps": 2_000, "train.updates_per_iteration": 2, "train.replay_capacity": 4_096,
    "train.success_capacity": 2_048, "algo.actor_hidden_dims": "(32,32)", "algo.critic_hidden_dims": "(32,32)",
    "algo.num_critics": 2, "algo.flow_steps": 3, "algo.batch_size": 16, "algo.ppo_batch_size": 8,
    "algo.group_size": 4, "algo.success_batch_size": 16, "log.progress": False,
}


def e2e_command(cpu: bool, workdir: str, time_budget_s: float) -> list:
    """train.py's argv (after `python`): the user's command, with a workdir and a time budget."""
    if cpu:
        config = ["--config=configs/toy.py:quick"] + [f"--config.{k}={v}" for k, v in CPU_E2E_OVERRIDES.items()]
    else:
        config = ["--config=configs/can.py"]
    return ["experiments/train.py", *config, f"--workdir={workdir}", f"--time_budget_s={time_budget_s:.1f}"]


class OutputRelay:
    """Echoes a child's output line by line into the console and a log file, and keeps what the
    report needs: the compiles, the last line, the cache line. A progress bar's redraws (lines
    ended by a carriage return) are echoed once every PROGRESS_EVERY_S seconds."""

    COMPILE_DONE = re.compile(r"^\[compile\] (.*): ([\d.]+)s$")
    COMPILE_START = re.compile(r"^\[compile\] (.*) \.\.\.$")
    PROGRESS_EVERY_S = 10.0

    def __init__(self, stream, log_path: str):
        self.compiles, self.open_compile, self.last_line, self.cache = [], None, "", None
        self.last_progress = 0.0
        self.log = open(log_path, "w")
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.thread.start()

    def _run(self, stream):
        buf = b""
        while True:
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            parts = re.split(rb"(\r|\n)", buf)
            buf = parts.pop()
            for text, end in zip(parts[::2], parts[1::2]):
                if end == b"\r" and text.strip():       # a progress bar's redraw
                    if time.time() - self.last_progress < self.PROGRESS_EVERY_S:
                        continue
                    self.last_progress = time.time()
                self._line(text.decode(errors="replace").rstrip())
        if buf:
            self._line(buf.decode(errors="replace").rstrip())
        self.log.close()

    def _line(self, line: str):
        if not line:
            return
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()
        self.last_line = line
        if m := self.COMPILE_DONE.match(line):
            self.compiles.append({"what": m.group(1), "seconds": float(m.group(2))})
            self.open_compile = None
        elif m := self.COMPILE_START.match(line):
            self.open_compile = m.group(1)
        if m := TRAIN_CACHE_LINE.search(line):
            self.cache = dict(zip(("hits", "misses", "lookups", "written"), map(int, m.groups())))

    def join(self):
        self.thread.join(timeout=10)


def read_run(workdir: str) -> dict:
    """Stage times, rates and the success curve from a run directory (also of a cut-short run)."""
    import numpy as np

    out = {}
    path = os.path.join(workdir, "demos.json")
    if os.path.exists(path):
        d = json.load(open(path))
        out["demos"] = {"seconds": d["seconds"], "expert_success": d["expert_success"]}
    path = os.path.join(workdir, "bc", "bc.json")
    if os.path.exists(path):
        b = json.load(open(path))
        out["bc"] = {k: b.get(k) for k in ("bc_seconds", "bc_steps", "bc_success_ode", "bc_success_sde",
                                           "bc_final_eval_seconds")}
    records = []
    path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
    intervals = [r for r in records if "env_steps_per_s" in r]
    if intervals:
        def med(key):
            vals = [r[key] for r in intervals[1:] if key in r] or [r[key] for r in intervals if key in r]
            return float(np.median(vals)) if vals else None
        out["finetune"] = {
            "env_steps": records[-1]["env_steps"], "grad_steps": records[-1].get("grad_steps"),
            "wall_seconds": records[-1].get("wall_seconds"),
            "median_env_steps_per_s": med("env_steps_per_s"), "median_updates_per_s": med("updates_per_s"),
            "grad_steps_per_env_step": records[-1].get("grad_steps_per_env_step"),
            "compile_s": next((r["compile_s"] for r in records if "compile_s" in r), None),
            "first_interval_s": next((r["compile_and_first_interval_s"] - r.get("compile_s", 0.0)
                                      for r in records if "compile_and_first_interval_s" in r), None),
        }
    out["curve"] = [{"env_steps": r["env_steps"], "wall_seconds": r.get("wall_seconds"),
                     **{k.replace("eval/success_", ""): r[k] for k in r if k.startswith("eval/success_")}}
                    for r in records if any(k.startswith("eval/success_") for k in r)]
    out["rollout_curve"] = [{"env_steps": r["env_steps"], "success": r["rollout/success"]}
                            for r in records if "rollout/success" in r]
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        out["eval_episodes"] = int(json.load(open(path))["train"]["eval_episodes"])
    path = os.path.join(workdir, "summary.json")
    if os.path.exists(path):
        s = json.load(open(path))
        out["summary"] = {k: v for k, v in s.items() if k not in ("config", "compiles")}
        out["compiles"] = s.get("compiles", [])
    return out


# ------------------------------------------------------------------------------------- the suite
class Suite:
    """The parent: runs each section's children under its deadline and rebuilds the report."""

    def __init__(self, args, sections, budgets, tasks, impls, batches, argv):
        self.args, self.sections, self.budgets = args, sections, budgets
        self.tasks, self.impls, self.batches = tasks, impls, batches
        self.start = time.time()
        self.stem = os.path.join(args.out, "device_suite" + (f"_{args.tag}" if args.tag else ""))
        self.rows_path = self.stem + ".rows.jsonl"
        os.makedirs(args.out, exist_ok=True)
        open(self.rows_path, "w").close()            # a new run starts a new record
        self.tmp = tempfile.mkdtemp(prefix="device-suite-")
        self.child_env = dict(os.environ)
        if getattr(args, "_no_prealloc", False):
            del self.child_env["XLA_PYTHON_CLIENT_PREALLOCATE"]
        self.child_env["JAX_COMPILATION_CACHE_DIR"] = args.cache_dir   # '' turns train.py's cache off too
        self.child_env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = str(args.cache_min_compile_s)
        self.interrupted = None
        self.header = {
            "benchmark": "device_suite", "date": time.strftime("%Y-%m-%d"), "cpu_mode": args.cpu,
            "command": "python benchmarks/device_suite.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "sections_run": sections, "budgets_s": budgets, "scan_steps": args.scan_steps, "versions": versions(),
            "cache_dir": args.cache_dir or None, "rows_file": os.path.basename(self.rows_path),
        }

    # ---- children
    def launch(self, argv, label, capture=False):
        kw = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT) if capture else {}
        # its own process group: a kill reaches whatever the child started too
        proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=self.child_env, start_new_session=True, **kw)
        log(f"[suite] {label}: started (pid {proc.pid})")
        return proc

    def wait(self, proc, deadline: float, label: str) -> str:
        """'done', 'deadline' (SIGTERM at the deadline, SIGKILL KILL_GRACE_S later) or
        'interrupted' (the suite got SIGTERM / Ctrl-C; the child is stopped the same way)."""
        try:
            proc.wait(timeout=max(deadline - time.time(), 0.0))
            return "done"
        except subprocess.TimeoutExpired:
            log(f"[suite] {label}: the section's deadline has come; SIGTERM")
            self.stop(proc)
            return "deadline"
        except KeyboardInterrupt as e:
            self.interrupted = str(e) or "interrupt"
            log(f"[suite] {label}: the suite is stopping ({self.interrupted}); SIGTERM")
            self.stop(proc)
            return "interrupted"

    @staticmethod
    def stop(proc):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=KILL_GRACE_S)
                return
            except subprocess.TimeoutExpired:
                continue

    def child_spec(self, section, child, deadline, **extra):
        return {"section": section, "child": child, "rows": self.rows_path, "deadline": deadline,
                "status": os.path.join(self.tmp, child.replace(":", "_") + ".status"),
                "cache_dir": self.args.cache_dir, "cache_min_compile_s": self.args.cache_min_compile_s,
                "cpu": self.args.cpu, **extra}

    def run_child(self, spec, label):
        proc = self.launch([os.path.abspath(__file__), "--_child=" + json.dumps(spec)], label)
        outcome = self.wait(proc, spec["deadline"], label)
        return outcome, proc.returncode

    def ended_why(self, outcome, rc, budget, what, elapsed):
        if outcome == "deadline":
            return "killed", f"killed at the section deadline ({budget:.0f} s) while {what} ({elapsed:.0f} s in)"
        if outcome == "interrupted":
            return "killed", f"killed when the suite was stopped ({self.interrupted}) while {what} ({elapsed:.0f} s in)"
        return "error", f"the child exited with code {rc} while {what} ({elapsed:.0f} s in)"

    def fill_in(self, section, child, keys, ident, outcome, rc, budget, started):
        """Rows for what a child did not write: the row it was on when it ended (killed or
        crashed), then 'not reached' for the rest."""
        done = {tuple(r.get(k) for k in ident) for r in read_rows(self.rows_path)
                if r.get("child") == child and is_row(r)}
        missing = [k for k in keys if k not in done]
        if not missing:
            return
        st = Status(self.child_spec(section, child, 0)["status"]).get()
        current = tuple(st.get(k) for k in ident) if st else missing[0]
        what = st.get("what", "starting (importing JAX, building its inputs)")
        since = st.get("since", started)
        first = True
        for k in missing:
            row = {"section": section, "child": child, **dict(zip(ident, k))}
            if k == current or (first and current not in missing):
                kind, text = self.ended_why(outcome, rc, budget, what, time.time() - since)
                row[kind] = text
                first = False
            else:
                row["skipped"] = "not reached: " + ("the section's deadline came first" if outcome == "deadline"
                                                    else "the suite was stopped" if outcome == "interrupted"
                                                    else "the child ended early")
            append_row(self.rows_path, row)

    # ---- sections
    def section_env(self, deadline, budget):
        estimate = None
        for task in self.tasks:
            for impl in self.impls:
                child = f"env:{task}:{impl}"
                keys = [(task, impl, b) for b in self.batches]
                why = skip_reason(estimate, self.batches[0], deadline - time.time())
                if why:
                    # too little time for even the first row: no child to start
                    for k in keys:
                        append_row(self.rows_path, {"section": "env", "child": child, "task": task, "impl": impl,
                                                    "batch": k[2], "skipped": why})
                    log(f"[env] {task} ({impl}): skipped, {why}")
                    continue
                spec = self.child_spec("env", child, deadline, task=task, impl=impl, batches=self.batches,
                                       scan_steps=self.args.scan_steps, repeats=self.args.env_repeats,
                                       estimate=estimate)
                started = time.time()
                outcome, rc = self.run_child(spec, f"env {task} ({impl})")
                self.fill_in("env", child, keys, ("task", "impl", "batch"), outcome, rc, budget, started)
                if estimate is None:
                    first = next((r for r in read_rows(self.rows_path)
                                  if r.get("child") == child and "control_steps_per_s" in r), None)
                    if first:
                        estimate = {"batch": first["batch"], "seconds": first["seconds"], "run_s": first["run_s"],
                                    "compile_s": first["compile_scan_s"] + (first["compile_reset_s"] or 0.0)}
                if outcome != "done":
                    # the section's time is spent (or the suite is stopping): the rest is not reached
                    self.skip_rest_of_env(task, impl, outcome)
                    return

    def skip_rest_of_env(self, task, impl, outcome):
        pairs = [(t, i) for t in self.tasks for i in self.impls]
        for t, i in pairs[pairs.index((task, impl)) + 1:]:
            for b in self.batches:
                append_row(self.rows_path, {"section": "env", "child": f"env:{t}:{i}", "task": t, "impl": i, "batch": b,
                                            "skipped": "not reached: " + ("the section's deadline came first"
                                                                          if outcome == "deadline"
                                                                          else "the suite was stopped")})

    def section_update(self, deadline, budget):
        child = "update"
        spec = self.child_spec("update", child, deadline, repeats=self.args.repeats)
        started = time.time()
        outcome, rc = self.run_child(spec, "update")
        self.fill_in("update", child, update_rows(self.args.cpu), ("scale", "precision"), outcome, rc, budget, started)

    def section_e2e(self, deadline, budget):
        workdir = os.path.abspath(self.args.workdir or tempfile.mkdtemp(prefix="device-suite-e2e-"))
        os.makedirs(workdir, exist_ok=True)
        available = deadline - time.time()
        reserve = self.args.e2e_reserve_s
        # finetuning stops in time for the final checkpoint and evaluation; at least 1 s, so a
        # deadline too short for finetuning still gives the run's demos, BC and final evaluation
        time_budget = max(available - reserve, 1.0)
        argv = e2e_command(self.args.cpu, workdir, time_budget)
        row = {"section": "e2e", "child": "e2e", "config": argv[1].split("=", 1)[1],
               "command": "python " + shlex.join(argv),
               "workdir": workdir, "time_budget_s": time_budget, "available_s": available,
               "log": os.path.join(workdir, "device_suite_train.log")}
        log(f"[suite] e2e: {row['command']}")
        # the row stands in for the run until train.py ends (the last e2e row is the report's): if
        # the suite itself dies first, the command and its run directory are still on record
        append_row(self.rows_path, {**row, "killed": "the suite ended before train.py did; its run directory "
                                                     "holds what it measured"})
        started = time.time()
        proc = self.launch(argv, "e2e (train.py)", capture=True)
        relay = OutputRelay(proc.stdout, row["log"])
        outcome = self.wait(proc, deadline, "e2e (train.py)")
        relay.join()
        row["wall_seconds"] = time.time() - started
        row["exit_code"] = proc.returncode
        if outcome != "done" or proc.returncode != 0:
            what = (f"compiling {relay.open_compile}" if relay.open_compile else
                    f"running (last output: {relay.last_line[:200]!r})")
            kind, text = self.ended_why(outcome, proc.returncode, budget, what, time.time() - started)
            row[kind] = text
        row.update(read_run(workdir))
        if "compiles" not in row:       # no summary.json: the compiles train.py announced
            row["compiles"] = relay.compiles
        if relay.open_compile and "summary" not in row:
            row["compile_in_progress"] = relay.open_compile
        row["cache"] = relay.cache
        append_row(self.rows_path, row)

    # ---- report
    def cache_entries(self) -> int | None:
        if not self.args.cache_dir:
            return None
        return len(glob.glob(os.path.join(self.args.cache_dir, "*-cache")))

    def build(self) -> dict:
        rows = read_rows(self.rows_path)
        res = dict(self.header)
        start = next((r for r in rows if r.get("kind") == "start"), None)
        res["machine"] = start["machine"] if start else None
        res["device_memory_gib"] = start["device_memory_gib"] if start else None
        res["section_runs"] = {r["section"]: {k: v for k, v in r.items() if k not in ("section", "kind")}
                               for r in rows if r.get("kind") == "section"}
        for s in self.sections:
            sec_rows = [r for r in rows if r["section"] == s and is_row(r)]
            if s == "e2e":
                res[s] = sec_rows[-1] if sec_rows else None
            else:                   # None: the section never started (the suite was stopped first)
                res[s] = sec_rows if sec_rows or s in res["section_runs"] else None
        cache = {}
        for s in self.sections:
            last = {}
            for r in rows:
                if r["section"] == s and r.get("cache"):
                    last[r.get("child")] = r["cache"]
            tot = {k: sum(c.get(k, 0) for c in last.values()) for k in ("lookups", "hits", "written")}
            tot["misses"] = tot["lookups"] - tot["hits"]
            tot["children_reporting"] = len(last)
            if s in res["section_runs"]:
                tot["entries_added"] = res["section_runs"][s].get("cache_entries_added")
            cache[s] = tot
        res["cache"] = cache
        res["wall_seconds"] = time.time() - self.start
        if self.interrupted:
            res["interrupted"] = self.interrupted
        return res

    def save(self) -> dict:
        res = self.build()
        with open(self.stem + ".json", "w") as f:
            json.dump(res, f, indent=2)
        with open(self.stem + ".md", "w") as f:
            f.write(to_markdown(res))
        return res

    def run(self) -> dict:
        log(f"[suite] sections {self.sections}, budgets {self.budgets} (s); rows -> {self.rows_path}; "
            f"compilation cache {self.args.cache_dir or 'off'}")
        carry = 0.0
        try:
            for section in self.sections:
                t0 = time.time()
                budget = self.budgets[section] + carry
                deadline = t0 + budget
                log(f"[suite] {section}: budget {self.budgets[section]:.0f} s"
                    + (f" + {carry:.0f} s the sections before left" if carry >= 1 else "")
                    + f"; hard deadline in {budget:.0f} s")
                entries = self.cache_entries()
                try:
                    getattr(self, f"section_{section}")(deadline, budget)
                finally:
                    wall = time.time() - t0
                    after = self.cache_entries()
                    append_row(self.rows_path, {
                        "section": section, "kind": "section", "budget_s": self.budgets[section],
                        "available_s": budget, "wall_s": wall,
                        "cache_entries_added": None if entries is None else after - entries,
                        "ended": "stopped with the suite" if self.interrupted else
                                 "at its deadline" if wall >= budget else "done"})
                    log(f"[suite] {section}: {wall:.0f} s of {budget:.0f} s")
                    self.save()
                if self.interrupted:
                    raise KeyboardInterrupt(self.interrupted)
                carry = max(deadline - time.time(), 0.0)
            if not any(r.get("kind") == "start" for r in read_rows(self.rows_path)):
                self.probe()
        except KeyboardInterrupt as e:
            self.interrupted = self.interrupted or str(e) or "interrupt"
            log(f"[suite] stopped ({self.interrupted}); the report holds what was measured")
        res = self.save()
        shutil.rmtree(self.tmp, ignore_errors=True)
        print(to_markdown(res), flush=True)
        return res

    def probe(self):
        """The device and versions for the report when no section child got that far (an e2e-only run)."""
        spec = self.child_spec("probe", "probe", time.time() + 120)
        proc = self.launch([os.path.abspath(__file__), "--_child=" + json.dumps(spec)], "device probe")
        self.wait(proc, spec["deadline"], "device probe")


# ------------------------------------------------------------------------------------- markdown
def _f(v, fmt="{:.1f}"):
    return "-" if v is None else fmt.format(v)


def _why(r) -> str:
    """The reason a row has no figures: its killed / error / skipped text."""
    if r.get("killed"):
        return r["killed"]                  # "killed at the section deadline ... while ..."
    if r.get("error"):
        return f"error: {r['error']}"
    return f"skipped: {r['skipped']}" if r.get("skipped") else ""


def to_markdown(res) -> str:
    m, v = res.get("machine"), res["versions"]
    device = (f"{m['device']} ({m['backend']}, {m['device_count']} device(s)"
              + (f", {res['device_memory_gib']} GiB" if res.get("device_memory_gib") else "")
              + f"), {m['cpu_count']} CPU cores; Python {m['python']}" if m else
              "not reported (no section's child got as far as JAX)")
    budget_total = sum(res["budgets_s"][s] for s in res["sections_run"])
    lines = [f"# Device suite ({res['date']}{', CPU mode' if res['cpu_mode'] else ''})", "",
             f"Device: {device}; " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
             f"Command: `{res['command']}` (suite wall time {_f(res.get('wall_seconds'), '{:.0f}')} s of "
             f"{budget_total:.0f} s of section budgets)."
             + (f" **Stopped early ({res['interrupted']}).**" if res.get("interrupted") else ""), ""]
    runs, cache = res.get("section_runs", {}), res.get("cache", {})
    lines += ["| section | budget s | available s | wall s | ended | XLA cache lookups / hits / misses / written |",
              "|---|---|---|---|---|---|"]
    for s in res["sections_run"]:
        r, c = runs.get(s, {}), cache.get(s, {})
        cache_cell = (f"{c['lookups']} / {c['hits']} / {c['misses']} / {c['written']}" if c.get("children_reporting")
                      else "not reported")
        if c.get("entries_added") is not None:
            cache_cell += f" ({c['entries_added']} new entries)"
        lines.append(f"| {s} | {res['budgets_s'][s]:.0f} | {_f(r.get('available_s'), '{:.0f}')} | "
                     f"{_f(r.get('wall_s'), '{:.0f}')} | {r.get('ended', 'not run')} | {cache_cell} |")
    lines += ["", f"Persistent compilation cache: {res['cache_dir'] or 'off'}; a hit loads a compiled program "
              "instead of compiling it (misses = lookups - hits; written: misses that compiled for at least "
              "the cache's minimum time).", ""]
    if res.get("env") is not None:
        env = res["env"]
        lines += [f"## Env throughput (MJX: one compiled `lax.scan` of {res['scan_steps']} control steps per call, "
                  "state donated)", "",
                  "| task | impl | batch (vmapped sub-batch) | control steps/s | physics steps/s | "
                  "ms per control step (whole batch) | "
                  "compile reset s | compile scan s | contact slots per env | active contacts per env: peak (mean) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in env:
            head = f"| {r['task']} | {r.get('impl', 'jax')} | {r['batch']}"
            if "control_steps_per_s" in r:
                sub = f" ({r['vmap_batch']})" if r["vmap_batch"] != r["batch"] else ""
                reset = (_f(r["compile_reset_s"]) if r.get("compile_reset_s") is not None
                         else f"- (batch {r.get('reset_from_batch')}'s states)")
                peak, mean = r["peak_active_contacts_per_env"], r["mean_active_contacts_per_env"]
                contacts = (f"{peak:.1f} ({mean:.1f}), nacon / batch" if r.get("impl") == "warp"
                            else f"{peak:.0f} ({mean:.1f})")
                lines.append(f"{head}{sub} | {r['control_steps_per_s']:,.0f} | {r['physics_steps_per_s']:,.0f} | "
                             f"{r['ms_per_control_step']:.2f} | {reset} | {r['compile_scan_s']:.1f} | "
                             f"{r['contact_slots_per_env']} | {contacts} |")
            else:
                lines.append(f"{head} | {_why(r)} | | | | | | |")
        lines += ["", "Median of the timed calls after a warm-up call; actions: `env_throughput.benchmark_actions` "
                  "(a moving arm). Active contacts: slots with dist < includemargin (the ones MJX makes "
                  "constraint rows for) after each control step; peak: max over envs and timed steps, mean: over "
                  "both. MuJoCo Warp (impl warp) shares one contact buffer among the envs of a call, so its "
                  "figures are nacon / batch, a mean over envs (peak: its max over the timed steps).", ""]
    if res.get("update") is not None:
        lines += ["## OGPO update step", "",
                  "| scale | matmul precision | actor MLP | critics | K | states x chains | critic batch | actor ms | "
                  "critic ms | fused update ms | compile s (fused) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in res["update"]:
            if "update" not in r:
                lines.append(f"| {r['scale']} | {r['precision']} | {_why(r)} | | | | | | | | |")
                continue
            lines.append(
                f"| {r['scale']} | {r['precision']} | {len(r['actor_hidden'])}x{r['actor_hidden'][0]} | "
                f"{r['num_critics']} x {len(r['critic_hidden'])}x{r['critic_hidden'][0]} | {r['flow_steps']} | "
                f"{r['states']} x {r['chains_per_state']} | {r['critic_batch']} | {r['actor']['ms_median']:.2f} | "
                f"{r['critic']['ms_median']:.2f} | {r['update']['ms_median']:.2f} | {r['update']['compile_s']:.1f} |")
        lines.append("")
    if "e2e" in res["sections_run"]:
        lines += e2e_markdown(res.get("e2e"))
    return "\n".join(lines) + "\n"


def e2e_markdown(e) -> list:
    if not e:
        return ["## End to end", "", "Not run.", ""]
    s = e.get("summary", {})
    lines = [f"## End to end: `{e['config']}`", "",
             f"`{e['command']}` (train.py's time budget {e['time_budget_s']:.0f} s of the section's "
             f"{e['available_s']:.0f} s; exit code {e.get('exit_code')}).", ""]
    if e.get("killed") or e.get("error"):
        lines += [f"{_why(e)}. The figures below are what the run directory held.", ""]
    ft = e.get("finetune", {})
    lines += ["| stage | wall s | result |", "|---|---|---|"]
    if "demos" in e:
        d = e["demos"]
        lines.append(f"| scripted demos | {d['seconds']:.1f} | expert success {d['expert_success']:.3f} |")
    if "bc" in e:
        b = e["bc"]
        lines.append(f"| clipped BC ({b['bc_steps']} steps) | {_f(b['bc_seconds'])} | "
                     f"ODE {_f(b['bc_success_ode'], '{:.3f}')}, "
                     f"SDE {_f(b['bc_success_sde'], '{:.3f}')} ({e.get('eval_episodes', '?')} episodes) |")
    if ft or s:
        final = (f"final ODE {s['final_success_ode']:.3f}, SDE {s['final_success_sde']:.3f}" if "final_success_ode" in s
                 else "no final evaluation")
        env_steps, grad_steps = ft.get("env_steps", s.get("env_steps", 0)), ft.get("grad_steps") or 0
        lines.append(f"| OGPO finetune ({env_steps:,} env steps, {grad_steps:,} updates"
                     f"{', cut by the time budget' if s.get('stopped_at_budget') else ''}) | "
                     f"{_f(s.get('finetune_seconds', ft.get('wall_seconds')))} | {final} |")
    lines.append(f"| whole command | {_f(e.get('wall_seconds'))} | |")
    lines.append("")
    if ft:
        lines += [f"Finetune: {_f(ft['median_env_steps_per_s'], '{:,.0f}')} env steps/s and "
                  f"{_f(ft['median_updates_per_s'], '{:,.1f}')} updates/s (medians over log intervals, updates "
                  f"included, evaluation excluded); {_f(ft['grad_steps_per_env_step'], '{:.3f}')} grad steps per "
                  f"env step; "
                  f"first interval {_f(ft['first_interval_s'])} s after its compile.", ""]
    if e.get("compiles") or e.get("compile_in_progress"):
        lines += ["| compiled program | s |", "|---|---|"]
        lines += [f"| {c['what']} | {c['seconds']:.1f} |" for c in e.get("compiles", [])]
        if e.get("compile_in_progress"):
            lines.append(f"| {e['compile_in_progress']} | still compiling when the run ended |")
        lines += [f"| total | {sum(c['seconds'] for c in e.get('compiles', [])):.1f} |", ""]
    if e.get("curve"):
        keys = [k for k in e["curve"][0] if k not in ("env_steps", "wall_seconds")]
        lines += ["| env steps | finetune wall s | " + " | ".join(keys) + " |", "|---" * (2 + len(keys)) + "|"]
        for p in e["curve"]:
            lines.append(f"| {p['env_steps']:,} | {_f(p.get('wall_seconds'), '{:.0f}')} | "
                         + " | ".join(_f(p.get(k), '{:.3f}') for k in keys) + " |")
        lines.append("")
    return lines


# ------------------------------------------------------------------------------------------ main
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="CPU mode: small batches and update scale, toy pipeline")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    for s in SECTIONS:
        parser.add_argument(f"--{s}_s", type=float, default=None,
                            help=f"seconds the {s} section may take, compiles included (default {BUDGETS[s]:.0f}; "
                                 f"--cpu {CPU_BUDGETS[s]:.0f})")
    parser.add_argument("--budget_s", type=float, default=None,
                        help="the whole suite's seconds, shared among the chosen sections in proportion to their "
                             "default budgets (a section budget given explicitly keeps its value)")
    parser.add_argument("--batches", default="", help=f"env batches, smallest first (default {GPU_BATCHES}; "
                                                      f"--cpu {CPU_BATCHES})")
    parser.add_argument("--env_tasks", default="", help="MJX tasks of the env section (default can,square,two_nuts; "
                                                        "--cpu can)")
    parser.add_argument("--impls", default="jax", help="MJX backends of the env section, comma-separated: jax, warp")
    parser.add_argument("--scan_steps", type=int, default=25, help="control steps per compiled scan call (env)")
    parser.add_argument("--env_repeats", type=int, default=3, help="timed scan calls per batch (env)")
    parser.add_argument("--repeats", type=int, default=0, help="timed calls per update step (default 20; --cpu 3)")
    parser.add_argument("--e2e_reserve_s", type=float, default=None,
                        help="seconds of the e2e section kept after train.py's --time_budget_s for the final "
                             f"checkpoint and evaluation (default {E2E_RESERVE_S['gpu']:.0f}; --cpu "
                             f"{E2E_RESERVE_S['cpu']:.0f})")
    parser.add_argument("--workdir", default="", help="run directory of the e2e section (default: a new temp dir; "
                                                      "an existing run there resumes)")
    parser.add_argument("--cache_dir", default=None,
                        help="persistent XLA compilation cache of every child ('' turns it off; default "
                             "$JAX_COMPILATION_CACHE_DIR, else train.py's ~/.cache/ogpo-jax/xla)")
    parser.add_argument("--cache_min_compile_s", type=float,
                        default=float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", 1.0)),
                        help="programs that compile faster than this are not written to the cache")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--tag", default="", help="suffix of the result files (e.g. 'h200')")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child is not None:
        return args, None
    sections = [s for s in args.sections.split(",") if s]
    bad = [s for s in sections if s not in SECTIONS]
    if not sections or bad:
        parser.error(f"--sections={args.sections!r}: unknown {bad}; choose from {list(SECTIONS)}")
    sections = [s for s in SECTIONS if s in sections]        # always in the suite's order
    defaults = CPU_BUDGETS if args.cpu else BUDGETS
    for name in [f"{s}_s" for s in SECTIONS] + ["budget_s", "e2e_reserve_s"]:
        value = getattr(args, name)
        if value is not None and not value > 0 and not (name == "e2e_reserve_s" and value == 0):
            parser.error(f"--{name}={value}: must be > 0" + (" (or 0)" if name == "e2e_reserve_s" else ""))
    budgets = {s: getattr(args, f"{s}_s") for s in SECTIONS}
    if args.budget_s is not None:
        explicit = sum(budgets[s] for s in sections if budgets[s] is not None)
        shared = [s for s in sections if budgets[s] is None]
        if shared and args.budget_s <= explicit:
            parser.error(f"--budget_s={args.budget_s:g}: the explicit section budgets already take {explicit:g} s")
        weight = sum(defaults[s] for s in shared)
        for s in shared:
            budgets[s] = (args.budget_s - explicit) * defaults[s] / weight
    budgets = {s: budgets[s] if budgets[s] is not None else defaults[s] for s in SECTIONS}
    if args.e2e_reserve_s is None:
        args.e2e_reserve_s = E2E_RESERVE_S["cpu" if args.cpu else "gpu"]
    tasks = [t for t in (args.env_tasks or ("can" if args.cpu else ",".join(MJX_TASKS))).split(",") if t]
    if not tasks or any(t not in MJX_TASKS for t in tasks):
        parser.error(f"--env_tasks={args.env_tasks!r}: must name tasks of {list(MJX_TASKS)}")
    impls = [i for i in args.impls.split(",") if i]
    if not impls or any(i not in IMPLS for i in impls):
        parser.error(f"--impls={args.impls!r}: must name MJX backends of {list(IMPLS)}")
    try:
        batches = [int(b) for b in (args.batches or (CPU_BATCHES if args.cpu else GPU_BATCHES)).split(",") if b]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        parser.error(f"--batches={args.batches!r}: must be comma-separated positive integers")
    batches = sorted(set(batches))
    for name in ("scan_steps", "env_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}={getattr(args, name)}: must be >= 1")
    if args.repeats < 0:
        parser.error(f"--repeats={args.repeats}: must be >= 1 (0: the default)")
    args.repeats = args.repeats or (3 if args.cpu else 20)
    if args.cache_min_compile_s < 0:
        parser.error(f"--cache_min_compile_s={args.cache_min_compile_s}: must be >= 0")
    sys.path[:0] = [ROOT]
    if "env" in sections:
        if "warp" in impls and "XLA_PYTHON_CLIENT_PREALLOCATE" not in os.environ:
            # check_impl asks JAX for its backend: without preallocation this process leaves the
            # device's memory to the children (their environment does not get the setting)
            os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
            args._no_prealloc = True
        from ogpo_jax.envs.mjx.arm import check_impl
        for impl in impls:
            try:
                check_impl(impl)
            except (ValueError, ImportError) as e:
                parser.error(f"--impls: {e}")
    if args.cache_dir is None:
        env_dir = os.environ.get("JAX_COMPILATION_CACHE_DIR")
        if env_dir is not None:
            args.cache_dir = env_dir.strip()
        else:
            from ogpo_jax.training.compile_cache import default_dir
            args.cache_dir = default_dir()
    if args.cache_dir:
        args.cache_dir = os.path.abspath(os.path.expanduser(args.cache_dir))
        try:
            os.makedirs(args.cache_dir, exist_ok=True)
        except OSError as e:
            parser.error(f"--cache_dir={args.cache_dir!r}: cannot be created ({e})")
    return args, (sections, budgets, tasks, impls, batches)


def main(argv=None):
    args, plan = parse_args(argv)
    if args._child is not None:
        child_main(json.loads(args._child))
        return None
    sections, budgets, tasks, impls, batches = plan
    suite = Suite(args, sections, budgets, tasks, impls, batches, argv)
    # SIGTERM (an outer timeout) stops the running child and writes what was measured
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt("SIGTERM")))
    return suite.run()


if __name__ == "__main__":
    main()
