"""Camera observations (`envs.pixels`), the image encoder (`encoders`) and the pixel pipeline:
the observation modes change shapes only where they should, BC's loss reaches the encoder, the
encoder is frozen afterwards, and a pixel run resumes bit for bit (point_gaps drawn from above:
the whole pipeline in seconds; Can's camera observation: tests/test_camera.py)."""
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import toy
from ogpo_jax import encoders, envs
from ogpo_jax.algorithms.config import AlgoConfig
from ogpo_jax.envs import core, pixels
from ogpo_jax.training import bc as bc_lib
from ogpo_jax.training import pipeline, rundir
from ogpo_jax.training.checkpoint import Checkpointer
from ogpo_jax.training.config import validate
from ogpo_jax.training.evaluation import evaluate_policies, make_evaluator

from tests.test_resume import _final_state, _records
from tests.test_resume import _tiny as _tiny_state


def _quiet(*_):
    pass


# ------------------------------------------------------------------------------------ encoder
@pytest.mark.parametrize("kind", ["conv", "vit"])
def test_encode_keeps_proprio_and_bounds_the_features(kind):
    enc = encoders.PixelEncoder(kind, (12, 16, 2), proprio_size=3, features=10)
    params = enc.init(jax.random.PRNGKey(0))
    obs = jax.random.uniform(jax.random.PRNGKey(1), (5, 7, 12 * 16 * 2 + 3))
    feats = enc.encode(params, obs)
    assert feats.shape == (5, 7, 13) and enc.feature_size == 13
    np.testing.assert_array_equal(feats[..., 10:], obs[..., -3:])
    assert np.all(np.abs(feats[..., :10]) <= 1)
    # the features depend on the image
    other = obs.at[..., :5].set(0.0)
    assert not np.allclose(enc.encode(params, other)[..., :10], feats[..., :10])
    with pytest.raises(ValueError, match="observation of size 10"):
        enc.encode(params, obs[..., :10])


