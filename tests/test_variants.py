"""OGPO stabilizers and ablations: each against a hand-computed example, and each method
preset trains a few updates without NaNs and changes the update the way its definition says."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import methods as methods_lib
from ogpo_jax import ogpo
from ogpo_jax.algorithms import base as algorithms
from ogpo_jax.algorithms import advantages as adv_lib
from ogpo_jax.algorithms import extraction
from ogpo_jax.algorithms.config import AlgoConfig, OGPOConfig
from ogpo_jax.gcp import flow

CFG = OGPOConfig(actor_hidden_dims=(32, 32), critic_hidden_dims=(32, 32), num_critics=4, flow_steps=4,
                 batch_size=16, ppo_batch_size=8, group_size=4, success_batch_size=8, best_of_n=3,
                 actor_lr_warmup=0, ofpo_mc_samples=4)
from test_ogpo import CHUNK, OBS, _batch  # noqa: E402  (same toy shapes and batches as the core tests)


def _tree_close(a, b, **kw):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, **kw)


def _diff(a, b):
    return float(sum(jnp.abs(x - y).sum() for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))))


# ----------------------------------------------------------------------------- advantages by hand

# 3 heads, 1 state, 2 chains. Group means per head: 0.5, 1, 0.5 -> per-head advantages
# chain 0: (0.5, 1, -0.5), chain 1: (-0.5, -1, 0.5).
Q3 = jnp.array([[[1.0, 0.0]], [[2.0, 0.0]], [[0.0, 1.0]]])


def test_strategies_hand_example():
    np.testing.assert_allclose(adv_lib.compute_advantage(Q3, "vanilla"), [[1 / 3, -1 / 3]], atol=1e-6)
    # two-sided CA: the heads disagree on both chains -> no gradient
    np.testing.assert_allclose(adv_lib.compute_advantage(Q3, "conservative"), [[0.0, 0.0]])
    # penultimate: sorted chain 0 (-0.5, 0.5, 1) -> 2nd-min 0.5 > 0; chain 1 (-1, -0.5, 0.5) -> 2nd-max -0.5 < 0
    np.testing.assert_allclose(adv_lib.compute_advantage(Q3, "penultimate"), [[0.5, -0.5]])
    # when all heads agree, CA takes the most conservative magnitude, penultimate the second
    q = jnp.array([[[3.0, 0.0]], [[1.0, 0.0]], [[2.0, 0.0]]])
    np.testing.assert_allclose(adv_lib.compute_advantage(q, "conservative"), [[0.5, -0.5]])
    np.testing.assert_allclose(adv_lib.compute_advantage(q, "penultimate"), [[1.0, -1.0]])


def test_grpo_std_nonneg_and_value_baseline_hand_example():
    # head-mean Q of the two chains: 1 and 1/3 -> group std 1/3; vanilla advantages +-1/3 -> +-1
    np.testing.assert_allclose(adv_lib.compute_advantage(Q3, "vanilla", std_norm=True), [[1.0, -1.0]], atol=1e-4)
    np.testing.assert_allclose(adv_lib.compute_advantage(Q3, "vanilla", nonneg=True), [[1 / 3, 0.0]], atol=1e-6)
    # V(s) = 0.5: A = head-mean Q - V = (0.5, -1/6); a per-head V shifts each head
    np.testing.assert_allclose(adv_lib.compute_advantage(Q3, "vanilla", baseline=jnp.array([0.5])),
                               [[0.5, 1 / 3 - 0.5]], atol=1e-6)
    per_head_v = jnp.array([[0.0], [0.0], [2.0]])          # head 2 thinks the state is worth 2
    np.testing.assert_allclose(adv_lib.compute_advantage(Q3, "conservative", baseline=per_head_v), [[0.0, 0.0]])


def test_chi2_advantage_hand_example():
    # 2 heads, chains with Q = (1, 3) and (3, 1): mean 2, min 1, head std 1 -> beta = 0.1 * 1 / 1
    q = jnp.array([[[1.0, 3.0]], [[3.0, 1.0]]])
    ratio = jnp.array([[1.0, 2.0]])
    adv, beta, w = adv_lib.chi2_advantage(q, ratio, beta_base=0.1, alpha=5.0, q_std_target=1.0)
    sig5 = 1.0 / (1.0 + math.exp(-5.0))
    q_tilde = np.array([0.5 * 2 + 0.5 * 1 - 0.1 * 1, (1 - sig5) * 2 + sig5 * 1 - 0.1 * 2])
    assert float(beta) == pytest.approx(0.1)
    np.testing.assert_allclose(w, [[0.5, sig5]], rtol=1e-6)
    np.testing.assert_allclose(adv, [q_tilde - q_tilde.mean()], rtol=1e-5)
    # the over-weighted chain (ratio 2) loses advantage even though its Q equals the other's
    assert float(adv[0, 1]) < 0 < float(adv[0, 0])
    # upper clip min(1 + eps, 1 + R_max / beta)
    assert float(adv_lib.chi2_upper_clip(0.01, 100.0, 0.1)) == pytest.approx(1.01)
    assert float(adv_lib.chi2_upper_clip(0.01, 0.5, 100.0)) == pytest.approx(1.005)


def test_awr_weights_clip_and_positive_only():
    a = jnp.array([-1.0, 0.0, 1.0, 10.0])
    np.testing.assert_allclose(adv_lib.awr_weights(a, 1.0, 20.0), [math.exp(-1), 1.0, math.e, 20.0], rtol=1e-6)
    np.testing.assert_allclose(adv_lib.awr_weights(a, 1.0, 20.0, positive_only=True), [0.0, 0.0, math.e, 20.0],
                               rtol=1e-6)
    np.testing.assert_allclose(adv_lib.awr_weights(a, 2.0, 20.0)[2], math.exp(0.5), rtol=1e-6)


def test_q_variance_reductions_hand_example():
    x = jnp.array([[0.0, 1.0, 2.0, 10.0, 20.0, 30.0, 40.0, 100.0]])[:, jax.random.permutation(jax.random.PRNGKey(0), 8)]
    assert float(ogpo.reduce_samples(x, "mean")[0]) == pytest.approx(203 / 8)
    assert float(ogpo.reduce_samples(x, "median")[0]) == pytest.approx(15.0)
    assert float(ogpo.reduce_samples(x, "trimmed_mean")[0]) == pytest.approx((2 + 10 + 20 + 30) / 4)


@pytest.mark.parametrize("aggregation,n_samples,reduction", [("mean", 1, "mean"), ("min", 1, "mean"),
                                                             ("mean", 4, "median"), ("min", 4, "trimmed_mean")])
def test_td_target_matches_manual(aggregation, n_samples, reduction):
    cfg = dataclasses.replace(CFG, target_aggregation=aggregation, q_vr_num_samples=n_samples, q_vr_reduction=reduction)
    state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, cfg)
    batch, key = _batch(jax.random.PRNGKey(1)), jax.random.PRNGKey(2)
    got = ogpo.td_target(state, batch, key)
    next_obs = jnp.repeat(batch["next_obs"], n_samples, axis=0)
    _, a = flow.sample_sde(ogpo.actor_apply_fn(state), state.actor_ema, next_obs, key, cfg.gcp_spec, 6)
    q = np.asarray(ogpo.critic_values(state, state.critic_target, next_obs, a)).reshape(4, 16, n_samples)
    reduce = {"mean": lambda x: x.mean(-1), "median": lambda x: np.median(x, -1),
              "trimmed_mean": lambda x: np.sort(x, -1)[..., 1:3].mean(-1)}[reduction]
    q = reduce(q)
    v = q.min(0) if aggregation == "min" else q.mean(0)
    gamma = cfg.discount
    want = -(1 + gamma + gamma**2) + gamma**3 * (1 - np.asarray(batch["terminal"], float)) * v
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- every preset trains

def _preset_cfg(name):
    """CFG's values under preset `name`, as its algorithm's config class (the OGPO-only ones
    dropped for another algorithm)."""
    return AlgoConfig.from_dict({**dataclasses.asdict(CFG), **methods_lib.METHODS[name][1]})


# One preset per code path runs in CI; presets that only flip a flag inside a covered path (their
# math is checked by hand above) are `slow`. Every compile costs a few seconds on 2 cores.
_CI_PRESETS = {"ogpo_ca", "bptt", "awr_fm", "aw_ogpo_nn", "ofpo", "ogpo_chi2", "value_baseline", "ogpo_ca_q_vr",
               "sb_only", "sb_bc"}


@pytest.mark.parametrize("name", [n if n in _CI_PRESETS else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(methods_lib.METHODS)])
def test_every_method_preset_updates_without_nans(name):
    cfg = _preset_cfg(name)
    algo = algorithms.get(cfg.name)
    state = algo.init(jax.random.PRNGKey(0), OBS, CHUNK, cfg)
    step = jax.jit(algo.update)
    s = state
    for i in range(2):
        s, metrics = step(s, _batch(jax.random.PRNGKey(10 + i)), _batch(jax.random.PRNGKey(20 + i), 8))
        assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values()), (name, metrics)
    assert int(s.step) == 2
    assert _diff(s.actor, state.actor) > 0
    if hasattr(state, "critic"):             # every algorithm but sb_bc learns a critic
        assert _diff(s.critic, state.critic) > 0
    chunks = algo.act(s, jnp.ones((2, OBS)), jax.random.PRNGKey(3), mode=cfg.rollout_mode)
    assert chunks.shape == (2, *CHUNK) and float(jnp.abs(chunks).max()) <= 1.0


def test_ogpo_nn_never_has_a_negative_advantage():
    batch, succ = _batch(jax.random.PRNGKey(1)), _batch(jax.random.PRNGKey(2), 8)
    for nonneg in (False, True):
        state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, dataclasses.replace(CFG, adv_strategy="vanilla",
                                                                                  nonneg_advantage=nonneg))
        _, m = ogpo.actor_step(state, batch, succ, jax.random.PRNGKey(3))
        assert (float(m["actor/adv_min"]) >= 0.0) == nonneg


def test_bptt_gradient_flows_through_the_chain_and_the_critic():
    cfg = dataclasses.replace(CFG, extraction="bptt", bc_coeff=0.0)
    state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, cfg)
    obs = jax.random.normal(jax.random.PRNGKey(1), (8, OBS))
    apply_fn = ogpo.actor_apply_fn(state)

    def loss(params, critic):
        q_fn = lambda o, a: ogpo.critic_values(state, critic, o, a)
        return extraction.bptt_objective(apply_fn, params, obs, jax.random.PRNGKey(2), cfg.gcp_spec, 6, q_fn)[0]

    g = jax.grad(loss)(state.actor, state.critic)
    assert float(ogpo.common.tree_norm(g)) > 0
    # the gradient is dQ/da * da/dtheta: another critic gives another actor gradient
    other = jax.tree_util.tree_map(lambda p: 1.5 * p, state.critic)
    assert _diff(g, jax.grad(loss)(state.actor, other)) > 0
    # a small step along -grad raises Q of the ODE sample
    stepped = jax.tree_util.tree_map(lambda p, d: p - 1e-3 * d, state.actor, g)
    assert float(loss(stepped, state.critic)) < float(loss(state.actor, state.critic))
    # and the full actor step uses no chain log-probs (no PPO)
    _, m = ogpo.actor_step(state, _batch(jax.random.PRNGKey(3)), _batch(jax.random.PRNGKey(4), 8),
                           jax.random.PRNGKey(5))
    assert "actor/bptt_q" in m and "actor/clip_frac" not in m


def test_ofpo_ratio_is_one_at_equal_params_and_follows_the_advantage():
    cfg = dataclasses.replace(CFG, extraction="ofpo", adv_strategy="vanilla", bc_coeff=0.0)
    state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, cfg)
    _, m = ogpo.actor_step(state, _batch(jax.random.PRNGKey(1)), None, jax.random.PRNGKey(2))
    assert float(m["actor/ratio_mean"]) == pytest.approx(1.0, abs=1e-6)
    apply_fn = ogpo.actor_apply_fn(state)
    obs = jax.random.normal(jax.random.PRNGKey(3), (4, OBS))
    actions = jax.random.uniform(jax.random.PRNGKey(4), (4, 6), minval=-1, maxval=1)
    t, x0 = extraction.ofpo_draws(jax.random.PRNGKey(5), 4, 8, 6)
    old = flow.cfm_losses(apply_fn, state.actor, obs, actions, t, x0)
    adv = jnp.array([1.0, -1.0, 0.0, 0.0])
    g = jax.grad(lambda p: extraction.ofpo_objective(apply_fn, p, obs, actions, old, adv, t, x0, 0.99, 1.01)[0])(state.actor)
    new = flow.cfm_losses(apply_fn, jax.tree_util.tree_map(lambda p, d: p - 1e-2 * d, state.actor, g), obs, actions, t, x0)
    delta = np.asarray((new - old).mean(-1))
    assert delta[0] < 0 < delta[1]          # CFM loss (-ELBO) falls on the positive-advantage action


def test_weighted_bc_loss_with_unit_weights_is_the_plain_loss():
    state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, CFG)
    b = _batch(jax.random.PRNGKey(1), 8)
    apply_fn = ogpo.actor_apply_fn(state)
    plain = flow.bc_loss(apply_fn, state.actor, b["obs"], b["actions"], b["valid"], jax.random.PRNGKey(2))
    ones = flow.bc_loss(apply_fn, state.actor, b["obs"], b["actions"], b["valid"], jax.random.PRNGKey(2), jnp.ones(8))
    twice = flow.bc_loss(apply_fn, state.actor, b["obs"], b["actions"], b["valid"], jax.random.PRNGKey(2), 2 * jnp.ones(8))
    assert float(ones) == pytest.approx(float(plain), rel=1e-6)
    assert float(twice) == pytest.approx(2 * float(plain), rel=1e-6)


def test_aw_ogpo_nn_ignores_negative_advantage_chains():
    """Positive-only weights: moving the critic's values of below-average chains changes nothing
    as long as their advantages stay negative."""
    cfg = dataclasses.replace(CFG, extraction="aw_ogpo", adv_strategy="vanilla", nonneg_advantage=True, bc_coeff=0.0)
    state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, cfg)
    _, m = ogpo.actor_step(state, _batch(jax.random.PRNGKey(1)), None, jax.random.PRNGKey(2))
    assert 0.0 < float(m["actor/awr_weight_mean"]) < float(m["actor/awr_weight_max"]) <= cfg.awr_max_weight
    w = adv_lib.awr_weights(jnp.array([-3.0, -0.1, 0.2]), cfg.awr_beta, cfg.awr_max_weight, True)
    assert float(w[0]) == float(w[1]) == 0.0 < float(w[2])


def test_chi2_slow_reference_and_target_blend():
    cfg = dataclasses.replace(CFG, adv_strategy="vanilla", chi2_enabled=True, chi2_tau_slow=0.1)
    state = ogpo.init(jax.random.PRNGKey(0), OBS, CHUNK, cfg)
    assert _diff(state.actor_slow, state.actor) == 0
    new, m = ogpo.actor_step(state, _batch(jax.random.PRNGKey(1)), _batch(jax.random.PRNGKey(2), 8),
                             jax.random.PRNGKey(3))
    # actor == slow reference at the first step: ratio 1, blend weight sigmoid(0) = 0.5
    assert float(m["chi2/ratio_mean"]) == pytest.approx(1.0, abs=1e-5)
    assert float(new.chi2_target_w) == pytest.approx(0.5, abs=1e-5)
    want = jax.tree_util.tree_map(lambda s, a: 0.9 * s + 0.1 * a, state.actor_slow, new.actor)
    _tree_close(new.actor_slow, want, rtol=1e-6, atol=1e-7)
    # the critic target blends mean and min of the heads with that weight
    batch, key = _batch(jax.random.PRNGKey(4)), jax.random.PRNGKey(5)
    t_blend = ogpo.td_target(new, batch, key)
    t_mean = ogpo.td_target(new.replace(chi2_target_w=jnp.zeros(())), batch, key)
    t_min = ogpo.td_target(new.replace(chi2_target_w=jnp.ones(())), batch, key)
    np.testing.assert_allclose(t_blend, 0.5 * (t_mean + t_min), rtol=1e-5, atol=1e-5)
    assert float((t_mean - t_min).min()) >= 0


def value_baseline_fit(seed: int = 0) -> dict:
    """The learned value baseline regresses onto the group-mean target-critic value. The target
    critics' outputs are shifted by +1, so the untrained V(s) starts about 1 away from its target
    (without the shift some initializations start within the group-sampling noise of it and a ratio
    says nothing). -> the mean value loss of steps 26-30 over the first step's loss."""
    k_init, k_batch, k_succ, k_steps = jax.random.split(jax.random.PRNGKey(seed), 4)
    cfg = dataclasses.replace(CFG, adv_strategy="vanilla", baseline="value", critic_lr=3e-3)
    state = ogpo.init(k_init, OBS, CHUNK, cfg)
    target = state.critic_target["VmapCritic_0"]
    out = dict(target["Dense_0"], bias=target["Dense_0"]["bias"] + 1.0)      # the heads' output layer
    state = state.replace(critic_target={"VmapCritic_0": dict(target, Dense_0=out)})
    batch, succ = _batch(k_batch), _batch(k_succ, 8)
    step = jax.jit(ogpo.actor_step)
    losses = []
    for i in range(30):
        state, m = step(state, batch, succ, jax.random.fold_in(k_steps, i))
        losses.append(float(m["value/loss"]))
    return {"loss_ratio": float(np.mean(losses[-5:]) / losses[0])}


