"""The DDPM policy (gcp/diffusion.py): schedule, forward marginals, the eps-prediction loss, the
DDPM posterior step, backward marginals of DDPM and DDIM with the exact noise predictor of
Gaussian data, DDIM determinism, chain log-probabilities, and the `gcp` dispatch by config."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ogpo_jax import gcp
from ogpo_jax.algorithms.config import OGPOConfig
from ogpo_jax.gcp import diffusion
from ogpo_jax.gcp.diffusion import DiffusionSpec
from ogpo_jax.gcp.flow import FlowSpec

M = jnp.asarray([0.3, -0.2, 0.1])          # Gaussian data N(M, S^2 I), well inside [-1, 1]
S = 0.15


def _exact_eps(spec: DiffusionSpec, mean=M, std=S):
    """E[eps | x_n] for data N(mean, std^2 I): sqrt(1 - ab) (x - sqrt(ab) mean) / (ab std^2 + 1 - ab),
    the noise level n read back from the network time t = (T - 1 - n) / T."""
    ac = jnp.asarray(spec.alphas_cumprod())

    def apply_fn(params, obs, x, t):
        n = jnp.round(spec.train_steps - 1 - jnp.asarray(t) * spec.train_steps).astype(jnp.int32)
        ab = jnp.broadcast_to(ac[n], x.shape[:-1])[..., None]
        return jnp.sqrt(1.0 - ab) * (x - jnp.sqrt(ab) * mean) / (ab * std ** 2 + 1.0 - ab)

    return apply_fn


def test_cosine_schedule_and_sampling_levels():
    spec = DiffusionSpec(num_steps=10, train_steps=100)
    ac = spec.alphas_cumprod()
    assert ac.shape == (100,) and np.all(np.diff(ac) < 0)
    assert ac[0] > 0.999 and ac[-1] < 1e-3
    np.testing.assert_array_equal(spec.levels(), [99, 89, 79, 69, 59, 49, 39, 29, 19, 9])
    a, a_next, sigma = (np.asarray(v) for v in spec.step_constants())
    np.testing.assert_allclose(a, ac[spec.levels()], rtol=1e-6)
    np.testing.assert_allclose(a_next, np.append(ac[spec.levels()[1:]], 1.0), rtol=1e-6)
    assert sigma[-1] == 0.0 and np.all(sigma[:-1] > 0)          # the last step lands on the clean chunk
    np.testing.assert_array_equal(spec.step_constants(eta=0.0)[2], np.zeros(10))
    with pytest.raises(ValueError, match="multiple of num_steps"):
        DiffusionSpec(num_steps=3, train_steps=100)


def test_forward_marginals():
    spec = DiffusionSpec(num_steps=10, train_steps=100)
    n = 200_000
    a = jnp.full((n, 1), 0.5)
    for level in (0, 30, 99):
        x = diffusion.q_sample(spec, a, jnp.full((n,), level), jax.random.normal(jax.random.PRNGKey(level), (n, 1)))
        ab = spec.alphas_cumprod()[level]
        assert float(x.mean()) == pytest.approx(np.sqrt(ab) * 0.5, abs=5e-3)
        assert float(x.std()) == pytest.approx(np.sqrt(1.0 - ab), rel=1e-2, abs=1e-3)


def test_eps_prediction_loss_is_zero_for_the_exact_predictor_and_one_for_zero():
    """Point-mass data a*: eps = (x_n - sqrt(ab) a*) / sqrt(1 - ab) exactly, so its loss is 0; the
    zero predictor's loss is E|eps|^2 / D = 1."""
    spec = DiffusionSpec(num_steps=10, train_steps=100)
    target = jnp.asarray([0.4, -0.7])
    actions = jnp.broadcast_to(target, (4096, 1, 2))
    obs, valid = jnp.zeros((4096, 1)), jnp.ones((4096, 1), bool)
    exact = _exact_eps(spec, mean=target, std=0.0)
    loss = diffusion.bc_loss(exact, None, obs, actions, valid, jax.random.PRNGKey(0), spec)
    assert float(loss) < 1e-6
    zero = diffusion.bc_loss(lambda p, o, x, t: jnp.zeros_like(x), None, obs, actions, valid, jax.random.PRNGKey(0),
                             spec)
    assert float(zero) == pytest.approx(1.0, abs=0.05)
    via_gcp = gcp.bc_loss(exact, None, obs, actions, valid, jax.random.PRNGKey(0), spec)
    assert float(via_gcp) == float(loss)


