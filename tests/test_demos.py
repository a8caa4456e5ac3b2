"""robomimic-format HDF5: exact round trip, real robomimic layout, malformed files rejected by name."""
import json

import h5py
import numpy as np
import pytest

from ogpo_jax.data import demos

CAN_LAYOUT = (("robot0_eef_pos", 3), ("robot0_eef_quat", 4), ("robot0_gripper_qpos", 2), ("object", 14))
CAN_KEYS = tuple(k for k, _ in CAN_LAYOUT)


def _episodes(num=3, seed=0):
    rng = np.random.default_rng(seed)
    eps = []
    for i in range(num):
        t = 5 + 3 * i
        obs = rng.normal(size=(t, 23)).astype(np.float32)
        eps.append({"obs": demos.split_obs(obs, CAN_LAYOUT), "flat": obs,
                    "actions": rng.uniform(-1, 1, (t, 7)).astype(np.float32),
                    "rewards": np.where(np.arange(t) == t - 1, 5.0, -1.0).astype(np.float32),
                    "dones": (np.arange(t) == t - 1)})
    return eps


def test_round_trip_is_exact(tmp_path):
    path = str(tmp_path / "demos.hdf5")
    eps = _episodes()
    demos.write_hdf5(path, eps, {"env_name": "can"})
    back, env_args = demos.read_hdf5(path, CAN_KEYS)
    assert env_args == {"env_name": "can"}
    assert len(back) == len(eps)
    for a, b in zip(eps, back):
        np.testing.assert_array_equal(a["flat"], b["obs"])
        np.testing.assert_array_equal(a["actions"], b["actions"])
        np.testing.assert_array_equal(a["rewards"], b["rewards"])
        np.testing.assert_array_equal(a["dones"], b["dones"])
    with h5py.File(path) as f:                                   # robomimic layout on disk
        assert f["data/demo_1/obs/object"].shape == (8, 14)
        assert f["data"].attrs["total"] == sum(len(e["actions"]) for e in eps)


def test_reads_a_robomimic_low_dim_file(tmp_path):
    """A file written the way robomimic's low_dim Can files are: extra obs keys, next_obs, env_args
    with env_name/type/env_kwargs, mask group. Only the requested keys are read, in order."""
    path = str(tmp_path / "low_dim.hdf5")
    eps = _episodes(2, seed=1)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for i, ep in enumerate(eps):
            g = data.create_group(f"demo_{i}")
            t = len(ep["actions"])
            for key, value in ep["obs"].items():
                g.create_dataset(f"obs/{key}", data=value.astype(np.float64))
                g.create_dataset(f"next_obs/{key}", data=value)
            g.create_dataset("obs/robot0_joint_pos", data=np.zeros((t, 7)))
            g.create_dataset("actions", data=ep["actions"].astype(np.float64))
            g.create_dataset("rewards", data=(ep["rewards"] > 0).astype(np.float64))
            g.create_dataset("dones", data=ep["dones"].astype(np.int64))
            g.create_dataset("states", data=np.zeros((t, 71)))
            g.attrs["num_samples"] = t
        data.attrs["env_args"] = json.dumps({"env_name": "PickPlaceCan", "type": 1, "env_kwargs": {}})
        f.create_group("mask").create_dataset("train", data=np.array([b"demo_0", b"demo_1"]))
    back, env_args = demos.read_hdf5(path, CAN_KEYS)
    assert env_args["env_name"] == "PickPlaceCan"
    np.testing.assert_allclose(back[1]["obs"], eps[1]["flat"], rtol=1e-6)
    assert back[0]["obs"].dtype == np.float32 and back[0]["dones"].dtype == bool


def _write_then_break(tmp_path, breaker):
    path = str(tmp_path / "bad.hdf5")
    demos.write_hdf5(path, _episodes(2), {})
    with h5py.File(path, "a") as f:
        breaker(f)
    return path


@pytest.mark.parametrize("breaker,match", [
    (lambda f: f["data/demo_1"].__delitem__("actions"), r"data/demo_1 is missing 'actions'"),
    (lambda f: f["data/demo_0/obs"].__delitem__("object"), r"data/demo_0/obs is missing key 'object'"),
    (lambda f: (f["data/demo_0"].__delitem__("rewards"),
                f["data/demo_0"].create_dataset("rewards", data=np.zeros(2))), r"data/demo_0/rewards has 2 steps"),
    (lambda f: f["data/demo_1/actions"].__setitem__((0, 3), np.nan), r"data/demo_1/actions contains NaN"),
    (lambda f: f["data/demo_0/obs/robot0_eef_pos"].__setitem__((1, 0), np.inf), r"data/demo_0/obs contains NaN or inf"),
    (lambda f: (f["data/demo_1"].__delitem__("actions"),
                f["data/demo_1"].create_dataset("actions", data=np.zeros((8, 6)))), r"disagree on \(obs_dim, action_dim\)"),
    (lambda f: [f["data"].__delitem__(k) for k in list(f["data"].keys())], r"group 'data' holds no demos"),
])
def test_malformed_files_are_named(tmp_path, breaker, match):
    path = _write_then_break(tmp_path, breaker)
    with pytest.raises(demos.DatasetError, match=match):
        demos.read_hdf5(path, CAN_KEYS)


def test_missing_and_non_hdf5_files(tmp_path):
    with pytest.raises(demos.DatasetError, match="not found"):
        demos.read_hdf5(str(tmp_path / "nope.hdf5"))
    junk = tmp_path / "junk.hdf5"
    junk.write_text("not hdf5")
    with pytest.raises(demos.DatasetError, match="not a readable HDF5 file"):
        demos.read_hdf5(str(junk))


def test_successful_only_keeps_the_demos_that_end_on_a_positive_reward(tmp_path):
    eps = _episodes(4)
    eps[1]["rewards"] = -np.ones_like(eps[1]["rewards"])           # timed out: -1 to the end
    eps[3]["rewards"] = np.zeros_like(eps[3]["rewards"])           # robomimic sparse 0 / 1, never 1
    kept = demos.successful_only(eps)
    assert [len(e["actions"]) for e in kept] == [len(eps[0]["actions"]), len(eps[2]["actions"])]
    with pytest.raises(demos.DatasetError, match="none of the 2 demonstrations succeeded"):
        demos.successful_only([eps[1], eps[3]])


def test_pipeline_bc_on_successful_demos_only(tmp_path):
    """The toy pipeline's demos stage with demos.successful_only: BC sees only the successful
    episodes' windows (the log says how many were left out)."""
    from configs import toy
    from ogpo_jax.training import pipeline
    c = toy.get_config("quick")
    c.demos.num_demos, c.demos.successful_only = 32, True
    c.bc.max_steps, c.bc.eval_every, c.bc.eval_episodes, c.train.eval_episodes = 20, 20, 8, 8
    c.train.total_env_steps = 1
    c.log.progress = c.log.tensorboard = False
    lines = []
    prep = pipeline.prepare(c, str(tmp_path / "run"), log=lines.append)
    with h5py.File(tmp_path / "run" / "demos.hdf5") as f:
        lengths = [len(f[f"data/{k}/rewards"]) for k in f["data"] if float(f[f"data/{k}/rewards"][-1]) > 0]
    succeeded = len(lengths)
    assert 0 < succeeded < 32
    assert any(f"BC on {succeeded} of 32 demonstrations ({32 - succeeded} failed ones left out)" in str(x)
               for x in lines)
    # one BC window per step of the kept episodes
    assert any(str(x).startswith(f"[bc] {sum(lengths)} chunk windows") for x in lines), lines
    assert prep.bc_info["bc_steps"] == 20
