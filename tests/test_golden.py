"""Pinned numbers of short toy runs through train.py's pipeline and compare.py's seeds.

A change to the driver, the loop, the replay or an algorithm's code that is meant to leave results
alone must leave these runs' summaries, logged metrics (timings aside) and comparison curves
exactly as recorded. A change that is meant to change results regenerates them, and its commit
says why:

    OGPO_JAX_WRITE_GOLDEN=1 python -m pytest -q tests/test_golden.py

The numbers hold for the jax / jaxlib / numpy versions and the CPU architecture they were
recorded with; elsewhere the tests skip. Within those, XLA's CPU code generation follows the host's
instruction set, so two x86-64 CPU generations round the last bits of a float32 differently: floats
match to a relative 1e-4 (the rounding drift of these short runs is under 1e-5), while integers,
strings, keys and list lengths match exactly. A change to an algorithm moves the logged losses far
more than that.

Same-platform by design: the pinned numbers are one machine's run, not a learning bar. The runs are
kept short (960 env steps) so that the rounding differences between CPU generations stay far below
the tolerance. The success rates (k of 32 episodes) still match exactly, and one flipped episode
changes every later rollout, so a CPU whose rounding flips one fails here although nothing is
wrong; the CPUs CI has run on so far all match. Should a new CI machine kind not, the
numbers are recorded again on it (command above) and the commit says so.
"""
import json
import os
import platform

import jax
import jaxlib
import numpy as np
import pytest

from configs import toy
from ogpo_jax.training import compare, pipeline

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "golden_toy.json")
WRITE = os.environ.get("OGPO_JAX_WRITE_GOLDEN") == "1"
RTOL, ATOL = 1e-4, 1e-7
# timings, and echoes of the config (which gains fields without changing results)
NOT_PINNED = ("wall_seconds", "cpu_seconds", "env_steps_per_s", "updates_per_s", "compile_s", "compile_and_first_interval_s",
          "demos_seconds", "bc_seconds", "finetune_seconds", "seconds", "compiles", "bc_final_eval_seconds",
          "compiled_programs", "config", "algo", "device")


def _platform() -> dict:
    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "numpy": np.__version__,
            "machine": platform.machine()}


def _config():
    """Small networks, few env steps; the success buffer, the critic warm-up and both samplers'
    evaluations all take part."""
    c = toy.get_config("quick")
    c.log.progress = False
    c.log.tensorboard = False
    a = c.algo
    a.actor_hidden_dims, a.critic_hidden_dims, a.num_critics, a.flow_steps = (32, 32), (32, 32), 3, 3
    a.batch_size = a.ppo_batch_size = a.success_batch_size = 16
    a.group_size = 4
    a.critic_warmup_updates = 20
    c.demos.num_demos, c.bc.max_steps, c.bc.eval_every, c.bc.eval_episodes = 32, 600, 300, 32
    t = c.train
    t.num_envs, t.start_training, t.log_every_iterations, t.updates_per_iteration = 8, 200, 5, 2
    t.replay_capacity, t.success_capacity, t.eval_episodes = 4096, 1024, 32
    t.total_env_steps, t.eval_every_env_steps, t.checkpoint_every_env_steps = 960, 480, 100_000
    return c


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in NOT_PINNED}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _mismatch(got, want, path="") -> str | None:
    """The path and values of the first difference beyond float rounding, or None."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            extra = sorted(set(got) ^ set(want)) if isinstance(got, dict) else type(got).__name__
            return f"{path or '/'}: keys differ ({extra})"
        for k in sorted(want):
            found = _mismatch(got[k], want[k], f"{path}/{k}")
            if found:
                return found
        return None
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return f"{path}: list of {len(want)} recorded, got {got if not isinstance(got, list) else len(got)}"
        for i, (g, w) in enumerate(zip(got, want)):
            found = _mismatch(g, w, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(want, float) or isinstance(got, float):
        ok = (isinstance(got, (int, float)) and isinstance(want, (int, float))
              and (got == want or abs(got - want) <= ATOL + RTOL * abs(want)))
        return None if ok else f"{path}: recorded {want!r}, got {got!r}"
    return None if got == want else f"{path}: recorded {want!r}, got {got!r}"


def _check(name: str, value):
    """Compare `value` with the recorded golden entry `name` (or record it)."""
    golden = json.load(open(GOLDEN)) if os.path.exists(GOLDEN) else {}
    if WRITE:
        golden["platform"] = _platform()
        golden[name] = value
        os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
        with open(GOLDEN, "w", encoding="utf-8") as f:
            json.dump(golden, f, indent=1, sort_keys=True)
        pytest.skip(f"recorded {name} in {GOLDEN}")
    if name not in golden:
        pytest.fail(f"{GOLDEN} has no entry {name!r}; record it with OGPO_JAX_WRITE_GOLDEN=1")
    if golden["platform"] != _platform():
        pytest.skip(f"golden numbers recorded on {golden['platform']}, this is {_platform()}")
    found = _mismatch(value, _strip(golden[name]))
    assert found is None, f"{name} run differs from {GOLDEN}: {found}"


def test_pipeline_run_is_unchanged(tmp_path):
    workdir = str(tmp_path / "run")
    summary = pipeline.run(_config(), workdir, log=lambda *_: None)
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    assert summary["env_steps"] >= 960 and summary["grad_steps"] > 20
    _check("pipeline", _strip({"summary": json.loads(json.dumps(summary)), "metrics": records}))


def test_compare_seeds_are_unchanged(tmp_path):
    c = _config()
    prep = pipeline.prepare(c, str(tmp_path / "base"), log=lambda *_: None)
    res = compare.run_seeds(prep.spec, prep.bc_params, [0, 1], log=lambda *_: None)
    assert res["grad_steps"] > 20
    _check("compare", _strip(json.loads(json.dumps(res))))


def test_golden_file_covers_both_runs():
    """The recorded file exists in the repository (a fresh clone compares, never records)."""
    golden = json.load(open(GOLDEN))
    assert {"platform", "pipeline", "compare"} <= set(golden)
    assert golden["pipeline"]["metrics"] and golden["compare"]["curve"]["success_ode"]


def test_comparison_admits_rounding_and_nothing_more():
    want = {"loss": 0.5, "steps": 8, "curve": [0.25, 0.5], "name": "ogpo"}
    assert _mismatch({"loss": 0.5 * (1 + 3e-6), "steps": 8, "curve": [0.25, 0.5], "name": "ogpo"}, want) is None
    assert "/loss" in _mismatch({**want, "loss": 0.5 * (1 + 1e-3)}, want)
    assert "/steps" in _mismatch({**want, "steps": 9}, want)
    assert "/curve" in _mismatch({**want, "curve": [0.25]}, want)
    assert "keys differ" in _mismatch({**want, "extra": 1.0}, want)
    assert "/name" in _mismatch({**want, "name": "dppo"}, want)