def test_eta_one_at_full_resolution_is_the_ddpm_posterior_step():
    """K = T, eta = 1, no clipping: the step mean and std are q(x_{n-1} | x_n, x0_hat)'s,
    sqrt(ab') beta / (1 - ab) x0 + sqrt(alpha) (1 - ab') / (1 - ab) x_n and beta (1 - ab') / (1 - ab)."""
    spec = DiffusionSpec(num_steps=20, train_steps=20, clip_denoised=False, min_std=1e-8)
    ac = spec.alphas_cumprod()
    a, a_next, sigma = (np.asarray(v) for v in spec.step_constants())
    x = np.array([0.3, -1.2])
    eps = np.array([0.5, 0.1])
    for i in (0, 7, 18):
        n = 19 - i
        ab, ab_prev = ac[n], ac[n - 1]
        beta = 1.0 - ab / ab_prev
        x0 = (x - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
        mean = np.sqrt(ab_prev) * beta / (1 - ab) * x0 + np.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab) * x
        got = diffusion._step_mean(jnp.asarray(eps), jnp.asarray(x), a[i], a_next[i], sigma[i], spec)
        np.testing.assert_allclose(got, mean, rtol=1e-4, atol=1e-5)
        assert sigma[i] ** 2 == pytest.approx(beta * (1 - ab_prev) / (1 - ab), rel=1e-4)


def _linear_chain_moments(spec: DiffusionSpec, eta: float, mean=M, std=S):
    """Exact mean and std of the sampler's output for data N(mean, std^2) with the exact eps
    predictor: every step is affine in y = x - sqrt(a) mean, y' = c y + s z, so the moments follow
    in closed form (independently of the sampler's code)."""
    a, a_next, sigma = (np.asarray(v, np.float64) for v in spec.step_constants(eta=eta))
    m, var = -np.sqrt(a[0]) * np.asarray(mean, np.float64), 1.0
    for i in range(spec.num_steps):
        v = a[i] * std ** 2 + 1.0 - a[i]
        c_eps = np.sqrt(1.0 - a[i]) / v
        c_x0 = (1.0 - np.sqrt(1.0 - a[i]) * c_eps) / np.sqrt(a[i])
        c = np.sqrt(a_next[i]) * c_x0 + np.sqrt(max(1.0 - a_next[i] - sigma[i] ** 2, 0.0)) * c_eps
        m, var = c * m, c * c * var + sigma[i] ** 2
    return np.asarray(mean) + m, np.sqrt(var)


@pytest.mark.parametrize("sampler, train_steps, num_steps", [("ddpm", 100, 100), ("ddpm", 100, 10), ("ddim", 100, 10),
                                                             ("ddim", 100, 100)])
def test_backward_marginals_with_the_exact_noise_predictor(sampler, train_steps, num_steps):
    """Data N(M, S^2) and the exact eps predictor: the samplers' outputs have the moments of the
    affine Gaussian chain they implement (DDPM: eta = 1 ancestral; DDIM: eta = 0)."""
    spec = DiffusionSpec(num_steps=num_steps, train_steps=train_steps, clip_denoised=False, min_std=1e-6,
                         sample_clip_stds=0.0)
    obs = jnp.zeros((40_000, 1))
    key = jax.random.PRNGKey(0)
    if sampler == "ddpm":
        _, x = gcp.sample_sde(_exact_eps(spec), None, obs, key, spec, 3)
    else:
        x = gcp.sample_ode(_exact_eps(spec), None, obs, key, spec, 3)
    want_mean, want_std = _linear_chain_moments(spec, 1.0 if sampler == "ddpm" else 0.0)
    np.testing.assert_allclose(x.mean(0), want_mean, atol=0.004)
    np.testing.assert_allclose(x.std(0), want_std, rtol=0.02)


