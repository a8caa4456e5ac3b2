"""The OGPO critic step learns analytic chunk Q-values of debug tasks (rejax-style)."""
import jax
import jax.numpy as jnp
import numpy as np

from ogpo_jax import envs, ogpo
from ogpo_jax.algorithms.config import OGPOConfig
from ogpo_jax.data import replay as rb
from ogpo_jax.envs import core, toy


def _collect(env_name, chunk_len, n_envs, n_iters, key, **kw):
    base, _, _ = envs.make(env_name, **kw)
    horizon = chunk_len
    env = core.VmapWrapper(core.AutoResetWrapper(core.ChunkWrapper(base, horizon)), n_envs)
    state = env.reset(key)
    buf = rb.init_buffer(rb.transition_spec(base.observation_size, (horizon, base.action_size)), n_envs * n_iters)

    def body(carry, k):
        s, buf = carry
        actions = jax.random.uniform(k, (n_envs, horizon, base.action_size), minval=-1, maxval=1)
        nxt = env.step(s, actions)
        rows = {"obs": s.obs, "actions": actions, "rewards": nxt.info["rewards"], "valid": nxt.info["valid"],
                "next_obs": nxt.info["final_obs"], "terminal": nxt.info["terminal"], "success": nxt.info["success"]}
        return (nxt, rb.insert(buf, rows)), None

    (_, buf), _ = jax.lax.scan(body, (state, buf), jax.random.split(key, n_iters))
    return buf


def _train_critic(state, buf, steps, batch_size):
    @jax.jit
    def train(state, key):
        def step(st, k):
            batch = rb.sample(buf, k, batch_size)
            st, m = ogpo.critic_step(st, batch, jax.random.fold_in(k, 1))
            st = st.replace(critic_target=ogpo.common.polyak(st.critic_target, st.critic, st.config.critic_tau))
            return st, m["critic/loss"]
        return jax.lax.scan(step, state, jax.random.split(key, steps))
    return train(state, jax.random.PRNGKey(7))


def test_critic_learns_countdown_values_with_bootstrapping():
    gamma, horizon, length = 0.9, 4, 10
    buf = _collect("countdown", horizon, 16, 200, jax.random.PRNGKey(0), length=length)
    cfg = OGPOConfig(critic_hidden_dims=(64, 64), actor_hidden_dims=(16,), num_critics=4, discount=gamma,
                     critic_lr=1e-3, critic_weight_decay=0.0, flow_steps=2, batch_size=128, ppo_batch_size=8,
                     group_size=2)
    state = ogpo.init(jax.random.PRNGKey(1), 1, (horizon, 1), cfg)
    state, losses = _train_critic(state, buf, 4000, 128)
    obs = (jnp.arange(1, length + 1) / length)[:, None].astype(jnp.float32)
    actions = jax.random.uniform(jax.random.PRNGKey(3), (length, horizon, 1), minval=-1, maxval=1)
    q = ogpo.critic_values(state, state.critic, obs, actions).mean(0)
    true = toy.Countdown(length).true_q(obs, gamma)
    # n <= H: pure reward sum with termination inside the chunk; n > H: needs bootstrapping.
    np.testing.assert_allclose(np.asarray(q), np.asarray(true), atol=0.1)


def test_critic_learns_action_dependent_bandit_values():
    gamma, horizon = 0.9, 3
    buf = _collect("chunk_bandit", horizon, 64, 100, jax.random.PRNGKey(0), horizon=horizon)
    cfg = OGPOConfig(critic_hidden_dims=(128, 128), actor_hidden_dims=(16,), num_critics=4, discount=gamma,
                     critic_lr=1e-3, critic_weight_decay=0.0, flow_steps=2, batch_size=256, ppo_batch_size=8,
                     group_size=2)
    state = ogpo.init(jax.random.PRNGKey(1), 1, (horizon, 1), cfg)
    state, _ = _train_critic(state, buf, 4000, 256)
    k1, k2 = jax.random.split(jax.random.PRNGKey(5))
    obs = jax.random.uniform(k1, (256, 1), minval=-0.9, maxval=0.9)
    actions = jax.random.uniform(k2, (256, horizon, 1), minval=-0.9, maxval=0.9)
    q = ogpo.critic_values(state, state.critic, obs, actions).mean(0)
    true = toy.ChunkBandit.true_q(obs, actions, gamma)
    err = np.abs(np.asarray(q - true))
    assert err.mean() < 0.05 and np.quantile(err, 0.95) < 0.1, (err.mean(), np.quantile(err, 0.95))
