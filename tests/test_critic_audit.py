"""The critic audit against debug tasks with closed-form chunk values (`chunk_bandit`, `countdown`),
and its metrics on hand-made values."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ogpo_jax import envs, ogpo
from ogpo_jax.algorithms.actor import sample_actions
from ogpo_jax.algorithms.config import OGPOConfig
from ogpo_jax.envs import toy
from ogpo_jax.training import critic_audit as audit
from test_resume import prepared  # noqa: F401  (demos + BC actor of a tiny toy run, made once per worker)

CFG = OGPOConfig(actor_hidden_dims=(16, 16), critic_hidden_dims=(16, 16), num_critics=2, flow_steps=3,
                 batch_size=8, ppo_batch_size=8, group_size=4)
GAMMA = 0.9


def _states_chunks_returns(env, length, horizon, cfg, params, num_states, group, rollouts, seed):
    """The audit's inputs for actor `params`: decision states, candidates and their MC returns,
    from keys seed, seed + 1, seed + 2."""
    chunk_shape = (horizon, env.action_size)
    policy = lambda p, o, k: sample_actions(cfg, chunk_shape, p, o, k, "sde")  # noqa: E731
    rec = audit.record_states(env, horizon, length, policy, params, jax.random.PRNGKey(seed), num_envs=16)
    phase, _ = audit.phases(env, rec["obs"], rec["alive"], rec["chunk"], length, horizon)
    c, e = audit.pick_states(rec["alive"], phase, num_states)
    states = audit.gather(rec["states"], c, e)
    chunks = audit.candidate_chunks(cfg, chunk_shape, params, states.obs, jax.random.PRNGKey(seed + 1), group)
    mc = audit.mc_returns(env, horizon, length, states, chunks, policy, params, jax.random.PRNGKey(seed + 2),
                          rollouts, GAMMA)
    return states, chunks, mc


def _audit_inputs(name, horizon, num_states, group, rollouts, env_kwargs):
    env, _, length = envs.make(name, **env_kwargs)
    params = ogpo.init_actor(jax.random.PRNGKey(0), env.observation_size, (horizon, env.action_size), CFG)
    return (env, *_states_chunks_returns(env, length, horizon, CFG, params, num_states, group, rollouts, seed=1))


def test_mc_returns_of_the_bandit_are_its_closed_form_and_a_perfect_critic_agrees_fully():
    env, states, chunks, mc = _audit_inputs("chunk_bandit", 3, 8, 4, 2, {"horizon": 3})
    true = np.asarray(toy.ChunkBandit.true_q(jnp.repeat(states.obs, 4, 0), chunks.reshape(-1, 3, 1), GAMMA))
    true = true.reshape(8, 4)
    np.testing.assert_allclose(mc["returns"], np.repeat(true[..., None], 2, -1), rtol=1e-5, atol=1e-6)
    assert (mc["steps"] == 3).all() and not mc["nonfinite"].any()
    perfect = np.stack([true, true])                            # two heads, both exact
    m = audit.audit_metrics(perfect, mc["returns"], "conservative")
    for view in ("head_0", "mean"):
        assert m[view]["sign_agreement"] == 1.0 and m[view]["spearman_within_state"] == pytest.approx(1.0)
        assert m[view]["bias"] == pytest.approx(0.0, abs=1e-6) and m[view]["pearson"] == pytest.approx(1.0)
    assert m["conservative"]["sign_agreement"] == 1.0 and m["conservative"]["abstain_frac"] == 0.0
    assert m["mc"]["rankable_state_frac"] == 1.0            # deterministic returns: every difference is real
    # a critic with the ranking reversed disagrees everywhere
    worst = audit.audit_metrics(-perfect, mc["returns"], "conservative")
    assert worst["mean"]["sign_agreement"] == 0.0 and worst["mean"]["spearman_within_state"] == pytest.approx(-1.0)


def test_mc_returns_follow_the_policy_to_the_episode_end_with_bootstrapping_by_hand():
    """countdown: -1 per step until `remaining` reaches 0, whatever the actions; from a state with n
    steps left the discounted return is -(1 - g^n) / (1 - g), across several chunks of the policy."""
    env, states, chunks, mc = _audit_inputs("countdown", 4, 12, 3, 2, {"length": 10})
    n = np.asarray(states.sim.remaining)
    want = -(1 - GAMMA ** n) / (1 - GAMMA)
    np.testing.assert_allclose(mc["returns"], np.broadcast_to(want[:, None, None], mc["returns"].shape), rtol=1e-5)
    np.testing.assert_array_equal(mc["steps"], np.broadcast_to(n[:, None, None], mc["steps"].shape))
    assert (n > 4).any()                    # some branches needed the policy's chunks after the first
    # the returns do not depend on the chunk: no state can be ranked
    m = audit.audit_metrics(np.zeros((2, 12, 3)), mc["returns"])
    assert m["mc"]["adv_spread_mean"] == pytest.approx(0.0, abs=1e-6) and m["mc"]["rankable_state_frac"] == 0.0


def test_a_trained_critic_ranks_the_bandits_chunks_like_their_returns():
    """The positive control: a critic trained on the bandit (test_critic) values a random policy's
    candidate chunks; against their Monte-Carlo returns its within-state ranking and advantage
    signs are near perfect, where an untrained critic's are at chance."""
    from test_critic import trained_bandit_critic
    state, gamma = trained_bandit_critic(jax.random.PRNGKey(0), steps=1500)
    assert gamma == GAMMA
    env, states, chunks, mc = _audit_inputs("chunk_bandit", 3, 12, 8, 2, {"horizon": 3})
    trained = audit.audit_metrics(audit.critic_q(state.config, state.critic, states.obs, chunks), mc["returns"])
    assert trained["mean"]["spearman_within_state"] > 0.9 and trained["mean"]["sign_agreement_significant"] > 0.9
    assert abs(trained["mean"]["bias"]) < 0.1 and trained["mean"]["pearson"] > 0.95
    fresh = ogpo.init(jax.random.PRNGKey(5), 1, (3, 1), state.config)
    chance = audit.audit_metrics(audit.critic_q(state.config, fresh.critic, states.obs, chunks), mc["returns"])
    assert chance["mean"]["spearman_within_state"] < 0.6


