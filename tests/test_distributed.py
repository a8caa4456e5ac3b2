"""Data parallel on a device mesh and multi-host, on the CPU (forced host devices, subprocesses).

The device count of a JAX process is fixed at start-up, so the checks run in
tests/distributed_worker.py subprocesses and report JSON back.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from test_pipeline import BAR_EVAL_EPISODES, FULL_BAR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "distributed_worker.py")


def _env():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["PYTHONPATH"] = ROOT
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


_CACHE = {}     # per worker process: pytest may tear a module fixture down between reordered tests


def run_dp(out: str, seed: int = 0) -> dict:
    proc = subprocess.run([sys.executable, WORKER, "dp", out, str(seed)], env=_env(), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.load(open(out))


def dp_curves(seed: int = 0, result: dict | None = None) -> dict:
    """The short training runs on 1 and 4 devices: each one's lowest interval TD error over its first,
    and the largest relative gap between the two TD-error curves (the 4-device run samples other
    minibatches from its 4 replay blocks, so the curves agree in statistics, not exactly)."""
    if result is None:
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            result = run_dp(os.path.join(d, "dp.json"), seed)
    one, four = (np.asarray(result["runs"][n]["td_error"]) for n in ("1", "4"))
    return {"td_drop_1": float(one.min() / one[0]), "td_drop_4": float(four.min() / four[0]),
            "curve_rel_gap": float(np.max(np.abs(four - one) / np.abs(one)))}


# Bars; spread over seeds 0-9: python tests/measure_spread.py distributed_curves
TD_DROP, CURVE_REL_GAP = 0.85, 0.15


@pytest.fixture
def dp_result(tmp_path_factory):
    if "dp" not in _CACHE:
        _CACHE["dp"] = run_dp(str(tmp_path_factory.mktemp("dp") / "dp.json"))
    return _CACHE["dp"]


@pytest.mark.xdist_group("distributed")
def test_one_update_on_4_devices_matches_1_device(dp_result):
    assert dp_result["batch_sharding"] == "P('data',)"
    assert dp_result["update_param_change"] > 1e-3            # the update did something
    assert dp_result["update_max_rel_diff"] < 1e-4             # float summation order only
    for name, (one, four) in dp_result["update_metrics"].items():
        assert four == pytest.approx(one, rel=1e-5), name


@pytest.mark.xdist_group("distributed")
def test_training_on_4_devices_learns_like_1_device(dp_result):
    """Over seeds 0-9 of the worker's keys (tests/measure_spread.py distributed_curves): lowest TD
    error over the first 0.73 +- 0.03 on 1 and on 4 devices (max 0.77, bar 0.85); largest relative
    gap between the two curves 0.040 +- 0.016 (max 0.068, bar 0.15)."""
    runs = dp_result["runs"]
    for n in ("1", "4"):
        r = runs[n]
        assert r["finite"] and r["compiles"] == 1, r           # no recompilation between intervals
        assert r["replay_blocks"] == int(n)
        assert r["replay_sharding"] == ("P()" if n == "1" else "P('data',)")
        assert r["grad_steps"] == runs["1"]["grad_steps"] and r["env_steps"] == runs["1"]["env_steps"]
    m = dp_curves(result=dp_result)
    # the critic fits the TD targets: its error falls from the first interval ...
    assert m["td_drop_1"] < TD_DROP and m["td_drop_4"] < TD_DROP, m
    # ... along the same curve as on one device (other minibatches, same statistics)
    assert m["curve_rel_gap"] < CURVE_REL_GAP, (m, runs["1"]["td_error"], runs["4"]["td_error"])


@pytest.mark.xdist_group("distributed")
def test_two_processes_with_jax_distributed_agree(tmp_path):
    port = _free_port()
    outs = [str(tmp_path / f"p{i}.json") for i in range(2)]
    procs = [subprocess.Popen([sys.executable, WORKER, "multihost", outs[i], str(port), str(i)], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]
    r0, r1 = (json.load(open(o)) for o in outs)
    assert (r0["process"], r1["process"]) == (0, 1)
    assert r0["grad_steps"] == r1["grad_steps"] > 0
    assert r0["local_replay_shards"] == r1["local_replay_shards"] == 2      # each feeds its own devices
    assert r0["checksum"] == r1["checksum"]                                 # identical parameters
    assert np.isfinite(r0["critic_loss"])


@pytest.mark.slow
def test_toy_quick_on_4_devices_lifts_a_weak_bc_policy(tmp_path):
    """The 1-device end-to-end bar of the whole preset (test_pipeline.FULL_BAR) with the run spread
    over 4 CPU devices."""
    env = _env()
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    cmd = [sys.executable, os.path.join(ROOT, "experiments", "train.py"), "--config=configs/toy.py:quick",
           f"--workdir={tmp_path / 'run'}", "--config.distributed.num_devices=4", "--config.log.progress=False",
           f"--config.train.eval_episodes={BAR_EVAL_EPISODES}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    FULL_BAR.check(json.load(open(tmp_path / "run" / "summary.json")))


@pytest.mark.slow
def test_train_py_on_two_processes_end_to_end(tmp_path):
    """experiments/train.py as a 2-host job on localhost (2 CPU devices each): process 0 makes the
    demos and BC actor, both finetune on the 4-device mesh, checkpoint cooperatively, and only
    process 0 writes logs and the summary. ~140 s on 2 cores, hence `slow`; the loop-level
    2-process test above runs in CI."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from test_resume import _train_cmd

    workdir = str(tmp_path / "run")
    port = _free_port()
    env = _env()
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    procs = []
    for pid in range(2):
        cmd = _train_cmd(workdir, 800) + [
            "--config.train.replay_capacity=4096", "--config.distributed.enabled=True",
            "--config.distributed.num_devices=0", f"--config.distributed.coordinator_address=localhost:{port}",
            "--config.distributed.num_processes=2", f"--config.distributed.process_id={pid}"]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    assert "[finetune] 4 device(s) (cpu), 2 process(es)" in outs[0]
    assert "[train] workdir" not in outs[1] and "[finetune]" not in outs[1]     # only process 0 prints
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    assert summary["env_steps"] >= 800 and 0.0 <= summary["final_success_ode"] <= 1.0
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    steps = [r["env_steps"] for r in records]
    assert steps == sorted(set(steps))                  # one writer: no duplicated records
    ckdir = os.path.join(workdir, "finetune", "checkpoints")
    assert str(summary["env_steps"]) in os.listdir(ckdir)
