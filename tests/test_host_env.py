"""Host-simulated environments (`ogpo_jax.envs.host`, the robosuite backend): the worker wire
format, chunk execution / reward / time limit / auto-reset semantics through jitted
`io_callback`s, the evaluator, named errors, robomimic-format datasets, the whole pipeline with a
resume; robosuite itself where an interpreter with it is given (OGPO_ROBOSUITE_PYTHON)."""
import io
import json
import os
import re
import signal
import subprocess
import threading
import time

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import robomimic, toy
from ogpo_jax import envs
from ogpo_jax.data import demos as demo_io
from ogpo_jax.envs import host, host_worker
from ogpo_jax.training import config as config_lib
from ogpo_jax.training.evaluation import make_evaluator


def test_wire_round_trip_keeps_dtypes_and_shapes():
    buf = io.BytesIO()
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([True, False]),
              "c": np.zeros((0, 4), np.int64)}
    host_worker.send(buf, {"cmd": "x", "n": 3}, arrays)
    buf.seek(0)
    header, out = host_worker.recv(buf)
    assert header == {"cmd": "x", "n": 3}
    for k, v in arrays.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape
        np.testing.assert_array_equal(out[k], v)


def _greedy(obs):
    """Straight to the goal of the host_point task (obs = pos, goal - pos)."""
    return jnp.clip(obs[..., 2:4] / 0.05, -1.0, 1.0)


def test_host_point_chunks_rewards_and_auto_reset():
    env, _, length = envs.make("host_point", max_steps=60, num_workers=2)
    assert (env.observation_size, env.action_size, env.obs_keys) == (4, 2, (("state", 4),))
    batch = env.batched(6, 4, auto_reset=True)
    state = jax.jit(batch.reset)(jax.random.PRNGKey(0))
    step = jax.jit(lambda s: batch.step(s, jnp.repeat(_greedy(s.obs)[:, None], 4, axis=1)))
    ended, successes = np.zeros(6, bool), 0
    for _ in range(30):
        prev = state
        state = step(state)
        valid = np.asarray(state.info["valid"])
        rewards = np.asarray(state.info["rewards"])
        done = np.asarray(state.done)
        # valid steps are a prefix; -1 per step, +5 on the successful one, 0 after the episode ended
        n = valid.sum(1)
        assert np.all(valid == (np.arange(4)[None] < n[:, None]))
        for i in range(6):
            expect = [-1.0] * n[i] + [0.0] * (4 - n[i])
            if state.info["success"][i]:
                expect[n[i] - 1] = 5.0
            np.testing.assert_allclose(rewards[i], expect)
        np.testing.assert_allclose(np.asarray(state.reward), rewards.sum(1))
        success = np.asarray(state.info["success"])
        terminal, truncated = np.asarray(state.info["terminal"]), np.asarray(state.info["truncated"])
        np.testing.assert_array_equal(done, success | truncated)
        np.testing.assert_array_equal(terminal, success)
        assert not (success & truncated).any()
        for i in np.flatnonzero(success):
            # the true final observation is at the goal; the next episode starts elsewhere
            assert np.linalg.norm(np.asarray(state.info["final_obs"])[i, 2:4]) < 0.05
            assert not np.allclose(np.asarray(state.obs)[i], np.asarray(state.info["final_obs"])[i])
        successes += success.sum()
        not_done = ~done
        np.testing.assert_allclose(np.asarray(state.info["final_obs"])[not_done], np.asarray(state.obs)[not_done])
        ended |= done
        assert int(state.sim) == int(prev.sim) + 1
    assert ended.all() and successes >= 6


def test_time_limit_truncates_and_evaluation_freezes_finished_envs():
    env, _, length = envs.make("host_point", max_steps=10, num_workers=1)
    batch = env.batched(3, 4, auto_reset=False)
    state = batch.reset(jax.random.PRNGKey(1))
    zeros = jnp.zeros((3, 4, 2))
    s1, s2, s3 = batch.step(state, zeros), None, None
    s2 = batch.step(s1, zeros)
    s3 = batch.step(s2, zeros)            # steps 9-10 end the episode (limit 10), then frozen
    assert np.asarray(s3.info["valid"]).sum(1).tolist() == [2, 2, 2]
    assert np.asarray(s3.done).all() and np.asarray(s3.info["truncated"]).all()
    assert not np.asarray(s3.info["terminal"]).any()
    s4 = batch.step(s3, zeros)
    assert np.asarray(s4.done).all() and not np.asarray(s4.info["valid"]).any()
    assert float(np.asarray(s4.reward).sum()) == 0.0