def test_fine_ddpm_and_ddim_reach_the_data_distribution():
    """As the steps get finer both samplers' output tends to the data N(M, S^2) (coarse DDIM
    shrinks the spread: 10 of 100 levels keep ~60% of S)."""
    for eta, train_steps, num_steps, tol in ((1.0, 1000, 1000, 0.02), (0.0, 1000, 1000, 0.02), (0.0, 100, 10, None)):
        mean, std = _linear_chain_moments(DiffusionSpec(num_steps=num_steps, train_steps=train_steps), eta)
        np.testing.assert_allclose(mean, M, atol=1e-3)
        if tol is None:
            assert 0.5 * S < std < 0.75 * S
        else:
            assert std == pytest.approx(S, rel=tol)


def test_ddim_is_deterministic_in_its_initial_noise():
    spec = DiffusionSpec(num_steps=5, train_steps=50)
    cfg = OGPOConfig(policy="diffusion", flow_steps=5, diffusion_train_steps=50, actor_hidden_dims=(16,))
    from ogpo_jax.algorithms.actor import actor_apply, init_actor_params
    apply_fn, params = actor_apply(cfg, 4), init_actor_params(cfg, jax.random.PRNGKey(0), 3, 4)
    obs = jax.random.normal(jax.random.PRNGKey(1), (8, 3))
    key = jax.random.PRNGKey(2)
    a1 = gcp.sample_ode(apply_fn, params, obs, key, spec, 4)
    a2 = gcp.sample_ode(apply_fn, params, obs, key, spec, 4)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(a1, gcp.integrate_ode(apply_fn, params, obs, jax.random.normal(key, (8, 4)), spec))
    a3 = gcp.sample_ode(apply_fn, params, obs, jax.random.PRNGKey(3), spec, 4)
    assert float(jnp.abs(a1 - a3).max()) > 1e-3
    # the stochastic sampler at eta = 0 has the same step means: its noise is the std floor alone
    quiet = dataclasses.replace(spec, eta=0.0, min_std=1e-7)
    _, a4 = gcp.sample_sde(apply_fn, params, obs, key, quiet, 4)
    np.testing.assert_allclose(a4, gcp.sample_ode(apply_fn, params, obs, jax.random.split(key)[0], spec, 4),
                               atol=1e-5)