VALUE_LOSS_RATIO = 0.1      # spread over seeds 0-9: python tests/measure_spread.py value_baseline


def test_value_baseline_learns_the_group_mean_q():
    """Loss ratio over seeds 0-9 (tests/measure_spread.py value_baseline): 0.016 +- 0.008, max 0.032
    (bar 0.1)."""
    m = value_baseline_fit(0)
    assert m["loss_ratio"] < VALUE_LOSS_RATIO, m


@pytest.mark.parametrize("field,value,match", [
    ("extraction", "sac", "algo.extraction"),
    ("baseline", "median", "algo.baseline"),
    ("target_aggregation", "max", "algo.target_aggregation"),
    ("awr_beta", 0.0, "algo.awr_beta"),
    ("ofpo_mc_samples", 0, "algo.ofpo_mc_samples"),
])
def test_invalid_variant_values_are_named(field, value, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(OGPOConfig(), **{field: value})
    with pytest.raises(ValueError, match="num_critics"):
        OGPOConfig(adv_strategy="penultimate", num_critics=1, best_of_n_heads=1)
    with pytest.raises(ValueError, match="algo.extraction must be 'ppo' when chi2_enabled"):
        OGPOConfig(adv_strategy="vanilla", chi2_enabled=True, extraction="bptt")


def test_method_names_are_validated():
    assert methods_lib.resolve("headline") == list(methods_lib.HEADLINE)
    assert methods_lib.resolve("all") == list(methods_lib.METHODS)
    with pytest.raises(ValueError, match="ogpo_pluss"):
        methods_lib.resolve("ogpo,ogpo_pluss")
