"""Learning-curve PNG and the rendering skip path (no OpenGL on CI machines)."""
import json
import os

from ogpo_jax.training.plots import plot_run


def test_plot_run_draws_eval_rollout_and_bc(tmp_path):
    assert plot_run(str(tmp_path)) is None                 # nothing logged yet: no file, no error
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for i in range(1, 6):
            rec = {"env_steps": 1000 * i, "rollout/success": 0.1 * i, "critic/td_error": 1.0 / i}
            if i % 2 == 0:
                rec.update({"eval/success_ode": 0.15 * i, "eval/success_sde": 0.12 * i})
            f.write(json.dumps(rec) + "\n")
    os.makedirs(tmp_path / "bc")
    with open(tmp_path / "bc" / "bc.json", "w") as f:
        json.dump({"bc_success_ode": 0.3, "bc_success_sde": 0.4}, f)
    path = plot_run(str(tmp_path))
    assert path == str(tmp_path / "learning_curve.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not any(p.endswith(".tmp.png") for p in os.listdir(tmp_path))


def test_render_skips_cleanly_or_writes_a_gif(tmp_path):
    import mujoco

    from ogpo_jax.envs.mjx import render

    model = mujoco.MjModel.from_xml_string(
        '<mujoco><worldbody><light pos="0 0 1"/><body><freejoint/><geom type="box" size=".1 .1 .1"/></body>'
        "</worldbody></mujoco>")
    ok, why = render.gl_available()
    if not ok:                                   # CI: no GL; the message must say what to set
        messages = []

        assert render.render_episodes(None, None, None, None, str(tmp_path / "x.gif"), 1, 4, 8,
                                      log=messages.append) is None
        assert "MUJOCO_GL" in messages[0] and why in messages[0]
        assert not (tmp_path / "x.gif").exists()
    else:                                        # a machine with GL: frames really render
        data = mujoco.MjData(model)
        qpos = [data.qpos.copy() for _ in range(3)]
        frames = render.render_frames(model, qpos, camera=-1, width=48, height=32)
        assert len(frames) == 3 and frames[0].shape == (32, 48, 3) and frames[0].std() > 0
        render.write_gif(frames, str(tmp_path / "x.gif"))
        assert (tmp_path / "x.gif").read_bytes()[:3] == b"GIF"
