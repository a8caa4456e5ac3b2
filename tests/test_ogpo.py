"""OGPO update: purity, jit, vmap over seeds, PPO ratio at equal params, config validation."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ogpo_jax import ogpo
from ogpo_jax.algorithms.config import OGPOConfig
from ogpo_jax.algorithms.qc import QCConfig

CFG = OGPOConfig(actor_hidden_dims=(32, 32), critic_hidden_dims=(32, 32), num_critics=4, flow_steps=4,
                 batch_size=16, ppo_batch_size=8, group_size=4, success_batch_size=8, best_of_n=3)
OBS, CHUNK = 5, (3, 2)


def _batch(key, n=16):
    ks = jax.random.split(key, 4)
    return {
        "obs": jax.random.normal(ks[0], (n, OBS)),
        "actions": jax.random.uniform(ks[1], (n, *CHUNK), minval=-1, maxval=1),
        "rewards": -jnp.ones((n, CHUNK[0])),
        "valid": jnp.ones((n, CHUNK[0]), bool),
        "next_obs": jax.random.normal(ks[2], (n, OBS)),
        "terminal": jax.random.bernoulli(ks[3], 0.2, (n,)),
        "success": jnp.zeros((n,), bool),
    }


def _leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_update_is_pure_and_jittable():
    state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, CFG)
    batch, succ = _batch(jax.random.PRNGKey(1)), _batch(jax.random.PRNGKey(2), 8)
    s1, m1 = ogpo.update(state, batch, succ)             # eager (op by op: slow on CPU, once)
    step = jax.jit(ogpo.update)
    s2, m2 = step(state, batch, succ)
    s3, m3 = step(state, batch, succ)
    assert _leaves_equal(s2, s3) and _leaves_equal(m2, m3)  # pure: same inputs, same outputs
    for a, b in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s3)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert int(s3.step) == 1 and not _leaves_equal(s3.actor, state.actor)
    assert not _leaves_equal(s3.critic, state.critic)
    assert all(np.isfinite(float(v)) for v in m3.values())


def test_update_vmaps_over_seeds():
    states = jax.vmap(lambda k: ogpo.init(k, OBS, CHUNK, CFG))(jax.random.split(jax.random.PRNGKey(0), 2))
    batch, succ = _batch(jax.random.PRNGKey(1)), _batch(jax.random.PRNGKey(2), 8)
    out, metrics = jax.jit(jax.vmap(ogpo.update, in_axes=(0, None, None)))(states, batch, succ)
    assert metrics["critic/loss"].shape == (2,)
    for i in range(2):
        single = jax.tree_util.tree_map(lambda x: x[i], states)
        ref, _ = jax.jit(ogpo.update)(single, batch, succ)
        for a, b in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(out)):
            np.testing.assert_allclose(a, b[i], rtol=1e-4, atol=1e-5)


def test_ppo_ratio_is_one_when_actor_equals_ema():
    state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, CFG)
    assert _leaves_equal(state.actor, state.actor_ema)
    _, metrics = jax.jit(ogpo.actor_step)(state, _batch(jax.random.PRNGKey(1)), _batch(jax.random.PRNGKey(2), 8),
                                          jax.random.PRNGKey(3))
    assert float(metrics["actor/ratio_mean"]) == pytest.approx(1.0, abs=1e-6)
    assert float(metrics["actor/ratio_max"]) == pytest.approx(1.0, abs=1e-6)
    assert float(metrics["actor/clip_frac"]) == 0.0


def test_ppo_gradient_follows_advantage():
    """With BC off, one PPO step raises the log-prob of positive-advantage chains."""
    cfg = dataclasses.replace(CFG, bc_coeff=0.0, actor_lr=1e-3, actor_lr_floor=1e-3, actor_lr_warmup=0)
    state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, cfg)
    obs = jnp.repeat(jax.random.normal(jax.random.PRNGKey(1), (4, OBS)), 4, axis=0)
    apply_fn = ogpo.actor_apply_fn(state)
    chains, _ = ogpo.flow.sample_sde(apply_fn, state.actor, obs, jax.random.PRNGKey(2), cfg.gcp_spec, 6)
    old = ogpo.flow.chain_log_prob(apply_fn, state.actor, obs, chains, cfg.gcp_spec)
    adv = jnp.tile(jnp.array([1.0, -1.0, 0.0, 0.0]), 4)
    grads = jax.grad(ogpo.actor_loss, has_aux=True)(state.actor, state, obs, chains, old, adv, None, None)[0]
    new_params = jax.tree_util.tree_map(lambda p, g: p - 1e-2 * g, state.actor, grads)
    new = ogpo.flow.chain_log_prob(apply_fn, new_params, obs, chains, cfg.gcp_spec)
    delta = np.asarray(new - old).reshape(4, 4)
    assert delta[:, 0].mean() > 0 > delta[:, 1].mean()


@pytest.mark.parametrize("mode", ["ode", "sde", "best_of_n"])
def test_act_shapes_and_bounds(mode):
    state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, CFG)
    chunks = jax.jit(ogpo.act, static_argnames=("mode", "actor"))(state, jnp.ones((7, OBS)), jax.random.PRNGKey(1), mode=mode)
    assert chunks.shape == (7, *CHUNK)
    assert float(jnp.abs(chunks).max()) <= 1.0
    assert ogpo.act(state, jnp.ones((OBS,)), jax.random.PRNGKey(1), mode=mode).shape == CHUNK


def test_best_of_n_picks_the_highest_min_q_candidate():
    state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, dataclasses.replace(CFG, best_of_n=16, best_of_n_heads=4))
    obs = jnp.ones((1, OBS))
    key = jax.random.PRNGKey(3)
    chosen = ogpo.act(state, obs, key, mode="best_of_n")
    k_sample, _ = jax.random.split(key)
    cands = ogpo.sample_actions(state.config, CHUNK, state.actor_ema, jnp.repeat(obs, 16, 0), k_sample, "sde")
    q = ogpo.critic_values(state, state.critic_target, jnp.repeat(obs, 16, 0), cands).min(0)   # all 4 heads
    np.testing.assert_allclose(chosen[0], cands[int(jnp.argmax(q))])


def test_critic_values_of_chosen_heads_equal_those_rows_of_all_heads():
    state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, CFG)
    obs = jax.random.normal(jax.random.PRNGKey(1), (6, OBS))
    chunks = jax.random.uniform(jax.random.PRNGKey(2), (6, *CHUNK), minval=-1, maxval=1)
    heads = jnp.array([3, 1])
    full = ogpo.critic_values(state, state.critic, obs, chunks)
    some = ogpo.critic_values(state, state.critic, obs, chunks, heads)
    assert full.shape == (CFG.num_critics, 6) and some.shape == (2, 6)
    np.testing.assert_allclose(some, full[heads], rtol=1e-5, atol=1e-6)
    assert not np.allclose(some[0], some[1])           # distinct heads, not one head twice


@pytest.mark.parametrize("field,value,match", [
    ("flow_steps", 0, "algo.flow_steps"),
    ("group_size", 1, "algo.group_size"),
    ("clip_epsilon", 0.0, "algo.clip_epsilon"),
    ("adv_strategy", "bogus", "algo.adv_strategy"),
    ("ppo_batch_size", 512, "algo.ppo_batch_size"),
    ("actor_tau", 0.0, "algo.actor_tau"),
    ("rollout_mode", "greedy", "algo.rollout_mode"),
])
def test_invalid_config_values_are_named(field, value, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(OGPOConfig(), **{field: value})


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match="group_sise"):
        OGPOConfig.from_dict({"group_sise": 4})
    with pytest.raises(ValueError, match="algo.adv_strategy must be 'vanilla' when chi2_enabled"):
        OGPOConfig(chi2_enabled=True, adv_strategy="conservative")


def test_critic_warmup_freezes_the_actor_for_n_updates():
    cfg = dataclasses.replace(CFG, critic_warmup_updates=2)
    state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, cfg)
    batch, succ = _batch(jax.random.PRNGKey(1)), _batch(jax.random.PRNGKey(2), 8)
    step = jax.jit(ogpo.update)
    s1, m1 = step(state, batch, succ)
    s2, m2 = step(s1, batch, succ)
    for s, m in ((s1, m1), (s2, m2)):      # warm-up: actor, EMA actor and actor optimizer untouched
        assert _leaves_equal(s.actor, state.actor) and _leaves_equal(s.actor_ema, state.actor_ema)
        assert _leaves_equal(s.actor_opt, state.actor_opt)
        assert float(m["actor/loss"]) == 0.0 and float(m["critic/loss"]) > 0.0
    assert not _leaves_equal(s2.critic, state.critic)
    s3, m3 = step(s2, batch, succ)
    assert not _leaves_equal(s3.actor, state.actor) and not _leaves_equal(s3.actor_ema, state.actor_ema)
    assert float(m3["actor/ratio_mean"]) == pytest.approx(1.0, abs=1e-6)   # first real PPO step
    # the lr schedule starts at the first actor update: lr after warm-up equals a fresh run's first lr
    _, fresh = step(ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, CFG), batch, succ)
    assert float(m3["actor/lr"]) == pytest.approx(float(fresh["actor/lr"]))
    with pytest.raises(ValueError, match="critic_warmup_updates"):
        dataclasses.replace(CFG, critic_warmup_updates=-1)


def test_ppo_coeff_zero_is_success_bc_only():
    """`ppo_coeff=0` (ablation): the actor step is flow-matching BC on the success batch and nothing
    else: equal to the gradient step of `flow.bc_loss` alone, and independent of the critic."""
    cfg = dataclasses.replace(CFG, ppo_coeff=0.0)
    state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, cfg)
    batch, succ = _batch(jax.random.PRNGKey(1)), _batch(jax.random.PRNGKey(2), 8)
    key = jax.random.PRNGKey(3)
    new, metrics = ogpo.actor_step(state, batch, succ, key)
    assert "actor/clip_frac" not in metrics and "actor/bc_loss" in metrics
    # A different critic gives the same actor update.
    other = state.replace(critic_target=jax.tree_util.tree_map(lambda p: p + 1.0, state.critic_target))
    assert _leaves_equal(new.actor, ogpo.actor_step(other, batch, succ, key)[0].actor)
    # The same update as one optimizer step on the BC loss (same key split as actor_step).
    _, k_bc = jax.random.split(key)
    apply_fn = ogpo.actor_apply_fn(state)
    grads = jax.grad(lambda p: ogpo.flow.bc_loss(apply_fn, p, succ["obs"], succ["actions"], succ["valid"], k_bc))(
        state.actor)
    tx, _ = ogpo.actor_optimizer(cfg)
    updates, _ = tx.update(grads, state.actor_opt, state.actor)
    expected = jax.tree_util.tree_map(lambda p, u: p + u, state.actor, updates)
    for a, b in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(new.actor)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="ppo_coeff"):
        dataclasses.replace(CFG, ppo_coeff=0.0, bc_coeff=0.0)
    with pytest.raises(ValueError, match="ppo_coeff"):
        dataclasses.replace(CFG, ppo_coeff=-1.0)


def test_several_critic_steps_per_update_take_one_step_per_slice():
    """critic_updates_per_update = 2: the actor step and the first critic step use the first slice,
    a second critic step (and success TD step) the second, then one Polyak average."""
    cfg = dataclasses.replace(CFG, critic_updates_per_update=2, success_critic_td=True)
    state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, cfg)
    batch = _batch(jax.random.PRNGKey(1), 32)
    succ = _batch(jax.random.PRNGKey(2), 16)
    new, metrics = jax.jit(ogpo.update)(state, batch, succ)
    # the same by hand, from the same state and keys
    key, k_actor, k_critic, k_succ = jax.random.split(state.key, 4)
    first = {k: v[:16] for k, v in batch.items()}
    s = state.replace(key=key)
    s, _ = ogpo.actor_step(s, first, {k: v[:8] for k, v in succ.items()}, k_actor)
    for i in range(2):
        s, _ = ogpo.critic_step(s, {k: v[16 * i:16 * (i + 1)] for k, v in batch.items()},
                                jax.random.fold_in(k_critic, i))
        s, _ = ogpo.critic_step(s, {k: v[8 * i:8 * (i + 1)] for k, v in succ.items()}, jax.random.fold_in(k_succ, i))
    for a, b in zip(jax.tree_util.tree_leaves(s.critic), jax.tree_util.tree_leaves(new.critic)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    assert "critic/success_loss" in metrics and int(new.step) == 1
    with pytest.raises(ValueError, match="fewer than the 32"):
        ogpo.update(state, _batch(jax.random.PRNGKey(1), 16), succ)
    with pytest.raises(ValueError, match="critic_updates_per_update"):
        QCConfig(critic_updates_per_update=2)


def test_head_agreement_and_the_clip_split_by_hand():
    # two heads, one state, two chains; the heads rank the chains oppositely
    q = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    m = ogpo.head_agreement(q)
    assert float(m["actor/adv_head_agreement"]) == 0.0 and float(m["actor/adv_head_std"]) == pytest.approx(0.5)
    assert float(m["actor/adv_mean_abs"]) == 0.0
    agree = ogpo.head_agreement(jnp.array([[[1.0, 0.0]], [[3.0, 0.0]]]))      # offsets aside, same ranking
    assert float(agree["actor/adv_head_agreement"]) == 1.0 and float(agree["actor/adv_mean_abs"]) == pytest.approx(1.0)
    from ogpo_jax.algorithms.extraction import clip_by_sign
    ratio = jnp.array([1.2, 1.0, 0.8, 0.95, 1.0])
    adv = jnp.array([1.0, 1.0, -1.0, -1.0, 0.0])
    c = clip_by_sign(ratio, adv, 0.9, 1.1)
    assert float(c["actor/clip_frac_pos_adv"]) == 0.5 and float(c["actor/clip_frac_neg_adv"]) == 0.5
    none = clip_by_sign(ratio, jnp.zeros(5), 0.9, 1.1)
    assert float(none["actor/clip_frac_pos_adv"]) == 0.0 and float(none["actor/clip_frac_neg_adv"]) == 0.0


def _ppo_loss_and_grad(cfg, adv_fn):
    """The PPO objective's loss and gradient at a perturbed actor (ratios != 1), from a fixed group
    and the advantages `adv_fn(num_states, group_size)` gives."""
    state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, cfg)
    state = state.replace(actor=jax.tree_util.tree_map(lambda p: p * 1.05, state.actor))
    obs = _batch(jax.random.PRNGKey(1))["obs"][: cfg.ppo_batch_size]
    group = ogpo.sample_group(state, obs, jax.random.PRNGKey(2))
    adv = adv_fn(cfg.ppo_batch_size, cfg.group_size).reshape(-1)
    objective = ogpo.OBJECTIVES["ppo"](state, group, None, adv, None, jax.random.PRNGKey(3))
    (loss, _), grad = jax.value_and_grad(objective, has_aux=True)(state.actor)
    return loss, grad


def test_top_k_chains_equal_the_whole_group_when_k_covers_the_nonzero_advantages():
    def sparse(b, g):                     # two nonzero advantages per group, at varying positions
        a = np.zeros((b, g), np.float32)
        for i in range(b):
            a[i, i % g] = 1.0 + i
            a[i, (i + 1) % g] = -0.5
        return jnp.asarray(a)
    full_cfg = dataclasses.replace(CFG, clip_epsilon=0.2)
    full, g_full = _ppo_loss_and_grad(full_cfg, sparse)
    top, g_top = _ppo_loss_and_grad(dataclasses.replace(full_cfg, ppo_top_k=2), sparse)
    assert float(full) != 0.0
    np.testing.assert_allclose(float(top), float(full), rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(g_full), jax.tree_util.tree_leaves(g_top)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    # with more nonzero chains than k the top-k loss is an approximation: it differs
    dense = lambda b, g: jnp.linspace(-1.0, 1.0, b * g).reshape(b, g)  # noqa: E731
    full_d, _ = _ppo_loss_and_grad(full_cfg, dense)
    top_d, _ = _ppo_loss_and_grad(dataclasses.replace(full_cfg, ppo_top_k=2), dense)
    assert abs(float(full_d) - float(top_d)) > 1e-6


def test_truncated_backprop_through_all_steps_is_the_full_gradient():
    dense = lambda b, g: jnp.linspace(-1.0, 1.0, b * g).reshape(b, g)  # noqa: E731
    base = dataclasses.replace(CFG, clip_epsilon=0.2)
    full, g_full = _ppo_loss_and_grad(base, dense)
    k_eq, g_k = _ppo_loss_and_grad(dataclasses.replace(base, ft_flow_steps=base.flow_steps), dense)
    np.testing.assert_allclose(float(k_eq), float(full), rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(g_full), jax.tree_util.tree_leaves(g_k)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    last2, g2 = _ppo_loss_and_grad(dataclasses.replace(base, ft_flow_steps=2), dense)
    assert np.isfinite(float(last2)) and all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(g2))
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(g_full), jax.tree_util.tree_leaves(g2)))
    with pytest.raises(ValueError, match="ft_flow_steps"):
        dataclasses.replace(base, ft_flow_steps=2, policy="diffusion", diffusion_train_steps=40)
    with pytest.raises(ValueError, match="ppo_top_k"):
        dataclasses.replace(base, ppo_top_k=base.group_size + 1)