def test_metrics_by_hand():
    # one state, 3 chunks; MC means 0, 1.1, 2 and advantages (-31/30, 1/15, 29/30); chunk 1's is
    # within 2 SE (0.2) of 0: not significant
    returns = np.array([[[0.0, 0.0], [0.9, 1.3], [2.0, 2.0]]])
    q = np.array([[[0.0, 2.5, 1.0]],           # head 0: advantages (-7/6, 4/3, -1/6)
                  [[0.0, 1.0, 2.0]]])          # head 1: (-1, 0, 1)
    m = audit.audit_metrics(q, returns, "conservative")
    # head 0 against the MC signs (-, +, +): chunks 0 and 1 agree; of the significant chunks 0 and 2, one
    assert m["head_0"]["sign_agreement"] == pytest.approx(2 / 3)
    assert m["head_0"]["sign_agreement_significant"] == pytest.approx(1 / 2)
    assert m["head_0"]["spearman_within_state"] == pytest.approx(0.5)    # ranks (1, 3, 2) vs (1, 2, 3)
    # head 1 abstains on chunk 1 (advantage exactly 0) and is right on the others
    assert m["head_1"]["sign_agreement"] == 1.0 and m["head_1"]["abstain_frac"] == pytest.approx(1 / 3)
    assert m["head_1"]["spearman_within_state"] == pytest.approx(1.0)
    # conservative: both heads negative only on chunk 0 -> votes on 1 of 3, correctly
    assert m["conservative"]["abstain_frac"] == pytest.approx(2 / 3) and m["conservative"]["sign_agreement"] == 1.0
    assert m["mean"]["bias"] == pytest.approx(0.05) and m["heads_mean"]["bias"] == pytest.approx(0.05)
    assert m["head_1"]["bias"] == pytest.approx(-0.1 / 3) and m["head_1"]["rmse"] == pytest.approx(np.sqrt(0.01 / 3))
    assert m["mc"]["chunk_se_mean"] == pytest.approx(0.2 / 3)
    assert m["mc"]["significant_chunk_frac"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="returns must be"):
        audit.audit_metrics(q, returns[..., :1])
    with pytest.raises(ValueError, match="q must be"):
        audit.audit_metrics(q[:, :, :2], returns)
    assert set(audit.audit_metrics(None, returns)) == {"mc"}        # no critic: the MC figures alone