def test_chain_log_prob_matches_the_sampler_and_a_hand_computed_step():
    cfg = OGPOConfig(policy="diffusion", flow_steps=4, diffusion_train_steps=40, actor_hidden_dims=(16,),
                     noise_std=0.1)
    spec = cfg.gcp_spec
    assert isinstance(spec, DiffusionSpec) and spec.min_std == 0.1 and spec.train_steps == 40
    from ogpo_jax.algorithms.actor import actor_apply, init_actor_params
    apply_fn, params = actor_apply(cfg, 4), init_actor_params(cfg, jax.random.PRNGKey(0), 3, 4)
    obs = jax.random.normal(jax.random.PRNGKey(1), (6, 3))
    chain, actions, lp = gcp.sample_sde(apply_fn, params, obs, jax.random.PRNGKey(2), spec, 4, log_prob=True)
    assert chain.shape == (6, 5, 4) and float(jnp.abs(actions).max()) <= 1.0
    np.testing.assert_allclose(lp, gcp.chain_log_prob(apply_fn, params, obs, chain, spec), rtol=1e-5, atol=1e-5)

    # by hand, with a zero noise predictor: x0_hat = clip(x / sqrt(a)), mean = sqrt(a') x0_hat + ...
    zero = lambda p, o, x, t: jnp.zeros_like(x)  # noqa: E731
    steps = np.asarray(gcp.step_log_probs(zero, None, obs, chain, spec))
    a, a_next, sigma = (np.asarray(v) for v in spec.step_constants())
    c = np.asarray(chain, np.float64)
    for i in range(4):
        x0 = np.clip(c[:, i] / np.sqrt(a[i]), -1, 1)
        eps = (c[:, i] - np.sqrt(a[i]) * x0) / np.sqrt(1 - a[i])
        mean = np.sqrt(a_next[i]) * x0 + np.sqrt(max(1 - a_next[i] - sigma[i] ** 2, 0)) * eps
        std = max(sigma[i], 0.1)
        want = (-0.5 * ((c[:, i + 1] - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)).sum(-1)
        np.testing.assert_allclose(steps[:, i], want, rtol=1e-4, atol=1e-4)


def test_config_selects_the_policy_class_and_names_bad_values():
    assert isinstance(OGPOConfig().gcp_spec, FlowSpec)
    assert gcp.module(OGPOConfig(policy="diffusion").gcp_spec) is diffusion
    with pytest.raises(ValueError, match="algo.policy"):
        OGPOConfig(policy="consistency")
    with pytest.raises(ValueError, match="algo.diffusion_train_steps"):
        OGPOConfig(policy="diffusion", flow_steps=8, diffusion_train_steps=100)
    with pytest.raises(ValueError, match="algo.extraction"):
        OGPOConfig(policy="diffusion", extraction="ofpo")
    from ogpo_jax.algorithms import reinflow
    with pytest.raises(ValueError, match="algo.policy"):
        reinflow.check_config(reinflow.ReinFlowConfig(policy="diffusion", rollout_mode="sde"))


def diffusion_modes(seed: int = 0) -> dict:
    """1-D bimodal target (+-0.6): `mode_fractions` of 2000 DDIM (10 of 100 levels) and of 2000 DDPM
    samples after 3000 BC steps of an eps-prediction policy."""
    import optax
    from ogpo_jax.networks import VelocityField
    k_init, k_train, k_sample = jax.random.split(jax.random.PRNGKey(seed), 3)
    module = VelocityField(1, (64, 64), 16)
    apply_fn = lambda p, o, x, t: module.apply({"params": p}, o, x, t)  # noqa: E731
    params = module.init(k_init, jnp.zeros((1, 1)), jnp.zeros((1, 1)), jnp.zeros((1,)))["params"]
    spec = DiffusionSpec(num_steps=10, train_steps=100)
    tx = optax.adam(3e-3)

    @jax.jit
    def train(params, opt, key):
        def step(carry, k):
            p, o = carry
            k_mode, k_noise, k_loss = jax.random.split(k, 3)
            sign = jnp.where(jax.random.bernoulli(k_mode, 0.5, (256,)), 1.0, -1.0)
            a = (0.6 * sign + 0.02 * jax.random.normal(k_noise, (256,)))[:, None, None]
            loss, g = jax.value_and_grad(gcp.bc_loss, argnums=1)(
                apply_fn, p, jnp.zeros((256, 1)), a, jnp.ones((256, 1)), k_loss, spec)
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), loss
        return jax.lax.scan(step, (params, opt), jax.random.split(key, 3000))

    (params, _), _ = train(params, tx.init(params), k_train)
    out = {}
    for name, sample in (("ddim", lambda k: gcp.sample_ode(apply_fn, params, jnp.zeros((2000, 1)), k, spec, 1)),
                         ("ddpm", lambda k: gcp.sample_sde(apply_fn, params, jnp.zeros((2000, 1)), k, spec, 1)[1])):
        out.update({f"{name}_{k}": v for k, v in mode_fractions(np.asarray(sample(k_sample))[:, 0]).items()})
    return out