@pytest.mark.parametrize("shape", [(8, 8), (7, 5)])
def test_the_im2col_convolution_equals_xla_s(shape):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3) + shape + (4,))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 4, 5))
    bias = jnp.arange(5.0)
    a = encoders.conv3x3_stride2(x, kernel, bias, patches=False)
    b = encoders.conv3x3_stride2(x, kernel, bias, patches=True)
    assert a.shape == b.shape == (2, 3, -(-shape[0] // 2), -(-shape[1] // 2), 5)
    np.testing.assert_allclose(a, b, atol=1e-4)
    enc = encoders.PixelEncoder("conv", shape + (1,), 0, features=6)
    params, obs = enc.init(jax.random.PRNGKey(2)), jax.random.uniform(jax.random.PRNGKey(3), (4, shape[0] * shape[1]))
    np.testing.assert_allclose(enc.encode(params, obs), enc.encode(params, obs, patches=True), atol=1e-5)


def test_encoder_fields_are_checked():
    with pytest.raises(ValueError, match="bc.encoder='mlp'"):
        encoders.PixelEncoder("mlp", (8, 8, 1), 0)
    with pytest.raises(ValueError, match="multiples of 4"):
        encoders.PixelEncoder("vit", (10, 8, 1), 0)
    with pytest.raises(ValueError, match="bc.encoder_features=0"):
        encoders.PixelEncoder("conv", (8, 8, 1), 0, features=0)


def test_random_shift_crops_the_edge_padded_image():
    enc = encoders.PixelEncoder("conv", (6, 5, 1), proprio_size=2)
    obs = jax.random.uniform(jax.random.PRNGKey(0), (64, 6 * 5 + 2))
    same = enc.augment(obs, jax.random.PRNGKey(1), 0)
    np.testing.assert_array_equal(same, obs)
    out = np.asarray(enc.augment(obs, jax.random.PRNGKey(1), 2))
    np.testing.assert_array_equal(out[:, -2:], obs[:, -2:])
    images, shifted = np.asarray(obs[:, :30]).reshape(-1, 6, 5), out[:, :30].reshape(-1, 6, 5)
    moved = 0
    for img, got in zip(images, shifted):
        padded = np.pad(img, 2, mode="edge")
        crops = [padded[i:i + 6, j:j + 5] for i in range(5) for j in range(5)]
        assert any(np.array_equal(got, c) for c in crops)
        moved += not np.array_equal(got, img)
    assert moved > 32             # most of 64 images moved (1 offset in 25 leaves one in place)


def test_bc_trains_the_encoder_with_the_actor():
    cfg = AlgoConfig.from_dict({"name": "ogpo", "actor_hidden_dims": (16, 16), "flow_steps": 2})
    enc = encoders.PixelEncoder("conv", (8, 8, 1), proprio_size=1, features=4)
    n = 32
    data = {"obs": np.random.default_rng(0).uniform(size=(n, 65)).astype(np.float32),
            "actions": np.random.default_rng(1).uniform(-1, 1, size=(n, 2, 3)).astype(np.float32),
            "valid": np.ones((n, 2), bool)}
    block, tx = bc_lib.make_bc_block(cfg, (2, 3), data, 8, 1e-3, 3, encoder=enc, augment_shift=1)
    from ogpo_jax.algorithms.actor import init_actor_params
    params = {"encoder": enc.init(jax.random.PRNGKey(0)),
              "actor": init_actor_params(cfg, jax.random.PRNGKey(1), enc.feature_size, 6)}
    new, _, loss = block(params, tx.init(params), jax.random.PRNGKey(2))
    assert np.isfinite(float(loss))
    for part in ("encoder", "actor"):
        changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                                         params[part], new[part])
        assert all(jax.tree_util.tree_leaves(changed)), part


# ------------------------------------------------------------------------------------ observation modes
def _point(mode, **kw):
    return envs.make("point_gaps", obs=mode, image_width=12, image_height=10, **kw)[0]


def test_point_gaps_pixels_change_the_shapes_only_where_they_should():
    state_env = envs.make("point_gaps")[0]
    assert state_env.observation_size == 3 and not hasattr(state_env, "observe")
    assert _point("pixels").observation_size == 120
    env = _point("pixels+proprio")
    assert env.observation_size == 121 and env.state_observation_size == 3 and env.image_shape == (10, 12, 1)
    benv = core.batch_env(env, 4, 3)
    s0 = jax.jit(benv.reset)(jax.random.PRNGKey(0))
    assert s0.obs.shape == (4, 121) and s0.info["state_obs"].shape == (4, 3)
    chunk = jnp.full((4, 3, 2), 0.7)
    s1 = jax.jit(benv.step)(s0, chunk)
    assert s1.obs.shape == (4, 121) and s1.info["state_obs"].shape == (4, 3)
    for s in (s0, s1):
        image = np.asarray(s.obs[:, :120]).reshape(4, 10, 12)
        state = np.asarray(s.info["state_obs"])
        np.testing.assert_allclose(s.obs[:, 120], state[:, 2])             # proprio: normalized time
        row, col = np.unravel_index(image.reshape(4, -1).argmax(1), (10, 12))
        x = (col + 0.5) / 12 * 2 - 1
        y = 1 - (row + 0.5) / 10 * 2
        assert np.all(np.abs(x - state[:, 0]) <= 1 / 12 + 1e-6) and np.all(np.abs(y - state[:, 1]) <= 1 / 10 + 1e-6)
        assert image.max() <= 1.0 and image.min() >= 0.0
    # the state moved by the chunk (3 steps at 0.7 x 0.1) and the image with it; time advanced 3 steps
    np.testing.assert_allclose(s1.info["state_obs"][:, 2], s0.info["state_obs"][:, 2] + 3 / env.unwrapped.params.max_steps,
                               atol=1e-6)
    assert not np.allclose(s1.obs[:, :120], s0.obs[:, :120])


def test_observation_fields_are_checked():
    with pytest.raises(ValueError, match="env.kwargs.obs='rgb'"):
        envs.make("point_gaps", obs="rgb")
    with pytest.raises(ValueError, match="obs='state'"):
        envs.make("point_gaps", image_width=8)
    with pytest.raises(ValueError, match="no camera"):
        envs.make("point_gaps", obs="pixels", camera_pos=(0, 0, 1))
    with pytest.raises(ValueError, match="not 'countdown'"):
        envs.make("countdown", obs="pixels")
    with pytest.raises(ValueError, match="once per chunk"):
        core.batch_env(_point("pixels"), 2, 3, record_obs=True)
    c = toy.get_config("quick")
    c.env.kwargs.obs = "pixels"
    c.train.replay_windows = "step"
    with pytest.raises(ValueError, match="train.replay_windows"):
        validate(c)


# ------------------------------------------------------------------------------------ the pixel pipeline
def _tiny(**train):
    """test_resume's tiny toy run, seeing point_gaps from above (12x12) with the time beside it."""
    c = _tiny_state(**train)
    c.env.kwargs.obs = "pixels+proprio"
    c.env.kwargs.image_width = c.env.kwargs.image_height = 12
    c.bc.batch_size, c.bc.encoder_features = 32, 16
    return c


def _leaves(path):
    ckpt = Checkpointer(path)
    item = ckpt.manager.restore(ckpt.latest_step())
    ckpt.close()
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(item)]


