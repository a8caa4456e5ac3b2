"""Render evaluation episodes of an MJX task to a GIF with `mujoco.Renderer`.

The rollout runs in MJX (jitted, every control step recorded); the frames are drawn on the host
from the recorded `qpos` with the task's C `MjModel`. Rendering needs an OpenGL backend
(`MUJOCO_GL=egl` on headless GPU machines, `MUJOCO_GL=osmesa` for software rendering, or a
display); where none exists `gl_available()` says why and callers skip rendering with a message.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ogpo_jax.envs import core


_PROBE = """
import mujoco
m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size=".1"/></worldbody></mujoco>')
r = mujoco.Renderer(m, 16, 16)
d = mujoco.MjData(m)
mujoco.mj_forward(m, d)
r.update_scene(d)
r.render()
r.close()
"""


def gl_available(timeout: float = 60.0) -> tuple[bool, str]:
    """(ok, reason): whether `mujoco.Renderer` works in this environment (MUJOCO_GL etc.).

    Probed in a subprocess: without a usable GL platform some backends abort the whole process
    instead of raising, which must not take a training or evaluation run down with it."""
    import subprocess
    import sys
    try:
        run = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"GL probe timed out after {timeout:.0f}s"
    if run.returncode == 0:
        return True, ""
    lines = [ln for ln in (run.stderr or "").strip().splitlines() if ln.strip()]
    return False, (lines[-1][:200] if lines else f"probe exited with code {run.returncode}")


def camera_of(env):
    """The `envs.pixels.PixelObservation` under `env` (itself, or under its frozen encoder), or None."""
    from ogpo_jax.envs import pixels
    if isinstance(env, pixels.EncodedObservation):
        env = env.env
    return env if isinstance(env, pixels.PixelObservation) else None


def record_episodes(env, policy, params, key, num_episodes: int, horizon: int, episode_length: int) -> dict:
    """Run `num_episodes` episodes of `env` (with its EpisodeWrapper) acting chunks of `horizon`
    open-loop. Returns numpy arrays: `qpos (T+1, N, nq)` and `obs (T+1, N, obs_dim)` (the state
    before every control step plus the final one), `alive (T+1, N)` (frame belongs to a running
    episode) and `success (N,)`. Frames after an episode ends repeat its final state.

    A camera observation (`envs.pixels`): the policy gets `env.observe` of the state at each chunk
    boundary, as in training, and `view (T+1, N, H, W, C)` holds the image it was given last."""
    benv = core.VmapWrapper(env, num_episodes)
    cam = camera_of(env)
    if cam is not None:
        view_shape = (num_episodes,) + tuple(cam.image_shape)
        policy_obs = jax.vmap(env.observe)
    else:
        view_shape, policy_obs = (num_episodes, 0), (lambda s: s.obs)

    @functools.partial(jax.jit, compiler_options=core.compiler_options(env))
    def run(key):
        k_reset, k_act = jax.random.split(key)
        state = benv.reset(k_reset)
        chunk = jnp.zeros((num_episodes, horizon, env.action_size))

        def qpos_of(s):        # empty for a task that is not MJX (point_gaps: the pixel tests)
            return s.sim.qpos if hasattr(s.sim, "qpos") else jnp.zeros((num_episodes, 0))

        def act(s, t):
            chunk = policy(params, policy_obs(s), jax.random.fold_in(k_act, t))
            return chunk, (jax.vmap(cam.image)(s) if cam is not None else jnp.zeros(view_shape))

        def body(carry, t):
            s, chunk, view, alive, success = carry
            chunk, view = jax.lax.cond(t % horizon == 0, lambda: act(s, t), lambda: (chunk, view))
            nxt = benv.step(s, chunk[:, t % horizon])
            nxt = core._select(alive, nxt, s)
            success = success | (nxt.info["success"] & alive)
            return (nxt, chunk, view, alive & ~nxt.done, success), (qpos_of(s), s.obs, view, alive)

        init = (state, chunk, jnp.zeros(view_shape), jnp.ones((num_episodes,), bool), jnp.zeros((num_episodes,), bool))
        (last, _, last_view, _, success), (qpos, obs, view, alive) = jax.lax.scan(body, init, jnp.arange(episode_length))
        out = {
            "qpos": jnp.concatenate([qpos, qpos_of(last)[None]]),
            "obs": jnp.concatenate([obs, last.obs[None]]),
            "alive": jnp.concatenate([alive, jnp.zeros((1, num_episodes), bool)]),
            "success": success,
        }
        if cam is not None:
            out["view"] = jnp.concatenate([view, last_view[None]])
        return out

    return jax.device_get(run(key))


def render_frames(model, qpos, camera: str | int = -1, width: int = 320, height: int = 240) -> list:
    """qpos (T, nq) -> list of (height, width, 3) uint8 frames."""
    import mujoco
    data = mujoco.MjData(model)
    renderer = mujoco.Renderer(model, height, width)
    frames = []
    try:
        for q in qpos:
            data.qpos[:] = q
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera=camera)
            frames.append(renderer.render().copy())
    finally:
        renderer.close()
    return frames


def camera_panel(image, height: int) -> np.ndarray:
    """A policy's camera image (h, w, C) in [0, 1] as an (height, ~height * w / h, 3) uint8 panel:
    nearest-neighbour upscaled; one channel (depth) in grey, near bright; three as RGB."""
    image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    if image.shape[-1] == 1:
        image = np.repeat(1.0 - image, 3, -1)
    image = image[..., :3]
    scale = max(1, height // image.shape[0])
    big = np.kron(image, np.ones((scale, scale, 1)))
    panel = np.zeros((height, big.shape[1], 3), np.float32)
    top = (height - big.shape[0]) // 2
    panel[top:top + big.shape[0]] = big
    return (panel * 255).astype(np.uint8)


def write_gif(frames, path: str, fps: int = 20) -> None:
    from PIL import Image
    images = [Image.fromarray(np.asarray(f)) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)


def render_episodes(env, policy, params, key, path: str, num_episodes: int, horizon: int,
                    episode_length: int, camera: str = "front", width: int = 320, height: int = 240,
                    log=print) -> str | None:
    """Roll out and render `num_episodes` episodes one after the other into the GIF `path`; for a
    camera observation each frame shows the policy's last image to the right of the scene.
    Returns the path, or None (with a message) when no OpenGL backend is available."""
    ok, why = gl_available()
    if not ok:
        log(f"[render] skipped: no OpenGL backend in this process ({why}). "
            "Set MUJOCO_GL=egl (GPU) or MUJOCO_GL=osmesa (software) where available.")
        return None
    model = env.unwrapped.mj_model
    rec = record_episodes(env, policy, params, key, num_episodes, horizon, episode_length)
    qpos, alive, success = rec["qpos"], rec["alive"], rec["success"]
    frames = []
    for i in range(num_episodes):
        last = int(alive[:, i].sum()) + 1        # every frame of the episode plus its final state
        scene = render_frames(model, qpos[:last, i], camera, width, height)
        if "view" in rec:                        # what the policy's camera saw, beside the scene
            scene = [np.concatenate([f, camera_panel(v, height)], 1) for f, v in zip(scene, rec["view"][:last, i])]
        frames += scene
    write_gif(frames, path, fps=int(round(1.0 / env.unwrapped.params.control_dt)))
    log(f"[render] {num_episodes} episodes ({int(success.sum())} successes), {len(frames)} frames -> {path}")
    return path
