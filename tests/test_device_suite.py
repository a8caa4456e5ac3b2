"""The device suite's CPU mode produces every figure its GPU run reports."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.heavy
def test_cpu_mode_produces_every_figure(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        # a generous budget: the CPU mode finishes its small work in ~3 minutes, but on a loaded
        # machine the default 480 s, shared out by section, skipped the update section's rows
        [sys.executable, os.path.join(ROOT, "benchmarks", "device_suite.py"), "--cpu", f"--out={out}",
         f"--workdir={tmp_path / 'e2e'}", "--tag=test", "--budget_s=1800"],
        capture_output=True, text=True, timeout=2400, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.load(open(out / "device_suite_test.json"))
    md = open(out / "device_suite_test.md").read()
    for key in ("jax", "jaxlib", "mujoco", "mujoco-mjx"):
        assert key in res["versions"] and res["versions"][key] in md
    assert res["machine"]["device"] and res["command"].startswith("python benchmarks/device_suite.py")

    (env_row,) = res["env"]
    assert env_row["task"] == "can" and env_row["batch"] == 4
    assert env_row["control_steps_per_s"] > 0
    assert env_row["physics_steps_per_s"] == pytest.approx(10 * env_row["control_steps_per_s"])
    assert env_row["compile_reset_s"] > 0 and env_row["compile_step_s"] > 0

    precisions = {r["precision"] for r in res["update"]}
    assert precisions == {"highest", "default"}
    for r in res["update"]:
        for part in ("actor", "critic", "update"):
            assert r[part]["ms_median"] > 0 and r[part]["compile_s"] > 0

    e = res["e2e"]
    assert e["demos"]["seconds"] > 0 and 0 <= e["demos"]["expert_success"] <= 1
    assert e["bc"]["bc_steps"] > 0 and e["bc"]["bc_seconds"] > 0
    ft = e["finetune"]
    assert ft["env_steps"] >= 2_000 and ft["grad_steps"] > 0
    assert ft["median_env_steps_per_s"] > 0 and ft["median_updates_per_s"] > 0
    assert ft["compile_s"] > 0
    whats = [c["what"] for c in e["compiles"]]
    assert sum(w.startswith("training interval") for w in whats) == 1
    assert any(w.startswith("demo rollout") for w in whats) and any(w.startswith("BC training block") for w in whats)
    assert len(e["curve"]) >= 2 and all("ode" in p and "sde" in p for p in e["curve"])
    assert "final_success_ode" in e["summary"]
    for heading in ("Env throughput (MJX", "OGPO update step", "End to end"):
        assert heading in md
