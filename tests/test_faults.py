"""Seeded fault injection: a toy run SIGKILLed at random moments, its newest checkpoint altered at
a random byte, a disk that fills during a checkpoint write. Whatever breaks, a rerun of the same
command ends bit-identical to a run nothing happened to, and nothing written is deleted."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from ogpo_jax.training import rundir
from test_resume import _final_state, _records, _train_cmd
from test_resume import prepared  # noqa: F401  (the demos + BC actor fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 20261207           # the fault schedule: kill moments, which checkpoint byte to flip
TOTAL = 2400              # env steps of the toy run (8 checkpoints, 4 evaluations)
KILLS = 5


def _cmd(workdir, total):
    # a small replay ring: checkpoints of ~0.3 MB, eight of them and four evaluations over the run
    return _train_cmd(workdir, total, **{"config.log.tensorboard": False, "config.train.replay_capacity": 4096,
                                         "config.train.eval_every_env_steps": 600})


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    return env


def _steps(workdir):
    d = os.path.join(workdir, "finetune", "checkpoints")
    return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []


def _flip_random_byte(step_dir, rng) -> str:
    """Flip one byte of one file of a checkpoint (any file its manifest lists); returns which."""
    with open(os.path.join(step_dir, "ogpo_manifest.json")) as f:
        files = sorted(rel for rel, (size, _) in json.load(f)["files"].items() if size > 0)
    rel = files[rng.integers(len(files))]
    path = os.path.join(step_dir, rel)
    data = bytearray(open(path, "rb").read())
    data[rng.integers(len(data))] ^= 0xFF
    with open(path, "wb") as f:
        f.write(data)
    return rel


def _same_run(a, b):
    s_step, s_leaves = _final_state(None, a)
    r_step, r_leaves = _final_state(None, b)
    assert s_step == r_step
    assert len(s_leaves) == len(r_leaves)
    for x, y in zip(s_leaves, r_leaves):      # params, EMA, optimizers, replay, success ring, envs, keys
        np.testing.assert_array_equal(x, y)
    assert _records(a) == _records(b)          # every logged metric, evaluations included
    sa, sb = (json.load(open(os.path.join(d, "summary.json"))) for d in (a, b))
    for k in ("final_success_ode", "final_success_sde", "env_steps", "grad_steps", "bc_success_ode"):
        assert sa[k] == sb[k], k


def _last_env_step(workdir) -> int:
    records = rundir.read_log(workdir)
    return int(records[-1]["env_steps"]) if records else -1


@pytest.mark.heavy
def test_seeded_kills_and_corrupted_checkpoints_end_bit_identical(tmp_path):
    """SIGKILLs at seeded random moments of a toy run: one during demos / BC / compiles (a random
    time), one in the middle of a checkpoint write, the others at random env steps of the training
    (a random fraction of a second after the run logs past a random step, so inside an interval, an
    evaluation or a checkpoint write); before
    every second restart one byte of the newest checkpoint is flipped. The run that finally
    completes equals an uninterrupted one in its final state arrays and every logged metric."""
    rng = np.random.default_rng(SEED)
    straight, faulted = str(tmp_path / "straight"), str(tmp_path / "faulted")
    t0 = time.time()
    done = subprocess.run(_cmd(straight, TOTAL), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.load(open(os.path.join(straight, "summary.json")))
    before_finetune = (time.time() - t0) - summary["finetune_seconds"]   # interpreter start, demos, BC

    ckdir = os.path.join(faulted, "finetune", "checkpoints")
    kills, corrupted, recovered, moments = 0, [], 0, []
    for attempt in range(KILLS + 1):
        proc = subprocess.Popen(_cmd(faulted, TOTAL), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        if attempt == KILLS:
            out = proc.communicate(timeout=900)[0]
            assert proc.returncode == 0, out[-3000:]
        else:
            if attempt == 0:
                when = float(rng.uniform(0.2, 0.9)) * before_finetune
                moments.append(f"{when:.1f}s")
                t1 = time.time()
                _wait(lambda: time.time() - t1 >= when, proc)
            elif attempt == 2:
                # in the middle of a checkpoint write (orbax's temporary directory exists)
                moments.append("during a checkpoint write")
                _wait(lambda: any("tmp" in d for d in os.listdir(ckdir)) if os.path.isdir(ckdir) else False, proc)
            else:
                last = _steps(faulted)[-1] if _steps(faulted) else 0
                target = int(rng.integers(last + 50, TOTAL - 100))
                delay = float(rng.uniform(0.0, 0.6))
                moments.append(f"step {target} + {delay:.2f}s")
                _wait(lambda: _last_env_step(faulted) >= target, proc)
                time.sleep(delay)
            assert proc.poll() is None, "the run ended before its kill: " + proc.communicate()[0][-3000:]
            proc.send_signal(signal.SIGKILL)
            out = proc.communicate()[0]
            kills += 1
        recovered += out.count("[checkpoint] warning: checkpoint")
        steps = _steps(faulted)
        if attempt % 2 == 1 and attempt < KILLS and steps:
            newest = os.path.join(faulted, "finetune", "checkpoints", str(steps[-1]))
            if os.path.exists(os.path.join(newest, "ogpo_manifest.json")):
                corrupted.append((steps[-1], _flip_random_byte(newest, rng)))
    print(f"faults: {kills} SIGKILLs at {moments}, {len(corrupted)} corrupted checkpoints {corrupted}, "
          f"{recovered} moved aside")
    _same_run(straight, faulted)
    # every altered checkpoint was caught (a flipped byte cannot pass the manifest) and kept aside
    assert len(corrupted) >= 1 and recovered == len(corrupted)
    damaged = os.path.join(faulted, "finetune", "checkpoints.damaged")
    moved = sorted(d for d in os.listdir(damaged) if not d.endswith(".why.txt"))
    assert len(moved) == recovered
    assert not any("tmp" in d for d in os.listdir(ckdir))      # the half-written one was cleaned up
    for step, _ in corrupted:
        assert any(d.startswith(f"{step}.") for d in moved), (step, moved)


def _wait(pred, proc, timeout=600):
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None and not pred():
        time.sleep(0.01)


_FILL_DISK = textwrap.dedent("""
    import os, resource, signal, sys
    from ogpo_jax.training import cli, pipeline
    from tests.test_resume import _tiny
    workdir, limit = sys.argv[1], int(sys.argv[2])
    cfg = _tiny(total_env_steps=600, checkpoint_every_env_steps=300, replay_capacity=60000)
    pipeline.run(cfg, workdir, log=lambda *a: None)
    # from here on no file may grow past `limit` bytes: the next checkpoint write fails with EFBIG
    # part-way, like a full disk (ENOSPC) would, while the small logs still fit
    if limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    cfg.train.total_env_steps = 1200
    cli.main(lambda argv: pipeline.run(cfg, workdir, log=lambda *a: None))([])