def test_evaluator_on_a_host_env():
    env, _, length = envs.make("host_point", max_steps=60, num_workers=2)
    evaluate = make_evaluator(env, 4, length, 8)
    good = evaluate(lambda p, obs, k: jnp.repeat(_greedy(obs)[:, None], 4, axis=1), None, jax.random.PRNGKey(0))
    idle = evaluate(lambda p, obs, k: jnp.zeros((obs.shape[0], 4, 2)), None, jax.random.PRNGKey(0))
    assert float(good["success"]) == 1.0 and float(good["length"]) < 60
    assert float(idle["success"]) == 0.0 and float(idle["length"]) == 60.0
    assert float(idle["return"]) == -60.0


def test_worker_errors_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="env.kwargs.python='/no/such/python' does not exist"):
        envs.make("host_point", python="/no/such/python")
    with pytest.raises(host.WorkerError, match="unknown host task kind 'nope'"):
        host.HostEnv("nope", "x", {}, ("state",), 10)
    # an interpreter without robosuite: the worker's ImportError comes back with its message
    probe = subprocess.run([os.sys.executable, "-c", "import robosuite"], capture_output=True)
    if probe.returncode != 0:
        with pytest.raises(host.WorkerError, match="No module named 'robosuite'"):
            envs.make("robosuite", task="can")
    with pytest.raises(ValueError, match="env.kwargs.task='stack' must be one of"):
        envs.make("robosuite", task="stack")


def test_host_envs_run_one_seed_on_one_device():
    c = toy.get_config("quick")
    c.env.name = "host_point"
    c.env.kwargs = {"max_steps": 60}
    c.num_seeds = 2
    with pytest.raises(ValueError, match="num_seeds must be 1 for env.name='host_point'.*got 2"):
        config_lib.validate(c)
    for preset in ("", "quick"):
        config_lib.validate(robomimic.get_config(preset))


def _robomimic_file(path, num_demos=3, length=5, env_name="PickPlaceCan"):
    """A file with robomimic's full low_dim layout (states, next_obs, masks, attrs)."""
    rng = np.random.default_rng(0)
    sizes = {"robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2, "object": 14}
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": env_name, "type": 1,
                                             "env_kwargs": {"robots": ["Panda"], "control_freq": 20}})
        for i in range(num_demos):
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = length
            g.attrs["model_file"] = "<mujoco/>"
            g.create_dataset("states", data=rng.normal(size=(length, 71)))
            g.create_dataset("actions", data=rng.uniform(-1, 1, (length, 7)))
            g.create_dataset("rewards", data=np.r_[np.zeros(length - 1), 1.0])
            g.create_dataset("dones", data=np.r_[np.zeros(length - 1), 1].astype(np.int64))
            for k, n in sizes.items():
                g.create_dataset(f"obs/{k}", data=rng.normal(size=(length, n)))
                g.create_dataset(f"next_obs/{k}", data=rng.normal(size=(length, n)))
        data.attrs["total"] = num_demos * length
        mask = f.create_group("mask")
        mask.create_dataset("train", data=np.array([b"demo_0", b"demo_1"]))
    return sizes


def test_robomimic_layout_reads_in_key_order(tmp_path):
    path = str(tmp_path / "low_dim.hdf5")
    sizes = _robomimic_file(path)
    episodes, env_args = demo_io.read_hdf5(path, host.ROBOMIMIC_OBS_KEYS)
    assert len(episodes) == 3 and env_args["env_name"] == "PickPlaceCan"
    ep = episodes[1]
    assert ep["obs"].shape == (5, sum(sizes.values())) and ep["actions"].shape == (5, 7)
    with h5py.File(path) as f:
        np.testing.assert_allclose(ep["obs"][:, 3:7], f["data/demo_1/obs/robot0_eef_quat"][:])
        np.testing.assert_allclose(ep["obs"][:, 9:], f["data/demo_1/obs/object"][:])
    assert host.env_args_from_file(path)["env_kwargs"]["control_freq"] == 20
    with pytest.raises(ValueError, match="is a 'PickPlaceCan' dataset, env.kwargs.task='square'"):
        envs.make("robosuite", task="square", env_args_from=path)


def _workers(pool_kind):
    """The worker processes of the live host pools whose spec has auto_reset == `pool_kind`."""
    return [w.proc for key, pool in host._POOLS.items() if json.loads(key)[0]["auto_reset"] == pool_kind
            for w in pool.workers]


def _after(pred, action, timeout=600):
    """Run `action()` in a thread once `pred()` holds; returns a dict with when it ran."""
    done = {}

    def watch():
        t0 = time.time()
        while time.time() - t0 < timeout and not pred():
            time.sleep(0.05)
        done["result"] = action()
        done["at"] = time.time()

    threading.Thread(target=watch, daemon=True).start()
    return done