@pytest.mark.xdist_group("resume")
def test_pixel_run_resumes_bit_for_bit_with_the_encoder_frozen(tmp_path):
    prepared = str(tmp_path / "prepared")
    lines = []
    prep = pipeline.prepare(_tiny(), prepared, log=lines.append)
    assert any("conv encoder on (12, 12, 1) images" in m for m in lines)
    assert prep.spec.task.obs_dim == 16 + 1                      # finetuning reads features + proprio
    assert isinstance(prep.spec.task.env, pixels.EncodedObservation)
    encoder_saved = _leaves(os.path.join(prepared, "bc", "encoder"))
    assert encoder_saved and os.path.exists(os.path.join(prepared, "bc", "bc.json"))

    runs = {}
    for name in ("straight", "split"):
        d = str(tmp_path / name)
        os.makedirs(d)
        for item in ("demos.hdf5", "demos.json", "bc"):
            src = os.path.join(prepared, item)
            (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(d, item))
        runs[name] = d
    pipeline.run(_tiny(total_env_steps=1200), runs["straight"], log=_quiet)
    first = pipeline.run(_tiny(total_env_steps=600), runs["split"], log=_quiet)
    assert first["env_steps"] < 1200
    messages = []
    second = pipeline.run(_tiny(total_env_steps=1200), runs["split"], log=messages.append)
    assert any("[bc] restored the encoder and actor" in m for m in messages)
    assert any("resumed from checkpoint at" in m for m in messages)
    s_step, s_leaves = _final_state(None, runs["straight"])
    r_step, r_leaves = _final_state(None, runs["split"])
    assert s_step == r_step == second["env_steps"]
    for a, b in zip(s_leaves, r_leaves):
        np.testing.assert_array_equal(a, b)
    assert _records(runs["straight"]) == _records(runs["split"])

    # frozen: finetuning left the saved encoder as BC made it, and the replay holds its features
    for d in runs.values():
        for a, b in zip(encoder_saved, _leaves(os.path.join(d, "bc", "encoder"))):
            np.testing.assert_array_equal(a, b)
    widths = {x.shape[-1] for x in s_leaves if x.ndim >= 2}
    assert 17 in widths and 145 not in widths        # observations: 16 features + 1 proprio, never the image

    # reloading for evaluate.py: the env encodes with the saved encoder, the BC scores come back
    config = rundir.load_run_config(runs["split"])
    env, episode_length = rundir.run_env(config, runs["split"])
    assert isinstance(env, pixels.EncodedObservation) and env.observation_size == 17
    params, policies, _ = rundir.restore_policy(config, runs["split"], "bc")
    evaluate = make_evaluator(env, config.env.chunk_horizon, episode_length, config.train.eval_episodes)
    _, _, _, _, k_eval = rundir.stage_keys(config)
    res = evaluate_policies(evaluate, policies, params, k_eval)
    assert float(res["ode"]["success"]) == second["bc_success_ode"]
    shutil.rmtree(os.path.join(runs["split"], "bc", "encoder"))
    with pytest.raises(FileNotFoundError, match="no image encoder"):
        rundir.run_env(config, runs["split"])

    # an encoder whose actor never got saved (BC stopped between the two): BC trains both again
    shutil.rmtree(os.path.join(prepared, "bc", "actor"))
    os.remove(os.path.join(prepared, "bc", "bc.json"))
    lines = []
    again = pipeline.prepare(_tiny(), prepared, log=lines.append)
    assert any("found an image encoder without a finished BC actor" in m for m in lines)
    assert again.bc_info["bc_success_ode"] == prep.bc_info["bc_success_ode"]      # the same BC, trained again