""")


@pytest.mark.xdist_group("resume")
def test_a_disk_that_fills_during_a_checkpoint_write_keeps_the_older_ones(tmp_path):
    workdir = str(tmp_path / "run")
    proc = subprocess.run([sys.executable, "-c", _FILL_DISK, workdir, "40000"], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=900)
    before = _steps(workdir)
    # one clear line and exit code 1, no traceback
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert "CheckpointWriteError: writing checkpoint" in lines[0] and "File too large" in lines[0], lines[0]
    assert f"the checkpoints before it ({', '.join(map(str, before))} env steps) are intact" in lines[0]
    # the older checkpoints pass their manifests, and the same command resumes from the newest
    from ogpo_jax.training.checkpoint import Checkpointer
    ckpt = Checkpointer(os.path.join(workdir, "finetune", "checkpoints"))
    assert ckpt.all_steps() == before and all(ckpt.verify(s) is None for s in before)
    ckpt.close()
    resume = subprocess.run([sys.executable, "-c", _FILL_DISK, workdir, "0"],
                            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert resume.returncode == 0, resume.stderr[-3000:]
    assert _steps(workdir)[-1] >= 1200


@pytest.mark.xdist_group("resume")
def test_damaged_demos_and_bc_actor_are_moved_aside_and_made_again(tmp_path, prepared):
    """A truncated demos.hdf5, a bit flip in it that HDF5 reads without complaint, and a damaged
    BC actor: each is moved aside (kept) with a warning and made again, identical to the original."""
    from ogpo_jax.training import pipeline
    from test_resume import _tiny, _workdir
    import jax
    ref = pipeline.prepare(_tiny(), prepared, log=lambda *a: None)
    for damage in ("truncate", "flip"):
        workdir = _workdir(prepared, str(tmp_path / damage))
        path = os.path.join(workdir, "demos.hdf5")
        raw = bytearray(open(path, "rb").read())
        if damage == "truncate":
            raw = raw[:len(raw) // 2]
            # a workdir from before demos.json kept a digest: the reader itself must notice
            stats_path = os.path.join(workdir, "demos.json")
            stats = json.load(open(stats_path))
            stats.pop("sha256")
            json.dump(stats, open(stats_path, "w"))
        else:
            raw[len(raw) - 100] ^= 0x01            # inside the last dataset's values
        open(path, "wb").write(bytes(raw))
        lines = []
        pipeline.prepare(_tiny(), workdir, log=lines.append)
        warning = [x for x in lines if x.startswith("[demos] warning")]
        assert len(warning) == 1 and "collecting the demonstrations again" in warning[0], lines
        assert ("SHA-256" if damage == "flip" else "HDF5") in warning[0], warning[0]
        assert open(path, "rb").read() == open(os.path.join(prepared, "demos.hdf5"), "rb").read()
        kept = os.listdir(os.path.join(workdir, "damaged"))
        assert any(k.startswith("demos.hdf5.") and not k.endswith(".why.txt") for k in kept)

    workdir = _workdir(prepared, str(tmp_path / "bc"))
    actor = os.path.join(workdir, "bc", "actor")
    step_dir = os.path.join(actor, os.listdir(actor)[0])
    _flip_random_byte(step_dir, np.random.default_rng(SEED))
    lines = []
    again = pipeline.prepare(_tiny(), workdir, log=lines.append)
    assert any(x.startswith("[bc] warning: the BC actor is damaged") for x in lines), lines
    assert any(x.startswith("[bc] done") for x in lines)
    for a, b in zip(jax.tree_util.tree_leaves(again.bc_params), jax.tree_util.tree_leaves(ref.bc_params)):
        np.testing.assert_array_equal(a, b)
    assert os.listdir(os.path.join(workdir, "bc", "actor.damaged"))


def test_an_expected_failure_prints_one_line_and_debug_shows_the_traceback(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "experiments", "train.py"), "--config=configs/toy.py:quick",
           f"--workdir={tmp_path / 'run'}", "--config.algo.group_size=1"]
    quiet = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 1
    lines = [x for x in quiet.stderr.splitlines() if x.strip()]
    assert lines == ["[train.py] error: ValueError: algo.group_size must be >= 2 (the baseline is a group mean), "
                     "got 1", "[train.py] (--debug or OGPO_DEBUG=1 shows the traceback)"], quiet.stderr[-2000:]
    assert not os.path.exists(tmp_path / "run")          # nothing written before the config is checked
    loud = subprocess.run(cmd + ["--debug"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert loud.returncode != 0 and "Traceback (most recent call last)" in loud.stderr
    assert "algo.group_size must be >= 2" in loud.stderr


def test_a_bug_is_not_mistaken_for_an_expected_failure():
    from ogpo_jax.training import cli

    def library_error():
        return np.zeros(3).reshape(4)            # a ValueError raised inside numpy, not by our checks

    for fn, expected in ((library_error, False), (lambda: cli.debug() or int("x"), False)):
        with pytest.raises(Exception) as err:
            fn()
        assert cli.expected(err.value) is expected
    try:
        raise OSError(28, "No space left on device")
    except OSError as e:
        assert cli.expected(e) and "free space" in cli.message(e)


_ECHO = textwrap.dedent("""
    import asyncio, sys, time
    import tensorstore as ts
    from ogpo_jax.training import checkpoint
    seen = []
    sys.unraisablehook = lambda u: seen.append(str(u.exc_value))

    def late_echo():
        # what orbax leaves behind after a failed write: a TensorStore future that an event
        # loop awaited, completed after that loop has closed
        promise, future = ts.Promise.new()
        loop = asyncio.new_event_loop()
        async def give_up():
            try:
                await asyncio.wait_for(asyncio.shield(future), 0.01)
            except asyncio.TimeoutError:
                pass
        loop.run_until_complete(give_up())
        loop.close()
        promise.set_result(1)
        time.sleep(0.1)

    class Other:
        def __del__(self):
            raise KeyError("not an echo")

    late_echo()
    print("unfiltered", seen)
    seen.clear()
    checkpoint._filter_closed_loop_echoes()
    checkpoint._filter_closed_loop_echoes()           # idempotent: one wrapper
    late_echo()
    Other()
    print("filtered", seen)
""")


def test_tensorstore_echoes_after_a_failed_write_are_dropped_and_nothing_else():
    """The CI failure of the disk-fill test: TensorStore reports 'Event loop is closed' for each
    write it completes after orbax's loop closed. The filter drops exactly those."""
    env = _env()
    env.pop("OGPO_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", _ECHO], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    assert out[0] == "unfiltered ['Event loop is closed']", out  # the echo is real, and unraisable
    assert out[1] == "filtered [\"'not an echo'\"]", out         # dropped; another error still reported