def test_pick_states_takes_an_equal_share_per_phase_and_only_alive_states():
    alive = np.ones((4, 5), bool)
    alive[2, 2:] = False
    alive[3] = False
    phase = np.zeros((4, 5), int)
    phase[1] = 1
    phase[2:] = 2                                   # phase 2: only 2 alive states
    c, e = audit.pick_states(alive, phase, 6)
    assert alive[c, e].all() and len(set(zip(c.tolist(), e.tolist()))) == 6
    assert np.bincount(phase[c, e], minlength=3).tolist() == [2, 2, 2]
    c, e = audit.pick_states(alive, phase, 12)      # phase 2's shortfall goes to the others
    assert np.bincount(phase[c, e], minlength=3).tolist() == [5, 5, 2]
    with pytest.raises(ValueError, match="fewer than"):
        audit.pick_states(alive, phase, 13)


def test_arm_phases_from_the_object_and_the_goal():
    keys = (("robot0_eef_pos", 3), ("object", 14))
    env = types.SimpleNamespace(obs_keys=keys, params=types.SimpleNamespace(target_center=(0.1, 0.3)))
    obs = np.zeros((3, 1, 17), np.float32)
    obs[:, 0, 3:6] = [[0.0, -0.2, 0.02], [0.0, -0.2, 0.10], [0.12, 0.28, 0.05]]   # rest, lifted, at the bin
    phase, names = audit.phases(env, obs, np.ones((3, 1), bool), np.zeros((3, 1), int), 100, 4)
    assert names == audit.PHASES_ARM and phase[:, 0].tolist() == [0, 1, 2]
    plain = types.SimpleNamespace()
    chunk = np.array([[0], [10], [20]])
    phase, names = audit.phases(plain, obs, np.ones((3, 1), bool), chunk, 100, 4)
    assert names == audit.PHASES_TIME and phase[:, 0].tolist() == [0, 1, 2]


