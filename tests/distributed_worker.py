"""Subprocess worker of tests/test_distributed.py: multi-device checks need their device count fixed
before JAX starts, so they run here (not collected by pytest).

    python tests/distributed_worker.py dp OUT.json [SEED]              # 4 forced CPU devices
    python tests/distributed_worker.py multihost OUT.json PORT PID     # 2 processes x 2 CPU devices
"""
import json
import os
import sys

MODE = sys.argv[1]
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=" + (
    "4" if MODE == "dp" else "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from configs import toy  # noqa: E402
from ogpo_jax import envs  # noqa: E402
from ogpo_jax.algorithms import ogpo  # noqa: E402
from ogpo_jax.data import rings  # noqa: E402
from ogpo_jax.training import distributed, loop, spec  # noqa: E402
from ogpo_jax.training.config import validate  # noqa: E402


def tiny_config(num_envs=8):
    c = toy.get_config()
    a = c.algo
    a.actor_hidden_dims, a.critic_hidden_dims, a.num_critics, a.flow_steps = (32, 32), (32, 32), 2, 3
    a.batch_size = a.ppo_batch_size = a.success_batch_size = 16
    a.group_size = 4
    a.critic_lr = 1e-3
    t = c.train
    t.num_envs, t.updates_per_iteration, t.log_every_iterations, t.start_training = num_envs, 2, 5, 64
    t.replay_capacity, t.success_capacity, t.eval_episodes = 1024, 512, 8
    return c


def run_keys(seed: int = 0):
    """(BC actor, agent, loop) keys; seed 0 is the tests' run, others measure its spread."""
    if seed == 0:
        return jax.random.PRNGKey(42), jax.random.PRNGKey(0), jax.random.PRNGKey(1)
    return tuple(jax.random.split(jax.random.PRNGKey(1000 + seed), 3))


def setup(c, seed: int = 0):
    env, _, episode_length = envs.make(c.env.name, **spec.env_kwargs(c))
    chunk_shape = (c.env.chunk_horizon, env.action_size)
    algo = validate(c)
    bc = ogpo.init(run_keys(seed)[0], env.observation_size, chunk_shape, algo).actor
    return env, episode_length, chunk_shape, env.observation_size, algo, bc


def sharded_state(c, env, ep_len, chunk_shape, obs_dim, algo, bc, mesh, seed: int = 0):
    n = mesh.size
    _, k_agent, k_loop = run_keys(seed)

    def init():
        agent = ogpo.init(k_agent, obs_dim, chunk_shape, algo, actor_params=bc)
        return loop.init_loop(k_loop, env, agent, obs_dim, c.train, ep_len, num_shards=n)

    shardings = distributed.loop_shardings(mesh, jax.eval_shape(init))
    ls = jax.jit(init, out_shardings=shardings)()
    return jax.tree_util.tree_map(lambda x: x.copy(), ls)


def checksum(tree) -> float:
    return float(sum(np.abs(np.asarray(x, np.float64)).sum() for x in jax.tree_util.tree_leaves(tree)))


def dp(out_path, seed: int = 0):
    assert len(jax.devices()) == 4, jax.devices()
    c = tiny_config()
    env, ep_len, chunk_shape, obs_dim, algo, bc = setup(c, seed)
    result = {}

    # one update: the same global batch on 1 device and sharded over 4
    agent = ogpo.init(run_keys(seed)[1], obs_dim, chunk_shape, algo, actor_params=bc)
    rng = np.random.default_rng(0)
    B, (H, da) = algo.batch_size, chunk_shape
    batch = {"obs": rng.normal(size=(B, obs_dim)).astype(np.float32),
             "actions": rng.uniform(-1, 1, (B, H, da)).astype(np.float32),
             "rewards": rng.normal(size=(B, H)).astype(np.float32), "valid": np.ones((B, H), bool),
             "next_obs": rng.normal(size=(B, obs_dim)).astype(np.float32), "terminal": rng.uniform(size=B) < 0.2,
             "success": np.zeros(B, bool)}
    succ = {k: batch[k] for k in ("obs", "actions", "valid")}
    one, m1 = jax.jit(ogpo.update)(jax.device_put(agent, jax.devices()[0]), batch, succ)
    mesh = distributed.make_mesh(4)
    rep, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    upd4 = jax.jit(ogpo.update, in_shardings=(rep, split, split), out_shardings=rep)
    four, m4 = upd4(jax.device_put(agent, rep), jax.device_put(batch, split), jax.device_put(succ, split))
    diffs = [float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / (1e-6 + np.abs(np.asarray(a)))))
             for a, b in zip(jax.tree_util.tree_leaves((one.actor, one.critic)),
                             jax.tree_util.tree_leaves((four.actor, four.critic)))]
    result["update_max_rel_diff"] = max(diffs)
    result["update_param_change"] = float(checksum(jax.tree_util.tree_map(
        lambda a, b: np.asarray(a) - np.asarray(b), one.critic, agent.critic)))
    result["update_metrics"] = {k: [float(m1[k]), float(m4[k])] for k in ("critic/loss", "actor/loss")}
    result["batch_sharding"] = str(jax.device_put(batch, split)["obs"].sharding.spec)

    # short training runs on 1 and 4 devices
    runs = {}
    for n in (1, 4):
        mesh = distributed.make_mesh(n)
        ls = sharded_state(c, env, ep_len, chunk_shape, obs_dim, algo, bc, mesh, seed)
        interval = loop.make_interval(env, c.train, c.train.log_every_iterations, mesh=mesh, donate=True)
        td, succ_rate = [], []
        for _ in range(8):
            ls, m = interval(ls)
            r = loop.summarize_interval(jax.device_get(m))
            if "critic/td_error" in r:
                td.append(r["critic/td_error"])
            succ_rate.append(r.get("rollout/success"))
        runs[n] = {"td_error": td, "rollout_success": succ_rate, "env_steps": int(ls.env_steps),
                   "grad_steps": int(ls.agent.step), "compiles": interval.compiles,
                   "replay_sharding": str(ls.replay.data["obs"].sharding.spec),
                   "replay_blocks": int(rings.num_blocks(ls.replay)), "finite": bool(np.isfinite(checksum(ls.agent)))}
    result["runs"] = runs
    json.dump(result, open(out_path, "w"))


def multihost(out_path, port, pid):
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid,
                               initialization_timeout=120)
    assert jax.process_count() == 2 and len(jax.devices()) == 4 and len(jax.local_devices()) == 2
    c = tiny_config()
    env, ep_len, chunk_shape, obs_dim, algo, bc = setup(c)
    mesh = distributed.make_mesh(0)
    ls = sharded_state(c, env, ep_len, chunk_shape, obs_dim, algo, bc, mesh)
    interval = loop.make_interval(env, c.train, c.train.log_every_iterations, mesh=mesh, donate=True)
    for _ in range(4):
        ls, m = interval(ls)
    r = loop.summarize_interval(jax.device_get(m))
    agent = jax.device_get(ls.agent)        # replicated: every process holds a full copy
    json.dump({"process": jax.process_index(), "checksum": checksum((agent.actor, agent.critic)),
               "grad_steps": int(ls.agent.step), "env_steps": int(ls.env_steps), "critic_loss": r["critic/loss"],
               "local_replay_shards": len(ls.replay.data["obs"].addressable_shards)}, open(out_path, "w"))
    jax.distributed.shutdown()


if __name__ == "__main__":
    if MODE == "dp":
        dp(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    else:
        multihost(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