def mode_fractions(samples) -> dict:
    """Of 1-D samples of the +-0.6 bimodal target: the share of the +0.6 mode among the samples within
    0.15 of either mode, the fraction within 0.15 of either mode, and the fraction within 0.3 of zero."""
    pos, neg = np.mean(np.abs(samples - 0.6) < 0.15), np.mean(np.abs(samples + 0.6) < 0.15)
    return {"pos_share": float(pos / max(pos + neg, 1e-9)), "near_modes": float(pos + neg),
            "middle": float(np.mean(np.abs(samples) < 0.3))}


# Bars of the two bimodal-BC checks (here and tests/test_flow.py); spread over seeds 0-9:
# python tests/measure_spread.py flow_modes diffusion_modes
POS_SHARE = (0.3, 0.7)     # both modes: a collapse onto one gives a share near 0 or 1
NEAR_MODES = 0.7           # DDPM's last noisy step leaves ~0.8 within 0.15 of a mode, ODE samplers > 0.9
MIDDLE_FRACTION = 0.1      # a unimodal fit would put ~35% of the samples within 0.3 of zero


def assert_bimodal(m: dict, prefix: str = ""):
    assert POS_SHARE[0] < m[f"{prefix}pos_share"] < POS_SHARE[1], m
    assert m[f"{prefix}near_modes"] > NEAR_MODES and m[f"{prefix}middle"] < MIDDLE_FRACTION, m


def test_diffusion_bc_reproduces_both_modes():
    """DDIM and DDPM samples of a BC'd eps-prediction policy land near both modes, few in between.
    Over seeds 0-9 (tests/measure_spread.py diffusion_modes): +0.6 share DDIM 0.48 +- 0.05, DDPM
    0.48 +- 0.04 (bar 0.3-0.7); near a mode DDIM 0.97 +- 0.02, DDPM 0.80 +- 0.01 (bar 0.7); middle
    DDIM 0.017 +- 0.017 (max 0.046), DDPM 0.049 +- 0.006 (bar 0.1)."""
    m = diffusion_modes(0)
    for name in ("ddim", "ddpm"):
        assert_bimodal(m, f"{name}_")


def diffusion_bandit_progress(seed: int = 0) -> dict:
    """OGPO's PPO over the DDPM chain on test_baselines' one-step bandit: the distance of the DDIM
    actions to the best chunk after 300 updates over before them."""
    from test_baselines import _cfg, _distance, _train
    from ogpo_jax.algorithms import ogpo
    k_init, k_train, k_act, k_obs = jax.random.split(jax.random.PRNGKey(seed), 4)
    cfg = _cfg("ogpo", policy="diffusion", diffusion_train_steps=40, bc_coeff=0.0, clip_epsilon=0.2, actor_tau=0.2,
               group_size=8, ppo_batch_size=16, noise_std=0.1)
    state = ogpo.init(k_init, 3, (1, 2), cfg)
    before = _distance(state, "ode", k_act, k_obs)
    state, _ = _train(state, 300, k_train)
    return {"distance_ratio": _distance(state, "ode", k_act, k_obs) / before}


# The ratio's spread over seeds is wide (0.53 +- 0.10, up to 0.69 over seeds 0-9; 600 updates, a
# larger group or a higher learning rate shift the mean but keep a tail up to ~0.65), so the bar
# asserts a clear move towards a* rather than the typical one: a broken or no-op update gives >= 1.
# python tests/measure_spread.py diffusion_bandit
DIFFUSION_DISTANCE_RATIO = 0.85


def test_ogpo_on_a_diffusion_policy_moves_its_actions_to_the_bandits_best_chunk():
    """OGPO's PPO over the DDPM chain (ratio of chain log-probs vs the EMA actor) on the one-step
    bandit of test_baselines: the DDIM actions end up closer to the best chunk. Distance ratio over
    seeds 0-9: 0.53 +- 0.10, max 0.69 (bar 0.85)."""
    m = diffusion_bandit_progress(0)
    assert m["distance_ratio"] < DIFFUSION_DISTANCE_RATIO, m