def test_cli_audits_a_run_and_its_bc_actor(tmp_path, prepared):  # noqa: F811
    """experiments/audit_critic.py on a tiny toy run: the finetune checkpoint's critics, then the BC
    actor (no critic: the MC figures alone)."""
    import json
    import os
    import subprocess
    import sys

    from ogpo_jax.training import pipeline
    from test_resume import ROOT, _tiny, _workdir
    workdir = _workdir(prepared, str(tmp_path / "run"))
    pipeline.run(_tiny(total_env_steps=400), workdir, log=lambda *_: None)
    base = [sys.executable, os.path.join(ROOT, "experiments", "audit_critic.py"), f"--workdir={workdir}",
            "--states=6", "--group=3", "--rollouts=2", "--record_envs=8"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run(base + ["--critics=target,online"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "cost: 6 states x 3 chunks x 2 rollouts = 36 rollouts" in r.stdout
    out = json.load(open(os.path.join(workdir, "audit", "audit_latest.json")))
    assert set(out["metrics"]) == {"target", "online"} and sum(out["phase_counts"]) == 6
    overall = out["metrics"]["target"]["overall"]
    assert {"head_0", "head_1", "mean", "conservative", "mc", "heads_mean"} <= set(overall)
    assert os.path.getsize(os.path.join(workdir, "audit", "audit_latest.png")) > 10_000
    arrays = np.load(os.path.join(workdir, "audit", "audit_latest.npz"))
    assert arrays["returns"].shape == (6, 3, 2) and arrays["q_target"].shape == (2, 6, 3)
    r = subprocess.run(base + ["--source=bc"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert set(json.load(open(os.path.join(workdir, "audit", "audit_bc.json")))["metrics"]) == {"mc_only"}
    # --mc_from: the same actor's stored states, candidates and returns reproduce the figures with
    # no rollouts; another actor's (the BC actor's, before finetuning) are refused
    first = os.path.join(workdir, "audit", "audit_latest.npz")
    reuse = base + ["--critics=target,online", f"--mc_from={first}", f"--out={tmp_path / 'reuse'}"]
    r = subprocess.run(reuse, capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "reusing 6 states x 3 chunks x 2 MC rollouts" in r.stdout and "cost:" not in r.stdout
    again = json.load(open(tmp_path / "reuse" / "audit_latest.json"))
    assert again["metrics"] == out["metrics"] and again["mc_from"] == first[:-4]
    np.testing.assert_array_equal(np.load(tmp_path / "reuse" / "audit_latest.npz")["q_target"], arrays["q_target"])
    other = os.path.join(workdir, "audit", "audit_bc.npz")
    r = subprocess.run(base + [f"--mc_from={other}", f"--out={tmp_path / 'reuse'}"], capture_output=True,
                       text=True, env=env, cwd=ROOT)
    assert r.returncode != 0 and "is not the one that audit rolled out" in r.stderr
    r = subprocess.run(base + ["--rollouts=1"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode != 0 and "--rollouts must be >= 2" in r.stderr


# ----------------------------------------------------------------------------- the real loop's critic

def _loop_critic(name, env_kwargs, horizon, windows, iterations, gamma=GAMMA):
    """A critic-only run through the training loop itself (collection, replay, sampling, n-step
    targets: `loop.make_interval`) from a fresh actor -> (env, length, chunk_shape, agent)."""
    from configs import toy as toy_cfg
    from ogpo_jax.training import loop
    from ogpo_jax.training.config import validate
    c = toy_cfg.get_config("quick")
    c.env.name, c.env.kwargs, c.env.chunk_horizon = name, env_kwargs, horizon
    a = c.algo
    a.actor_hidden_dims, a.critic_hidden_dims, a.num_critics, a.flow_steps = (16, 16), (64, 64), 2, 3
    a.batch_size, a.ppo_batch_size, a.group_size, a.discount = 128, 8, 4, gamma
    a.critic_lr, a.critic_weight_decay = 1e-3, 0.0
    a.critic_warmup_updates = 10**9                  # critic only: the actor stays the fresh one
    t = c.train
    t.num_envs, t.updates_per_iteration, t.log_every_iterations, t.start_training = 32, 4, iterations, 0
    t.replay_capacity, t.replay_windows = 4096, windows
    env, _, length = envs.make(name, **env_kwargs)
    chunk_shape = (horizon, env.action_size)
    agent = ogpo.init(jax.random.PRNGKey(0), env.observation_size, chunk_shape, validate(c))
    ls = loop.init_loop(jax.random.PRNGKey(1), env, agent, env.observation_size, t, length)
    ls, _ = loop.make_interval(env, t, iterations)(ls)
    return env, length, chunk_shape, ls.agent


def test_a_critic_trained_by_the_loop_ranks_the_bandits_chunks_like_their_returns():
    """End-to-end positive control: the same figures for a critic the training loop trained on
    what its own actor collected (chunk windows), so a misaligned transition (an action stored with
    the wrong observation, a shifted reward) shows up as a ranking at chance."""
    env, length, _, agent = _loop_critic("chunk_bandit", {"horizon": 3}, 3, "chunk", 150)
    states, chunks, mc = _states_chunks_returns(env, length, 3, agent.config, agent.actor_ema, 12, 8, 2, seed=4)
    m = audit.audit_metrics(audit.critic_q(agent.config, agent.critic_target, states.obs, chunks), mc["returns"])
    assert m["mean"]["spearman_within_state"] > 0.8 and m["mean"]["sign_agreement_significant"] > 0.85, m["mean"]


def test_a_critic_trained_by_the_loop_on_step_windows_learns_the_countdown_values():
    """`train.replay_windows='step'` end to end: windows from every step of a countdown (with
    termination inside a window and bootstrapping across them) give the closed-form values."""
    env, _, chunk_shape, agent = _loop_critic("countdown", {"length": 10}, 3, "step", 150)
    obs = (jnp.arange(1, 11, dtype=jnp.float32) / 10)[:, None]
    chunks = jnp.zeros((10, 1, *chunk_shape))
    q = audit.critic_q(agent.config, agent.critic_target, obs, chunks).mean(0)[:, 0]
    err = np.abs(np.asarray(q - env.true_q(obs, GAMMA)))
    assert err.mean() < 0.25 and err.max() < 0.6, np.round(np.asarray(q), 2)