def test_recorded_episodes_act_on_the_image_and_keep_it_for_the_gif():
    from ogpo_jax.envs.mjx import render
    env = _point("pixels+proprio")
    seen = []

    def policy(params, obs, key):
        seen.append(obs.shape)
        return jnp.broadcast_to(jnp.asarray([0.0, 1.0]), (obs.shape[0], 3, 2))

    rec = render.record_episodes(env, policy, None, jax.random.PRNGKey(0), 2, 3, 7)
    assert seen and all(s == (2, 121) for s in seen)               # the policy gets the image + proprio
    assert rec["view"].shape == (8, 2, 10, 12, 1) and rec["obs"].shape == (8, 2, 3)
    # the image the policy saw at each chunk boundary, held until the next one
    for t in (0, 3, 6):
        for i in range(2):
            pos = rec["obs"][t, i, :2]
            row, col = np.unravel_index(rec["view"][t, i, ..., 0].argmax(), (10, 12))
            assert abs((col + 0.5) / 12 * 2 - 1 - pos[0]) <= 1 / 12 + 1e-6
        np.testing.assert_array_equal(rec["view"][t + 1], rec["view"][t]) if t < 6 else None
    panel = render.camera_panel(rec["view"][0, 0], 240)
    assert panel.shape == (240, 12 * 24, 3) and panel.dtype == np.uint8


@pytest.mark.slow
def test_can_pixel_pipeline_runs_end_to_end(tmp_path):
    """configs/can_pixels.py at a tiny scale (16x16 depth, 16 demos, 40-step episodes): demos with
    images, BC with the encoder, finetuning on its features, the summary and the saved encoder."""
    from configs import can_pixels
    c = can_pixels.get_config("quick")
    c.log.progress = c.log.tensorboard = False
    c.env.kwargs.image_width = c.env.kwargs.image_height = 16
    c.env.kwargs.max_steps = 40
    c.demos.num_demos = 16
    c.bc.max_steps, c.bc.eval_every, c.bc.eval_episodes, c.bc.batch_size = 200, 100, 8, 32
    a, t = c.algo, c.train
    a.actor_hidden_dims = a.critic_hidden_dims = (32, 32)
    a.batch_size, a.ppo_batch_size, a.group_size, a.success_batch_size, a.critic_warmup_updates = 16, 4, 4, 16, 0
    t.num_envs, t.eval_episodes, t.total_env_steps, t.start_training = 8, 8, 192, 32
    t.log_every_iterations, t.updates_per_iteration, t.eval_every_env_steps, t.checkpoint_every_env_steps = 2, 2, 96, 96
    summary = pipeline.run(c, str(tmp_path), log=_quiet)
    assert summary["env_steps"] == 192 and np.isfinite(summary["final_success_ode"])
    assert os.path.isdir(os.path.join(tmp_path, "bc", "encoder"))
    env, _ = rundir.run_env(rundir.load_run_config(str(tmp_path)), str(tmp_path))
    assert isinstance(env, pixels.EncodedObservation) and env.observation_size == 64 + 9