@pytest.mark.heavy
def test_pipeline_on_a_host_env_survives_dead_and_hung_workers(tmp_path):
    """demos (the worker's expert) -> clipped BC -> finetune through the io_callback env step.
    A worker SIGKILLed mid-run stops the run within seconds with a named error and the newest
    checkpoint intact; the rerun resumes from it (fresh episodes), a worker that then hangs
    (SIGSTOP) is killed after `worker_timeout_s` with a named error, and a third run finishes."""
    from ogpo_jax.training import pipeline
    c = toy.get_config("quick")
    c.env.name = "host_point"
    # 1 ms per simulated step: the workers spend most of an interval inside a chunk, so the kill
    # lands mid-chunk
    c.env.kwargs = {"max_steps": 60, "num_workers": 2, "step_sleep_s": 0.001, "worker_timeout_s": 3.0}
    c.demos.num_demos = 48
    c.bc.max_steps = 1000
    c.bc.eval_every = 500
    c.bc.eval_episodes = 16
    c.train.total_env_steps = 6_000
    c.train.start_training = 1_000
    c.train.eval_every_env_steps = 6_000
    c.train.eval_episodes = 16
    c.train.checkpoint_every_env_steps = 2_000
    c.log.progress = False
    c.log.tensorboard = False
    lines = []
    workdir = str(tmp_path / "run")
    ckdir = os.path.join(workdir, "finetune", "checkpoints")
    has_checkpoint = lambda: os.path.isdir(ckdir) and any(d.isdigit() for d in os.listdir(ckdir))  # noqa: E731

    # 1. a worker dies (SIGKILL, like a segfault or the OOM killer) after the first checkpoint
    kill = _after(has_checkpoint, lambda: [p.send_signal(signal.SIGKILL) for p in _workers(True)[1:]])
    with pytest.raises(host.WorkerError, match=r"host worker 1 was killed by signal 9.*newest checkpoint \((\d+) "
                                               r"env steps.*is intact: rerun the same command") as err:
        pipeline.run(c, workdir, log=lines.append)
    assert time.time() - kill["at"] < 15, "the dead worker was not noticed promptly"
    assert json.load(open(os.path.join(workdir, "demos.json")))["expert_success"] >= 0.9
    saved = int(re.search(r"newest checkpoint \((\d+)", str(err.value)).group(1))

    # 2. the rerun resumes from it with fresh workers; one of them then hangs
    lines.clear()
    resumed = lambda: any("resumed from checkpoint" in str(x) for x in lines)  # noqa: E731
    # after the interval compiled: the next env step meets the hung worker
    training = lambda: any(str(x).startswith("[compile] training interval") and str(x).endswith("s")  # noqa: E731
                           for x in lines) and _workers(True)
    hang = _after(training, lambda: [p.send_signal(signal.SIGSTOP) for p in _workers(True)[:1]])
    with pytest.raises(host.WorkerError, match=r"host worker 0 did not answer within 3s.*it was killed"):
        pipeline.run(c, workdir, log=lines.append)
    assert 3 <= time.time() - hang["at"] < 15
    assert any(f"resumed from checkpoint at {saved} env steps" in str(x) for x in lines)
    assert any("start fresh episodes" in str(x) for x in lines)

    # 3. nothing in the way: the run finishes
    lines.clear()
    summary = pipeline.run(c, workdir, log=lines.append)
    assert resumed() and summary["env_steps"] >= 6_000 and summary["grad_steps"] > 0
    assert np.isfinite(summary["final_success_ode"])


ROBOSUITE_PYTHON = os.environ.get("OGPO_ROBOSUITE_PYTHON", "")


@pytest.mark.skipif(not ROBOSUITE_PYTHON, reason="set OGPO_ROBOSUITE_PYTHON to an interpreter with robosuite 1.5")
def test_robosuite_can_expert_and_layout():
    env, expert, length = envs.make("robosuite", task="can", python=ROBOSUITE_PYTHON, num_workers=2)
    assert (env.observation_size, env.action_size, length) == (23, 7, 400)
    out = expert.collect(4, length, jax.random.PRNGKey(0))
    assert out["success"].all(), out["length"]
    evaluate = make_evaluator(env, 4, length, 2)
    idle = evaluate(lambda p, obs, k: jnp.zeros((obs.shape[0], 4, 7)), None, jax.random.PRNGKey(0))
    assert float(idle["success"]) == 0.0 and float(idle["length"]) == 400.0
